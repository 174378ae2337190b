//! What leadpipe stops, and when: timeouts, dropped children and streams.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use leadpipe::{Error, local};
use support::{read_pid, testbin, wait_gone};

/// A stage that records its pid and a background grandchild's pid, then hangs.
fn hanging_stage(dir: &std::path::Path) -> leadpipe::Command {
    let script = "echo $$ > stage.pid; sleep 30 & echo $! > grandchild.pid; wait";
    local().with_cwd(dir).cmd("sh").args(["-c", script])
}

#[tokio::test]
async fn timeout_kills_every_stage_and_their_children_even_when_an_early_stage_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_millis(300);
    let pipeline =
        (hanging_stage(dir.path()) | testbin().arg("cat") | local().cmd("cat")).timeout(limit);
    let started = Instant::now();
    let error = pipeline.read().await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(error, Error::Timeout { timeout, .. } if timeout == limit),
        "{error}"
    );
    // Without the kill this would take 30 s; the precise overshoot is measured by
    // examples/bench_local.rs, not asserted here.
    assert!(elapsed < limit + Duration::from_secs(5), "{elapsed:?}");
    assert!(
        wait_gone(read_pid(&dir.path().join("stage.pid"))),
        "the hanging stage is gone"
    );
    assert!(
        wait_gone(read_pid(&dir.path().join("grandchild.pid"))),
        "its child is gone too"
    );
}

#[tokio::test]
async fn a_stage_timeout_limits_the_whole_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let stage = hanging_stage(dir.path()).timeout(Duration::from_millis(200));
    let error = (stage | local().cmd("cat")).output().await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(wait_gone(read_pid(&dir.path().join("grandchild.pid"))));
}

#[tokio::test]
async fn dropping_a_running_child_kills_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let child = (hanging_stage(dir.path()) | local().cmd("cat"))
        .spawn()
        .await
        .unwrap();
    let stage = read_pid(&dir.path().join("stage.pid"));
    let grandchild = read_pid(&dir.path().join("grandchild.pid"));
    assert_eq!(
        support::process_state(grandchild).map(|s| s != 'Z'),
        Some(true)
    );
    drop(child);
    assert!(wait_gone(stage), "the stage is gone");
    assert!(wait_gone(grandchild), "the grandchild is gone");
}

#[tokio::test]
async fn every_stage_shares_one_new_process_group() {
    let sh = local();
    let output = (testbin().arg("pgid")
        | sh.cmd("sh")
            .args(["-c", "cat; exec \"$0\" pgid", support::TESTBIN]))
    .read()
    .await
    .unwrap();
    let ids: Vec<Vec<u32>> = output
        .lines()
        .map(|l| l.split(' ').map(|n| n.parse().unwrap()).collect())
        .collect();
    let (first, second) = (&ids[0], &ids[1]);
    assert_eq!(first[0], first[1], "the first stage leads the group");
    assert_eq!(second[1], first[0], "the second stage joins it");
    let ours = std::process::id();
    assert_ne!(first[1], ours);
}

#[tokio::test]
async fn dropping_lines_early_kills_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let script = "echo $$ > stage.pid; echo first; exec sleep 30";
    let mut lines = local()
        .with_cwd(dir.path())
        .cmd("sh")
        .args(["-c", script])
        .lines();
    assert_eq!(lines.next().await.unwrap().unwrap().text(), "first");
    let pid = read_pid(&dir.path().join("stage.pid"));
    drop(lines);
    assert!(wait_gone(pid));
}

#[tokio::test]
async fn lines_honour_the_timeout() {
    let mut lines = testbin()
        .args(["sleep", "30"])
        .timeout(Duration::from_millis(100))
        .lines();
    assert!(matches!(
        lines.next().await,
        Some(Err(Error::Timeout { .. }))
    ));
    assert!(lines.next().await.is_none());
}

#[tokio::test]
async fn a_failed_start_leaves_nothing_running() {
    // The first stage may be killed before it runs a single instruction of its own, so it
    // is found by a marker in its command line, not by anything it writes.
    let marker = "31.4159265";
    let first = testbin().args(["sleep", marker]);
    let error = (first | local().cmd("cat").cwd("/leadpipe/missing"))
        .run()
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("no directory /leadpipe/missing"),
        "{error}"
    );
    let running = |marker: &str| {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let live = support::process_state(
                    entry
                        .file_name()
                        .to_str()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                );
                cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == marker.as_bytes())
                    && !matches!(live, None | Some('Z'))
            })
    };
    for _ in 0..500 {
        if !running(marker) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the first stage is still running");
}

#[tokio::test]
async fn a_timeout_returns_even_when_an_escaped_grandchild_holds_stdout() {
    let dir = tempfile::tempdir().unwrap();
    // setsid puts the sleep out of the pipeline's process group: the kill cannot reach it,
    // and it keeps the captured stdout open.
    let script = "setsid sleep 30 & echo $! > escaped.pid; wait";
    let cmd = local()
        .with_cwd(dir.path())
        .cmd("sh")
        .args(["-c", script])
        .timeout(Duration::from_millis(300));
    let started = Instant::now();
    let error = cmd.read().await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let escaped = read_pid(&dir.path().join("escaped.pid"));
    assert_eq!(
        support::process_state(escaped).map(|s| s != 'Z'),
        Some(true),
        "it did escape"
    );
    // SAFETY: killing the test's own stray process.
    unsafe { libc_kill(escaped) };
}

unsafe fn libc_kill(pid: u32) {
    unsafe extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    unsafe { kill(pid as i32, 9) };
}
