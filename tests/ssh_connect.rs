//! Connecting an `SshMachine` to a real OpenSSH sshd (tests/support/sshd.rs): host keys
//! and their policies, every way of logging in, ssh_config files, ProxyJump, destination
//! parsing, and secrets kept out of every text.

mod support;

use std::{fs, path::Path};

use leadpipe::{Error, HostKeyPolicy, HostKeyProblem, SshMachine};
use support::sshd::{Sshd, unix_name};

async fn whoami(remote: &SshMachine) -> String {
    remote.cmd("id").arg("-un").read().await.unwrap()
}

fn must<T>(sshd: &Sshd, result: leadpipe::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log_text()))
}

/// The harness's known_hosts line for `sshd`, without its newline.
fn host_line(sshd: &Sshd) -> String {
    fs::read_to_string(&sshd.known_hosts)
        .unwrap()
        .trim_end()
        .to_owned()
}

/// Whatever the error says, in either form.
fn texts(error: &Error) -> String {
    format!("{error}\n{error:?}")
}

#[tokio::test]
async fn an_unknown_host_is_refused_with_its_fingerprint() {
    let Some(sshd) = Sshd::start() else { return };
    let empty = sshd.dir.path().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    for known_hosts in [empty.clone(), sshd.dir.path().join("no_such_file")] {
        let error = SshMachine::builder(&sshd.host)
            .port(sshd.port)
            .user(&sshd.user)
            .identity_file(&sshd.client_key)
            .known_hosts(&known_hosts)
            .ssh_config(None)
            .connect()
            .await
            .unwrap_err();
        let Error::HostKey {
            host,
            reason,
            problem,
            fingerprint,
            ..
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!(host, &format!("[127.0.0.1]:{}", sshd.port));
        assert_eq!(problem, &HostKeyProblem::Unknown);
        assert_eq!(fingerprint.as_ref(), Some(&sshd.host_key_fingerprint));
        assert!(reason.contains(&sshd.host_key_fingerprint), "{reason}");
        assert!(
            reason.contains(&known_hosts.display().to_string()),
            "{reason}"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("host key of [127.0.0.1]:{} refused: ", sshd.port)),
            "{error}"
        );
        assert!(
            error.to_string().contains(&sshd.host_key_fingerprint),
            "{error}"
        );
    }
    assert_eq!(
        fs::read_to_string(&empty).unwrap(),
        "",
        "Strict adds nothing"
    );
    // Nothing got as far as logging in.
    assert!(!sshd.log_text().contains("Accepted publickey"));
}

#[tokio::test]
async fn accept_new_adds_the_key_and_the_next_connection_is_strict() {
    let Some(sshd) = Sshd::start() else { return };
    let file = sshd.dir.path().join("new_known_hosts");
    fs::write(&file, "").unwrap();
    let connect = |policy: HostKeyPolicy| {
        SshMachine::builder(&sshd.host)
            .port(sshd.port)
            .user(&sshd.user)
            .identity_file(&sshd.client_key)
            .known_hosts(&file)
            .host_key_policy(policy)
            .ssh_config(None)
            .connect()
    };
    let remote = must(&sshd, connect(HostKeyPolicy::AcceptNew).await);
    assert_eq!(whoami(&remote).await, sshd.user);
    let text = fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [host_line(&sshd)],
        "one line, as the harness wrote it"
    );
    assert!(text.ends_with('\n'));
    // The key is known now: Strict connects, and AcceptNew does not add it twice.
    let strict = must(&sshd, connect(HostKeyPolicy::Strict).await);
    assert_eq!(whoami(&strict).await, sshd.user);
    must(&sshd, connect(HostKeyPolicy::AcceptNew).await);
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
    // A file that did not exist is created.
    let created = sshd.dir.path().join("created_known_hosts");
    must(
        &sshd,
        SshMachine::builder(&sshd.host)
            .port(sshd.port)
            .user(&sshd.user)
            .identity_file(&sshd.client_key)
            .known_hosts(&created)
            .host_key_policy(HostKeyPolicy::AcceptNew)
            .ssh_config(None)
            .connect()
            .await,
    );
    assert_eq!(fs::read_to_string(&created).unwrap(), text);
}

#[tokio::test]
async fn a_changed_host_key_is_refused_naming_file_and_line() {
    let Some(sshd) = Sshd::start() else { return };
    let Some(other) = Sshd::start() else { return };
    // The other server's key, listed for this server's address, on line 3.
    let other_key = host_line(&other).replace(
        &format!("[127.0.0.1]:{}", other.port),
        &format!("[127.0.0.1]:{}", sshd.port),
    );
    let file = sshd.dir.path().join("changed_known_hosts");
    fs::write(
        &file,
        format!("# a comment\nsomewhere.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKkPDsWJwt9fMa9nWpnuUeBPtmrbBmmTRYKEp0EBfyPz\n{other_key}\n"),
    )
    .unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let error = SshMachine::builder(&sshd.host)
            .port(sshd.port)
            .user(&sshd.user)
            .identity_file(&sshd.client_key)
            .known_hosts(&file)
            .host_key_policy(policy)
            .ssh_config(None)
            .connect()
            .await
            .unwrap_err();
        let Error::HostKey {
            host,
            reason,
            problem,
            ..
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!(host, &format!("[127.0.0.1]:{}", sshd.port));
        assert_eq!(problem, &HostKeyProblem::Changed, "{policy:?}");
        assert!(
            reason.contains(&format!("{} line 3", file.display())),
            "{policy:?}: {reason}"
        );
        assert!(reason.contains(&sshd.host_key_fingerprint), "{reason}");
        assert!(reason.contains("CHANGED"), "{reason}");
    }
    assert_eq!(
        fs::read_to_string(&file).unwrap().lines().count(),
        3,
        "AcceptNew does not add a changed key"
    );
    // AcceptAny connects whatever known_hosts says, or without one.
    for known_hosts in [file.clone(), sshd.dir.path().join("no_such_file")] {
        let remote = must(
            &sshd,
            SshMachine::builder(&sshd.host)
                .port(sshd.port)
                .user(&sshd.user)
                .identity_file(&sshd.client_key)
                .known_hosts(&known_hosts)
                .host_key_policy(HostKeyPolicy::AcceptAny)
                .ssh_config(None)
                .connect()
                .await,
        );
        assert_eq!(whoami(&remote).await, sshd.user);
    }
    assert!(!sshd.dir.path().join("no_such_file").exists());
}

#[tokio::test]
async fn keys_of_every_kind_log_in() {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let remote = must(&sshd, sshd.builder(&user).connect().await);
        assert_eq!(whoami(&remote).await, unix_name(&user));
        assert_eq!(remote.name(), format!("{user}@127.0.0.1:{}", sshd.port));
        let encrypted = must(
            &sshd,
            SshMachine::builder(&sshd.host)
                .port(sshd.port)
                .user(&user)
                .identity_file(&sshd.client_key_encrypted)
                .passphrase(sshd.passphrase)
                .known_hosts(&sshd.known_hosts)
                .ssh_config(None)
                .connect()
                .await,
        );
        assert_eq!(whoami(&encrypted).await, unix_name(&user));
        // A key the server refuses, then one it accepts: the second is tried.
        let unknown = sshd.dir.path().join("id_unknown");
        if !unknown.exists() {
            let made = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&unknown)
                .status()
                .unwrap();
            assert!(made.success());
        }
        let second = must(
            &sshd,
            SshMachine::builder(&sshd.host)
                .port(sshd.port)
                .user(&user)
                .identity_file(&unknown)
                .identity_file(&sshd.client_key)
                .known_hosts(&sshd.known_hosts)
                .ssh_config(None)
                .connect()
                .await,
        );
        assert_eq!(whoami(&second).await, unix_name(&user));
    }
}

#[tokio::test]
async fn rsa_keys_sign_with_rsa_sha2() {
    // A server that takes RSA keys only with SHA-2 signatures (not ssh-rsa, SHA-1).
    let Some(sshd) =
        Sshd::start_with(&["PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256,ssh-ed25519"])
    else {
        return;
    };
    for user in sshd.users() {
        let remote = must(
            &sshd,
            SshMachine::builder(&sshd.host)
                .port(sshd.port)
                .user(&user)
                .identity_file(&sshd.client_key_rsa)
                .known_hosts(&sshd.known_hosts)
                .ssh_config(None)
                .connect()
                .await,
        );
        assert_eq!(whoami(&remote).await, unix_name(&user));
    }
    assert!(
        sshd.log_text().contains("Accepted publickey for")
            && sshd.log_text().contains(": RSA SHA256:"),
        "{}",
        sshd.log_text()
    );
}

#[tokio::test]
async fn an_encrypted_key_without_its_passphrase_fails_saying_what_was_tried() {
    let Some(sshd) = Sshd::start() else { return };
    let error = SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key_encrypted)
        .known_hosts(&sshd.known_hosts)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_err();
    let Error::Auth {
        destination,
        tried,
        accepted,
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(
        destination,
        &format!("{}@127.0.0.1:{}", sshd.user, sshd.port)
    );
    let key = sshd.client_key_encrypted.display().to_string();
    assert!(
        tried
            .iter()
            .any(|t| t.contains(&key) && t.contains("passphrase")),
        "{tried:?}"
    );
    assert!(accepted.iter().any(|m| m == "publickey"), "{accepted:?}");
    assert!(accepted.iter().any(|m| m == "password"), "{accepted:?}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "authentication failed for {destination}\n  tried: "
        )),
        "{text}"
    );
    assert!(text.contains(&key), "{text}");
    assert!(text.contains("the server accepts: "), "{text}");
    assert!(text.contains("publickey"), "{text}");

    // A wrong passphrase fails the same way and never shows the passphrase.
    let wrong = "not-the-passphrase-4711";
    let error = SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key_encrypted)
        .passphrase(wrong)
        .known_hosts(&sshd.known_hosts)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    assert!(!texts(&error).contains(wrong), "{error}");
}

#[tokio::test]
async fn passwords_log_in_and_a_wrong_one_is_an_auth_error() {
    let Some(sshd) = Sshd::start() else { return };
    if !sshd.privileged {
        eprintln!("skipped: password logins need a privileged sshd");
        return;
    }
    let password_only = || {
        SshMachine::builder(&sshd.host)
            .port(sshd.port)
            .user(&sshd.user)
            .known_hosts(&sshd.known_hosts)
            .ssh_config(None)
    };
    let remote = must(
        &sshd,
        password_only().password(sshd.password).connect().await,
    );
    assert_eq!(whoami(&remote).await, sshd.user);
    assert!(
        sshd.log_text()
            .contains(&format!("Accepted password for {}", sshd.user)),
        "{}",
        sshd.log_text()
    );

    let wrong = "wrong-password-0815";
    let error = password_only().password(wrong).connect().await.unwrap_err();
    let Error::Auth { tried, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(tried.iter().any(|t| t == "password"), "{tried:?}");
    assert!(!texts(&error).contains(wrong), "{error}");

    // A key the server refuses, then the password.
    let remote = must(
        &sshd,
        password_only()
            .identity_file(&sshd.client_key_encrypted)
            .password(sshd.password)
            .connect()
            .await,
    );
    assert_eq!(whoami(&remote).await, sshd.user);
}

#[tokio::test]
async fn secrets_never_appear_in_debug_or_errors() {
    let Some(sshd) = Sshd::start() else { return };
    let password = "pw-secret-31337";
    let passphrase = "pp-secret-27182";
    let secret_builder = || {
        SshMachine::builder(&sshd.host)
            .port(sshd.port)
            .user(&sshd.user)
            .identity_file(&sshd.client_key_encrypted)
            .password(password)
            .passphrase(passphrase)
            .known_hosts(&sshd.known_hosts)
            .ssh_config(None)
    };
    let debug = format!("{:?}", secret_builder());
    assert!(debug.contains(&sshd.user), "{debug}");
    assert!(!debug.contains(password), "{debug}");
    assert!(!debug.contains(passphrase), "{debug}");
    let error = secret_builder().connect().await.unwrap_err();
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    let text = texts(&error);
    assert!(
        !text.contains(password) && !text.contains(passphrase),
        "{text}"
    );
    // Nor with the real ones, when something else fails.
    let empty = sshd.dir.path().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let error = SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key_encrypted)
        .password(sshd.password)
        .passphrase(sshd.passphrase)
        .known_hosts(&empty)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_err();
    let text = texts(&error);
    assert!(
        !text.contains(sshd.password) && !text.contains(sshd.passphrase),
        "{text}"
    );
    let remote = must(
        &sshd,
        sshd.builder(&sshd.user)
            .password(sshd.password)
            .connect()
            .await,
    );
    let debug = format!("{remote:?}");
    assert!(!debug.contains(sshd.password), "{debug}");
}

#[tokio::test]
async fn ssh_config_hosts_resolve_and_explicit_values_win() {
    let Some(sshd) = Sshd::start() else { return };
    let config = sshd.ssh_config();
    let remote = must(
        &sshd,
        SshMachine::builder("harness")
            .ssh_config(Some(config.clone()))
            .connect()
            .await,
    );
    assert_eq!(whoami(&remote).await, sshd.user);
    // The name the script wrote comes first, then where it led: errors and logs name both.
    assert_eq!(
        remote.name(),
        format!("harness ({}@127.0.0.1:{})", sshd.user, sshd.port)
    );
    let error = remote.cmd("false").run().await.unwrap_err();
    assert!(
        error.to_string().contains(&format!(
            "on harness ({}@127.0.0.1:{})",
            sshd.user, sshd.port
        )),
        "{error}"
    );
    if sshd.privileged {
        let root = must(
            &sshd,
            SshMachine::builder("harness-root")
                .ssh_config(Some(config.clone()))
                .connect()
                .await,
        );
        assert_eq!(whoami(&root).await, "root");
        // The builder's user wins over the file's, both ways.
        let root = must(
            &sshd,
            SshMachine::builder("harness")
                .user("root")
                .ssh_config(Some(config.clone()))
                .connect()
                .await,
        );
        assert_eq!(whoami(&root).await, "root");
        let user = must(
            &sshd,
            SshMachine::builder("harness-root")
                .user(&sshd.user)
                .ssh_config(Some(config.clone()))
                .connect()
                .await,
        );
        assert_eq!(whoami(&user).await, sshd.user);
    }
    // The builder's known_hosts wins over UserKnownHostsFile.
    let empty = sshd.dir.path().join("empty_known_hosts");
    fs::write(&empty, "").unwrap();
    let error = SshMachine::builder("harness")
        .known_hosts(&empty)
        .ssh_config(Some(config.clone()))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::HostKey { .. }), "{error:?}");
    // The builder's identity file wins over IdentityFile.
    let error = SshMachine::builder("harness")
        .identity_file(&sshd.client_key_encrypted)
        .ssh_config(Some(config.clone()))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Auth { .. }), "{error:?}");
    // The builder's port wins over Port.
    let closed = closed_port();
    let error = SshMachine::builder("harness")
        .port(closed)
        .ssh_config(Some(config.clone()))
        .connect()
        .await
        .unwrap_err();
    let Error::Connect { destination, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(destination, &format!("{}@127.0.0.1:{closed}", sshd.user));
    // ssh_config(None) reads no file: "harness" is then just a name that does not resolve.
    let error = SshMachine::builder("harness")
        .port(sshd.port)
        .user(&sshd.user)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn a_bad_ssh_config_is_a_connect_error_naming_file_and_line() {
    let Some(sshd) = Sshd::start() else { return };
    let config = sshd.dir.path().join("bad_config");
    fs::write(
        &config,
        "Host bad\n    HostName 127.0.0.1\n    Port twenty-two\n",
    )
    .unwrap();
    let error = SshMachine::builder("bad")
        .ssh_config(Some(config.clone()))
        .connect()
        .await
        .unwrap_err();
    let Error::Connect { reason, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(
        reason.contains(&format!("{}:3: ", config.display())),
        "{reason}"
    );
    assert!(reason.contains("Port"), "{reason}");
    assert!(reason.contains("twenty-two"), "{reason}");
    // A config that exists but cannot be read (a directory: root could read any file).
    let missing = sshd.dir.path().join("config_dir");
    fs::create_dir(&missing).unwrap();
    let error = SshMachine::builder("bad")
        .ssh_config(Some(missing.clone()))
        .connect()
        .await
        .unwrap_err();
    let Error::Connect { reason, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains(&missing.display().to_string()), "{reason}");
}

/// The harness's config with one more host, `jumped`, that reaches the same server through
/// `ProxyJump {via}`.
fn config_with_jump(sshd: &Sshd, via: &str, known_hosts: &Path) -> std::path::PathBuf {
    let mut text = fs::read_to_string(sshd.ssh_config()).unwrap();
    text.push_str(&format!(
        "Host jumped\n    HostName 127.0.0.1\n    Port {}\n    User {}\n    IdentityFile {}\n    UserKnownHostsFile {}\n    ProxyJump {via}\n",
        sshd.port,
        sshd.user,
        sshd.client_key.display(),
        known_hosts.display()
    ));
    let path = sshd.dir.path().join(format!("jump_config_{via}"));
    fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn jump_runs_the_session_through_the_bastion() {
    let Some(sshd) = Sshd::start() else { return };
    let bastion = must(&sshd, sshd.builder(&sshd.user).connect().await);
    let target = must(
        &sshd,
        sshd.builder(&sshd.user).jump(&bastion).connect().await,
    );
    assert_eq!(whoami(&target).await, sshd.user);
    assert_eq!(
        target
            .cmd("printf")
            .arg("%s")
            .arg("a b")
            .read()
            .await
            .unwrap(),
        "a b"
    );
    // Two logins, and the second came through sshd itself: its client is the bastion's
    // sshd, not this process.
    assert_eq!(sshd.log_text().matches("Accepted publickey").count(), 2);
    let outer = bastion
        .cmd("printenv")
        .arg("SSH_CONNECTION")
        .read()
        .await
        .unwrap();
    let inner = target
        .cmd("printenv")
        .arg("SSH_CONNECTION")
        .read()
        .await
        .unwrap();
    assert_ne!(outer, inner);

    // A bastion that forbids forwarding cannot carry it: the path really is direct-tcpip.
    let Some(closed) = Sshd::start_with(&["AllowTcpForwarding no"]) else {
        return;
    };
    let no_forwarding = must(&closed, closed.builder(&closed.user).connect().await);
    let error = sshd
        .builder(&sshd.user)
        .jump(&no_forwarding)
        .connect()
        .await
        .unwrap_err();
    let Error::Connect { reason, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(reason.contains("jump host"), "{reason}");
}

#[tokio::test]
async fn proxy_jump_in_ssh_config_goes_through_the_named_host() {
    let Some(sshd) = Sshd::start() else { return };
    // OpenSSH itself follows this config (the control).
    let config = config_with_jump(&sshd, "harness", &sshd.known_hosts);
    let ssh = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["jumped", "id", "-un"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        ssh.status.success(),
        "{}",
        String::from_utf8_lossy(&ssh.stderr)
    );
    let before = sshd.log_text().matches("Accepted publickey").count();
    let remote = must(
        &sshd,
        SshMachine::builder("jumped")
            .ssh_config(Some(config))
            .connect()
            .await,
    );
    assert_eq!(whoami(&remote).await, sshd.user);
    assert_eq!(
        sshd.log_text().matches("Accepted publickey").count(),
        before + 2,
        "the bastion's login and the jumped one"
    );
}

#[tokio::test]
async fn connect_parses_the_destination() {
    let Some(sshd) = Sshd::start() else { return };
    // No key and (unless ~/.ssh says otherwise) no known_hosts entry: it fails at the host
    // key, or at the login; either way user, host and port were taken from the string.
    let error = SshMachine::connect(&format!("someone@127.0.0.1:{}", sshd.port))
        .await
        .unwrap_err();
    match &error {
        Error::HostKey { host, .. } => assert_eq!(host, &format!("[127.0.0.1]:{}", sshd.port)),
        Error::Auth { destination, .. } => {
            assert_eq!(destination, &format!("someone@127.0.0.1:{}", sshd.port))
        }
        other => panic!("{other:?}"),
    }
    for bad in ["someone@127.0.0.1:port", "127.0.0.1:99999", "[::1]:x"] {
        let error = SshMachine::connect(bad).await.unwrap_err();
        let Error::Connect {
            destination,
            given,
            reason,
            ..
        } = &error
        else {
            panic!("{bad}: {error:?}")
        };
        assert_eq!(destination, bad);
        assert_eq!(given, bad);
        assert!(reason.contains("port"), "{bad}: {reason}");
    }
    // Nothing listens on a freed port: a Connect error that names the destination.
    let free = closed_port();
    let error = SshMachine::connect(&format!("someone@127.0.0.1:{free}"))
        .await
        .unwrap_err();
    let Error::Connect { destination, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(destination, &format!("someone@127.0.0.1:{free}"));
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot connect to someone@127.0.0.1:{free}: ")),
        "{error}"
    );
}

#[tokio::test]
async fn a_revoked_host_key_is_refused_as_revoked() {
    let Some(sshd) = Sshd::start() else { return };
    let file = sshd.dir.path().join("revoked_known_hosts");
    fs::write(&file, format!("@revoked {}\n", host_line(&sshd))).unwrap();
    let error = SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key)
        .known_hosts(&file)
        .host_key_policy(HostKeyPolicy::AcceptNew)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_err();
    let Error::HostKey {
        problem,
        fingerprint,
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(problem, &HostKeyProblem::Revoked, "{error}");
    assert_eq!(fingerprint.as_ref(), Some(&sshd.host_key_fingerprint));
    assert!(error.to_string().contains("revoked"), "{error}");
}

/// Connect errors are data: the kind of the I/O failure (refused or timed out), the
/// address dialled, the name the script wrote (an ssh_config alias), and the source chain.
#[tokio::test]
async fn connect_errors_tell_refused_from_timed_out_and_name_the_alias() {
    let Some(sshd) = Sshd::start() else { return };
    // Nothing listens: refused, at the resolved address, under the alias the script used.
    let closed = closed_port();
    let error = SshMachine::builder("harness")
        .port(closed)
        .ssh_config(Some(sshd.ssh_config()))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        error.io_kind(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{error}"
    );
    let Error::Connect {
        destination,
        given,
        address,
        source,
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(destination, &format!("{}@127.0.0.1:{closed}", sshd.user));
    assert_eq!(given, "harness");
    assert_eq!(address, &Some(([127, 0, 0, 1], closed).into()));
    assert!(source.is_some());
    let source = std::error::Error::source(&error).expect("the io::Error underneath");
    let source = source.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        error.to_string().starts_with(&format!(
            "cannot connect to harness ({}@127.0.0.1:{closed}): ",
            sshd.user
        )),
        "{error}"
    );

    // A listener that accepts but never speaks SSH: timed out, told apart in code.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let error = sshd
        .builder(&sshd.user)
        .port(port)
        .connect_timeout(std::time::Duration::from_millis(300))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        error.io_kind(),
        Some(std::io::ErrorKind::TimedOut),
        "{error}"
    );
    assert!(
        error.to_string().contains("no SSH handshake within"),
        "{error}"
    );
    let Error::Connect { address, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(address, &Some(([127, 0, 0, 1], port).into()));

    // Into the error types scripts return: `?` works and keeps the chain.
    fn boxed(error: Error) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Err(error)?
    }
    let boxed = boxed(error).unwrap_err();
    assert!(boxed.source().is_some(), "{boxed}");
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
