//! Reaching services through the SSH connection: `direct-tcpip` and
//! `direct-streamlocal@openssh.com` channels as sockets, local listeners that forward over
//! them (tunnels), and server-side listeners forwarded back (reverse tunnels).
//!
//! Every forwarding channel gets a pump task, as process channels do (see
//! [`process`](super::process)): it reads the channel from open to close and hands the
//! bytes on through a [`spill`](super::spill) pipe, so a socket nobody reads never stalls
//! the connection.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use russh::{Channel, ChannelMsg, client::Msg};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    task::JoinSet,
};

use super::{
    session::Connection,
    spill::{SpillReader, spill_pipe},
};
use crate::{Error, Result, Socket};

/// The read side (a spill pipe filled by the channel's pump) and the write side of a
/// forwarding channel.
pub(crate) struct ChannelSocket {
    reader: SpillReader,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
}

impl ChannelSocket {
    pub(crate) fn new(channel: Channel<Msg>) -> ChannelSocket {
        let (mut read, write) = channel.split();
        let (spill, reader) = spill_pipe();
        let writer = Box::pin(write.make_writer());
        tokio::spawn(async move {
            let mut spill = Some(spill);
            while let Some(message) = read.wait().await {
                match message {
                    ChannelMsg::Data { data } => {
                        if let Some(spill) = &spill {
                            spill.push(data.to_vec());
                        }
                    }
                    // The peer's end of file: our reader sees it after the bytes before it.
                    ChannelMsg::Eof => spill = None,
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            // The write half lives on in `writer`; the server closes the channel once both
            // sides have sent end of file.
            drop(write);
        });
        ChannelSocket { reader, writer }
    }
}

impl AsyncRead for ChannelSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    /// Sends end of file (half-close): the peer sees it, and we can still read.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}

fn refused(connection: &Connection, target: &str, error: russh::Error) -> Error {
    match error {
        russh::Error::ChannelOpenFailure(reason) => Error::ChannelRefused {
            machine: connection.name.clone(),
            reason: format!("cannot reach {target} from there: {reason:?}"),
        },
        _ => connection.lost(),
    }
}

/// A `direct-tcpip` channel to `host:port` as the server sees them.
pub(crate) async fn connect_tcp(connection: &Connection, host: &str, port: u16) -> Result<Socket> {
    let channel = connection
        .handle()
        .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
        .await
        .map_err(|e| refused(connection, &format!("{host}:{port}"), e))?;
    Ok(Socket::channel(ChannelSocket::new(channel)))
}

/// A `direct-streamlocal@openssh.com` channel to the Unix socket at `path` on the server.
pub(crate) async fn connect_unix(connection: &Connection, path: &str) -> Result<Socket> {
    let channel = connection
        .handle()
        .channel_open_direct_streamlocal(path)
        .await
        .map_err(|e| refused(connection, path, e))?;
    Ok(Socket::channel(ChannelSocket::new(channel)))
}

/// A local listener forwarding each connection to a port on the remote machine, from
/// [`SshMachine::tunnel`](crate::SshMachine::tunnel).
///
/// Each accepted connection gets its own `direct-tcpip` channel; they run concurrently.
/// The tunnel listens until it is dropped (or [`close`](Tunnel::close)d), or until the SSH
/// connection ends; dropping it also ends the connections it carries. A failed `accept`
/// (too many open files, a connection reset before it was accepted) is skipped, not fatal.
///
/// # Example
/// ```no_run
/// # async fn demo(remote: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// // A client that only knows host:port reaches the remote PostgreSQL.
/// let tunnel = remote.tunnel(0, 5432).await?;
/// let url = format!("postgres://app@{}/app", tunnel.local_addr());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tunnel {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Tunnel {
    /// The local address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops listening and ends the connections it carries.
    pub fn close(self) {}
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`Tunnel`] from `127.0.0.1:local_port` to `host:port` seen from the server.
pub(crate) async fn tunnel(
    connection: Arc<Connection>,
    local_port: u16,
    host: String,
    port: u16,
) -> Result<Tunnel> {
    let listener = TcpListener::bind(("127.0.0.1", local_port))
        .await
        .map_err(|e| Error::io(format!("cannot listen on 127.0.0.1:{local_port}"), e))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the tunnel's address", e))?;
    let task = tokio::spawn(async move {
        // Dropping the set (when this task is aborted) ends every forwarded connection.
        let mut connections = JoinSet::new();
        let mut watch = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((mut client, _)) => {
                        let _ = client.set_nodelay(true);
                        let connection = connection.clone();
                        let host = host.clone();
                        connections.spawn(async move {
                            if let Ok(mut remote) = connect_tcp(&connection, &host, port).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut remote).await;
                            }
                        });
                    }
                    // EMFILE and friends: wait a moment rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                _ = watch.tick() => {
                    if connection.is_closed() {
                        return;
                    }
                }
                Some(_) = connections.join_next() => {}
            }
        }
    });
    Ok(Tunnel { local_addr, task })
}

/// The ports the server listens on for us (`tcpip-forward`), with where each connection
/// goes. Channels for any other port are refused.
#[derive(Default)]
pub(crate) struct Forwards(Mutex<HashMap<u32, SocketAddr>>);

impl Forwards {
    pub(crate) fn target(&self, port: u32) -> Option<SocketAddr> {
        self.0.lock().ok()?.get(&port).copied()
    }

    fn add(&self, port: u32, target: SocketAddr) {
        if let Ok(mut forwards) = self.0.lock() {
            forwards.insert(port, target);
        }
    }

    fn remove(&self, port: u32) {
        if let Ok(mut forwards) = self.0.lock() {
            forwards.remove(&port);
        }
    }
}

/// A channel the server opened for a connection to one of our forwarded ports.
pub(crate) fn serve_forwarded(channel: Channel<Msg>, target: SocketAddr) {
    tokio::spawn(async move {
        let mut remote = ChannelSocket::new(channel);
        if let Ok(mut local) = tokio::net::TcpStream::connect(target).await {
            let _ = local.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
        }
    });
}

/// A port the remote machine listens on, forwarding each connection to a local address,
/// from [`SshMachine::reverse_tunnel`](crate::SshMachine::reverse_tunnel). The server stops
/// listening when it is dropped.
///
/// # Example
/// ```no_run
/// # async fn demo(remote: leadpipe::SshMachine) -> leadpipe::Result<()> {
/// // The remote side reaches this machine's HTTP server on a port it chose.
/// let reverse = remote.reverse_tunnel(0, ([127, 0, 0, 1], 8080).into()).await?;
/// let port = reverse.remote_port().to_string();
/// remote.cmd("curl").arg(format!("http://127.0.0.1:{port}/")).run().await?;
/// # Ok(()) }
/// ```
pub struct ReverseTunnel {
    connection: Arc<Connection>,
    remote_port: u16,
}

impl std::fmt::Debug for ReverseTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReverseTunnel")
            .field("machine", &self.connection.name)
            .field("remote_port", &self.remote_port)
            .finish()
    }
}

impl ReverseTunnel {
    /// The port the remote machine listens on (the one it chose, when 0 was asked for).
    pub fn remote_port(&self) -> u16 {
        self.remote_port
    }
}

impl Drop for ReverseTunnel {
    fn drop(&mut self) {
        let port = u32::from(self.remote_port);
        self.connection.forwards().remove(port);
        let connection = self.connection.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = connection
                    .handle()
                    .cancel_tcpip_forward("127.0.0.1", port)
                    .await;
            });
        }
    }
}

/// Asks the server to listen on `127.0.0.1:remote_port` and forward to `target`.
pub(crate) async fn reverse_tunnel(
    connection: Arc<Connection>,
    remote_port: u16,
    target: SocketAddr,
) -> Result<ReverseTunnel> {
    let port = connection
        .handle()
        .tcpip_forward("127.0.0.1", u32::from(remote_port))
        .await
        .map_err(|e| Error::ChannelRefused {
            machine: connection.name.clone(),
            reason: format!("the server would not listen on 127.0.0.1:{remote_port}: {e}"),
        })?;
    // Port 0: the server says which port it chose; otherwise it may answer 0.
    let port = if remote_port == 0 {
        port
    } else {
        u32::from(remote_port)
    };
    connection.forwards().add(port, target);
    Ok(ReverseTunnel {
        remote_port: port as u16,
        connection,
    })
}
