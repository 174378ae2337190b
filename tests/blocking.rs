//! `leadpipe::blocking`: the same calls from a plain `fn`.

mod support;

use leadpipe::{
    Error, Line,
    blocking::{Wait, WaitIter},
    local,
};

#[test]
fn every_call_works_without_a_runtime() {
    let sh = local();
    assert_eq!(sh.cmd("echo").arg("hi").read().wait().unwrap(), "hi");
    assert_eq!(
        (sh.cmd("yes") | sh.cmd("head").arg("-2"))
            .read_bytes()
            .wait()
            .unwrap(),
        b"y\ny\n"
    );
    assert!(!sh.cmd("false").success().wait().unwrap());
    let mut child = support::testbin().arg("cat").spawn().wait().unwrap();
    drop(child.stdin.take());
    child.wait().wait().unwrap();
    let lines: Vec<Line> = sh
        .cmd("sh")
        .args(["-c", "echo a; echo b >&2"])
        .lines()
        .wait_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lines.len(), 2);
    let error = support::testbin()
        .args(["exit", "2", "blocked"])
        .read()
        .wait()
        .unwrap_err();
    assert!(error.to_string().ends_with("stderr: blocked"), "{error}");
}

#[test]
fn inside_a_runtime_it_is_an_error_not_a_deadlock() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let error = local().cmd("true").run().wait().unwrap_err();
        assert!(matches!(error, Error::BlockingInRuntime));
        assert_eq!(
            error.to_string(),
            "a leadpipe::blocking call was made inside an async runtime, where it would block \
             the runtime; use .await instead"
        );
        let mut lines = local().cmd("true").lines().wait_iter();
        assert!(matches!(lines.next(), Some(Err(Error::BlockingInRuntime))));
    });
}
