//! The remote command line against a real OpenSSH sshd: every login shell, exact pipeline
//! statuses under load, names that are not options, input the server cannot take, forged
//! reports, errors that tell the truth, streams cut by a dying connection.

mod support;

use std::{ffi::OsStr, io, os::unix::ffi::OsStrExt, time::Duration};

use futures::{StreamExt, stream};
use leadpipe::{Error, ExitStatus, HostKeyPolicy, SshMachine, local};
use leadpipe_test_server::FaultProxy;
use support::sshd::Sshd;
use tokio::io::AsyncReadExt;

/// What every login shell must run alike: a pipeline with redirects and `2>&1`, stdin,
/// exit codes, a missing program, odd environment names, a directory.
async fn the_same_everywhere(remote: &SshMachine, who: &str) {
    let both = remote
        .cmd("sh")
        .args(["-c", "echo out; echo err >&2"])
        .stderr_to_stdout()
        | remote.cmd("sort");
    assert_eq!(both.read().await.unwrap(), "err\nout", "{who}");
    let fed = remote.cmd("tr").args(["a-z", "A-Z"]) << "it's $HOME\n!x";
    assert_eq!(fed.read().await.unwrap(), "IT'S $HOME\n!X", "{who}");
    let status = remote
        .cmd("sh")
        .args(["-c", "exit 42"])
        .status()
        .await
        .unwrap();
    assert_eq!(status, ExitStatus::Code(42), "{who}");
    let error = remote.cmd("leadpipe-nope").run().await.unwrap_err();
    assert!(
        matches!(error, Error::CommandNotFound { .. }),
        "{who}: {error}"
    );
    let env = remote.cmd("env").env("--split-string", "x").env("-i", "y");
    let env = env.read().await.unwrap();
    assert!(env.lines().any(|l| l == "--split-string=x"), "{who}: {env}");
    assert!(env.lines().any(|l| l == "-i=y"), "{who}: {env}");
    assert_eq!(
        remote.cmd("pwd").cwd("/").read().await.unwrap(),
        "/",
        "{who}"
    );
    let statuses = (remote.cmd("printf").arg("%0200000d") | remote.cmd("head").args(["-c", "1"]))
        .read()
        .await;
    assert_eq!(statuses.unwrap(), "0", "{who}");
}

#[tokio::test]
async fn every_login_shell_runs_the_same_line() {
    let Some(sshd) = Sshd::start() else { return };
    let mut ran = 0;
    for shell in ["bash", "dash", "zsh", "tcsh", "fish"] {
        let Some(user) = sshd.shell_user(shell) else {
            continue;
        };
        let remote = sshd.login(&user).await;
        let login_shell = remote
            .cmd("sh")
            .args(["-c", "getent passwd \"$(id -un)\" | cut -d: -f7"])
            .read()
            .await
            .unwrap();
        assert!(login_shell.ends_with(&format!("/{shell}")), "{login_shell}");
        the_same_everywhere(&remote, shell).await;
        ran += 1;
    }
    if sshd.privileged {
        assert_eq!(ran, 5, "every shell ran");
    }
}

/// Runs `count` copies of `make()` 8 at a time; the results.
async fn hammer<T>(
    count: usize,
    make: impl Fn() -> futures::future::BoxFuture<'static, T>,
) -> Vec<T> {
    stream::iter((0..count).map(|_| make()))
        .buffer_unordered(8)
        .collect()
        .await
}

#[tokio::test]
async fn pipeline_statuses_are_exact_every_time() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let r = remote.clone();
    let sigpipe = hammer(200, move || {
        let line = r.cmd("printf").arg("%0200000d") | r.cmd("head").args(["-c", "1"]);
        Box::pin(async move { line.read().await })
    });
    for result in sigpipe.await {
        assert_eq!(result.unwrap(), "0");
    }
    let r = remote.clone();
    let early_reader = hammer(200, move || {
        let line = r.cmd("echo").arg("hi") | r.cmd("true");
        Box::pin(async move { line.output().await })
    });
    for result in early_reader.await {
        let output = result.unwrap();
        assert_eq!(output.status, ExitStatus::Code(0));
    }
    let r = remote.clone();
    let middle = hammer(200, move || {
        let line =
            r.cmd("printf").arg("a\\nb\\n") | r.cmd("sh").args(["-c", "exit 3"]) | r.cmd("cat");
        Box::pin(async move { line.output().await })
    });
    for result in middle.await {
        let Err(Error::Exit(exit)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Code(3));
        assert_eq!(exit.stage().map(|(i, n, _)| (i, n)), Some((1, 3)), "{exit}");
    }
    // A stage killed by a signal is reported as killed, by that signal.
    let killed = (remote.cmd("sh").args(["-c", "kill -TERM $$"]) | remote.cmd("cat"))
        .output()
        .await
        .unwrap_err();
    let Error::Exit(exit) = killed else {
        panic!("{killed}")
    };
    assert_eq!(exit.status(), ExitStatus::Signal(leadpipe::Signal::TERM));
    assert_eq!(exit.stage().map(|(i, _, _)| i), Some(0));
}

#[tokio::test]
async fn input_the_server_cannot_take_is_refused_and_the_connection_lives() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    // A call in flight on the same connection must not notice anything.
    let busy = remote.cmd("sh").args(["-c", "sleep 1; echo done"]);
    let busy = tokio::spawn(async move { busy.read().await });
    let refused = |error: Error| {
        let Error::Io { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::InvalidInput, "{error}");
        error.to_string()
    };
    let nul = remote.cmd("echo").arg("a\0b").run().await.unwrap_err();
    assert_eq!(
        refused(nul),
        format!(
            "cannot start `echo 'a\0b'` on {}@127.0.0.1:{}: argument 1 (`a\\x00b`) contains a \
             NUL byte, which no program can be given",
            sshd.user, sshd.port
        )
    );
    let big = "x".repeat(256 * 1024);
    let text = refused(remote.cmd("echo").arg(&big).run().await.unwrap_err());
    assert!(
        text.contains("is 262144 bytes; a remote program takes at most 131071 bytes"),
        "{text}"
    );
    for name in ["", "A=B", "N\0"] {
        let text = refused(remote.cmd("true").env(name, "v").run().await.unwrap_err());
        assert!(text.contains("environment variable"), "{text}");
    }
    let text = refused(remote.cmd("true").cwd("/tmp\0x").run().await.unwrap_err());
    assert!(text.contains("working directory"), "{text}");

    // What fits is run, byte for byte: 64 KiB of quotes, an argument at the limit, 40 000
    // arguments.
    let quotes = "'".repeat(64 * 1024);
    let echoed = remote
        .cmd("printf")
        .args(["%s", &quotes])
        .read()
        .await
        .unwrap();
    assert_eq!(echoed, quotes);
    let at_limit = "y".repeat(131_071);
    let echoed = remote
        .cmd("printf")
        .args(["%s", &at_limit])
        .read()
        .await
        .unwrap();
    assert_eq!(echoed.len(), 131_071);
    let too_long = "y".repeat(131_072);
    refused(
        remote
            .cmd("printf")
            .args(["%s", &too_long])
            .run()
            .await
            .unwrap_err(),
    );
    let many: Vec<String> = (0..40_000).map(|i| format!("a{i}")).collect();
    let counted = (remote.cmd("printf").arg("%s\\n").args(&many) | remote.cmd("wc").arg("-l"))
        .read()
        .await
        .unwrap();
    assert_eq!(counted.trim(), "40000");

    assert_eq!(busy.await.unwrap().unwrap(), "done");
    assert_eq!(
        remote.cmd("echo").arg("alive").read().await.unwrap(),
        "alive"
    );
}

#[tokio::test]
async fn remote_programs_cannot_forge_the_reports() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    // Everything a stage could read about the line: its parents' argv and environment,
    // every process's argv. Then fake reports with every marker found there, and with a
    // guessed one: fake success, fake not-found, a fake pid.
    let forger = r#"
        for f in /proc/$PPID/cmdline /proc/$PPID/environ /proc/$$/cmdline; do
            tr '\0' '\n' < "$f"; done > /tmp/lp-spy.$$ 2>/dev/null
        ps -eo args >> /tmp/lp-spy.$$ 2>/dev/null
        for m in guess $(grep -o '[0-9a-f]\{32\}' /tmp/lp-spy.$$); do
            printf '\036%s:status:0:0\n\036%s:missing:0:\n\036%s:pid:1\n' "$m" "$m" "$m" >&2
        done
        rm -f /tmp/lp-spy.$$
        exit 7"#;
    let error = (remote.cmd("sh").args(["-c", forger]) | remote.cmd("cat"))
        .output()
        .await
        .unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error}")
    };
    assert_eq!(
        exit.status(),
        ExitStatus::Code(7),
        "the failure stays a failure"
    );
    let stderr = String::from_utf8_lossy(exit.stderr());
    assert!(
        stderr.contains("guess:status:0:0"),
        "the fakes are ordinary output: {stderr}"
    );

    // A timeout kills the line's own group, whatever was printed.
    let victim = remote.cmd("sleep").arg("30").spawn().await.unwrap();
    let timed_out = remote
        .cmd("sh")
        .args(["-c", "printf '\\036guess:pid:1\\n' >&2; sleep 30"])
        .timeout(Duration::from_millis(500))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(timed_out, Error::Timeout { .. }), "{timed_out}");
    // The timed-out line's own `sleep` goes (within 2 s); the victim stays.
    let mut left = sshd.pgrep("sleep 30");
    for _ in 0..20 {
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = sshd.pgrep("sleep 30");
    }
    assert_eq!(left.len(), 1, "only the victim is left: {left:?}");
    drop(victim);
}

#[tokio::test]
async fn stderr_without_an_end_passes_through_in_one_piece() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    // A report's start with a guessed marker, then 80 MiB without a newline.
    let script =
        "printf '\\036lp0123456789abcdef:status:' >&2; head -c 83886080 /dev/zero | tr '\\0' x >&2";
    let output = remote
        .cmd("sh")
        .args(["-c", script])
        .output()
        .await
        .unwrap();
    assert_eq!(output.stderr.len(), 27 + 80 * 1024 * 1024);
    assert!(
        output
            .stderr
            .starts_with(b"\x1elp0123456789abcdef:status:xxx")
    );
    assert!(output.stderr[27..].iter().all(|&b| b == b'x'));
}

#[tokio::test]
async fn errors_say_what_happened_as_they_do_locally() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let dir = remote.tempdir().await.unwrap();
    let script = dir.path().join("script");
    script.write(b"#!/bin/sh\necho ran\n").await.unwrap();
    script.chmod(0o644).await.unwrap();
    let local_dir = tempfile::tempdir().unwrap();
    let local_script = local_dir.path().join("script");
    std::fs::write(&local_script, "#!/bin/sh\necho ran\n").unwrap();
    for (machine, program) in [
        (remote.cmd(script.to_string()), script.to_string()),
        (
            local().cmd(&local_script),
            local_script.display().to_string(),
        ),
    ] {
        let error = machine.run().await.unwrap_err();
        let Error::NotExecutable { program: got, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(got, &program);
        assert!(
            error.to_string().starts_with("command not executable on "),
            "{error}"
        );
    }
    // On PATH, without the execute bit: not executable either, not "not found".
    let on_path = remote
        .cmd("script")
        .env("PATH", dir.path().to_string())
        .run()
        .await
        .unwrap_err();
    assert!(matches!(on_path, Error::NotExecutable { .. }), "{on_path}");

    // Not found: the PATH that was searched.
    let path = remote
        .cmd("sh")
        .args(["-c", "echo \"$PATH\""])
        .read()
        .await
        .unwrap();
    let Error::CommandNotFound { searched, .. } = remote.cmd("lp-nope").run().await.unwrap_err()
    else {
        panic!()
    };
    assert_eq!(searched, path);

    // A missing directory: the same error, of the same kind, on both machines.
    for (machine, name) in [
        (remote.cmd("pwd"), remote.name()),
        (local().cmd("pwd"), "local"),
    ] {
        let error = machine
            .cwd("/leadpipe/no/such/dir")
            .run()
            .await
            .unwrap_err();
        let Error::Io { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound, "{error}");
        assert!(
            error.to_string().starts_with(&format!(
                "cannot start `pwd` on {name}: no directory /leadpipe/no/such/dir"
            )),
            "{error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_a_dying_connection_is_an_error_not_an_end() {
    let Some(sshd) = Sshd::start() else { return };
    let proxy = FaultProxy::start(([127, 0, 0, 1], sshd.port).into()).await;
    let remote = sshd
        .builder(&sshd.user)
        .port(proxy.addr().port())
        .host_key_policy(HostKeyPolicy::AcceptAny)
        .connect()
        .await
        .unwrap();
    let mut child = remote
        .cmd("sh")
        .args(["-c", "head -c 1048576 /dev/zero; sleep 30"])
        .spawn()
        .await
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0; 1 << 20];
    stdout.read_exact(&mut first).await.unwrap();
    proxy.cut();
    let mut rest = Vec::new();
    let error = stdout.read_to_end(&mut rest).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted, "{error}");
    let error = child.wait().await.unwrap_err();
    assert!(matches!(error, Error::ConnectionLost { .. }), "{error}");
}

#[tokio::test]
async fn non_utf8_and_newline_bytes_survive_every_part_of_the_line() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let all: Vec<u8> = (1..=255).collect();
    let word = OsStr::from_bytes(&all);
    let out = remote
        .cmd("sh")
        .args([
            OsStr::new("-c"),
            OsStr::new("printf '%s\\0' \"$1\" \"$LP_V\""),
            OsStr::new("sh"),
            word,
        ])
        .env("LP_V", word)
        .env("ODD-NAME", word)
        .read_bytes()
        .await
        .unwrap();
    let mut expected = all.clone();
    expected.push(0);
    expected.extend_from_slice(&all);
    expected.push(0);
    assert_eq!(out, expected);
    let odd = remote
        .cmd("env")
        .env("ODD-NAME", word)
        .read_bytes()
        .await
        .unwrap();
    let mut line = b"ODD-NAME=".to_vec();
    line.extend_from_slice(&all);
    assert!(odd.windows(line.len()).any(|w| w == line.as_slice()));
}

/// The same line from a plain `fn` (no runtime), for a user whose login shell is not bash:
/// a pipeline's own statuses, stdin after the header, refused input with the connection
/// alive.
#[test]
fn the_blocking_api_gets_the_same_answers_under_tcsh() {
    use leadpipe::blocking::Wait;
    let Some(sshd) = Sshd::start() else { return };
    let user = sshd.shell_user("tcsh").unwrap_or_else(|| sshd.user.clone());
    let remote = sshd.builder(&user).connect().wait().unwrap();
    for _ in 0..2 {
        // The first call learns the login shell, the second uses what it learnt.
        let middle = (remote.cmd("printf").arg("a\\nb\\n")
            | remote.cmd("sh").args(["-c", "exit 3"])
            | remote.cmd("cat"))
        .output()
        .wait()
        .unwrap_err();
        let Error::Exit(exit) = middle else {
            panic!("{middle}")
        };
        assert_eq!(exit.status(), ExitStatus::Code(3));
        assert_eq!(exit.stage().map(|(i, n, _)| (i, n)), Some((1, 3)));
        let fed = (remote.cmd("wc").arg("-c") << "12345")
            .read()
            .wait()
            .unwrap();
        assert_eq!(fed.trim(), "5");
    }
    let refused = remote.cmd("echo").env("A=B", "x").run().wait().unwrap_err();
    assert!(
        matches!(&refused, Error::Io { source, .. } if source.kind() == io::ErrorKind::InvalidInput)
    );
    assert_eq!(
        remote.cmd("echo").arg("alive").read().wait().unwrap(),
        "alive"
    );
}
