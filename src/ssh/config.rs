//! ssh_config(5), resolved for one destination the way `ssh -G` resolves it.
//!
//! People already describe their hosts in `~/.ssh/config`; an SSH machine that ignored it
//! would connect somewhere else, as someone else, with another key. This module answers
//! one question: given the config files and the host name the program asked for, what
//! settings apply? It follows OpenSSH 9's `readconf.c`; where leadpipe cannot do what a
//! line asks and the line would change where or how it connects, it says so instead of
//! connecting differently. [`SshBuilder`](super::SshBuilder) documents the keywords.
//!
//! # What is read
//!
//! - `Keyword value`, `Keyword=value` and `Keyword = value`; keywords are case-insensitive.
//!   Values may be quoted with `"` or `'` to hold spaces; `\"`, `\'`, `\\` and (outside
//!   quotes) `\ ` escape one character. A word starting with `#` ends the line.
//! - `Host pattern...` starts a block that applies when some pattern matches the host name
//!   as given and no `!pattern` does (globs `*` and `?`, case-sensitive, as in OpenSSH).
//! - `Match criteria...` starts a block that applies when every criterion holds: `all`,
//!   `host` (the `HostName` so far, else the host as given), `originalhost`, `user` (the
//!   `User` so far, else the local user), `localuser`, `exec` (a local command run by
//!   `$SHELL -c`, else `/bin/sh -c`, with tokens expanded; exit status 0 holds), `canonical`
//!   and `final` (hold only in the second pass, below). Each may be negated with `!`;
//!   `host`, `user` ... take comma-separated pattern lists with `!` entries.
//! - `Match final` (or `CanonicalizeHostname`) asks for a second pass: the files are read
//!   again with the host name as resolved by the first, and values still unset are taken.
//! - `ProxyCommand` takes the rest of its line as written, quotes and all (its shell
//!   parses it); `ProxyJump` and `ProxyCommand` exclude each other, the first one wins.
//! - For each keyword the **first** value that applies wins. `IdentityFile`,
//!   `CertificateFile` and `SendEnv` accumulate instead; `UserKnownHostsFile`,
//!   `GlobalKnownHostsFile` and `SetEnv` take their first applicable *line* as a whole.
//! - `Include` reads other files in place: `~` is the home directory, relative paths are
//!   under `~/.ssh` (`/etc/ssh` in the system file), `*`/`?` may appear in the last path
//!   component (read in name order; no leading-dot names; missing files are skipped). An
//!   `Include` inside a block that does not apply reads nothing that applies.
//!
//! Values are checked in every block, applicable or not, so a mistake is reported the
//! same way whichever host a program connects to. Errors name the file and line.
//!
//! # Expansions
//!
//! `IdentityFile`, `CertificateFile`, `UserKnownHostsFile` and a `ForwardAgent` socket
//! path expand a leading `~`,
//! `${VAR}` from the environment, and the tokens `%C` (SHA-1 of `%l%h%p%r`), `%d` (home
//! directory), `%h` (the host to connect to), `%i` (local uid), `%k` (`HostKeyAlias`, else
//! the host as given), `%L` (local host name up to the first dot), `%l` (local host name),
//! `%n` (the host as given), `%p` (port), `%r` (remote user), `%u` (local user) and `%%`.
//! `HostName` expands `%h` (the host as given) and `%%`; `Match exec` all but `${VAR}`.
//! Other tokens are an error rather than a file name with a `%` in it. `~user` is left
//! alone. `GlobalKnownHostsFile` expands only a leading `~`, as OpenSSH does.

use std::{
    collections::HashSet,
    fmt, fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{algorithms::AlgorithmLists, known_hosts::glob_matches};

/// What expansions and `Match` need to know about the local side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandContext {
    /// The local user's home directory: `~`, `%d`, and the base of relative `Include`s.
    pub(crate) home: PathBuf,
    /// The local user name: `%u`, `Match localuser`, and `%r` when no `User` is set.
    pub(crate) local_user: String,
    /// The local user id: `%i`.
    pub(crate) uid: u32,
    /// The local host name (`gethostname`): `%l`, and `%L` up to its first dot.
    pub(crate) local_host: String,
}

impl ExpandContext {
    /// The running process's user (from the password database, like `ssh`), its `$HOME`
    /// (else the password database's directory) and the machine's host name.
    pub(crate) fn current() -> ExpandContext {
        // SAFETY: getuid cannot fail.
        let uid = unsafe { libc::getuid() };
        let (name, dir) = password_entry(uid).unwrap_or_default();
        let local_user = if name.is_empty() {
            std::env::var("USER").unwrap_or_else(|_| uid.to_string())
        } else {
            name
        };
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(dir));
        ExpandContext {
            home,
            local_user,
            uid,
            local_host: local_host_name(),
        }
    }
}

/// The user name and home directory of `uid`.
fn password_entry(uid: u32) -> Option<(String, String)> {
    let mut buffer = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size.
    let status = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &mut result,
        )
    };
    if status != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success both fields point to NUL-terminated strings inside `buffer`.
    let text = |p: *const libc::c_char| unsafe {
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    Some((text(entry.pw_name), text(entry.pw_dir)))
}

/// `gethostname(2)`, or `localhost` when it fails.
fn local_host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return "localhost".to_owned();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// How to treat a host key that is not in known_hosts, or differs from the one there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StrictHostKeyChecking {
    /// Refuse unknown and changed keys (`yes`, `true`).
    Yes,
    /// Accept unknown keys (`no`, `off`, `false`).
    No,
    /// Accept and record unknown keys; refuse changed ones (`accept-new`).
    AcceptNew,
    /// `ask`: `ssh` would prompt. A library has nobody to ask, so callers treat this as
    /// [`Yes`](Self::Yes).
    Ask,
}

/// A line whose keyword leadpipe does not act on although it would change where or how
/// the connection is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unhonoured {
    /// The keyword as ssh_config(5) spells it (`ProxyCommand`).
    pub(crate) keyword: &'static str,
    /// The file, `None` for text from no file.
    pub(crate) path: Option<PathBuf>,
    /// The line, counting from 1.
    pub(crate) line: usize,
    /// What leadpipe would do differently, as a clause.
    pub(crate) reason: &'static str,
}

impl fmt::Display for Unhonoured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}:{}: ", path.display(), self.line)?,
            None => write!(f, "ssh config line {}: ", self.line)?,
        }
        write!(
            f,
            "{} is not supported by leadpipe ({}); set it on the builder, or call \
             ignore_config_keyword(\"{}\") to connect without it",
            self.keyword, self.reason, self.keyword
        )
    }
}

/// The settings that apply to one host. `None` (or empty) means the config did not say;
/// the SSH machine then uses its own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostConfig {
    /// `HostName` with `%h` expanded, unchanged in case.
    pub(crate) hostname: Option<String>,
    /// `User`.
    pub(crate) user: Option<String>,
    /// `Port`.
    pub(crate) port: Option<u16>,
    /// Every applicable `IdentityFile`, expanded, in order, without duplicates.
    pub(crate) identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly`.
    pub(crate) identities_only: Option<bool>,
    /// `IdentityAgent none`: do not use an agent.
    pub(crate) no_agent: bool,
    /// Every applicable `CertificateFile`, expanded.
    pub(crate) certificate_files: Vec<PathBuf>,
    /// `UserKnownHostsFile`, expanded. `None` when not set (use `~/.ssh/known_hosts` and
    /// `~/.ssh/known_hosts2`); `Some` of an empty list for `UserKnownHostsFile none`.
    pub(crate) user_known_hosts_files: Option<Vec<PathBuf>>,
    /// `GlobalKnownHostsFile`, as for `UserKnownHostsFile`.
    pub(crate) global_known_hosts_files: Option<Vec<PathBuf>>,
    /// `StrictHostKeyChecking`.
    pub(crate) strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `HostKeyAlias`, lowercased.
    pub(crate) host_key_alias: Option<String>,
    /// `CheckHostIP`.
    pub(crate) check_host_ip: Option<bool>,
    /// `ConnectTimeout`.
    pub(crate) connect_timeout: Option<Duration>,
    /// `ConnectionAttempts`.
    pub(crate) connection_attempts: Option<u32>,
    /// `ServerAliveInterval`; zero means keepalives are off.
    pub(crate) server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    pub(crate) server_alive_count_max: Option<u32>,
    /// `ProxyJump`, unparsed (`[user@]host[:port][,...]`). `ProxyJump none` gives `None`,
    /// and, being the first value, stops a later `Host *` from setting one.
    pub(crate) proxy_jump: Option<String>,
    /// `ProxyCommand`, unexpanded; `None` for `none` or when `ProxyJump` came first.
    pub(crate) proxy_command: Option<String>,
    /// `ForwardAgent` (a socket path counts as yes).
    pub(crate) forward_agent: Option<bool>,
    /// The socket `ForwardAgent` names (`~`, `${VAR}` and tokens expanded; `$VAR` read
    /// from the environment), when it names one instead of `yes`.
    pub(crate) forward_agent_socket: Option<PathBuf>,
    /// `SetEnv`: `NAME=value` pairs of the first applicable line.
    pub(crate) set_env: Vec<(String, String)>,
    /// `SendEnv` patterns, after `-pattern` removals.
    pub(crate) send_env: Vec<String>,
    /// The `SendEnv` patterns of `send_env` that only the system file gave.
    pub(crate) system_send_env: Vec<String>,
    /// `Ciphers`, `KexAlgorithms`, `MACs`, `HostKeyAlgorithms`.
    pub(crate) algorithms: AlgorithmLists,
    /// Lines that apply and ask for what leadpipe does not do.
    pub(crate) unhonoured: Vec<Unhonoured>,
}

impl HostConfig {
    /// The host to connect to: `HostName`, else `host`, lowercased unless it is an address
    /// (what `ssh` does before connecting and what `ssh -G` prints).
    pub(crate) fn destination(&self, host: &str) -> String {
        final_host(self.hostname.as_deref().unwrap_or(host))
    }
}

/// `ssh`'s treatment of the resolved host name: lowercased unless it looks like an address.
fn final_host(host: &str) -> String {
    if is_address(host) {
        host.to_owned()
    } else {
        host.to_ascii_lowercase()
    }
}

/// The shell command line for a `ProxyCommand`, as OpenSSH's `expand_proxy_command`:
/// `exec COMMAND` with `%h` (the host to connect to), `%k` (`HostKeyAlias`, else the host
/// as given), `%n` (the host as given), `%p`, `%r` and `%%` expanded.
pub(crate) fn proxy_command_line(
    command: &str,
    host: &str,
    key_alias: &str,
    host_arg: &str,
    port: u16,
    user: &str,
) -> Result<String, String> {
    let port = port.to_string();
    let tokens = [
        ('h', host),
        ('k', key_alias),
        ('n', host_arg),
        ('p', port.as_str()),
        ('r', user),
    ];
    expand(command, &tokens)
}

/// OpenSSH's quick test for an address rather than a name.
fn is_address(host: &str) -> bool {
    host.contains(['%', ':']) || host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
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

/// One config source: a file and whether it is a user file (relative `Include`s under
/// `~/.ssh`) or the system one (under `/etc/ssh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// The file. A missing file is an empty config, as for `ssh`.
    pub(crate) path: PathBuf,
    /// Whether relative `Include`s are under `~/.ssh` (else `/etc/ssh`).
    pub(crate) user: bool,
}

#[cfg(test)]
/// Resolves the settings for `host` (the name the program asked for, before `HostName`)
/// from config text that came from no file; `Include`d files are still read.
pub(crate) fn resolve(
    text: &str,
    host: &str,
    ctx: &ExpandContext,
) -> Result<HostConfig, ConfigError> {
    let mut resolver = Resolver::new(host, ctx, &[]);
    let pass = |resolver: &mut Resolver<'_>| resolver.read(text, None, true, Reach::Applies, 0);
    pass(&mut resolver)?;
    if resolver.wants_final_pass() {
        resolver.begin_final_pass();
        pass(&mut resolver)?;
    }
    resolver.finish()
}

/// Resolves the settings for `host` from the config file at `path` (a user file).
#[cfg(test)]
pub(crate) fn resolve_file(
    path: &Path,
    host: &str,
    ctx: &ExpandContext,
) -> Result<HostConfig, ConfigError> {
    let sources = [Source {
        path: path.to_owned(),
        user: true,
    }];
    resolve_sources(&sources, host, ctx, &[])
}

/// Resolves the settings for `host` from `sources`, read in order as one config.
/// `ignored` holds lowercased keywords to skip even where leadpipe does not know them.
/// A file that exists but cannot be read is an error.
pub(crate) fn resolve_sources(
    sources: &[Source],
    host: &str,
    ctx: &ExpandContext,
    ignored: &[String],
) -> Result<HostConfig, ConfigError> {
    let mut texts = Vec::new();
    for source in sources {
        match fs::read(&source.path) {
            Ok(bytes) => texts.push((String::from_utf8_lossy(&bytes).into_owned(), source)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(unreadable(&source.path, &e)),
        }
    }
    let mut resolver = Resolver::new(host, ctx, ignored);
    let pass = |resolver: &mut Resolver<'_>| {
        for (text, source) in &texts {
            resolver.read(text, Some(&source.path), source.user, Reach::Applies, 0)?;
        }
        Ok::<(), ConfigError>(())
    };
    pass(&mut resolver)?;
    if resolver.wants_final_pass() {
        resolver.begin_final_pass();
        pass(&mut resolver)?;
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

    /// This line, unhonoured for `reason`.
    fn unhonoured(&self, keyword: &'static str, reason: &'static str) -> Unhonoured {
        Unhonoured {
            keyword,
            path: self.path.clone(),
            line: self.line,
            reason,
        }
    }
}

/// The first applicable values found so far, before expansion.
struct Resolver<'a> {
    /// The host name as given.
    original_host: &'a str,
    /// See [`ExpandContext`].
    ctx: &'a ExpandContext,
    /// Lowercased keywords the program asked to ignore.
    ignored: &'a [String],
    /// Whether this is the second pass (`Match final`, `Match canonical`).
    final_pass: bool,
    /// Whether a `Match final` was seen.
    want_final: bool,
    /// In the second pass, the host name the first resolved.
    final_host: Option<String>,
    /// `IgnoreUnknown` patterns (the first applicable line).
    ignore_unknown: Option<Vec<String>>,
    /// Keywords with a value already seen in an applicable line, for those checked once.
    seen: HashSet<&'static str>,
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
    /// `IdentityAgent`.
    identity_agent: Option<Located>,
    /// `CertificateFile`s.
    certificate_files: Vec<Located>,
    /// `UserKnownHostsFile`: the whole first applicable line.
    user_known_hosts_files: Option<Vec<Located>>,
    /// `GlobalKnownHostsFile`: the whole first applicable line.
    global_known_hosts_files: Option<Vec<Located>>,
    /// `StrictHostKeyChecking`.
    strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `HostKeyAlias`.
    host_key_alias: Option<String>,
    /// `CheckHostIP`, with its line.
    check_host_ip: Option<(bool, Located)>,
    /// `ConnectTimeout`.
    connect_timeout: Option<Duration>,
    /// `ConnectionAttempts`.
    connection_attempts: Option<u32>,
    /// `ServerAliveInterval`.
    server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    server_alive_count_max: Option<u32>,
    /// `ProxyJump`: the outer `Some` records that a value was seen, even `none`.
    proxy_jump: Option<Option<String>>,
    /// `ProxyCommand`: the outer `Some` records that a value was seen, even `none`.
    proxy_command: Option<Option<Located>>,
    /// `ForwardAgent`: the flag, or the socket it names.
    forward_agent: Option<bool>,
    /// The first socket path `ForwardAgent` named: kept apart from the flag, as OpenSSH
    /// keeps it (`ForwardAgent no` then a path: not forwarded, the path still shown).
    forward_agent_path: Option<Located>,
    /// `SetEnv`.
    set_env: Option<Vec<(String, String)>>,
    /// `SendEnv`.
    send_env: Vec<String>,
    /// `SendEnv` patterns read in the system file, and in a user file.
    send_env_from: (Vec<String>, Vec<String>),
    /// Whether the file being read is the user's (else the system's).
    in_user_file: bool,
    /// `CanonicalizeHostname` other than `no`.
    canonicalize: Option<bool>,
    /// The algorithm lists.
    algorithms: AlgorithmLists,
    /// Lines that ask for what leadpipe does not do.
    unhonoured: Vec<Unhonoured>,
}

impl<'a> Resolver<'a> {
    /// Starts with nothing found.
    fn new(host: &'a str, ctx: &'a ExpandContext, ignored: &'a [String]) -> Self {
        Resolver {
            original_host: host,
            ctx,
            ignored,
            final_pass: false,
            want_final: false,
            final_host: None,
            ignore_unknown: None,
            seen: HashSet::new(),
            hostname: None,
            user: None,
            port: None,
            identity_files: Vec::new(),
            identities_only: None,
            identity_agent: None,
            certificate_files: Vec::new(),
            user_known_hosts_files: None,
            global_known_hosts_files: None,
            strict_host_key_checking: None,
            host_key_alias: None,
            check_host_ip: None,
            connect_timeout: None,
            connection_attempts: None,
            server_alive_interval: None,
            server_alive_count_max: None,
            proxy_jump: None,
            proxy_command: None,
            forward_agent: None,
            forward_agent_path: None,
            set_env: None,
            send_env: Vec::new(),
            send_env_from: (Vec::new(), Vec::new()),
            in_user_file: true,
            canonicalize: None,
            algorithms: AlgorithmLists::default(),
            unhonoured: Vec::new(),
        }
    }

    /// Whether the files must be read a second time, as `ssh` does for `Match final` and
    /// hostname canonicalisation.
    fn wants_final_pass(&self) -> bool {
        self.want_final || self.canonicalize == Some(true)
    }

    /// Starts the second pass: `Match host` now sees the resolved host name.
    fn begin_final_pass(&mut self) {
        let host = match &self.hostname {
            Some(hostname) => expand(&hostname.value, &[('h', self.original_host)])
                .unwrap_or_else(|_| hostname.value.clone()),
            None => self.original_host.to_owned(),
        };
        self.final_host = Some(final_host(&host));
        self.final_pass = true;
    }

    /// Reads one file's text. `reach` says whether its lines before any `Host` apply.
    fn read(
        &mut self,
        text: &str,
        path: Option<&Path>,
        user_file: bool,
        reach: Reach,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let mut applies = reach == Reach::Applies;
        self.in_user_file = user_file;
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
            let located = |value: &str| Located {
                value: value.to_owned(),
                path: path.map(Path::to_owned),
                line: index + 1,
            };
            match keyword.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(at("Host needs at least one pattern".into()));
                    }
                    applies = reach == Reach::Applies && self.host_matches(&args);
                }
                "match" => {
                    let holds = self.match_holds(&args).map_err(at)?;
                    applies = reach == Reach::Applies && holds;
                }
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
                        if arg.starts_with('~') && !user_file {
                            return Err(at(format!(
                                "Include {arg:?}: ~ is not allowed in the system config"
                            )));
                        }
                        for file in self.include_paths(arg, user_file) {
                            let bytes = match fs::read(&file) {
                                Ok(bytes) => bytes,
                                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                                Err(e) => return Err(unreadable(&file, &e)),
                            };
                            let text = String::from_utf8_lossy(&bytes);
                            // A `Match` in the included file does not change this one's state.
                            self.read(&text, Some(&file), user_file, reach, depth + 1)?;
                        }
                    }
                }
                _ => {
                    let value = raw_value(raw);
                    self.apply(&keyword, &args, value, applies, located)
                        .map_err(at)?;
                }
            }
        }
        Ok(())
    }

    /// Whether a `Host` line's patterns select this host: one pattern matches the host as
    /// given and no negated one does. A negated pattern alone never selects anything.
    fn host_matches(&self, patterns: &[String]) -> bool {
        let mut positive = false;
        for pattern in patterns {
            match pattern.strip_prefix('!') {
                Some(negated) => {
                    if glob_matches(negated, self.original_host) {
                        return false;
                    }
                }
                None => positive |= glob_matches(pattern, self.original_host),
            }
        }
        positive
    }

    /// The host `Match host` and `%h` in `Match exec` see: in the first pass the
    /// `HostName` so far (with `%h` expanded) or the host as given; in the second, the
    /// host the first resolved.
    fn match_host(&self) -> String {
        if let Some(host) = &self.final_host {
            return host.clone();
        }
        match &self.hostname {
            Some(hostname) => expand(&hostname.value, &[('h', self.original_host)])
                .unwrap_or_else(|_| hostname.value.clone()),
            None => self.original_host.to_owned(),
        }
    }

    /// Evaluates a `Match` line's criteria, as OpenSSH's `match_cfg_line`.
    fn match_holds(&mut self, args: &[String]) -> Result<bool, String> {
        let mut result = true;
        let mut attributes = 0;
        let mut words = args.iter();
        while let Some(word) = words.next() {
            let (negate, attribute) = match word.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, word.as_str()),
            };
            let attribute = attribute.to_ascii_lowercase();
            if attribute == "all" {
                if attributes > 1 || words.next().is_some() {
                    return Err(format!(
                        "Match {word} cannot be combined with other Match criteria"
                    ));
                }
                return Ok(result && !negate);
            }
            attributes += 1;
            if attribute == "canonical" || attribute == "final" {
                if attribute == "final" {
                    self.want_final = true;
                }
                if self.final_pass == negate {
                    result = false;
                }
                continue;
            }
            let Some(arg) = words.next() else {
                return Err(format!("Match {word} needs a value"));
            };
            let user = self
                .user
                .clone()
                .unwrap_or_else(|| self.ctx.local_user.clone());
            let holds = match attribute.as_str() {
                "host" => pattern_list_matches(&self.match_host(), arg, true),
                "originalhost" => pattern_list_matches(self.original_host, arg, true),
                "user" => pattern_list_matches(&user, arg, false),
                "localuser" => pattern_list_matches(&self.ctx.local_user, arg, false),
                "exec" => {
                    let command = self.expand_exec(arg, &user)?;
                    if !result {
                        // A criterion before it already failed: ssh does not run it.
                        continue;
                    }
                    run_exec(&command)?
                }
                _ => {
                    return Err(format!(
                        "Match {attribute} is not a criterion leadpipe knows (it knows all, \
                         host, originalhost, user, localuser, exec, canonical and final)"
                    ));
                }
            };
            if holds == negate {
                result = false;
            }
        }
        if attributes == 0 {
            return Err("Match needs at least one criterion".into());
        }
        Ok(result)
    }

    /// A `Match exec` command with its tokens expanded.
    fn expand_exec(&self, command: &str, user: &str) -> Result<String, String> {
        let host = self.match_host();
        let port = self.port.unwrap_or(22).to_string();
        let alias = self.host_key_alias.clone().unwrap_or_else(|| host.clone());
        let local = LocalTokens::new(self.ctx);
        let hash = connection_hash(&self.ctx.local_host, &host, &port, user);
        let home = self.ctx.home.to_string_lossy();
        let tokens = [
            ('C', hash.as_str()),
            ('L', local.short.as_str()),
            ('d', home.as_ref()),
            ('h', host.as_str()),
            ('k', alias.as_str()),
            ('l', self.ctx.local_host.as_str()),
            ('n', self.original_host),
            ('p', port.as_str()),
            ('r', user),
            ('u', self.ctx.local_user.as_str()),
            ('i', local.uid.as_str()),
        ];
        expand(command, &tokens).map_err(|m| format!("Match exec {m}"))
    }

    /// The files an `Include` argument names, in the order they are read.
    fn include_paths(&self, arg: &str, user_file: bool) -> Vec<PathBuf> {
        let path = match arg.strip_prefix('~') {
            Some("") => self.ctx.home.clone(),
            Some(rest) if rest.starts_with('/') => self.ctx.home.join(rest.trim_start_matches('/')),
            _ if Path::new(arg).is_absolute() => PathBuf::from(arg),
            _ if user_file => self.ctx.home.join(".ssh").join(arg),
            _ => Path::new("/etc/ssh").join(arg),
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
        raw: &str,
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
            "certificatefile" => {
                let value = one_value("CertificateFile", args)?;
                if applies && !self.certificate_files.iter().any(|f| f.value == value) {
                    self.certificate_files.push(located(value));
                }
            }
            "identitiesonly" => {
                let flag = parse_flag("IdentitiesOnly", one_value("IdentitiesOnly", args)?)?;
                if applies && self.identities_only.is_none() {
                    self.identities_only = Some(flag);
                }
            }
            "identityagent" => {
                let value = one_value("IdentityAgent", args)?;
                if applies && self.identity_agent.is_none() {
                    self.identity_agent = Some(located(value));
                }
            }
            "userknownhostsfile" | "globalknownhostsfile" => {
                let name = if keyword == "userknownhostsfile" {
                    "UserKnownHostsFile"
                } else {
                    "GlobalKnownHostsFile"
                };
                let files = file_list(name, args)?;
                let slot = if keyword == "userknownhostsfile" {
                    &mut self.user_known_hosts_files
                } else {
                    &mut self.global_known_hosts_files
                };
                if applies && slot.is_none() {
                    *slot = Some(files.iter().map(|a| located(a)).collect());
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
            "hostkeyalias" => {
                let value = one_value("HostKeyAlias", args)?;
                if applies && self.host_key_alias.is_none() {
                    self.host_key_alias = Some(value.to_ascii_lowercase());
                }
            }
            "checkhostip" => {
                let flag = parse_flag("CheckHostIP", one_value("CheckHostIP", args)?)?;
                if applies && self.check_host_ip.is_none() {
                    self.check_host_ip = Some((flag, located("")));
                }
            }
            "connecttimeout" => {
                let time = parse_time("ConnectTimeout", one_value("ConnectTimeout", args)?)?;
                if applies && self.connect_timeout.is_none() {
                    self.connect_timeout = Some(time);
                }
            }
            "connectionattempts" => {
                let value = one_value("ConnectionAttempts", args)?;
                let count = parse_number(value)
                    .filter(|&n: &u32| n > 0)
                    .ok_or_else(|| {
                        format!("ConnectionAttempts must be a number from 1, not {value:?}")
                    })?;
                if applies && self.connection_attempts.is_none() {
                    self.connection_attempts = Some(count);
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
                let value = args.join(" ");
                if value.is_empty() {
                    return Err("ProxyJump needs a value".into());
                }
                if value.contains(char::is_whitespace) {
                    return Err(format!("ProxyJump {value:?} has a space in it"));
                }
                // OpenSSH: the first of ProxyJump and ProxyCommand that applies wins.
                if applies && self.proxy_jump.is_none() && self.proxy_command.is_none() {
                    if value.eq_ignore_ascii_case("none") {
                        self.proxy_jump = Some(None);
                    } else {
                        self.proxy_jump = Some(Some(value));
                        self.proxy_command = Some(None);
                    }
                }
            }
            "proxycommand" => {
                if args.is_empty() {
                    return Err("ProxyCommand needs a command".into());
                }
                // The command is the rest of the line as written, quotes and all: the
                // shell parses it.
                let command = raw.to_owned();
                if applies && self.proxy_jump.is_none() && self.proxy_command.is_none() {
                    self.proxy_command =
                        Some((!command.eq_ignore_ascii_case("none")).then(|| located(&command)));
                }
            }
            "forwardagent" => {
                let value = one_value("ForwardAgent", args)?;
                let (flag, path) = match parse_flag("ForwardAgent", value) {
                    Ok(flag) => (flag, None),
                    Err(_) => (true, Some(located(value))),
                };
                if applies && self.forward_agent.is_none() {
                    self.forward_agent = Some(flag);
                }
                if applies && self.forward_agent_path.is_none() {
                    self.forward_agent_path = path;
                }
            }
            "setenv" => {
                let mut pairs: Vec<(String, String)> = Vec::new();
                for arg in args {
                    let Some((name, value)) = arg.split_once('=') else {
                        return Err(format!("SetEnv {arg:?} is not NAME=value"));
                    };
                    if !pairs.iter().any(|(n, _)| n == name) {
                        pairs.push((name.to_owned(), value.to_owned()));
                    }
                }
                if applies && self.set_env.is_none() && !pairs.is_empty() {
                    self.set_env = Some(pairs);
                }
            }
            "sendenv" => {
                for arg in args {
                    if arg.is_empty() || arg.contains('=') {
                        return Err(format!("SendEnv {arg:?} is not a variable name"));
                    }
                }
                if applies {
                    for arg in args {
                        match arg.strip_prefix('-') {
                            Some(pattern) => self.send_env.retain(|n| !glob_matches(pattern, n)),
                            None => {
                                self.send_env.push(arg.clone());
                                let from = if self.in_user_file {
                                    &mut self.send_env_from.1
                                } else {
                                    &mut self.send_env_from.0
                                };
                                from.push(arg.clone());
                            }
                        }
                    }
                }
            }
            "canonicalizehostname" => {
                let value = one_value("CanonicalizeHostname", args)?;
                let on = match value.to_ascii_lowercase().as_str() {
                    "no" | "false" => false,
                    "yes" | "true" | "always" => true,
                    _ => {
                        return Err(format!(
                            "CanonicalizeHostname must be yes, no or always, not {value:?}"
                        ));
                    }
                };
                if applies && self.canonicalize.is_none() {
                    self.canonicalize = Some(on);
                    if on {
                        self.unhonoured.push(located("").unhonoured(
                            "CanonicalizeHostname",
                            "it would look the host name up in CanonicalDomains first",
                        ));
                    }
                }
            }
            "ciphers" | "kexalgorithms" | "macs" | "hostkeyalgorithms" => {
                let (name, slot) = match keyword {
                    "ciphers" => ("Ciphers", &mut self.algorithms.ciphers),
                    "kexalgorithms" => ("KexAlgorithms", &mut self.algorithms.kex),
                    "macs" => ("MACs", &mut self.algorithms.macs),
                    _ => ("HostKeyAlgorithms", &mut self.algorithms.host_keys),
                };
                let value = one_value(name, args)?;
                if applies && slot.is_none() {
                    *slot = Some(value.to_owned());
                }
            }
            "ignoreunknown" => {
                if applies && self.ignore_unknown.is_none() {
                    self.ignore_unknown = Some(args.to_vec());
                }
            }
            "addkeystoagent" => {
                // leadpipe never loads keys into an agent; the connection is the same.
                let value = one_value("AddKeysToAgent", args)?;
                let lower = value.to_ascii_lowercase();
                if !matches!(
                    lower.as_str(),
                    "yes" | "no" | "true" | "false" | "ask" | "confirm"
                ) && !lower.starts_with("confirm")
                    && parse_time("AddKeysToAgent", value).is_err()
                {
                    return Err(format!(
                        "AddKeysToAgent must be yes, no, ask, confirm or a time, not {value:?}"
                    ));
                }
            }
            _ => {
                if let Some((name, refuse)) = refused_keyword(keyword) {
                    if applies
                        && self.seen.insert(name)
                        && let Some(reason) = refuse(args)
                    {
                        self.unhonoured.push(located("").unhonoured(name, reason));
                    }
                } else if !IGNORED.contains(&keyword) && !self.ignored.iter().any(|k| k == keyword)
                {
                    let allowed = self.ignore_unknown.as_ref().is_some_and(|patterns| {
                        patterns
                            .iter()
                            .any(|p| pattern_list_matches(keyword, p, true))
                    });
                    if !allowed {
                        return Err(format!(
                            "{keyword:?} is not an ssh_config keyword leadpipe knows \
                             (list it in IgnoreUnknown, or call \
                             ignore_config_keyword(\"{keyword}\"), to skip it)"
                        ));
                    }
                }
            }
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
        let host = final_host(hostname.as_deref().unwrap_or(self.original_host));
        let port = self.port.unwrap_or(22).to_string();
        let user = self.user.as_deref().unwrap_or(&self.ctx.local_user);
        let home = self.ctx.home.to_string_lossy();
        let local = LocalTokens::new(self.ctx);
        let hash = connection_hash(&self.ctx.local_host, &host, &port, user);
        let alias = self.host_key_alias.as_deref().unwrap_or(self.original_host);
        let tokens = [
            ('C', hash.as_str()),
            ('L', local.short.as_str()),
            ('i', local.uid.as_str()),
            ('k', alias),
            ('l', self.ctx.local_host.as_str()),
            ('n', self.original_host),
            ('p', port.as_str()),
            ('d', home.as_ref()),
            ('h', host.as_str()),
            ('r', user),
            ('u', self.ctx.local_user.as_str()),
        ];
        let expand_path = |keyword: &str, file: &Located| {
            expand_file(&file.value, &self.ctx.home, &tokens)
                .map_err(|m| file.error(format!("{keyword} {m}")))
        };
        let expand_all = |keyword: &str, files: &[Located]| {
            files
                .iter()
                .map(|f| expand_path(keyword, f))
                .collect::<Result<Vec<_>, _>>()
        };
        let identity_files = expand_all("IdentityFile", &self.identity_files)?;
        let certificate_files = expand_all("CertificateFile", &self.certificate_files)?;
        let forward_agent_socket = match &self.forward_agent_path {
            Some(socket) => match socket.value.strip_prefix('$') {
                Some(name) if !name.starts_with('{') => std::env::var_os(name).map(PathBuf::from),
                _ => Some(expand_path("ForwardAgent", socket)?),
            },
            _ => None,
        };
        let user_known_hosts_files = match &self.user_known_hosts_files {
            Some(files) => Some(expand_all("UserKnownHostsFile", files)?),
            None => None,
        };
        // OpenSSH expands nothing but `~` here.
        let global_known_hosts_files = self.global_known_hosts_files.as_ref().map(|files| {
            files
                .iter()
                .map(|f| expand_tilde(&f.value, &self.ctx.home))
                .collect()
        });
        let mut unhonoured = self.unhonoured;
        let proxy_command = self.proxy_command.flatten();
        if let Some(command) = &proxy_command {
            // Checked now, so a bad token is reported with its line.
            proxy_command_line(&command.value, "h", "h", "h", 22, "u")
                .map_err(|m| command.error(format!("ProxyCommand {m}")))?;
            if command.value == "-" {
                unhonoured.push(command.unhonoured(
                    "ProxyCommand",
                    "`ProxyCommand -` means ssh's own stdin and stdout, which a library does \
                     not have",
                ));
            }
        }
        let mut no_agent = false;
        if let Some(agent) = &self.identity_agent {
            match agent.value.as_str() {
                "none" => no_agent = true,
                "SSH_AUTH_SOCK" | "$SSH_AUTH_SOCK" => {}
                _ => unhonoured.push(agent.unhonoured(
                    "IdentityAgent",
                    "leadpipe uses the agent at $SSH_AUTH_SOCK, which may hold other keys",
                )),
            }
        }
        unhonoured.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        Ok(HostConfig {
            hostname,
            user: self.user,
            port: self.port,
            identity_files,
            identities_only: self.identities_only,
            no_agent,
            certificate_files,
            user_known_hosts_files,
            global_known_hosts_files,
            strict_host_key_checking: self.strict_host_key_checking,
            host_key_alias: self.host_key_alias,
            check_host_ip: self.check_host_ip.map(|(flag, _)| flag),
            connect_timeout: self.connect_timeout,
            connection_attempts: self.connection_attempts,
            server_alive_interval: self.server_alive_interval,
            server_alive_count_max: self.server_alive_count_max,
            proxy_jump: self.proxy_jump.flatten(),
            proxy_command: proxy_command.map(|c| c.value),
            forward_agent: self.forward_agent,
            forward_agent_socket,
            set_env: self.set_env.unwrap_or_default(),
            system_send_env: (self.send_env.iter())
                .filter(|p| self.send_env_from.0.contains(p) && !self.send_env_from.1.contains(p))
                .cloned()
                .collect(),
            send_env: self.send_env,
            algorithms: self.algorithms,
            unhonoured,
        })
    }
}

/// A check on a keyword's first applicable value: the reason it cannot be honoured, or
/// `None` when the value changes nothing about the connection.
type Refusal = fn(&[String]) -> Option<&'static str>;

/// Keywords leadpipe does not act on that would change the destination, the transport,
/// the identity or host-key trust: their ssh_config spelling and the check on their value.
fn refused_keyword(keyword: &str) -> Option<(&'static str, Refusal)> {
    /// Whether the value is `none` (any case).
    fn none(args: &[String]) -> bool {
        matches!(args, [v] if v.eq_ignore_ascii_case("none"))
    }
    let entry: (&'static str, Refusal) = match keyword {
        "pkcs11provider" | "smartcarddevice" => ("PKCS11Provider", |a| {
            (!none(a)).then_some("it would log in with keys from a PKCS#11 token")
        }),
        "knownhostscommand" => ("KnownHostsCommand", |a| {
            (!none(a)).then_some("it would trust the host keys a command prints")
        }),
        "revokedhostkeys" => ("RevokedHostKeys", |a| {
            (!none(a)).then_some("leadpipe would accept a revoked host key")
        }),
        "bindaddress" => ("BindAddress", |_| {
            Some("leadpipe would connect from another local address")
        }),
        "bindinterface" => ("BindInterface", |_| {
            Some("leadpipe would connect from another local interface")
        }),
        "addressfamily" => ("AddressFamily", |a| {
            (!matches!(a, [v] if v.eq_ignore_ascii_case("any")))
                .then_some("leadpipe would dial addresses of either family")
        }),
        "canonicalizepermittedcnames" => ("CanonicalizePermittedCNAMEs", |a| {
            (!none(a)).then_some("it would follow CNAMEs to another host name")
        }),
        _ => return None,
    };
    Some(entry)
}

/// Keywords that change nothing about where or how leadpipe connects, or that ask for
/// what a program does itself (forwards, terminals, multiplexing), so they are skipped.
/// Each is listed in [`SshBuilder`](super::SshBuilder)'s documentation with its reason.
const IGNORED: &[&str] = &[
    // Output, prompts and terminals: leadpipe prints nothing and never prompts.
    "batchmode",
    "escapechar",
    "enableescapecommandline",
    "loglevel",
    "logverbose",
    "syslogfacility",
    "numberofpasswordprompts",
    "requesttty",
    "sessiontype",
    "stdinnull",
    "forkafterauthentication",
    "remotecommand",
    "localcommand",
    "permitlocalcommand",
    "visualhostkey",
    "fingerprinthash",
    "obscurekeystroketiming",
    "tag",
    // Forwarding: a program asks for tunnels itself.
    "localforward",
    "remoteforward",
    "dynamicforward",
    "clearallforwardings",
    "exitonforwardfailure",
    "gatewayports",
    "permitremoteopen",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "forwardx11",
    "forwardx11trusted",
    "forwardx11timeout",
    "xauthlocation",
    "tunnel",
    "tunneldevice",
    // Multiplexing: leadpipe keeps one connection of its own per machine.
    "controlmaster",
    "controlpath",
    "controlpersist",
    // Authentication methods: leadpipe tries its own list (keys, password, agent); the
    // account and the keys are what User and IdentityFile say.
    "preferredauthentications",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "challengeresponseauthentication",
    "pubkeyauthentication",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyauthoptions",
    "hostbasedauthentication",
    "hostbasedacceptedalgorithms",
    "hostbasedkeytypes",
    "enablesshkeysign",
    "gssapiauthentication",
    "gssapidelegatecredentials",
    "gssapikeyexchange",
    "gssapitrustdns",
    "gssapiclientidentity",
    "gssapiserveridentity",
    "gssapirenewalforcesrekey",
    "gssapikexalgorithms",
    "securitykeyprovider",
    "requiredrsasize",
    "casignaturealgorithms",
    // Host keys: each only makes OpenSSH *more* willing to connect or to write files.
    "verifyhostkeydns",
    "updatehostkeys",
    "hashknownhosts",
    "nohostauthenticationforlocalhost",
    // Canonicalisation settings, which only matter with CanonicalizeHostname.
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizemaxdots",
    // The transport's tuning, not its endpoints or its security.
    "compression",
    "tcpkeepalive",
    "keepalive",
    "ipqos",
    "rekeylimit",
    "channeltimeout",
    "proxyusefdpass",
    // Removed from OpenSSH, which ignores them too.
    "protocol",
    "cipher",
    "fallbacktorsh",
    "globalknownhostsfile2",
    "rhostsauthentication",
    "userknownhostsfile2",
    "useroaming",
    "usersh",
    "useprivilegedport",
    "afstokenpassing",
    "kerberosauthentication",
    "kerberostgtpassing",
    "rsaauthentication",
    "rhostsrsaauthentication",
    "compressionlevel",
    "dsaauthentication",
    "skeyauthentication",
    "tisauthentication",
    "identityfile2",
];

/// OpenSSH's `match_pattern_list`: comma-separated globs, `!` negating; no match if a
/// negated one matches, else a match if a plain one does.
fn pattern_list_matches(text: &str, list: &str, lowercase: bool) -> bool {
    let text = if lowercase {
        text.to_ascii_lowercase()
    } else {
        text.to_owned()
    };
    let mut matched = false;
    for pattern in list.split(',') {
        let pattern = if lowercase {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_owned()
        };
        match pattern.strip_prefix('!') {
            Some(negated) => {
                if glob_matches(negated, &text) {
                    return false;
                }
            }
            None => matched |= glob_matches(&pattern, &text),
        }
    }
    matched
}

/// Runs a `Match exec` command as `ssh` does: `$SHELL -c` (else `/bin/sh`), stdin and
/// stdout on /dev/null, stderr inherited; exit status 0 means the criterion holds.
fn run_exec(command: &str) -> Result<bool, String> {
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let status = std::process::Command::new(&shell)
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            format!(
                "Match exec {command:?} could not start {}: {e}",
                Path::new(&shell).display()
            )
        })?;
    match status.code() {
        Some(code) => Ok(code == 0),
        None => Err(format!(
            "Match exec {command:?} ended abnormally ({status})"
        )),
    }
}

/// The local side's tokens that need formatting.
struct LocalTokens {
    /// `%L`: the host name up to its first dot.
    short: String,
    /// `%i`: the uid.
    uid: String,
}

impl LocalTokens {
    /// Formats them from `ctx`.
    fn new(ctx: &ExpandContext) -> LocalTokens {
        let short = ctx
            .local_host
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        LocalTokens {
            short,
            uid: ctx.uid.to_string(),
        }
    }
}

/// `%C`: the hex SHA-1 of local host, remote host, port and remote user, as `ssh` makes
/// ControlPath names unique.
fn connection_hash(local_host: &str, host: &str, port: &str, user: &str) -> String {
    let text = [local_host, host, port, user].concat();
    sha1(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-1 (FIPS 180-4), for `%C` only: a token, not a security measure.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bits.to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, &word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (slot, value) in h.iter_mut().zip([a, b, c, d, e]) {
            *slot = slot.wrapping_add(value);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// The files of a `UserKnownHostsFile` or `GlobalKnownHostsFile` line; empty for `none`.
fn file_list<'v>(keyword: &str, args: &'v [String]) -> Result<&'v [String], String> {
    if args.is_empty() {
        return Err(format!("{keyword} needs at least one file"));
    }
    let none = args.iter().any(|a| a.eq_ignore_ascii_case("none"));
    if none && args.len() > 1 {
        return Err(format!("{keyword} none must be the only value"));
    }
    if args.iter().any(String::is_empty) {
        return Err(format!("{keyword} has an empty file name"));
    }
    Ok(if none { &[] } else { args })
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

/// The rest of a line after its keyword, as written: what OpenSSH takes for
/// `ProxyCommand` (blanks and `=` skipped before it, trailing blanks dropped).
fn raw_value(line: &str) -> &str {
    let is_blank = |c: char| c == ' ' || c == '\t' || c == '\r';
    let line = line.trim_matches(is_blank);
    let end = line
        .find(|c: char| is_blank(c) || c == '=')
        .unwrap_or(line.len());
    line[end..].trim_start_matches(|c: char| is_blank(c) || c == '=')
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

/// A leading `~` or `~/` as the home directory; the rest unchanged.
fn expand_tilde(value: &str, home: &Path) -> PathBuf {
    match value.strip_prefix('~') {
        Some("") => home.to_owned(),
        Some(rest) if rest.starts_with('/') => home.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(value),
    }
}

/// Expands a file name: a leading `~` or `~/`, then `${VAR}` and `%` tokens in the rest.
/// One pass, so a `%` inside the home directory's own path is never taken for a token.
fn expand_file(value: &str, home: &Path, tokens: &[(char, &str)]) -> Result<PathBuf, String> {
    let expand_rest = |rest: &str| expand(&expand_env(rest)?, tokens);
    match value.strip_prefix('~') {
        Some("") => Ok(home.to_owned()),
        // Without the slashes: joining an absolute path would replace the home directory.
        Some(rest) if rest.starts_with('/') => {
            Ok(home.join(expand_rest(rest.trim_start_matches('/'))?))
        }
        _ => Ok(PathBuf::from(expand_rest(value)?)),
    }
}

/// Replaces `${VAR}` with the variable's value, as OpenSSH's `dollar_expand`; an unset
/// variable is an error.
fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("has an unterminated ${{ in {value:?}"));
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) if !name.is_empty() => out.push_str(&v),
            _ => return Err(format!("uses ${{{name}}}, which is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ExpandContext {
        ExpandContext {
            home: PathBuf::from("/home/ann"),
            local_user: "ann".into(),
            uid: 1000,
            local_host: "box.example.org".into(),
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
                ..HostConfig::default()
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
        for host in ["db1", "a.example.com", "other"] {
            assert_eq!(get(text, host).user.as_deref(), Some("matched"), "{host}");
        }
        // Case-sensitive, as OpenSSH compares `Host` patterns.
        for host in ["db10", "example.com", "another", "A.Example.COM"] {
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
                "IdentityFile a~/b\nIdentityFile ~bob/k\nIdentityFile %C\n",
                "h"
            )
            .identity_files,
            vec![
                PathBuf::from("a~/b"),
                PathBuf::from("~bob/k"),
                PathBuf::from(connection_hash("box.example.org", "h", "22", "ann")),
            ]
        );
    }

    #[test]
    fn unknown_tokens_are_errors_naming_the_line() {
        let message = err("\n\nIdentityFile ~/.ssh/%T\n");
        assert!(
            message.starts_with("ssh config line 3: IdentityFile uses %T"),
            "{message}"
        );
        assert!(err("HostName %p.example\n").contains("HostName uses %p"));
        assert!(err("UserKnownHostsFile /a%\n").contains("lone %"));
        // Tokens in a block that does not apply are never expanded.
        assert!(resolve("Host other\n  IdentityFile %T\n", "h", &ctx()).is_ok());
        assert!(err("IdentityFile ${LEADPIPE_SURELY_UNSET}/k\n").contains("is not set"));
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
    fn harmless_keywords_are_ignored_and_unknown_ones_are_errors() {
        let text = "ForwardX11 yes\nSendEnv LANG LC_*\nControlMaster auto\nUser u\n";
        assert_eq!(get(text, "h").user.as_deref(), Some("u"));
        let message = err("User u\n\nNoSuchOption whatever\n");
        assert!(
            message.starts_with("ssh config line 3: \"nosuchoption\""),
            "{message}"
        );
        assert!(message.contains("IgnoreUnknown"), "{message}");
        // IgnoreUnknown, as in OpenSSH, covers the lines after it.
        let text = "IgnoreUnknown NoSuch*,Other\nNoSuchOption x\nUser u\n";
        assert_eq!(get(text, "h").user.as_deref(), Some("u"));
        // And the program's own list.
        let ignored = ["nosuchoption".to_owned()];
        let context = ctx();
        let mut resolver = Resolver::new("h", &context, &ignored);
        resolver
            .read("NoSuchOption x\n", None, true, Reach::Applies, 0)
            .unwrap();
    }

    /// The keywords and lines of what a config asks leadpipe cannot do.
    fn unhonoured(text: &str, host: &str) -> Vec<(String, usize)> {
        get(text, host)
            .unhonoured
            .iter()
            .map(|u| (u.keyword.to_owned(), u.line))
            .collect()
    }

    #[test]
    fn what_would_change_the_connection_is_reported_with_file_line_and_keyword() {
        let text = "\
Host web1
    ProxyCommand socat - TCP:%h:%p
    CertificateFile ~/.ssh/id_ed25519-cert.pub
    CheckHostIP yes
    HostKeyAlgorithms ssh-ed25519
    KnownHostsCommand /usr/bin/keys %h
    AddressFamily any
    BindAddress 10.0.0.1
    IdentityAgent ~/.other-agent
    CanonicalizeHostname yes
";
        let owned = |list: &[(&str, usize)]| -> Vec<(String, usize)> {
            list.iter().map(|(k, l)| ((*k).to_owned(), *l)).collect()
        };
        assert_eq!(
            unhonoured(text, "web1"),
            owned(&[
                ("KnownHostsCommand", 6),
                ("BindAddress", 8),
                ("IdentityAgent", 9),
                ("CanonicalizeHostname", 10),
            ])
        );
        assert_eq!(unhonoured(text, "db1"), owned(&[]));
        // The first value wins here too: `none` first means nothing to refuse.
        let text = "ProxyCommand none\nProxyCommand nc %h %p\nKnownHostsCommand none\n";
        assert_eq!(unhonoured(text, "h"), owned(&[]));
        // Certificates and CheckHostIP are honoured.
        let text = "CertificateFile ~/.ssh/id-cert.pub\nCheckHostIP yes\n";
        assert_eq!(unhonoured(text, "h"), owned(&[]));
        // The message names file, line and keyword, and the way out.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        fs::write(&path, "Host *\n\n  KnownHostsCommand /bin/keys %h\n").unwrap();
        let config = resolve_file(&path, "h", &ctx()).unwrap();
        let message = config.unhonoured[0].to_string();
        assert_eq!(
            message,
            format!(
                "{}:3: KnownHostsCommand is not supported by leadpipe (it would trust the host \
                 keys a command prints); set it on the builder, or call \
                 ignore_config_keyword(\"KnownHostsCommand\") to connect without it",
                path.display()
            )
        );
        // A ProxyCommand is run; only `-` (ssh's own stdio) is refused, and bad tokens are
        // errors with their line.
        assert_eq!(
            unhonoured("ProxyCommand -\n", "h"),
            owned(&[("ProxyCommand", 1)])
        );
        assert!(
            err("\nProxyCommand nc %h %T\n").starts_with("ssh config line 2: ProxyCommand uses %T")
        );
        assert_eq!(
            proxy_command_line(
                "nc %h %p %r %n %k 100%%",
                "host",
                "alias",
                "arg",
                2222,
                "bob"
            ),
            Ok("nc host 2222 bob arg alias 100%".to_owned())
        );
    }

    #[test]
    fn match_criteria() {
        let text = "\
Match host web1.example.com user deploy
    Port 2201
Match originalhost web1 !localuser root
    User deploy
    HostName web1.example.com
Match localuser ann exec \"test %n = web1 && test %u = ann\"
    ConnectTimeout 7
Match exec false
    IdentityFile ~/never
Match !exec false host *.example.com,!db*
    ServerAliveInterval 9
Match all
    ConnectionAttempts 3
";
        let web1 = get(text, "web1");
        assert_eq!(web1.user.as_deref(), Some("deploy"));
        // `Match host` sees the HostName set by an earlier block, `user` the User so far.
        assert_eq!(
            web1.port, None,
            "the first block was read before User was set"
        );
        assert_eq!(web1.connect_timeout, Some(Duration::from_secs(7)));
        assert!(web1.identity_files.is_empty());
        assert_eq!(web1.server_alive_interval, Some(Duration::from_secs(9)));
        assert_eq!(web1.connection_attempts, Some(3));
        let db = get(text, "db1.example.com");
        assert_eq!(db.user, None);
        assert_eq!(db.server_alive_interval, None);
        // Mistakes in Match lines.
        assert!(err("Match\n").contains("at least one criterion"));
        assert!(err("Match host\n").contains("Match host needs a value"));
        assert!(err("Match tagged x\n").contains("not a criterion"));
        assert!(err("Match all host x\n").contains("cannot be combined"));
    }

    #[test]
    fn match_final_and_canonical_read_the_files_again() {
        let text = "\
Host alias
    HostName Real.Example.COM
Match canonical host real.example.com
    User from-final
Match final
    Port 2222
";
        let config = get(text, "alias");
        assert_eq!(config.user.as_deref(), Some("from-final"));
        assert_eq!(config.port, Some(2222));
        assert_eq!(config.destination("alias"), "real.example.com");
        // Without `Match final`, `canonical` never holds.
        assert_eq!(get("Match canonical\n    User never\n", "h").user, None);
        // SendEnv accumulates across both passes, as in ssh -G.
        let text = "Match final\n  SendEnv A\nHost *\n  SendEnv B\n";
        assert_eq!(get(text, "h").send_env, ["B", "A", "B"]);
    }

    #[test]
    fn match_exec_expands_tokens_and_is_skipped_after_a_failed_criterion() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let text = format!(
            "Port 2200\nUser bob\nMatch host nothing exec \"touch {}\"\n    User x\n\
             Match exec \"test %h:%p:%r:%L:%l:%i:%d = web:2200:bob:box:box.example.org:1000:/home/ann\"\n    ConnectTimeout 3\n",
            marker.display()
        );
        let config = get(&text, "web");
        assert!(!marker.exists(), "exec ran after a failed criterion");
        assert_eq!(config.connect_timeout, Some(Duration::from_secs(3)));
        let text = "Match exec \"test %C = $(printf box.example.orgweb22ann | sha1sum | cut -c1-40)\"\n    Port 2\n";
        assert_eq!(get(text, "web").port, Some(2));
    }

    #[test]
    fn set_env_send_env_forward_agent_and_the_rest() {
        let text = "\
SetEnv A=1 B=\"two words\" A=3
SetEnv C=4
SendEnv LANG LC_* XDG_*
SendEnv -LC_*
ForwardAgent yes
HostKeyAlias Web-Alias
CheckHostIP no
ConnectionAttempts 4
GlobalKnownHostsFile ~/g1 /etc/g2
AddKeysToAgent confirm
";
        let config = get(text, "h");
        assert_eq!(
            config.set_env,
            [
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two words".to_owned())
            ]
        );
        assert_eq!(config.send_env, ["LANG", "XDG_*"]);
        assert_eq!(config.forward_agent, Some(true));
        assert_eq!(config.host_key_alias.as_deref(), Some("web-alias"));
        assert_eq!(config.check_host_ip, Some(false));
        assert_eq!(config.connection_attempts, Some(4));
        assert_eq!(
            config.global_known_hosts_files,
            Some(vec![
                PathBuf::from("/home/ann/g1"),
                PathBuf::from("/etc/g2")
            ])
        );
        assert!(err("SetEnv A\n").contains("not NAME=value"));
        assert!(err("SendEnv A=B\n").contains("not a variable name"));
        assert!(err("ConnectionAttempts 0\n").contains("ConnectionAttempts"));
        assert_eq!(
            get("ForwardAgent ~/agent.sock\n", "h").forward_agent,
            Some(true)
        );
        assert_eq!(
            get("ForwardAgent ~/%n.sock\n", "h").forward_agent_socket,
            Some(PathBuf::from("/home/ann/h.sock"))
        );
        assert_eq!(get(text, "h").forward_agent_socket, None);
        // The flag and the socket each take their first value, as in OpenSSH.
        let later = get("ForwardAgent no\nForwardAgent /run/a.sock\n", "h");
        assert_eq!(later.forward_agent, Some(false));
        let both = get("ForwardAgent yes\nForwardAgent /run/a.sock\n", "h");
        assert_eq!(both.forward_agent, Some(true));
        assert_eq!(
            both.forward_agent_socket,
            Some(PathBuf::from("/run/a.sock"))
        );
    }

    #[test]
    fn send_env_of_the_system_file_alone_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("config");
        let system = dir.path().join("ssh_config");
        fs::write(&user, "SendEnv LEADPIPE_* LANG\n").unwrap();
        fs::write(&system, "Host *\n    SendEnv LANG LC_*\n").unwrap();
        let sources = [
            Source {
                path: user,
                user: true,
            },
            Source {
                path: system,
                user: false,
            },
        ];
        let config = resolve_sources(&sources, "h", &ctx(), &[]).unwrap();
        assert_eq!(config.send_env, ["LEADPIPE_*", "LANG", "LANG", "LC_*"]);
        assert_eq!(config.system_send_env, ["LC_*"]);
    }

    #[test]
    fn proxy_jump_and_proxy_command_first_wins() {
        let both = get("ProxyJump a\nProxyCommand nc %h %p\n", "h");
        assert_eq!(both.proxy_jump.as_deref(), Some("a"));
        assert_eq!(both.proxy_command, None);
        let both = get("ProxyCommand nc %h %p\nProxyJump a\n", "h");
        assert_eq!(both.proxy_jump, None);
        assert_eq!(both.proxy_command.as_deref(), Some("nc %h %p"));
        // The rest of the line as written, quotes included.
        let quoted = get("ProxyCommand = sh -c 'nc %h %p'  \"a  b\"  \n", "h");
        assert_eq!(
            quoted.proxy_command.as_deref(),
            Some("sh -c 'nc %h %p'  \"a  b\"")
        );
        let none = get("ProxyJump none\nProxyCommand nc %h %p\n", "h");
        assert_eq!((none.proxy_jump, none.proxy_command), (None, None));
    }

    #[test]
    fn sha1_known_answers() {
        let hex =
            |data: &[u8]| -> String { sha1(data).iter().map(|b| format!("{b:02x}")).collect() };
        assert_eq!(hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            hex(&[b'a'; 1000]),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
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
            uid: 1000,
            local_host: "box".into(),
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
            uid: 1000,
            local_host: "box".into(),
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
