//! One SSH connection: connecting, checking the host key, authenticating, and opening
//! channels without tripping over the server's channel limit.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use russh::{
    ChannelMsg, ChannelOpenFailure, MethodKind,
    client::{self, Handle, Msg},
    keys::{
        HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate, agent::AgentIdentity,
        ssh_key::public::KeyData,
    },
};
use tokio::sync::oneshot;

use super::{
    certificates,
    known_hosts::{self, Verdict},
    reverse_forwards::{Forwards, serve_forwarded},
    slots::{Refused, Slot, Slots, Taken},
};
use crate::{ChannelRefusal, Error, HostKeyProblem, Result};

/// What to do with a host key that known_hosts does not vouch for.
///
/// The choices of OpenSSH's `StrictHostKeyChecking` and paramiko's policies. A key that
/// known_hosts lists as *changed* or *revoked* is refused by every policy but
/// [`AcceptAny`](HostKeyPolicy::AcceptAny).
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::{HostKeyPolicy, SshMachine};
/// let fresh_vm = SshMachine::builder("10.0.0.7")
///     .host_key_policy(HostKeyPolicy::AcceptNew)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HostKeyPolicy {
    /// Only keys known_hosts lists for the host (`StrictHostKeyChecking yes`); the default.
    #[default]
    Strict,
    /// Accept a host seen for the first time and append its key to the first known_hosts
    /// file (`accept-new`); still refuse a changed key.
    AcceptNew,
    /// Accept any key, unchecked. For throw-away lab machines only: it gives up the
    /// protection against a man in the middle.
    AcceptAny,
}

/// Asked for an encrypted key's passphrase.
pub(crate) type PassphraseCallback = Arc<dyn Fn(&Path) -> Option<String> + Send + Sync>;

/// Everything needed to open and authenticate one connection.
#[derive(Clone)]
pub(crate) struct Settings {
    /// The destination as the script wrote it (an ssh_config alias, `user@host:port`).
    pub(crate) given: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) identity_files: Vec<PathBuf>,
    /// `CertificateFile`s: offered with the identity file or agent key they certify.
    pub(crate) certificate_files: Vec<PathBuf>,
    /// The local agent socket served to the server (`ForwardAgent`), if any.
    pub(crate) agent_socket: Option<PathBuf>,
    /// The `SendEnv` patterns acted on: the local variables they select are set in every
    /// command's environment.
    pub(crate) send_env: Vec<String>,
    /// Whether to try the ssh-agent's keys (`SSH_AUTH_SOCK`).
    pub(crate) use_agent: bool,
    /// Whether the agent may sign for an identity file it holds (not after
    /// `IdentityAgent none`), even when its other keys are not tried.
    pub(crate) agent_for_identities: bool,
    pub(crate) password: Option<String>,
    pub(crate) passphrase: Option<String>,
    /// Asked for the passphrase of an encrypted key when none was given.
    pub(crate) passphrase_for: Option<PassphraseCallback>,
    pub(crate) known_hosts: Vec<PathBuf>,
    /// `HostKeyAlias`: the name (without port) host keys are looked up under.
    pub(crate) host_key_alias: Option<String>,
    /// `CheckHostIP yes`: the address's known_hosts entry is checked and recorded too.
    pub(crate) check_host_ip: bool,
    pub(crate) host_key_policy: HostKeyPolicy,
    pub(crate) connect_timeout: Duration,
    /// TCP connections tried, a second apart, before giving up (`ConnectionAttempts`).
    pub(crate) connection_attempts: u32,
    /// `ProxyCommand`, tokens expanded: the connection runs over its stdin/stdout.
    pub(crate) proxy_command: Option<String>,
    /// The algorithms offered (ssh_config's lists applied to [`CIPHERS`] and russh's
    /// defaults).
    pub(crate) preferred: russh::Preferred,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_max: usize,
    /// The server's channel limit when the script set it; else learnt.
    pub(crate) max_channels: Option<usize>,
}

/// The host part of a destination as written: `user@host:port` and `user@[host]:port`
/// give `host`.
fn written_host(given: &str) -> &str {
    super::builder::parse_destination(given).map_or(given, |destination| destination.host)
}

impl Settings {
    /// `user@host` or `user@host:port`: how errors and logs name the machine.
    pub(crate) fn destination(&self) -> String {
        if self.port == 22 {
            format!("{}@{}", self.user, self.host)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }

    /// How errors and logs name the machine: [`destination`](Settings::destination), after
    /// the host as the script wrote it when that is another name (an ssh_config alias):
    /// `web1 (deploy@10.0.0.5)`.
    pub(crate) fn machine_name(&self) -> String {
        let destination = self.destination();
        let written = written_host(&self.given);
        if written.is_empty() || written == self.host {
            destination
        } else {
            format!("{written} ({destination})")
        }
    }

    /// An [`Error::Connect`] for this destination.
    pub(crate) fn connect_error(
        &self,
        address: Option<SocketAddr>,
        reason: String,
        source: Option<io::Error>,
    ) -> Error {
        Error::Connect {
            destination: self.destination(),
            given: self.given.clone(),
            address,
            reason,
            source,
        }
    }
}

/// An [`Error::Connect`] reason for a russh error, and the error as an `io::Error` source
/// (russh's own I/O error when that is what it is: a reset stays a reset).
fn connect_failure(error: russh::Error) -> (String, io::Error) {
    let reason = error.to_string();
    let source = match error {
        russh::Error::IO(source) => source,
        other => io::Error::other(other),
    };
    (reason, source)
}

/// [`connect_failure`] for an error of the handshake, before authentication: a server
/// that closes the connection there (sshd over its `MaxStartups`, or refusing this client)
/// is `ConnectionAborted`, a kind a caller may retry.
fn handshake_failure(error: russh::Error) -> (String, io::Error) {
    match error {
        russh::Error::Disconnect => {
            let reason = "the server closed the connection during the SSH handshake".to_owned();
            let source = io::Error::new(io::ErrorKind::ConnectionAborted, reason.clone());
            (reason, source)
        }
        other => connect_failure(other),
    }
}

/// The data of a channel-open failure.
pub(crate) fn refusal(failure: &ChannelOpenFailure) -> ChannelRefusal {
    match failure {
        ChannelOpenFailure::AdministrativelyProhibited => ChannelRefusal::Prohibited,
        ChannelOpenFailure::ConnectFailed => ChannelRefusal::ConnectFailed,
        ChannelOpenFailure::UnknownChannelType => ChannelRefusal::UnknownChannelType,
        ChannelOpenFailure::ResourceShortage => ChannelRefusal::ResourceShortage,
        ChannelOpenFailure::Other { code, .. } => ChannelRefusal::Other(*code),
    }
}

/// The russh event handler: checks the server's key.
pub(crate) struct Client {
    /// The destination as the script wrote it, for the error.
    given: String,
    host: String,
    port: u16,
    known_hosts: Vec<PathBuf>,
    /// `CheckHostIP yes`: the address (and port) whose known_hosts entry is checked too.
    check_ip: Option<(String, u16)>,
    policy: HostKeyPolicy,
    /// Why the key was refused, for the error (russh only reports "unknown key").
    refusal: Arc<Mutex<Option<Error>>>,
    /// Our reverse tunnels: the only forwarded channels accepted.
    forwards: Arc<Forwards>,
    /// The agent socket agent channels are served from; `None` refuses them.
    agent_socket: Option<PathBuf>,
    /// The TCP socket while connecting, for [`QuickAck`].
    quick_ack: QuickAck,
}

/// The TCP socket under a connection while it is being set up (none through a jump host or
/// a `ProxyCommand`): acknowledging the server's packets at once rather than after the
/// kernel's delayed-ACK timer spares the ~40 ms stall on the first channel (see
/// `openssh_ext_host_keys_announced`). Released once the connection is set up, so that
/// it never keeps the socket open.
#[derive(Clone, Default)]
pub(crate) struct QuickAck(Arc<Mutex<Option<std::os::fd::OwnedFd>>>);

impl QuickAck {
    fn of(stream: &tokio::net::TcpStream) -> QuickAck {
        use std::os::fd::AsFd;
        let fd = stream.as_fd().try_clone_to_owned().ok();
        QuickAck(Arc::new(Mutex::new(fd)))
    }

    /// Leaves delayed-ACK mode (the kernel returns to it on its own): acknowledges what has
    /// arrived now, and the next packets as they are read.
    fn ack_now(&self) {
        use std::os::fd::AsRawFd;
        if let Ok(fd) = self.0.lock()
            && let Some(fd) = &*fd
        {
            let on: libc::c_int = 1;
            // SAFETY: a valid descriptor of our own, an int option of the right size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_QUICKACK,
                    (&raw const on).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }

    fn release(&self) {
        if let Ok(mut fd) = self.0.lock() {
            fd.take();
        }
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        // Only when we asked for forwarding; dropping `reply` refuses the channel.
        if let Some(socket) = &self.agent_socket {
            reply.accept().await;
            super::agent_forward::serve(channel, socket.clone());
        }
        Ok(())
    }

    // What this side never asks for is refused (dropping `reply` refuses): russh accepts
    // these by default, and a channel nobody drains would stall the connection.
    async fn server_channel_open_session(
        &mut self,
        _channel: russh::Channel<Msg>,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: russh::Channel<Msg>,
        _originator_address: &str,
        _originator_port: u32,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: russh::Channel<Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: russh::Channel<Msg>,
        _socket_path: &str,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: russh::Channel<Msg>,
        _socket_path: &str,
        _reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        // Only ports we asked the server to forward; dropping `reply` refuses the rest.
        if let Some(target) = self.forwards.target(connected_port) {
            reply.accept().await;
            serve_forwarded(channel, target);
        }
        Ok(())
    }

    /// OpenSSH announces its host keys right after authentication, then sends debug
    /// messages (the key's options), and its answer to our first channel open follows them;
    /// sshd leaves Nagle's algorithm on for non-interactive sessions, so each of its packets
    /// waits until the one before is acknowledged, and a delayed ACK from here costs ~40 ms.
    /// Quick ACKs now let them through (russh reports no packet after this one).
    async fn openssh_ext_host_keys_announced(
        &mut self,
        _keys: Vec<russh::keys::PublicKey>,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        self.quick_ack.ack_now();
        Ok(())
    }

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        if self.policy == HostKeyPolicy::AcceptAny {
            return Ok(true);
        }
        let (plain, certificate) = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => (key.clone(), None),
            PublicKeyOrCertificate::Certificate(cert) => (
                russh::keys::PublicKey::new(cert.public_key().clone(), ""),
                Some(cert),
            ),
        };
        let key_type = plain.algorithm().as_str().to_owned();
        let blob = plain.to_bytes().unwrap_or_default();
        let fingerprint = known_hosts::fingerprint(&blob);
        let files = self.known_hosts.clone();
        let verdict = known_hosts::check_files(&files, &self.host, self.port, &key_type, &blob);
        let shown_files = || {
            files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(cert) = certificate
            && !matches!(verdict, Ok(Verdict::Revoked { .. }))
        {
            match self.certificate_refusal(cert) {
                Ok(None) => return Ok(true),
                Ok(Some(refused)) if !matches!(verdict, Ok(Verdict::Trusted)) => {
                    self.refuse(refused.problem, Some(&fingerprint), &refused.reason);
                    return Ok(false);
                }
                // As OpenSSH: a certificate that fails is retried as the plain key in it,
                // which a known_hosts line may still trust.
                Ok(Some(refused)) => {
                    tracing::warn!(
                        host = %self.host,
                        "host certificate not trusted ({}); its key is in known_hosts",
                        refused.reason
                    );
                }
                Err(error) => {
                    self.refuse(
                        HostKeyProblem::Unreadable,
                        Some(&fingerprint),
                        &format!("cannot read known_hosts ({}): {error}", shown_files()),
                    );
                    return Ok(false);
                }
            }
        }
        match verdict {
            Ok(Verdict::Trusted) => Ok(self.address_agrees(&key_type, &blob, &fingerprint)),
            Ok(Verdict::Unknown) if self.policy == HostKeyPolicy::AcceptNew => {
                let added = files.first().zip(known_hosts::entry_line(
                    &self.host, self.port, &key_type, &blob,
                ));
                match added.map(|(path, line)| known_hosts::append(path, &line)) {
                    Some(Ok(())) => Ok(self.address_agrees(&key_type, &blob, &fingerprint)),
                    Some(Err(error)) => {
                        self.refuse(
                            HostKeyProblem::NotRecorded,
                            Some(&fingerprint),
                            &format!(
                                "could not add its {key_type} key {fingerprint} to {}: {error}",
                                shown_files()
                            ),
                        );
                        Ok(false)
                    }
                    None => {
                        self.refuse(HostKeyProblem::NotRecorded, Some(&fingerprint), &format!("its name cannot be written to known_hosts as a plain entry ({key_type} key {fingerprint})"));
                        Ok(false)
                    }
                }
            }
            Ok(Verdict::Unknown) => {
                self.refuse(
                    HostKeyProblem::Unknown,
                    Some(&fingerprint),
                    &format!(
                        "the host is not in known_hosts ({}): its {key_type} key is \
                         {fingerprint}; add it, or connect with HostKeyPolicy::AcceptNew",
                        shown_files()
                    ),
                );
                Ok(false)
            }
            Ok(Verdict::Changed {
                path,
                line,
                key_type,
            }) => {
                let reason = format!(
                    "THE HOST KEY HAS CHANGED: {} line {line} lists another {key_type} key; the \
                     server presented {fingerprint}. Someone may be intercepting the connection, \
                     or the host was reinstalled",
                    path.display()
                );
                self.refuse(HostKeyProblem::Changed, Some(&fingerprint), &reason);
                Ok(false)
            }
            Ok(Verdict::Revoked { path, line }) => {
                let reason = format!(
                    "its {key_type} key {fingerprint} is revoked ({} line {line})",
                    path.display()
                );
                self.refuse(HostKeyProblem::Revoked, Some(&fingerprint), &reason);
                Ok(false)
            }
            Err(error) => {
                self.refuse(
                    HostKeyProblem::Unreadable,
                    Some(&fingerprint),
                    &format!("cannot read known_hosts ({}): {error}", shown_files()),
                );
                Ok(false)
            }
        }
    }
}

impl Client {
    /// `CheckHostIP yes`, as OpenSSH does it once the host's key is trusted: the address's
    /// known_hosts entry must not list another key (refused, as OpenSSH refuses unless
    /// `StrictHostKeyChecking no`) nor have it revoked; a missing entry is added to the
    /// first known_hosts file, with a warning.
    fn address_agrees(&self, key_type: &str, blob: &[u8], fingerprint: &str) -> bool {
        let Some((address, port)) = &self.check_ip else {
            return true;
        };
        let files = &self.known_hosts;
        match known_hosts::check_files(files, address, *port, key_type, blob) {
            Ok(Verdict::Trusted) => true,
            Ok(Verdict::Unknown) => {
                let added = files
                    .first()
                    .zip(known_hosts::entry_line(address, *port, key_type, blob))
                    .map(|(path, line)| (path, known_hosts::append(path, &line)));
                match added {
                    Some((path, Ok(()))) => tracing::warn!(
                        "permanently added the {key_type} host key for IP address {address} to \
                         {}",
                        path.display()
                    ),
                    Some((path, Err(error))) => tracing::warn!(
                        "failed to add the {key_type} host key for IP address {address} to {}: \
                         {error}",
                        path.display()
                    ),
                    None => {}
                }
                true
            }
            Ok(Verdict::Changed { path, line, .. }) => {
                let reason = format!(
                    "the {key_type} host key for {:?} ({fingerprint}) differs from the key for \
                     the IP address {address} ({} line {line}), and CheckHostIP yes refuses \
                     that: the address may now belong to another server, or someone is \
                     intercepting the connection",
                    self.host,
                    path.display()
                );
                self.refuse(HostKeyProblem::Changed, Some(fingerprint), &reason);
                false
            }
            Ok(Verdict::Revoked { path, line }) => {
                let reason = format!(
                    "its {key_type} key {fingerprint} is revoked for the IP address {address} \
                     ({} line {line})",
                    path.display()
                );
                self.refuse(HostKeyProblem::Revoked, Some(fingerprint), &reason);
                false
            }
            // The same files were just read for the host.
            Err(_) => true,
        }
    }

    /// Why the host certificate `cert` is not trusted (`None`: it is): checked against the
    /// `@cert-authority` lines for the host, whose CA must not be `@revoked`.
    fn certificate_refusal(
        &self,
        cert: &russh::keys::Certificate,
    ) -> io::Result<Option<certificates::Refused>> {
        let authorities = known_hosts::authorities(&self.known_hosts, &self.host, self.port)?;
        let authority =
            match certificates::check_host(cert, &authorities, &self.host, certificates::now()) {
                Ok(authority) => authority,
                Err(refused) => return Ok(Some(refused)),
            };
        let verdict = known_hosts::check_files(
            &self.known_hosts,
            &self.host,
            self.port,
            &authority.key_type,
            &authority.key_blob,
        )?;
        Ok(match verdict {
            Verdict::Revoked { path, line } => Some(certificates::Refused {
                problem: HostKeyProblem::Revoked,
                reason: format!(
                    "its host certificate is signed by the CA {}, which is revoked ({} line {line})",
                    known_hosts::fingerprint(&authority.key_blob),
                    path.display()
                ),
            }),
            _ => None,
        })
    }

    fn refuse(&self, problem: HostKeyProblem, fingerprint: Option<&str>, reason: &str) {
        let destination = if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        };
        if let Ok(mut refusal) = self.refusal.lock() {
            *refusal = Some(Error::HostKey {
                host: destination,
                given: self.given.clone(),
                problem,
                fingerprint: fingerprint.map(str::to_owned),
                reason: reason.to_owned(),
            });
        }
    }
}

/// An authenticated connection, shared by every clone of its `SshMachine`.
pub(crate) struct Connection {
    pub(crate) name: String,
    handle: Handle<Client>,
    forwards: Arc<Forwards>,
    /// The bastion this connection runs through, kept alive as long as it is needed.
    _via: Option<Arc<Connection>>,
    /// The `ProxyCommand` child carrying the connection, killed and reaped with it.
    _proxy: Option<super::proxy::ProxyGuard>,
    /// The session channels: the server's limit, callers waiting, the spare.
    slots: Arc<Slots>,
    /// Whether every session channel asks for agent forwarding (`ForwardAgent`).
    forward_agent: bool,
    /// Whether the login shell can read the remote line itself (learnt from the first
    /// command's report).
    pub(crate) login_shell: super::remote_line::LoginShell,
    /// The other connections to the same host that commands may start on
    /// (`SshBuilder::connections`); set once, right after connecting.
    shared_with: OnceLock<Vec<Arc<Connection>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The spare's slot refers to the slots that hold it: take it out, or the channel
        // (and with it the connection) would outlive every machine using it.
        drop(self.slots.take_spare());
    }
}

/// The cipher order: AES-GCM first (hardware AES makes it about 1.5x chacha20 here).
pub(crate) const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::AES_128_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_128_CTR,
];

impl Connection {
    /// Connects directly, or through `via`'s `direct-tcpip` channel.
    pub(crate) async fn open(
        settings: &Settings,
        via: Option<Arc<Connection>>,
    ) -> Result<Arc<Connection>> {
        let destination = settings.machine_name();
        let limit = settings.connect_timeout;
        let forwards = Arc::new(Forwards::default());
        let mut proxy = None;
        let mut quick_ack_done = QuickAck::default();
        let handle = match &via {
            None if settings.proxy_command.is_some() => {
                let command = settings.proxy_command.as_deref().unwrap_or_default();
                let (stream, guard) = super::proxy::spawn(command).map_err(|e| {
                    let reason = format!("the ProxyCommand {command:?} could not start: {e}");
                    settings.connect_error(None, reason, Some(e))
                })?;
                proxy = Some(guard);
                Connection::handshake(
                    settings,
                    stream,
                    None,
                    forwards.clone(),
                    QuickAck::default(),
                )
                .await?
            }
            None => {
                let mut attempt = 1;
                let (stream, address) = loop {
                    match dial(&settings.host, settings.port, limit).await {
                        Ok(connected) => break connected,
                        Err(_) if attempt < settings.connection_attempts => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err((at, e)) => {
                            return Err(settings.connect_error(at, e.to_string(), Some(e)));
                        }
                    }
                };
                let at = Some(address);
                // Nagle's algorithm against the server's delayed ACKs costs ~40 ms per command.
                stream
                    .set_nodelay(true)
                    .map_err(|e| settings.connect_error(at, e.to_string(), Some(e)))?;
                let quick_ack = QuickAck::of(&stream);
                let handle = Connection::handshake(
                    settings,
                    stream,
                    Some(address),
                    forwards.clone(),
                    quick_ack.clone(),
                )
                .await
                .map_err(|e| e.at_address(address));
                quick_ack_done = quick_ack;
                handle?
            }
            Some(bastion) => {
                let channel = bastion
                    .handle
                    .channel_open_direct_tcpip(
                        settings.host.clone(),
                        u32::from(settings.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .map_err(|e| {
                        let why = match &e {
                            russh::Error::ChannelOpenFailure(failure) => {
                                refusal(failure).to_string()
                            }
                            other => other.to_string(),
                        };
                        let reason =
                            format!("the jump host {} could not reach it: {why}", bastion.name);
                        settings.connect_error(None, reason, None)
                    })?;
                let stream = channel.into_stream();
                Connection::handshake(
                    settings,
                    stream,
                    None,
                    forwards.clone(),
                    QuickAck::default(),
                )
                .await?
            }
        };
        let connection = Connection {
            name: destination,
            handle,
            forwards,
            _via: via,
            _proxy: proxy,
            slots: Slots::new(settings.max_channels),
            forward_agent: settings.agent_socket.is_some(),
            login_shell: super::remote_line::LoginShell::default(),
            shared_with: OnceLock::new(),
        };
        let connection = Arc::new(connection);
        // The spare is opened now, in the background: connecting ends with authentication
        // (as `ssh`'s does), and the first command finds the spare open, or on its way. The
        // server's packets after authentication wait for our ACKs (see `QuickAck`), which
        // go out at once until the first channel is open.
        let first = connection.clone();
        crate::lifecycle::spawn(async move {
            if let Some(slot) = first.slots.take_for_spare() {
                first.make_spare(slot).await;
            }
            quick_ack_done.release();
        });
        Ok(connection)
    }

    /// Lets commands start on `others` too (see [`Connection::open_for_command`]).
    pub(crate) fn share_commands_with(&self, others: Vec<Arc<Connection>>) {
        if !others.is_empty() {
            let _ = self.shared_with.set(others);
        }
    }

    fn put_spare(&self, spare: Warm, slot: Slot) {
        if let Some((extra, slot)) = self.slots.put_spare(spare, slot) {
            crate::lifecycle::spawn(end_spare(extra, slot));
        }
    }

    async fn handshake<S>(
        settings: &Settings,
        stream: S,
        peer: Option<SocketAddr>,
        forwards: Arc<Forwards>,
        quick_ack: QuickAck,
    ) -> Result<Handle<Client>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // OpenSSH looks an alias up bare, whatever the port.
        let (key_host, key_port) = match &settings.host_key_alias {
            Some(alias) => (alias.clone(), 22),
            None => (settings.host.clone(), settings.port),
        };
        let mut preferred = settings.preferred.clone();
        // Host certificates (those `HostKeyAlgorithms` allows) are asked for only where an
        // `@cert-authority` line could vouch for one, as OpenSSH orders them: elsewhere a
        // plain key is what known_hosts checks.
        let authorities = known_hosts::authorities(&settings.known_hosts, &key_host, key_port);
        if !authorities.is_ok_and(|found| !found.is_empty()) {
            preferred.host_key_certificates = Vec::new().into();
        }
        let config = client::Config {
            // 8 MiB: 2 MiB moves only ~1 MiB per round trip over a WAN; above ~12 MiB sshd
            // itself became the bottleneck in measurements.
            window_size: 8 << 20,
            preferred,
            // A quiet long-running command is not an idle connection.
            inactivity_timeout: None,
            keepalive_interval: settings.keepalive_interval,
            keepalive_max: settings.keepalive_max,
            nodelay: true,
            ..Default::default()
        };
        let refusal = Arc::new(Mutex::new(None));
        let client = Client {
            given: settings.given.clone(),
            host: key_host,
            port: key_port,
            known_hosts: settings.known_hosts.clone(),
            check_ip: peer.filter(|_| settings.check_host_ip).and_then(|peer| {
                address_to_check(&settings.host, peer).map(|ip| (ip, settings.port))
            }),
            policy: settings.host_key_policy,
            refusal: refusal.clone(),
            forwards,
            agent_socket: settings.agent_socket.clone(),
            quick_ack,
        };
        let handshake = client::connect_stream(Arc::new(config), stream, client);
        let mut handle = tokio::time::timeout(settings.connect_timeout, handshake)
            .await
            .map_err(|_| {
                let reason = format!("no SSH handshake within {:?}", settings.connect_timeout);
                let source = io::Error::new(io::ErrorKind::TimedOut, reason.clone());
                settings.connect_error(None, reason, Some(source))
            })?
            .map_err(|e| match refusal.lock().ok().and_then(|mut r| r.take()) {
                Some(refused) => refused,
                None => {
                    let (reason, source) = handshake_failure(e);
                    settings.connect_error(None, reason, Some(source))
                }
            })?;
        authenticate(&mut handle, settings).await?;
        Ok(handle)
    }

    /// A session channel with nothing sent on it yet, for SFTP or a kill (or a command
    /// that needs a pty first), waiting for a free slot when the server allows no more (see
    /// [`Slots`]): the spare when it is not warm, else a channel opened now. A kill goes
    /// before every other caller waiting.
    pub(crate) async fn open_session(
        self: &Arc<Self>,
        for_kill: bool,
    ) -> Result<(russh::Channel<Msg>, Slot)> {
        let opened = self.open_waiting(for_kill, false).await?;
        Ok((opened.channel, opened.slot))
    }

    async fn open_waiting(self: &Arc<Self>, for_kill: bool, warm_ok: bool) -> Result<Opened> {
        loop {
            let taken = self.slots.take(for_kill, warm_ok).await;
            if let Some(opened) = self.use_taken(taken, warm_ok).await? {
                return Ok(opened);
            }
        }
    }

    /// A session channel for a command, and the connection it is on; a warm spare (see
    /// [`Opened::warm`]) only when `warm_ok`. With `SshBuilder::connections`, the open
    /// connection with the spare or a free slot (the least busy first), else the one with
    /// the fewest taken and waiting, waiting there.
    pub(crate) async fn open_for_command(
        self: &Arc<Self>,
        warm_ok: bool,
    ) -> Result<(Arc<Connection>, Opened)> {
        let Some(others) = self.shared_with.get() else {
            return Ok((self.clone(), self.open_waiting(false, warm_ok).await?));
        };
        loop {
            // This one, even closed, when all are: its error is the one to give.
            let mut candidates: Vec<&Arc<Connection>> = std::iter::once(self)
                .chain(others)
                .filter(|connection| !connection.is_closed())
                .collect();
            if candidates.is_empty() {
                candidates.push(self);
            }
            candidates.sort_by_cached_key(|connection| connection.slots.busyness());
            // Taken at once, so that commands starting together spread out.
            let free = candidates
                .iter()
                .find_map(|connection| Some((*connection, connection.slots.try_take(warm_ok)?)));
            let Some((connection, taken)) = free else {
                // Waits on the least busy, looking at all again now and then: a slot or a
                // spare may come up on another first.
                let connection = candidates.first().copied().unwrap_or(self);
                let waited = connection.slots.take(false, warm_ok);
                if let Ok(taken) = tokio::time::timeout(LOOK_AGAIN, waited).await
                    && let Some(opened) = connection.use_taken(taken, warm_ok).await?
                {
                    return Ok((connection.clone(), opened));
                }
                continue;
            };
            if let Some(opened) = connection.use_taken(taken, warm_ok).await? {
                return Ok((connection.clone(), opened));
            }
            // Refused there (its limit is now known), or its spare was unusable: look
            // again, so that the command goes where there is room.
        }
    }

    /// The channel `taken` gives: the spare, or one opened on the slot; `None` when there
    /// is none yet (the server refused the open and the slot was given back, or the spare
    /// was warm for a caller that cannot use it, or its shell was gone, and it is being
    /// ended): wait for another. A spare is opened again when nobody waits.
    async fn use_taken(self: &Arc<Self>, taken: Taken, warm_ok: bool) -> Result<Option<Opened>> {
        let opened = match taken {
            Taken::Spare(spare, slot) => match open_spare(spare, slot, warm_ok).await {
                Some(opened) => opened,
                None => return Ok(None),
            },
            Taken::Slot(slot) => match self.open_on(slot, warm_ok).await? {
                Some(opened) => opened,
                None => return Ok(None),
            },
        };
        self.refill();
        Ok(Some(opened))
    }

    /// Opens a spare channel in the background when a slot is free and nobody waits, and
    /// starts the remote line's bootstrap on it (see [`Opened::warm`]).
    fn refill(self: &Arc<Self>) {
        let Some(slot) = self.slots.take_for_spare() else {
            return;
        };
        let refill = self.clone();
        crate::lifecycle::spawn(async move { refill.make_spare(slot).await });
    }

    /// Opens the spare on `slot`, and warms it.
    async fn make_spare(&self, slot: Slot) {
        if let Ok(Some(Opened { channel, slot, .. })) = self.open_on(slot, false).await {
            let (exec_string, _) = self.login_shell.exec_string();
            if channel.exec(true, exec_string).await.is_ok() {
                self.put_spare(Warm::keep(channel), slot);
                return;
            }
        }
        self.slots.spare_failed();
    }

    /// Opens a session channel on `slot`; `None` when the server's limit turned out lower
    /// and the slot was given back (wait for another).
    async fn open_on(&self, mut slot: Slot, warm_ok: bool) -> Result<Option<Opened>> {
        let mut pause = Duration::ZERO;
        loop {
            match self.handle.channel_open_session().await {
                Ok(channel) => {
                    // Asked before any exec, without a reply to wait for (as `ssh -A`).
                    if self.forward_agent {
                        let _ = channel.agent_forward(false).await;
                    }
                    self.slots.confirmed(&mut slot);
                    return Ok(Some(Opened {
                        channel,
                        slot,
                        warm: None,
                    }));
                }
                // The server's limit, or one of our channels still in its close exchange
                // (sshd frees a session only then).
                Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed)) => {
                    match self.slots.refused() {
                        Refused::Wait => return Ok(None),
                        Refused::Retry => {}
                    }
                    // A spare this caller can use is as good as the channel asked for, and
                    // frees nothing by being closed.
                    if warm_ok && let Some((spare, spare_slot)) = self.slots.take_spare() {
                        drop(slot);
                        return Ok(open_spare(spare, spare_slot, warm_ok).await);
                    }
                    // At once the first time: the answer came after the server handled
                    // the close that held the slot.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).clamp(Duration::from_millis(1), Duration::from_millis(100));
                }
                Err(russh::Error::ChannelOpenFailure(failure)) => {
                    let refusal = refusal(&failure);
                    return Err(Error::ChannelRefused {
                        machine: self.name.clone(),
                        target: None,
                        refusal: Some(refusal),
                        reason: refusal.to_string(),
                    });
                }
                Err(_) => return Err(self.lost()),
            }
        }
    }

    pub(crate) fn lost(&self) -> Error {
        Error::ConnectionLost {
            machine: self.name.clone(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    pub(crate) fn handle(&self) -> &Handle<Client> {
        &self.handle
    }

    pub(crate) fn forwards(&self) -> &Forwards {
        &self.forwards
    }
}

/// A session channel and its slot, for a caller.
pub(crate) struct Opened {
    pub(crate) channel: russh::Channel<Msg>,
    pub(crate) slot: Slot,
    /// A warm spare: the remote line's bootstrap was sent as its exec string when it was
    /// opened, and that shell waits for the line's header on stdin, so a command on it
    /// costs one round trip (its header) instead of two (exec, which opens the channel's
    /// window, then the header). With the messages that came before, for the command: a
    /// login shell's rc file may print.
    pub(crate) warm: Option<Vec<ChannelMsg>>,
}

/// How long a command waiting on one of several connections (`SshBuilder::connections`)
/// waits there before it looks at the others again.
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// The most a warm spare keeps of what arrives before a command takes it (a login shell's
/// rc file may print); past it, the spare is ended.
const WARM_KEEP: usize = 1 << 20;

/// A warm spare's channel, drained by a task of its own until a command takes it: nothing
/// it receives waits in russh's queue for the channel, which, full, would stall the
/// whole connection.
pub(crate) struct Warm {
    give: oneshot::Sender<()>,
    given: oneshot::Receiver<Option<WarmChannel>>,
}

/// A warm channel, and what it received before it was taken.
type WarmChannel = (russh::Channel<Msg>, Vec<ChannelMsg>);

impl Warm {
    fn keep(mut channel: russh::Channel<Msg>) -> Warm {
        let (give, mut asked) = oneshot::channel::<()>();
        let (answer, given) = oneshot::channel();
        crate::lifecycle::spawn(async move {
            let mut early = Vec::new();
            let mut kept = 0;
            let usable = loop {
                tokio::select! {
                    biased;
                    asked = &mut asked => break asked.is_ok(),
                    message = channel.wait() => match message {
                        // Its exec refused, or its shell gone.
                        None
                        | Some(
                            ChannelMsg::Failure
                            | ChannelMsg::Eof
                            | ChannelMsg::Close
                            | ChannelMsg::ExitStatus { .. }
                            | ChannelMsg::ExitSignal { .. },
                        ) => break false,
                        Some(ChannelMsg::Success | ChannelMsg::WindowAdjusted { .. }) => {}
                        Some(other) => {
                            if let ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } =
                                &other
                            {
                                kept += data.len();
                            }
                            early.push(other);
                            if kept > WARM_KEEP {
                                break false;
                            }
                        }
                    },
                }
            };
            if usable {
                // Nobody took the answer (the spare was dropped meanwhile).
                if let Err(Some((channel, _))) = answer.send(Some((channel, early))) {
                    end_warm(channel).await;
                }
            } else {
                let _ = answer.send(None);
                end_warm(channel).await;
            }
        });
        Warm { give, given }
    }

    /// The channel and what it received so far; `None` when it was unusable (and is being
    /// ended).
    async fn take(self) -> Option<WarmChannel> {
        let _ = self.give.send(());
        self.given.await.ok().flatten()
    }
}

/// Ends a warm channel: its shell gets end of file and exits, and the channel is drained
/// until the server closes it (a close from here would leave the shell's messages
/// unanswered).
async fn end_warm(mut channel: russh::Channel<Msg>) {
    let _ = channel.eof().await;
    while channel.wait().await.is_some() {}
}

/// What the spare gives a caller: its channel, to a caller that can use it (`warm_ok`)
/// while its shell waits; else it is ended (`None`).
async fn open_spare(spare: Warm, slot: Slot, warm_ok: bool) -> Option<Opened> {
    if !warm_ok {
        crate::lifecycle::spawn(end_spare(spare, slot));
        return None;
    }
    let (channel, early) = spare.take().await?;
    Some(Opened {
        channel,
        slot,
        warm: Some(early),
    })
}

/// Ends a spare nobody will use (see [`end_warm`]), then gives its slot back.
async fn end_spare(spare: Warm, slot: Slot) {
    if let Some((channel, _)) = spare.take().await {
        end_warm(channel).await;
    }
    drop(slot);
}

/// Tries, in order: the identity files given (builder or ssh_config), the password given,
/// the ssh-agent's keys, the default identity files (when none were given), then
/// keyboard-interactive answered with the password. Each key goes with its certificates
/// first (`CertificateFile`s that certify it, then `KEY-cert.pub`), each agent certificate
/// as it is. Records every attempt for the error, and the `CertificateFile`s no key took.
async fn authenticate(handle: &mut Handle<Client>, settings: &Settings) -> Result<()> {
    let mut auth = Attempts {
        handle,
        settings,
        tried: Vec::new(),
        accepted: Vec::new(),
        offered_certificates: Vec::new(),
        agent_tried: Vec::new(),
    };
    for path in &settings.identity_files {
        if auth.key(path).await? {
            return Ok(());
        }
    }
    if let Some(password) = &settings.password
        && auth.password(password).await?
    {
        return Ok(());
    }
    if settings.use_agent && std::env::var_os("SSH_AUTH_SOCK").is_some() && auth.agent(None).await?
    {
        return Ok(());
    }
    if settings.identity_files.is_empty() {
        for path in default_identities() {
            if auth.key(&path).await? {
                return Ok(());
            }
        }
    }
    if let Some(password) = &settings.password
        && auth.accepted.iter().any(|m| m == "keyboard-interactive")
        && auth.keyboard_interactive(password).await?
    {
        return Ok(());
    }
    if auth.accepted.is_empty() {
        // Ask the server what it would take, for the error.
        if let Ok(russh::client::AuthResult::Failure {
            remaining_methods, ..
        }) = auth.handle.authenticate_none(settings.user.clone()).await
        {
            auth.accepted = remaining_methods
                .iter()
                .filter(|m| **m != MethodKind::None)
                .map(|m| <&str>::from(m).to_owned())
                .collect();
        }
    }
    for path in &settings.certificate_files {
        if !auth.offered_certificates.contains(path) {
            let why = certificates::unreadable(path).unwrap_or_else(|| {
                "no identity file or agent key holds the private key it certifies".to_owned()
            });
            auth.tried
                .push(format!("certificate {} ({why})", path.display()));
        }
    }
    Err(Error::Auth {
        destination: settings.destination(),
        given: settings.given.clone(),
        tried: auth.tried,
        accepted: auth.accepted,
    })
}

/// The attempts so far, and what the server said it accepts.
struct Attempts<'a> {
    handle: &'a mut Handle<Client>,
    settings: &'a Settings,
    tried: Vec<String>,
    accepted: Vec<String>,
    /// The `CertificateFile`s offered so far (the others are named in the error).
    offered_certificates: Vec<PathBuf>,
    /// The agent identities tried so far (wire blobs), so none is offered twice.
    agent_tried: Vec<Vec<u8>>,
}

impl Attempts<'_> {
    fn error(&self, e: russh::Error) -> Error {
        let (reason, source) = connect_failure(e);
        let reason = format!("authentication failed: {reason}");
        self.settings.connect_error(None, reason, Some(source))
    }

    /// Whether `result` is a success; remembers what the server accepts otherwise.
    fn succeeded(&mut self, result: russh::client::AuthResult) -> bool {
        match result {
            russh::client::AuthResult::Success => true,
            russh::client::AuthResult::Failure {
                remaining_methods, ..
            } => {
                self.accepted = remaining_methods
                    .iter()
                    .map(|m| <&str>::from(m).to_owned())
                    .collect();
                false
            }
        }
    }

    async fn key(&mut self, path: &Path) -> Result<bool> {
        let key = match load_key(path, self.settings) {
            Ok(key) => key,
            Err(reason) => {
                // As `ssh`: a key the agent holds signs there (an encrypted file without
                // its passphrase, with `IdentitiesOnly` too).
                if self.settings.agent_for_identities
                    && std::env::var_os("SSH_AUTH_SOCK").is_some()
                    && let Some(public) = public_key_of(path)
                    && self.agent(Some(&public)).await?
                {
                    return Ok(true);
                }
                self.tried
                    .push(format!("key {} ({reason})", path.display()));
                return Ok(false);
            }
        };
        let key = Arc::new(key);
        let user = self.settings.user.clone();
        let certificates = certificates::for_key(
            key.public_key().key_data(),
            Some(path),
            &self.settings.certificate_files,
        );
        for (cert_path, cert) in certificates {
            let note = certificates::outside_validity(&cert, certificates::now())
                .map(|why| format!(" (which {why})"))
                .unwrap_or_default();
            self.offered_certificates.push(cert_path.clone());
            let result = self
                .handle
                .authenticate_openssh_cert(user.clone(), key.clone(), cert)
                .await
                .map_err(|e| self.error(e))?;
            if self.succeeded(result) {
                return Ok(true);
            }
            self.tried.push(format!(
                "key {} with certificate {}{note}",
                path.display(),
                cert_path.display()
            ));
        }
        let hash = if key.algorithm().is_rsa() {
            let best = self
                .handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| self.error(e))?;
            best.flatten().or(Some(HashAlg::Sha256))
        } else {
            None
        };
        let result = self
            .handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| self.error(e))?;
        if self.succeeded(result) {
            return Ok(true);
        }
        self.tried.push(format!("key {}", path.display()));
        Ok(false)
    }

    async fn password(&mut self, password: &str) -> Result<bool> {
        let user = self.settings.user.clone();
        let result = self
            .handle
            .authenticate_password(user, password)
            .await
            .map_err(|e| self.error(e))?;
        if self.succeeded(result) {
            return Ok(true);
        }
        self.tried.push("password".to_owned());
        Ok(false)
    }

    /// The agent's identities, each tried once per connection; `only` keeps those of one
    /// key (an identity file the agent holds).
    async fn agent(&mut self, only: Option<&KeyData>) -> Result<bool> {
        let mut agent = match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(agent) => agent,
            Err(e) => {
                if only.is_none() {
                    self.tried.push(format!("ssh-agent ({e})"));
                }
                return Ok(false);
            }
        };
        let identities = agent.request_identities().await.unwrap_or_default();
        let user = self.settings.user.clone();
        for identity in identities {
            let data = match &identity {
                AgentIdentity::PublicKey { key, .. } => key.key_data().clone(),
                AgentIdentity::Certificate { certificate, .. } => certificate.public_key().clone(),
            };
            let identity_key = match &identity {
                AgentIdentity::PublicKey { key, .. } => key.to_bytes().unwrap_or_default(),
                AgentIdentity::Certificate { certificate, .. } => {
                    certificate.to_bytes().unwrap_or_default()
                }
            };
            if only.is_some_and(|only| *only != data) || self.agent_tried.contains(&identity_key) {
                continue;
            }
            self.agent_tried.push(identity_key);
            let (key, comment, mut certificates) = match identity {
                AgentIdentity::PublicKey { key, comment } => {
                    let certificates = certificates::for_key(
                        key.key_data(),
                        None,
                        &self.settings.certificate_files,
                    );
                    (Some(key), comment, certificates)
                }
                // A certificate the agent holds (`ssh-add` loads `KEY-cert.pub` with KEY).
                AgentIdentity::Certificate {
                    certificate,
                    comment,
                } => (None, comment, vec![(PathBuf::new(), certificate)]),
            };
            for (cert_path, cert) in certificates.drain(..) {
                let shown = if cert_path.as_os_str().is_empty() {
                    format!("agent certificate {comment}")
                } else {
                    self.offered_certificates.push(cert_path.clone());
                    format!(
                        "agent key {comment} with certificate {}",
                        cert_path.display()
                    )
                };
                let note = certificates::outside_validity(&cert, certificates::now())
                    .map(|why| format!(" (which {why})"))
                    .unwrap_or_default();
                let hash = cert.algorithm().is_rsa().then_some(HashAlg::Sha256);
                match self
                    .handle
                    .authenticate_certificate_with(user.clone(), cert, hash, &mut agent)
                    .await
                {
                    Ok(result) => {
                        if self.succeeded(result) {
                            return Ok(true);
                        }
                        self.tried.push(format!("{shown}{note}"));
                    }
                    Err(e) => self.tried.push(format!("{shown} ({e})")),
                }
            }
            let Some(key) = key else { continue };
            let hash = key.algorithm().is_rsa().then_some(HashAlg::Sha256);
            match self
                .handle
                .authenticate_publickey_with(user.clone(), key, hash, &mut agent)
                .await
            {
                Ok(result) => {
                    if self.succeeded(result) {
                        return Ok(true);
                    }
                    self.tried.push(format!("agent key {comment}"));
                }
                Err(e) => self.tried.push(format!("agent key {comment} ({e})")),
            }
        }
        Ok(false)
    }

    async fn keyboard_interactive(&mut self, password: &str) -> Result<bool> {
        let answered = keyboard_interactive(self.handle, self.settings, password)
            .await
            .map_err(|e| self.error(e))?;
        if !answered {
            self.tried.push("keyboard-interactive".to_owned());
        }
        Ok(answered)
    }
}

/// Answers every keyboard-interactive prompt with the password (what a person at `ssh`
/// would type for PAM's "Password:" prompt).
async fn keyboard_interactive(
    handle: &mut Handle<Client>,
    settings: &Settings,
    password: &str,
) -> std::result::Result<bool, russh::Error> {
    use russh::client::KeyboardInteractiveAuthResponse as Response;
    let mut response = handle
        .authenticate_keyboard_interactive_start(settings.user.clone(), None)
        .await?;
    // A server may ask several rounds; a few are plenty for a password.
    for _ in 0..4 {
        match response {
            Response::Success => return Ok(true),
            Response::Failure { .. } => return Ok(false),
            Response::InfoRequest { prompts, .. } => {
                let answers = prompts.iter().map(|_| password.to_owned()).collect();
                response = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(false)
}

/// Loads a private key; an encrypted one with the passphrase given, or the callback's.
fn load_key(path: &Path, settings: &Settings) -> std::result::Result<PrivateKey, String> {
    let describe = |e: russh::keys::Error| match e {
        russh::keys::Error::KeyIsEncrypted => "encrypted, and no passphrase was given".to_owned(),
        other => other.to_string(),
    };
    match russh::keys::load_secret_key(path, None) {
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let passphrase = settings
                .passphrase
                .clone()
                .or_else(|| settings.passphrase_for.as_ref().and_then(|ask| ask(path)));
            russh::keys::load_secret_key(path, passphrase.as_deref()).map_err(|e| {
                if passphrase.is_some() {
                    "encrypted, and the passphrase did not open it".to_owned()
                } else {
                    describe(e)
                }
            })
        }
        other => other.map_err(describe),
    }
}

/// The public key of an identity file: `PATH.pub`, else the public half an OpenSSH private
/// key file keeps unencrypted.
fn public_key_of(path: &Path) -> Option<KeyData> {
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    russh::keys::PublicKey::read_openssh_file(Path::new(&public))
        .map(|key| key.key_data().clone())
        .or_else(|_| {
            russh::keys::PrivateKey::read_openssh_file(path)
                .map(|key| key.public_key().key_data().clone())
        })
        .ok()
}

/// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`: the ones that exist.
fn default_identities() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|name| PathBuf::from(&home).join(".ssh").join(name))
        .filter(|path| path.exists())
        .collect()
}

/// The address whose known_hosts entry `CheckHostIP` checks: the one connected to, unless
/// the host was given as an address or it is a loopback address, where OpenSSH checks
/// nothing either.
fn address_to_check(host: &str, peer: SocketAddr) -> Option<String> {
    let address = peer.ip().to_canonical();
    let written = address.to_string();
    let given_as_address = host.parse::<std::net::IpAddr>().is_ok() || host == written;
    (!given_as_address && !address.is_loopback()).then_some(written)
}

/// Connects to `host:port` (the first of its addresses that accepts) within `limit`. On
/// failure: the address tried last, and why (`TimedOut` when the limit ran out).
async fn dial(
    host: &str,
    port: u16,
    limit: Duration,
) -> std::result::Result<(tokio::net::TcpStream, SocketAddr), (Option<SocketAddr>, io::Error)> {
    let mut trying = None;
    let attempt = async {
        let mut failure = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
        for address in tokio::net::lookup_host((host, port)).await? {
            trying = Some(address);
            match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => return Ok((stream, address)),
                Err(e) => failure = e,
            }
        }
        Err(failure)
    };
    let result = tokio::time::timeout(limit, attempt).await;
    match result {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(e)) => Err((trying, e)),
        Err(_) => {
            let reason = format!("no answer within {limit:?}");
            Err((trying, io::Error::new(io::ErrorKind::TimedOut, reason)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{address_to_check, written_host};

    #[test]
    fn check_host_ip_records_a_new_address_and_refuses_a_changed_one() {
        use super::{Client, HostKeyPolicy, known_hosts};
        use crate::{Error, HostKeyProblem};
        use std::sync::{Arc, Mutex};
        const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIMjhWeb0/nh+pF88fiwvI39dFP8NLYgLbqVG7L1Z0HXX";
        const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIHVPAIu1pzqjFXDkrcyBa6dfpyx8J9xKDBrDdbVMhVnp";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("web1 ssh-ed25519 {KEY_A}\n")).unwrap();
        let client = Client {
            given: "web1".into(),
            host: "web1".into(),
            port: 22,
            known_hosts: vec![file.clone()],
            check_ip: Some(("192.0.2.7".into(), 22)),
            policy: HostKeyPolicy::Strict,
            refusal: Arc::new(Mutex::new(None)),
            forwards: Arc::default(),
            agent_socket: None,
            quick_ack: super::QuickAck::default(),
        };
        let blob = |text: &str| data_encoding::BASE64.decode(text.as_bytes()).unwrap();
        let fingerprint = known_hosts::fingerprint(&blob(KEY_A));
        // A new address is recorded, and then trusted.
        assert!(client.address_agrees("ssh-ed25519", &blob(KEY_A), &fingerprint));
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            format!("web1 ssh-ed25519 {KEY_A}\n192.0.2.7 ssh-ed25519 {KEY_A}\n")
        );
        assert!(client.address_agrees("ssh-ed25519", &blob(KEY_A), &fingerprint));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        // The address listing another key is refused, naming both.
        std::fs::write(
            &file,
            format!("web1 ssh-ed25519 {KEY_A}\n192.0.2.7 ssh-ed25519 {KEY_B}\n"),
        )
        .unwrap();
        assert!(!client.address_agrees("ssh-ed25519", &blob(KEY_A), &fingerprint));
        let refused = client.refusal.lock().unwrap().take().unwrap();
        let Error::HostKey {
            problem, reason, ..
        } = &refused
        else {
            panic!("{refused}");
        };
        assert_eq!(*problem, HostKeyProblem::Changed);
        assert!(
            reason.contains("differs from the key for the IP address 192.0.2.7"),
            "{reason}"
        );
        assert!(reason.contains("line 2"), "{reason}");
    }

    #[test]
    fn check_host_ip_skips_addresses_and_loopback_as_openssh_does() {
        let peer = |text: &str| text.parse().unwrap();
        assert_eq!(
            address_to_check("web1", peer("192.0.2.7:22")),
            Some("192.0.2.7".to_owned())
        );
        assert_eq!(
            address_to_check("web1", peer("[2001:db8::7]:2222")),
            Some("2001:db8::7".to_owned())
        );
        assert_eq!(address_to_check("192.0.2.7", peer("192.0.2.7:22")), None);
        assert_eq!(address_to_check("localhost", peer("127.0.0.1:22")), None);
        assert_eq!(address_to_check("localhost", peer("[::1]:22")), None);
    }

    #[test]
    fn the_written_host_is_the_name_without_user_and_port() {
        for (given, host) in [
            ("web1", "web1"),
            ("deploy@web1", "web1"),
            ("deploy@web1:2222", "web1"),
            ("a@b@web1:22", "web1"),
            ("[::1]:2222", "::1"),
            ("deploy@[fe80::1]", "fe80::1"),
            ("::1", "::1"),
            ("ssh://deploy@web1:22", "web1"),
            ("", ""),
        ] {
            assert_eq!(written_host(given), host, "{given}");
        }
    }
}
