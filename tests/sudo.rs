//! Running as another user through sudo, and secrets, against a real sshd and the real
//! `sudo` with the users and rules the harness writes (`Sshd::sudo_users`): a password
//! rule with a lecture and prompt of its own, `NOPASSWD`, `requiretty`, a wrong password,
//! a service account; files written as root; `Secret` values kept out of `ps`, `Display`,
//! `Debug`, errors and the tracing output (captured by a subscriber of this binary).

mod support;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    sync::OnceLock,
    time::{Duration, Instant},
};

use leadpipe::{Error, Machine, Secret, SshMachine, local};
use support::{
    sshd::{Sshd, SudoUsers, TEST_PASSWORD},
    trace::Capture,
};

/// Everything every tracing span and event of this binary said.
static TRACE: OnceLock<Capture> = OnceLock::new();

/// Installs the capturing subscriber (once for the binary).
fn capture_tracing() {
    TRACE.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(capture.clone()).unwrap();
        capture
    });
}

/// What the tracing spans and events of this binary said so far.
fn traced() -> String {
    TRACE.get().map(Capture::text).unwrap_or_default()
}

/// Fails if `secret` is in `text`.
fn assert_hidden(what: &str, text: &str, secret: &str) {
    assert!(!text.contains(secret), "{what} shows the secret:\n{text}");
}

async fn setup() -> Option<(Sshd, SudoUsers)> {
    capture_tracing();
    let sshd = Sshd::start()?;
    let users = sshd.sudo_users()?;
    Some((sshd, users))
}

/// `sleep SECONDS` as `view`'s user, with a timeout: the call returns in time and the
/// process is gone soon after (the login's own `kill` could not reach it).
async fn times_out_and_dies(view: &SshMachine, seconds: &str) {
    let started = Instant::now();
    let error = view
        .cmd("sleep")
        .arg(seconds)
        .timeout(Duration::from_millis(800))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
    wait_gone(seconds).await;
}

/// Waits up to 5 s for `sleep SECONDS` to be gone from every process of the machine:
/// sudo's reset environment and a parent that died would hide it from `Sshd::pgrep`.
async fn wait_gone(seconds: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let needle = format!("sleep\0{seconds}\0");
    let alive = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|line| line.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
    };
    while alive() {
        assert!(
            Instant::now() < deadline,
            "sleep {seconds} outlived its call"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn with_password(sshd: &Sshd, user: &str, password: &str) -> SshMachine {
    sshd.builder(user)
        .sudo_password(Secret::new(password))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn sudo_with_a_password_runs_commands_as_root_and_shows_the_password_nowhere() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let machine = with_password(&sshd, users.password, TEST_PASSWORD).await;
    let root = machine.sudo();
    assert_eq!(root.cmd("id").arg("-u").read().await.unwrap(), "0");
    assert_ne!(machine.cmd("id").arg("-u").read().await.unwrap(), "0");
    // The lecture and prompt are sudo's, not the command's: nothing of them in its streams.
    let output = root
        .cmd("sh")
        .args(["-c", "echo out; echo err >&2; id -un >&2"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\nroot\n");
    // Stdin follows the gate untouched; pipelines run as root as a whole.
    let echoed = (root.cmd("cat") << "through stdin\n").read().await.unwrap();
    assert_eq!(echoed, "through stdin");
    let count = (root.cmd("printf").arg("a\nb\n") | root.cmd("wc").arg("-l"))
        .read()
        .await
        .unwrap();
    assert_eq!(count.trim(), "2");
    // Concurrent commands each pass their own prompt.
    let (first, second) = (root.cmd("id").arg("-un"), root.cmd("id").arg("-un"));
    let (a, b) = tokio::join!(first.read(), second.read());
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        ("root".to_owned(), "root".to_owned())
    );
    // A failing command: the error names the view, not the password.
    let error = root
        .cmd("sh")
        .args(["-c", "echo oops >&2; exit 3"])
        .read()
        .await
        .unwrap_err();
    let text = format!("{error}\n{error:?}");
    assert!(matches!(error, Error::Exit(_)), "{text}");
    assert!(
        text.contains("(sudo -u root)") && text.contains("oops"),
        "{text}"
    );
    assert_hidden("the error", &text, TEST_PASSWORD);
    assert_hidden("Debug of the machine", &format!("{root:?}"), TEST_PASSWORD);
    // A timeout kills root's processes too (the login's own kill could not).
    times_out_and_dies(&root, "31.25").await;
    assert_hidden("the tracing output", &traced(), TEST_PASSWORD);
}

#[tokio::test]
async fn nopasswd_needs_no_password_and_sudo_as_becomes_a_service_account() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let machine = sshd.login(users.nopasswd).await;
    assert_eq!(
        machine.sudo().cmd("id").arg("-un").read().await.unwrap(),
        "root"
    );
    let service = machine.sudo_as(users.service);
    assert_eq!(
        service.cmd("id").arg("-un").read().await.unwrap(),
        users.service
    );
    let file = "/var/lib/leadpipe-pg/leadpipe-sudo-test.txt";
    service.path(file).write("as the service\n").await.unwrap();
    let owner = std::fs::metadata(file).unwrap().uid();
    let service_uid = machine
        .cmd("id")
        .args(["-u", users.service])
        .read()
        .await
        .unwrap();
    assert_eq!(owner.to_string(), service_uid);
    assert_eq!(
        service.path(file).read_to_string().await.unwrap(),
        "as the service\n"
    );
    service.path(file).remove().await.unwrap();
    // A name sudo could misread is refused before anything is sent.
    let error = machine.sudo_as("-s").cmd("true").run().await.unwrap_err();
    assert!(matches!(error, Error::Sudo { .. }), "{error}");
}

#[tokio::test]
async fn requiretty_is_met_with_a_pty() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let machine = with_password(&sshd, users.tty, TEST_PASSWORD).await;
    // Without a terminal sudo refuses this login outright.
    let plain = machine
        .cmd("sudo")
        .args(["-S", "true"])
        .stdin(Secret::new(format!("{TEST_PASSWORD}\n")));
    assert!(!plain.status().await.unwrap().success());
    let root = machine.sudo();
    for _ in 0..2 {
        let output = root.cmd("id").arg("-u").output().await.unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(text.trim(), "0", "{text:?}");
        assert_hidden("the output", &text, TEST_PASSWORD);
    }
    // On sudo's own terminal the command leads a session of its own: a timeout still
    // kills it.
    times_out_and_dies(&root, "32.75").await;
    // Files need sftp-server without a terminal, which this rule refuses: a clear error.
    let error = root.path("/etc/hostname").read().await.unwrap_err();
    assert!(
        format!("{error}").contains("sudo as root failed"),
        "{error}"
    );
    assert_hidden("the tracing output", &traced(), TEST_PASSWORD);
}

#[tokio::test]
async fn a_wrong_or_missing_password_fails_fast_with_error_sudo() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let wrong = "wrong-password-77";
    let machine = with_password(&sshd, users.password, wrong).await;
    for attempt in 0..2 {
        let started = Instant::now();
        let error = machine.sudo().cmd("id").run().await.unwrap_err();
        let took = started.elapsed();
        eprintln!("a refused password failed in {took:?}: {error}");
        let text = format!("{error}\n{error:?}");
        assert!(matches!(error, Error::Sudo { .. }), "{text}");
        assert!(text.contains("refused"), "{text}");
        assert!(
            took < Duration::from_secs(5),
            "attempt {attempt} took {took:?}"
        );
        assert_hidden("the error", &text, wrong);
        // Files go through the same gate.
        let error = machine
            .sudo()
            .path("/etc/hostname")
            .read()
            .await
            .unwrap_err();
        assert!(format!("{error}").contains("refused"), "{error}");
    }
    // The connection is fine.
    assert_eq!(machine.cmd("echo").arg("ok").read().await.unwrap(), "ok");
    // No password at all, where one is needed.
    let none = sshd.login(users.password).await;
    let started = Instant::now();
    let error = none.sudo().cmd("id").run().await.unwrap_err();
    assert!(matches!(error, Error::Sudo { .. }), "{error}");
    assert!(format!("{error}").contains("none was given"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_hidden("the tracing output", &traced(), wrong);
}

#[tokio::test]
async fn files_are_written_and_uploaded_into_a_root_owned_directory_with_their_modes() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let machine = with_password(&sshd, users.password, TEST_PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.path().join("app.conf");
    // As the login: refused.
    let error = machine.path(&conf).write("x").await.unwrap_err();
    assert!(format!("{error}").contains("ermission"), "{error}");
    // As root through sudo: written, moded, read back.
    let root = machine.sudo();
    root.path(&conf).write("port = 8080\n").await.unwrap();
    root.path(&conf).chmod(0o640).await.unwrap();
    let meta = std::fs::metadata(&conf).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o640));
    assert_eq!(
        root.path(&conf).read_to_string().await.unwrap(),
        "port = 8080\n"
    );
    // A tree uploaded as root keeps its modes.
    let release = tempfile::tempdir().unwrap();
    std::fs::create_dir(release.path().join("bin")).unwrap();
    std::fs::write(release.path().join("bin/app"), b"#!/bin/sh\necho app\n").unwrap();
    std::fs::set_permissions(
        release.path().join("bin/app"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::write(release.path().join("README"), b"readme").unwrap();
    std::fs::set_permissions(
        release.path().join("README"),
        std::fs::Permissions::from_mode(0o604),
    )
    .unwrap();
    let target = dir.path().join("release-1");
    root.upload(release.path(), &target).await.unwrap();
    let app = std::fs::metadata(target.join("bin/app")).unwrap();
    assert_eq!((app.uid(), app.mode() & 0o7777), (0, 0o750));
    let readme = std::fs::metadata(target.join("README")).unwrap();
    assert_eq!((readme.uid(), readme.mode() & 0o7777), (0, 0o604));
    assert_eq!(
        root.cmd(target.join("bin/app")).read().await.unwrap(),
        "app"
    );
    assert_hidden("the tracing output", &traced(), TEST_PASSWORD);
}

/// Every process's command line on the machine, one per line.
async fn process_list(machine: &SshMachine) -> String {
    // One grep for all of them (a process per entry is slow on a busy machine): each
    // argument comes as `/proc/PID/cmdline:ARG`, NUL-terminated.
    let listed = machine
        .cmd("sh")
        .args([
            "-c",
            "exec grep -a -H -z '^' /proc/[0-9]*/cmdline 2>/dev/null",
        ])
        .unchecked()
        .output()
        .await
        .unwrap()
        .stdout;
    let mut lines: Vec<(String, String)> = Vec::new();
    for record in listed.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let record = String::from_utf8_lossy(record);
        let Some((file, arg)) = record.split_once(":") else {
            continue;
        };
        match lines.last_mut() {
            Some((last, line)) if last == file => {
                line.push(' ');
                line.push_str(arg);
            }
            _ => lines.push((file.to_owned(), arg.to_owned())),
        }
    }
    let lines: Vec<String> = lines.into_iter().map(|(_, line)| line).collect();
    lines.join("\n")
}

#[tokio::test]
async fn secret_arguments_and_environment_values_stay_out_of_ps_and_every_text() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let machine = sshd.login(users.nopasswd).await;
    let id = std::process::id();
    let arg = Secret::new(format!("arg-secret-{id} it's \"q\" $HOME"));
    let value = format!("env-secret-{id} 'x'\n$PATH");
    let env = Secret::new(value.clone());
    let script = "printf '%s|%s' \"$1\" \"$LP_TOKEN\"; sleep 2";
    for view in [machine.clone(), machine.sudo()] {
        for clear in [false, true] {
            let mut cmd = view.cmd("sh").args(["-c", script, "lp-secret-prog"]);
            if clear {
                cmd = cmd.env_clear().env("PATH", "/usr/bin:/bin");
            }
            let cmd = cmd.arg(&arg).env("LP_TOKEN", &env);
            let shown = format!("{cmd}\n{cmd:?}");
            assert!(shown.contains("'***'"), "{shown}");
            assert_hidden("Display/Debug", &shown, "arg-secret");
            assert_hidden("Display/Debug", &shown, "env-secret");
            let child = cmd.spawn().await.unwrap();
            tokio::time::sleep(Duration::from_millis(700)).await;
            let listed = process_list(&machine).await;
            assert_hidden("ps", &listed, "env-secret");
            for line in listed.lines().filter(|l| l.contains("arg-secret")) {
                assert!(
                    line.starts_with("sh -c ") && line.contains("lp-secret-prog"),
                    "only the program's own argv may hold its argument: {line}"
                );
            }
            let output = child.wait_with_output().await.unwrap();
            let mut expected = arg.expose().to_vec();
            expected.push(b'|');
            expected.extend_from_slice(value.as_bytes());
            assert_eq!(output.stdout, expected);
        }
    }
    // A detached pipeline: its shell outlives the line, and still holds no value in argv.
    let detached = (machine
        .cmd("sh")
        .args(["-c", "sleep 3", "lp-detached"])
        .env("LP_TOKEN", &env)
        | machine.cmd("cat"))
    .spawn_detached()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listed = process_list(&machine).await;
    assert!(listed.contains("lp-detached"), "{listed}");
    assert_hidden("ps", &listed, "env-secret");
    let _ = machine
        .cmd("kill")
        .args(["--", &format!("-{detached}")])
        .status()
        .await;
    // Errors show the argument as *** too, however the command fails.
    let failing = machine.cmd("sh").args(["-c", "exit 3", "sh"]).arg(&arg);
    let error = failing.run().await.unwrap_err();
    assert_hidden("the error", &format!("{error}\n{error:?}"), "arg-secret");
    let refused = machine.cmd("echo").arg(&arg).arg(Secret::new("nul\0byte"));
    let error = refused.run().await.unwrap_err();
    let text = format!("{error}");
    assert!(text.contains("NUL") && text.contains("`***`"), "{text}");
    assert_hidden("the error", &text, "nul");
    assert_hidden("the tracing output", &traced(), "arg-secret");
    assert_hidden("the tracing output", &traced(), "env-secret");
}

/// Who `machine` runs as once it becomes `user`: one body for every machine.
async fn whoami_as(machine: &impl Machine, user: &str) -> String {
    machine
        .sudo_as(user)
        .cmd("id")
        .arg("-un")
        .read()
        .await
        .unwrap()
}

#[tokio::test]
async fn local_sudo_as_a_normal_user() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let user = sshd.user.clone();
    assert_eq!(whoami_as(&local(), &user).await, user);
    assert_eq!(
        whoami_as(&sshd.login(users.nopasswd).await, &user).await,
        user
    );
    let view = local().sudo_as(&user);
    assert_eq!(view.cmd("id").arg("-un").read().await.unwrap(), user);
    let token = Secret::new("local-secret");
    let seen = view
        .cmd("sh")
        .args(["-c", "printf %s \"$LP_TOKEN\""])
        .env("LP_TOKEN", &token)
        .read()
        .await
        .unwrap();
    assert_eq!(seen, "local-secret");
    // A secret argument is in the program's argv only, not in sudo's (its parent for the
    // whole run).
    let child = view
        .cmd("sh")
        .args(["-c", "printf %s \"$1\"; sleep 2", "lp-local-prog"])
        .arg(Secret::new("local-arg-secret"))
        .spawn()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if line.contains("local-arg-secret") {
            assert!(line.starts_with("sh -c "), "{line}");
        }
    }
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(output.stdout, b"local-arg-secret");
    let piped = (view.cmd("printf").arg("a\nb\n") | view.cmd("wc").arg("-l"))
        .read()
        .await
        .unwrap();
    assert_eq!(piped.trim(), "2");
    let error = view.cmd("false").run().await.unwrap_err();
    assert!(format!("{error}").contains("(sudo -u"), "{error}");
    assert_hidden("the tracing output", &traced(), "local-secret");
}

/// The processes running `sftp-server` that descend from this test process (each with
/// the chain of parents between: sudo).
fn my_sftp_servers() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !support::process_cmdline(pid).contains("sftp-server") {
            continue;
        }
        let mut chain = vec![pid];
        let mut at = pid;
        while let Some((parent, _, _)) = support::process_ids(at) {
            if parent == me {
                found.append(&mut chain);
                break;
            }
            // The harness's sshd is a child of this process too: what the other tests
            // start on the server (sftp-server through sudo) is not this machine's.
            if parent <= 1 || chain.len() > 4 || support::process_cmdline(parent).contains("sshd") {
                break;
            }
            chain.push(parent);
            at = parent;
        }
    }
    found
}

#[tokio::test]
async fn local_sudo_files_are_the_users_own() {
    let Some((_sshd, users)) = setup().await else {
        return;
    };
    let user = users.service;
    let uid: u32 = local()
        .cmd("id")
        .args(["-u", user])
        .read()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(uid, 0);
    // A root-owned 0755 directory, and one the user owns inside it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(uid), None).unwrap();
    let view = local().sudo_as(user);
    // Written by the user, read back through the view.
    view.path(own.join("a.txt"))
        .write("as the user\n")
        .await
        .unwrap();
    let meta = std::fs::metadata(own.join("a.txt")).unwrap();
    assert_eq!(meta.uid(), uid);
    assert_eq!(
        view.path(own.join("a.txt")).read_to_string().await.unwrap(),
        "as the user\n"
    );
    view.path(own.join("a.txt")).chmod(0o600).await.unwrap();
    let meta = std::fs::metadata(own.join("a.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    view.path(own.join("sub")).mkdir().await.unwrap();
    assert_eq!(std::fs::metadata(own.join("sub")).unwrap().uid(), uid);
    // The root-owned directory refuses the user (this process, root, could write there).
    let error = view
        .path(dir.path().join("b.txt"))
        .write("x")
        .await
        .unwrap_err();
    assert!(format!("{error}").contains("ermission"), "{error}");
    assert!(format!("{error}").contains("(sudo -u"), "{error}");
    assert!(!dir.path().join("b.txt").exists());
    // A temp dir is the user's.
    let temp = view.tempdir().await.unwrap();
    assert_eq!(std::fs::metadata(temp.path()).unwrap().uid(), uid);
    let temp_path = temp.path().as_path().to_owned();
    drop(temp);
    // An upload lands as the user's.
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), b"uploaded").unwrap();
    std::fs::set_permissions(source.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    view.upload(source.path(), own.join("up")).await.unwrap();
    let up = std::fs::metadata(own.join("up")).unwrap();
    assert_eq!((up.uid(), up.mode() & 0o7777), (uid, 0o640));
    assert_eq!(std::fs::read(own.join("up")).unwrap(), b"uploaded");
    // The view's sftp-server (and the sudo above it) end with the view, reaped.
    let servers = my_sftp_servers();
    assert!(!servers.is_empty(), "no sftp-server under this process");
    drop(view);
    let deadline = Instant::now() + Duration::from_secs(5);
    while servers
        .iter()
        .any(|pid| support::process_state(*pid).is_some())
    {
        assert!(
            Instant::now() < deadline,
            "still there: {:?}",
            servers
                .iter()
                .map(|pid| (pid, support::process_state(*pid)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A user sudo cannot become: sudo's reason, named.
    let error = local()
        .sudo_as("leadpipe-no-such-user")
        .path(&own)
        .metadata()
        .await
        .unwrap_err();
    let text = format!("{error}");
    assert!(text.contains("leadpipe-no-such-user"), "{text}");
    assert!(text.contains("sudo"), "{text}");
    assert!(my_sftp_servers().is_empty());
    // The dropped temp dir was removed (by the user, in the background).
    let deadline = Instant::now() + Duration::from_secs(5);
    while temp_path.exists() {
        assert!(Instant::now() < deadline, "{} stayed", temp_path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks for a name (echoed by a terminal) and a password (with echo off), on stdout and
/// stderr, then says what it read.
const TWO_PROMPTS: &str = "printf 'Your name? '; read -r name; \
    printf 'Pass' >&2; sleep 0.2; printf 'word: ' >&2; \
    stty -echo 2>/dev/null; read -r pw; stty echo 2>/dev/null; \
    echo; echo \"name=$name pw=$pw\" >&2";

#[tokio::test]
async fn a_responder_answers_two_prompts_as_they_stream() {
    capture_tracing();
    let answer = Secret::new("hunter2-answer");
    let local = local()
        .cmd("sh")
        .args(["-c", TWO_PROMPTS])
        .respond("Your name? ", "alice")
        .respond("Password: ", &answer);
    let output = local.output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Your name? \n");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "Password: name=alice pw=hunter2-answer\n"
    );
    let Some(sshd) = Sshd::start() else {
        return;
    };
    let machine = sshd.machine().await;
    // On a pty both prompts come on one stream; the name is echoed by the terminal, and
    // that echo is taken out again; the password is not echoed at all.
    let remote = machine
        .cmd("sh")
        .args([
            "-c",
            &TWO_PROMPTS.replace("name=$name pw=$pw", "name=$name pw-length=${#pw}"),
        ])
        .pty(true)
        .respond("Your name? ", "alice")
        .respond("Password: ", &answer);
    let text = remote.read().await.unwrap();
    assert_eq!(text, "Your name? Password: \r\nname=alice pw-length=14\r");
    assert_hidden("Display/Debug", &format!("{remote}\n{remote:?}"), "hunter2");
    assert_hidden("the tracing output", &traced(), "hunter2");
}

#[tokio::test]
async fn secrets_in_cmd_templates_pipelines_and_stdin_show_as_stars() {
    let secret = Secret::new("tpl-secret it's");
    let more = [Secret::new("tpl-one"), Secret::new("tpl-two")];
    let command = leadpipe::cmd!("printf %s,%s,%s {secret} {more...}");
    assert_eq!(command.to_string(), "printf %s,%s,%s '***' '***' '***'");
    assert_eq!(
        command.read().await.unwrap(),
        "tpl-secret it's,tpl-one,tpl-two"
    );
    let sh = local();
    let fed = (sh.cmd("cat") << &secret) | sh.cmd("cat");
    let fed = fed.env("LP_UNUSED", &secret);
    let shown = format!("{fed}\n{fed:?}");
    assert_hidden("a pipeline", &shown, "tpl-secret");
    assert_eq!(fed.read().await.unwrap(), "tpl-secret it's");
    assert_eq!(format!("{secret} {secret:?}"), "*** Secret(***)");
}

#[tokio::test]
async fn a_deadline_while_sudo_asks_leaves_no_sudo_behind() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let machine = sshd
        .builder(users.password)
        .sudo_password_with(|_| {
            std::thread::sleep(Duration::from_secs(2));
            Some(Secret::new(TEST_PASSWORD))
        })
        .connect()
        .await
        .unwrap();
    let started = Instant::now();
    let error = machine
        .sudo()
        .cmd("id")
        .timeout(Duration::from_millis(700))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // The answer comes later, into a start nobody waits for: that channel is ended.
    let deadline = Instant::now() + Duration::from_secs(8);
    while !sshd.pgrep("lp-sudo-").is_empty() {
        assert!(Instant::now() < deadline, "a sudo was left waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The password, asked once, serves the next command.
    assert_eq!(
        machine.sudo().cmd("id").arg("-u").read().await.unwrap(),
        "0"
    );
}

/// Sudo views against what the other tests leave out: user names a shell or sudo could
/// misread, a program that prints sudo's prompts and leadpipe's marker words, non-bash
/// login shells, the blocking API, a child dropped with its process running (as when
/// `main` returns), and the connection cut mid-call.
#[tokio::test]
async fn sudo_views_against_hostile_names_forged_prompts_other_shells_drops_and_cuts() {
    let Some((sshd, users)) = setup().await else {
        return;
    };
    let machine = with_password(&sshd, users.password, TEST_PASSWORD).await;
    for name in [
        "root -s", "-u", "a;id", "$(id)", "a b", "a\nb", "", "#", "root\0",
    ] {
        let error = machine.sudo_as(name).cmd("true").run().await.unwrap_err();
        assert!(matches!(error, Error::Sudo { .. }), "{name:?}: {error}");
    }

    // A program under sudo that prints prompts: its bytes come back as they were, its
    // status is its own, and nothing (no password) is written to its stdin.
    let root = machine.sudo();
    let script = "printf '[sudo] password for x: \\nCustom prompt for y: \\nlp-sudo-0123abcd:\\n'; \
                  printf 'lp-sudo-0123abcd:' >&2; read -r line; printf 'got:%s\\n' \"$line\"; exit 7";
    let output = root
        .cmd("sh")
        .args(["-c", script])
        .unchecked()
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "[sudo] password for x: \nCustom prompt for y: \nlp-sudo-0123abcd:\ngot:\n"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "lp-sudo-0123abcd:");

    // The blocking API.
    let blocking = root.clone();
    // A plain thread: no runtime of the caller's.
    let uid = std::thread::spawn(move || {
        use leadpipe::blocking::Wait;
        blocking.cmd("id").arg("-u").read().wait()
    })
    .join()
    .unwrap();
    assert_eq!(uid.unwrap(), "0");

    // A child dropped with its root process running: the process is stopped.
    let child = root.cmd("sleep").arg("33.25").spawn().await.unwrap();
    drop(child);
    wait_gone("33.25").await;

    // tcsh and fish logins become root alike.
    let rules: String = ["tcsh", "fish"]
        .iter()
        .filter_map(|shell| sshd.shell_user(shell))
        .map(|user| format!("{user} ALL=(ALL) NOPASSWD: ALL\n"))
        .collect();
    let rules_file = "/etc/sudoers.d/leadpipe-tests-shells";
    std::fs::write(rules_file, &rules).unwrap();
    std::fs::set_permissions(rules_file, std::fs::Permissions::from_mode(0o440)).unwrap();
    for user in rules.lines().filter_map(|l| l.split(' ').next()) {
        let login = sshd.login(user).await;
        let secret = Secret::new("a b'c$d");
        let said = login
            .sudo()
            .cmd("sh")
            .args(["-c", "printf '%s|%s' \"$(id -un)\" \"$LP_SECRET\""])
            .env("LP_SECRET", secret)
            .read()
            .await
            .unwrap();
        assert_eq!(said, "root|a b'c$d", "{user}");
    }

    // The connection cut while a root command runs: the call ends with ConnectionLost.
    let proxy = leadpipe_test_server::FaultProxy::start(([127, 0, 0, 1], sshd.port).into()).await;
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = std::fs::read_to_string(&sshd.known_hosts).unwrap().replace(
        &format!("[127.0.0.1]:{}", sshd.port),
        &format!("[127.0.0.1]:{}", proxy.addr().port()),
    );
    std::fs::write(dir.path().join("known_hosts"), known_hosts).unwrap();
    let cut = sshd
        .builder(users.password)
        .port(proxy.addr().port())
        .known_hosts(dir.path().join("known_hosts"))
        .sudo_password(Secret::new(TEST_PASSWORD))
        .connect()
        .await
        .unwrap();
    let call = tokio::spawn(async move { cut.sudo().cmd("sleep").arg("34.5").run().await });
    let started = Instant::now();
    while sshd.pgrep("sleep 34.5").is_empty() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    let error = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends soon after the cut")
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::ConnectionLost { .. }), "{error}");
}
