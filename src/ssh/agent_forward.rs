//! Agent forwarding (`ForwardAgent`, `ssh -A`): each `auth-agent@openssh.com` channel the
//! server opens is joined to a new connection to the local agent's socket, bytes copied
//! both ways until either side ends. The keys never leave the agent: the remote side can
//! only ask it to sign, while the connection lasts.

use std::path::PathBuf;

use russh::{Channel, client::Msg};
use tokio::net::UnixStream;

use super::channel::ChannelSocket;

/// Serves one agent channel from the agent at `socket`, on leadpipe's runtime. An agent
/// that cannot be reached closes the channel: the remote program sees an agent that
/// refuses, as with `ssh -A` when the local agent is gone.
pub(crate) fn serve(channel: Channel<Msg>, socket: PathBuf) {
    crate::lifecycle::spawn(async move {
        let mut remote = ChannelSocket::new(channel);
        match UnixStream::connect(&socket).await {
            Ok(mut local) => {
                let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
            }
            Err(error) => tracing::warn!(
                "cannot reach the ssh-agent at {} to serve a forwarded agent channel: {error}",
                socket.display()
            ),
        }
    });
}
