//! Pipelines and redirects on the local machine.

mod support;

use std::time::Duration;

use futures::StreamExt;
use leadpipe::{Error, ExitStatus, Input, Line, Redirect, Signal, local};
use support::{TESTBIN, stderr_pattern, stdout_pattern, testbin};

#[tokio::test]
async fn stages_are_connected_by_one_os_pipe_that_bypasses_this_process() {
    let sh = local();
    // Each stage names its stdin and stdout on stderr.
    let names = "echo $(readlink /proc/$$/fd/0) $(readlink /proc/$$/fd/1) >&2";
    let output = (sh.cmd("sh").args(["-c", names]) | sh.cmd("sh").args(["-c", names]))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8(output.stderr).unwrap();
    let fds: Vec<&str> = text.split_whitespace().collect();
    let [in1, out1, in2, out2] = fds[..] else {
        panic!("{text}")
    };
    assert_eq!(in1, "/dev/null");
    assert!(out1.starts_with("pipe:["), "{text}");
    assert_eq!(out1, in2, "stage 1 writes the pipe stage 2 reads");
    assert!(
        out2.starts_with("pipe:[") && out2 != out1,
        "the last stage writes another pipe, to us"
    );
}

#[tokio::test]
async fn pipelines_move_bytes_exactly() {
    let sh = local();
    let size = 3 * 1024 * 1024 + 7;
    let out =
        (testbin().args(["write", &size.to_string(), "0"]) | testbin().arg("cat") | sh.cmd("cat"))
            .read_bytes()
            .await
            .unwrap();
    assert!(
        out == stdout_pattern(size),
        "{} bytes differ from the pattern",
        out.len()
    );
}

#[tokio::test]
async fn pipefail_names_the_first_failing_stage_with_its_own_stderr() {
    let sh = local();
    let pipeline = testbin().args(["exit", "2", "first failed"])
        | sh.cmd("cat")
        | testbin().args(["exit", "5", "last failed"]);
    let error = pipeline.read().await.unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.stage().map(|(i, n, _)| (i, n)), Some((0, 3)));
    assert_eq!(exit.stderr(), b"first failed\n");
    assert_eq!(
        error.to_string(),
        format!(
            "stage 1 of 3 failed with exit code 2 on local:\n  $ {TESTBIN} exit 2 'first failed' | cat | {TESTBIN} exit 5 'last failed'\n  stage 1: {TESTBIN} exit 2 'first failed'\n  stderr: first failed"
        )
    );
    // status() follows bash's pipefail: the last stage that failed.
    assert_eq!(pipeline.status().await.unwrap(), ExitStatus::Code(5));
    let output = pipeline.clone().unchecked().output().await.unwrap();
    assert_eq!(
        output.statuses,
        [
            ExitStatus::Code(2),
            ExitStatus::Code(0),
            ExitStatus::Code(5)
        ]
    );
    assert_eq!(output.stderr, b"first failed\nlast failed\n");
    // A failing middle stage fails the whole, even when the last stage succeeds.
    let middle = sh.cmd("echo") | testbin().args(["exit", "1", "middle"]) | sh.cmd("cat");
    assert!(!middle.success().await.unwrap());
    assert!(middle.clone().unchecked().success().await.unwrap());
}

#[tokio::test]
async fn an_upstream_stage_killed_by_sigpipe_is_not_a_failure() {
    let sh = local();
    let pipeline = sh.cmd("yes") | sh.cmd("head").arg("-1");
    assert_eq!(pipeline.read().await.unwrap(), "y");
    let output = pipeline.output().await.unwrap();
    assert_eq!(output.statuses[0], ExitStatus::Signal(Signal::PIPE));
    assert!(output.status.success());
    // ... but the last stage dying of SIGPIPE, or an upstream stage of another signal, is.
    let last_piped = sh.cmd("true") | testbin().args(["signal", "13"]);
    assert_eq!(
        last_piped.status().await.unwrap(),
        ExitStatus::Signal(Signal::PIPE)
    );
    assert!(
        !(testbin().args(["signal", "15"]) | sh.cmd("cat"))
            .success()
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn every_stage_stderr_is_drained_while_stdout_flows() {
    const TEN_MB: usize = 10 * 1024 * 1024;
    let first = testbin().args(["write", "0", &TEN_MB.to_string()]);
    let last = testbin().args(["write", &TEN_MB.to_string(), "0"]);
    let output = tokio::time::timeout(Duration::from_secs(60), (first | last).output())
        .await
        .expect("no deadlock")
        .unwrap();
    assert!(output.stdout == stdout_pattern(TEN_MB), "stdout differs");
    assert!(output.stderr == stderr_pattern(TEN_MB), "stderr differs");
    // And both streams of one process at once.
    let both = testbin()
        .args(["write", &TEN_MB.to_string(), &TEN_MB.to_string()])
        .output()
        .await
        .unwrap();
    assert!(both.stdout == stdout_pattern(TEN_MB) && both.stderr == stderr_pattern(TEN_MB));
}

#[tokio::test]
async fn here_strings_feed_exact_bytes_in_every_form() {
    let cat = testbin().arg("cat");
    assert_eq!((cat.clone() << "text").read_bytes().await.unwrap(), b"text");
    assert_eq!(
        (cat.clone() << String::from("s"))
            .read_bytes()
            .await
            .unwrap(),
        b"s"
    );
    assert_eq!(
        (cat.clone() << vec![0u8, 255]).read_bytes().await.unwrap(),
        [0, 255]
    );
    assert_eq!(
        (cat.clone() << &b"\x01\x02"[..])
            .read_bytes()
            .await
            .unwrap(),
        [1, 2]
    );
    assert_eq!(
        (cat.clone() | local().cmd("cat"))
            .stdin(Input::bytes("p"))
            .read()
            .await
            .unwrap(),
        "p"
    );
    let big = stdout_pattern(5 * 1024 * 1024);
    assert!((cat << big.clone()).read_bytes().await.unwrap() == big);
}

#[tokio::test]
async fn a_here_string_to_a_command_that_never_reads_it_is_fine() {
    let big = vec![b'x'; 8 * 1024 * 1024];
    let cmd = local().cmd("true") << big;
    tokio::time::timeout(Duration::from_secs(30), cmd.run())
        .await
        .expect("no hang")
        .unwrap();
    let head = (local().cmd("head").args(["-c", "1"]) << vec![b'y'; 1 << 20])
        .read()
        .await
        .unwrap();
    assert_eq!(head, "y");
}

#[tokio::test]
async fn stdout_and_stderr_redirects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.txt");
    let sh = local();
    sh.cmd("echo")
        .arg("one")
        .stdout(Redirect::File(file.clone()))
        .run()
        .await
        .unwrap();
    sh.cmd("echo")
        .arg("two")
        .stdout(Redirect::File(file.clone()))
        .run()
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "two\n",
        "File truncates"
    );
    (sh.cmd("echo").arg("three") >> &file).run().await.unwrap();
    sh.cmd("echo")
        .arg("four")
        .stdout(Redirect::Append(file.clone()))
        .run()
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "two\nthree\nfour\n"
    );

    let err = dir.path().join("err.txt");
    let noisy = testbin().args(["exit", "0", "to stderr"]);
    noisy
        .clone()
        .stderr(Redirect::File(err.clone()))
        .run()
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&err).unwrap(), "to stderr\n");
    let output = noisy.clone().stderr(Redirect::Null).output().await.unwrap();
    assert!(output.stderr.is_empty());

    // 2>&1 follows stdout wherever it finally goes, whatever the order of the calls.
    let both = dir.path().join("both.txt");
    let mixed = sh.cmd("sh").args(["-c", "echo out; echo err >&2"]);
    mixed
        .clone()
        .stderr_to_stdout()
        .stdout(Redirect::File(both.clone()))
        .run()
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&both).unwrap(), "out\nerr\n");
    assert_eq!(
        mixed.clone().stderr_to_stdout().read().await.unwrap(),
        "out\nerr"
    );
    // The last setting of a stream wins.
    let last = mixed
        .clone()
        .stderr_to_stdout()
        .stderr(Redirect::Null)
        .read()
        .await
        .unwrap();
    assert_eq!(last, "out");
    let last = sh
        .cmd("echo")
        .arg("x")
        .stdout(Redirect::Null)
        .stdout(Redirect::Pipe)
        .read()
        .await
        .unwrap();
    assert_eq!(last, "x");
}

#[tokio::test]
async fn stdin_from_file_null_and_relative_paths_follow_cwd() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from file").unwrap();
    let here = local().with_cwd(dir.path());
    let cat = here.cmd("cat");
    assert_eq!(
        cat.clone()
            .stdin(Input::File("in.txt".into()))
            .read()
            .await
            .unwrap(),
        "from file"
    );
    assert_eq!(cat.clone().stdin(Input::Null).read().await.unwrap(), "");
    here.cmd("echo")
        .arg("rel")
        .stdout(Redirect::File("rel.txt".into()))
        .run()
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rel.txt")).unwrap(),
        "rel\n"
    );
    let error = cat
        .stdin(Input::File("missing.txt".into()))
        .read()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot open {}/missing.txt for stdin of `cat",
            dir.path().display()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn redirects_on_a_stage_override_the_pipe_as_in_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.txt");
    let sh = local();
    // `echo a > file | cat`: cat reads nothing.
    let out = (sh.cmd("echo").arg("a").stdout(Redirect::File(file.clone())) | sh.cmd("cat"))
        .read()
        .await
        .unwrap();
    assert_eq!(out, "");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "a\n");
    // Pipeline-level settings: stdin to the first stage, stdout to the last, 2>&1 for all.
    let pipeline = sh.cmd("sh").args(["-c", "cat; echo e1 >&2"])
        | sh.cmd("sh").args(["-c", "cat; echo e2 >&2"]);
    let out = pipeline
        .clone()
        .stdin(Input::bytes("in\n"))
        .stderr_to_stdout()
        .read()
        .await
        .unwrap();
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["e1", "e2", "in"]);
    let out = pipeline
        .stdout(Redirect::Append(file.clone()))
        .stderr(Redirect::Null)
        .output()
        .await
        .unwrap();
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "a\n");
}

#[tokio::test]
async fn lines_come_tagged_as_they_arrive_and_the_status_is_checked_at_the_end() {
    let sh = local();
    let script = "echo out1; sleep 0.05; echo err1 >&2; sleep 0.05; echo out2";
    let lines: Vec<Line> = sh
        .cmd("sh")
        .args(["-c", script])
        .lines()
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert_eq!(
        lines,
        [
            Line::Stdout("out1".into()),
            Line::Stderr("err1".into()),
            Line::Stdout("out2".into())
        ]
    );
    let mut failing = sh
        .cmd("sh")
        .args(["-c", "echo partial; echo why >&2; exit 7"])
        .lines();
    let mut seen = Vec::new();
    let error = loop {
        match failing
            .next()
            .await
            .expect("the stream ends with the error")
        {
            Ok(line) => seen.push(line),
            Err(error) => break error,
        }
    };
    assert_eq!(seen.len(), 2);
    let Error::Exit(exit) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.status(), ExitStatus::Code(7));
    assert_eq!(exit.stderr(), b"why\n");
    assert!(failing.next().await.is_none());
    let bad: Vec<_> = sh.cmd("printf").arg("\\377\\n").lines().collect().await;
    assert!(
        matches!(bad[..], [Err(Error::InvalidUtf8 { .. })]),
        "{bad:?}"
    );
    let crlf: Vec<_> = sh
        .cmd("printf")
        .arg("a\\r\\nb")
        .lines()
        .map(|l| l.unwrap())
        .collect()
        .await;
    assert_eq!(crlf, [Line::Stdout("a".into()), Line::Stdout("b".into())]);
}

#[tokio::test]
async fn spawn_gives_streams_and_checks_at_wait() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut child = testbin().arg("cat").spawn().await.unwrap();
    assert!(child.id().is_some());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"through the child").await.unwrap();
    drop(stdin);
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out)
        .await
        .unwrap();
    assert_eq!(out, b"through the child");
    assert_eq!(child.wait().await.unwrap(), ExitStatus::Code(0));
    assert_eq!(
        child.wait().await.unwrap(),
        ExitStatus::Code(0),
        "wait again: same answer"
    );

    let child = testbin()
        .args(["exit", "9", "spawned stderr"])
        .spawn()
        .await
        .unwrap();
    let error = child.wait_with_output().await.unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.stderr(), b"spawned stderr\n");
    let output = testbin()
        .args(["write", "100", "50"])
        .spawn()
        .await
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    assert_eq!(
        (output.stdout, output.stderr),
        (stdout_pattern(100), stderr_pattern(50))
    );

    let mut child = testbin()
        .args(["exit", "0", "mine"])
        .stderr(Redirect::Pipe)
        .spawn()
        .await
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(err, "mine\n");
    child.wait().await.unwrap();
}

#[tokio::test]
async fn spawn_signal_kill_and_timeout() {
    let mut child = testbin().args(["sleep", "30"]).spawn().await.unwrap();
    child.signal(Signal::TERM).unwrap();
    let error = child.wait().await.unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.status(), ExitStatus::Signal(Signal::TERM));
    child.signal(Signal::TERM).unwrap(); // after the end: nothing to do, no error

    let mut child = testbin().args(["sleep", "30"]).spawn().await.unwrap();
    let pid = child.id().unwrap();
    child.kill().await.unwrap();
    assert!(support::process_state(pid).is_none(), "killed and reaped");
    let error = child.wait().await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("command was killed by SIGKILL on local"),
        "{error}"
    );

    let mut child = testbin()
        .args(["sleep", "30"])
        .timeout(Duration::from_millis(100))
        .spawn()
        .await
        .unwrap();
    assert!(matches!(child.wait().await, Err(Error::Timeout { .. })));
}

#[tokio::test]
async fn an_unchecked_failing_stage_gives_the_pipeline_its_status() {
    let sh = local();
    // bash: `set -o pipefail; (exit 3) | cat; echo $?` prints 3.
    let pipeline = testbin().args(["exit", "3", "upstream"]).unchecked() | sh.cmd("cat");
    let output = pipeline.output().await.unwrap();
    assert_eq!(output.statuses, [ExitStatus::Code(3), ExitStatus::Code(0)]);
    assert_eq!(output.status, ExitStatus::Code(3));
    assert_eq!(pipeline.status().await.unwrap(), ExitStatus::Code(3));
    // ... while the call still does not fail.
    pipeline.run().await.unwrap();
    assert!(pipeline.success().await.unwrap());
    let mut child = pipeline.spawn().await.unwrap();
    assert_eq!(child.wait().await.unwrap(), ExitStatus::Code(3));
    let lines: Vec<_> = pipeline.lines().collect().await;
    assert!(lines.iter().all(Result::is_ok), "{lines:?}");

    // The last stage that did not exit with 0, accepted by ok_codes or not.
    let several = testbin().args(["exit", "2", ""]).unchecked()
        | testbin().args(["exit", "4", ""]).ok_codes([0, 4])
        | sh.cmd("cat");
    let output = several.output().await.unwrap();
    assert_eq!(output.status, ExitStatus::Code(4));
    // A stage killed by SIGPIPE because the next one stopped reading still did not fail.
    let yes = sh.cmd("yes").unchecked() | sh.cmd("head").arg("-1");
    assert!(yes.status().await.unwrap().success());
}
