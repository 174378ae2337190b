//! How bytes move on an SSH machine: pipelines across machines, a slow reader beside
//! other commands, ptys. Against a real OpenSSH sshd (tests/support/sshd.rs).

mod support;

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    time::{Duration, Instant},
};

use leadpipe::{Error, local};
use support::{sshd::Sshd, stdout_pattern, testbin};
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn bytes_cross_machines_exactly_in_both_directions() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let args: Vec<&[u8]> = vec![
        b"",
        b"two words",
        b"$(id)",
        b"\xff\xfe",
        b"line\nbreak",
        "ünï".as_bytes(),
    ];
    let echo = testbin()
        .arg("echo-argv")
        .args(args.iter().map(|a| OsStr::from_bytes(a)));
    let expected: Vec<u8> = args
        .iter()
        .flat_map(|a| a.iter().copied().chain([0]))
        .collect();
    let out = (echo | remote.cmd("cat") | local().cmd("cat"))
        .read_bytes()
        .await
        .unwrap();
    assert_eq!(out, expected);

    let size = 20 * 1024 * 1024 + 3;
    let up = (testbin().args(["write", &size.to_string(), "0"]) | remote.cmd("wc").arg("-c"))
        .read()
        .await
        .unwrap();
    assert_eq!(up.trim(), size.to_string());
    let remote_bytes = remote
        .cmd("head")
        .args(["-c", &size.to_string(), "/dev/zero"]);
    let down = (remote_bytes | local().cmd("wc").arg("-c"))
        .read()
        .await
        .unwrap();
    assert_eq!(down.trim(), size.to_string());
    let round_trip = (testbin().args(["write", &size.to_string(), "0"])
        | remote.cmd("cat")
        | testbin().arg("cat"))
    .read_bytes()
    .await
    .unwrap();
    assert!(
        round_trip == stdout_pattern(size),
        "a 20 MiB round trip came back different"
    );
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_writer_on_either_side() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let limit = Duration::from_secs(30);
    let remote_yes = remote.cmd("yes") | local().cmd("head").arg("-1");
    assert_eq!(
        tokio::time::timeout(limit, remote_yes.read())
            .await
            .expect("no hang")
            .unwrap(),
        "y"
    );
    let local_yes = local().cmd("yes") | remote.cmd("head").arg("-1");
    assert_eq!(
        tokio::time::timeout(limit, local_yes.read())
            .await
            .expect("no hang")
            .unwrap(),
        "y"
    );
    assert!(
        sshd.pgrep("yes").is_empty(),
        "no remote yes left: {:?}",
        sshd.pgrep("yes")
    );
}

#[tokio::test]
async fn a_failing_stage_is_named_with_its_machine() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let pipeline = local().cmd("echo").arg("x")
        | remote
            .cmd("sh")
            .args(["-c", "cat >/dev/null; echo remote trouble >&2; exit 3"])
        | local().cmd("cat");
    let error = pipeline.read().await.unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.stage().map(|(i, n, _)| (i, n)), Some((1, 3)));
    assert_eq!(exit.stderr(), b"remote trouble\n");
    let machines = format!("local | {}@127.0.0.1:{} | local", sshd.user, sshd.port);
    assert!(
        error.to_string().starts_with(&format!(
            "stage 2 of 3 failed with exit code 3 on {machines}:"
        )),
        "{error}"
    );
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
    let remote = sshd.machine().await;
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

#[tokio::test]
async fn a_pty_gives_the_remote_command_a_terminal() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let script = "test -t 0 && test -t 1 && echo on-a-tty; echo to-stderr >&2; exit 3";
    let output = remote
        .cmd("sh")
        .args(["-c", script])
        .pty(true)
        .unchecked()
        .output()
        .await
        .unwrap();
    assert_eq!(
        output.stdout, b"on-a-tty\r\nto-stderr\r\n",
        "one stream, the terminal's line ends"
    );
    assert_eq!(output.status, leadpipe::ExitStatus::Code(3));
    let plain = remote
        .cmd("sh")
        .args(["-c", "test -t 1 || echo no-tty"])
        .read()
        .await
        .unwrap();
    assert_eq!(plain, "no-tty");
    let error = local().cmd("true").pty(true).run().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot start `true` on local: pty(true) is supported on SSH machines only"
    );
}
