//! OpenSSH `known_hosts` files: is this host key trusted, unknown, changed or revoked?
//!
//! The format is the one sshd(8) documents under "SSH_KNOWN_HOSTS FILE FORMAT", read the
//! way OpenSSH's `hostfile.c` reads it:
//!
//! ```text
//! [@marker] patterns keytype base64-blob [comment]
//! ```
//!
//! - Fields are separated by any run of spaces and tabs; blank lines and lines whose first
//!   non-blank character is `#` are skipped.
//! - `patterns` is a comma-separated list. A plain pattern (`web1`, `*.example.com`,
//!   `10.0.0.?`) is matched against the host name alone when the port is 22 and against
//!   `[host]:port` otherwise, so a plain name never matches another port and
//!   `[127.0.0.1]:2222` matches only port 2222. Patterns are globs (`*`, `?`) matched
//!   against that whole string, exactly as OpenSSH does: a bare `*` therefore matches every
//!   host on every port, while `*.example.com` does not match `[a.example.com]:2222`.
//!   `!pattern` vetoes the line for a host it matches, whatever the other patterns say.
//! - A host field starting with `|` is a single hashed name, `|1|salt|HMAC-SHA1(salt,
//!   name)`, as `ssh-keygen -H` and `HashKnownHosts yes` write it.
//! - Host names compare case-insensitively: both the name being looked up and the patterns
//!   are lowercased (ASCII) first, as `ssh` does before it hashes or matches.
//! - `@revoked` lines list keys that must never be accepted. `@cert-authority` lines name
//!   CAs that sign *certificate* host keys for the hosts their patterns match
//!   ([`authorities`]); a CA line never makes a plain key trusted, and never makes it look
//!   changed either.
//!
//! Anything malformed (unknown marker, bad base64, a blob whose embedded type disagrees
//! with the line's key type, a truncated line) is skipped, like OpenSSH skips it: a broken
//! line in a file a person edits by hand must not lock them out of every other host, and
//! reading must never panic or fail on content.
//!
//! Nothing here talks to the network or knows about russh: callers pass the key's type
//! name (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`: the name inside the blob, not a
//! signature algorithm such as `rsa-sha2-512`) and its wire-format blob.

use std::{
    fs,
    io::{self, Read, Seek, SeekFrom, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use data_encoding::{BASE64, BASE64_NOPAD};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// What the known_hosts files say about the key a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A plain (unmarked) line for this host lists exactly this key.
    Trusted,
    /// No plain line for this host has a key of this type. Lines with keys of *other* types
    /// may exist: OpenSSH also treats that as "not yet known" and offers to add the key.
    Unknown,
    /// Lines for this host have keys of this type, but none is this key: either the server
    /// was reinstalled or someone is in the middle. Names the first such line so the person
    /// can look at it (and remove it if the change is expected).
    Changed {
        /// The file holding that line.
        path: PathBuf,
        /// Its line number, counting from 1.
        line: usize,
        /// The key type both the line and the presented key have.
        key_type: String,
    },
    /// An `@revoked` line lists this key. Wins over everything, including a plain line that
    /// trusts the same key.
    Revoked {
        /// The file holding the `@revoked` line.
        path: PathBuf,
        /// Its line number, counting from 1.
        line: usize,
    },
}

#[cfg(test)]
/// Checks one known_hosts text (the contents of `path`, which is used only to name lines
/// in the verdict) for `host` on `port`.
pub(crate) fn check(
    text: &str,
    path: &Path,
    host: &str,
    port: u16,
    key_type: &str,
    key_blob: &[u8],
) -> Verdict {
    let wanted = Wanted::new(host, port, key_type, key_blob);
    let mut findings = Findings::default();
    scan(text, path, &wanted, &mut findings);
    findings.verdict(key_type)
}

/// Checks several known_hosts files as one, in order, as `ssh` does with the files named by
/// `UserKnownHostsFile`: revoked anywhere beats trusted anywhere, which beats changed (the
/// first same-type line across the files, in order), which beats unknown.
///
/// A missing file counts as empty (most people have no `known_hosts2`). Any other I/O error
/// (a directory in the way, no permission) is returned: silently skipping a file that
/// exists but cannot be read could hide an `@revoked` line.
pub(crate) fn check_files(
    paths: &[PathBuf],
    host: &str,
    port: u16,
    key_type: &str,
    key_blob: &[u8],
) -> io::Result<Verdict> {
    let wanted = Wanted::new(host, port, key_type, key_blob);
    Ok(scan_files(paths, &wanted)?.verdict(key_type))
}

/// A certificate authority an `@cert-authority` line trusts for a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authority {
    /// The CA key's type name.
    pub(crate) key_type: String,
    /// The CA key's wire-format blob.
    pub(crate) key_blob: Vec<u8>,
    /// The file holding the line.
    pub(crate) path: PathBuf,
    /// Its line number, counting from 1.
    pub(crate) line: usize,
}

/// The CAs whose `@cert-authority` lines match `host` on `port` (by the same patterns,
/// hashes and `[host]:port` rule as plain lines), in file and line order. Errors as
/// [`check_files`].
pub(crate) fn authorities(paths: &[PathBuf], host: &str, port: u16) -> io::Result<Vec<Authority>> {
    let wanted = Wanted::new(host, port, "", &[]);
    Ok(scan_files(paths, &wanted)?.authorities)
}

/// Reads every file into one [`Findings`]; a missing file counts as empty.
fn scan_files(paths: &[PathBuf], wanted: &Wanted<'_>) -> io::Result<Findings> {
    let mut findings = Findings::default();
    for path in paths {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Non-UTF-8 bytes can only sit in comments or broken lines; lossy decoding keeps
        // every other line readable.
        scan(
            &String::from_utf8_lossy(&bytes),
            path,
            wanted,
            &mut findings,
        );
    }
    Ok(findings)
}

/// The line to append when a new host key is accepted (`StrictHostKeyChecking
/// accept-new`): `host keytype base64` for port 22, `[host]:port keytype base64` otherwise,
/// with the host lowercased, as `ssh` writes it. No newline at the end.
///
/// Returns `None` when `host` or `key_type` could not be written as a plain entry: empty,
/// or containing whitespace, a control character, `,` `*` `?` `[` `]`, or starting with
/// `!` `#` `@` `|`. Writing such a name verbatim would create a *pattern*, a comment or a
/// marker instead of an entry for this one host: `a,*` would trust the key for every host.
pub(crate) fn entry_line(host: &str, port: u16, key_type: &str, key_blob: &[u8]) -> Option<String> {
    let plain_host = !host.is_empty()
        && !host.starts_with(['!', '#', '@', '|'])
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ",*?[]".contains(c));
    let plain_type = !key_type.is_empty()
        && !key_type.starts_with(['#', '@'])
        && !key_type
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    if !plain_host || !plain_type {
        return None;
    }
    Some(format!(
        "{} {key_type} {}",
        lookup_name(host, port),
        BASE64.encode(key_blob)
    ))
}

/// Appends `line` (one entry, without a newline) to the known_hosts file at `path`.
///
/// Creates the parent directory (mode 0700, like `~/.ssh`) and the file (mode 0600) when
/// they are missing; existing ones keep their modes. If the file's last line has no
/// newline, one is written first: otherwise the entry would be glued onto that line and
/// both would become one malformed line. A `line` containing a line break is refused with
/// `InvalidInput`, since it would smuggle a second entry into the file.
pub(crate) fn append(path: &Path, line: &str) -> io::Result<()> {
    if line.contains(['\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a known_hosts entry must be a single line",
        ));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut entry = Vec::with_capacity(line.len() + 2);
    if file.metadata()?.len() > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            entry.push(b'\n');
        }
    }
    entry.extend_from_slice(line.as_bytes());
    entry.push(b'\n');
    // One write with O_APPEND: two processes accepting keys at once each land a whole line.
    file.write_all(&entry)
}

/// The key's fingerprint as `ssh-keygen -l` and `ssh` print it: `SHA256:` followed by the
/// unpadded base64 of the SHA-256 of the blob.
pub(crate) fn fingerprint(key_blob: &[u8]) -> String {
    format!("SHA256:{}", BASE64_NOPAD.encode(&Sha256::digest(key_blob)))
}

/// The name a line's patterns and hashes are matched against: `host` for port 22,
/// `[host]:port` otherwise, lowercased. OpenSSH builds the same string (`put_host_port`),
/// so hashed lines written by `ssh` for a non-standard port match here too.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The key being looked up, prepared once for every line of every file.
struct Wanted<'a> {
    /// See [`lookup_name`].
    name: String,
    /// The presented key's type name.
    key_type: &'a str,
    /// The presented key's wire-format blob.
    key_blob: &'a [u8],
}

impl<'a> Wanted<'a> {
    /// Prepares a lookup.
    fn new(host: &str, port: u16, key_type: &'a str, key_blob: &'a [u8]) -> Self {
        Wanted {
            name: lookup_name(host, port),
            key_type,
            key_blob,
        }
    }
}

/// What the lines read so far said, kept across files so that several files give one
/// verdict.
#[derive(Default)]
struct Findings {
    /// The first `@revoked` line listing the key.
    revoked: Option<(PathBuf, usize)>,
    /// Whether a plain line for the host lists the key.
    trusted: bool,
    /// The first plain line for the host with a key of the same type but another blob.
    changed: Option<(PathBuf, usize)>,
    /// The `@cert-authority` lines for the host.
    authorities: Vec<Authority>,
}

impl Findings {
    /// The verdict, by precedence: revoked, trusted, changed, unknown. Precedence rather
    /// than first-line-wins is what makes "an old key, then the new key" for the same host
    /// trusted instead of changed.
    fn verdict(self, key_type: &str) -> Verdict {
        if let Some((path, line)) = self.revoked {
            Verdict::Revoked { path, line }
        } else if self.trusted {
            Verdict::Trusted
        } else if let Some((path, line)) = self.changed {
            Verdict::Changed {
                path,
                line,
                key_type: key_type.to_owned(),
            }
        } else {
            Verdict::Unknown
        }
    }
}

/// A line's marker.
#[derive(Debug, PartialEq, Eq)]
enum Marker {
    /// No marker: an ordinary host key line.
    None,
    /// `@cert-authority`.
    CertAuthority,
    /// `@revoked`.
    Revoked,
}

/// Reads every line of one file into `findings`.
fn scan(text: &str, path: &Path, wanted: &Wanted<'_>, findings: &mut Findings) {
    for (index, line) in text.lines().enumerate() {
        let Some(entry) = parse_line(line) else {
            continue;
        };
        let same_key = entry.key_type == wanted.key_type && entry.key_blob == wanted.key_blob;
        match entry.marker {
            // Revocation is about the key, not the host: a line revoking a key for any
            // host pattern refuses that key everywhere. (OpenSSH only consults `@revoked`
            // lines whose patterns match; refusing more widely is the safe side of that
            // difference, since a revoked key is one its owner no longer controls.)
            Marker::Revoked => {
                if same_key && findings.revoked.is_none() {
                    findings.revoked = Some((path.to_owned(), index + 1));
                }
            }
            Marker::CertAuthority => {
                if host_field_matches(entry.hosts, &wanted.name) {
                    findings.authorities.push(Authority {
                        key_type: entry.key_type.to_owned(),
                        key_blob: entry.key_blob,
                        path: path.to_owned(),
                        line: index + 1,
                    });
                }
            }
            Marker::None => {
                if !host_field_matches(entry.hosts, &wanted.name) {
                    continue;
                }
                if same_key {
                    findings.trusted = true;
                } else if entry.key_type == wanted.key_type && findings.changed.is_none() {
                    findings.changed = Some((path.to_owned(), index + 1));
                }
            }
        }
    }
}

/// One well-formed line.
struct Entry<'a> {
    /// The line's marker, if any.
    marker: Marker,
    /// The host field, unparsed: patterns are looked at for unmarked and CA lines.
    hosts: &'a str,
    /// The key type field, which the blob's embedded type agrees with.
    key_type: &'a str,
    /// The decoded key blob.
    key_blob: Vec<u8>,
}

/// Splits and checks one line; `None` for blank lines, comments and anything malformed.
fn parse_line(line: &str) -> Option<Entry<'_>> {
    // Spaces and tabs only, like OpenSSH; `lines()` has already removed a trailing `\r`.
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let mut first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let marker = match first {
        "@cert-authority" => Marker::CertAuthority,
        "@revoked" => Marker::Revoked,
        _ if first.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = first;
    let key_type = fields.next()?;
    let key_blob = decode_base64(fields.next()?)?;
    // The blob names its own type; a line whose two names disagree is corrupt (or an
    // attempt to make one key pass for another type), and OpenSSH rejects it too.
    if blob_key_type(&key_blob)? != key_type.as_bytes() {
        return None;
    }
    Some(Entry {
        marker,
        hosts,
        key_type,
        key_blob,
    })
}

/// The type name at the start of an SSH wire-format public key blob: a big-endian `u32`
/// length, then that many bytes.
fn blob_key_type(blob: &[u8]) -> Option<&[u8]> {
    let (len, rest) = blob.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    rest.get(..len)
}

/// Standard base64, padded as `ssh` writes it; unpadded is accepted too since nothing is
/// ambiguous about it and hand-edited files sometimes lose the `=`.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    BASE64
        .decode(text.as_bytes())
        .or_else(|_| BASE64_NOPAD.decode(text.as_bytes()))
        .ok()
}

/// Whether a host field (hashed, or a pattern list) matches the lookup name.
fn host_field_matches(field: &str, name: &str) -> bool {
    if field.starts_with('|') {
        hashed_matches(field, name)
    } else {
        pattern_list_matches(field, name)
    }
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`. The whole field is one hashed name:
/// OpenSSH does not split it on commas. Any other shape is a line to skip.
fn hashed_matches(field: &str, name: &str) -> bool {
    let mut parts = field.split('|');
    let (Some(""), Some("1"), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(salt), Some(hash)) = (decode_base64(salt), decode_base64(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// A comma-separated pattern list: matches when some pattern matches and no `!pattern`
/// does. The veto is what lets `*.example.com,!bastion.example.com` exclude one host.
fn pattern_list_matches(list: &str, name: &str) -> bool {
    let mut positive = false;
    for pattern in list.split(',') {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix('!') {
            Some(negated) => {
                if glob_matches(negated, name) {
                    return false;
                }
            }
            None => positive |= glob_matches(&pattern, name),
        }
    }
    positive
}

/// OpenSSH's `match_pattern`: `*` matches any run of bytes (including none), `?` exactly
/// one byte, everything else itself. Iterative with one backtrack point, so a hostile
/// pattern like `*a*a*a*a*b` costs O(pattern × name), never exponential time.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                // Let the last `*` swallow one more byte and retry from there.
                Some((star, from)) => {
                    backtrack = Some((star, from + 1));
                    p = star + 1;
                    t = from + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-keygen -t ed25519 -C fixture`; `ssh-keygen -lf` prints
    /// `256 SHA256:IjFPLVduRQZXq0h4+D1Y0qa5PK/9nd0/bZJRgL8pIXA fixture (ED25519)`.
    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIMjhWeb0/nh+pF88fiwvI39dFP8NLYgLbqVG7L1Z0HXX";
    /// A second ed25519 key, standing for "the server's old key".
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIIQGcVGtnIYtDAFM8dfyWT+aRxh+RoyV3NbPfpYipxoZ";
    /// `ssh-keygen -t ecdsa`; `ssh-keygen -lf` prints
    /// `256 SHA256:1s7oZ1Cejwg5Y4z8YepvGCKbqVx16lZS/LgVARslJ+s e (ECDSA)`.
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCuuGis9RN8emgFpB68NWTfsSNH8+eNGX+qyKqqrQvkdYE+PdZDUoZ5uQ0VzB6bXse6vIhk6DVldbJssvshfp28=";

    fn blob(b64: &str) -> Vec<u8> {
        BASE64.decode(b64.as_bytes()).unwrap()
    }

    fn path() -> PathBuf {
        PathBuf::from("/home/u/.ssh/known_hosts")
    }

    fn ed(text: &str, host: &str, port: u16, key: &str) -> Verdict {
        check(text, &path(), host, port, "ssh-ed25519", &blob(key))
    }

    fn changed(line: usize) -> Verdict {
        Verdict::Changed {
            path: path(),
            line,
            key_type: "ssh-ed25519".into(),
        }
    }

    #[test]
    fn a_plain_line_with_the_key_is_trusted() {
        let text = format!("example.com ssh-ed25519 {ED_A} me@laptop\n");
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "other.com", 22, ED_A), Verdict::Unknown);
    }

    #[test]
    fn tabs_and_runs_of_blanks_separate_fields() {
        let text = format!("  example.com\t\tssh-ed25519 \t  {ED_A}\t comment here\n");
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Trusted);
    }

    #[test]
    fn crlf_line_endings_are_read() {
        let text = format!("example.com ssh-ed25519 {ED_A}\r\nother ssh-ed25519 {ED_B}\r\n");
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Trusted);
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = format!("# example.com ssh-ed25519 {ED_A}\n\n   \n\t# indented\n");
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Unknown);
    }

    #[test]
    fn another_key_of_the_same_type_is_a_change_naming_the_first_such_line() {
        let text = format!(
            "# header\nexample.com ssh-ed25519 {ED_B}\nexample.com ssh-ed25519 {ED_B} again\n"
        );
        assert_eq!(ed(&text, "example.com", 22, ED_A), changed(2));
    }

    #[test]
    fn an_old_line_then_the_right_line_is_trusted_in_either_order() {
        let old_first = format!("example.com ssh-ed25519 {ED_B}\nexample.com ssh-ed25519 {ED_A}\n");
        let right_first =
            format!("example.com ssh-ed25519 {ED_A}\nexample.com ssh-ed25519 {ED_B}\n");
        assert_eq!(ed(&old_first, "example.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&right_first, "example.com", 22, ED_A), Verdict::Trusted);
    }

    #[test]
    fn only_other_key_types_for_the_host_is_unknown() {
        let text = format!("example.com ecdsa-sha2-nistp256 {ECDSA}\n");
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Unknown);
        // And the other way round: the ECDSA key itself is trusted.
        let verdict = check(
            &text,
            &path(),
            "example.com",
            22,
            "ecdsa-sha2-nistp256",
            &blob(ECDSA),
        );
        assert_eq!(verdict, Verdict::Trusted);
    }

    #[test]
    fn the_line_type_must_match_the_blob_and_the_presented_type() {
        // The line claims ssh-rsa but the blob is ed25519: corrupt, skipped.
        let lying = format!("example.com ssh-rsa {ED_A}\n");
        assert_eq!(ed(&lying, "example.com", 22, ED_A), Verdict::Unknown);
        let verdict = check(&lying, &path(), "example.com", 22, "ssh-rsa", &blob(ED_A));
        assert_eq!(verdict, Verdict::Unknown);
    }

    #[test]
    fn a_bare_name_matches_only_port_22_and_a_bracketed_one_only_its_port() {
        let text = format!("example.com ssh-ed25519 {ED_A}\n[127.0.0.1]:2222 ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "example.com", 2222, ED_A), Verdict::Unknown);
        assert_eq!(ed(&text, "127.0.0.1", 2222, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "127.0.0.1", 22, ED_A), Verdict::Unknown);
        assert_eq!(ed(&text, "127.0.0.1", 2223, ED_A), Verdict::Unknown);
    }

    #[test]
    fn ipv6_with_a_port() {
        let text = format!("[::1]:2222 ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&text, "::1", 2222, ED_A), Verdict::Trusted);
    }

    #[test]
    fn hosts_match_case_insensitively() {
        let text = format!("Example.COM,[Web.Example.com]:2200 ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&text, "EXAMPLE.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "web.example.COM", 2200, ED_A), Verdict::Trusted);
    }

    #[test]
    fn comma_separated_names_each_match() {
        let text = format!("web1,web1.example.com,10.0.0.5 ssh-ed25519 {ED_A}\n");
        for host in ["web1", "web1.example.com", "10.0.0.5"] {
            assert_eq!(ed(&text, host, 22, ED_A), Verdict::Trusted, "{host}");
        }
        assert_eq!(ed(&text, "web2", 22, ED_A), Verdict::Unknown);
    }

    #[test]
    fn wildcards() {
        let text = format!("*.example.com,10.0.0.? ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&text, "a.example.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "a.b.example.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Unknown);
        assert_eq!(ed(&text, "10.0.0.7", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "10.0.0.17", 22, ED_A), Verdict::Unknown);
        // The pattern is matched against `[host]:port` for other ports, as in OpenSSH.
        assert_eq!(ed(&text, "a.example.com", 2222, ED_A), Verdict::Unknown);
        let any_port = format!("[*.example.com]:* ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&any_port, "a.example.com", 2222, ED_A), Verdict::Trusted);
    }

    #[test]
    fn negation_vetoes_the_line_whatever_else_matches() {
        let text = format!("*.example.com,!bastion.example.com ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&text, "web.example.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "bastion.example.com", 22, ED_A), Verdict::Unknown);
        // Order does not matter, and a veto alone never matches.
        let first = format!("!bastion.example.com,*.example.com ssh-ed25519 {ED_A}\n");
        assert_eq!(
            ed(&first, "bastion.example.com", 22, ED_A),
            Verdict::Unknown
        );
        let alone = format!("!bastion.example.com ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&alone, "web.example.com", 22, ED_A), Verdict::Unknown);
        // A vetoed line is not a "changed" line either.
        let other = format!("*,!bastion.example.com ssh-ed25519 {ED_B}\n");
        assert_eq!(
            ed(&other, "bastion.example.com", 22, ED_A),
            Verdict::Unknown
        );
    }

    /// Written by `ssh-keygen -H` from `example.com ssh-ed25519 ED_A` and
    /// `[127.0.0.1]:2222 ssh-ed25519 ED_A`.
    const HASHED: &str = "\
|1|TJDdpOzemmrwtHa8mx09zQM6BMQ=|ycHZjgyw8tptcpEZYsz5Cn4FJnw= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMjhWeb0/nh+pF88fiwvI39dFP8NLYgLbqVG7L1Z0HXX
|1|61Z5MmSPdDI8hLloO4tMFeMr/Jc=|WkXUqYQRgzT/1PF9+ZwrSnaXADY= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMjhWeb0/nh+pF88fiwvI39dFP8NLYgLbqVG7L1Z0HXX
";

    #[test]
    fn hashed_lines_from_ssh_keygen() {
        assert_eq!(ed(HASHED, "example.com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(HASHED, "Example.Com", 22, ED_A), Verdict::Trusted);
        assert_eq!(ed(HASHED, "127.0.0.1", 2222, ED_A), Verdict::Trusted);
        assert_eq!(ed(HASHED, "127.0.0.1", 22, ED_A), Verdict::Unknown);
        assert_eq!(ed(HASHED, "example.org", 22, ED_A), Verdict::Unknown);
        assert_eq!(ed(HASHED, "example.com", 22, ED_B), changed(1));
    }

    #[test]
    fn hashed_lines_computed_independently() {
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[db.internal]:2200");
        let hash = mac.finalize().into_bytes();
        let text = format!(
            "|1|{}|{} ssh-ed25519 {ED_A}\n",
            BASE64.encode(&salt),
            BASE64.encode(&hash)
        );
        assert_eq!(ed(&text, "db.internal", 2200, ED_A), Verdict::Trusted);
        assert_eq!(ed(&text, "db.internal", 22, ED_A), Verdict::Unknown);
    }

    #[test]
    fn malformed_hashed_fields_are_skipped() {
        for field in [
            "|1|",
            "|1|!!!|???",
            "|2|TJDdpOzemmrwtHa8mx09zQM6BMQ=|ycHZjgyw8tptcpEZYsz5Cn4FJnw=",
            "|1|TJDdpOzemmrwtHa8mx09zQM6BMQ=|ycHZjgyw8tptcpEZYsz5Cn4FJnw=|extra",
            "|1||ycHZjgyw8tptcpEZYsz5Cn4FJnw=",
            "|",
        ] {
            let text = format!("{field} ssh-ed25519 {ED_A}\n");
            assert_eq!(
                ed(&text, "example.com", 22, ED_A),
                Verdict::Unknown,
                "{field}"
            );
        }
    }

    #[test]
    fn revoked_wins_over_trusted_for_any_host_pattern() {
        let text = format!(
            "example.com ssh-ed25519 {ED_A}\n@revoked * ssh-ed25519 {ED_A}\n\
             @revoked\tsomewhere.else ssh-ed25519 {ED_A}\n"
        );
        assert_eq!(
            ed(&text, "example.com", 22, ED_A),
            Verdict::Revoked {
                path: path(),
                line: 2
            }
        );
        let elsewhere = format!("@revoked   old.host ssh-ed25519 {ED_A}\n");
        assert_eq!(
            ed(&elsewhere, "example.com", 2222, ED_A),
            Verdict::Revoked {
                path: path(),
                line: 1
            }
        );
        // Revoking another key says nothing about this one.
        let other = format!("@revoked * ssh-ed25519 {ED_B}\nexample.com ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&other, "example.com", 22, ED_A), Verdict::Trusted);
    }

    #[test]
    fn cert_authority_lines_neither_trust_nor_change() {
        let trusts = format!("@cert-authority example.com ssh-ed25519 {ED_A}\n");
        assert_eq!(ed(&trusts, "example.com", 22, ED_A), Verdict::Unknown);
        let differs = format!("@cert-authority *.example.com ssh-ed25519 {ED_B}\n");
        assert_eq!(ed(&differs, "a.example.com", 22, ED_A), Verdict::Unknown);
    }

    #[test]
    fn cert_authority_lines_are_found_for_the_hosts_they_match() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        fs::write(
            &file,
            format!(
                "example.com ssh-ed25519 {ED_A}\n@cert-authority *.example.com,!x.example.com \
                 ssh-ed25519 {ED_B}\n@cert-authority [*]:2222 ssh-ed25519 {ED_A}\n{}\n",
                HASHED
                    .lines()
                    .next()
                    .unwrap()
                    .replacen("|1|", "@cert-authority |1|", 1)
            ),
        )
        .unwrap();
        let found = |host: &str, port: u16| -> Vec<usize> {
            authorities(std::slice::from_ref(&file), host, port)
                .unwrap()
                .iter()
                .map(|a| a.line)
                .collect()
        };
        assert_eq!(found("a.example.com", 22), [2]);
        assert_eq!(found("x.example.com", 22), Vec::<usize>::new());
        assert_eq!(found("a.example.com", 2222), [3]);
        assert_eq!(found("example.com", 22), [4]);
        assert_eq!(found("other", 22), Vec::<usize>::new());
        let first = &authorities(std::slice::from_ref(&file), "a.example.com", 22).unwrap()[0];
        assert_eq!(first.key_type, "ssh-ed25519");
        assert_eq!(first.key_blob, blob(ED_B));
    }

    #[test]
    fn unknown_or_doubled_markers_make_the_line_malformed() {
        for marker in [
            "@trusted",
            "@",
            "@revoked @revoked",
            "@cert-authority @revoked",
        ] {
            let text = format!("{marker} example.com ssh-ed25519 {ED_A}\n");
            assert_eq!(
                ed(&text, "example.com", 22, ED_A),
                Verdict::Unknown,
                "{marker}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_skipped_and_the_rest_still_read() {
        let text = format!(
            "example.com\n\
             example.com ssh-ed25519\n\
             example.com ssh-ed25519 not*base64\n\
             example.com ssh-ed25519 AAAA\n\
             example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n\
             @revoked\n\
             \u{0}\u{ffff} \u{1} \u{7f}\n\
             example.com ssh-ed25519 {ED_A}\n"
        );
        assert_eq!(ed(&text, "example.com", 22, ED_A), Verdict::Trusted);
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of a realistic file, and some hostile shapes, must parse or be
        // skipped without panicking.
        let file = format!(
            "@revoked * ssh-ed25519 {ED_B}\n{HASHED}[h]:2 ssh-ed25519 {ED_A} c\n*,!x ecdsa-sha2-nistp256 {ECDSA}\n"
        );
        for end in (0..=file.len()).filter(|&i| file.is_char_boundary(i)) {
            let _ = ed(&file[..end], "h", 2, ED_A);
        }
        let hostile = format!("{} ssh-ed25519 {ED_A}\n", "*a".repeat(2000));
        assert_eq!(ed(&hostile, &"a".repeat(3000), 22, ED_A), Verdict::Trusted);
        let _ = ed("\u{feff}", "h", 22, ED_A);
        // A blob claiming a type longer than itself.
        let _ = check(
            "h ssh-ed25519 /////w==\n",
            &path(),
            "h",
            22,
            "ssh-ed25519",
            &[],
        );
    }

    #[test]
    fn glob_matching() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(!glob_matches("a*b", "aXXc"));
        assert!(glob_matches("**", "x"));
        assert!(!glob_matches("", "x"));
    }

    #[test]
    fn several_files_give_one_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("known_hosts");
        let second = dir.path().join("known_hosts2");
        let missing = dir.path().join("missing");
        fs::write(&first, format!("example.com ssh-ed25519 {ED_B}\n")).unwrap();
        fs::write(&second, format!("example.com ssh-ed25519 {ED_A}\n")).unwrap();
        let run = |paths: &[PathBuf]| {
            check_files(paths, "example.com", 22, "ssh-ed25519", &blob(ED_A)).unwrap()
        };
        assert_eq!(
            run(&[missing.clone(), first.clone(), second.clone()]),
            Verdict::Trusted
        );
        assert_eq!(
            run(&[first.clone(), missing.clone()]),
            Verdict::Changed {
                path: first.clone(),
                line: 1,
                key_type: "ssh-ed25519".into()
            }
        );
        assert_eq!(run(std::slice::from_ref(&missing)), Verdict::Unknown);
        assert_eq!(run(&[]), Verdict::Unknown);
        fs::write(&second, format!("@revoked * ssh-ed25519 {ED_A}\n")).unwrap();
        fs::write(&first, format!("example.com ssh-ed25519 {ED_A}\n")).unwrap();
        assert_eq!(
            run(&[first.clone(), second.clone()]),
            Verdict::Revoked {
                path: second.clone(),
                line: 1
            }
        );
        // A file that exists but cannot be read is an error, not an empty file.
        assert!(check_files(&[dir.path().to_owned()], "h", 22, "ssh-ed25519", &[]).is_err());
    }

    #[test]
    fn entry_lines_look_like_the_ones_ssh_writes_and_are_trusted_back() {
        let key = blob(ED_A);
        let line = entry_line("Example.com", 22, "ssh-ed25519", &key).unwrap();
        assert_eq!(line, format!("example.com ssh-ed25519 {ED_A}"));
        let line = entry_line("127.0.0.1", 2222, "ssh-ed25519", &key).unwrap();
        assert_eq!(line, format!("[127.0.0.1]:2222 ssh-ed25519 {ED_A}"));
        assert_eq!(ed(&line, "127.0.0.1", 2222, ED_A), Verdict::Trusted);
        let line = entry_line("::1", 22, "ssh-ed25519", &key).unwrap();
        assert_eq!(ed(&line, "::1", 22, ED_A), Verdict::Trusted);
    }

    #[test]
    fn entry_lines_refuse_names_that_would_become_patterns() {
        let key = blob(ED_A);
        for host in [
            "", "a,*", "*", "web?", "!x", "#x", "@revoked", "|1|x", "a b", "a\tb", "[a]", "a\nb",
        ] {
            assert_eq!(entry_line(host, 22, "ssh-ed25519", &key), None, "{host:?}");
        }
        for key_type in ["", "ssh ed25519", "ssh-ed25519\n", "#x"] {
            assert_eq!(entry_line("h", 22, key_type, &key), None, "{key_type:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn append_creates_private_dir_and_file_and_keeps_lines_apart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ssh_dir = dir.path().join("home/.ssh");
        let file = ssh_dir.join("known_hosts");
        append(&file, "a ssh-ed25519 AAAA").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ssh_dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        append(&file, "b ssh-ed25519 BBBB").unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "a ssh-ed25519 AAAA\nb ssh-ed25519 BBBB\n"
        );
        // A last line without its newline is not glued to the new entry.
        fs::write(&file, "c ssh-ed25519 CCCC").unwrap();
        append(&file, "d ssh-ed25519 DDDD").unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "c ssh-ed25519 CCCC\nd ssh-ed25519 DDDD\n"
        );
        let err = append(&file, "e ssh-ed25519 E\n* ssh-ed25519 E").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        assert_eq!(
            fingerprint(&blob(ED_A)),
            "SHA256:IjFPLVduRQZXq0h4+D1Y0qa5PK/9nd0/bZJRgL8pIXA"
        );
        assert_eq!(
            fingerprint(&blob(ECDSA)),
            "SHA256:1s7oZ1Cejwg5Y4z8YepvGCKbqVx16lZS/LgVARslJ+s"
        );
    }
}
