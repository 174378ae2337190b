//! Seeing what runs, outside fleets: `echo` prints each command line before it runs, and
//! every command runs in a tracing span with its machine, line, pid, status and duration.
//! Locally and on real sshd (skipped where sshd is missing, failing where `CI=true`).

mod support;

use leadpipe::{Machine, local};
use support::{sshd::Sshd, trace::Capture};

/// The child half of `echo_prints_each_line_before_it_runs`.
#[tokio::test]
async fn echo_child() {
    if std::env::var("LEADPIPE_ECHO_CHILD").is_err() {
        return;
    }
    let sh = local().echo(true);
    sh.cmd("printf")
        .args(["%s\\n", "it's"])
        .run()
        .await
        .unwrap();
    (sh.cmd("echo").arg("a b") | local().cmd("tr").args(["a", "x"]))
        .run()
        .await
        .unwrap();
    // Echo is per view and per command: neither of these prints its line.
    local().cmd("true").run().await.unwrap();
    sh.cmd("true").echo(false).run().await.unwrap();
    local()
        .cmd("echo")
        .arg("by command")
        .echo(true)
        .read()
        .await
        .unwrap();
}

#[test]
fn echo_prints_each_line_before_it_runs() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "echo_child", "--nocapture", "--test-threads=1"])
        .env("LEADPIPE_ECHO_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let echoed: Vec<&str> = stderr.lines().filter(|l| l.starts_with("+ ")).collect();
    assert_eq!(
        echoed,
        [
            "+ printf '%s\\n' 'it'\\''s'",
            "+ echo 'a b' | tr a x",
            "+ echo 'by command'",
        ],
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("it's\n") && stdout.contains("x b\n"),
        "{stdout}"
    );
}

/// The `command` spans recorded while `work` ran.
fn spans_of(work: impl AsyncFnOnce()) -> Vec<support::trace::Span> {
    let capture = Capture::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(capture.clone(), || runtime.block_on(work()));
    (capture.spans().into_iter())
        .filter(|s| s.name == "command")
        .collect()
}

/// The span of a command on `machine` that exits 3 has its machine, line, pid, status and
/// duration; one that is not found says so.
fn check_spans(machine: &impl Machine) {
    let spans = spans_of(async || {
        let failed = machine.cmd("sh").args(["-c", "exit 3"]).run().await;
        assert!(failed.is_err());
        machine.cmd("echo").arg("a b").read().await.unwrap();
    });
    assert_eq!(spans.len(), 2, "{spans:?}");
    let field = |i: usize, name: &str| spans[i].fields.get(name).cloned().unwrap_or_default();
    assert_eq!(field(0, "machine"), machine.name());
    assert_eq!(field(0, "command"), "sh -c 'exit 3'");
    assert_eq!(field(0, "status"), "exit code 3");
    assert_eq!(field(1, "command"), "echo 'a b'");
    assert_eq!(field(1, "status"), "exit code 0");
    for i in 0..2 {
        assert!(field(i, "pid").parse::<u32>().unwrap() > 1, "{spans:?}");
        field(i, "duration_ms").parse::<u64>().unwrap();
    }
}

#[test]
fn every_local_command_has_a_span() {
    check_spans(&local());
}

#[test]
fn every_remote_command_has_a_span() {
    let Some(sshd) = Sshd::start() else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let machine = runtime.block_on(sshd.machine());
    check_spans(&machine);
}
