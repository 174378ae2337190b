//! Running commands and pipelines on an `SshMachine` against a real OpenSSH sshd
//! (tests/support/sshd.rs): quoting, env and cwd, redirects, here-strings, statuses,
//! pipefail, large output, spawn, lines, errors. Every test skips where sshd is missing
//! (and fails where `CI=true`). Where the login matters, the same body runs as the normal
//! user and, when the harness is privileged, as root.

mod support;

use std::{
    ffi::OsStr,
    fs,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt;
use leadpipe::{Error, ExitStatus, Input, Line, Redirect, Signal, SshMachine};
use leadpipe_test_server::FaultProxy;
use support::{TESTBIN, sshd::Sshd, stderr_pattern, stdout_pattern};

/// How errors name the machine.
fn name(sshd: &Sshd, user: &str) -> String {
    format!("{user}@127.0.0.1:{}", sshd.port)
}

/// A fresh directory in the server's dir that every user may write (mode 0777).
fn shared_dir(sshd: &Sshd, name: &str) -> PathBuf {
    let dir = sshd.dir.path().join(name);
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// leadpipe-testbin, copied where every remote user can run it (the build dir may be in a
/// home the test user cannot enter).
fn remote_testbin(sshd: &Sshd) -> PathBuf {
    let path = sshd.dir.path().join("leadpipe-testbin");
    if !path.exists() {
        fs::copy(TESTBIN, &path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

fn argv(bytes: &[u8]) -> Vec<&[u8]> {
    let mut args: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    assert_eq!(args.pop(), Some(&b""[..]), "output ends with a NUL");
    args
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Arguments a remote shell would mangle if they were quoted wrongly (or twice, or not at
/// all). Each `touch` would create a file in `dir` if it were run.
fn hostile(dir: &Path) -> Vec<Vec<u8>> {
    let d = dir.display();
    vec![
        b"".to_vec(),
        b"two words".to_vec(),
        b"  leading and trailing  ".to_vec(),
        format!("$(touch {d}/dollar)").into_bytes(),
        format!("`touch {d}/backtick`").into_bytes(),
        format!("; touch {d}/semicolon").into_bytes(),
        format!("a && touch {d}/and || b | c").into_bytes(),
        b"*".to_vec(),
        b"~".to_vec(),
        b"#not a comment".to_vec(),
        b"$HOME ${HOME} $0 $$ $@".to_vec(),
        b"'single' \"double\" \\back\\slash".to_vec(),
        b"it's".to_vec(),
        b"'".to_vec(),
        b"\"".to_vec(),
        b"\\".to_vec(),
        b"line\nbreak\n".to_vec(),
        b"tab\there\rcr".to_vec(),
        b"-n".to_vec(),
        b"--".to_vec(),
        b"-e \\x41".to_vec(),
        b"%s %d %%".to_vec(),
        b"a=b".to_vec(),
        b"\x01\x1b[31m\x7f".to_vec(),
        b"\xff\xfe not utf-8 \x80".to_vec(),
        "ünïcödé ✓ 日本".as_bytes().to_vec(),
        b"{a,b} [ab] ?".to_vec(),
        b"<in >out 2>&1".to_vec(),
        b"!".to_vec(),
    ]
}

fn assert_nothing_injected(dir: &Path) {
    let made: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "cwd")
        .collect();
    assert!(
        made.is_empty(),
        "the remote shell ran an argument: {made:?}"
    );
}

#[tokio::test]
async fn arguments_reach_remote_programs_byte_for_byte_and_nothing_is_injected() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let dir = shared_dir(&sshd, &format!("inject-{user}"));
        let args = hostile(&dir);
        let expected: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let printf = remote
            .cmd("printf")
            .arg("%s\\0")
            .args(args.iter().map(|a| os(a)));

        // One command (the remote shell execs printf).
        let out = printf.read_bytes().await.unwrap();
        assert_eq!(argv(&out), expected, "as {user}");

        // A stage of a remote pipeline (the shell's own printf, then cat).
        let out = (printf.clone() | remote.cmd("cat"))
            .read_bytes()
            .await
            .unwrap();
        assert_eq!(argv(&out), expected, "as {user}, in a pipeline");

        // The same with a cwd and env from machine views and per command.
        let view = remote.with_cwd(&dir).with_env("LEADPIPE_VIEW", "x");
        let out = (view
            .cmd("printf")
            .arg("%s\\0")
            .args(args.iter().map(|a| os(a)))
            .env("LEADPIPE_CMD", "y")
            | view.cmd("cat"))
        .read_bytes()
        .await
        .unwrap();
        assert_eq!(argv(&out), expected, "as {user}, in views");
        assert_nothing_injected(&dir);
    }
}

#[tokio::test]
async fn env_values_and_cwd_paths_arrive_byte_for_byte() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let dir = shared_dir(&sshd, &format!("env-{user}"));
        for value in hostile(&dir) {
            if value.is_empty() {
                continue;
            }
            let mut expected = value.clone();
            expected.push(b'\n');
            // A machine view's env, a command's env, and both in a pipeline stage.
            let printenv = remote
                .with_env("LEADPIPE_VALUE", os(&value))
                .cmd("printenv")
                .arg("LEADPIPE_VALUE");
            assert_eq!(printenv.read_bytes().await.unwrap(), expected, "as {user}");
            let printenv = remote
                .cmd("printenv")
                .arg("LEADPIPE_VALUE")
                .env("LEADPIPE_VALUE", os(&value));
            assert_eq!(printenv.read_bytes().await.unwrap(), expected, "as {user}");
            let out = (printenv | remote.cmd("cat")).read_bytes().await.unwrap();
            assert_eq!(out, expected, "as {user}, in a pipeline");
        }
        assert_nothing_injected(&dir);

        // Directories whose names need quoting, as a view's cwd and a command's cwd; a
        // relative path is relative to the view's.
        let names: [&[u8]; 5] = [
            b"with space",
            b"$(touch injected)",
            b"it's \"quoted\"",
            b"new\nline",
            b"\xff\xfe-not-utf-8",
        ];
        for dir_name in names {
            let weird = dir.join(os(dir_name));
            fs::create_dir(&weird).unwrap();
            fs::set_permissions(&weird, fs::Permissions::from_mode(0o777)).unwrap();
            let mut expected = weird.as_os_str().as_bytes().to_vec();
            expected.push(b'\n');
            let pwd = remote.with_cwd(&weird).cmd("pwd").arg("-P");
            assert_eq!(pwd.read_bytes().await.unwrap(), expected, "as {user}");
            let pwd = remote.with_cwd(&dir).cmd("pwd").arg("-P").cwd(os(dir_name));
            assert_eq!(pwd.read_bytes().await.unwrap(), expected, "as {user}");
            // Stages in different directories.
            let both = (remote.cmd("pwd").arg("-P").cwd(&weird)
                | remote.cmd("sh").args(["-c", "cat; pwd -P"]).cwd(&dir))
            .read_bytes()
            .await
            .unwrap();
            let mut two = expected.clone();
            two.extend_from_slice(dir.as_os_str().as_bytes());
            two.push(b'\n');
            assert_eq!(both, two, "as {user}");
        }
        assert!(!dir.join("injected").exists());
        assert!(!dir.join(os(b"$(touch injected)")).join("injected").exists());

        // env_remove and env_clear reach the remote side too.
        let view = remote.with_env("LEADPIPE_GONE", "here");
        let unset = view
            .cmd("sh")
            .args(["-c", "echo ${LEADPIPE_GONE-unset}"])
            .env_remove("LEADPIPE_GONE");
        assert_eq!(unset.read().await.unwrap(), "unset");
        let cleared = remote.cmd("/usr/bin/env").env_clear().env("ONLY", "this");
        assert_eq!(cleared.read().await.unwrap(), "ONLY=this");
    }
}

#[tokio::test]
async fn command_display_is_the_same_for_remote_commands() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let args = [
        "", "a b", "it's", "$HOME", "`x`", "*", "-", "a=b", "~", "#", "x\ny",
    ];
    let local = leadpipe::local().cmd("printf").arg("%s\\0").args(args);
    let there = remote.cmd("printf").arg("%s\\0").args(args);
    assert_eq!(there.to_string(), local.to_string());
    assert_eq!(
        there.to_string(),
        r#"printf '%s\0' '' 'a b' 'it'\''s' '$HOME' '`x`' '*' - a=b '~' '#' 'x
y'"#
    );
    let pipeline = (remote.cmd("sort").stdin(Input::File("in put".into()))
        | remote.cmd("uniq").stdout(Redirect::Append("out".into())))
    .to_string();
    assert_eq!(pipeline, "sort < 'in put' | uniq >> out");
    // And the line a shell reads back is what the remote side runs: the same bytes.
    let out = remote
        .cmd("sh")
        .arg("-c")
        .arg(there.to_string())
        .read_bytes()
        .await
        .unwrap();
    let expected: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    assert_eq!(argv(&out), expected);
}

#[tokio::test]
async fn the_process_own_cwd_and_environment_are_untouched() {
    let Some(sshd) = Sshd::start() else { return };
    let cwd = std::env::current_dir().unwrap();
    let vars: Vec<_> = std::env::vars_os().collect();
    let remote = sshd.login(&sshd.user).await;
    let view = remote.with_cwd("/tmp").with_env("LEADPIPE_SCOPED", "1");
    assert_eq!(view.get_cwd(), Some(Path::new("/tmp")));
    assert_eq!(remote.get_cwd(), None, "the original is not a view");
    let out = view
        .cmd("sh")
        .args(["-c", "pwd; echo $LEADPIPE_SCOPED"])
        .env("LEADPIPE_CMD", "2")
        .cwd("/")
        .read()
        .await
        .unwrap();
    assert_eq!(out, "/\n1");
    assert_eq!(std::env::current_dir().unwrap(), cwd);
    assert_eq!(std::env::vars_os().collect::<Vec<_>>(), vars);
    // The original machine's commands start in the login's home, without the view's env.
    let home = remote
        .cmd("sh")
        .args(["-c", "pwd; echo ${LEADPIPE_SCOPED-unset}"])
        .read()
        .await
        .unwrap();
    let expected_home = if sshd.user == "root" {
        "/root".to_owned()
    } else {
        format!("/home/{}", sshd.user)
    };
    if sshd.privileged {
        assert_eq!(home, format!("{expected_home}\nunset"));
    } else {
        assert!(home.ends_with("\nunset"), "{home}");
    }
}

#[tokio::test]
async fn redirects_write_remote_files() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let dir = shared_dir(&sshd, &format!("redirect-{user}"));
        let file = dir.join("out put.txt");
        let echo = |word: &str| remote.cmd("echo").arg(word);
        echo("one")
            .stdout(Redirect::File(file.clone()))
            .run()
            .await
            .unwrap();
        echo("two")
            .stdout(Redirect::File(file.clone()))
            .run()
            .await
            .unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "two\n",
            "File truncates"
        );
        (echo("three") >> &file).run().await.unwrap();
        echo("four")
            .stdout(Redirect::Append(file.clone()))
            .run()
            .await
            .unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "two\nthree\nfour\n");
        let output = echo("gone").stdout(Redirect::Null).output().await.unwrap();
        assert!(output.stdout.is_empty());

        let noisy = remote.cmd("sh").args(["-c", "echo out; echo err >&2"]);
        let err = dir.join("err.txt");
        let output = noisy
            .clone()
            .stderr(Redirect::File(err.clone()))
            .output()
            .await
            .unwrap();
        assert_eq!((output.stdout, output.stderr), (b"out\n".to_vec(), vec![]));
        assert_eq!(fs::read_to_string(&err).unwrap(), "err\n");
        noisy
            .clone()
            .stdout(Redirect::Null)
            .stderr(Redirect::Append(err.clone()))
            .run()
            .await
            .unwrap();
        assert_eq!(fs::read_to_string(&err).unwrap(), "err\nerr\n");
        let output = noisy.clone().stderr(Redirect::Null).output().await.unwrap();
        assert_eq!((output.stdout, output.stderr), (b"out\n".to_vec(), vec![]));

        // 2>&1 follows stdout wherever it finally goes.
        let both = dir.join("both.txt");
        noisy
            .clone()
            .stderr_to_stdout()
            .stdout(Redirect::File(both.clone()))
            .run()
            .await
            .unwrap();
        assert_eq!(fs::read_to_string(&both).unwrap(), "out\nerr\n");
        let output = noisy.clone().stderr_to_stdout().output().await.unwrap();
        assert_eq!(
            (output.stdout, output.stderr),
            (b"out\nerr\n".to_vec(), vec![])
        );

        // Relative paths are relative to the view's directory, on the remote side.
        let here = remote.with_cwd(&dir);
        here.cmd("echo")
            .arg("rel")
            .stdout(Redirect::File("rel.txt".into()))
            .run()
            .await
            .unwrap();
        assert_eq!(fs::read_to_string(dir.join("rel.txt")).unwrap(), "rel\n");
        assert_eq!(
            here.cmd("cat")
                .stdin(Input::File("rel.txt".into()))
                .read()
                .await
                .unwrap(),
            "rel"
        );

        // `echo a > file | cat`: cat reads nothing; the whole pipeline into a file.
        let a = dir.join("a.txt");
        let out = (echo("a").stdout(Redirect::File(a.clone())) | remote.cmd("cat"))
            .read()
            .await
            .unwrap();
        assert_eq!(out, "");
        assert_eq!(fs::read_to_string(&a).unwrap(), "a\n");
        let pipeline = remote.cmd("sh").args(["-c", "cat; echo e1 >&2"])
            | remote.cmd("sh").args(["-c", "cat; echo e2 >&2"]);
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
        let output = pipeline
            .stdin(Input::bytes("piped\n"))
            .stdout(Redirect::Append(a.clone()))
            .stderr(Redirect::Null)
            .output()
            .await
            .unwrap();
        assert!(output.stdout.is_empty() && output.stderr.is_empty());
        assert_eq!(fs::read_to_string(&a).unwrap(), "a\npiped\n");
    }
}

#[tokio::test]
async fn stdin_from_remote_files_and_here_strings_of_any_bytes() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let dir = shared_dir(&sshd, &format!("stdin-{user}"));
        let input = dir.join("in put.bin");
        let content = b"from a file\n\xff\x00\xfe".to_vec();
        fs::write(&input, &content).unwrap();
        let cat = remote.cmd("cat");
        assert_eq!(
            cat.clone()
                .stdin(Input::File(input.clone()))
                .read_bytes()
                .await
                .unwrap(),
            content
        );
        assert_eq!(
            cat.clone().stdin(Input::Null).read_bytes().await.unwrap(),
            b""
        );
        // Unset stdin is empty remotely, even for run() (as `ssh -n`).
        let wc = remote.cmd("wc").arg("-c");
        assert_eq!(wc.read().await.unwrap().trim(), "0");

        assert_eq!((cat.clone() << "text").read_bytes().await.unwrap(), b"text");
        assert_eq!(
            (cat.clone() << String::from("s"))
                .read_bytes()
                .await
                .unwrap(),
            b"s"
        );
        let binary: Vec<u8> = (0..=255).collect();
        assert_eq!(
            (cat.clone() << binary.clone()).read_bytes().await.unwrap(),
            binary
        );
        assert_eq!(
            (cat.clone() << &b"\xff\xfe\n"[..])
                .read_bytes()
                .await
                .unwrap(),
            b"\xff\xfe\n"
        );
        assert_eq!(
            (cat.clone() << "").read_bytes().await.unwrap(),
            b"",
            "an empty here-string is end of file at once"
        );
        assert_eq!(
            (cat.clone() | remote.cmd("cat"))
                .stdin(Input::bytes(binary.clone()))
                .read_bytes()
                .await
                .unwrap(),
            binary
        );
        let big = stdout_pattern(5 * 1024 * 1024);
        let back = tokio::time::timeout(
            Duration::from_secs(120),
            (cat.clone() << big.clone()).read_bytes(),
        )
        .await
        .expect("did not hang")
        .unwrap();
        assert!(
            back == big,
            "{} bytes came back, not the 5 MiB sent",
            back.len()
        );
        let counted = (remote.cmd("sha256sum") << big.clone())
            .read()
            .await
            .unwrap();
        let local = (leadpipe::local().cmd("sha256sum") << big.clone())
            .read()
            .await
            .unwrap();
        assert_eq!(counted, local);

        // A command that never reads its here-string does not stall the call.
        let ignored = remote.cmd("true") << vec![b'x'; 8 * 1024 * 1024];
        tokio::time::timeout(Duration::from_secs(60), ignored.run())
            .await
            .expect("did not hang")
            .unwrap();
        let head = (remote.cmd("head").args(["-c", "1"]) << vec![b'y'; 1 << 20])
            .read()
            .await
            .unwrap();
        assert_eq!(head, "y");
    }
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported_by_name() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let machine = name(&sshd, &user);
        assert_eq!(remote.name(), machine);
        let fails = remote.cmd("sh").args(["-c", "echo went wrong >&2; exit 3"]);
        let error = fails.read().await.unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Code(3));
        assert_eq!(exit.machine(), machine);
        assert_eq!(exit.stage(), None);
        assert_eq!(exit.stderr(), b"went wrong\n");
        assert_eq!(
            error.to_string(),
            format!(
                "command failed with exit code 3 on {machine}:\n  $ sh -c 'echo went wrong >&2; exit 3'\n  stderr: went wrong"
            )
        );
        assert_eq!(fails.status().await.unwrap(), ExitStatus::Code(3));
        assert!(!fails.success().await.unwrap());
        fails.clone().ok_codes([0, 3]).read().await.unwrap();
        let output = fails.clone().unchecked().output().await.unwrap();
        assert_eq!(output.status, ExitStatus::Code(3));
        assert_eq!(output.statuses, [ExitStatus::Code(3)]);
        assert_eq!(output.stderr, b"went wrong\n");
        for code in [1, 2, 126, 127, 128, 255] {
            let status = remote
                .cmd("sh")
                .args(["-c", &format!("exit {code}")])
                .status()
                .await
                .unwrap();
            assert_eq!(status, ExitStatus::Code(code), "as {user}");
        }

        // A remote process killed by a signal: sshd's exit-signal, by name.
        let killed = remote.cmd("sh").args(["-c", "kill -TERM $$"]);
        assert_eq!(
            killed.status().await.unwrap(),
            ExitStatus::Signal(Signal::TERM),
            "as {user}"
        );
        let error = killed.run().await.unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Signal(Signal::TERM));
        let text = error.to_string();
        assert!(
            text.starts_with(&format!(
                "command was killed by SIGTERM on {machine}:\n  $ sh -c 'kill -TERM $$'"
            )),
            "{text}"
        );
        for (name, signal) in [
            ("KILL", Signal::KILL),
            ("INT", Signal::INT),
            ("USR1", Signal::USR1),
        ] {
            let status = remote
                .cmd("sh")
                .args(["-c", &format!("kill -{name} $$")])
                .status()
                .await
                .unwrap();
            assert_eq!(status, ExitStatus::Signal(signal), "as {user}");
        }
        // The same inside a pipeline, where the shell reports 128 + N.
        let status = (remote.cmd("true") | remote.cmd("sh").args(["-c", "kill -TERM $$"]))
            .status()
            .await
            .unwrap();
        assert_eq!(status, ExitStatus::Signal(Signal::TERM), "as {user}");
    }
}

#[tokio::test]
async fn the_error_for_a_remote_failure_names_the_machine_and_shows_remote_stderr() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let error = remote
        .cmd("ls")
        .args(["-la", "/leadpipe/nope"])
        .read()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "command failed with exit code 2 on {}:\n  $ ls -la /leadpipe/nope\n  stderr: ls: cannot access '/leadpipe/nope': No such file or directory",
            name(&sshd, &sshd.user)
        )
    );
    // run() streams remote stderr to ours, so the error says where it went.
    let error = remote
        .cmd("sh")
        .args(["-c", "exit 4"])
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "command failed with exit code 4 on {}:\n  $ sh -c 'exit 4'\n  (stderr was not captured: see above or where it was redirected)",
            name(&sshd, &sshd.user)
        )
    );
}

#[tokio::test]
async fn stdout_and_stderr_stay_apart_and_large_output_arrives_exactly() {
    let Some(sshd) = Sshd::start() else { return };
    let testbin = remote_testbin(&sshd);
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let output = remote
            .cmd("sh")
            .args(["-c", "printf out; printf err >&2; printf ' more'"])
            .output()
            .await
            .unwrap();
        assert_eq!(output.stdout, b"out more");
        assert_eq!(output.stderr, b"err");

        // 20 MiB of stdout and 5 MiB of stderr, interleaved, from a process that exits as
        // soon as it has written them.
        const OUT: usize = 20 * 1024 * 1024;
        const ERR: usize = 5 * 1024 * 1024;
        let write = remote
            .cmd(&testbin)
            .args(["write", &OUT.to_string(), &ERR.to_string()]);
        let output = tokio::time::timeout(Duration::from_secs(180), write.output())
            .await
            .expect("did not hang")
            .unwrap();
        assert!(
            output.stdout == stdout_pattern(OUT),
            "as {user}: {} bytes of stdout differ from the pattern",
            output.stdout.len()
        );
        assert!(
            output.stderr == stderr_pattern(ERR),
            "as {user}: {} bytes of stderr differ from the pattern",
            output.stderr.len()
        );
        // Through a remote pipeline, with stderr from the first stage.
        let output = tokio::time::timeout(
            Duration::from_secs(180),
            (write | remote.cmd("cat")).output(),
        )
        .await
        .expect("did not hang")
        .unwrap();
        assert!(
            output.stdout == stdout_pattern(OUT),
            "as {user}, pipeline stdout"
        );
        assert!(
            output.stderr == stderr_pattern(ERR),
            "as {user}, pipeline stderr"
        );

        // Data sent right before the exit status is never lost.
        for i in 0..30 {
            let script = format!("printf 'out{i}'; printf 'err{i}' >&2; exit {}", i % 3);
            let output = remote
                .cmd("sh")
                .args(["-c", &script])
                .unchecked()
                .output()
                .await
                .unwrap();
            assert_eq!(
                (output.stdout, output.stderr, output.status),
                (
                    format!("out{i}").into_bytes(),
                    format!("err{i}").into_bytes(),
                    ExitStatus::Code(i % 3)
                ),
                "as {user}, run {i}"
            );
        }
    }
}

#[tokio::test]
async fn read_trims_one_newline_and_rejects_invalid_utf8() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    assert_eq!(
        remote.cmd("printf").arg("a\\n\\n").read().await.unwrap(),
        "a\n"
    );
    let cmd = remote.cmd("printf").arg("ok\\377\\376");
    match cmd.read().await {
        Err(Error::InvalidUtf8 {
            command,
            machine,
            valid_up_to,
            ..
        }) => {
            assert_eq!(command, r"printf 'ok\377\376'");
            assert_eq!(machine, name(&sshd, &sshd.user));
            assert_eq!(valid_up_to, 2);
        }
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    assert_eq!(cmd.read_bytes().await.unwrap(), b"ok\xff\xfe");
}

#[tokio::test]
async fn remote_pipelines_are_pipefail_and_name_the_first_failing_stage() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let machine = name(&sshd, &user);
        // The last stage waits for the end of its input, so the stderr order is fixed.
        let pipeline = remote
            .cmd("sh")
            .args(["-c", "echo first failed >&2; exit 2"])
            | remote.cmd("cat")
            | remote
                .cmd("sh")
                .args(["-c", "cat >/dev/null; echo last failed >&2; exit 5"]);
        let error = pipeline.read().await.unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(
            exit.stage(),
            Some((0, 3, "sh -c 'echo first failed >&2; exit 2'"))
        );
        assert_eq!(exit.status(), ExitStatus::Code(2));
        assert_eq!(exit.machine(), machine);
        // The stages share the channel's one stderr.
        assert_eq!(exit.stderr(), b"first failed\nlast failed\n");
        assert_eq!(
            error.to_string(),
            format!(
                "stage 1 of 3 failed with exit code 2 on {machine}:\n  \
                 $ sh -c 'echo first failed >&2; exit 2' | cat | sh -c 'cat >/dev/null; echo last failed >&2; exit 5'\n  \
                 stage 1: sh -c 'echo first failed >&2; exit 2'\n  \
                 stderr: first failed\n          last failed"
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
        assert_eq!(output.status, ExitStatus::Code(5));
        assert_eq!(output.stderr, b"first failed\nlast failed\n");

        // A failing middle stage fails the whole, even when the last one succeeds.
        let middle =
            remote.cmd("echo") | remote.cmd("sh").args(["-c", "exit 1"]) | remote.cmd("cat");
        assert!(!middle.success().await.unwrap());
        assert!(middle.clone().unchecked().success().await.unwrap());
        let error = middle.run().await.unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.stage().map(|(i, n, _)| (i, n)), Some((1, 3)));

        // yes | head -1: the upstream SIGPIPE is not a failure.
        let yes = remote.cmd("yes") | remote.cmd("head").arg("-1");
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(30), yes.read())
                .await
                .expect("did not hang")
                .unwrap(),
            "y"
        );
        let output = yes.output().await.unwrap();
        assert_eq!(
            output.statuses,
            [ExitStatus::Signal(Signal::PIPE), ExitStatus::Code(0)]
        );
        assert!(output.status.success());
        // ... but an upstream stage killed by another signal is.
        let termed = remote.cmd("sh").args(["-c", "kill -TERM $$"]) | remote.cmd("cat");
        let output = termed.clone().unchecked().output().await.unwrap();
        assert_eq!(
            output.statuses,
            [ExitStatus::Signal(Signal::TERM), ExitStatus::Code(0)]
        );
        assert!(!termed.success().await.unwrap());
    }
}

#[tokio::test]
async fn a_missing_remote_program_is_command_not_found() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let machine = name(&sshd, &user);
        let dir = shared_dir(&sshd, &format!("missing-{user}"));
        let ran = dir.join("ran");
        let error = remote
            .cmd("leadpipe-no-such-program")
            .arg("x")
            .run()
            .await
            .unwrap_err();
        let Error::CommandNotFound {
            program,
            machine: on,
            ..
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!(program, "leadpipe-no-such-program");
        assert_eq!(on, &machine);
        assert!(
            error.to_string().starts_with(&format!(
                "command not found on {machine}: leadpipe-no-such-program"
            )),
            "{error}"
        );
        // A stage of a pipeline: nothing of it runs.
        let pipeline = remote.cmd("touch").arg(&ran)
            | remote.cmd("leadpipe-missing-stage")
            | remote.cmd("cat");
        let error = pipeline.output().await.unwrap_err();
        let Error::CommandNotFound { program, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(program, "leadpipe-missing-stage");
        assert!(!ran.exists(), "the first stage did not run");
        // success() and status() report it too rather than a made-up status.
        assert!(matches!(
            remote.cmd("leadpipe-no-such-program").status().await,
            Err(Error::CommandNotFound { .. })
        ));
        // An absolute path that does not exist.
        let error = remote
            .cmd("/leadpipe/no/such/program")
            .read()
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::CommandNotFound { program, .. } if program == "/leadpipe/no/such/program"),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn which_finds_remote_programs() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let sh = remote.which("sh").await.unwrap();
    assert!(
        sh == Path::new("/bin/sh") || sh == Path::new("/usr/bin/sh"),
        "{}",
        sh.display()
    );
    assert_eq!(
        remote.which("cat").await.unwrap().to_str().unwrap(),
        remote
            .cmd("sh")
            .args(["-c", "command -v cat"])
            .read()
            .await
            .unwrap()
    );
    let error = remote.which("leadpipe-no-such-program").await.unwrap_err();
    let Error::CommandNotFound {
        program,
        machine,
        searched,
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(program, "leadpipe-no-such-program");
    assert_eq!(machine, &name(&sshd, &sshd.user));
    let remote_path = remote.cmd("printenv").arg("PATH").read().await.unwrap();
    assert_eq!(searched, &remote_path);
    // Not a shell word: an argument, however it looks.
    assert!(remote.which("cat; echo injected").await.is_err());
}

#[tokio::test]
async fn spawn_writes_stdin_reads_stdout_and_waits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let mut child = (remote.cmd("cat") | remote.cmd("cat"))
            .spawn()
            .await
            .unwrap();
        assert_eq!(child.id(), None);
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        // A round trip while the child runs: it answers before its input ends.
        stdin.write_all(b"first line\n").await.unwrap();
        stdin.flush().await.unwrap();
        let mut first = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(30), stdout.read_exact(&mut first))
            .await
            .expect("the remote pipeline answered")
            .unwrap();
        assert_eq!(&first, b"first line\n");
        stdin.write_all(b"through the child").await.unwrap();
        // shutdown() sends the end of input (dropping it should too: see below).
        stdin.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_to_end(&mut out))
            .await
            .expect("the remote stdin ended")
            .unwrap();
        assert_eq!(out, b"through the child");
        assert_eq!(child.wait().await.unwrap(), ExitStatus::Code(0));
        assert_eq!(
            child.wait().await.unwrap(),
            ExitStatus::Code(0),
            "wait again"
        );

        let child = remote
            .cmd("sh")
            .args(["-c", "echo spawned stderr >&2; exit 9"])
            .spawn()
            .await
            .unwrap();
        let error = child.wait_with_output().await.unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Code(9));
        assert_eq!(exit.stderr(), b"spawned stderr\n");

        let output = remote
            .cmd("sh")
            .args(["-c", "cat; printf err >&2"])
            .stdin(Input::bytes("fed"))
            .spawn()
            .await
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        assert_eq!(
            (output.stdout, output.stderr, output.statuses),
            (b"fed".to_vec(), b"err".to_vec(), vec![ExitStatus::Code(0)])
        );

        let mut child = remote
            .cmd("sh")
            .args(["-c", "echo mine >&2"])
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

        // signal() reaches the remote process.
        let mut child = remote.cmd("sleep").arg("4240").spawn().await.unwrap();
        child.signal(Signal::TERM).unwrap();
        let error = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("the signal arrived")
            .unwrap_err();
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Signal(Signal::TERM), "as {user}");
    }
}

/// Spawns `cat` remotely and hands back the child with its stdin and stdout taken.
async fn remote_cat(
    remote: &SshMachine,
) -> (leadpipe::Child, leadpipe::ChildStdin, leadpipe::ChildStdout) {
    let mut child = remote.cmd("cat").spawn().await.unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    (child, stdin, stdout)
}

#[tokio::test]
async fn dropping_child_stdin_ends_the_remote_input() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let (mut child, mut stdin, mut stdout) = remote_cat(&remote).await;
    stdin.write_all(b"abc").await.unwrap();
    drop(stdin);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stdout.read_to_end(&mut out))
        .await
        .expect("the remote cat saw the end of its input")
        .unwrap();
    assert_eq!(out, b"abc");
    assert_eq!(child.wait().await.unwrap(), ExitStatus::Code(0));
}

#[tokio::test]
async fn wait_closes_the_remote_stdin_that_was_not_taken() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let mut child = remote.cmd("cat").spawn().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("wait closed stdin, so cat ended");
    assert_eq!(status.unwrap(), ExitStatus::Code(0));
    let child = remote.cmd("wc").arg("-c").spawn().await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("wait_with_output closed stdin");
    assert_eq!(output.unwrap().stdout, b"0\n");
}

#[tokio::test]
async fn lines_from_stdout_and_stderr_arrive_in_the_order_they_were_written() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        let script = "echo out1; sleep 0.3; echo err1 >&2; sleep 0.3; echo out2";
        let lines: Vec<Line> = remote
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
            ],
            "as {user}"
        );
        // A stderr line arrives while the command still runs.
        let mut slow = remote
            .cmd("sh")
            .args(["-c", "echo early >&2; sleep 3; echo late >&2"])
            .lines();
        let first = tokio::time::timeout(Duration::from_millis(2500), slow.next())
            .await
            .expect("a stderr line before the command ends");
        assert_eq!(first.unwrap().unwrap(), Line::Stderr("early".into()));
        assert_eq!(
            slow.next().await.unwrap().unwrap(),
            Line::Stderr("late".into())
        );
        assert!(slow.next().await.is_none());
    }
}

#[tokio::test]
async fn remote_stderr_bytes_arrive_while_the_command_runs() {
    use tokio::io::AsyncReadExt;
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let mut child = remote
        .cmd("sh")
        .args(["-c", "echo early >&2; sleep 4"])
        .stderr(Redirect::Pipe)
        .spawn()
        .await
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut word = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(3), stderr.read_exact(&mut word))
        .await
        .expect("the word arrived")
        .unwrap();
    assert_eq!(&word, b"early");
    let mut newline = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(3), stderr.read_exact(&mut newline))
        .await
        .expect("its newline arrived with it, not when the command ended")
        .unwrap();
    assert_eq!(&newline, b"\n");
    let mut rest = Vec::new();
    stderr.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"");
    child.wait().await.unwrap();
}

#[tokio::test]
async fn lines_stream_remote_output_and_check_the_status_at_the_end() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = sshd.login(&user).await;
        // The first line arrives while the command still runs.
        let mut slow = remote
            .cmd("sh")
            .args(["-c", "echo early; sleep 2; echo late"])
            .lines();
        let first = tokio::time::timeout(Duration::from_millis(1500), slow.next())
            .await
            .expect("a line before the command ends");
        assert_eq!(first.unwrap().unwrap(), Line::Stdout("early".into()));
        assert_eq!(
            slow.next().await.unwrap().unwrap(),
            Line::Stdout("late".into())
        );
        assert!(slow.next().await.is_none());

        let mut failing = (remote
            .cmd("sh")
            .args(["-c", "echo partial; echo why >&2; exit 7"])
            | remote.cmd("cat"))
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
        seen.sort_by_key(|l| l.is_stderr());
        assert_eq!(
            seen,
            [Line::Stdout("partial".into()), Line::Stderr("why".into())]
        );
        let Error::Exit(exit) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(exit.status(), ExitStatus::Code(7));
        assert_eq!(exit.stage().map(|(i, n, _)| (i, n)), Some((0, 2)));
        assert_eq!(exit.stderr(), b"why\n");
        assert!(failing.next().await.is_none());
    }
}

#[tokio::test]
async fn remote_env_clear_and_an_unchecked_stage_status_match_std_and_pipefail() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.login(&sshd.user).await;
    let cleared = remote
        .with_env("LEADPIPE_VIEW", "view")
        .cmd("/usr/bin/env")
        .env("LEADPIPE_BEFORE", "before")
        .env_clear()
        .env("ONLY", "this");
    assert_eq!(cleared.read().await.unwrap(), "ONLY=this");

    let pipeline = remote.cmd("sh").args(["-c", "exit 3"]).unchecked() | remote.cmd("cat");
    let output = pipeline.output().await.unwrap();
    assert_eq!(output.statuses, [ExitStatus::Code(3), ExitStatus::Code(0)]);
    assert_eq!(output.status, ExitStatus::Code(3));
    assert_eq!(pipeline.status().await.unwrap(), ExitStatus::Code(3));
    pipeline.run().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_end_calls_on_a_frozen_connection_within_half_a_second_of_the_limit() {
    let Some(sshd) = Sshd::start() else { return };
    let proxy = FaultProxy::start(([127, 0, 0, 1], sshd.port).into()).await;
    let dir = tempfile::tempdir().unwrap();
    let line = fs::read_to_string(&sshd.known_hosts).unwrap().replace(
        &format!("[127.0.0.1]:{}", sshd.port),
        &format!("[127.0.0.1]:{}", proxy.addr().port()),
    );
    fs::write(dir.path().join("known_hosts"), line).unwrap();
    // Keepalive at its default: the timeouts must not depend on it.
    let remote = sshd
        .builder(&sshd.user)
        .port(proxy.addr().port())
        .known_hosts(dir.path().join("known_hosts"))
        .connect()
        .await
        .unwrap();
    let limit = Duration::from_millis(500);
    // leadpipe waits at most 0.5 s for a kill to be confirmed; 0.3 s for scheduling.
    let latest = limit + Duration::from_millis(800);
    let sleep = || remote.cmd("sleep").arg("37").timeout(limit);
    let since = std::time::Instant::now();
    let read = tokio::spawn({
        let c = sleep();
        async move { c.read().await.map(|_| ()) }
    });
    let lines = tokio::spawn({
        let mut lines = sleep().lines();
        async move {
            while let Some(line) = lines.next().await {
                line?;
            }
            Ok(())
        }
    });
    let mut child = sleep().spawn().await.unwrap();
    let wait = tokio::spawn(async move { child.wait().await.map(|_| ()) });
    // All three run on the server when it stops answering.
    while sshd.pgrep("sleep 37").len() < 3 {
        assert!(
            since.elapsed() < limit,
            "the remote sleeps did not start in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.freeze();
    for (what, call) in [
        ("read()", read),
        ("lines()", lines),
        ("Child::wait()", wait),
    ] {
        let result = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{what} still ran 10 s after it started"))
            .unwrap();
        let took = since.elapsed();
        assert!(
            matches!(result, Err(Error::Timeout { .. })),
            "{what}: {result:?}"
        );
        assert!(
            took < latest,
            "{what} returned after {took:?} (limit {limit:?})"
        );
    }
    // Once the connection answers again, the kills reach the server.
    proxy.thaw();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !sshd.pgrep("sleep 37").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "remote sleeps left: {:?}",
            sshd.pgrep("sleep 37")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
