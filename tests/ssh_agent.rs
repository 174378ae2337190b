//! The ssh-agent against real sshd (tests/support/sshd.rs): agent forwarding (`ForwardAgent`
//! with a socket path, `forward_agent(true)` with `SSH_AUTH_SOCK`) lets `ssh` on the first
//! host log in to a second sshd that accepts only a certificate the local agent holds,
//! with no key file on the remote side; without forwarding it cannot. The agent's
//! certificate also logs leadpipe itself in, and the agent signs for an encrypted identity
//! file it holds.
//!
//! A binary of its own: it sets `SSH_AUTH_SOCK` for the whole process.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
};

use leadpipe::SshMachine;
use support::sshd::{CertKind, SshAgent, Sshd, keygen, sign};

/// The first host's config: the harness key, its known_hosts, and `extra` lines.
fn config(sshd: &Sshd, dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join(format!("config-{}", extra.len()));
    fs::write(
        &path,
        format!(
            "Host first\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n{extra}",
            sshd.port,
            sshd.user,
            sshd.client_key.display(),
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn the_forwarded_agent_logs_the_remote_ssh_in_with_the_local_certificate() {
    let dir = tempfile::Builder::new()
        .prefix("leadpipe-agent.")
        .tempdir_in("/tmp")
        .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let ca = dir.path().join("user_ca");
    let key = dir.path().join("id_agent");
    keygen(&ca);
    keygen(&key);
    let Some(first) = Sshd::start() else {
        return;
    };
    sign(
        &ca,
        &PathBuf::from(format!("{}.pub", key.display())),
        CertKind::User,
        &first.user,
        "-5m:+1h",
    );
    // The second host takes only a certificate of this CA: no authorized_keys at all.
    let trusted = format!("TrustedUserCAKeys {}.pub", ca.display());
    let Some(second) = Sshd::start_with(&[&trusted, "AuthorizedKeysFile none"]) else {
        return;
    };
    let agent = SshAgent::start(&dir.path().join("agent.sock"));
    // `ssh-add KEY` adds KEY-cert.pub beside it too; the key file then goes.
    agent.add(&key);
    fs::remove_file(&key).unwrap();
    let socket = agent.socket.clone();

    // `ssh` on the first host, with no key file of its own: only an agent can log it in.
    let hop = format!(
        "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o IdentityFile=/nonexistent -o LogLevel=ERROR \
         -p {} {}@127.0.0.1 echo reached-the-second-host",
        second.port, second.user
    );
    let through = async |machine: &SshMachine| {
        machine
            .cmd("sh")
            .args(["-c", &hop])
            .unchecked()
            .output()
            .await
            .unwrap()
    };

    // ForwardAgent naming the socket.
    let forwarding = SshMachine::builder("first")
        .ssh_config(Some(config(
            &first,
            dir.path(),
            &format!("  ForwardAgent {}\n", socket.display()),
        )))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", first.log_text()));
    let out = through(&forwarding).await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "reached-the-second-host",
        "{out:?}\n{}",
        second.log_text()
    );
    let remote_sock = forwarding.cmd("printenv").arg("SSH_AUTH_SOCK").read().await;
    assert!(remote_sock.is_ok_and(|s| !s.is_empty()));

    // Without forwarding the same command cannot log in.
    let plain = SshMachine::builder("first")
        .ssh_config(Some(config(&first, dir.path(), "")))
        .connect()
        .await
        .unwrap();
    let out = through(&plain).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("reached"));

    // The builder's forward_agent(true) serves $SSH_AUTH_SOCK; false overrides the config.
    // SAFETY: this binary's only test, and no other thread reads the environment now.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &socket) };
    let built = SshMachine::builder("first")
        .ssh_config(Some(config(&first, dir.path(), "")))
        .forward_agent(true);
    assert_eq!(
        built.resolve().unwrap().forward_agent_socket.as_deref(),
        Some(socket.as_path())
    );
    let built = built.connect().await.unwrap();
    let out = through(&built).await;
    assert!(out.status.success(), "{out:?}\n{}", second.log_text());
    let off = SshMachine::builder("first")
        .ssh_config(Some(config(&first, dir.path(), "  ForwardAgent yes\n")))
        .forward_agent(false)
        .connect()
        .await
        .unwrap();
    assert!(!through(&off).await.status.success());

    // An encrypted identity file whose key the agent holds signs there, as with `ssh`,
    // also under IdentitiesOnly and for a file given to the builder: no passphrase asked.
    let locked = dir.path().join("id_locked");
    keygen(&locked);
    agent.add(&locked);
    let encrypted = std::process::Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", "not-given-here", "-f"])
        .arg(&locked)
        .output()
        .unwrap();
    assert!(encrypted.status.success(), "{encrypted:?}");
    let authorized = first.dir.path().join("authorized_keys");
    let mut keys = fs::read_to_string(&authorized).unwrap();
    keys.push_str(&fs::read_to_string(format!("{}.pub", locked.display())).unwrap());
    fs::write(&authorized, keys).unwrap();
    let only = format!(
        "Host locked\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
         IdentitiesOnly yes\n  UserKnownHostsFile {}\n",
        first.port,
        first.user,
        locked.display(),
        first.known_hosts.display()
    );
    let only_file = dir.path().join("locked_config");
    fs::write(&only_file, only).unwrap();
    let machine = SshMachine::builder("locked")
        .ssh_config(Some(only_file))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", first.log_text()));
    assert_eq!(machine.cmd("whoami").read().await.unwrap(), first.user);
    SshMachine::builder(&first.host)
        .port(first.port)
        .user(&first.user)
        .identity_file(&locked)
        .known_hosts(&first.known_hosts)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", first.log_text()));

    // The agent's certificate logs leadpipe itself in where no key is authorized.
    let direct = SshMachine::builder(&second.host)
        .port(second.port)
        .user(&second.user)
        .known_hosts(&second.known_hosts)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", second.log_text()));
    assert_eq!(direct.cmd("whoami").read().await.unwrap(), second.user);
}
