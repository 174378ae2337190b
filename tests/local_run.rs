//! Running single commands on the local machine: every call, exit checking, errors.

mod support;

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, time::Duration};

use leadpipe::{Error, ExitStatus, Input, Redirect, Signal, local};
use support::{TESTBIN, testbin};

fn argv(bytes: &[u8]) -> Vec<&[u8]> {
    let mut args: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    assert_eq!(args.pop(), Some(&b""[..]), "output ends with a NUL");
    args
}

#[tokio::test]
async fn arguments_reach_the_program_byte_for_byte() {
    let hostile: Vec<&[u8]> = vec![
        b"",
        b"two words",
        b"$(touch /tmp/leadpipe-injected)",
        b"`id`",
        b"a;b&&c||d|e",
        b"*",
        b"'\"\\",
        b"line\nbreak",
        b"-n",
        b"\xff\xfe not utf-8",
        "ünïcödé".as_bytes(),
    ];
    let out = testbin()
        .arg("echo-argv")
        .args(hostile.iter().map(|a| OsStr::from_bytes(a)))
        .read_bytes()
        .await
        .unwrap();
    assert_eq!(argv(&out), hostile);
    assert!(!std::path::Path::new("/tmp/leadpipe-injected").exists());
}

#[tokio::test]
async fn display_is_a_command_line_a_shell_reads_back_exactly() {
    let args = [
        "", "a b", "it's", "$HOME", "`x`", "*", "-", "a=b", "~", "#", "x\ny",
    ];
    let command = local().cmd("printf").arg("%s\\0").args(args);
    let line = command.to_string();
    assert_eq!(
        line,
        r#"printf '%s\0' '' 'a b' 'it'\''s' '$HOME' '`x`' '*' - a=b '~' '#' 'x
y'"#
    );
    let out = local()
        .cmd("sh")
        .arg("-c")
        .arg(&line)
        .read_bytes()
        .await
        .unwrap();
    let expected: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    assert_eq!(argv(&out), expected);
}

#[tokio::test]
async fn display_shows_redirects_but_not_here_string_bytes() {
    let sh = local();
    let line = sh
        .cmd("sort")
        .stdin(Input::File("in put".into()))
        .stdout(Redirect::Append("out".into()))
        .stderr(Redirect::Null)
        .to_string();
    assert_eq!(line, "sort < 'in put' >> out 2> /dev/null");
    let line = (sh.cmd("login") << "secret-password")
        .stderr_to_stdout()
        .to_string();
    assert_eq!(line, "login 2>&1 <<< [15 bytes]");
    let debug = format!("{:?}", sh.cmd("deploy").env("TOKEN", "s3cr3t").cwd("/srv"));
    assert!(debug.contains("TOKEN") && debug.contains("/srv"), "{debug}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
}

#[tokio::test]
async fn read_trims_exactly_one_trailing_newline() {
    let sh = local();
    assert_eq!(sh.cmd("printf").arg("a\\n\\n").read().await.unwrap(), "a\n");
    assert_eq!(sh.cmd("printf").arg("a").read().await.unwrap(), "a");
    assert_eq!(
        sh.cmd("printf").arg("a\\n\\n").read_bytes().await.unwrap(),
        b"a\n\n"
    );
}

#[tokio::test]
async fn read_rejects_invalid_utf8_and_read_bytes_is_exact() {
    let sh = local();
    let cmd = sh.cmd("printf").arg("ok\\377\\376");
    match cmd.read().await {
        Err(Error::InvalidUtf8 {
            command,
            machine,
            valid_up_to,
            ..
        }) => {
            assert_eq!(command, r"printf 'ok\377\376'");
            assert_eq!(machine, "local");
            assert_eq!(valid_up_to, 2);
        }
        other => panic!("expected InvalidUtf8, got {other:?}"),
    }
    assert_eq!(cmd.read_bytes().await.unwrap(), b"ok\xff\xfe");
}

#[tokio::test]
async fn exit_codes_are_checked_against_ok_codes() {
    let fails = testbin().args(["exit", "3", "went wrong"]);
    let error = fails.read().await.unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.status(), ExitStatus::Code(3));
    assert_eq!(exit.machine(), "local");
    assert_eq!(exit.stage(), None);

    let error = fails.read().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "command failed with exit code 3 on local:\n  $ {TESTBIN} exit 3 'went wrong'\n  stderr: went wrong"
        )
    );
    fails.clone().ok_codes([0, 3]).read().await.unwrap();
    fails.clone().unchecked().read().await.unwrap();
    let output = fails.clone().unchecked().output().await.unwrap();
    assert_eq!(output.status, ExitStatus::Code(3));
    assert_eq!(output.stderr, b"went wrong\n");
    assert_eq!(output.statuses, [ExitStatus::Code(3)]);
    assert!(
        testbin()
            .args(["exit", "0"])
            .ok_codes([1])
            .run()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn run_inherits_stderr_so_the_error_says_where_it_went() {
    let error = testbin()
        .args(["exit", "4", "shown on the terminal"])
        .run()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.ends_with("(stderr was not captured: see above or where it was redirected)"),
        "{text}"
    );
}

#[tokio::test]
async fn status_and_success_never_fail_on_status() {
    let sh = local();
    assert_eq!(sh.cmd("false").status().await.unwrap(), ExitStatus::Code(1));
    assert!(!sh.cmd("false").success().await.unwrap());
    assert!(sh.cmd("true").success().await.unwrap());
    assert!(sh.cmd("false").ok_codes([1]).success().await.unwrap());
}

#[tokio::test]
async fn death_by_signal_is_reported_by_name() {
    let cmd = testbin().args(["signal", "15"]);
    assert_eq!(
        cmd.status().await.unwrap(),
        ExitStatus::Signal(Signal::TERM)
    );
    let error = cmd.read().await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("command was killed by SIGTERM on local:\n  $ "),
        "{error}"
    );
}

#[tokio::test]
async fn command_not_found_names_the_program_and_the_path_searched() {
    let sh = local().with_env("PATH", "/nonexistent/bin:/also/not");
    let error = sh.cmd("leadpipe-no-such-program").run().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "command not found on local: leadpipe-no-such-program\n  searched PATH: /nonexistent/bin:/also/not"
    );
    let error = local().which("leadpipe-no-such-program").await.unwrap_err();
    assert!(matches!(error, Error::CommandNotFound { .. }), "{error}");
    let error = local().cmd("./no-such-script").status().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "command not found on local: ./no-such-script"
    );
    assert_eq!(
        local().which("sh").await.unwrap().file_name().unwrap(),
        "sh"
    );
}

#[tokio::test]
async fn env_and_cwd_apply_to_the_command_only() {
    let dir = tempfile::tempdir().unwrap();
    let before_cwd = std::env::current_dir().unwrap();
    let sh = local();
    let view = sh.with_cwd(dir.path()).with_env("LEADPIPE_VIEW", "view");
    assert_eq!(
        view.cmd(TESTBIN).arg("pwd").read().await.unwrap(),
        dir.path().to_str().unwrap()
    );
    assert_eq!(
        view.cmd(TESTBIN)
            .args(["env", "LEADPIPE_VIEW"])
            .read()
            .await
            .unwrap(),
        "view"
    );
    let cmd = view.cmd(TESTBIN).args(["env", "LEADPIPE_VIEW"]);
    assert_eq!(
        cmd.clone()
            .env("LEADPIPE_VIEW", "cmd")
            .read()
            .await
            .unwrap(),
        "cmd"
    );
    assert_eq!(
        cmd.clone()
            .env_remove("LEADPIPE_VIEW")
            .read()
            .await
            .unwrap(),
        "<unset>"
    );
    let cleared = sh.cmd(TESTBIN).env_clear().env("ONLY", "1");
    assert_eq!(
        cleared.clone().args(["env", "HOME"]).read().await.unwrap(),
        "<unset>"
    );
    assert_eq!(cleared.args(["env", "ONLY"]).read().await.unwrap(), "1");

    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let sub = view.cmd(TESTBIN).arg("pwd").cwd("sub");
    assert_eq!(
        sub.read().await.unwrap(),
        dir.path().join("sub").to_str().unwrap()
    );
    assert_eq!(
        view.with_cwd("sub").get_cwd(),
        Some(dir.path().join("sub").as_path())
    );

    // Nothing touched this process's own state.
    assert_eq!(std::env::current_dir().unwrap(), before_cwd);
    assert!(std::env::var_os("LEADPIPE_VIEW").is_none());
}

#[tokio::test]
async fn a_missing_working_directory_is_named() {
    let error = local()
        .cmd("true")
        .cwd("/leadpipe/no/such/dir")
        .run()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("cannot start `true` on local: no directory /leadpipe/no/such/dir"),
        "{text}"
    );
}

#[tokio::test]
async fn timeout_kills_and_reports() {
    let error = testbin()
        .args(["sleep", "30"])
        .timeout(Duration::from_millis(200))
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("command timed out after 200ms on local and was killed:\n  $ {TESTBIN} sleep 30")
    );
    // A command that finishes in time is unaffected.
    testbin()
        .args(["sleep", "0"])
        .timeout(Duration::from_secs(10))
        .run()
        .await
        .unwrap();
}

#[test]
fn errors_are_send_sync_and_static() {
    fn assert_traits<T: Send + Sync + 'static + std::error::Error>() {}
    assert_traits::<Error>();
    assert_traits::<leadpipe::ExitError>();
    fn assert_value<T: Clone + Send + Sync + 'static>() {}
    assert_value::<leadpipe::Command>();
    assert_value::<leadpipe::Pipeline>();
    assert_value::<leadpipe::LocalMachine>();
}

#[tokio::test]
async fn env_clear_drops_the_variables_set_before_it_as_std_does() {
    let view = local().with_env("LEADPIPE_VIEW", "view");
    let cleared = view
        .cmd(TESTBIN)
        .env("LEADPIPE_BEFORE", "before")
        .env_remove("LEADPIPE_AFTER")
        .env_clear()
        .env("LEADPIPE_AFTER", "after");
    for (name, expected) in [
        ("LEADPIPE_VIEW", "<unset>"),
        ("LEADPIPE_BEFORE", "<unset>"),
        ("LEADPIPE_AFTER", "after"),
        ("HOME", "<unset>"),
    ] {
        let value = cleared.clone().args(["env", name]).read().await.unwrap();
        assert_eq!(value, expected, "{name}");
    }
    // std's Command agrees.
    let std = std::process::Command::new(TESTBIN)
        .env("LEADPIPE_BEFORE", "before")
        .env_clear()
        .args(["env", "LEADPIPE_BEFORE"])
        .output()
        .unwrap();
    assert_eq!(std.stdout, b"<unset>");
}

/// Writes an executable script `name` printing `says` into `dir`.
fn script(dir: &std::path::Path, name: &str, says: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\necho {says}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Sets a directory's modification time a minute back, as if it had been there for a
/// while (a lookup in a directory changed this very moment is not remembered at all).
fn settle(dir: &std::path::Path) {
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::open(dir)
        .unwrap()
        .set_modified(past)
        .unwrap();
}

#[tokio::test]
async fn path_lookups_see_programs_added_and_removed_since() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let path = std::env::join_paths([first.path(), second.path()]).unwrap();
    script(second.path(), "leadpipe-path-probe", "second");
    settle(first.path());
    settle(second.path());
    let probe = local().cmd("leadpipe-path-probe").env("PATH", &path);
    // Found, twice (the second time as remembered).
    for _ in 0..2 {
        assert_eq!(probe.read().await.unwrap(), "second");
    }
    // Added to an earlier directory: that one wins.
    script(first.path(), "leadpipe-path-probe", "first");
    assert_eq!(probe.read().await.unwrap(), "first");
    settle(first.path());
    assert_eq!(probe.read().await.unwrap(), "first");
    // Removed: the later one again, then nothing.
    std::fs::remove_file(first.path().join("leadpipe-path-probe")).unwrap();
    assert_eq!(probe.read().await.unwrap(), "second");
    settle(first.path());
    assert_eq!(probe.read().await.unwrap(), "second");
    std::fs::remove_file(second.path().join("leadpipe-path-probe")).unwrap();
    let error = probe.read().await.unwrap_err();
    assert!(matches!(error, Error::CommandNotFound { .. }), "{error}");
    // A directory of the PATH that did not exist, created with the program in it.
    let missing = first.path().join("later");
    let path = std::env::join_paths([missing.as_path(), second.path()]).unwrap();
    script(second.path(), "leadpipe-path-probe", "second");
    settle(second.path());
    let probe = local().cmd("leadpipe-path-probe").env("PATH", &path);
    assert_eq!(probe.read().await.unwrap(), "second");
    assert_eq!(probe.read().await.unwrap(), "second");
    std::fs::create_dir(&missing).unwrap();
    script(&missing, "leadpipe-path-probe", "later");
    assert_eq!(probe.read().await.unwrap(), "later");
}
