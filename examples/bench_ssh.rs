//! Side-by-side benchmark of `SshMachine` against OpenSSH, in one run.
//!
//! Needs a throw-away OpenSSH server and its settings in the environment, as the lab
//! scripts print them (`eval "$(lab/sshd-up.sh 22022)"`, or `netns-up.sh 22222 5` for a
//! 10 ms round trip): `LAB_HOST`, `LAB_PORT`, `LAB_USER`, `LAB_KEY`, `LAB_KNOWN_HOSTS`,
//! `LAB_SSH_CONFIG` (whose host `lab` is the same server for the `ssh` client). Then
//! `cargo run --release --example bench_ssh [ROUNDS]`.
//!
//! Rows: connect + authenticate (median of 10); 200 sequential `true` on one connection
//! (leadpipe) against `ssh lab true` each time and against an OpenSSH ControlMaster
//! (`ssh -S`); 200 concurrent `true`; 1 GiB of remote stdout against
//! `ssh lab 'head -c 1G /dev/zero'`. Values are medians of the rounds (default 3). Every
//! command of every client is checked: failures are counted and shown, never timed as
//! done.
//!
//! `LAB_FEW_SESSIONS_DIR`, the `LAB_DIR` of a second lab server (started with
//! `LAB_MAX_SESSIONS=10`), adds the 200-at-once rows against it, on one connection and
//! spread over two (`SshBuilder::connections`): the environment's server allows 1000
//! sessions per connection, OpenSSH's default is 10.

#[allow(dead_code)]
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
        .filter(|&r| r > 0)
        .unwrap_or(3);
    let config = lab::var("LAB_SSH_CONFIG");
    println!("load average at start: {}\n", lab::load());
    let mut connects = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let machine = lab::connect().await?;
        connects.push(started.elapsed());
        drop(machine);
    }
    let remote = lab::connect().await?;
    println!(
        "connect + auth: median {:.1} ms (min {:.1}, max {:.1}, 10 connections)\n",
        lab::median(&connects).as_secs_f64() * 1e3,
        connects
            .iter()
            .min()
            .unwrap_or(&Duration::ZERO)
            .as_secs_f64()
            * 1e3,
        connects
            .iter()
            .max()
            .unwrap_or(&Duration::ZERO)
            .as_secs_f64()
            * 1e3,
    );

    let socket = std::env::temp_dir().join(format!("leadpipe-bench-{}.sock", std::process::id()));
    let socket_arg = format!("ControlPath={}", socket.display());
    start_master(&config, &socket_arg);
    let mux_owned = mux_options(&socket_arg);
    let mux: Vec<&str> = mux_owned.iter().map(String::as_str).collect();

    println!("| case | leadpipe | ssh per command | ControlMaster (ssh -S) |");
    println!("| --- | --- | --- | --- |");
    let (mut ours, mut fresh, mut muxed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fresh_failed, mut muxed_failed) = (0, 0);
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
            let status = ssh(&config, &[], "true").status().expect("ssh");
            fresh_failed += usize::from(!status.success());
        }
        fresh.push(start.elapsed() / 20);
        let start = Instant::now();
        for _ in 0..200 {
            let status = ssh(&config, &mux, "true").status().expect("ssh");
            muxed_failed += usize::from(!status.success());
        }
        muxed.push(start.elapsed() / 200);
    }
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let failed = |n: usize| {
        if n == 0 {
            String::new()
        } else {
            format!(", {n} FAILED")
        }
    };
    println!(
        "| 200 x `true` in sequence, per command | {} | {} (20 runs{}) | {}{} |",
        ms(lab::median(&ours)),
        ms(lab::median(&fresh)),
        failed(fresh_failed),
        ms(lab::median(&muxed)),
        failed(muxed_failed),
    );

    let server = lab::Server::from_env();
    at_once(&remote, &server, &mux_options(&socket_arg), rounds).await;
    if let Ok(dir) = std::env::var("LAB_FEW_SESSIONS_DIR") {
        let few = lab::Server::from_dir(&dir);
        let machine = few.connect().await?;
        let few_socket =
            std::env::temp_dir().join(format!("leadpipe-bench-{}-few.sock", std::process::id()));
        let few_socket_arg = format!("ControlPath={}", few_socket.display());
        start_master(&few.ssh_config, &few_socket_arg);
        at_once(&machine, &few, &mux_options(&few_socket_arg), rounds).await;
        stop_master(&few.ssh_config, &few_socket_arg);
        spread_at_once(&few, 2, rounds).await?;
    }

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
            .args(&mux)
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
    stop_master(&config, &socket_arg);
    println!("\nload average at the end: {}", lab::load());
    Ok(())
}

/// The options that send `ssh` through the ControlMaster at `socket_arg`, with no
/// fallback to a connection of its own when the master refuses a session.
fn mux_options(socket_arg: &str) -> Vec<String> {
    [
        "-o",
        socket_arg,
        "-o",
        "ControlMaster=no",
        "-o",
        "ProxyCommand=false",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn start_master(config: &str, socket_arg: &str) {
    let master = Std::new("ssh")
        .args([
            "-F",
            config,
            "-o",
            "ControlMaster=yes",
            "-o",
            socket_arg,
            "-N",
            "-f",
            "lab",
        ])
        .status()
        .expect("ssh");
    assert!(master.success(), "starting the ControlMaster failed");
}

fn stop_master(config: &str, socket_arg: &str) {
    let _ = Std::new("ssh")
        .args(["-F", config, "-o", socket_arg, "-O", "exit", "lab"])
        .stderr(Stdio::null())
        .status();
}

/// The server's `MaxSessions`, from the sshd_config beside its ssh_config.
fn max_sessions(server: &lab::Server) -> String {
    let dir = std::path::Path::new(&server.ssh_config)
        .parent()
        .map(|dir| dir.join("sshd_config"));
    dir.and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MaxSessions ").map(str::to_owned))
        })
        .unwrap_or_else(|| "10".to_owned())
}

/// 200 `true` at once on `remote` and through the ControlMaster `mux` names: the time and
/// how many succeeded, for each.
async fn at_once(
    remote: &leadpipe::SshMachine,
    server: &lab::Server,
    mux: &[String],
    rounds: usize,
) {
    let mux: Vec<&str> = mux.iter().map(String::as_str).collect();
    let (mut ours, mut muxed) = (Vec::new(), Vec::new());
    let (mut ours_ok, mut muxed_ok) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (took, ok) = ours_at_once(remote).await;
        ours.push(took);
        ours_ok.push(ok);
        let start = Instant::now();
        let children: Vec<_> = (0..200)
            .map(|_| ssh(&server.ssh_config, &mux, "true").spawn().expect("ssh"))
            .collect();
        let mut ok = 0;
        for mut child in children {
            ok += usize::from(child.wait().is_ok_and(|status| status.success()));
        }
        muxed.push(start.elapsed());
        muxed_ok.push(ok);
    }
    println!(
        "| 200 x `true` at once, MaxSessions {}, total | {} ({} ok) | | {} ({} ok) |",
        max_sessions(server),
        secs(lab::median(&ours)),
        oks(&ours_ok),
        secs(lab::median(&muxed)),
        oks(&muxed_ok),
    );
}

/// 200 `true` at once on `remote`: the time, and how many succeeded.
async fn ours_at_once(remote: &leadpipe::SshMachine) -> (Duration, usize) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.cmd("true").run().await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.is_ok_and(|run| run.is_ok()));
    }
    (start.elapsed(), ok)
}

/// The same on `connections` connections (`SshBuilder::connections`), leadpipe alone.
async fn spread_at_once(
    server: &lab::Server,
    connections: usize,
    rounds: usize,
) -> leadpipe::Result<()> {
    let remote = server.builder().connections(connections).connect().await?;
    let (mut took, mut oks_seen) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (time, ok) = ours_at_once(&remote).await;
        took.push(time);
        oks_seen.push(ok);
    }
    println!(
        "| 200 x `true` at once, MaxSessions {}, `connections({connections})`, total | {} ({} ok) | | |",
        max_sessions(server),
        secs(lab::median(&took)),
        oks(&oks_seen),
    );
    Ok(())
}

fn secs(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

fn oks(counts: &[usize]) -> String {
    counts
        .iter()
        .map(|ok| format!("{ok}/200"))
        .collect::<Vec<_>>()
        .join(", ")
}
