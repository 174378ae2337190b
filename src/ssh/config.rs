//! The part of ssh_config(5) leadpipe honours, read the way OpenSSH's `readconf.c` reads it.
//!
//! People already describe their hosts in `~/.ssh/config`; an SSH machine that ignored it
//! would connect somewhere else, as someone else, with another key. This module answers
//! one question: given the config text and the host name the program asked for, what
//! settings apply?
//!
//! # What is read
//!
//! - `Keyword value`, `Keyword=value` and `Keyword = value`; keywords are case-insensitive.
//!   Values may be quoted with `"` or `'` to hold spaces; `\"`, `\'`, `\\` and (outside
//!   quotes) `\ ` escape one character. A word starting with `#` ends the line.
//! - `Host pattern...` starts a block that applies when some pattern matches the host name
//!   and no `!pattern` does. Patterns are globs (`*`, `?`), compared case-insensitively.
//!   Lines before the first `Host` apply to every host.
//! - For each keyword the **first** value that applies wins, so specific blocks go before
//!   `Host *`. `IdentityFile` is the exception: every applicable line adds a file.
//!   `UserKnownHostsFile` takes several files on one line, and its first applicable line
//!   wins as a whole (as in OpenSSH: a later `Host *` default does not add files to a
//!   host that named its own, which would widen the set of trusted keys).
//! - `Include` reads other files in place: `~` is the home directory, relative paths are
//!   under `~/.ssh`, and `*`/`?` may appear in the last path component (matches are read
//!   in name order, names starting with `.` are not matched, missing files are skipped).
//!   An `Include` inside a block that does not apply reads nothing that applies.
//! - `Match` blocks are **not** supported: their conditions (`exec`, `canonical`, `final`,
//!   ...) need state leadpipe does not have, so every line from `Match` up to the next
//!   `Host` or `Match` is checked for errors but never applied. Guessing which `Match`
//!   applies could connect with the wrong key or to the wrong host; skipping it only
//!   loses settings a person can move into a `Host` block.
//! - Keywords other than those in [`HostConfig`] are ignored: ssh_config has dozens, and
//!   a config written for `ssh` must not be rejected by leadpipe.
//!
//! Values are checked in every block, applicable or not, so a mistake is reported the
//! same way whichever host a program connects to. Errors name the file and line.
//!
//! # Expansions
//!
//! `IdentityFile` and `UserKnownHostsFile` expand a leading `~` and the tokens `%d` (home
//! directory), `%h` (the remote host name, after `HostName`), `%n` (the host name as
//! given), `%p` (the port), `%r` (the remote user), `%u` (the local user) and `%%`.
//! `HostName` expands `%h` (the host name as given) and `%%`. Other tokens are an error
//! rather than a file name with a `%` in it. `${VAR}` is left alone, and so is `~user`.
//!
//! Nothing here reads the environment: the home directory and the local user name come in
//! an [`ExpandContext`], which keeps the result reproducible and the tests hermetic.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::known_hosts::glob_matches;

/// What expansions need to know about the local side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandContext {
    /// The local user's home directory: `~`, `%d`, and the base of relative `Include`s.
    pub(crate) home: PathBuf,
    /// The local user name: `%u`, and `%r` when no `User` is set.
    pub(crate) local_user: String,
}

/// How to treat a host key that is not in known_hosts, or differs from the one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrictHostKeyChecking {
    /// Refuse unknown and changed keys (`yes`, `true`).
    Yes,
    /// Accept unknown keys (`no`, `off`, `false`). For a changed key `ssh` still connects,
    /// with a warning and with password authentication turned off; what leadpipe does is
    /// the SSH machine's decision, not this parser's.
    No,
    /// Accept and record unknown keys; refuse changed ones (`accept-new`).
    AcceptNew,
    /// `ask`: `ssh` would prompt. A library has nobody to ask, so callers treat this as
    /// [`Yes`](Self::Yes); it is kept distinct only so an error can say why the key was
    /// refused.
    Ask,
}

/// The settings that apply to one host. `None` (or empty) means the config did not say;
/// the SSH machine then uses its own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostConfig {
    /// `HostName`: the real host to connect to, with `%h` expanded.
    pub(crate) hostname: Option<String>,
    /// `User`.
    pub(crate) user: Option<String>,
    /// `Port`.
    pub(crate) port: Option<u16>,
    /// Every applicable `IdentityFile`, expanded, in order, without duplicates.
    pub(crate) identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly`.
    pub(crate) identities_only: Option<bool>,
    /// `UserKnownHostsFile`, expanded. `None` when not set (use `~/.ssh/known_hosts` and
    /// `~/.ssh/known_hosts2`); `Some` of an empty list for `UserKnownHostsFile none`.
    pub(crate) user_known_hosts_files: Option<Vec<PathBuf>>,
    /// `StrictHostKeyChecking`.
    pub(crate) strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `ConnectTimeout`.
    pub(crate) connect_timeout: Option<Duration>,
    /// `ServerAliveInterval`; zero means keepalives are off.
    pub(crate) server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    pub(crate) server_alive_count_max: Option<u32>,
    /// `ProxyJump`, unparsed (`[user@]host[:port][,...]`). `ProxyJump none` gives `None`,
    /// and, being the first value, stops a later `Host *` from setting one.
    pub(crate) proxy_jump: Option<String>,
}

/// A config file (or text) that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The file, or `None` for text passed to [`resolve`] that has no file.
    pub(crate) path: Option<PathBuf>,
    /// The line, counting from 1, or `None` when the file as a whole could not be read.
    pub(crate) line: Option<usize>,
    /// What was wrong, as a sentence about the value (`Port must be a number ...`).
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{}:{line}: ", path.display())?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, Some(line)) => write!(f, "ssh config line {line}: ")?,
            (None, None) => write!(f, "ssh config: ")?,
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
/// Resolves the settings for `host` (the name the program asked for, before `HostName`)
/// from config text that came from no file; `Include`d files are still read.
pub(crate) fn resolve(
    text: &str,
    host: &str,
    ctx: &ExpandContext,
) -> Result<HostConfig, ConfigError> {
    let mut resolver = Resolver::new(host, ctx);
    resolver.read(text, None, Reach::Applies, 0)?;
    resolver.finish()
}

/// Resolves the settings for `host` from the config file at `path`. A missing file is an
/// empty config, as for `ssh`; a file that exists but cannot be read is an error.
pub(crate) fn resolve_file(
    path: &Path,
    host: &str,
    ctx: &ExpandContext,
) -> Result<HostConfig, ConfigError> {
    let mut resolver = Resolver::new(host, ctx);
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            resolver.read(&text, Some(path), Reach::Applies, 0)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unreadable(path, &e)),
    }
    resolver.finish()
}

/// OpenSSH's limit, which also ends a file that includes itself.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Whether the lines being read can apply to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Lines apply until a `Host` or `Match` line says otherwise.
    Applies,
    /// Lines apply to no host, whatever their `Host` lines say: the file was included from
    /// a block that does not apply.
    Never,
}

/// A value together with the line it came from, so that expanding it later can still name
/// that line in an error.
#[derive(Debug, Clone)]
struct Located {
    /// The value after unquoting, before expansion.
    value: String,
    /// Its file, if any.
    path: Option<PathBuf>,
    /// Its line.
    line: usize,
}

impl Located {
    /// An error about this value.
    fn error(&self, message: String) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: Some(self.line),
            message,
        }
    }
}

/// The first applicable values found so far, before expansion.
struct Resolver<'a> {
    /// The host name as given, lowercased for matching.
    host: String,
    /// The host name as given, for `%n` and `%h`.
    original_host: &'a str,
    /// See [`ExpandContext`].
    ctx: &'a ExpandContext,
    /// `HostName`.
    hostname: Option<Located>,
    /// `User`.
    user: Option<String>,
    /// `Port`.
    port: Option<u16>,
    /// `IdentityFile`s.
    identity_files: Vec<Located>,
    /// `IdentitiesOnly`.
    identities_only: Option<bool>,
    /// `UserKnownHostsFile`: the whole first applicable line.
    user_known_hosts_files: Option<Vec<Located>>,
    /// `StrictHostKeyChecking`.
    strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `ConnectTimeout`.
    connect_timeout: Option<Duration>,
    /// `ServerAliveInterval`.
    server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    server_alive_count_max: Option<u32>,
    /// `ProxyJump`: the outer `Some` records that a value was seen, even `none`.
    proxy_jump: Option<Option<String>>,
}

impl<'a> Resolver<'a> {
    /// Starts with nothing found.
    fn new(host: &'a str, ctx: &'a ExpandContext) -> Self {
        Resolver {
            host: host.to_ascii_lowercase(),
            original_host: host,
            ctx,
            hostname: None,
            user: None,
            port: None,
            identity_files: Vec::new(),
            identities_only: None,
            user_known_hosts_files: None,
            strict_host_key_checking: None,
            connect_timeout: None,
            server_alive_interval: None,
            server_alive_count_max: None,
            proxy_jump: None,
        }
    }

    /// Reads one file's text. `reach` says whether its lines before any `Host` apply.
    fn read(
        &mut self,
        text: &str,
        path: Option<&Path>,
        reach: Reach,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let mut applies = reach == Reach::Applies;
        for (index, raw) in text.lines().enumerate() {
            let at = |message: String| ConfigError {
                path: path.map(Path::to_owned),
                line: Some(index + 1),
                message,
            };
            let Some((keyword, args)) = split_line(raw).map_err(at)? else {
                continue;
            };
            let keyword = keyword.to_ascii_lowercase();
            match keyword.as_str() {
                "host" => applies = reach == Reach::Applies && self.host_matches(&args),
                "match" => applies = false,
                "include" => {
                    if args.is_empty() {
                        return Err(at("Include needs a file name".into()));
                    }
                    if depth + 1 >= MAX_INCLUDE_DEPTH {
                        return Err(at(format!(
                            "Include is nested more than {MAX_INCLUDE_DEPTH} deep \
                             (does a file include itself?)"
                        )));
                    }
                    let reach = if applies {
                        Reach::Applies
                    } else {
                        Reach::Never
                    };
                    for arg in &args {
                        for file in self.include_paths(arg) {
                            let bytes = match fs::read(&file) {
                                Ok(bytes) => bytes,
                                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                                Err(e) => return Err(unreadable(&file, &e)),
                            };
                            let text = String::from_utf8_lossy(&bytes);
                            self.read(&text, Some(&file), reach, depth + 1)?;
                        }
                    }
                }
                _ => {
                    let located = |value: &str| Located {
                        value: value.to_owned(),
                        path: path.map(Path::to_owned),
                        line: index + 1,
                    };
                    self.apply(&keyword, &args, applies, located).map_err(at)?;
                }
            }
        }
        Ok(())
    }

    /// Whether a `Host` line's patterns select this host: one pattern matches and no
    /// negated one does. A negated pattern alone therefore never selects anything.
    fn host_matches(&self, patterns: &[String]) -> bool {
        let mut positive = false;
        for pattern in patterns {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix('!') {
                Some(negated) => {
                    if glob_matches(negated, &self.host) {
                        return false;
                    }
                }
                None => positive |= glob_matches(&pattern, &self.host),
            }
        }
        positive
    }

    /// The files an `Include` argument names, in the order they are read.
    fn include_paths(&self, arg: &str) -> Vec<PathBuf> {
        let path = match arg.strip_prefix('~') {
            Some("") => self.ctx.home.clone(),
            Some(rest) if rest.starts_with('/') => self.ctx.home.join(rest.trim_start_matches('/')),
            _ if Path::new(arg).is_absolute() => PathBuf::from(arg),
            _ => self.ctx.home.join(".ssh").join(arg),
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return vec![path];
        };
        if !name.contains(['*', '?']) {
            return vec![path];
        }
        let dir = path.parent().unwrap_or(Path::new("/"));
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| {
                let entry_name = entry.file_name();
                let entry_name = entry_name.to_string_lossy();
                // Like glob(3): wildcards do not match a leading dot.
                !entry_name.starts_with('.')
                    && glob_matches(name, &entry_name)
                    && entry.path().is_file()
            })
            .map(|entry| entry.path())
            .collect();
        files.sort();
        files
    }

    /// Checks one keyword's arguments and, if the line applies and the keyword has no
    /// value yet, records it. Returns the message for a bad value.
    fn apply(
        &mut self,
        keyword: &str,
        args: &[String],
        applies: bool,
        located: impl Fn(&str) -> Located,
    ) -> Result<(), String> {
        match keyword {
            "hostname" => {
                let value = one_value("HostName", args)?;
                if applies && self.hostname.is_none() {
                    self.hostname = Some(located(value));
                }
            }
            "user" => {
                let value = one_value("User", args)?;
                if applies && self.user.is_none() {
                    self.user = Some(value.to_owned());
                }
            }
            "port" => {
                let port = parse_port(one_value("Port", args)?)?;
                if applies && self.port.is_none() {
                    self.port = Some(port);
                }
            }
            "identityfile" => {
                let value = one_value("IdentityFile", args)?;
                if applies && !self.identity_files.iter().any(|f| f.value == value) {
                    self.identity_files.push(located(value));
                }
            }
            "identitiesonly" => {
                let flag = parse_flag("IdentitiesOnly", one_value("IdentitiesOnly", args)?)?;
                if applies && self.identities_only.is_none() {
                    self.identities_only = Some(flag);
                }
            }
            "userknownhostsfile" => {
                if args.is_empty() {
                    return Err("UserKnownHostsFile needs at least one file".into());
                }
                let none = args.iter().any(|a| a.eq_ignore_ascii_case("none"));
                if none && args.len() > 1 {
                    return Err("UserKnownHostsFile none must be the only value".into());
                }
                if args.iter().any(String::is_empty) {
                    return Err("UserKnownHostsFile has an empty file name".into());
                }
                if applies && self.user_known_hosts_files.is_none() {
                    let files = if none {
                        Vec::new()
                    } else {
                        args.iter().map(|a| located(a)).collect()
                    };
                    self.user_known_hosts_files = Some(files);
                }
            }
            "stricthostkeychecking" => {
                let value = one_value("StrictHostKeyChecking", args)?;
                let mode = match value.to_ascii_lowercase().as_str() {
                    "yes" | "true" => StrictHostKeyChecking::Yes,
                    "no" | "off" | "false" => StrictHostKeyChecking::No,
                    "accept-new" => StrictHostKeyChecking::AcceptNew,
                    "ask" => StrictHostKeyChecking::Ask,
                    _ => {
                        return Err(format!(
                            "StrictHostKeyChecking must be yes, no, accept-new or ask, \
                             not {value:?}"
                        ));
                    }
                };
                if applies && self.strict_host_key_checking.is_none() {
                    self.strict_host_key_checking = Some(mode);
                }
            }
            "connecttimeout" => {
                let time = parse_time("ConnectTimeout", one_value("ConnectTimeout", args)?)?;
                if applies && self.connect_timeout.is_none() {
                    self.connect_timeout = Some(time);
                }
            }
            "serveraliveinterval" => {
                let keyword = "ServerAliveInterval";
                let time = parse_time(keyword, one_value(keyword, args)?)?;
                if applies && self.server_alive_interval.is_none() {
                    self.server_alive_interval = Some(time);
                }
            }
            "serveralivecountmax" => {
                let value = one_value("ServerAliveCountMax", args)?;
                let count = parse_number(value).ok_or_else(|| {
                    format!("ServerAliveCountMax must be a number, not {value:?}")
                })?;
                if applies && self.server_alive_count_max.is_none() {
                    self.server_alive_count_max = Some(count);
                }
            }
            "proxyjump" => {
                let value = one_value("ProxyJump", args)?;
                if applies && self.proxy_jump.is_none() {
                    let jump = (!value.eq_ignore_ascii_case("none")).then(|| value.to_owned());
                    self.proxy_jump = Some(jump);
                }
            }
            // Everything else ssh_config knows (and typos of it): not leadpipe's business.
            _ => {}
        }
        Ok(())
    }

    /// Expands what was found into the settings. Expansion waits until every line has been
    /// read because `%h`, `%p` and `%r` depend on values that may come later in the file.
    fn finish(self) -> Result<HostConfig, ConfigError> {
        let hostname = match &self.hostname {
            Some(hostname) => Some(
                expand(&hostname.value, &[('h', self.original_host)])
                    .map_err(|m| hostname.error(format!("HostName {m}")))?,
            ),
            None => None,
        };
        let port = self.port.unwrap_or(22).to_string();
        let home = self.ctx.home.to_string_lossy();
        let tokens = [
            ('d', home.as_ref()),
            ('h', hostname.as_deref().unwrap_or(self.original_host)),
            ('n', self.original_host),
            ('p', port.as_str()),
            ('r', self.user.as_deref().unwrap_or(&self.ctx.local_user)),
            ('u', self.ctx.local_user.as_str()),
        ];
        let expand_path = |keyword: &str, file: &Located| {
            expand_file(&file.value, &self.ctx.home, &tokens)
                .map_err(|m| file.error(format!("{keyword} {m}")))
        };
        let identity_files = self
            .identity_files
            .iter()
            .map(|f| expand_path("IdentityFile", f))
            .collect::<Result<Vec<_>, _>>()?;
        let user_known_hosts_files = match &self.user_known_hosts_files {
            Some(files) => Some(
                files
                    .iter()
                    .map(|f| expand_path("UserKnownHostsFile", f))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        Ok(HostConfig {
            hostname,
            user: self.user,
            port: self.port,
            identity_files,
            identities_only: self.identities_only,
            user_known_hosts_files,
            strict_host_key_checking: self.strict_host_key_checking,
            connect_timeout: self.connect_timeout,
            server_alive_interval: self.server_alive_interval,
            server_alive_count_max: self.server_alive_count_max,
            proxy_jump: self.proxy_jump.flatten(),
        })
    }
}

/// The error for a file that exists but cannot be read.
fn unreadable(path: &Path, error: &io::Error) -> ConfigError {
    ConfigError {
        path: Some(path.to_owned()),
        line: None,
        message: format!("cannot be read: {error}"),
    }
}

/// Splits a line into its keyword and unquoted arguments; `None` for blank lines and
/// comments.
fn split_line(line: &str) -> Result<Option<(&str, Vec<String>)>, String> {
    let is_blank = |c: char| c == ' ' || c == '\t' || c == '\r';
    let line = line.trim_matches(is_blank);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| is_blank(c) || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        return Err("expected a keyword before '='".into());
    }
    // At most one `=` between keyword and value, with blanks either side.
    let rest = rest.trim_start_matches(is_blank);
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Ok(Some((keyword, split_args(rest)?)))
}

/// OpenSSH's `argv_split`: words separated by blanks, quotes group, a few escapes, and a
/// word starting with `#` ends the line.
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(args),
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.peek() {
                    Some(&next @ ('"' | '\'' | '\\')) => {
                        arg.push(next);
                        chars.next();
                    }
                    Some(&' ') if quote.is_none() => {
                        arg.push(' ');
                        chars.next();
                    }
                    // Not an escape: the backslash is an ordinary character.
                    _ => arg.push('\\'),
                },
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(open)) if c == open => quote = None,
                (' ' | '\t', None) => break,
                (c, _) => arg.push(c),
            }
        }
        if let Some(open) = quote {
            return Err(format!("a value has an unterminated {open} quote"));
        }
        args.push(arg);
    }
}

/// The single value of a keyword that takes one. Extra words are an error, as in OpenSSH,
/// because they usually mean a missing pair of quotes.
fn one_value<'v>(keyword: &str, args: &'v [String]) -> Result<&'v str, String> {
    match args {
        [value] => Ok(value),
        [] => Err(format!("{keyword} needs a value")),
        [_, extra, ..] => Err(format!(
            "{keyword} takes one value, but {extra:?} follows it (quote a value with spaces)"
        )),
    }
}

/// A plain decimal number: no sign, no spaces.
fn parse_number<T: std::str::FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// A TCP port, 1 to 65535.
fn parse_port(value: &str) -> Result<u16, String> {
    parse_number(value)
        .filter(|&port| port != 0)
        .ok_or_else(|| format!("Port must be a number from 1 to 65535, not {value:?}"))
}

/// `yes`/`true` or `no`/`false`, any case.
fn parse_flag(keyword: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("{keyword} must be yes or no, not {value:?}")),
    }
}

/// OpenSSH's time format: seconds, or a sequence of numbers each with an optional unit,
/// `s`, `m`, `h`, `d` or `w` (`90`, `1m30s`, `2h`).
fn parse_time(keyword: &str, value: &str) -> Result<Duration, String> {
    let bad =
        || format!("{keyword} must be a time in seconds (such as 30 or 1m30s), not {value:?}");
    if value.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = parse_number(&rest[..digits]).ok_or_else(bad)?;
        rest = &rest[digits..];
        let unit = match rest.chars().next() {
            None => 1,
            Some(c) => {
                rest = &rest[c.len_utf8()..];
                match c.to_ascii_lowercase() {
                    's' => 1,
                    'm' => 60,
                    'h' => 60 * 60,
                    'd' => 24 * 60 * 60,
                    'w' => 7 * 24 * 60 * 60,
                    _ => return Err(bad()),
                }
            }
        };
        total = number
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_secs(total))
}

/// Replaces `%x` tokens from `tokens` and `%%`; any other token is an error message.
fn expand(value: &str, tokens: &[(char, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(token) => match tokens.iter().find(|(t, _)| *t == token) {
                Some((_, replacement)) => out.push_str(replacement),
                None => {
                    let known: Vec<String> = tokens.iter().map(|(t, _)| format!("%{t}")).collect();
                    return Err(format!(
                        "uses %{token}, which leadpipe does not expand (it expands {} and %%)",
                        known.join(" ")
                    ));
                }
            },
            None => return Err("ends with a lone % (write %% for a percent sign)".into()),
        }
    }
    Ok(out)
}

/// Expands a file name: a leading `~` or `~/`, then `%` tokens in the rest. One pass, so a
/// `%` inside the home directory's own path is never taken for a token.
fn expand_file(value: &str, home: &Path, tokens: &[(char, &str)]) -> Result<PathBuf, String> {
    match value.strip_prefix('~') {
        Some("") => Ok(home.to_owned()),
        // Without the slashes: joining an absolute path would replace the home directory.
        Some(rest) if rest.starts_with('/') => {
            Ok(home.join(expand(rest.trim_start_matches('/'), tokens)?))
        }
        _ => Ok(PathBuf::from(expand(value, tokens)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ExpandContext {
        ExpandContext {
            home: PathBuf::from("/home/ann"),
            local_user: "ann".into(),
        }
    }

    fn get(text: &str, host: &str) -> HostConfig {
        resolve(text, host, &ctx()).unwrap()
    }

    fn err(text: &str) -> String {
        resolve(text, "any", &ctx()).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_config_says_nothing() {
        assert_eq!(get("", "web1"), HostConfig::default());
        assert_eq!(
            get("# only a comment\n\n   \n", "web1"),
            HostConfig::default()
        );
    }

    #[test]
    fn every_supported_keyword() {
        let text = "\
Host web1
    HostName web1.example.com
    User deploy
    Port 2222
    IdentityFile ~/.ssh/id_web
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts_web
    StrictHostKeyChecking accept-new
    ConnectTimeout 10
    ServerAliveInterval 15
    ServerAliveCountMax 4
    ProxyJump bastion.example.com:2200
";
        assert_eq!(
            get(text, "web1"),
            HostConfig {
                hostname: Some("web1.example.com".into()),
                user: Some("deploy".into()),
                port: Some(2222),
                identity_files: vec![PathBuf::from("/home/ann/.ssh/id_web")],
                identities_only: Some(true),
                user_known_hosts_files: Some(vec![PathBuf::from("/home/ann/.ssh/known_hosts_web")]),
                strict_host_key_checking: Some(StrictHostKeyChecking::AcceptNew),
                connect_timeout: Some(Duration::from_secs(10)),
                server_alive_interval: Some(Duration::from_secs(15)),
                server_alive_count_max: Some(4),
                proxy_jump: Some("bastion.example.com:2200".into()),
            }
        );
        assert_eq!(get(text, "web2"), HostConfig::default());
    }

    #[test]
    fn keywords_are_case_insensitive_and_equals_forms_work() {
        let text = "HOSTNAME=a.example.com\nuser = bob\nPoRt =22\nconnecttimeout= 5\n";
        let config = get(text, "x");
        assert_eq!(config.hostname.as_deref(), Some("a.example.com"));
        assert_eq!(config.user.as_deref(), Some("bob"));
        assert_eq!(config.port, Some(22));
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn tabs_crlf_and_trailing_comments() {
        let text = "Host\tweb1\r\n\tUser\tbob   # the deploy user\r\n\t# Port 1\r\n";
        assert_eq!(get(text, "web1").user.as_deref(), Some("bob"));
        assert_eq!(get(text, "web1").port, None);
    }

    #[test]
    fn the_first_value_wins_across_blocks() {
        let text = "\
Host web1
    User web-user
    Port 2201
Host *
    User default-user
    Port 22
    ConnectTimeout 30
";
        let web1 = get(text, "web1");
        assert_eq!(web1.user.as_deref(), Some("web-user"));
        assert_eq!(web1.port, Some(2201));
        assert_eq!(web1.connect_timeout, Some(Duration::from_secs(30)));
        let other = get(text, "db1");
        assert_eq!(other.user.as_deref(), Some("default-user"));
        assert_eq!(other.port, Some(22));
        // Within one block too.
        assert_eq!(get("User a\nUser b\n", "h").user.as_deref(), Some("a"));
    }

    #[test]
    fn lines_before_any_host_apply_to_every_host() {
        let text = "User global\nHost web1\n    User web\n";
        assert_eq!(get(text, "web1").user.as_deref(), Some("global"));
    }

    #[test]
    fn host_patterns_wildcards_and_case() {
        let text = "Host db? *.example.com other\n    User matched\n";
        for host in ["db1", "a.example.com", "A.Example.COM", "other"] {
            assert_eq!(get(text, host).user.as_deref(), Some("matched"), "{host}");
        }
        for host in ["db10", "example.com", "another"] {
            assert_eq!(get(text, host).user, None, "{host}");
        }
    }

    #[test]
    fn negation_excludes_a_host_whatever_else_matches() {
        let text = "\
Host *.example.com !bastion.example.com
    ProxyJump bastion.example.com
Host !web1
    User not-web1
";
        assert_eq!(
            get(text, "web.example.com").proxy_jump.as_deref(),
            Some("bastion.example.com")
        );
        assert_eq!(get(text, "bastion.example.com").proxy_jump, None);
        // A negated pattern alone selects nothing, as in OpenSSH.
        assert_eq!(get(text, "web2").user, None);
        assert_eq!(get(text, "web1").user, None);
    }

    #[test]
    fn quoted_values_keep_their_spaces() {
        let text = "\
IdentityFile \"~/My Keys/id ed25519\"
UserKnownHostsFile '/tmp/a b' \"/tmp/c\"d /tmp/e\\ f
User \"we\\\"ird\"
";
        let config = get(text, "h");
        assert_eq!(
            config.identity_files,
            vec![PathBuf::from("/home/ann/My Keys/id ed25519")]
        );
        assert_eq!(
            config.user_known_hosts_files,
            Some(vec![
                PathBuf::from("/tmp/a b"),
                PathBuf::from("/tmp/cd"),
                PathBuf::from("/tmp/e f"),
            ])
        );
        assert_eq!(config.user.as_deref(), Some("we\"ird"));
        assert_eq!(
            get("Host \"web 1\"\nUser x\n", "web 1").user.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn identity_files_accumulate_without_duplicates() {
        let text = "\
Host web1
    IdentityFile ~/.ssh/id_web
Host *
    IdentityFile ~/.ssh/id_ed25519
    IdentityFile ~/.ssh/id_web
";
        assert_eq!(
            get(text, "web1").identity_files,
            vec![
                PathBuf::from("/home/ann/.ssh/id_web"),
                PathBuf::from("/home/ann/.ssh/id_ed25519"),
            ]
        );
    }

    #[test]
    fn user_known_hosts_files_first_line_wins_whole() {
        let text = "\
Host web1
    UserKnownHostsFile ~/.ssh/kh_web /etc/ssh/kh_shared
Host *
    UserKnownHostsFile ~/.ssh/known_hosts
";
        assert_eq!(
            get(text, "web1").user_known_hosts_files,
            Some(vec![
                PathBuf::from("/home/ann/.ssh/kh_web"),
                PathBuf::from("/etc/ssh/kh_shared"),
            ])
        );
        assert_eq!(
            get(text, "db").user_known_hosts_files,
            Some(vec![PathBuf::from("/home/ann/.ssh/known_hosts")])
        );
        let none = "Host lab\n    UserKnownHostsFile none\nUserKnownHostsFile ~/.ssh/kh\n";
        assert_eq!(get(none, "lab").user_known_hosts_files, Some(vec![]));
        assert!(err("UserKnownHostsFile none ~/x\n").contains("none must be the only value"));
    }

    #[test]
    fn expansion_tokens() {
        let text = "\
Host web1
    HostName %h.example.com
    User deploy
    Port 2200
    IdentityFile ~/.ssh/%r@%h:%p
    IdentityFile %d/keys/%u-%n-100%%
    IdentityFile ~
    UserKnownHostsFile /srv/%u/known_hosts_%h
";
        let config = get(text, "web1");
        assert_eq!(config.hostname.as_deref(), Some("web1.example.com"));
        assert_eq!(
            config.identity_files,
            vec![
                PathBuf::from("/home/ann/.ssh/deploy@web1.example.com:2200"),
                PathBuf::from("/home/ann/keys/ann-web1-100%"),
                PathBuf::from("/home/ann"),
            ]
        );
        assert_eq!(
            config.user_known_hosts_files,
            Some(vec![PathBuf::from("/srv/ann/known_hosts_web1.example.com")])
        );
        // Without User, HostName or Port: the local user, the host as given, port 22.
        assert_eq!(
            get("IdentityFile /k/%r-%h-%p\n", "db").identity_files,
            vec![PathBuf::from("/k/ann-db-22")]
        );
        // `~` only at the start, `~user` and `${VAR}` left alone.
        assert_eq!(
            get(
                "IdentityFile a~/b\nIdentityFile ~bob/k\nIdentityFile ${HOME}/k\n",
                "h"
            )
            .identity_files,
            vec![
                PathBuf::from("a~/b"),
                PathBuf::from("~bob/k"),
                PathBuf::from("${HOME}/k"),
            ]
        );
    }

    #[test]
    fn unknown_tokens_are_errors_naming_the_line() {
        let message = err("\n\nIdentityFile ~/.ssh/%l\n");
        assert!(
            message.starts_with("ssh config line 3: IdentityFile uses %l"),
            "{message}"
        );
        assert!(err("HostName %p.example\n").contains("HostName uses %p"));
        assert!(err("UserKnownHostsFile /a%\n").contains("lone %"));
        // Tokens in a block that does not apply are never expanded.
        assert!(resolve("Host other\n  IdentityFile %l\n", "h", &ctx()).is_ok());
    }

    #[test]
    fn proxy_jump_none_stops_later_values() {
        let text = "Host direct\n    ProxyJump none\nHost *\n    ProxyJump jump@bastion:22\n";
        assert_eq!(get(text, "direct").proxy_jump, None);
        assert_eq!(
            get(text, "web").proxy_jump.as_deref(),
            Some("jump@bastion:22")
        );
        assert_eq!(
            get("ProxyJump a,b@c:2\n", "h").proxy_jump.as_deref(),
            Some("a,b@c:2")
        );
    }

    #[test]
    fn strict_host_key_checking_values() {
        for (value, mode) in [
            ("yes", StrictHostKeyChecking::Yes),
            ("True", StrictHostKeyChecking::Yes),
            ("no", StrictHostKeyChecking::No),
            ("off", StrictHostKeyChecking::No),
            ("false", StrictHostKeyChecking::No),
            ("accept-new", StrictHostKeyChecking::AcceptNew),
            ("ASK", StrictHostKeyChecking::Ask),
        ] {
            let config = get(&format!("StrictHostKeyChecking {value}\n"), "h");
            assert_eq!(config.strict_host_key_checking, Some(mode), "{value}");
        }
        assert!(
            err("StrictHostKeyChecking maybe\n").contains("must be yes, no, accept-new or ask")
        );
    }

    #[test]
    fn flags_and_numbers() {
        assert_eq!(get("IdentitiesOnly no\n", "h").identities_only, Some(false));
        assert_eq!(
            get("IdentitiesOnly TRUE\n", "h").identities_only,
            Some(true)
        );
        assert!(err("IdentitiesOnly 1\n").contains("IdentitiesOnly must be yes or no"));
        assert_eq!(
            get("ServerAliveCountMax 0\n", "h").server_alive_count_max,
            Some(0)
        );
        assert!(err("ServerAliveCountMax -1\n").contains("must be a number"));
        assert!(err("ServerAliveCountMax 99999999999\n").contains("must be a number"));
    }

    #[test]
    fn durations_are_seconds_with_optional_units() {
        let seconds = |value: &str| get(&format!("ConnectTimeout {value}\n"), "h").connect_timeout;
        assert_eq!(seconds("30"), Some(Duration::from_secs(30)));
        assert_eq!(seconds("0"), Some(Duration::ZERO));
        assert_eq!(seconds("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(seconds("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(seconds("1w1d"), Some(Duration::from_secs(8 * 86400)));
        for bad in [
            "ten",
            "10x",
            "m",
            "-5",
            "1.5",
            "99999999999999999999",
            "9999999999999999w",
        ] {
            let message = err(&format!("ServerAliveInterval {bad}\n"));
            assert!(
                message.contains("ServerAliveInterval must be a time in seconds"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_bad_port_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(
            &path,
            "Host web1\n    HostName web1.example.com\n    Port ssh\n",
        )
        .unwrap();
        let error = resolve_file(&path, "web1", &ctx()).unwrap_err();
        assert_eq!(error.path.as_deref(), Some(path.as_path()));
        assert_eq!(error.line, Some(3));
        assert_eq!(
            error.to_string(),
            format!(
                "{}:3: Port must be a number from 1 to 65535, not \"ssh\"",
                path.display()
            )
        );
        // In a block for another host too: the mistake is the same whichever host runs.
        assert!(resolve_file(&path, "db1", &ctx()).is_err());
        for bad in ["0", "65536", "+22", "22 23", ""] {
            assert!(err(&format!("Port {bad}\n")).contains("Port"), "{bad}");
        }
        assert!(err("Port 22 23\n").contains("takes one value"));
        assert!(err("Port\n").contains("Port needs a value"));
    }

    #[test]
    fn syntax_errors() {
        assert!(err("User \"unterminated\n").contains("unterminated \" quote"));
        assert!(err("=value\n").contains("expected a keyword"));
    }

    #[test]
    fn unknown_keywords_are_ignored() {
        let text = "ForwardAgent yes\nSendEnv LANG LC_*\nNoSuchOption \"whatever\"\nUser u\n";
        assert_eq!(get(text, "h").user.as_deref(), Some("u"));
    }

    #[test]
    fn match_blocks_are_skipped_until_the_next_host() {
        let text = "\
Match host web1 exec \"true\"
    User from-match
    Port 1
Match all
    User from-match-all
Host web1
    User from-host
";
        let config = get(text, "web1");
        assert_eq!(config.user.as_deref(), Some("from-host"));
        assert_eq!(config.port, None);
        // Still checked for mistakes.
        assert!(err("Match all\n    Port nope\n").contains("Port must be a number"));
    }

    #[test]
    fn a_missing_file_is_an_empty_config_and_a_directory_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = resolve_file(&dir.path().join("config"), "h", &ctx()).unwrap();
        assert_eq!(missing, HostConfig::default());
        let error = resolve_file(dir.path(), "h", &ctx()).unwrap_err();
        assert_eq!(error.line, None);
        assert!(error.to_string().contains("cannot be read"), "{error}");
    }

    #[test]
    fn include_reads_files_in_place() {
        let home = tempfile::tempdir().unwrap();
        let ctx = ExpandContext {
            home: home.path().to_owned(),
            local_user: "ann".into(),
        };
        let ssh = home.path().join(".ssh");
        fs::create_dir_all(ssh.join("config.d")).unwrap();
        fs::write(ssh.join("config.d/20-db"), "Host db1\n    User db-user\n").unwrap();
        fs::write(
            ssh.join("config.d/10-web"),
            "Host web1\n    User web-user\n",
        )
        .unwrap();
        fs::write(ssh.join("config.d/.hidden"), "User hidden\n").unwrap();
        fs::write(ssh.join("lab"), "User lab-user\nPort 2222\n").unwrap();
        let text = "\
Include config.d/* ~/.ssh/absent
Host lab*
    Include lab
Host *
    User default
";
        let user = |host: &str| resolve(text, host, &ctx).unwrap().user;
        assert_eq!(user("web1").as_deref(), Some("web-user"));
        assert_eq!(user("db1").as_deref(), Some("db-user"));
        assert_eq!(user("lab3").as_deref(), Some("lab-user"));
        assert_eq!(user("other").as_deref(), Some("default"));
        // The included file's lines apply only where the Include does.
        assert_eq!(resolve(text, "other", &ctx).unwrap().port, None);
        // An Include after a Host line in the included file does not leak that block.
        fs::write(ssh.join("tail"), "Host nothing-here\n").unwrap();
        let after = "Include tail\nUser after-include\n";
        assert_eq!(
            resolve(after, "h", &ctx).unwrap().user.as_deref(),
            Some("after-include")
        );
        // Errors name the included file.
        fs::write(ssh.join("broken"), "\nPort x\n").unwrap();
        let error = resolve("Include broken\n", "h", &ctx).unwrap_err();
        assert_eq!(error.path, Some(ssh.join("broken")));
        assert_eq!(error.line, Some(2));
    }

    #[test]
    fn a_file_that_includes_itself_is_an_error_not_a_hang() {
        let home = tempfile::tempdir().unwrap();
        let ctx = ExpandContext {
            home: home.path().to_owned(),
            local_user: "ann".into(),
        };
        fs::create_dir_all(home.path().join(".ssh")).unwrap();
        fs::write(home.path().join(".ssh/config"), "Include config\n").unwrap();
        let error = resolve_file(&home.path().join(".ssh/config"), "h", &ctx).unwrap_err();
        assert!(error.message.contains("nested"), "{error}");
    }

    #[test]
    fn no_input_panics() {
        let text = "Host a !b \"c d\"\n  User=x\n Port = 2\nIdentityFile '%%~/%h\\' \n\
                    ConnectTimeout 1m\nProxyJump none\nMatch all\nInclude /nonexistent/*\n";
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let _ = resolve(&text[..end], "a", &ctx());
        }
        for odd in [
            "\u{0}",
            "=",
            "\"",
            "\\",
            "Port \u{663}",
            "ConnectTimeout 1\u{e9}",
            "%",
            "Host",
        ] {
            let _ = resolve(odd, "a", &ctx());
        }
    }

    #[test]
    fn config_error_is_send_and_sync() {
        fn check<T: Send + Sync + std::error::Error>() {}
        check::<ConfigError>();
    }
}
