//! OpenSSH certificates: a host certificate checked against the `@cert-authority` lines of
//! known_hosts (as OpenSSH's `check_host_cert` does), and the user certificates offered
//! with a key (`CertificateFile`, `KEY-cert.pub` beside an identity file).
//!
//! A host certificate is trusted when all of these hold: it is a *host* certificate; a CA
//! that an `@cert-authority` line for the host names signed it, and the signature
//! verifies; the current time is inside its validity period; its principals name the host
//! (the `HostKeyAlias`, else the host name: an empty list names every host, as in
//! OpenSSH); it carries no critical options (none are defined for host certificates, and
//! OpenSSH refuses any). Each failure is a [`HostKeyProblem`] with a sentence saying which.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use russh::keys::{
    Certificate, HashAlg, PublicKey,
    ssh_key::{certificate::CertType, public::KeyData},
};

use super::known_hosts::Authority;
use crate::HostKeyProblem;

/// Why a host certificate is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Which check failed.
    pub(crate) problem: HostKeyProblem,
    /// The sentence for [`Error::HostKey`](crate::Error::HostKey)'s reason.
    pub(crate) reason: String,
}

/// Seconds since the epoch, now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks a host certificate for `principal` (the `HostKeyAlias`, else the host name,
/// without port) at `now` against the CAs `authorities` lists for the host. On success,
/// the line of the CA that signed it.
pub(crate) fn check_host<'a>(
    cert: &Certificate,
    authorities: &'a [Authority],
    principal: &str,
    now: u64,
) -> Result<&'a Authority, Refused> {
    let refuse = |problem, reason: String| Refused { problem, reason };
    let id = cert.key_id();
    if cert.cert_type() != CertType::Host {
        return Err(refuse(
            HostKeyProblem::Certificate,
            format!("it presented a user certificate (key id {id:?}) as its host key"),
        ));
    }
    let ca = cert.signature_key();
    let ca_fingerprint = ca.fingerprint(HashAlg::Sha256);
    let Some(authority) = authorities
        .iter()
        .find(|a| PublicKey::from_bytes(&a.key_blob).is_ok_and(|key| key.key_data() == ca))
    else {
        let lines = if authorities.is_empty() {
            "no @cert-authority line matches the host".to_owned()
        } else {
            let listed: Vec<String> = (authorities.iter())
                .map(|a| format!("{} line {}", a.path.display(), a.line))
                .collect();
            format!(
                "the host's @cert-authority lines ({}) name other CAs",
                listed.join(", ")
            )
        };
        return Err(refuse(
            HostKeyProblem::Certificate,
            format!(
                "its host certificate (key id {id:?}) is signed by the CA {ca_fingerprint}, \
                 which known_hosts does not trust for it: {lines}"
            ),
        ));
    };
    // The signature, checked at a moment inside the validity period so that the time is
    // judged apart (and named) below.
    if cert
        .validate_at(cert.valid_after(), [&ca_fingerprint])
        .is_err()
    {
        return Err(refuse(
            HostKeyProblem::Certificate,
            format!(
                "its host certificate (key id {id:?}) does not verify with the CA \
                 {ca_fingerprint} it names ({} line {}): it is forged or corrupt",
                authority.path.display(),
                authority.line
            ),
        ));
    }
    if let Some(when) = outside_validity(cert, now) {
        return Err(refuse(
            HostKeyProblem::CertificateExpired,
            format!("its host certificate (key id {id:?}) {when}"),
        ));
    }
    let principals = cert.valid_principals();
    if !principals.is_empty() && !principals.iter().any(|p| p.eq_ignore_ascii_case(principal)) {
        return Err(refuse(
            HostKeyProblem::CertificatePrincipal,
            format!(
                "its host certificate (key id {id:?}) is for {}, not for {principal:?}",
                principals
                    .iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if !cert.critical_options().is_empty() {
        let names: Vec<&str> = cert.critical_options().keys().map(String::as_str).collect();
        return Err(refuse(
            HostKeyProblem::Certificate,
            format!(
                "its host certificate (key id {id:?}) carries critical options ({}), which \
                 a host certificate must not",
                names.join(", ")
            ),
        ));
    }
    Ok(authority)
}

/// `None` when `now` is inside the certificate's validity period; otherwise what is
/// wrong, as the rest of a sentence: `expired on 2020-01-02 00:00:00 UTC`.
pub(crate) fn outside_validity(cert: &Certificate, now: u64) -> Option<String> {
    if now < cert.valid_after() {
        Some(format!("is not valid before {}", utc(cert.valid_after())))
    } else if now >= cert.valid_before() {
        Some(format!("expired on {}", utc(cert.valid_before())))
    } else {
        None
    }
}

/// The certificates to offer with the key `public`: the `CertificateFile`s `files` that
/// certify it, then `IDENTITY-cert.pub` beside its identity file when that certifies it
/// (as `ssh` loads it). A file that cannot be read or certifies another key is left out;
/// [`unreadable`] says why for the error.
pub(crate) fn for_key(
    public: &KeyData,
    identity: Option<&Path>,
    files: &[PathBuf],
) -> Vec<(PathBuf, Certificate)> {
    let beside = identity.map(|path| {
        let mut name = path.as_os_str().to_owned();
        name.push("-cert.pub");
        PathBuf::from(name)
    });
    let mut found: Vec<(PathBuf, Certificate)> = Vec::new();
    for path in files.iter().chain(beside.iter()) {
        if found.iter().any(|(p, _)| p == path) {
            continue;
        }
        if let Ok(cert) = Certificate::read_file(path)
            && cert.public_key() == public
        {
            found.push((path.clone(), cert));
        }
    }
    found
}

/// Why a `CertificateFile` cannot be offered, when it cannot be read as a certificate.
pub(crate) fn unreadable(path: &Path) -> Option<String> {
    Certificate::read_file(path).err().map(|e| e.to_string())
}

/// A Unix time as `2020-01-02 03:04:05 UTC`; the largest time reads `forever`.
fn utc(seconds: u64) -> String {
    if seconds == u64::MAX {
        return "forever".to_owned();
    }
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use std::{path::Path, process::Command};

    use russh::keys::Certificate;

    use super::{check_host, outside_validity, utc};
    use crate::{HostKeyProblem, ssh::known_hosts::Authority};

    /// `ssh-keygen` with `args`, in `dir`; panics when it fails.
    fn keygen(dir: &Path, args: &[&str]) {
        let out = Command::new("ssh-keygen")
            .current_dir(dir)
            .arg("-q")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// The CA `name` as an `@cert-authority` line would give it.
    fn authority(dir: &Path, name: &str) -> Authority {
        let text = std::fs::read_to_string(dir.join(format!("{name}.pub"))).unwrap();
        let mut fields = text.split_whitespace();
        let key_type = fields.next().unwrap().to_owned();
        let key_blob = data_encoding::BASE64
            .decode(fields.next().unwrap().as_bytes())
            .unwrap();
        Authority {
            key_type,
            key_blob,
            path: dir.join("known_hosts"),
            line: 3,
        }
    }

    #[test]
    fn host_certificates_are_checked_for_type_ca_time_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["ca", "other_ca", "host", "user"] {
            keygen(d, &["-t", "ed25519", "-N", "", "-f", name]);
        }
        let sign = |key: &str, extra: &[&str]| -> Certificate {
            let mut args = vec!["-s", "ca", "-I", "id-1", "-V", "20200101:20300101"];
            args.extend_from_slice(extra);
            let public = format!("{key}.pub");
            args.push(&public);
            keygen(d, &args);
            Certificate::read_file(&d.join(format!("{key}-cert.pub"))).unwrap()
        };
        let ca = [authority(d, "ca")];
        let other = [authority(d, "other_ca")];
        let in_2025 = 1_735_689_600;

        let host = sign("host", &["-h", "-n", "web1,web1.example.com"]);
        assert_eq!(check_host(&host, &ca, "web1", in_2025).unwrap().line, 3);
        assert!(check_host(&host, &ca, "WEB1.example.com", in_2025).is_ok());
        let refused =
            |cert, cas: &[Authority], name, at| check_host(cert, cas, name, at).unwrap_err();
        let wrong_name = refused(&host, &ca, "web2", in_2025);
        assert_eq!(wrong_name.problem, HostKeyProblem::CertificatePrincipal);
        assert!(
            wrong_name.reason.contains("not for \"web2\""),
            "{}",
            wrong_name.reason
        );
        let expired = refused(&host, &ca, "web1", 1_900_000_000);
        assert_eq!(expired.problem, HostKeyProblem::CertificateExpired);
        assert!(
            expired.reason.contains("expired on 2030-01-01"),
            "{}",
            expired.reason
        );
        let early = refused(&host, &ca, "web1", 1_000_000_000);
        assert!(
            early.reason.contains("not valid before 2020-01-01"),
            "{}",
            early.reason
        );
        let untrusted = refused(&host, &other, "web1", in_2025);
        assert_eq!(untrusted.problem, HostKeyProblem::Certificate);
        assert!(
            untrusted.reason.contains("name other CAs"),
            "{}",
            untrusted.reason
        );
        assert!(
            refused(&host, &[], "web1", in_2025)
                .reason
                .contains("no @cert-authority")
        );
        assert_eq!(outside_validity(&host, in_2025), None);

        // No principals: every name, as in OpenSSH.
        let any = sign("host", &["-h"]);
        assert!(check_host(&any, &ca, "anything", in_2025).is_ok());
        // A user certificate is no host key.
        let user = sign("user", &["-n", "web1"]);
        let as_host = refused(&user, &ca, "web1", in_2025);
        assert_eq!(as_host.problem, HostKeyProblem::Certificate);
        assert!(
            as_host.reason.contains("user certificate"),
            "{}",
            as_host.reason
        );
    }

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_577_923_199), "2020-01-01 23:59:59 UTC");
        assert_eq!(utc(u64::MAX), "forever");
        // Past the end of any calendar a person uses: still no panic.
        let _ = utc(u64::MAX - 1);
    }
}
