//! ssh_config end to end against a real OpenSSH sshd (tests/support/sshd.rs): `Match`
//! variants log in where `ssh` logs in, `HostKeyAlias` and `SetEnv` are honoured, and a
//! `ProxyCommand` leadpipe cannot run stops the connection before anything is dialled.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use leadpipe::{Error, SshMachine};
use support::sshd::Sshd;

/// Writes `text` as a config file next to the harness's files, with `{port}`, `{key}`,
/// `{known}` and `{user}` filled in.
fn config(sshd: &Sshd, name: &str, text: &str) -> PathBuf {
    let text = text
        .replace("{port}", &sshd.port.to_string())
        .replace("{key}", &sshd.client_key.display().to_string())
        .replace("{known}", &sshd.known_hosts.display().to_string())
        .replace("{user}", &sshd.user);
    let path = sshd.dir.path().join(name);
    fs::write(&path, text).unwrap();
    path
}

/// What `ssh -F file dest id -un` prints, or `None` when ssh could not log in.
fn openssh_login(file: &Path, dest: &str) -> Option<String> {
    let output = Command::new("ssh")
        .arg("-F")
        .arg(file)
        .args(["-o", "BatchMode=yes", dest, "id", "-un"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

const BASE: &str = "\
Host web
    HostName 127.0.0.1
    Port {port}
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known}
    GlobalKnownHostsFile /dev/null
";

#[tokio::test]
async fn match_user_and_exec_log_in_where_openssh_does() {
    let Some(sshd) = Sshd::start() else { return };
    let variants = [
        "Match originalhost web exec \"test %n = web && test %p = {port}\"\n    User {user}\n",
        "Match host 127.0.0.1 !exec false\n    User {user}\n",
        "Match final host 127.0.0.1\n    User {user}\n",
        "Match all\n    User {user}\nMatch user {user}\n    Port 1\n",
    ];
    for (index, variant) in variants.iter().enumerate() {
        let file = config(
            &sshd,
            &format!("config{index}"),
            &format!("{BASE}{variant}"),
        );
        let expected = openssh_login(&file, "web");
        assert_eq!(
            expected.as_deref(),
            Some(sshd.user.as_str()),
            "ssh with {variant}"
        );
        let machine = SshMachine::builder("web")
            .ssh_config(Some(file))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{variant}: {e}\n{}", sshd.log_text()));
        let user = machine.cmd("id").arg("-un").read().await.unwrap();
        assert_eq!(Some(user), expected, "{variant}");
    }
}

#[tokio::test]
async fn host_key_alias_names_the_known_hosts_entry() {
    let Some(sshd) = Sshd::start() else { return };
    let line = fs::read_to_string(&sshd.known_hosts).unwrap();
    let key = line.split_once(' ').unwrap().1;
    let aliased = sshd.dir.path().join("aliased_known_hosts");
    fs::write(&aliased, format!("web-alias {key}")).unwrap();
    let text = BASE.replace("{known}", &aliased.display().to_string())
        + "    User {user}\n    StrictHostKeyChecking yes\n";
    let without = config(&sshd, "no_alias", &text);
    let with = config(
        &sshd,
        "alias",
        &format!("{text}    HostKeyAlias Web-Alias\n"),
    );
    assert_eq!(openssh_login(&without, "web"), None);
    assert_eq!(
        openssh_login(&with, "web").as_deref(),
        Some(sshd.user.as_str())
    );
    let refused = SshMachine::builder("web")
        .ssh_config(Some(without))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::HostKey { .. }), "{refused}");
    let machine = SshMachine::builder("web")
        .ssh_config(Some(with))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        machine.cmd("id").arg("-un").read().await.unwrap(),
        sshd.user
    );
}

#[tokio::test]
async fn set_env_reaches_every_command() {
    let Some(sshd) = Sshd::start() else { return };
    let file = config(
        &sshd,
        "setenv",
        &format!("{BASE}    User {{user}}\n    SetEnv LEADPIPE_FROM_CONFIG=\"a b\" OTHER=2\n"),
    );
    let machine = SshMachine::builder("web")
        .ssh_config(Some(file))
        .connect()
        .await
        .unwrap();
    let value = machine
        .cmd("printenv")
        .arg("LEADPIPE_FROM_CONFIG")
        .read()
        .await
        .unwrap();
    assert_eq!(value, "a b");
}

#[tokio::test]
async fn a_proxy_command_stops_the_connection_before_anything_is_dialled() {
    let Some(sshd) = Sshd::start() else { return };
    let empty = sshd.dir.path().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let text = BASE.replace("{known}", &empty.display().to_string())
        + "    User {user}\n    StrictHostKeyChecking accept-new\n    ProxyCommand socat - TCP:bastion.invalid:22\n";
    let file = config(&sshd, "proxy", &text);
    let error = SshMachine::builder("web")
        .ssh_config(Some(file.clone()))
        .connect()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&format!("{}:10:", file.display())), "{text}");
    assert!(text.contains("ProxyCommand"), "{text}");
    // The server that the direct route reaches was not trusted behind the config's back.
    assert_eq!(fs::read_to_string(&empty).unwrap(), "");
}

#[tokio::test]
async fn connection_attempts_retry_a_refused_connection() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    for (attempts, at_least) in [(1, Duration::ZERO), (2, Duration::from_secs(1))] {
        let file = dir.path().join(format!("config{attempts}"));
        fs::write(
            &file,
            format!("Host closed\n  HostName 127.0.0.1\n  Port {port}\n  ConnectionAttempts {attempts}\n"),
        )
        .unwrap();
        let started = Instant::now();
        let error = SshMachine::builder("closed")
            .ssh_config(Some(file))
            .connect()
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(error, Error::Connect { .. }), "{error}");
        assert!(took >= at_least, "{attempts} attempts took {took:?}");
        assert!(
            took < at_least + Duration::from_millis(900),
            "{attempts} attempts took {took:?}"
        );
    }
}
