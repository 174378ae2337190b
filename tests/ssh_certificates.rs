//! OpenSSH certificates against a real sshd (tests/support/sshd.rs), signed by
//! `ssh-keygen -s`: user certificates (`CertificateFile`, `certificate_file`, `KEY-cert.pub`
//! beside the key) accepted through `TrustedUserCAKeys` for a key no `authorized_keys`
//! lists; host certificates trusted through an `@cert-authority` line with no plain
//! known_hosts line; expired and wrong-principal certificates refused, saying why.

mod support;

use std::{
    fs,
    path::{Path, PathBuf},
};

use leadpipe::{Error, HostKeyProblem, SshBuilder, SshMachine};
use support::sshd::{CertKind, Sshd, keygen, sign};

/// A directory sshd can read (the CA and host keys it is given live there).
fn readable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("leadpipe-certs.")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `path.pub`.
fn public(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", path.display()))
}

/// `keytype base64` of a public key file.
fn key_fields(path: &Path) -> String {
    let text = fs::read_to_string(public(path)).unwrap();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A builder for `sshd` as its normal user with only `key` (no harness key, no agent, no
/// config file), checking host keys against `known_hosts`.
fn builder(sshd: &Sshd, key: &Path, known_hosts: &Path) -> SshBuilder {
    SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(key)
        .known_hosts(known_hosts)
        .ssh_config(None)
}

/// A user CA, a key no authorized_keys lists, and an sshd trusting the CA.
struct UserCa {
    dir: tempfile::TempDir,
    ca: PathBuf,
    key: PathBuf,
    sshd: Sshd,
}

fn user_ca() -> Option<UserCa> {
    let dir = readable_dir();
    let ca = dir.path().join("user_ca");
    let key = dir.path().join("id_certified");
    keygen(&ca);
    keygen(&key);
    let trusted = format!("TrustedUserCAKeys {}", public(&ca).display());
    let sshd = Sshd::start_with(&[&trusted])?;
    Some(UserCa { dir, ca, key, sshd })
}

#[tokio::test]
async fn a_user_certificate_logs_in_where_the_key_alone_does_not() {
    let Some(UserCa { dir, ca, key, sshd }) = user_ca() else {
        return;
    };
    let signed = sign(&ca, &public(&key), CertKind::User, &sshd.user, "-5m:+1h");
    // Kept under another name, so that only naming it offers it.
    let cert = dir.path().join("deploy-cert.pub");
    fs::rename(&signed, &cert).unwrap();

    // The key alone is in no authorized_keys.
    let error = builder(&sshd, &key, &sshd.known_hosts)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Auth { .. }), "{error}");

    // Named on the builder.
    let machine = builder(&sshd, &key, &sshd.known_hosts)
        .certificate_file(&cert)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_text()));
    assert_eq!(machine.cmd("whoami").read().await.unwrap(), sshd.user);

    // Named by ssh_config's CertificateFile.
    let config = dir.path().join("config");
    fs::write(
        &config,
        format!(
            "Host certified\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             CertificateFile {}\n  UserKnownHostsFile {}\n",
            sshd.port,
            sshd.user,
            key.display(),
            cert.display(),
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    let configured = SshMachine::builder("certified").ssh_config(Some(config));
    assert_eq!(
        configured.resolve().unwrap().certificate_files,
        std::slice::from_ref(&cert)
    );
    let machine = configured
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_text()));
    assert_eq!(machine.cmd("whoami").read().await.unwrap(), sshd.user);

    // Beside the key as KEY-cert.pub, where ssh-keygen writes it: offered unnamed.
    fs::copy(&cert, &signed).unwrap();
    let machine = builder(&sshd, &key, &sshd.known_hosts)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_text()));
    assert_eq!(machine.cmd("whoami").read().await.unwrap(), sshd.user);
    assert!(
        sshd.log_text().contains("Accepted publickey") && sshd.log_text().contains("CERT"),
        "{}",
        sshd.log_text()
    );
}

#[tokio::test]
async fn an_expired_user_certificate_is_refused_and_the_error_says_so() {
    let Some(UserCa {
        dir: _dir,
        ca,
        key,
        sshd,
    }) = user_ca()
    else {
        return;
    };
    sign(
        &ca,
        &public(&key),
        CertKind::User,
        &sshd.user,
        "20200101:20200102",
    );
    let error = builder(&sshd, &key, &sshd.known_hosts)
        .connect()
        .await
        .unwrap_err();
    let Error::Auth { tried, .. } = &error else {
        panic!("{error}");
    };
    let text = error.to_string();
    assert!(
        tried
            .iter()
            .any(|t| t.contains("-cert.pub") && t.contains("expired on 2020-01-02")),
        "{text}"
    );
    // The server refused it itself: the certificate was offered.
    assert!(sshd.log_text().contains("expired"), "{}", sshd.log_text());
}

/// A host CA, an sshd presenting a host certificate it signed for `principals` over
/// `validity`, and a known_hosts holding only the CA line for `[127.0.0.1]:PORT`.
struct HostCa {
    _dir: tempfile::TempDir,
    sshd: Sshd,
    known_hosts: PathBuf,
    /// The certified host key (private; `.pub` beside it).
    host_key: PathBuf,
}

fn host_ca(principals: &str, validity: &str) -> Option<HostCa> {
    let dir = readable_dir();
    let ca = dir.path().join("host_ca");
    let host_key = dir.path().join("ssh_host_certified_key");
    keygen(&ca);
    keygen(&host_key);
    let cert = sign(
        &ca,
        &public(&host_key),
        CertKind::Host,
        principals,
        validity,
    );
    let host_key_line = format!("HostKey {}", host_key.display());
    let cert_line = format!("HostCertificate {}", cert.display());
    let sshd = Sshd::start_with(&[&host_key_line, &cert_line])?;
    let known_hosts = dir.path().join("known_hosts");
    fs::write(
        &known_hosts,
        format!(
            "# no plain line for the host\n@cert-authority [127.0.0.1]:{} {}\n",
            sshd.port,
            key_fields(&ca)
        ),
    )
    .unwrap();
    Some(HostCa {
        _dir: dir,
        sshd,
        known_hosts,
        host_key,
    })
}

#[tokio::test]
async fn a_host_certificate_signed_by_a_cert_authority_line_is_trusted() {
    let Some(HostCa {
        _dir: _keep,
        sshd,
        known_hosts,
        host_key: _,
    }) = host_ca("127.0.0.1,web1", "-5m:+1h")
    else {
        return;
    };
    let machine = builder(&sshd, &sshd.client_key, &known_hosts)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_text()));
    assert_eq!(machine.cmd("echo").arg("ok").read().await.unwrap(), "ok");

    // A HostKeyAlgorithms list without certificate names asks for a plain key, which
    // known_hosts does not list.
    let config = known_hosts.with_file_name("plain_only_config");
    fs::write(
        &config,
        format!(
            "Host plain\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
             HostKeyAlgorithms ssh-ed25519\n",
            sshd.port,
            sshd.user,
            sshd.client_key.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
    let error = SshMachine::builder("plain")
        .ssh_config(Some(config))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::HostKey {
                problem: HostKeyProblem::Unknown,
                ..
            }
        ),
        "{error}"
    );

    // A revoked CA vouches for nothing.
    let ca_line = fs::read_to_string(&known_hosts).unwrap();
    let ca_key = ca_line
        .lines()
        .nth(1)
        .unwrap()
        .splitn(3, ' ')
        .nth(2)
        .unwrap();
    let revoked = known_hosts.with_file_name("revoked_known_hosts");
    fs::write(&revoked, format!("{ca_line}@revoked * {ca_key}\n")).unwrap();
    let error = builder(&sshd, &sshd.client_key, &revoked)
        .connect()
        .await
        .unwrap_err();
    let Error::HostKey { problem, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*problem, HostKeyProblem::Revoked, "{error}");
    assert!(error.to_string().contains("CA"), "{error}");

    // Another CA's line does not vouch for it.
    let other = known_hosts.with_file_name("other_known_hosts");
    let other_ca = known_hosts.with_file_name("other_ca");
    keygen(&other_ca);
    fs::write(
        &other,
        format!("@cert-authority * {}\n", key_fields(&other_ca)),
    )
    .unwrap();
    let error = builder(&sshd, &sshd.client_key, &other)
        .connect()
        .await
        .unwrap_err();
    let Error::HostKey {
        problem, reason, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(*problem, HostKeyProblem::Certificate, "{error}");
    assert!(reason.contains("does not trust"), "{error}");
}

#[tokio::test]
async fn an_expired_host_certificate_is_refused_saying_so() {
    let Some(HostCa {
        _dir: _keep,
        sshd,
        known_hosts,
        host_key,
    }) = host_ca("127.0.0.1", "20200101:20200102")
    else {
        return;
    };
    let error = builder(&sshd, &sshd.client_key, &known_hosts)
        .connect()
        .await
        .unwrap_err();
    let Error::HostKey { problem, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*problem, HostKeyProblem::CertificateExpired, "{error}");
    assert!(
        error.to_string().contains("expired on 2020-01-02"),
        "{error}"
    );

    // As OpenSSH: a plain line for the key inside the certificate still trusts it.
    let ca_line = fs::read_to_string(&known_hosts).unwrap();
    let with_plain = known_hosts.with_file_name("with_plain");
    fs::write(
        &with_plain,
        format!(
            "{ca_line}[127.0.0.1]:{} {}\n",
            sshd.port,
            key_fields(&host_key)
        ),
    )
    .unwrap();
    let machine = builder(&sshd, &sshd.client_key, &with_plain)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(machine.cmd("echo").arg("ok").read().await.unwrap(), "ok");
}

#[tokio::test]
async fn a_host_certificate_for_another_name_is_refused_saying_so() {
    let Some(HostCa {
        _dir: _keep,
        sshd,
        known_hosts,
        host_key: _,
    }) = host_ca("web1.example.com,web1", "-5m:+1h")
    else {
        return;
    };
    let error = builder(&sshd, &sshd.client_key, &known_hosts)
        .connect()
        .await
        .unwrap_err();
    let Error::HostKey { problem, .. } = &error else {
        panic!("{error}");
    };
    assert_eq!(*problem, HostKeyProblem::CertificatePrincipal, "{error}");
    let text = error.to_string();
    assert!(
        text.contains("\"web1.example.com\", \"web1\", not for \"127.0.0.1\""),
        "{text}"
    );

    // Under the HostKeyAlias it names, with a CA line for that name, it is trusted.
    let dir = known_hosts.parent().unwrap();
    let ca_line = fs::read_to_string(&known_hosts).unwrap();
    let ca_key = ca_line
        .lines()
        .nth(1)
        .unwrap()
        .splitn(3, ' ')
        .nth(2)
        .unwrap();
    let aliased = dir.join("aliased_known_hosts");
    fs::write(&aliased, format!("@cert-authority web1 {ca_key}\n")).unwrap();
    let config = dir.join("config");
    fs::write(
        &config,
        format!(
            "Host web1\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             HostKeyAlias web1\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n",
            sshd.port,
            sshd.user,
            sshd.client_key.display(),
            aliased.display()
        ),
    )
    .unwrap();
    let machine = SshMachine::builder("web1")
        .ssh_config(Some(config))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log_text()));
    assert_eq!(machine.cmd("echo").arg("ok").read().await.unwrap(), "ok");
}
