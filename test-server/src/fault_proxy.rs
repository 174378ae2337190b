//! A loopback TCP proxy that breaks connections on request, for fault tests.
//!
//! Each accepted connection is joined to a new connection to the target and copied both
//! ways (half-close passed on). [`FaultProxy::cut`] resets every proxied connection at
//! once (RST, as a crashed peer or a middlebox gives); [`FaultProxy::freeze`] stops
//! forwarding in both directions without closing anything, so the client sees a server
//! that stopped answering; [`FaultProxy::thaw`] resumes. Dropping the proxy stops
//! listening and resets what is left.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
    task::JoinHandle,
};

/// What every relay obeys: frozen or not, and which cut was last ordered.
#[derive(Clone, Copy, Debug, Default)]
struct Mode {
    frozen: bool,
    /// Bumped by every `cut`: a relay started under an older value ends.
    cuts: u64,
}

/// A TCP proxy on 127.0.0.1 in front of `target`, which cuts or freezes every connection
/// through it on request.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe_test_server::FaultProxy;
/// // In front of an sshd listening on port 2222 of this machine.
/// let proxy = FaultProxy::start(([127, 0, 0, 1], 2222).into()).await;
/// let remote = leadpipe::SshMachine::builder("127.0.0.1")
///     .port(proxy.addr().port())
///     .connect()
///     .await?;
/// proxy.freeze(); // calls on `remote` now wait for a server that stopped answering
/// proxy.thaw();
/// proxy.cut(); // and now its connection is reset
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `target`, which
    /// must be a loopback address.
    ///
    /// # Panics
    /// When `target` is not a loopback address, or no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        assert!(
            target.ip().is_loopback(),
            "FaultProxy targets loopback only"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (mode, _) = watch::channel(Mode::default());
        let accept = tokio::spawn(accept_loop(listener, target, mode.clone()));
        FaultProxy { addr, mode, accept }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every connection proxied so far, both sides at once. New connections are
    /// proxied as before.
    pub fn cut(&self) {
        self.mode.send_modify(|mode| mode.cuts += 1);
    }

    /// Stops forwarding in both directions, on every connection and new ones, without
    /// closing anything.
    pub fn freeze(&self) {
        self.mode.send_modify(|mode| mode.frozen = true);
    }

    /// Resumes forwarding after [`freeze`](FaultProxy::freeze).
    pub fn thaw(&self) {
        self.mode.send_modify(|mode| mode.frozen = false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: watch::Sender<Mode>) {
    while let Ok((client, _)) = listener.accept().await {
        let born = mode.borrow().cuts;
        let watch = mode.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::join!(
                relay(client_read, server_write, watch.clone(), born),
                relay(server_read, client_write, watch, born),
            );
        });
    }
}

/// Copies one direction until its end, or until a cut (then both sockets are reset: each
/// relay sets zero linger on the sockets it holds, and dropping the halves closes them).
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    born: u64,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        // Frozen: nothing is read (nor acknowledged beyond the socket buffers).
        if !open(&mut mode, born).await {
            return reset(&from, &to);
        }
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            _ = mode.wait_for(|m| m.frozen || m.cuts != born) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                // Half-close: the other side sees our peer's EOF.
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just before a freeze are held until the thaw.
        if !open(&mut mode, born).await {
            return reset(&from, &to);
        }
        let written = tokio::select! {
            written = to.write_all(&buf[..n]) => written,
            _ = mode.wait_for(|m| m.cuts != born) => return reset(&from, &to),
        };
        if written.is_err() {
            return;
        }
    }
}

/// Waits while frozen; false once a cut was ordered (or the proxy is gone).
async fn open(mode: &mut watch::Receiver<Mode>, born: u64) -> bool {
    match mode.wait_for(|m| !m.frozen || m.cuts != born).await {
        Ok(current) => current.cuts == born,
        Err(_) => false,
    }
}

/// Makes the close of both sockets a reset (RST) rather than an orderly FIN.
fn reset(from: &OwnedReadHalf, to: &OwnedWriteHalf) {
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
}
