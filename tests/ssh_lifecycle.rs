//! Many processes on one SSH connection, and what stops them: timeouts, `kill()`, dropped
//! children and line streams. Checked against a real OpenSSH sshd (tests/support/sshd.rs)
//! with its `pgrep`, as the normal user and as root (for whom sshd refuses `signal`
//! requests, so the library kills through a second channel).

mod support;

use std::{fs, os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

use futures::StreamExt;
use leadpipe::{Error, ExitStatus, Signal, SshMachine};
use support::sshd::Sshd;

/// A fresh directory in the server's dir that every user may write (mode 0777).
fn shared_dir(sshd: &Sshd, name: &str) -> PathBuf {
    let dir = sshd.dir.path().join(name);
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Waits up to 10 s until `pattern` runs on the server (a started command really started).
async fn wait_running(sshd: &Sshd, pattern: &str) -> Vec<u32> {
    for _ in 0..1000 {
        let pids = sshd.pgrep(pattern);
        if !pids.is_empty() {
            return pids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{pattern} never ran on the server\nsshd log:\n{}",
        sshd.log_text()
    );
}

/// Waits up to 5 s until nothing matching `pattern` runs on the server any more.
async fn gone(sshd: &Sshd, pattern: &str) -> bool {
    for _ in 0..500 {
        if sshd.pgrep(pattern).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn two_hundred_concurrent_runs_from_clones_all_succeed() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let remote = remote.clone();
            tokio::spawn(async move {
                remote
                    .cmd("sh")
                    .args(["-c", "sleep 0.05; printf '%s' \"$1\"", "sh", &i.to_string()])
                    .read()
                    .await
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
        .await
        .expect("did not hang");
    for (i, result) in all.into_iter().enumerate() {
        assert_eq!(result.unwrap().unwrap(), i.to_string(), "run {i}");
    }
    // ... and also with run(), whose stdio goes to this process's own.
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.cmd("true").run().await })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
        .await
        .expect("did not hang");
    for (i, result) in all.into_iter().enumerate() {
        result.unwrap().unwrap_or_else(|e| panic!("run {i}: {e}"));
    }
    assert!(!remote.is_closed());
}

#[tokio::test]
async fn processes_run_at_the_same_time_each_on_its_own_channel() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let dir = shared_dir(&sshd, "meet");
    // Each waits until all of them have arrived: they can only all finish if they run at
    // the same time (8: within the 9 channels leadpipe uses of OpenSSH's 10).
    const N: usize = 8;
    let script = format!(
        "touch \"$1\"; while [ $(ls | wc -l) -lt {N} ]; do sleep 0.02; done; echo \"$SSH_CONNECTION\""
    );
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let there = remote.with_cwd(&dir);
            let script = script.clone();
            tokio::spawn(async move {
                there
                    .cmd("sh")
                    .args(["-c", &script, "sh", &i.to_string()])
                    .timeout(Duration::from_secs(60))
                    .read()
                    .await
            })
        })
        .collect();
    let mut connections = Vec::new();
    for task in tasks {
        connections.push(task.await.unwrap().unwrap());
    }
    // One TCP connection carries them all.
    connections.dedup();
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert_eq!(
        sshd.log_text().matches("Accepted publickey").count(),
        1,
        "one login"
    );
}

#[tokio::test]
async fn a_server_with_fewer_sessions_makes_work_wait_instead_of_failing() {
    let Some(sshd) = Sshd::start_with(&["MaxSessions 2"]) else {
        return;
    };
    let remote = sshd.login(&sshd.user).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let remote = remote.clone();
            tokio::spawn(async move {
                remote
                    .cmd("sh")
                    .args(["-c", "sleep 0.5; printf '%s' \"$1\"", "sh", &i.to_string()])
                    .read()
                    .await
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
        .await
        .expect("did not hang");
    for (i, result) in all.into_iter().enumerate() {
        assert_eq!(result.unwrap().unwrap(), i.to_string(), "run {i}");
    }
}

/// Session channels the server opened for us, and the opens it refused, from its debug log.
fn session_opens(sshd: &Sshd) -> (usize, usize) {
    let log = sshd.log_text();
    (
        log.matches("server_input_channel_open: confirm session")
            .count(),
        log.matches("server_input_channel_open: failure session")
            .count(),
    )
}

#[tokio::test]
async fn the_server_limit_is_learnt_and_no_channel_is_opened_in_vain() {
    let Some(sshd) = Sshd::start_with(&["MaxSessions 2", "LogLevel DEBUG1"]) else {
        return;
    };
    let remote = sshd.login(&sshd.user).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let remote = remote.clone();
            tokio::spawn(async move {
                remote
                    .cmd("sh")
                    .args(["-c", "sleep 0.2; printf '%s' \"$1\"", "sh", &i.to_string()])
                    .read()
                    .await
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
        .await
        .expect("did not hang");
    for (i, result) in all.into_iter().enumerate() {
        assert_eq!(result.unwrap().unwrap(), i.to_string(), "run {i}");
    }
    // A channel per command, and at most the spare opened ahead of the next one (at
    // connect and again at the end): none opened only to be closed unused.
    let (opened, refused) = session_opens(&sshd);
    eprintln!("20 commands on MaxSessions 2: {opened} channels opened, {refused} refused");
    assert!(opened >= 20, "{opened} channels for 20 commands?");
    assert!(opened <= 22, "{opened} channels opened for 20 commands");
    // The first burst meets the limit once (18 of the 19 opens at once); the rest are the
    // server still closing a channel when the next open arrives, a few at most.
    assert!(refused <= 18 + 20, "{refused} refusals");
    // The limit learnt holds for the next burst: two channels busy, the rest wait.
    let before = session_opens(&sshd).1;
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.cmd("sleep").arg("0.2").run().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let refused = session_opens(&sshd).1 - before;
    assert!(refused <= 6, "{refused} refusals once the limit was known");
}

#[tokio::test]
async fn max_channels_matches_a_server_with_fewer_sessions() {
    let Some(sshd) = Sshd::start_with(&["MaxSessions 2"]) else {
        return;
    };
    let remote = SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key)
        .known_hosts(&sshd.known_hosts)
        .ssh_config(None)
        .max_channels(2)
        .connect()
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let remote = remote.clone();
            tokio::spawn(async move {
                remote
                    .cmd("sh")
                    .args(["-c", "sleep 0.2; printf '%s' \"$1\"", "sh", &i.to_string()])
                    .read()
                    .await
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(tasks))
        .await
        .expect("did not hang");
    for (i, result) in all.into_iter().enumerate() {
        assert_eq!(result.unwrap().unwrap(), i.to_string(), "run {i}");
    }
}

/// A machine that uses two channels, for a server that allows two sessions.
async fn two_channels(sshd: &Sshd, user: &str) -> SshMachine {
    sshd.builder(user).max_channels(2).connect().await.unwrap()
}

#[tokio::test]
async fn the_channel_kept_for_kills_stops_a_process_while_the_others_are_busy() {
    let Some(sshd) = Sshd::start_with(&["MaxSessions 2"]) else {
        return;
    };
    for user in sshd.users() {
        let remote = two_channels(&sshd, &user).await;
        // The one channel for processes is busy; the kill needs the other.
        let child = tokio::time::timeout(
            Duration::from_secs(30),
            remote.cmd("sleep").arg("4250").spawn(),
        )
        .await
        .expect("a channel for the spawn")
        .unwrap();
        wait_running(&sshd, "sleep 4250").await;
        drop(child);
        assert!(gone(&sshd, "sleep 4250").await, "as {user}");
        let ok = tokio::time::timeout(Duration::from_secs(30), remote.cmd("echo").arg("ok").read())
            .await
            .expect("the channel came back");
        assert_eq!(ok.unwrap(), "ok");
    }
}

#[tokio::test]
async fn a_timeout_covers_waiting_for_a_channel() {
    let Some(sshd) = Sshd::start_with(&["MaxSessions 2"]) else {
        return;
    };
    let remote = two_channels(&sshd, &sshd.user).await;
    let busy = remote.cmd("sleep").arg("4258").spawn().await.unwrap();
    wait_running(&sshd, "sleep 4258").await;
    let queued = remote
        .cmd("sleep")
        .arg("4259")
        .timeout(Duration::from_millis(300));
    let result = tokio::time::timeout(Duration::from_secs(20), queued.run())
        .await
        .expect("the timeout ended the wait for a channel");
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    drop(busy);
    assert!(gone(&sshd, "sleep 4258").await);
    assert!(gone(&sshd, "sleep 4259").await);
}

#[tokio::test]
async fn a_timeout_stops_the_remote_command_and_its_pipeline() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let limit = Duration::from_millis(500);
        let error = remote
            .cmd("sleep")
            .arg("4242")
            .timeout(limit)
            .run()
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Timeout { timeout, machine, .. } if *timeout == limit && machine == remote.name()),
            "{error}"
        );
        assert!(
            error.to_string().starts_with(&format!(
                "command timed out after 500ms on {}",
                remote.name()
            )),
            "{error}"
        );
        assert!(
            gone(&sshd, "sleep 4242").await,
            "as {user}: sleep 4242 is still running"
        );

        // Every stage of a pipeline, and a background child of a stage.
        let pipeline = (remote
            .cmd("sh")
            .args(["-c", "sleep 4243 & sleep 4244; wait"])
            | remote.cmd("cat")
            | remote.cmd("sleep").arg("4245"))
        .timeout(limit);
        let error = tokio::time::timeout(Duration::from_secs(30), pipeline.output())
            .await
            .expect("did not hang")
            .unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
        for pattern in ["sleep 4243", "sleep 4244", "sleep 4245"] {
            assert!(
                gone(&sshd, pattern).await,
                "as {user}: {pattern} is still running"
            );
        }
        assert!(gone(&sshd, "cat").await, "as {user}: cat is still running");
        // The connection is fine afterwards.
        assert_eq!(remote.cmd("echo").arg("ok").read().await.unwrap(), "ok");
    }
}

#[tokio::test]
async fn kill_stops_the_remote_pipeline_and_reports_sigkill() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let mut child = remote.cmd("sleep").arg("4246").spawn().await.unwrap();
        wait_running(&sshd, "sleep 4246").await;
        tokio::time::timeout(Duration::from_secs(30), child.kill())
            .await
            .expect("kill returned")
            .unwrap();
        assert!(gone(&sshd, "sleep 4246").await, "as {user}");
        let error = child.wait().await.unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Signal(Signal::KILL), "as {user}");
        assert!(
            error.to_string().starts_with(&format!(
                "command was killed by SIGKILL on {}",
                remote.name()
            )),
            "{error}"
        );

        let mut child = (remote.cmd("sh").args(["-c", "sleep 4247 & wait"])
            | remote.cmd("sleep").arg("4248"))
        .spawn()
        .await
        .unwrap();
        wait_running(&sshd, "sleep 4247").await;
        wait_running(&sshd, "sleep 4248").await;
        tokio::time::timeout(Duration::from_secs(30), child.kill())
            .await
            .expect("kill returned")
            .unwrap();
        assert!(gone(&sshd, "sleep 4247").await, "as {user}");
        assert!(gone(&sshd, "sleep 4248").await, "as {user}");
        assert!(child.wait().await.is_err());
    }
}

#[tokio::test]
async fn signal_reaches_the_remote_process_as_root_too() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let mut child = remote.cmd("sleep").arg("4249").spawn().await.unwrap();
        wait_running(&sshd, "sleep 4249").await;
        child.signal(Signal::TERM).unwrap();
        let error = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the signal arrived")
            .unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Signal(Signal::TERM), "as {user}");
        assert!(gone(&sshd, "sleep 4249").await, "as {user}");
        // After the end: nothing to do, no error.
        child.signal(Signal::TERM).unwrap();
    }
}

#[tokio::test]
async fn dropping_a_child_stops_the_remote_pipeline() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let child = remote.cmd("sleep").arg("4252").spawn().await.unwrap();
        wait_running(&sshd, "sleep 4252").await;
        drop(child);
        assert!(gone(&sshd, "sleep 4252").await, "as {user}");

        let child = (remote.cmd("sh").args(["-c", "sleep 4253 & sleep 4254"])
            | remote.cmd("cat")
            | remote.cmd("sleep").arg("4255"))
        .spawn()
        .await
        .unwrap();
        for pattern in ["sleep 4253", "sleep 4254", "sleep 4255"] {
            wait_running(&sshd, pattern).await;
        }
        drop(child);
        for pattern in ["sleep 4253", "sleep 4254", "sleep 4255"] {
            assert!(
                gone(&sshd, pattern).await,
                "as {user}: {pattern} is still running"
            );
        }
        // A dropped line stream too.
        let mut lines = remote
            .cmd("sh")
            .args(["-c", "echo first; exec sleep 4256"])
            .lines();
        assert_eq!(lines.next().await.unwrap().unwrap().text(), "first");
        wait_running(&sshd, "sleep 4256").await;
        drop(lines);
        assert!(gone(&sshd, "sleep 4256").await, "as {user}");
        // A cancelled call (the future dropped mid-flight).
        let sleep = remote.cmd("sleep").arg("4257");
        let call = sleep.run();
        tokio::select! {
            result = call => panic!("the sleep cannot have finished: {result:?}"),
            _ = wait_running(&sshd, "sleep 4257") => {}
        }
        assert!(gone(&sshd, "sleep 4257").await, "as {user}");
        assert_eq!(remote.cmd("echo").arg("ok").read().await.unwrap(), "ok");
    }
}

#[tokio::test]
async fn every_channel_is_given_back_after_kills() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    // More kills than the server has sessions: a slot that leaked would stall the loop.
    for i in 0..25 {
        let sleep = remote.cmd("sleep").arg(format!("43{i:02}"));
        let child = tokio::time::timeout(Duration::from_secs(30), sleep.spawn())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "spawn {i} got no channel; still running: {:?}",
                    sshd.pgrep("sleep 43")
                        .iter()
                        .map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                            .unwrap_or_default())
                        .collect::<Vec<_>>()
                )
            })
            .unwrap();
        drop(child);
    }
    let ok = tokio::time::timeout(
        Duration::from_secs(60),
        remote.cmd("echo").arg("still fine").read(),
    )
    .await
    .expect("did not hang");
    assert_eq!(ok.unwrap(), "still fine");
    assert!(gone(&sshd, "sleep 43").await);
}

#[tokio::test]
async fn dropping_a_child_right_after_spawn_stops_it() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        for i in 0..5 {
            let pattern = format!("sleep 426{i}");
            let sleep = remote.cmd("sleep").arg(format!("426{i}"));
            let child = sleep.spawn().await.unwrap();
            drop(child);
            // Give it the time to start if it is going to.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                gone(&sshd, &pattern).await,
                "as {user}: {pattern} is still running\nsshd log:\n{}",
                sshd.log_text()
            );
        }
    }
}

/// The real user id of a process, from /proc (the server is this machine).
fn process_uid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_detached_remote_command_outlives_its_channel_and_connection_in_a_session_of_its_own() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let dir = shared_dir(&sshd, "detached");
    let pid = remote
        .with_cwd(&dir)
        .cmd("sh")
        .args(["-c", "echo out; echo err >&2; exec sleep 1001.5"])
        .stdout(leadpipe::Redirect::File("out.txt".into()))
        .stderr_to_stdout()
        .spawn_detached()
        .await
        .unwrap();
    let _cleanup = support::KillOnDrop(pid.into());
    let user_uid = remote.cmd("id").arg("-u").read().await.unwrap();
    // The call's channel is closed already; now the connection ends too. Every process of
    // this server's sessions goes, but the detached one.
    drop(remote);
    let mut left = Vec::new();
    for _ in 0..500 {
        left = sshd.pgrep("");
        if left == [pid] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        left,
        [pid],
        "only the detached process is left of the connection"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        support::process_cmdline(pid),
        "sleep 1001.5",
        "it still runs, and the pid is the program's"
    );
    let (_, group, session) = support::process_ids(pid).unwrap();
    assert_eq!(
        (group, session),
        (pid, pid),
        "it leads a session of its own"
    );
    assert_eq!(process_uid(pid).map(|u| u.to_string()), Some(user_uid));
    assert_eq!(
        fs::read_to_string(dir.join("out.txt")).unwrap(),
        "out\nerr\n"
    );
}

#[tokio::test]
async fn a_detached_remote_pipeline_shares_one_session_and_a_missing_program_is_an_error() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let error = remote
        .cmd("leadpipe-no-such-program")
        .spawn_detached()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::CommandNotFound { .. }), "{error}");
    let error = (remote.cmd("true") | remote.cmd("leadpipe-no-such-program"))
        .spawn_detached()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::CommandNotFound { .. }), "{error}");
    let error = remote
        .cmd("cat")
        .stdout(leadpipe::Redirect::Pipe)
        .spawn_detached()
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("connected to this script"),
        "{error}"
    );
    let error = (leadpipe::local().cmd("true") | remote.cmd("cat"))
        .spawn_detached()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("several machines"), "{error}");

    let dir = shared_dir(&sshd, "pipeline");
    let there = remote.with_cwd(&dir);
    let pipeline = there
        .cmd("sh")
        .args(["-c", "echo hello; exec sleep 1002.5"])
        | there
            .cmd("cat")
            .stdout(leadpipe::Redirect::File("out.txt".into()));
    let pid = pipeline.spawn_detached().await.unwrap();
    let _cleanup = support::KillOnDrop(-i64::from(pid));
    let exactly = |line: &str| -> Vec<u32> {
        (sshd.pgrep(line).into_iter())
            .filter(|&p| support::process_cmdline(p) == line)
            .collect()
    };
    // Both stages start at once; either may exec first.
    for _ in 0..500 {
        if exactly("sleep 1002.5").len() == 1 && exactly("cat").len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sleep = exactly("sleep 1002.5");
    assert_eq!(sleep.len(), 1);
    let in_session = |stage: u32| support::process_ids(stage).map(|(_, _, s)| s);
    assert_eq!(
        in_session(pid),
        Some(pid),
        "the pid leads a session of its own"
    );
    assert_eq!(in_session(sleep[0]), Some(pid), "the first stage is in it");
    let cat = exactly("cat");
    assert_eq!(
        cat.iter().map(|&p| in_session(p)).collect::<Vec<_>>(),
        [Some(pid)]
    );
    for _ in 0..500 {
        if fs::read_to_string(dir.join("out.txt")).is_ok_and(|o| o == "hello\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fs::read_to_string(dir.join("out.txt")).unwrap(), "hello\n");
    // The connection is still there for more work.
    assert_eq!(remote.cmd("echo").arg("ok").read().await.unwrap(), "ok");
    drop((remote, there, pipeline));
    let outside = || -> Vec<u32> {
        (sshd.pgrep("").into_iter())
            .filter(|&p| in_session(p).is_some_and(|s| s != pid))
            .collect()
    };
    for _ in 0..500 {
        if outside().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left: Vec<String> = outside()
        .into_iter()
        .map(|p| {
            format!(
                "{p} {:?} {}",
                support::process_ids(p),
                support::process_cmdline(p)
            )
        })
        .collect();
    assert!(
        left.is_empty(),
        "the connection's processes are gone: {left:?}"
    );
    assert_eq!(
        exactly("sleep 1002.5"),
        sleep,
        "it still runs without the connection"
    );
    assert_eq!(exactly("cat"), cat);
}

/// `connections(3)` against a server that allows 2 sessions per connection runs six
/// commands at once: each waits (up to 20 s) until all six have started, then prints how
/// many it saw and its connection (`SSH_CONNECTION` names the client port). One connection
/// runs only two at a time, so there (waiting up to 1 s) they never all start together.
#[tokio::test]
async fn more_connections_run_more_commands_at_once_than_one_allows() {
    let Some(sshd) = Sshd::start_with(&["MaxSessions 2"]) else {
        return;
    };
    let started = shared_dir(&sshd, "started");
    let wait_for_six = "touch \"$1/$2\"; n=0; \
        while [ \"$(ls \"$1\" | wc -l)\" -lt 6 ] && [ $n -lt \"$3\" ]; do sleep 0.05; n=$((n+1)); done; \
        printf '%s %s' \"$(ls \"$1\" | wc -l)\" \"$SSH_CONNECTION\"";
    let run_six = |remote: SshMachine, dir: PathBuf, polls: u32| async move {
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let command = remote
                    .cmd("sh")
                    .args(["-c", wait_for_six, "sh"])
                    .arg(&dir)
                    .args([i.to_string(), polls.to_string()]);
                tokio::spawn(async move { command.read().await })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap().unwrap());
        }
        seen
    };

    let spread = sshd
        .builder(&sshd.user)
        .connections(3)
        .connect()
        .await
        .unwrap();
    let seen = run_six(spread.clone(), started.clone(), 400).await;
    let ports: std::collections::BTreeSet<&str> = seen
        .iter()
        // `6 CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT`
        .map(|line| line.split(' ').nth(2).unwrap_or_default())
        .collect();
    assert!(seen.iter().all(|line| line.starts_with("6 ")), "{seen:?}");
    assert_eq!(ports.len(), 3, "three connections: {seen:?}");
    // Files and tunnels go over the first connection; the machine works as one.
    assert_eq!(spread.cmd("echo").arg("ok").read().await.unwrap(), "ok");

    // The same on one connection: only two ever run together.
    let again = shared_dir(&sshd, "again");
    let single = sshd.login(&sshd.user).await;
    let seen = run_six(single, again, 20).await;
    assert!(seen.iter().any(|line| !line.starts_with("6 ")), "{seen:?}");
}

/// The spare channel is warm: the remote line's shell waits on the server for the next
/// command. Killed from outside, it is not used: once its end has reached the client, the
/// next command runs on a fresh channel with its own output and status; killed just before
/// a command, the command either runs the same way or fails saying nothing of it ran, never
/// with the dead shell's status. The warm shell goes with the machine.
#[tokio::test]
async fn the_warm_spare_is_replaced_when_killed_and_goes_with_the_machine() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let waiting = "read -r lp_m";
    let kill = |pid: u32| {
        let killed = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    };
    let two = remote
        .cmd("sh")
        .args(["-c", "echo two; exit 3"])
        .unchecked();
    assert_eq!(remote.cmd("echo").arg("one").read().await.unwrap(), "one");
    for _ in 0..3 {
        let warm = wait_running(&sshd, waiting).await;
        assert_eq!(warm.len(), 1, "one warm shell: {warm:?}");
        kill(warm[0]);
        while std::path::Path::new(&format!("/proc/{}", warm[0])).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // For its channel's end to reach the client.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let output = two.output().await.unwrap();
        assert_eq!(output.status, ExitStatus::Code(3));
        assert_eq!(output.stdout, b"two\n");
    }
    for _ in 0..5 {
        let warm = wait_running(&sshd, waiting).await;
        kill(warm[0]);
        match two.output().await {
            Ok(output) => {
                assert_eq!(output.status, ExitStatus::Code(3));
                assert_eq!(output.stdout, b"two\n");
            }
            Err(error) => assert!(error.to_string().contains("nothing of it ran"), "{error}"),
        }
    }
    wait_running(&sshd, waiting).await;
    drop(two);
    drop(remote);
    assert!(
        gone(&sshd, waiting).await,
        "the warm shell outlived its machine"
    );
}

/// A login whose rc file prints 300 lines to each stream for every command: the warm
/// spare's shell prints them before any command takes it, and they go to that command, as
/// to a command on a channel of its own. Meanwhile they never stall the connection: a
/// command running beside the spare gets its late output.
#[tokio::test]
async fn a_login_shell_printing_before_the_command_neither_stalls_nor_loses_it() {
    let Some(sshd) = Sshd::start() else { return };
    let rc = "for i in $(seq 300); do echo rc-out-$i; echo rc-err-$i >&2; done\n";
    let Some(user) = sshd.bashrc_user("noisy-rc", rc) else {
        return;
    };
    let remote = sshd.login(&user).await;
    let rc_lines =
        |stream: &str| -> String { (1..=300).map(|i| format!("rc-{stream}-{i}\n")).collect() };
    // Started first, on a channel of its own; its output comes while a spare fills.
    let late = remote.cmd("sh").args(["-c", "sleep 2; echo late"]);
    let late = late.output();
    let sequence = async {
        let mut outputs = Vec::new();
        for i in 0..4 {
            outputs.push(remote.cmd("echo").arg(format!("cmd-{i}")).output().await);
        }
        outputs
    };
    let (late, outputs) = tokio::time::timeout(Duration::from_secs(30), async {
        futures::join!(late, sequence)
    })
    .await
    .expect("nothing stalled");
    let late = late.unwrap();
    assert_eq!(
        late.stdout,
        format!("{}late\n", rc_lines("out")).into_bytes()
    );
    for (i, output) in outputs.into_iter().enumerate() {
        let output = output.unwrap();
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            format!("{}cmd-{i}\n", rc_lines("out"))
        );
        assert_eq!(String::from_utf8(output.stderr).unwrap(), rc_lines("err"));
    }
}

/// With `connections(2)`, when the first connection dies (its sshd session killed), the
/// machine reads as closed, and later commands run on the other one. `connections(0)`
/// counts as one.
#[tokio::test]
async fn commands_go_on_over_the_connections_still_open() {
    let Some(sshd) = Sshd::start() else { return };
    let sessions = || {
        sshd.pgrep(&format!(
            "sshd: {}@notty",
            support::sshd::unix_name(&sshd.user)
        ))
    };
    let one = sshd
        .builder(&sshd.user)
        .connections(0)
        .connect()
        .await
        .unwrap();
    assert_eq!(one.cmd("echo").arg("one").read().await.unwrap(), "one");
    // Which connection a session belongs to is not visible from here: kill one of a fresh
    // machine's two until the one killed was the first.
    for _ in 0..20 {
        let before = sessions();
        let spread = sshd
            .builder(&sshd.user)
            .connections(2)
            .connect()
            .await
            .unwrap();
        // Each login's process takes its name once authenticated.
        let mut new = Vec::new();
        for _ in 0..200 {
            new = sessions();
            new.retain(|pid| !before.contains(pid));
            if new.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(new.len(), 2, "two logins: {new:?}");
        // SAFETY: a process of the test's own sshd.
        unsafe { libc::kill(new[0] as i32, libc::SIGKILL) };
        for _ in 0..200 {
            if spread.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !spread.is_closed() {
            continue;
        }
        // At once, so that not every command finds the spare of the open one.
        let echoes: Vec<_> = (0..10)
            .map(|i| spread.cmd("echo").arg(i.to_string()))
            .collect();
        let echoed = futures::future::join_all(echoes.iter().map(|echo| echo.read())).await;
        for (i, echoed) in echoed.into_iter().enumerate() {
            assert_eq!(echoed.unwrap(), i.to_string());
        }
        return;
    }
    panic!("the first connection was never the one killed");
}
