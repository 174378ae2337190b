//! `TestServer`: a small SSH server inside this process, on loopback, for tests and demos.
//!
//! Built on `russh::server`. Every `exec` runs `sh -c LINE` as a child of this process, in
//! a session (and process group) of its own, with its stdin, stdout and stderr bridged to
//! the channel; `direct-tcpip` channels connect from this machine. Each connection's socket
//! goes through a [`Link`], which can hold its bytes (`freeze`) or cut it, for fault tests.
//!
//! Tasks: one accepts; one per connection runs russh's session; one per channel, plus one
//! per output stream of a command, all ending when their channel or connection ends. Every
//! channel's messages are read by its task until the channel ends, so one channel never
//! stalls the others (russh feeds channels from one loop through small queues).

use std::{
    collections::HashSet,
    ffi::OsStr,
    fmt,
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    os::unix::{ffi::OsStrExt, fs::OpenOptionsExt, io::AsRawFd, process::ExitStatusExt},
    path::{Path, PathBuf},
    pin::Pin,
    process::Stdio,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::task::AtomicWaker;
use russh::{
    Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelReadHalf, MethodKind, MethodSet,
    Sig,
    keys::{
        PrivateKey, PublicKey,
        ssh_key::{LineEnding, private::Ed25519Keypair},
    },
    server::{self, Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    process::ChildStdin,
    task::JoinHandle,
};

use leadpipe::{Error, HostKeyPolicy, Result, Signal, SshBuilder, SshMachine};

/// An SSH server on `127.0.0.1`, in this process: a remote machine for tests and demos
/// that needs nothing installed.
///
/// **It runs every command as the current user, on this machine**, for anyone holding the
/// client key (or the password) it was started with. It listens on loopback only, on a
/// port of its own, until dropped. It is a stand-in for a remote host in examples and in
/// fault-injection tests, not a replacement for OpenSSH's sshd.
///
/// What it does:
/// - authentication: the client key pair it generates at start (see
///   [`identity_file`](TestServer::identity_file)), or the password given to
///   [`start_with_password`](TestServer::start_with_password); any user name is accepted;
/// - `exec`: `sh -c LINE` in the user's home directory with this process's environment, in
///   a new session (so in its own process group, with no terminal). stdout goes to the
///   channel, stderr as extended data 1. When the command has ended and its output has
///   been sent, the client gets `exit-status` (or `exit-signal`, by name: `"TERM"`), EOF
///   and close. Output waits for the client's window: nothing piles up in memory;
/// - `signal` requests signal the command's whole process group;
/// - the `sftp` subsystem runs OpenSSH's `sftp-server` when one is installed in a usual
///   place (`/usr/lib/openssh`, `/usr/libexec/openssh`, ...), so file calls work; without
///   it they fail with "the server refused the sftp subsystem";
/// - `pty-req` is accepted and ignored (no terminal is allocated); `shell`, other
///   subsystems, `env`, `x11-req` and agent forwarding are refused;
/// - `direct-tcpip`: connects to the target from this machine and copies both ways, with
///   half-close (the client's EOF shuts the socket's write side; the target's EOF becomes
///   the channel's EOF);
/// - like sshd, a command whose channel is closed by the client, or whose connection ends,
///   is not killed: it loses its stdin, stdout and stderr. Dropping the `TestServer` kills
///   every command still running (`SIGKILL` to its process group), closes every connection
///   and stops listening.
///
/// Known limit: bytes the client sends to a command's stdin are written to it as they
/// come; a command that does not read its stdin while the client keeps sending holds up
/// that connection once russh's per-channel queue is full (russh grants window as data
/// arrives, not as it is consumed).
///
/// # Example
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> leadpipe::Result<()> {
/// use leadpipe_test_server::TestServer;
/// let server = TestServer::start().await?;
/// let remote = server.connect().await?;
/// assert_eq!(remote.cmd("echo").arg("hi").read().await?, "hi");
/// assert_eq!((remote.cmd("tr").args(["a-z", "A-Z"]) << "hi").read().await?, "HI");
/// # Ok(()) }
/// ```
pub struct TestServer {
    addr: SocketAddr,
    user: String,
    known_hosts_line: String,
    host_key: PublicKey,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
    /// Holds the client key and known_hosts files; removed on drop.
    dir: tempfile::TempDir,
}

/// What the server's tasks share.
struct Shared {
    client_key: PublicKey,
    password: Option<String>,
    /// Whether new connections start frozen.
    frozen: AtomicBool,
    links: Mutex<Vec<Weak<Link>>>,
    /// Process groups of commands not yet reaped (group id = the `sh`'s pid); `None` once
    /// the server is dropped.
    groups: Mutex<Option<HashSet<i32>>>,
}

impl TestServer {
    /// Starts a server on `127.0.0.1`, port chosen by the system, with a fresh ed25519 host
    /// key and a fresh ed25519 client key pair, both generated in memory.
    ///
    /// # Errors
    /// [`Error::Io`] when the port or the key files cannot be set up.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// println!("listening on {}", server.addr());
    /// # Ok(()) }
    /// ```
    pub async fn start() -> Result<TestServer> {
        TestServer::launch(None).await
    }

    /// Like [`start`](TestServer::start), and also accepts `password` for any user.
    ///
    /// # Errors
    /// As [`start`](TestServer::start).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::SshMachine;
    /// let server = leadpipe_test_server::TestServer::start_with_password("open sesame").await?;
    /// let remote = SshMachine::builder("127.0.0.1")
    ///     .port(server.port())
    ///     .password("open sesame")
    ///     .known_hosts(server.known_hosts_file())
    ///     .ssh_config(None)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_with_password(password: impl Into<String>) -> Result<TestServer> {
        TestServer::launch(Some(password.into())).await
    }

    async fn launch(password: Option<String>) -> Result<TestServer> {
        let host_key = new_key()?;
        let client_key = new_key()?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| Error::io("test server: listening on 127.0.0.1", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("test server: listening on 127.0.0.1", e))?;
        let host_public = host_key.public_key().clone();
        let known_hosts_line = known_hosts_line(&host_public, addr);

        let dir = tempfile::Builder::new()
            .prefix("leadpipe-test-server-")
            .tempdir()
            .map_err(|e| Error::io("test server: creating a temp dir", e))?;
        let key_text = client_key
            .to_openssh(LineEnding::LF)
            .map_err(|e| Error::io("test server: encoding the client key", io::Error::other(e)))?;
        write_private(&dir.path().join("id_ed25519"), key_text.as_bytes())?;
        write_private(
            &dir.path().join("known_hosts"),
            format!("{known_hosts_line}\n").as_bytes(),
        )?;

        let mut methods = MethodSet::empty();
        methods.push(MethodKind::PublicKey);
        if password.is_some() {
            methods.push(MethodKind::Password);
        }
        let config = Arc::new(server::Config {
            keys: vec![host_key],
            methods,
            // Nothing to hide on a loopback test server: answer refusals at once.
            auth_rejection_time: Duration::ZERO,
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        });
        let shared = Arc::new(Shared {
            client_key: client_key.public_key().clone(),
            password,
            frozen: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            groups: Mutex::new(Some(HashSet::new())),
        });
        let accept = tokio::spawn(accept_loop(listener, config, shared.clone()));
        Ok(TestServer {
            addr,
            user: current_user(),
            known_hosts_line,
            host_key: host_public,
            shared,
            accept,
            dir,
        })
    }

    /// The address it listens on (`127.0.0.1` and [`port`](TestServer::port)).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// assert!(server.addr().ip().is_loopback());
    /// # Ok(()) }
    /// ```
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The port it listens on.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// println!("ssh -p {} 127.0.0.1", server.port());
    /// # Ok(()) }
    /// ```
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The user name [`builder`](TestServer::builder) logs in as: the current user's
    /// (`$USER`, else the name of this process's user id). The server accepts any name;
    /// commands run as the current user whatever it is.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// println!("{}@{}", server.user(), server.addr());
    /// # Ok(()) }
    /// ```
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client's private key (OpenSSH format, unencrypted, mode 0600), for
    /// [`SshBuilder::identity_file`]. Removed when the server is dropped.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let remote = leadpipe::SshMachine::builder("127.0.0.1")
    ///     .port(server.port())
    ///     .identity_file(server.identity_file())
    ///     .known_hosts(server.known_hosts_file())
    ///     .ssh_config(None)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn identity_file(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// A known_hosts file that lists this server's host key for its address (the one line
    /// of [`known_hosts_line`](TestServer::known_hosts_line)). Removed when the server is
    /// dropped.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let text = std::fs::read_to_string(server.known_hosts_file()).unwrap();
    /// assert_eq!(text.trim_end(), server.known_hosts_line());
    /// # Ok(()) }
    /// ```
    pub fn known_hosts_file(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// This server's host key as a known_hosts line: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// assert!(server.known_hosts_line().starts_with("[127.0.0.1]:"));
    /// # Ok(()) }
    /// ```
    pub fn known_hosts_line(&self) -> &str {
        &self.known_hosts_line
    }

    /// This server's host key as a known_hosts line for another address: a proxy in front
    /// of it, which clients reach instead of [`addr`](TestServer::addr).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let proxy: std::net::SocketAddr = "127.0.0.1:4022".parse().unwrap();
    /// assert!(server.known_hosts_line_for(proxy).starts_with("[127.0.0.1]:4022 ssh-ed25519 "));
    /// # Ok(()) }
    /// ```
    pub fn known_hosts_line_for(&self, addr: std::net::SocketAddr) -> String {
        known_hosts_line(&self.host_key, addr)
    }

    /// An [`SshBuilder`] set up for this server: `127.0.0.1`, its port, the
    /// [`user`](TestServer::user), the client key, its known_hosts file under
    /// [`HostKeyPolicy::Strict`], and no ssh_config. Add settings (keepalive, timeouts)
    /// before connecting.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use std::time::Duration;
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let remote = server.builder().keepalive(Duration::from_secs(1), 3).connect().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(&self) -> SshBuilder {
        SshMachine::builder(self.addr.ip().to_string())
            .port(self.port())
            .user(self.user.clone())
            .identity_file(self.identity_file())
            .known_hosts(self.known_hosts_file())
            .host_key_policy(HostKeyPolicy::Strict)
            .ssh_config(None)
    }

    /// Connects an [`SshMachine`] to this server: [`builder`](TestServer::builder)`.connect()`.
    /// The future does not borrow the server.
    ///
    /// # Errors
    /// As [`SshBuilder::connect`].
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let remote = server.connect().await?;
    /// println!("{}", remote.cmd("uname").arg("-sr").read().await?);
    /// # Ok(()) }
    /// ```
    pub fn connect(&self) -> impl Future<Output = Result<SshMachine>> + Send + 'static {
        self.builder().connect()
    }

    /// Stops answering on every connection, and on new ones, without closing any: their
    /// sockets are no longer read or written, as with a hung server or a dead network
    /// path. Commands keep running. [`thaw`](TestServer::thaw) resumes.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use std::time::Duration;
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let remote = server.builder().keepalive(Duration::from_millis(300), 3).connect().await?;
    /// server.freeze();
    /// let lost = remote.cmd("true").run().await;
    /// assert!(matches!(lost, Err(leadpipe::Error::ConnectionLost { .. })));
    /// # Ok(()) }
    /// ```
    pub fn freeze(&self) {
        self.shared.frozen.store(true, Ordering::SeqCst);
        for link in self.shared.links() {
            link.set(FROZEN);
        }
    }

    /// Resumes answering after [`freeze`](TestServer::freeze): what was held is read and
    /// answered now. Connections cut in the meantime stay cut.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let remote = server.connect().await?;
    /// server.freeze();
    /// server.thaw();
    /// remote.cmd("true").run().await?;
    /// # Ok(()) }
    /// ```
    pub fn thaw(&self) {
        self.shared.frozen.store(false, Ordering::SeqCst);
        for link in self.shared.links() {
            link.set(OPEN);
        }
    }

    /// Closes every connection at once, with no SSH goodbye (the sockets are shut down
    /// under the session). The server keeps listening for new ones.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let server = leadpipe_test_server::TestServer::start().await?;
    /// let remote = server.connect().await?;
    /// server.disconnect_all();
    /// assert!(remote.cmd("true").run().await.is_err());
    /// # Ok(()) }
    /// ```
    pub fn disconnect_all(&self) {
        for link in self.shared.links() {
            link.cut();
        }
    }
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.shared.links() {
            link.cut();
        }
        // The channel tasks then see their commands die and reap them; a command started
        // from now on is killed as soon as its task registers it.
        for group in lock(&self.shared.groups).take().into_iter().flatten() {
            // SAFETY: killpg has no memory effects; the group is unreaped (see `run_session`).
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
    }
}

impl Shared {
    /// The live connections; forgets closed ones.
    fn links(&self) -> Vec<Arc<Link>> {
        let mut links = lock(&self.links);
        links.retain(|link| link.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }

    /// Signals a command's process group if it has not been reaped (so the id cannot have
    /// been reused).
    fn signal_group(&self, group: i32, signal: i32) {
        if lock(&self.groups)
            .as_ref()
            .is_some_and(|g| g.contains(&group))
        {
            // SAFETY: killpg has no memory effects.
            unsafe { libc::killpg(group, signal) };
        }
    }
}

/// A fresh ed25519 key from the system's random source.
fn new_key() -> Result<PrivateKey> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| io::Read::read_exact(&mut random, &mut seed))
        .map_err(|e| Error::io("test server: reading /dev/urandom for a key", e))?;
    Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
}

fn known_hosts_line(key: &PublicKey, addr: SocketAddr) -> String {
    let key = key.to_openssh().unwrap_or_default();
    match addr.port() {
        22 => format!("{} {key}", addr.ip()),
        port => format!("[{}]:{port} {key}", addr.ip()),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let context = || format!("test server: writing {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(context(), e))?;
    io::Write::write_all(&mut file, bytes).map_err(|e| Error::io(context(), e))
}

/// `$USER`, else the name of this process's user id, else `"leadpipe"`.
fn current_user() -> String {
    if let Ok(user) = std::env::var("USER") {
        return user;
    }
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `entry`.
    let status = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if status == 0 && !found.is_null() && !entry.pw_name.is_null() {
        // SAFETY: getpwuid_r succeeded: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    "leadpipe".to_owned()
}

async fn accept_loop(listener: TcpListener, config: Arc<server::Config>, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or similar: try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let start = if shared.frozen.load(Ordering::SeqCst) {
            FROZEN
        } else {
            OPEN
        };
        let link = Arc::new(Link {
            stream,
            state: AtomicU8::new(start),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        });
        lock(&shared.links).push(Arc::downgrade(&link));
        let handler = Handler {
            shared: shared.clone(),
            executed: Arc::default(),
        };
        let config = config.clone();
        tokio::spawn(async move {
            if let Ok(session) = server::run_stream(config, Gated(link), handler).await {
                let _ = session.await;
            }
        });
    }
}

const OPEN: u8 = 0;
const FROZEN: u8 = 1;
const CUT: u8 = 2;

/// One connection's socket, with a gate the server can hold shut (frozen) or cut.
struct Link {
    stream: TcpStream,
    state: AtomicU8,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Link {
    fn set(&self, state: u8) {
        // A cut link stays cut.
        let _ = self
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                (now != CUT).then_some(state)
            });
        self.reader.wake();
        self.writer.wake();
    }

    fn cut(&self) {
        self.state.store(CUT, Ordering::SeqCst);
        // The client sees the end at once, whatever the session task is doing.
        // SAFETY: the descriptor belongs to `stream`, which lives as long as `self`.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_RDWR) };
        self.reader.wake();
        self.writer.wake();
    }

    /// Ready while open, pending while frozen, an error once cut.
    fn poll_gate(&self, waker: &AtomicWaker, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        waker.register(cx.waker());
        match self.state.load(Ordering::SeqCst) {
            OPEN => Poll::Ready(Ok(())),
            FROZEN => Poll::Pending,
            _ => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
        }
    }
}

/// The stream russh's session runs on.
struct Gated(Arc<Link>);

impl AsyncRead for Gated {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let link = &self.0;
        ready!(link.poll_gate(&link.reader, cx))?;
        loop {
            ready!(link.stream.poll_read_ready(cx))?;
            match link.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let link = &self.0;
        ready!(link.poll_gate(&link.writer, cx))?;
        loop {
            ready!(link.stream.poll_write_ready(cx))?;
            match link.stream.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: the descriptor belongs to the link's stream, alive as long as `self`.
        unsafe { libc::shutdown(self.0.stream.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(Ok(()))
    }
}

/// One connection's russh handler. Channel requests are answered here, in order; the
/// work happens in each channel's task.
struct Handler {
    shared: Arc<Shared>,
    /// Session channels that have had their `exec`, until their task ends.
    executed: Executed,
}

impl server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> std::result::Result<Auth, Self::Error> {
        Ok(self.auth_key(offer.public_key))
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> std::result::Result<Auth, Self::Error> {
        Ok(self.auth_key(key.public_key))
    }

    async fn auth_password(
        &mut self,
        _user: &str,
        password: &str,
    ) -> std::result::Result<Auth, Self::Error> {
        Ok(match &self.shared.password {
            Some(expected) if expected == password => Auth::Accept,
            _ => Auth::reject(),
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        reply.accept().await;
        let forget = Forget(self.executed.clone(), channel.id());
        tokio::spawn(run_session(
            channel,
            session.handle(),
            self.shared.clone(),
            forget,
        ));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        let host = host.to_owned();
        tokio::spawn(async move {
            let connect = async {
                let port = u16::try_from(port).map_err(io::Error::other)?;
                TcpStream::connect((host.as_str(), port)).await
            };
            match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok(stream)) => {
                    reply.accept().await;
                    run_direct_tcpip(channel, stream).await;
                }
                _ => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        // The channel's task starts the first command; a second one is refused.
        if lock(&self.executed).insert(channel) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        lock(&self.executed).remove(&channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        // As for exec: the channel's task starts it; only one program per channel.
        if name == "sftp" && sftp_server().is_some() && lock(&self.executed).insert(channel) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> std::result::Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}

impl Handler {
    fn auth_key(&self, key: &PublicKey) -> Auth {
        if key.key_data() == self.shared.client_key.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        }
    }
}

type Executed = Arc<Mutex<HashSet<ChannelId>>>;

/// Forgets a session channel's `exec` when its task ends (russh reports no close for a
/// channel the server closed).
struct Forget(Executed, ChannelId);

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.0).remove(&self.1);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session channel: waits for `exec`, runs the command, reports how it ended.
async fn run_session(
    channel: Channel<Msg>,
    handle: server::Handle,
    shared: Arc<Shared>,
    _forget: Forget,
) {
    let id = channel.id();
    let (mut read, write) = channel.split();
    let line = loop {
        match read.wait().await {
            Some(ChannelMsg::Exec { command, .. }) => break command,
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                match sftp_server() {
                    Some(server) => break format!("exec {server}").into_bytes(),
                    None => return,
                }
            }
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let mut child = match spawn_sh(&line) {
        Ok(child) => child,
        Err(e) => {
            let message = format!("leadpipe test server: cannot start sh: {e}\n");
            let _ = write.extended_data_bytes(1, message.into_bytes()).await;
            let _ = write.exit_status(127).await;
            let _ = write.eof().await;
            let _ = write.close().await;
            return;
        }
    };
    let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    match lock(&shared.groups).as_mut() {
        Some(groups) => groups.insert(group),
        // SAFETY: killpg has no memory effects; the group is ours and unreaped.
        None => unsafe { libc::killpg(group, libc::SIGKILL) == 0 },
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let outputs = [
        tokio::spawn(forward(stdout, write.make_writer())),
        tokio::spawn(forward(stderr, write.make_writer_ext(Some(1)))),
    ];
    let stops = outputs.each_ref().map(JoinHandle::abort_handle);
    let stop_outputs = || stops.iter().for_each(|stop| stop.abort());

    let input = drain_input(&mut read, child.stdin.take(), group, &shared);
    tokio::pin!(input);
    let mut gone = false;
    let status = tokio::select! {
        status = child.wait() => status,
        () = &mut input => {
            // The client closed the channel, or the connection ended: the command loses
            // its streams (it gets EOF and SIGPIPE), as with sshd, and is reaped here.
            gone = true;
            stop_outputs();
            child.wait().await
        }
    };
    // Reaped: the group id may be reused from now on.
    if let Some(groups) = lock(&shared.groups).as_mut() {
        groups.remove(&group);
    }
    if gone {
        return;
    }
    // Everything the command (and whatever inherited its streams) wrote is sent first.
    let [out, err] = outputs;
    tokio::select! {
        _ = async { tokio::join!(out, err) } => {}
        () = &mut input => {
            stop_outputs();
            return;
        }
    }
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => {
                let _ = write.exit_status(code as u32).await;
            }
            (None, Some(signal)) => {
                let _ = handle
                    .exit_signal_request(
                        id,
                        to_sig(signal),
                        status.core_dumped(),
                        String::new(),
                        String::new(),
                    )
                    .await;
            }
            (None, None) => {}
        },
        Err(_) => {
            let _ = write.exit_status(255).await;
        }
    }
    let _ = write.eof().await;
    // russh ignores the client's answering close once ours is sent: the channel is done.
    let _ = write.close().await;
}

/// A signal number as SSH names it (`TERM`; one russh has no variant for is `Custom`).
fn to_sig(number: i32) -> Sig {
    let name = Signal::from_raw(number).name().unwrap_or("UNKNOWN");
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "HUP" => Sig::HUP,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        _ if number == libc::SIGFPE => Sig::FPE,
        _ if number == libc::SIGILL => Sig::ILL,
        other => Sig::Custom(other.to_owned()),
    }
}

/// `sh -c LINE` in a new session, in the home directory, with pipes for its streams.
/// OpenSSH's SFTP server program, where distributions install it.
fn sftp_server() -> Option<&'static str> {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/lib/ssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .into_iter()
    .find(|path| Path::new(path).is_file())
}

fn spawn_sh(line: &[u8]) -> io::Result<tokio::process::Child> {
    let mut sh = tokio::process::Command::new("/bin/sh");
    sh.arg("-c")
        .arg(OsStr::from_bytes(line))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Only if this task is cancelled (a runtime shutting down) before the reap.
        .kill_on_drop(true);
    if let Some(home) = std::env::var_os("HOME").filter(|home| Path::new(home).is_dir()) {
        sh.current_dir(home);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        sh.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    sh.spawn()
}

/// Copies a command's stdout or stderr to the channel as the client's window allows.
async fn forward<R, W>(from: Option<R>, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(mut from) = from else { return };
    let mut buf = vec![0; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads every message of a running command's channel until the channel ends: stdin
/// data, EOF, signals.
async fn drain_input(
    read: &mut ChannelReadHalf,
    mut stdin: Option<ChildStdin>,
    group: i32,
    shared: &Shared,
) {
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => {
                if let Some(pipe) = &mut stdin
                    && pipe.write_all(&data).await.is_err()
                {
                    // The command closed its stdin: what follows is dropped.
                    stdin = None;
                }
            }
            ChannelMsg::Eof => stdin = None,
            ChannelMsg::Signal { signal } => {
                let name = match &signal {
                    Sig::Custom(name) => name.clone(),
                    other => format!("{other:?}"),
                };
                if let Some(signal) = Signal::from_name(&name) {
                    shared.signal_group(group, signal.as_raw());
                }
            }
            ChannelMsg::Close => return,
            _ => {}
        }
    }
}

/// A `direct-tcpip` channel joined to a TCP connection, both ways, with half-close.
async fn run_direct_tcpip(channel: Channel<Msg>, stream: TcpStream) {
    let (mut read, write) = channel.split();
    let (from_target, mut to_target) = stream.into_split();
    let mut downstream = tokio::spawn({
        let mut to_client = write.make_writer();
        async move {
            forward(Some(from_target), &mut to_client).await;
            // The target's EOF (or error) becomes the channel's EOF.
            let _ = to_client.shutdown().await;
        }
    });
    let (mut client_eof, mut target_eof) = (false, false);
    loop {
        tokio::select! {
            message = read.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    // A target that went away drops what follows, until the client's EOF.
                    let _ = to_target.write_all(&data).await;
                }
                Some(ChannelMsg::Eof) => {
                    client_eof = true;
                    let _ = to_target.shutdown().await;
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            _ = &mut downstream, if !target_eof => target_eof = true,
        }
        if client_eof && target_eof {
            let _ = write.close().await;
            return;
        }
    }
    downstream.abort();
}
