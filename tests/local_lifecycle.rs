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

/// Set in the environment of the script that [`a_detached_command_outlives_the_script_that_started_it`]
/// runs: this test binary itself, running only that test.
const DETACH_SCRIPT: &str = "LEADPIPE_TEST_DETACH_SCRIPT";

#[test]
fn a_detached_command_outlives_the_script_that_started_it() {
    use leadpipe::blocking::Wait;
    if std::env::var_os(DETACH_SCRIPT).is_some() {
        // The script: a plain `fn main` with the blocking calls, which ends right after.
        let pid = local()
            .cmd("sleep")
            .arg("1000.5")
            .spawn_detached()
            .wait()
            .unwrap();
        println!("detached:{pid}:{}", std::process::id());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let output = local()
        .cmd(exe)
        .args([
            "a_detached_command_outlives_the_script_that_started_it",
            "--exact",
            "--nocapture",
        ])
        .env(DETACH_SCRIPT, "1")
        // A detached process that kept the script's stdout would hold this read open.
        .timeout(Duration::from_secs(60))
        .read()
        .wait()
        .unwrap();
    let line = output
        .lines()
        .find_map(|line| line.strip_prefix("detached:"))
        .unwrap_or_else(|| panic!("no pid in the script's output:\n{output}"));
    let (pid, script) = line.split_once(':').unwrap();
    let (pid, script): (u32, u32) = (pid.parse().unwrap(), script.parse().unwrap());
    let _cleanup = support::KillOnDrop(pid.into());
    assert_eq!(support::process_state(script), None, "the script has ended");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        support::process_cmdline(pid),
        "sleep 1000.5",
        "the pid is the program's"
    );
    assert!(
        matches!(support::process_state(pid), Some('S' | 'R')),
        "it still runs after the script ended"
    );
    let (parent, group, session) = support::process_ids(pid).unwrap();
    assert_eq!(
        (group, session),
        (pid, pid),
        "it leads a session of its own"
    );
    assert_ne!(parent, script);
}

#[tokio::test]
async fn no_zombie_is_left_by_a_detached_command_and_its_file_gets_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let pid = local()
        .with_cwd(dir.path())
        .cmd("sh")
        .args(["-c", "echo out; echo err >&2; exec sleep 1000.25"])
        .stdout(leadpipe::Redirect::File("out.txt".into()))
        .stderr_to_stdout()
        .spawn_detached()
        .await
        .unwrap();
    let _cleanup = support::KillOnDrop(pid.into());
    let ours = std::process::id();
    // The process in between was reaped before the call returned: no child of ours was
    // forked by this thread (the test's own, whose name it carries until it execs; the
    // kernel keeps 15 bytes of it, unique among this file's tests).
    let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    let children: Vec<(u32, Option<char>)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| support::process_ids(child).is_some_and(|(parent, ..)| parent == ours))
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|c| c == name)
        })
        .map(|child| (child, support::process_state(child)))
        .collect();
    assert_eq!(
        children,
        [],
        "no child (zombie or not) of this process is left"
    );
    let (parent, group, session) = support::process_ids(pid).unwrap();
    assert_ne!(parent, ours, "it is no child of ours");
    assert_eq!(
        (group, session),
        (pid, pid),
        "it leads a session of its own"
    );
    let out = dir.path().join("out.txt");
    for _ in 0..500 {
        if support::process_cmdline(pid) == "sleep 1000.25" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        support::process_cmdline(pid),
        "sleep 1000.25",
        "the pid is the program's"
    );
    assert_eq!(std::fs::read_to_string(out).unwrap(), "out\nerr\n");
}

#[tokio::test]
async fn a_detached_pipeline_runs_each_stage_in_a_session_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let sh = local().with_cwd(dir.path());
    let first = sh
        .cmd("sh")
        .args(["-c", "echo hello; echo $$ > first.pid; exec sleep 1000.75"]);
    let last = sh
        .cmd("sh")
        .args(["-c", "echo $$ > last.pid; exec cat"])
        .stdout(leadpipe::Redirect::File("out.txt".into()));
    let pid = (first | last).spawn_detached().await.unwrap();
    let _cleanup = support::KillOnDrop(pid.into());
    assert_eq!(
        read_pid(&dir.path().join("first.pid")),
        pid,
        "the first stage's pid"
    );
    let last = read_pid(&dir.path().join("last.pid"));
    let _cleanup_last = support::KillOnDrop(last.into());
    for stage in [pid, last] {
        let (_, group, session) = support::process_ids(stage).unwrap();
        assert_eq!((group, session), (stage, stage));
    }
    for _ in 0..500 {
        if std::fs::read_to_string(dir.path().join("out.txt")).is_ok_and(|o| o == "hello\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(out, "hello\n", "the stages are connected");
}

#[tokio::test]
async fn detaching_what_cannot_start_or_would_be_tied_to_the_script_is_an_error() {
    let error = local()
        .cmd("leadpipe-no-such-program")
        .spawn_detached()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::CommandNotFound { .. }), "{error}");
    // Found and executable, but its exec fails: the grandchild's failure comes back.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "#!/leadpipe/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let error = local().cmd(&broken).spawn_detached().await.unwrap_err();
    assert!(
        matches!(&error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{error}"
    );
    // In a later stage: the stage already detached is stopped, not left behind.
    let marker = "1000.875";
    let error = (local().cmd("sleep").arg(marker) | local().cmd(&broken))
        .spawn_detached()
        .await
        .unwrap_err();
    assert!(matches!(&error, Error::Io { .. }), "{error}");
    let left = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| support::process_cmdline(pid) == format!("sleep {marker}"))
            .filter(|&pid| !support::wait_gone(pid))
            .collect()
    };
    assert_eq!(left(), [], "the first stage is gone");
    let refused = [
        local().cmd("cat").stdin(b"x".to_vec()),
        local().cmd("cat").stdout(leadpipe::Redirect::Pipe),
        local().cmd("cat").stderr(leadpipe::Redirect::Inherit),
    ];
    for command in refused {
        let error = command.spawn_detached().await.unwrap_err();
        assert!(
            matches!(&error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
            "{error}"
        );
        assert!(
            error.to_string().contains("connected to this script"),
            "{error}"
        );
    }
}
