//! `Ciphers`, `KexAlgorithms`, `MACs` and `HostKeyAlgorithms`: ssh_config's algorithm
//! lists applied to what leadpipe (russh) offers, as OpenSSH's `kex_assemble_names`
//! applies them to what it supports.
//!
//! A list replaces the defaults (its comma-separated patterns, in its order); `+list`
//! adds to them (nothing leadpipe lacks can be added, so the defaults stay); `-list`
//! removes what matches; `^list` puts what matches first. A list that leaves nothing
//! leadpipe supports is an error rather than a connection that offers what the config
//! excluded.

use std::borrow::Cow;

use russh::{Preferred, keys::Algorithm};

use super::known_hosts::glob_matches;

/// The config's lists, unparsed; `None` where it sets none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AlgorithmLists {
    /// `Ciphers`.
    pub(crate) ciphers: Option<String>,
    /// `KexAlgorithms`.
    pub(crate) kex: Option<String>,
    /// `MACs`.
    pub(crate) macs: Option<String>,
    /// `HostKeyAlgorithms`.
    pub(crate) host_keys: Option<String>,
}

/// What to offer, given the config's lists and leadpipe's defaults (`ciphers`).
///
/// # Errors
/// A sentence naming the keyword whose list leaves nothing leadpipe supports.
pub(crate) fn preferred(
    lists: &AlgorithmLists,
    ciphers: &'static [russh::cipher::Name],
) -> Result<Preferred, String> {
    let defaults = Preferred::DEFAULT;
    // The protocol extensions ride in the kex list; they are not algorithms to choose.
    let extension = |name: &str| name.starts_with("ext-info-") || name.starts_with("kex-strict-");
    let kex = choose("KexAlgorithms", lists.kex.as_deref(), &defaults.kex, |n| {
        n.as_ref().to_owned()
    })?;
    let kex = if lists.kex.is_some() {
        let mut kex = kex;
        kex.retain(|n| !extension(n.as_ref()));
        kex.extend(
            defaults
                .kex
                .iter()
                .filter(|n| extension(n.as_ref()))
                .copied(),
        );
        kex
    } else {
        kex
    };
    Ok(Preferred {
        kex: Cow::Owned(kex),
        key: Cow::Owned(choose(
            "HostKeyAlgorithms",
            lists.host_keys.as_deref(),
            &defaults.key,
            |a: &Algorithm| a.as_str().to_owned(),
        )?),
        cipher: Cow::Owned(choose("Ciphers", lists.ciphers.as_deref(), ciphers, |n| {
            n.as_ref().to_owned()
        })?),
        mac: Cow::Owned(choose("MACs", lists.macs.as_deref(), &defaults.mac, |n| {
            n.as_ref().to_owned()
        })?),
        host_key_certificates: Cow::Owned(certificate_algorithms(lists, &defaults.key)),
        ..defaults
    })
}

/// The host-key algorithms whose certificate variant (`NAME-cert-v01@openssh.com`)
/// `HostKeyAlgorithms` allows, in its order: every one by default, none when the list
/// leaves no certificate name. The connection offers them only where an
/// `@cert-authority` line applies.
fn certificate_algorithms(lists: &AlgorithmLists, keys: &[Algorithm]) -> Vec<Algorithm> {
    let mut plain: Vec<Algorithm> = Vec::new();
    for key in keys {
        if !plain.contains(key) {
            plain.push(key.clone());
        }
    }
    choose(
        "HostKeyAlgorithms",
        lists.host_keys.as_deref(),
        &plain,
        Algorithm::to_certificate_type,
    )
    .unwrap_or_default()
}

/// The names `preferred` offers, for [`SshSettings`](super::SshSettings).
pub(crate) fn names(preferred: &Preferred) -> [Vec<String>; 4] {
    let strings = |names: Vec<&str>| names.into_iter().map(str::to_owned).collect::<Vec<_>>();
    [
        strings(
            preferred
                .kex
                .iter()
                .map(AsRef::as_ref)
                .filter(|n: &&str| !n.starts_with("ext-info-") && !n.starts_with("kex-strict-"))
                .collect(),
        ),
        strings(preferred.key.iter().map(Algorithm::as_str).collect()),
        strings(preferred.cipher.iter().map(AsRef::as_ref).collect()),
        strings(preferred.mac.iter().map(AsRef::as_ref).collect()),
    ]
}

/// Applies one config list to `available`.
fn choose<T: Clone>(
    keyword: &str,
    list: Option<&str>,
    available: &[T],
    name: impl Fn(&T) -> String,
) -> Result<Vec<T>, String> {
    let Some(list) = list else {
        return Ok(available.to_vec());
    };
    let matches = |patterns: &str, item: &T| {
        let item = name(item);
        patterns.split(',').any(|p| glob_matches(p, &item))
    };
    // Each pattern in turn, so the config's order is the preference order.
    let ordered = |patterns: &str| {
        let mut out: Vec<T> = Vec::new();
        for pattern in patterns.split(',') {
            for item in available {
                if matches(pattern, item) && !out.iter().any(|o| name(o) == name(item)) {
                    out.push(item.clone());
                }
            }
        }
        out
    };
    let chosen = if list.starts_with('+') {
        available.to_vec()
    } else if let Some(removed) = list.strip_prefix('-') {
        available
            .iter()
            .filter(|item| !matches(removed, item))
            .cloned()
            .collect()
    } else if let Some(first) = list.strip_prefix('^') {
        let mut out = ordered(first);
        let rest: Vec<T> = available
            .iter()
            .filter(|item| !out.iter().any(|o| name(o) == name(item)))
            .cloned()
            .collect();
        out.extend(rest);
        out
    } else {
        ordered(list)
    };
    if chosen.is_empty() {
        let offered: Vec<String> = available.iter().map(&name).collect();
        return Err(format!(
            "{keyword} {list:?} leaves none of the algorithms leadpipe supports ({})",
            offered.join(",")
        ));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIPHERS: &[russh::cipher::Name] = &[
        russh::cipher::AES_256_GCM,
        russh::cipher::CHACHA20_POLY1305,
        russh::cipher::AES_128_CTR,
    ];

    fn ciphers(list: &str) -> Result<Vec<String>, String> {
        let lists = AlgorithmLists {
            ciphers: Some(list.to_owned()),
            ..AlgorithmLists::default()
        };
        Ok(names(&preferred(&lists, CIPHERS)?)[2].clone())
    }

    #[test]
    fn lists_replace_add_remove_and_reorder() {
        assert_eq!(
            ciphers("aes128-ctr,aes256-gcm@openssh.com,aes128-cbc").unwrap(),
            ["aes128-ctr", "aes256-gcm@openssh.com"]
        );
        assert_eq!(
            ciphers("+aes128-cbc").unwrap(),
            [
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com",
                "aes128-ctr"
            ]
        );
        assert_eq!(ciphers("-aes*").unwrap(), ["chacha20-poly1305@openssh.com"]);
        assert_eq!(
            ciphers("^aes128-ctr").unwrap(),
            [
                "aes128-ctr",
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com"
            ]
        );
        let error = ciphers("aes128-cbc").unwrap_err();
        assert!(
            error.starts_with("Ciphers \"aes128-cbc\" leaves none"),
            "{error}"
        );
    }

    #[test]
    fn certificate_algorithms_follow_the_host_key_list() {
        let certificates = |list: Option<&str>| -> Vec<String> {
            let lists = AlgorithmLists {
                host_keys: list.map(str::to_owned),
                ..AlgorithmLists::default()
            };
            let preferred = preferred(&lists, CIPHERS).unwrap();
            (preferred.host_key_certificates.iter())
                .map(Algorithm::to_certificate_type)
                .collect()
        };
        let all = certificates(None);
        assert!(
            all.contains(&"ssh-ed25519-cert-v01@openssh.com".to_owned()),
            "{all:?}"
        );
        assert_eq!(
            certificates(Some("ssh-ed25519-cert-v01@openssh.com,ssh-ed25519")),
            ["ssh-ed25519-cert-v01@openssh.com"]
        );
        assert!(certificates(Some("ssh-ed25519,rsa-sha2-512")).is_empty());
        assert!(certificates(Some("-*-cert-v01@openssh.com")).is_empty());
        let reordered = certificates(Some("^ecdsa-sha2-nistp256-cert-v01@openssh.com"));
        assert_eq!(reordered[0], "ecdsa-sha2-nistp256-cert-v01@openssh.com");
        assert_eq!(reordered.len(), all.len());
    }

    #[test]
    fn kex_lists_keep_the_protocol_extensions() {
        let lists = AlgorithmLists {
            kex: Some("curve25519-sha256".to_owned()),
            host_keys: Some("ssh-ed25519,rsa-sha2-*".to_owned()),
            ..AlgorithmLists::default()
        };
        let preferred = preferred(&lists, CIPHERS).unwrap();
        let kex: Vec<&str> = preferred.kex.iter().map(AsRef::as_ref).collect();
        assert_eq!(kex[0], "curve25519-sha256");
        assert!(kex.contains(&"ext-info-c"), "{kex:?}");
        assert!(kex.contains(&"kex-strict-c-v00@openssh.com"), "{kex:?}");
        assert_eq!(names(&preferred)[0], ["curve25519-sha256"]);
        assert_eq!(
            names(&preferred)[1],
            ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]
        );
    }
}
