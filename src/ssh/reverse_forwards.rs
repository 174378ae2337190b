//! The reverse-forward registry: the ports the server listens on for this connection's
//! [`ReverseTunnel`](super::ReverseTunnel)s, and the serving of each channel the server
//! opens for one. The connection consults it for every forwarded channel; the reverse
//! tunnels fill it.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex};

use russh::{Channel, client::Msg};
use tokio::net::TcpStream;

use super::channel::{ChannelSocket, relay};

/// The ports the server listens on for us (`tcpip-forward`), with where each connection
/// goes. Channels for any other port are refused.
#[derive(Default)]
pub(crate) struct Forwards(Mutex<HashMap<u32, SocketAddr>>);

impl Forwards {
    pub(crate) fn target(&self, port: u32) -> Option<SocketAddr> {
        self.0.lock().ok()?.get(&port).copied()
    }

    pub(crate) fn add(&self, port: u32, target: SocketAddr) {
        if let Ok(mut forwards) = self.0.lock() {
            forwards.insert(port, target);
        }
    }

    pub(crate) fn remove(&self, port: u32) {
        if let Ok(mut forwards) = self.0.lock() {
            forwards.remove(&port);
        }
    }
}

/// A channel the server opened for a connection to one of our forwarded ports.
pub(crate) fn serve_forwarded(channel: Channel<Msg>, target: SocketAddr) {
    crate::lifecycle::spawn(async move {
        let remote = ChannelSocket::new(channel);
        if let Ok(local) = TcpStream::connect(target).await {
            let _ = local.set_nodelay(true);
            relay(local, remote).await;
        }
    });
}
