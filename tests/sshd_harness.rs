//! Checks of the sshd test harness (tests/support/sshd.rs) with the OpenSSH client: logins
//! by key, passphrase and password, MaxSessions, finding and cleaning up remote processes,
//! and independent servers side by side. Each test skips (one line on stderr) where sshd is
//! not installed, and fails where `CI=true`.

mod support;

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Output, Stdio},
    time::{Duration, Instant},
};

use support::sshd::Sshd;

/// `ssh -F <the harness's client config>`, with no stdin.
fn ssh(sshd: &Sshd) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.arg("-F").arg(sshd.ssh_config()).stdin(Stdio::null());
    ssh
}

/// `ssh` to this server without its client config: only the known_hosts, as `user`.
fn bare_ssh(sshd: &Sshd, user: &str) -> Command {
    let mut ssh = Command::new("ssh");
    ssh.arg("-p")
        .arg(sshd.port.to_string())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "IdentitiesOnly=yes"])
        .args(["-o", "NumberOfPasswordPrompts=1"])
        .args(["-o", "ConnectTimeout=10"])
        .arg("-l")
        .arg(user)
        .stdin(Stdio::null());
    ssh
}

fn run(command: &mut Command) -> Output {
    command.output().expect("ssh runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `command`, expects success and returns its trimmed stdout.
fn ok(sshd: &Sshd, command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nsshd log:\n{}",
        stderr(&output),
        sshd.log_text()
    );
    stdout(&output)
}

/// An SSH_ASKPASS program that answers `answer` and counts its calls in `<path>.calls`.
fn askpass(sshd: &Sshd, name: &str, answer: &str) -> PathBuf {
    let path = sshd.dir.path().join(name);
    fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}.calls'\nprintf '%s\\n' '{answer}'\n",
            path.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn askpass_calls(askpass: &Path) -> usize {
    fs::read_to_string(format!("{}.calls", askpass.display()))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

fn with_askpass<'a>(command: &'a mut Command, askpass: &Path) -> &'a mut Command {
    command
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env_remove("DISPLAY")
        .args(["-o", "BatchMode=no"])
}

fn accepted_logins(sshd: &Sshd) -> usize {
    sshd.log_text()
        .lines()
        .filter(|line| line.starts_with("Accepted "))
        .count()
}

fn fingerprint(public_key: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

fn public_key(private_key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", private_key.display()))
}

/// Waits up to 10 s for `condition`.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (by its pid) and reaped when the test ends, even by panic.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_plain_key_logs_in_the_user_and_root_and_the_host_key_is_the_known_one() {
    let Some(sshd) = Sshd::start() else { return };
    assert_eq!(sshd.host, "127.0.0.1");
    assert_eq!(ok(&sshd, ssh(&sshd).args(["harness", "id -un"])), sshd.user);
    if sshd.privileged {
        assert_eq!(sshd.user, support::sshd::TEST_USER);
        assert_eq!(
            ok(&sshd, ssh(&sshd).args(["harness-root", "id -un"])),
            "root"
        );
    }

    let known = fs::read_to_string(&sshd.known_hosts).unwrap();
    assert!(
        known.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 AAAA", sshd.port)),
        "{known}"
    );
    assert_eq!(known.lines().count(), 1, "{known}");
    // The client's own view of the key it verified against known_hosts.
    let output = run(ssh(&sshd).args(["-o", "LogLevel=DEBUG", "harness", "true"]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(sshd.host_key_fingerprint.starts_with("SHA256:"));
    assert!(
        stderr(&output).contains(&format!(
            "Server host key: ssh-ed25519 {}",
            sshd.host_key_fingerprint
        )),
        "{}",
        stderr(&output)
    );
    let key = fingerprint(&public_key(&sshd.client_key));
    assert!(
        sshd.log_text().contains(&format!(
            "Accepted publickey for {} from 127.0.0.1",
            sshd.user
        )) && sshd.log_text().contains(&key),
        "{}",
        sshd.log_text()
    );
}

#[test]
fn the_encrypted_key_needs_its_passphrase_and_the_rsa_key_is_accepted() {
    let Some(sshd) = Sshd::start() else { return };
    let encrypted = || {
        let mut ssh = bare_ssh(&sshd, &sshd.user);
        ssh.arg("-i").arg(&sshd.client_key_encrypted);
        ssh
    };
    // Without the passphrase (batch mode: no prompt) the key is useless: it is encrypted.
    let output = run(encrypted().args(["-o", "BatchMode=yes", "127.0.0.1", "id -un"]));
    assert!(!output.status.success(), "logged in without the passphrase");

    let askpass = askpass(&sshd, "askpass-passphrase", sshd.passphrase);
    assert_eq!(
        ok(
            &sshd,
            with_askpass(&mut encrypted(), &askpass).args(["127.0.0.1", "id -un"])
        ),
        sshd.user
    );
    assert_eq!(askpass_calls(&askpass), 1);
    let key = fingerprint(&public_key(&sshd.client_key_encrypted));
    assert!(
        sshd.log_text()
            .lines()
            .any(|l| l.starts_with("Accepted publickey") && l.ends_with(&format!("ED25519 {key}"))),
        "{}",
        sshd.log_text()
    );

    let mut rsa = bare_ssh(&sshd, &sshd.user);
    rsa.args(["-o", "BatchMode=yes", "-i"])
        .arg(&sshd.client_key_rsa)
        .args(["127.0.0.1", "id -un"]);
    assert_eq!(ok(&sshd, &mut rsa), sshd.user);
    let key = fingerprint(&public_key(&sshd.client_key_rsa));
    assert!(
        sshd.log_text()
            .lines()
            .any(|l| l.starts_with("Accepted publickey") && l.ends_with(&format!("RSA {key}"))),
        "{}",
        sshd.log_text()
    );
}

#[test]
fn the_password_logs_in_the_user_but_never_root() {
    let Some(sshd) = Sshd::start() else { return };
    if !sshd.privileged {
        eprintln!("skipped: password logins need the tests to run as root");
        return;
    }
    let password_only = |user: &str, askpass: &Path| {
        let mut ssh = bare_ssh(&sshd, user);
        ssh.args(["-o", "PubkeyAuthentication=no"])
            .args(["-o", "PreferredAuthentications=password"]);
        with_askpass(&mut ssh, askpass).args(["127.0.0.1", "id -un"]);
        ssh
    };
    let right = askpass(&sshd, "askpass-right", sshd.password);
    assert_eq!(ok(&sshd, &mut password_only(&sshd.user, &right)), sshd.user);
    assert_eq!(askpass_calls(&right), 1);
    assert!(
        sshd.log_text()
            .contains(&format!("Accepted password for {}", sshd.user)),
        "{}",
        sshd.log_text()
    );

    let wrong = askpass(&sshd, "askpass-wrong", "not-the-password");
    let output = run(&mut password_only(&sshd.user, &wrong));
    assert!(!output.status.success(), "a wrong password was accepted");
    assert!(
        stderr(&output).contains("Permission denied"),
        "{}",
        stderr(&output)
    );

    // keyboard-interactive is offered, but with UsePAM no sshd has no device behind it: it
    // never asks anything and never lets anyone in.
    let kbd = askpass(&sshd, "askpass-kbd", sshd.password);
    let mut ssh = bare_ssh(&sshd, &sshd.user);
    ssh.args(["-o", "PubkeyAuthentication=no"])
        .args(["-o", "PreferredAuthentications=keyboard-interactive"]);
    let output = run(with_askpass(&mut ssh, &kbd).args(["127.0.0.1", "id -un"]));
    assert!(!output.status.success(), "keyboard-interactive let us in");
    assert!(
        stderr(&output).contains("keyboard-interactive"),
        "{}",
        stderr(&output)
    );
    assert_eq!(askpass_calls(&kbd), 0);

    // Root: a password is asked for and refused. We do not know (or touch) root's password,
    // so the refusal alone would prove little; sshd's effective configuration says why.
    let root = askpass(&sshd, "askpass-root", sshd.password);
    let output = run(&mut password_only("root", &root));
    assert!(!output.status.success(), "root logged in by password");
    assert!(
        stderr(&output).contains("Permission denied"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        askpass_calls(&root),
        1,
        "the client never offered a password"
    );
    let effective = Command::new(support::sshd::SSHD)
        .arg("-T")
        .arg("-f")
        .arg(sshd.dir.path().join("sshd_config"))
        .output()
        .unwrap();
    let effective = String::from_utf8_lossy(&effective.stdout).into_owned();
    for line in [
        "permitrootlogin without-password",
        "passwordauthentication yes",
        "usepam no",
        "maxsessions 10",
    ] {
        assert!(
            effective.lines().any(|l| l == line),
            "no {line:?} in\n{effective}"
        );
    }
}

#[test]
fn extra_config_overrides_the_defaults_and_match_blocks_go_last() {
    let Some(sshd) = Sshd::start_with(&[
        "PasswordAuthentication no",
        "Match User root",
        "    ForceCommand echo forced-for-root",
    ]) else {
        return;
    };
    assert_eq!(ok(&sshd, ssh(&sshd).args(["harness", "id -un"])), sshd.user);
    if !sshd.privileged {
        return;
    }
    assert_eq!(
        ok(&sshd, ssh(&sshd).args(["harness-root", "id -un"])),
        "forced-for-root"
    );
    let askpass = askpass(&sshd, "askpass", sshd.password);
    let mut ssh = bare_ssh(&sshd, &sshd.user);
    ssh.args(["-o", "PubkeyAuthentication=no"]);
    with_askpass(&mut ssh, &askpass).args(["127.0.0.1", "id -un"]);
    let output = run(&mut ssh);
    assert!(
        !output.status.success(),
        "password login with PasswordAuthentication no"
    );
    assert_eq!(
        askpass_calls(&askpass),
        0,
        "the server offered password logins"
    );
}

/// Opens one ControlMaster connection and `n` concurrent sessions through it; returns the
/// stderr of the sessions that failed. Every session prints `started` and then waits for a
/// file, which is created only once each session has either printed `started` or ended: so
/// the sessions that succeed were all open at the same time, for certain, not by timing.
/// `ProxyCommand=false` takes away the client's fallback to a fresh connection when the
/// master's session request is refused (which would make every session succeed), and the
/// server log must show no new login.
fn sessions_over_one_connection(sshd: &Sshd, n: usize) -> Vec<String> {
    let socket = sshd.dir.path().join("cm");
    let _master = Reaped(
        ssh(sshd)
            .args(["-N", "-o", "ControlMaster=yes", "-o"])
            .arg(format!("ControlPath={}", socket.display()))
            .arg("harness")
            .spawn()
            .unwrap(),
    );
    eventually("the control master", || {
        ssh(sshd)
            .arg("-o")
            .arg(format!("ControlPath={}", socket.display()))
            .args(["-O", "check", "harness"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    });
    let logins = accepted_logins(sshd);
    let go = sshd.dir.path().join("go");
    let script = format!(
        "echo started; while [ ! -e {} ]; do sleep 0.05; done; echo ok",
        go.display()
    );
    let mut sessions: Vec<(Reaped, BufReader<ChildStdout>)> = (0..n)
        .map(|_| {
            let mut child = ssh(sshd)
                .args(["-o", "ControlMaster=no", "-o", "ProxyCommand=false", "-o"])
                .arg(format!("ControlPath={}", socket.display()))
                .arg("harness")
                .arg(&script)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            (Reaped(child), stdout)
        })
        .collect();
    // Blocks until that session runs (it then waits for `go`) or has ended (end of file).
    let mut started = 0;
    for (_, stdout) in &mut sessions {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line == "started\n" {
            started += 1;
        }
    }
    fs::write(&go, "").unwrap();
    let mut failures = Vec::new();
    let mut succeeded = 0;
    for (session, stdout) in &mut sessions {
        let child = &mut session.0;
        let mut out = String::new();
        let mut err = String::new();
        stdout.read_to_string(&mut out).unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        if child.wait().unwrap().success() {
            assert_eq!(out, "ok\n");
            succeeded += 1;
        } else {
            failures.push(err);
        }
    }
    assert_eq!(succeeded, started);
    assert_eq!(succeeded + failures.len(), n);
    assert_eq!(
        accepted_logins(sshd),
        logins,
        "a session made its own connection"
    );
    failures
}

#[test]
fn max_sessions_is_openssh_default_of_ten_per_connection() {
    let Some(sshd) = Sshd::start() else { return };
    let failures = sessions_over_one_connection(&sshd, 11);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("refused"), "{failures:?}");
}

#[test]
fn start_with_sets_max_sessions() {
    let Some(sshd) = Sshd::start_with(&["MaxSessions 2"]) else {
        return;
    };
    let failures = sessions_over_one_connection(&sshd, 3);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("refused"), "{failures:?}");
}

/// The parent pid of a process, from /proc.
fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Live processes anywhere whose environment says a session on 127.0.0.1:`port` started
/// them, with their command lines.
fn processes_of_sessions_on(port: u16) -> Vec<(u32, String)> {
    let marker = format!(" 127.0.0.1 {port}");
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| !matches!(support::process_state(pid), None | Some('Z') | Some('X')))
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0).any(|var| {
                    var.starts_with(b"SSH_CONNECTION=")
                        && String::from_utf8_lossy(var).ends_with(&marker)
                })
            })
        })
        .map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            (pid, String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .collect()
}

#[test]
fn pgrep_finds_remote_processes_and_drop_leaves_none_behind() {
    let Some(sshd) = Sshd::start() else { return };
    // One in a live session, and one left behind by a session that has ended (re-parented
    // away from sshd, found by its environment).
    let client = Reaped(
        ssh(&sshd)
            .args(["harness", "sleep 1234"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    ok(
        &sshd,
        ssh(&sshd).args(["harness", "setsid sleep 1235 </dev/null >/dev/null 2>&1 &"]),
    );
    // And one that keeps forking, left behind the same way.
    ok(
        &sshd,
        ssh(&sshd).args([
            "harness",
            "setsid sh -c 'while :; do sleep 0.01; done' </dev/null >/dev/null 2>&1 &",
        ]),
    );
    eventually("sleep 1234 on the server", || {
        !sshd.pgrep("sleep 1234").is_empty()
    });
    eventually("sleep 1235 on the server", || {
        !sshd.pgrep("sleep 1235").is_empty()
    });
    let in_session = sshd.pgrep("sleep 1234");
    assert!(
        !in_session.contains(&client.0.id()),
        "pgrep counted the local ssh client"
    );
    let left_behind = sshd.pgrep("sleep 1235");
    assert_eq!(left_behind.len(), 1, "{left_behind:?}");
    eventually("the fork loop on the server", || {
        !sshd.pgrep("while :; do sleep 0.01").is_empty()
    });
    assert!(sshd.pgrep("no such command line anywhere").is_empty());
    // Not a descendant of sshd any more: only its environment ties it to this server.
    let tree = sshd.pgrep("");
    let parent = parent(left_behind[0]).unwrap();
    assert!(
        parent != sshd.pid() && !tree.contains(&parent),
        "sleep 1235 still hangs off sshd (parent {parent})"
    );

    // Every process of the server (the empty pattern matches them all), and the listener.
    let mut all = sshd.pgrep("");
    assert!(all.len() >= 4, "{all:?}");
    all.push(sshd.pid());
    let dir = sshd.dir.path().to_owned();
    let port = sshd.port;
    let started = Instant::now();
    drop(sshd);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "drop took {took:?}");
    // Checked without the harness: nothing with this server's SSH_CONNECTION lives on,
    // not even after a while (the fork loop would have made new ones).
    for _ in 0..2 {
        let survivors = processes_of_sessions_on(port);
        assert!(survivors.is_empty(), "left behind: {survivors:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for pid in all {
        let state = support::process_state(pid);
        assert!(
            matches!(state, None | Some('Z') | Some('X')),
            "process {pid} survived the harness: state {state:?}"
        );
    }
    assert!(!dir.exists(), "{} is still there", dir.display());
    // The client notices its connection is gone.
    let mut client = client;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the ssh client still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_harnesses_at_once_are_independent() {
    let (Some(a), Some(b)) = (Sshd::start(), Sshd::start()) else {
        return;
    };
    assert_ne!(a.port, b.port);
    assert_ne!(a.dir.path(), b.dir.path());
    assert_ne!(a.host_key_fingerprint, b.host_key_fingerprint);
    assert_eq!(ok(&a, ssh(&a).args(["harness", "id -un"])), a.user);
    assert_eq!(ok(&b, ssh(&b).args(["harness", "id -un"])), b.user);

    // A's client config does not trust B: different host keys.
    let output = run(ssh(&a)
        .arg("-o")
        .arg(format!("HostKeyAlias=[127.0.0.1]:{}", a.port))
        .args(["-p", &b.port.to_string(), "harness", "true"]));
    assert!(!output.status.success(), "a's known_hosts accepted b");
    assert!(
        stderr(&output).contains("Host key verification failed"),
        "{}",
        stderr(&output)
    );

    ok(
        &a,
        ssh(&a).args(["harness", "setsid sleep 1236 </dev/null >/dev/null 2>&1 &"]),
    );
    eventually("sleep 1236 on a", || !a.pgrep("sleep 1236").is_empty());
    assert!(b.pgrep("sleep 1236").is_empty(), "b sees a's process");
    let pids = a.pgrep("sleep 1236");
    drop(a);
    for pid in pids {
        assert!(matches!(
            support::process_state(pid),
            None | Some('Z') | Some('X')
        ));
    }
    // b is untouched by a's end.
    assert_eq!(ok(&b, ssh(&b).args(["harness", "id -un"])), b.user);
}

#[test]
fn a_server_that_cannot_start_says_why() {
    if !Path::new(support::sshd::SSHD).exists() {
        return;
    }
    let Err(error) = Sshd::try_start(&["NoSuchKeyword yes"]) else {
        panic!("sshd started with a bad config");
    };
    assert!(
        error.contains("Bad configuration option: NoSuchKeyword"),
        "{error}"
    );
}
