//! A channel as a byte stream: [`ChannelSocket`], whose pump task reads the channel from
//! open to close, as process channels are read (see [`process`](super::process)), and
//! hands the bytes on through a [`spill`](super::spill) pipe, so a socket nobody reads
//! never stalls the connection; and [`relay`], which joins one to a local TCP connection.
//! Sockets, tunnels, reverse tunnels and SFTP all run on it.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker, ready},
    time::Duration,
};

use russh::{Channel, ChannelMsg, client::Msg};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::{oneshot, watch},
};

use super::spill::{SpillReader, spill_pipe};

/// How a forwarding channel's pump ended, as the socket needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The server closed the channel: every byte it sent is in the spill pipe, and the
    /// channel takes no more.
    Closed,
    /// The connection ended before the server's end of file: what the spill pipe holds is
    /// a truncated stream.
    Lost,
}

/// The read side (a spill pipe filled by the channel's pump) and the write side of a
/// forwarding channel.
///
/// Invariant: once the channel is over (closed by the server, or its connection gone), no
/// call on the socket waits. russh's writer waits for window the server grants; a closed
/// channel or a dead connection never grants any, so a writer that ran out of window
/// would wait forever. The pump therefore records how the channel ended and wakes the
/// writer, and writes after that fail with `BrokenPipe`. And a connection lost before the
/// server's end of file reads as `ConnectionAborted` after the bytes that did arrive, never
/// as a clean end of file: a truncated stream must not pass for a whole one.
pub(crate) struct ChannelSocket {
    reader: SpillReader,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    ended: watch::Receiver<Option<Ended>>,
    /// The writer waiting for window, woken by the pump when the channel ends.
    write_waker: Arc<Mutex<Option<Waker>>>,
    /// Dropped with the socket: tells the pump to close the channel.
    _dropped: oneshot::Sender<()>,
}

impl ChannelSocket {
    pub(crate) fn new(channel: Channel<Msg>) -> ChannelSocket {
        let (mut read, write) = channel.split();
        let (spill, reader) = spill_pipe();
        let writer = Box::pin(write.make_writer());
        let (set_ended, ended) = watch::channel(None);
        let write_waker = Arc::new(Mutex::new(None::<Waker>));
        let wake_writer = write_waker.clone();
        let (dropped, mut on_drop) = oneshot::channel::<()>();
        crate::lifecycle::spawn(async move {
            let mut spill = Some(spill);
            let mut how = Ended::Lost;
            loop {
                let message = tokio::select! {
                    message = read.wait() => message,
                    // The socket was dropped: nobody reads or writes this channel again.
                    // Closing it makes the server close its connection to the service; a
                    // socket dropped without `shutdown` would otherwise hold both open until
                    // the SSH connection ends. russh sends our close only for a channel it
                    // still knows (never after the server's close, which would end the
                    // whole connection), and forgets the channel: nothing more reaches
                    // `read`, so the pump ends here.
                    _ = &mut on_drop => {
                        let _ = write.close().await;
                        how = Ended::Closed;
                        break;
                    }
                };
                let Some(message) = message else { break };
                match message {
                    ChannelMsg::Data { data } => {
                        if let Some(spill) = &spill {
                            // Without a copy when russh holds the only reference.
                            spill.push(Vec::from(data));
                        }
                    }
                    // The peer's end of file: our reader sees it after the bytes before it.
                    // From here on, the stream is whole whatever happens to the connection.
                    ChannelMsg::Eof => {
                        spill = None;
                        how = Ended::Closed;
                    }
                    ChannelMsg::Close => {
                        how = Ended::Closed;
                        break;
                    }
                    _ => {}
                }
            }
            // Recorded before the spill pipe closes, so a reader that sees the end of the
            // pipe also sees how the channel ended (a lost one ends the pipe with
            // `ConnectionAborted`, as every channel's pipe does); then the writer is woken (in this order:
            // `poll_write` stores its waker before it looks at `ended`).
            let _ = set_ended.send(Some(how));
            match (spill, how) {
                // A truncated stream: its reader gets `ConnectionAborted` after its bytes.
                (Some(spill), Ended::Lost) => spill.abort(),
                (spill, _) => drop(spill),
            }
            if let Some(waker) = wake_writer.lock().ok().and_then(|mut w| w.take()) {
                waker.wake();
            }
        });
        ChannelSocket {
            reader,
            writer,
            ended,
            write_waker,
            _dropped: dropped,
        }
    }

    /// A handle that tells, after the socket has been handed on, whether the channel is
    /// over.
    pub(crate) fn end(&self) -> ChannelEnd {
        ChannelEnd(self.ended.clone())
    }

    /// How the channel ended, once it has.
    fn ended(&self) -> Option<Ended> {
        *self.ended.borrow()
    }

    /// Resolves once the channel has ended (closed by the server or its connection gone).
    fn on_end(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            let _ = ended.wait_for(Option::is_some).await;
        }
    }
}

/// Whether a [`ChannelSocket`]'s channel is over (closed, or its connection gone).
#[derive(Clone)]
pub(crate) struct ChannelEnd(watch::Receiver<Option<Ended>>);

impl ChannelEnd {
    pub(crate) fn is_over(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// Resolves once the channel is over (at once if it is).
    pub(crate) async fn over(&self) {
        let mut ended = self.0.clone();
        let _ = ended.wait_for(Option::is_some).await;
    }

    /// An end for a stream that is not a channel (a local child's pipes): over once the
    /// returned [`EndMark`] is dropped.
    pub(crate) fn marked() -> (EndMark, ChannelEnd) {
        let (set_ended, ended) = watch::channel(None);
        (EndMark(set_ended), ChannelEnd(ended))
    }
}

/// Marks its [`ChannelEnd`] over when dropped.
pub(crate) struct EndMark(watch::Sender<Option<Ended>>);

impl Drop for EndMark {
    fn drop(&mut self) {
        let _ = self.0.send(Some(Ended::Closed));
    }
}

fn channel_over(ended: Ended) -> io::Error {
    match ended {
        Ended::Closed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the forwarded connection was closed by the other side",
        ),
        Ended::Lost => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the SSH connection carrying this socket was lost",
        ),
    }
}

impl AsyncRead for ChannelSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.reader).poll_read(cx, buf))?;
        // The pipe hands out one channel packet (32 KiB at most) per read: take what else
        // has arrived too, without waiting, so a large buffer costs one read, not dozens.
        // (A `Pending` here only leaves our waker with the pipe; an error shows next time.)
        let mut last = buf.filled().len();
        while last > before && buf.remaining() > 0 {
            match Pin::new(&mut self.reader).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() > last => last = buf.filled().len(),
                _ => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChannelSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(ended) = self.ended() {
            return Poll::Ready(Err(channel_over(ended)));
        }
        match self.writer.as_mut().poll_write(cx, buf) {
            Poll::Pending => {
                // Waiting for window: make sure the end of the channel wakes us too.
                if let Ok(mut waker) = self.write_waker.lock() {
                    *waker = Some(cx.waker().clone());
                }
                match self.ended() {
                    Some(ended) => Poll::Ready(Err(channel_over(ended))),
                    None => Poll::Pending,
                }
            }
            ready => ready,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    /// Sends end of file (half-close): the peer sees it, and we can still read. On a
    /// channel the server already closed there is nothing left to end: `Ok`.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.ended() {
            Some(Ended::Closed) => Poll::Ready(Ok(())),
            Some(Ended::Lost) => Poll::Ready(Err(channel_over(Ended::Lost))),
            None => self.writer.as_mut().poll_shutdown(cx),
        }
    }
}

/// Joins a local TCP connection and a forwarding channel (a tunnel's or a reverse
/// tunnel's), as `ssh -L` does.
///
/// Each direction is copied on its own, and one ending does not cut the other short: a
/// service that closes while the client is still sending has its last bytes delivered
/// before the client's connection is closed (`copy_bidirectional` would drop them at the
/// first write error). Once the channel is over, nothing more can be sent, so the upward
/// copy stops even if the client never closes. If the channel was lost mid-stream, the
/// client's connection is reset rather than closed, so it cannot take a truncated stream
/// for a whole one.
pub(crate) async fn relay(mut local: TcpStream, remote: ChannelSocket) {
    let ended = remote.on_end();
    let (mut remote_read, mut remote_write) = tokio::io::split(remote);
    let (mut local_read, mut local_write) = local.split();
    let down = async {
        let copied = pass(&mut remote_read, &mut local_write).await;
        if copied.is_ok() {
            let _ = local_write.shutdown().await;
        }
        copied.is_ok()
    };
    let up = async {
        tokio::select! {
            copied = pass(&mut local_read, &mut remote_write) => {
                if copied.is_ok() {
                    let _ = remote_write.shutdown().await;
                }
                copied.is_ok()
            }
            () = ended => false,
        }
    };
    let (whole, client_done) = tokio::join!(down, up);
    if !whole {
        let _ = local.set_zero_linger();
    } else if !client_done {
        linger(&mut local).await;
    }
}

/// Copies `from` to `to` until the end of `from`. `tokio::io::copy`'s 8 KiB buffer would
/// split each channel packet (32 KiB) into four reads and four socket writes; a buffer
/// larger than a packet takes each whole.
async fn pass(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
) -> io::Result<()> {
    let mut buffer = vec![0; 256 << 10];
    loop {
        let n = tokio::io::AsyncReadExt::read(from, &mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buffer[..n]).await?;
    }
}

/// Before closing a client connection that may still be sending (to a service that is
/// gone): reads and discards until the client has acknowledged every byte and the end of
/// file sent to it, or until it closes.
///
/// Closing a socket with unread input makes the kernel send a reset *and drop whatever of
/// our output the client has not acknowledged yet*: a slow client would lose the service's
/// last bytes and its end of file. HTTP servers linger the same way after an early answer.
async fn linger(local: &mut TcpStream) {
    let mut scratch = vec![0; 16 * 1024];
    loop {
        if unacknowledged(local) == 0 {
            return;
        }
        tokio::select! {
            read = tokio::io::AsyncReadExt::read(local, &mut scratch) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Bytes (and the end of file) sent on `stream` that its peer has not acknowledged.
#[cfg(target_os = "linux")]
fn unacknowledged(stream: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) on a socket writes one int through the pointer, which
    // points to a live c_int.
    let result = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if result == 0 {
        usize::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}

/// Elsewhere the send queue is not visible here: no lingering, so a slow client that is
/// still sending may lose the last bytes, as it would behind `ssh -L`.
#[cfg(not(target_os = "linux"))]
fn unacknowledged(_stream: &TcpStream) -> usize {
    0
}
