//! How to connect: [`SshBuilder`] and the settings it resolves ([`SshSettings`]), in order
//! of precedence the builder's explicit values, then ssh_config for the host, then the
//! defaults; `user@host:port` destinations; the hops of a `ProxyJump`.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;

use super::{
    SshBackend, SshMachine, algorithms, config,
    connection::{self, Connection, HostKeyPolicy, Settings},
    sftp,
};
use crate::{Error, Result, Secret, command::Scope, sudo::SudoPassword};

/// How to connect: user, port, keys, host-key policy, timeouts. From
/// [`SshMachine::builder`].
///
/// Values come from, in order of precedence: the builder's methods, then ssh_config for
/// the host (`~/.ssh/config` then `/etc/ssh/ssh_config`, or the one file given to
/// [`ssh_config`](SshBuilder::ssh_config), as `ssh -F`), then the defaults below.
/// [`resolve`](SshBuilder::resolve) shows the outcome, as `ssh -G` does.
///
/// # ssh_config
///
/// The files are read as OpenSSH 9 reads them: `Host` patterns with `!`, `Match` (`all`,
/// `host`, `originalhost`, `user`, `localuser`, `exec`, `canonical`, `final`, each
/// negatable; `exec` runs through `$SHELL -c`, else `/bin/sh -c`, when the config is
/// read), `Include` with globs (inside `Match` too), the first value winning, and the `%`
/// tokens `%C %d %h %i %k %L %l %n %p %r %u %%` plus `${VAR}` in file names. Three kinds of
/// keyword:
///
/// - **Honoured**: `HostName`, `User`, `Port`, `IdentityFile`, `IdentitiesOnly`,
///   `CertificateFile` (offered with the identity file or agent key it certifies),
///   `IdentityAgent` (`none` or `SSH_AUTH_SOCK`), `UserKnownHostsFile`,
///   `GlobalKnownHostsFile` (read after the user's files, never written),
///   `StrictHostKeyChecking` (`ask` reads as `yes`: nobody is there to ask),
///   `HostKeyAlias`, `ConnectTimeout`, `ConnectionAttempts`, `ServerAliveInterval`,
///   `ServerAliveCountMax`, `ProxyJump` (also `none`), `ProxyCommand` (also `none`; run
///   as `ssh` runs it, `$SHELL -c "exec COMMAND"` with `%h %k %n %p %r %%` expanded, its
///   stdin and stdout carrying the connection; killed and reaped when the machine and its
///   clones are dropped), `SetEnv` (set in every command's
///   environment, as [`SshMachine::with_env`], so it reaches the program whatever the
///   server's `AcceptEnv` says), `SendEnv` (the local variables it selects, when the
///   connection is made, set the same way; `SetEnv` wins for a name both set),
///   `ForwardAgent` (`yes` serves `$SSH_AUTH_SOCK`, a path or `$VAR` that socket; see
///   [`forward_agent`](SshBuilder::forward_agent)), `CanonicalizeHostname no`, `IgnoreUnknown`,
///   `CheckHostIP` (as OpenSSH 9: once the host's plain key is trusted, the address
///   connected to is looked up too, `[address]:port` off port 22; a missing entry is added
///   to the first user known_hosts file with a warning, an entry listing another key is
///   refused as [`HostKeyProblem::Changed`](crate::HostKeyProblem::Changed); not checked
///   through a proxy, for a host given as an address, or for a loopback address),
///   `Ciphers`, `KexAlgorithms`, `MACs`, `HostKeyAlgorithms` (applied to what leadpipe
///   supports, with OpenSSH's `+`, `-` and `^` forms; a list that leaves nothing
///   leadpipe supports is an error; the `*-cert-v01@openssh.com` names it allows are the
///   host certificates asked for where an `@cert-authority` line applies).
/// - **Refused**, because leadpipe does not do what the line asks and connecting anyway
///   would change the destination, the transport, the identity or host-key trust: the
///   connection fails with [`Error::Connect`] naming file, line and keyword, unless the
///   program passes the keyword to [`ignore_config_keyword`](SshBuilder::ignore_config_keyword)
///   or sets the thing itself. `ProxyCommand -` (ssh's own stdin and stdout);
///   `IdentityAgent` at
///   another socket (or give identity files); `CanonicalizeHostname yes`/`always`;
///   `CanonicalizePermittedCNAMEs`; `AddressFamily` other than `any`;
///   `BindAddress`; `BindInterface`; `PKCS11Provider`; `KnownHostsCommand`;
///   `RevokedHostKeys`. A keyword OpenSSH does not know either is also an error, as in
///   `ssh`, unless `IgnoreUnknown` or `ignore_config_keyword` names it.
/// - **Ignored**, as they change nothing about where or how leadpipe connects:
///   `AddKeysToAgent` (leadpipe
///   never adds keys to an agent); output and terminals (`BatchMode`, `LogLevel`,
///   `RequestTTY`, `EscapeChar`, `RemoteCommand`, `LocalCommand`, ...); forwards
///   (`LocalForward`, `RemoteForward`, `DynamicForward`, `ForwardX11`, `Tunnel`, ...:
///   a program opens its own); `ControlMaster`/`ControlPath`/`ControlPersist` (leadpipe
///   keeps a connection per machine); authentication methods (`PreferredAuthentications`,
///   `PasswordAuthentication`, `PubkeyAuthentication`, `GSSAPI*`, ...: the account and
///   keys are those above); host-key options that only make OpenSSH more willing
///   (`VerifyHostKeyDNS`, `UpdateHostKeys`, `HashKnownHosts`,
///   `NoHostAuthenticationForLocalhost`); tuning (`Compression`, `TCPKeepAlive`, `IPQoS`,
///   `RekeyLimit`, ...); and the keywords OpenSSH itself ignores as deprecated.
///
/// The locale is not forwarded: remote commands run in the server's default locale, as
/// they do under `ssh` without `SendEnv`. To pass it, as Debian's `/etc/ssh/ssh_config`
/// does, write `SendEnv LANG LC_*` in ssh_config (or set it with
/// [`SshMachine::with_env`]).
///
/// Authentication tries, in order: the identity files given (by the builder, else the
/// config's `IdentityFile`), the [`password`](SshBuilder::password) given, the ssh-agent's
/// keys (`SSH_AUTH_SOCK`, unless `IdentitiesOnly` or identity files were given to the
/// builder), the default `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` (when no identity file
/// was given), then keyboard-interactive answered with the password. A key is offered with
/// its user certificates first: the [`certificate_file`](SshBuilder::certificate_file)s
/// (else the config's `CertificateFile`s) that certify it, then `KEY-cert.pub` beside an
/// identity file; certificates the agent holds are offered as they are. An identity file
/// that cannot be opened (encrypted, no passphrase given) is signed with by the agent when
/// the agent holds its key, even under `IdentitiesOnly` (unless `IdentityAgent none`), as
/// `ssh` does. Encrypted keys open
/// with the [`passphrase`](SshBuilder::passphrase) or [`passphrase_with`](SshBuilder::passphrase_with). RSA keys sign with rsa-sha2.
/// Host certificates are asked for when an `@cert-authority` line of the known_hosts files
/// (the user's and `GlobalKnownHostsFile`) matches the host, and trusted when that CA
/// signed a host certificate that is valid now and names the host (its `HostKeyAlias`,
/// else the host name) among its principals; an expired certificate is refused with
/// [`HostKeyProblem::CertificateExpired`](crate::HostKeyProblem::CertificateExpired), one
/// for another name with
/// [`CertificatePrincipal`](crate::HostKeyProblem::CertificatePrincipal), unless a plain
/// line trusts the key inside it (as OpenSSH falls back to it).
/// Host keys are checked against `~/.ssh/known_hosts` (or the files given) under
/// [`HostKeyPolicy::Strict`] unless another policy is chosen.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use std::time::Duration;
/// use leadpipe::SshMachine;
/// let db = SshMachine::builder("db1.internal")
///     .user("deploy")
///     .port(2222)
///     .identity_file("~/.ssh/deploy_ed25519")
///     .connect_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SshBuilder {
    host: String,
    /// The whole destination when it came through [`SshMachine::connect`], for errors.
    given: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    identity_files: Vec<PathBuf>,
    certificate_files: Vec<PathBuf>,
    forward_agent: Option<bool>,
    password: Option<String>,
    passphrase: Option<String>,
    passphrase_for: Option<connection::PassphraseCallback>,
    known_hosts: Vec<PathBuf>,
    host_key_policy: Option<HostKeyPolicy>,
    connect_timeout: Option<Duration>,
    keepalive: Option<(Duration, usize)>,
    max_channels: Option<usize>,
    connections: usize,
    config_file: Option<PathBuf>,
    /// Whether `/etc/ssh/ssh_config` is read after `config_file` (as `ssh` does without
    /// `-F`).
    system_config: bool,
    /// Lowercased keywords to skip.
    ignored_keywords: Vec<String>,
    jump: Option<SshMachine>,
    /// sudo's password for the machine's [`sudo`](SshMachine::sudo) views.
    sudo_password: Option<Arc<SudoPassword>>,
}

impl SshBuilder {
    /// The builder behind [`SshMachine::builder`]: everything at its default.
    pub(super) fn new(host: String) -> SshBuilder {
        SshBuilder {
            host,
            given: None,
            user: None,
            port: None,
            identity_files: Vec::new(),
            certificate_files: Vec::new(),
            forward_agent: None,
            password: None,
            passphrase: None,
            passphrase_for: None,
            known_hosts: Vec::new(),
            host_key_policy: None,
            connect_timeout: None,
            keepalive: None,
            max_channels: None,
            connections: 1,
            config_file: home().map(|home| home.join(".ssh/config")),
            system_config: true,
            ignored_keywords: Vec::new(),
            jump: None,
            sudo_password: None,
        }
    }

    /// The password sudo asks for on this machine's [`sudo`](SshMachine::sudo) and
    /// [`sudo_as`](SshMachine::sudo_as) views. It goes only to sudo's stdin: never echoed,
    /// never in `Debug`, an error or a log.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::{Secret, SshMachine};
    /// let password = Secret::new(std::env::var("SUDO_PASSWORD").unwrap_or_default());
    /// let web1 = SshMachine::builder("deploy@web1").sudo_password(password).connect().await?;
    /// web1.sudo().cmd("systemctl").args(["restart", "app"]).run().await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo_password(mut self, password: Secret) -> SshBuilder {
        self.sudo_password = Some(SudoPassword::given(password));
        self
    }

    /// Asks `ask` for sudo's password (given the machine's name) the first time sudo asks
    /// for it on this machine, then reuses the answer for every command and view of the
    /// machine. `None`: there is none (the command fails with
    /// [`Error::Sudo`](crate::Error::Sudo)). Called on a blocking thread, so it may read a
    /// terminal.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::{Secret, SshMachine};
    /// let web1 = SshMachine::builder("web1")
    ///     .sudo_password_with(|machine| {
    ///         eprint!("sudo password for {machine}: ");
    ///         let mut line = String::new();
    ///         std::io::stdin().read_line(&mut line).ok()?;
    ///         Some(Secret::new(line.trim_end_matches('\n')))
    ///     })
    ///     .connect()
    ///     .await?;
    /// web1.sudo().cmd("systemctl").args(["restart", "app"]).run().await?;
    /// # Ok(()) }
    /// ```
    pub fn sudo_password_with(
        mut self,
        ask: impl Fn(&str) -> Option<Secret> + Send + Sync + 'static,
    ) -> SshBuilder {
        self.sudo_password = Some(SudoPassword::asked(Arc::new(ask)));
        self
    }

    /// A builder for `destination` as `ssh` takes it: `host`, `user@host`, `host:port`,
    /// `user@host:port`, `[v6]`, `[v6]:port`. Errors name `destination` as written.
    ///
    /// # Errors
    /// [`Error::Connect`] with `bad` as the reason when the port is not a number.
    pub(super) fn from_destination(destination: &str, bad: &str) -> Result<SshBuilder> {
        let Destination { user, host, port } =
            parse_destination(destination).map_err(|_| Error::Connect {
                destination: destination.to_owned(),
                given: destination.to_owned(),
                address: None,
                reason: bad.to_owned(),
                source: None,
            })?;
        let mut builder = SshBuilder::new(host.to_owned());
        builder.given = Some(destination.to_owned());
        if let Some(user) = user {
            builder = builder.user(user);
        }
        if let Some(port) = port {
            builder = builder.port(port);
        }
        Ok(builder)
    }
    /// The user to log in as (default: the config's `User`, else `$USER`).
    pub fn user(mut self, user: impl Into<String>) -> SshBuilder {
        self.user = Some(user.into());
        self
    }

    /// The port (default: the config's `Port`, else 22).
    pub fn port(mut self, port: u16) -> SshBuilder {
        self.port = Some(port);
        self
    }

    /// A private key file to log in with (OpenSSH or PEM format); may be given several
    /// times. Giving one replaces the config's and the default `~/.ssh/id_*` files.
    pub fn identity_file(mut self, path: impl AsRef<Path>) -> SshBuilder {
        self.identity_files.push(expand_home(path.as_ref()));
        self
    }

    /// An OpenSSH user certificate (`ssh-keygen -s`, usually `KEY-cert.pub`) to offer
    /// with the identity file or agent key it certifies; may be given several times.
    /// Giving one replaces the config's `CertificateFile`s. A `KEY-cert.pub` beside an
    /// identity file is offered without being named, as `ssh` does.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let web1 = leadpipe::SshMachine::builder("web1")
    ///     .identity_file("~/.ssh/deploy_ed25519")
    ///     .certificate_file("~/.ssh/deploy_ed25519-cert-prod.pub")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn certificate_file(mut self, path: impl AsRef<Path>) -> SshBuilder {
        self.certificate_files.push(expand_home(path.as_ref()));
        self
    }

    /// Serves the local ssh-agent (`$SSH_AUTH_SOCK`) to the remote side, as `ssh -A` does
    /// (default: the config's `ForwardAgent`, which may also name another socket, else
    /// off). Every command's session asks the server for agent forwarding, so remote
    /// programs (`git`, `ssh`) find `SSH_AUTH_SOCK` and sign with the local keys; the keys
    /// never leave the agent. Anyone who can use that socket on the server (its root
    /// included) can sign with them while the connection lasts: forward only to servers
    /// you trust. With no agent socket known, nothing is forwarded.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let web1 = leadpipe::SshMachine::builder("web1")
    ///     .forward_agent(true)
    ///     .connect()
    ///     .await?;
    /// web1.cmd("git").args(["-C", "/srv/app", "pull"]).run().await?;
    /// # Ok(()) }
    /// ```
    pub fn forward_agent(mut self, forward: bool) -> SshBuilder {
        self.forward_agent = Some(forward);
        self
    }

    /// A password to log in with, tried after the keys (also for keyboard-interactive).
    /// Never shown by `Debug` or errors.
    pub fn password(mut self, password: impl Into<String>) -> SshBuilder {
        self.password = Some(password.into());
        self
    }

    /// The passphrase of encrypted identity files. Never shown by `Debug` or errors.
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> SshBuilder {
        self.passphrase = Some(passphrase.into());
        self
    }

    /// Asks `ask` for the passphrase of an encrypted identity file (given its path) when no
    /// [`passphrase`](SshBuilder::passphrase) was set: to prompt a person, or read a
    /// secret store. `None` skips the key.
    pub fn passphrase_with(
        mut self,
        ask: impl Fn(&Path) -> Option<String> + Send + Sync + 'static,
    ) -> SshBuilder {
        self.passphrase_for = Some(Arc::new(ask));
        self
    }

    /// Checks host keys against this known_hosts file instead of the config's or
    /// `~/.ssh/known_hosts` (call again to add files; `AcceptNew` appends to the first).
    pub fn known_hosts(mut self, path: impl AsRef<Path>) -> SshBuilder {
        self.known_hosts.push(expand_home(path.as_ref()));
        self
    }

    /// What to do with host keys known_hosts does not vouch for (default: the config's
    /// `StrictHostKeyChecking`, else [`HostKeyPolicy::Strict`]).
    pub fn host_key_policy(mut self, policy: HostKeyPolicy) -> SshBuilder {
        self.host_key_policy = Some(policy);
        self
    }

    /// How long connecting and the handshake may take (default: the config's
    /// `ConnectTimeout`, else 15 s).
    pub fn connect_timeout(mut self, limit: Duration) -> SshBuilder {
        self.connect_timeout = Some(limit);
        self
    }

    /// Sends a keepalive after `interval` of silence from the server and gives the
    /// connection up after `max` unanswered ones (default: the config's
    /// `ServerAliveInterval`/`CountMax`, else 10 s and 3): then every call in flight fails
    /// with [`Error::ConnectionLost`].
    pub fn keepalive(mut self, interval: Duration, max: usize) -> SshBuilder {
        self.keepalive = Some((interval, max));
        self
    }

    /// How many session channels the server allows on one connection (OpenSSH's
    /// `MaxSessions`), when it is known; at least 2.
    ///
    /// Without it, leadpipe learns the limit: it opens as many channels as the work in
    /// flight needs, and the first time the server refuses one, the most it ever had open
    /// at once becomes the limit for the rest of the connection (the refused commands wait
    /// for a channel, they do not fail). Every channel can then run a process; a kill
    /// (a timeout, `kill()`, a dropped `Child`) takes the next free one before any other
    /// waiting command.
    ///
    /// Set, the limit holds from the start and one channel of it is kept free for kills, so
    /// a pipeline can be stopped even while every other channel holds a hung process. That
    /// matters for logins where sshd refuses to deliver signals itself (root): set it there
    /// when every channel may hang. When the channels are busy, new commands wait for a
    /// free one instead of failing.
    pub fn max_channels(mut self, channels: usize) -> SshBuilder {
        self.max_channels = Some(channels.max(2));
        self
    }

    /// Spreads the machine's commands over `connections` SSH connections to the host
    /// (default 1; 0 counts as 1), all opened and authenticated when connecting.
    ///
    /// For a server that allows few session channels per connection (OpenSSH's
    /// `MaxSessions`, 10 by default) and a script that runs more commands at once than
    /// that: each connection has a limit of its own (learnt, or
    /// [`max_channels`](SshBuilder::max_channels) for each). A command starts on the
    /// connection with a free channel (or the spare), else on the one with the fewest
    /// commands waiting, and stays there; a kill goes over the same one. Everything else
    /// uses the first connection: [`connect_sock`](SshMachine::connect_sock) and the other
    /// forwards, files (SFTP), and [`is_closed`](SshMachine::is_closed). A command on a
    /// connection that dies fails with [`Error::ConnectionLost`](crate::Error::ConnectionLost),
    /// and later commands go to the others.
    ///
    /// Off by default, because each connection is a login of its own on the server (one
    /// more sshd process, one more entry in its `MaxStartups` count and its logs).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::SshMachine;
    /// // 40 checks at once against a server that allows 10 sessions per connection.
    /// let web1 = SshMachine::builder("web1").connections(4).connect().await?;
    /// let checks: Vec<_> = (0..40)
    ///     .map(|shard| web1.cmd("check-shard").arg(shard.to_string()))
    ///     .collect();
    /// for output in futures::future::join_all(checks.iter().map(|check| check.output())).await {
    ///     output?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn connections(mut self, connections: usize) -> SshBuilder {
        self.connections = connections.max(1);
        self
    }

    /// Reads this ssh_config file instead of `~/.ssh/config` and `/etc/ssh/ssh_config`
    /// (as `ssh -F`); `None` reads none.
    pub fn ssh_config(mut self, path: Option<PathBuf>) -> SshBuilder {
        self.config_file = path;
        self.system_config = false;
        self
    }

    /// Connects although ssh_config uses `keyword` (any case, such as
    /// `"IdentityAgent"`): a keyword leadpipe refuses (see the list above) no longer
    /// stops the connection, and an unknown one is skipped. It does not turn off a keyword
    /// leadpipe honours. The value still shows in [`resolve`](SshBuilder::resolve) where
    /// leadpipe reads it.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// // ~/.ssh/config names another agent's socket for this host; $SSH_AUTH_SOCK's
    /// // agent holds the key too.
    /// let web1 = leadpipe::SshMachine::builder("web1")
    ///     .ignore_config_keyword("IdentityAgent")
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn ignore_config_keyword(mut self, keyword: impl AsRef<str>) -> SshBuilder {
        self.ignored_keywords
            .push(keyword.as_ref().to_ascii_lowercase());
        self
    }

    /// The settings a [`connect`](SshBuilder::connect) would use, after ssh_config (which
    /// is read now, `Match exec` commands included): for debugging a config, as `ssh -G`.
    ///
    /// # Errors
    /// [`Error::Connect`] for an ssh_config that cannot be read or that asks for what
    /// leadpipe does not do (naming file, line and keyword).
    ///
    /// # Example
    /// ```no_run
    /// # fn demo() -> leadpipe::Result<()> {
    /// let settings = leadpipe::SshMachine::builder("web1").resolve()?;
    /// println!("{}@{}:{} via {:?}", settings.user, settings.hostname, settings.port,
    ///     settings.proxy_jump);
    /// # Ok(()) }
    /// ```
    pub fn resolve(&self) -> Result<SshSettings> {
        Ok(self.settings()?.2)
    }

    /// Reaches the host through `bastion`: the SSH session runs over a `direct-tcpip`
    /// channel of the bastion's connection (what `ProxyJump` in ssh_config does, which is
    /// followed when this is not set).
    pub fn jump(mut self, bastion: &SshMachine) -> SshBuilder {
        self.jump = Some(bastion.clone());
        self
    }

    /// Connects and authenticates.
    ///
    /// # Errors
    /// [`Error::Connect`] (also for an ssh_config that cannot be read or asks for what
    /// leadpipe does not do, naming file, line and keyword), [`Error::HostKey`],
    /// [`Error::Auth`].
    pub async fn connect(self) -> Result<SshMachine> {
        // `Match exec` runs local commands: keep them off the async threads. At most 4
        // resolve at once (process-wide): a fleet connecting 100 hosts otherwise started
        // up to ~100 blocking threads at once for work of about a millisecond each, their
        // stacks and allocator caches resident (up to ~10 KiB per connected host).
        static LANES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
        let builder = self.clone();
        // Never closed: `None` would only mean no bound.
        let lane = LANES.acquire().await.ok();
        let (settings, proxy_jump, resolved) = tokio::task::spawn_blocking(move || {
            let resolved = builder.settings();
            drop(lane);
            resolved
        })
        .await
        .map_err(|e| Error::Connect {
            destination: self.host.clone(),
            given: self.given().to_owned(),
            address: None,
            reason: format!("reading ssh config failed: {e}"),
            source: None,
        })??;
        let jump = match (self.jump.clone(), proxy_jump) {
            (Some(bastion), _) => Some(bastion),
            (None, Some(hops)) => Some(connect_hops(&hops, &self).await?),
            (None, None) => None,
        };
        // On leadpipe's runtime: the connection's I/O and the russh session task belong to
        // the runtime that creates them, and must outlive the caller's (see `lifecycle`).
        let sent_env = send_env(&settings.send_env);
        let via = jump.map(|j| j.connection);
        let count = self.connections;
        let connection = crate::lifecycle::run(async move {
            let others = (1..count).map(|_| Connection::open(&settings, via.clone()));
            let (first, others) = futures::future::try_join(
                Connection::open(&settings, via.clone()),
                futures::future::try_join_all(others),
            )
            .await?;
            first.share_commands_with(others);
            Ok::<_, Error>(first)
        })
        .await?;
        let mut scope = Scope::default();
        // SetEnv after SendEnv, so it wins for a name both set (as sshd applies them).
        for (name, value) in sent_env {
            scope = scope.with_env(&name, Some(&value));
        }
        for (name, value) in &resolved.set_env {
            scope = scope.with_env(name.as_ref(), Some(value.as_ref()));
        }
        Ok(SshMachine {
            backend: Arc::new(SshBackend {
                name: connection.name.clone(),
                connection: connection.clone(),
                runas: None,
            }),
            files: Arc::new(sftp::SftpFiles::new(connection.clone())),
            connection,
            scope,
            sudo_password: self.sudo_password.clone().unwrap_or_default(),
            sudo_user: None,
        })
    }

    /// The config sources `ssh` would read.
    fn config_sources(&self) -> Vec<config::Source> {
        let mut sources = Vec::new();
        if let Some(path) = &self.config_file {
            sources.push(config::Source {
                path: path.clone(),
                user: true,
            });
            if self.system_config {
                sources.push(config::Source {
                    path: PathBuf::from("/etc/ssh/ssh_config"),
                    user: false,
                });
            }
        }
        sources
    }

    /// The destination as the script wrote it, for errors.
    fn given(&self) -> &str {
        self.given.as_deref().unwrap_or(&self.host)
    }

    /// The settings after the config files, the config's `ProxyJump`, and the public view.
    fn settings(&self) -> Result<(Settings, Option<String>, SshSettings)> {
        let context = config::ExpandContext::current();
        let bad_config = |reason: String| Error::Connect {
            destination: self.host.clone(),
            given: self.given().to_owned(),
            address: None,
            reason,
            source: None,
        };
        let file = config::resolve_sources(
            &self.config_sources(),
            &self.host,
            &context,
            &self.ignored_keywords,
        )
        .map_err(|e| bad_config(format!("bad ssh config: {e}")))?;
        let refusals: Vec<String> = file
            .unhonoured
            .iter()
            .filter(|u| {
                !self
                    .ignored_keywords
                    .contains(&u.keyword.to_ascii_lowercase())
            })
            .filter(|u| u.keyword != "IdentityAgent" || self.identity_files.is_empty())
            .map(ToString::to_string)
            .collect();
        if !refusals.is_empty() {
            return Err(bad_config(format!("ssh config: {}", refusals.join("; "))));
        }
        let home = context.home;
        let known_hosts = if !self.known_hosts.is_empty() {
            self.known_hosts.clone()
        } else {
            file.user_known_hosts_files.clone().unwrap_or_else(|| {
                vec![
                    home.join(".ssh/known_hosts"),
                    home.join(".ssh/known_hosts2"),
                ]
            })
        };
        let global_known_hosts = if self.known_hosts.is_empty() {
            file.global_known_hosts_files.clone().unwrap_or_else(|| {
                vec![
                    PathBuf::from("/etc/ssh/ssh_known_hosts"),
                    PathBuf::from("/etc/ssh/ssh_known_hosts2"),
                ]
            })
        } else {
            Vec::new()
        };
        let policy = self
            .host_key_policy
            .unwrap_or(match file.strict_host_key_checking {
                Some(config::StrictHostKeyChecking::No) => HostKeyPolicy::AcceptAny,
                Some(config::StrictHostKeyChecking::AcceptNew) => HostKeyPolicy::AcceptNew,
                _ => HostKeyPolicy::Strict,
            });
        let keepalive = self.keepalive.unwrap_or((
            file.server_alive_interval
                .unwrap_or(Duration::from_secs(10)),
            file.server_alive_count_max.map_or(3, |n| n as usize),
        ));
        let identity_files = if self.identity_files.is_empty() {
            file.identity_files.clone()
        } else {
            self.identity_files.clone()
        };
        let certificate_files = if self.certificate_files.is_empty() {
            file.certificate_files.clone()
        } else {
            self.certificate_files.clone()
        };
        let forward_agent = self
            .forward_agent
            .unwrap_or(file.forward_agent.unwrap_or(false));
        let agent_socket = if forward_agent {
            match (self.forward_agent, &file.forward_agent_socket) {
                (None, Some(socket)) => Some(socket.clone()),
                _ => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
            }
        } else {
            None
        };
        let use_agent = !file.identities_only.unwrap_or(false)
            && !file.no_agent
            && self.identity_files.is_empty();
        let proxy_jump = if self.jump.is_some() {
            None
        } else {
            file.proxy_jump.clone()
        };
        let host = file.destination(&self.host);
        let port = self.port.or(file.port).unwrap_or(22);
        let user = self
            .user
            .clone()
            .or(file.user.clone())
            .unwrap_or(context.local_user);
        let proxy_command = match (&self.jump, &file.proxy_command) {
            (None, Some(command)) => Some(
                config::proxy_command_line(
                    command,
                    &host,
                    file.host_key_alias.as_deref().unwrap_or(&self.host),
                    &self.host,
                    port,
                    &user,
                )
                .map_err(|m| bad_config(format!("bad ssh config: ProxyCommand {m}")))?,
            ),
            _ => None,
        };
        let preferred = algorithms::preferred(&file.algorithms, connection::CIPHERS)
            .map_err(|m| bad_config(format!("bad ssh config: {m}")))?;
        let [kex_algorithms, host_key_algorithms, ciphers, macs] = algorithms::names(&preferred);
        let mut all_known_hosts = known_hosts.clone();
        // Read after the user's files, so `AcceptNew` still appends to the user's first.
        all_known_hosts.extend(global_known_hosts.iter().cloned());
        let settings = Settings {
            given: self.given().to_owned(),
            host,
            port,
            user,
            identity_files,
            certificate_files: certificate_files.clone(),
            agent_socket: agent_socket.clone(),
            agent_for_identities: !file.no_agent,
            // Not the system file's: Debian's `SendEnv LANG LC_*` would pass the locale to
            // every server, where `ssh` passes it only to servers whose AcceptEnv takes it.
            send_env: (file.send_env.iter())
                .filter(|p| !file.system_send_env.contains(p))
                .cloned()
                .collect(),
            use_agent,
            password: self.password.clone(),
            passphrase: self.passphrase.clone(),
            passphrase_for: self.passphrase_for.clone(),
            known_hosts: all_known_hosts,
            host_key_alias: file.host_key_alias.clone(),
            check_host_ip: file.check_host_ip.unwrap_or(false),
            host_key_policy: policy,
            connect_timeout: self
                .connect_timeout
                .or(file.connect_timeout)
                .unwrap_or(Duration::from_secs(15)),
            connection_attempts: file.connection_attempts.unwrap_or(1),
            proxy_command,
            preferred,
            keepalive_interval: (!keepalive.0.is_zero()).then_some(keepalive.0),
            keepalive_max: keepalive.1,
            max_channels: self.max_channels,
        };
        let resolved = SshSettings {
            host: self.host.clone(),
            hostname: settings.host.clone(),
            port: settings.port,
            user: settings.user.clone(),
            identity_files: settings.identity_files.clone(),
            use_agent,
            certificate_files,
            known_hosts_files: known_hosts,
            global_known_hosts_files: global_known_hosts,
            host_key_alias: file.host_key_alias.clone(),
            host_key_policy: policy,
            check_host_ip: file.check_host_ip.unwrap_or(false),
            proxy_jump: proxy_jump.clone(),
            proxy_command: if self.jump.is_some() {
                None
            } else {
                file.proxy_command.clone()
            },
            connect_timeout: settings.connect_timeout,
            connection_attempts: settings.connection_attempts,
            keepalive_interval: settings.keepalive_interval,
            keepalive_max: settings.keepalive_max,
            forward_agent,
            forward_agent_socket: agent_socket,
            set_env: file.set_env.clone(),
            send_env: file.send_env.clone(),
            kex_algorithms,
            host_key_algorithms,
            ciphers,
            macs,
        };
        Ok((settings, proxy_jump, resolved))
    }
}

/// The settings a connection uses, after the builder and ssh_config: what
/// [`SshBuilder::resolve`] returns. Fields that ssh_config names read as `ssh -G` prints
/// them, except where noted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SshSettings {
    /// The host as the program gave it (an alias, perhaps).
    pub host: String,
    /// The host to connect to (`HostName`, `%h` expanded, lowercased unless an address).
    pub hostname: String,
    /// The port.
    pub port: u16,
    /// The remote user.
    pub user: String,
    /// The identity files, expanded; empty means leadpipe's defaults (`~/.ssh/id_ed25519`,
    /// `id_ecdsa`, `id_rsa`).
    pub identity_files: Vec<PathBuf>,
    /// Whether the ssh-agent's keys are tried (not after `IdentitiesOnly yes`,
    /// `IdentityAgent none`, or identity files given to the builder).
    pub use_agent: bool,
    /// The user certificates offered with the keys they certify (the builder's
    /// [`certificate_file`](SshBuilder::certificate_file)s, else the config's
    /// `CertificateFile`s, expanded), before any `KEY-cert.pub` beside an identity file.
    pub certificate_files: Vec<PathBuf>,
    /// The user known_hosts files (`AcceptNew` appends to the first).
    pub known_hosts_files: Vec<PathBuf>,
    /// The system known_hosts files, read after the user's and never written (none when
    /// the builder named known_hosts files).
    pub global_known_hosts_files: Vec<PathBuf>,
    /// `HostKeyAlias`: the name host keys are looked up and recorded under, lowercased.
    pub host_key_alias: Option<String>,
    /// What to do with host keys known_hosts does not vouch for.
    pub host_key_policy: HostKeyPolicy,
    /// `CheckHostIP`: whether the address's known_hosts entry is checked and recorded too.
    pub check_host_ip: bool,
    /// The `ProxyJump` hops, as written (`[user@]host[:port][,...]`); `None` when the
    /// builder's [`jump`](SshBuilder::jump) is used or no hop is set.
    pub proxy_jump: Option<String>,
    /// `ProxyCommand`, as written (tokens are expanded when it runs, as in `ssh -G`):
    /// the connection runs over its stdin and stdout. `None` for `none`, when `ProxyJump`
    /// came first, or when the builder's [`jump`](SshBuilder::jump) is used.
    pub proxy_command: Option<String>,
    /// How long connecting and the handshake may take.
    pub connect_timeout: Duration,
    /// `ConnectionAttempts`: how many times the TCP connection is tried, a second apart.
    pub connection_attempts: u32,
    /// Keepalive interval; `None` when off.
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is given up.
    pub keepalive_max: usize,
    /// Whether the agent is forwarded (the builder's
    /// [`forward_agent`](SshBuilder::forward_agent), else `ForwardAgent`; a socket path
    /// counts as yes).
    pub forward_agent: bool,
    /// The local agent socket served to the remote side: the one `ForwardAgent` names,
    /// else `$SSH_AUTH_SOCK`; `None` when nothing is forwarded.
    pub forward_agent_socket: Option<PathBuf>,
    /// `SetEnv`: set in the environment of every command on the machine.
    pub set_env: Vec<(String, String)>,
    /// `SendEnv` patterns: the local variables they select are set in every command's
    /// environment, under `SetEnv`.
    pub send_env: Vec<String>,
    /// The key exchange methods offered, most preferred first (`KexAlgorithms` applied
    /// to leadpipe's list).
    pub kex_algorithms: Vec<String>,
    /// The host key algorithms accepted (`HostKeyAlgorithms` applied to leadpipe's list).
    /// Where an `@cert-authority` line applies to the host, the certificate variants the
    /// list allows are offered ahead of these.
    pub host_key_algorithms: Vec<String>,
    /// The ciphers offered (`Ciphers` applied to leadpipe's list).
    pub ciphers: Vec<String>,
    /// The MACs offered (`MACs` applied to leadpipe's list).
    pub macs: Vec<String>,
}

/// Connects through every hop of a `ProxyJump` list (`a,b`: first a, then b through a).
/// Each hop reads the same ssh_config files as `target`, and ignores the same keywords.
fn connect_hops<'a>(hops: &'a str, target: &'a SshBuilder) -> BoxFuture<'a, Result<SshMachine>> {
    Box::pin(async move {
        let mut via: Option<SshMachine> = None;
        for hop in hops.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let mut builder = SshBuilder::from_destination(hop, "bad ProxyJump entry")?;
            builder.config_file = target.config_file.clone();
            builder.system_config = target.system_config;
            builder.ignored_keywords = target.ignored_keywords.clone();
            if let Some(bastion) = &via {
                builder = builder.jump(bastion);
            }
            via = Some(builder.connect().await?);
        }
        via.ok_or_else(|| Error::Connect {
            destination: hops.to_owned(),
            given: hops.to_owned(),
            address: None,
            reason: "empty ProxyJump".to_owned(),
            source: None,
        })
    })
}

impl fmt::Debug for SshBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshBuilder")
            .field("host", &self.host)
            .field("user", &self.user)
            .field("port", &self.port)
            .field("identity_files", &self.identity_files)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("known_hosts", &self.known_hosts)
            .field("host_key_policy", &self.host_key_policy)
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

/// The local variables `SendEnv` patterns select, sorted by name. Only names a shell can
/// export (`[A-Za-z_][A-Za-z0-9_]*`) are taken: they are delivered the way every
/// command's environment is.
fn send_env(patterns: &[String]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    if patterns.is_empty() {
        return Vec::new();
    }
    let mut selected: Vec<_> = std::env::vars_os()
        .filter(|(name, _)| {
            name.to_str().is_some_and(|name| {
                let exportable = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                exportable
                    && patterns
                        .iter()
                        .any(|p| super::known_hosts::glob_matches(p, name))
            })
        })
        .collect();
    selected.sort();
    selected
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// A destination as `ssh` takes one: `[ssh://][user@]host[:port]`, with `[host]:port`
/// for an IPv6 address (written bare, an address with several colons has no port).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Destination<'a> {
    pub(crate) user: Option<&'a str>,
    pub(crate) host: &'a str,
    pub(crate) port: Option<u16>,
}

/// Reads a destination: the one place that does, for `SshMachine::connect`, ProxyJump
/// hops, fleets and machine names. The error says what is wrong with it.
pub(crate) fn parse_destination(destination: &str) -> std::result::Result<Destination<'_>, String> {
    let rest = destination.strip_prefix("ssh://").unwrap_or(destination);
    let (user, rest) = match rest.rsplit_once('@') {
        Some((user, rest)) => (Some(user).filter(|u| !u.is_empty()), rest),
        None => (None, rest),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("{destination}: a `[` without its `]`"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("{destination}: unexpected {after:?} after `]`")),
        }
    } else {
        // Only one colon can be a port: more is an IPv6 address written bare.
        match rest.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            _ => (rest, None),
        }
    };
    let port = match port {
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| format!("{destination}: the port {port:?} is not a number"))?,
        ),
        None => None,
    };
    if host.is_empty() {
        return Err(format!("{destination}: no host"));
    }
    Ok(Destination { user, host, port })
}
