//! Reaching services through the SSH connection: `direct-tcpip` and
//! `direct-streamlocal@openssh.com` channels as sockets, local listeners that forward over
//! them (tunnels), and server-side listeners forwarded back (reverse tunnels).
//!
//! Every forwarding channel is a [`ChannelSocket`], pumped so that a socket nobody reads
//! never stalls the connection; the ports of reverse tunnels are kept in the
//! [`reverse_forwards`](super::reverse_forwards) registry.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinSet};

use super::{
    channel::{ChannelSocket, relay},
    connection::Connection,
};
use crate::{Error, Result, Socket};

fn refused(connection: &Connection, target: &str, error: russh::Error) -> Error {
    match error {
        russh::Error::ChannelOpenFailure(failure) => {
            let refusal = super::connection::refusal(&failure);
            Error::ChannelRefused {
                machine: connection.name.clone(),
                target: Some(target.to_owned()),
                refusal: Some(refusal),
                reason: format!("cannot reach {target} from there: {refusal}"),
            }
        }
        _ => connection.lost(),
    }
}

/// A `direct-tcpip` channel to `host:port` as the server sees them.
pub(crate) async fn connect_tcp(connection: &Connection, host: &str, port: u16) -> Result<Socket> {
    open_tcp(connection, host, port).await.map(Socket::channel)
}

async fn open_tcp(connection: &Connection, host: &str, port: u16) -> Result<ChannelSocket> {
    let channel = connection
        .handle()
        .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
        .await
        .map_err(|e| refused(connection, &format!("{host}:{port}"), e))?;
    Ok(ChannelSocket::new(channel))
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
                    Ok((client, _)) => {
                        let _ = client.set_nodelay(true);
                        let connection = connection.clone();
                        let host = host.clone();
                        connections.spawn(async move {
                            if let Ok(remote) = open_tcp(&connection, &host, port).await {
                                relay(client, remote).await;
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
        // On leadpipe's runtime, which carries the connection: reached from blocking code
        // and while the caller's runtime ends as well.
        crate::lifecycle::cleanup(async move {
            let _ = connection
                .handle()
                .cancel_tcpip_forward("127.0.0.1", port)
                .await;
        });
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
        .map_err(|e| match e {
            russh::Error::RequestDenied => Error::ChannelRefused {
                machine: connection.name.clone(),
                target: None,
                refusal: None,
                reason: format!(
                    "the server would not listen on 127.0.0.1:{remote_port} (the port is taken, \
                     or its AllowTcpForwarding or PermitListen forbids it)"
                ),
            },
            _ => connection.lost(),
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
