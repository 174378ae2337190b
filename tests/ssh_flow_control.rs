//! One slow reader must not stall the connection, and must not cost unbounded memory.
//! Against a real OpenSSH sshd (tests/support/sshd.rs).

mod support;

use std::time::{Duration, Instant};

use leadpipe::SshMachine;
use support::sshd::Sshd;
use tokio::io::AsyncReadExt;

async fn connect(sshd: &Sshd) -> SshMachine {
    SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key)
        .known_hosts(&sshd.known_hosts)
        .ssh_config(None)
        .connect()
        .await
        .unwrap()
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_neither_stalls_other_commands_nor_grows_memory() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = connect(&sshd).await;
    let before = resident_bytes();

    // 512 MiB as fast as sshd can send it, read at 1 MiB per 100 ms.
    let mut flood = remote
        .cmd("head")
        .args(["-c", "536870912", "/dev/zero"])
        .spawn()
        .await
        .unwrap();
    let mut stdout = flood.stdout.take().unwrap();
    let slow = tokio::spawn(async move {
        let mut chunk = vec![0; 1 << 20];
        let mut taken = 0;
        for _ in 0..30 {
            stdout.read_exact(&mut chunk).await.unwrap();
            taken += chunk.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (stdout, taken)
    });

    // Meanwhile, other commands on the same connection finish as usual.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(
            remote.cmd("echo").arg(i.to_string()).read().await.unwrap(),
            i.to_string()
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(20),
        "20 commands took {elapsed:?} beside a slow reader"
    );

    let (mut stdout, taken) = slow.await.unwrap();
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "memory grew by {} MiB", grown >> 20);

    // Nothing was lost: the rest of the stream is all there, in order.
    let mut rest = 0u64;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = stdout.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(buffer[..n].iter().all(|&b| b == 0));
        rest += n as u64;
    }
    assert_eq!(taken as u64 + rest, 512 << 20);
    flood.wait().await.unwrap();
}
