//! Side-by-side benchmark of `SshMachine` against OpenSSH, in one run.
//!
//! Needs a throw-away OpenSSH server and its settings in the environment, as the lab
//! scripts print them (`eval "$(lab/sshd-up.sh 22022)"`, or `netns-up.sh 22222 5` for a
//! 10 ms round trip): `LAB_HOST`, `LAB_PORT`, `LAB_USER`, `LAB_KEY`, `LAB_KNOWN_HOSTS`,
//! `LAB_SSH_CONFIG` (whose host `lab` is the same server for the `ssh` client). Then
//! `cargo run --release --example bench_ssh [ROUNDS]`.
//!
//! Rows: 200 sequential `true` on one connection (leadpipe) against `ssh lab true` each
//! time and against an OpenSSH ControlMaster (`ssh -S`); 200 concurrent `true`; 1 GiB of
//! remote stdout against `ssh lab 'head -c 1G /dev/zero'`. Values are medians of the
//! rounds (default 3).

mod lab;

use std::{
    process::{Command as Std, Stdio},
    time::{Duration, Instant},
};

fn ssh(config: &str, extra: &[&str], command: &str) -> Std {
    let mut ssh = Std::new("ssh");
    ssh.args(["-F", config]).args(extra).args(["lab", command]);
    ssh.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ssh
}

#[tokio::main]
async fn main() -> leadpipe::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let config = lab::var("LAB_SSH_CONFIG");
    let started = Instant::now();
    let remote = lab::connect().await?;
    println!(
        "connect + auth: {:.1} ms\n",
        started.elapsed().as_secs_f64() * 1e3
    );

    let socket = std::env::temp_dir().join(format!("leadpipe-bench-{}.sock", std::process::id()));
    let socket_arg = format!("ControlPath={}", socket.display());
    let master = Std::new("ssh")
        .args([
            "-F",
            &config,
            "-o",
            "ControlMaster=yes",
            "-o",
            &socket_arg,
            "-N",
            "-f",
            "lab",
        ])
        .status()
        .expect("ssh");
    assert!(master.success(), "starting the ControlMaster failed");
    let mux = [
        "-o",
        &socket_arg,
        "-o",
        "ControlMaster=no",
        "-o",
        "ProxyCommand=false",
    ];

    println!("| case | leadpipe | ssh per command | ControlMaster (ssh -S) |");
    println!("| --- | --- | --- | --- |");
    let (mut ours, mut fresh, mut muxed) = (Vec::new(), Vec::new(), Vec::new());
    let truth = remote.cmd("true");
    for _ in 0..rounds {
        // In a task, where async code runs (from `main`, each wakeup also hops threads).
        let command = truth.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            for _ in 0..200 {
                command.run().await?;
            }
            Ok::<_, leadpipe::Error>(())
        })
        .await
        .expect("task")?;
        ours.push(start.elapsed() / 200);
        let start = Instant::now();
        for _ in 0..20 {
            assert!(ssh(&config, &[], "true").status().expect("ssh").success());
        }
        fresh.push(start.elapsed() / 20);
        let start = Instant::now();
        for _ in 0..200 {
            assert!(ssh(&config, &mux, "true").status().expect("ssh").success());
        }
        muxed.push(start.elapsed() / 200);
    }
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!(
        "| 200 x `true` in sequence, per command | {} | {} (20 runs) | {} |",
        ms(lab::median(&ours)),
        ms(lab::median(&fresh)),
        ms(lab::median(&muxed))
    );

    let (mut ours, mut muxed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let remote = remote.clone();
                tokio::spawn(async move { remote.cmd("true").run().await })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            ok += usize::from(task.await.expect("task").is_ok());
        }
        assert_eq!(ok, 200, "every concurrent command succeeds");
        ours.push(start.elapsed());
        let start = Instant::now();
        let children: Vec<_> = (0..200)
            .map(|_| ssh(&config, &mux, "true").spawn().expect("ssh"))
            .collect();
        let mut ok = 0;
        for mut child in children {
            ok += usize::from(child.wait().expect("ssh").success());
        }
        muxed.push(start.elapsed());
        let _ = ok; // the server's MaxSessions refuses some: what matters is the time
    }
    let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
    println!(
        "| 200 x `true` at once, total (200/200 ok) | {} | | {} (those MaxSessions allowed) |",
        secs(lab::median(&ours)),
        secs(lab::median(&muxed))
    );

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let gib = remote.cmd("head").args(["-c", "1073741824", "/dev/zero"]);
    for _ in 0..rounds {
        let start = Instant::now();
        let mut child = gib.spawn().await?;
        let mut stdout = child.stdout.take().expect("stdout");
        let copied = tokio::io::copy(&mut stdout, &mut tokio::io::sink())
            .await
            .expect("read");
        child.wait().await?;
        assert_eq!(copied, 1 << 30);
        ours.push(start.elapsed());
        let start = Instant::now();
        let status = Std::new("ssh")
            .args(["-F", &config])
            .args(mux)
            .args(["lab", "head -c 1073741824 /dev/zero"])
            .stdout(Stdio::null())
            .status()
            .expect("ssh");
        assert!(status.success());
        theirs.push(start.elapsed());
    }
    let rate = |d: Duration| format!("{:.0} MiB/s", 1024.0 / d.as_secs_f64());
    println!(
        "| 1 GiB of remote stdout | {} | | {} (same connection) |",
        rate(lab::median(&ours)),
        rate(lab::median(&theirs))
    );
    let _ = Std::new("ssh")
        .args(["-F", &config, "-o", &socket_arg, "-O", "exit", "lab"])
        .stderr(Stdio::null())
        .status();
    Ok(())
}
