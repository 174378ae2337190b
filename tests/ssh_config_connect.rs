//! ssh_config end to end against a real OpenSSH sshd (tests/support/sshd.rs): `Match`
//! variants log in where `ssh` logs in; `HostKeyAlias`, `SetEnv`, `SendEnv`, `CheckHostIP`,
//! `ConnectionAttempts` and `ProxyCommand` (through `socat` and `ssh -W`, the child
//! reaped on drop) are honoured.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use leadpipe::{Error, HostKeyProblem, SshMachine};
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
async fn send_env_passes_the_local_variables_it_names_and_set_env_wins() {
    let Some(sshd) = Sshd::start() else { return };
    // Set by cargo for the tests; the harness's sshd accepts only LEADPIPE_* env requests.
    let local = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let file = config(
        &sshd,
        "sendenv",
        &format!(
            "{BASE}    User {{user}}\n    SendEnv CARGO_MANIFEST_* CARGO_PKG_NAME\n    \
             SetEnv CARGO_PKG_NAME=from-setenv\n"
        ),
    );
    let machine = SshMachine::builder("web")
        .ssh_config(Some(file))
        .connect()
        .await
        .unwrap();
    let printenv = async |name: &str| machine.cmd("printenv").arg(name).read().await;
    assert_eq!(printenv("CARGO_MANIFEST_DIR").await.unwrap(), local);
    assert_eq!(printenv("CARGO_PKG_NAME").await.unwrap(), "from-setenv");
    // Without SendEnv nothing local is passed.
    let file = config(&sshd, "nosendenv", &format!("{BASE}    User {{user}}\n"));
    let machine = SshMachine::builder("web")
        .ssh_config(Some(file))
        .connect()
        .await
        .unwrap();
    assert!(
        machine
            .cmd("printenv")
            .arg("CARGO_MANIFEST_DIR")
            .read()
            .await
            .is_err()
    );
}

/// A non-loopback address of this machine (`hostname -I`), where CheckHostIP applies.
fn outside_address() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| !a.is_loopback())
        })
        .map(str::to_owned)
}

#[tokio::test]
async fn check_host_ip_records_the_address_and_refuses_it_listing_another_key() {
    let Some(address) = outside_address() else {
        eprintln!("skipped: no non-loopback IPv4 address");
        return;
    };
    let listen = format!("ListenAddress {address}");
    let Some(sshd) = Sshd::start_with(&[&listen]) else {
        return;
    };
    // The address as one number, which the resolver turns into the address: for leadpipe
    // a name (not an address as written), so the address connected to is checked, with
    // no /etc/hosts entry. (`ssh` itself reads this form as the address, so it cannot be
    // compared here; the refusal below is the one `ssh` prints as "the host key for ...
    // differs from the key for the IP address".)
    let numeric: u32 = address.parse::<std::net::Ipv4Addr>().unwrap().into();
    let known = sshd.dir.path().join("known_hosts_ip");
    let line = fs::read_to_string(&sshd.known_hosts).unwrap();
    let key = line.split_once(' ').unwrap().1.trim().to_owned();
    fs::write(&known, format!("[{numeric}]:{} {key}\n", sshd.port)).unwrap();
    let file = config(
        &sshd,
        "checkhostip",
        &format!(
            "Host web\n    HostName {numeric}\n    Port {{port}}\n    User {{user}}\n    \
             IdentityFile {{key}}\n    UserKnownHostsFile {}\n    \
             GlobalKnownHostsFile /dev/null\n    CheckHostIP yes\n",
            known.display()
        ),
    );
    let machine = SshMachine::builder("web")
        .ssh_config(Some(file.clone()))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_text()));
    assert_eq!(machine.cmd("echo").arg("ok").read().await.unwrap(), "ok");
    // The address's entry was added, as ssh adds it.
    let recorded = fs::read_to_string(&known).unwrap();
    assert!(
        recorded.contains(&format!("[{address}]:{} {key}", sshd.port)),
        "{recorded}"
    );
    // The address listing another key: refused, naming it.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMjhWeb0/nh+pF88fiwvI39dFP8NLYgLbqVG7L1Z0HXX";
    fs::write(
        &known,
        format!(
            "[{numeric}]:{port} {key}\n[{address}]:{port} {other}\n",
            port = sshd.port
        ),
    )
    .unwrap();
    let error = SshMachine::builder("web")
        .ssh_config(Some(file.clone()))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::HostKey {
                problem: HostKeyProblem::Changed,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains(&format!("IP address {address}")),
        "{error}"
    );
    // Without CheckHostIP (OpenSSH's default) the address is not looked at.
    let text = fs::read_to_string(&file)
        .unwrap()
        .replace("CheckHostIP yes", "");
    let without = config(&sshd, "nocheckhostip", &text);
    SshMachine::builder("web")
        .ssh_config(Some(without))
        .connect()
        .await
        .unwrap();
}

/// Whether process `pid` still exists (a zombie, unreaped, still does).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pids whose command line contains `pattern`.
fn pgrep(pattern: &str) -> Vec<u32> {
    let output = Command::new("pgrep")
        .args(["-f", "--"])
        .arg(pattern)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn proxy_command_reaches_a_host_only_through_the_proxy_and_is_reaped() {
    let Some(sshd) = Sshd::start() else { return };
    if Command::new("socat").arg("-V").output().is_err() {
        eprintln!("skipped: socat is not installed");
        return;
    }
    // The host name does not resolve: only the proxy can reach the server.
    let line = fs::read_to_string(&sshd.known_hosts).unwrap();
    let key = line.split_once(' ').unwrap().1;
    let known = sshd.dir.path().join("proxied_known_hosts");
    fs::write(&known, format!("[unreachable.invalid]:{} {key}", sshd.port)).unwrap();
    let proxies = [
        "ProxyCommand socat - TCP:127.0.0.1:%p".to_owned(),
        // After the connection it sleeps on in the same process: only a kill ends it.
        "ProxyCommand sh -c 'socat - TCP:127.0.0.1:%p; exec sleep 1000'".to_owned(),
        format!(
            "ProxyCommand ssh -F {} -W 127.0.0.1:%p harness",
            sshd.ssh_config().display()
        ),
    ];
    for proxy in proxies {
        let text = format!(
            "Host web\n    HostName unreachable.invalid\n    Port {{port}}\n    User {{user}}\n\
             \x20   IdentityFile {{key}}\n    IdentitiesOnly yes\n    UserKnownHostsFile {}\n\
             \x20   GlobalKnownHostsFile /dev/null\n    {proxy}\n",
            known.display()
        );
        let file = config(&sshd, "proxied", &text);
        assert_eq!(
            openssh_login(&file, "web").as_deref(),
            Some(sshd.user.as_str()),
            "ssh with {proxy}"
        );
        let machine = SshMachine::builder("web")
            .ssh_config(Some(file))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{proxy}: {e}\n{}", sshd.log_text()));
        let clone = machine.clone();
        assert_eq!(clone.cmd("id").arg("-un").read().await.unwrap(), sshd.user);
        let pattern = proxy
            .trim_start_matches("ProxyCommand ")
            .replace('\'', "")
            .replace("%p", &sshd.port.to_string());
        let pids = pgrep(&pattern);
        assert_eq!(pids.len(), 1, "one proxy for {proxy}: {pids:?}");
        drop(machine);
        assert!(exists(pids[0]), "the proxy lives while a clone does");
        drop(clone);
        let deadline = Instant::now() + Duration::from_secs(5);
        while exists(pids[0]) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !exists(pids[0]),
            "{proxy}: the proxy was neither killed nor reaped"
        );
    }
}

#[tokio::test]
async fn a_proxy_command_that_fails_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    fs::write(
        &file,
        "Host web\n  ProxyCommand exit 3\n  ConnectTimeout 5\n",
    )
    .unwrap();
    let error = SshMachine::builder("web")
        .ssh_config(Some(file))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
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

#[tokio::test]
async fn cipher_lists_are_applied_to_the_handshake() {
    let Some(sshd) = Sshd::start_with(&["Ciphers aes256-ctr"]) else {
        return;
    };
    let with = |ciphers: &str| {
        config(
            &sshd,
            "ciphers",
            &format!("{BASE}    User {{user}}\n    Ciphers {ciphers}\n"),
        )
    };
    let machine = SshMachine::builder("web")
        .ssh_config(Some(with("aes256-ctr,aes128-ctr")))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_text()));
    assert_eq!(
        machine.cmd("id").arg("-un").read().await.unwrap(),
        sshd.user
    );
    // Only a cipher this server refuses: the handshake fails, as with ssh.
    let file = with("aes128-ctr");
    assert_eq!(openssh_login(&file, "web"), None);
    let error = SshMachine::builder("web")
        .ssh_config(Some(file))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    // Nothing leadpipe supports: refused before dialling, naming the keyword.
    let error = SshMachine::builder("web")
        .ssh_config(Some(with("aes128-cbc")))
        .connect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Ciphers \"aes128-cbc\" leaves none"),
        "{error}"
    );
}
