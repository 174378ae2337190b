//! `Socket`: a byte stream to a service on a machine, whichever machine it is.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpStream, UnixStream},
};

/// A connection to a service on a machine: a tokio [`AsyncRead`] + [`AsyncWrite`].
///
/// From [`LocalMachine::connect_sock`](crate::LocalMachine::connect_sock) it is a plain TCP
/// (or Unix) connection; from [`SshMachine::connect_sock`](crate::SshMachine::connect_sock)
/// a `direct-tcpip` channel of the machine's SSH connection, so the service needs no open
/// port. Code that talks to "the service on that machine" is written once, against this
/// type.
///
/// [`shutdown`](tokio::io::AsyncWriteExt::shutdown) sends end of file and keeps reading
/// (half-close); the peer's end of file reads as 0 bytes.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let mut redis = leadpipe::local().connect_sock(6379).await?;
/// redis.write_all(b"PING\r\n").await.unwrap();
/// let mut reply = [0; 7];
/// redis.read_exact(&mut reply).await.unwrap();
/// assert_eq!(&reply, b"+PONG\r\n");
/// # Ok(()) }
/// ```
pub struct Socket(Inner);

enum Inner {
    Tcp(TcpStream),
    Unix(UnixStream),
    #[cfg(feature = "ssh")]
    Channel(crate::ssh::ChannelSocket),
}

impl Socket {
    pub(crate) fn tcp(stream: TcpStream) -> Socket {
        Socket(Inner::Tcp(stream))
    }

    pub(crate) fn unix(stream: UnixStream) -> Socket {
        Socket(Inner::Unix(stream))
    }

    #[cfg(feature = "ssh")]
    pub(crate) fn channel(stream: crate::ssh::ChannelSocket) -> Socket {
        Socket(Inner::Channel(stream))
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Inner::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            #[cfg(feature = "ssh")]
            Inner::Channel(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Inner::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Inner::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            #[cfg(feature = "ssh")]
            Inner::Channel(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Inner::Unix(stream) => Pin::new(stream).poll_flush(cx),
            #[cfg(feature = "ssh")]
            Inner::Channel(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Inner::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Inner::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            #[cfg(feature = "ssh")]
            Inner::Channel(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Tcp(stream) => f.debug_tuple("Socket").field(stream).finish(),
            Inner::Unix(stream) => f.debug_tuple("Socket").field(stream).finish(),
            #[cfg(feature = "ssh")]
            Inner::Channel(_) => f.write_str("Socket(ssh channel)"),
        }
    }
}
