//! A pipe from a channel's pump to whoever reads the stream: memory up to a cap, then an
//! anonymous temp file.
//!
//! Why: the pump must never wait for the reader. russh feeds all channels of a connection
//! from one loop; a pump that stops reading its channel stalls every other channel, new
//! channel opens and keepalives too. And russh grants the server more window as data
//! *arrives*, not as it is consumed, so without a cap a fast stream and a slow reader grow
//! memory without bound. So the pump writes here without ever waiting: the first
//! [`MEMORY_CAP`] bytes in memory, anything beyond that appended to a temp file (deleted
//! when closed), read back in order. Memory stays bounded; a reader that never catches up
//! costs disk, which is what it asked for by not reading.
//!
//! The file is written and read with plain `pwrite`/`pread`: they hit the page cache and
//! return in microseconds, so they run inline rather than on a blocking thread.

use std::{
    collections::VecDeque,
    fs::File,
    io,
    os::unix::fs::FileExt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use tokio::io::{AsyncRead, ReadBuf};

/// What one stream may hold in memory before it spills to disk.
pub(crate) const MEMORY_CAP: usize = 8 << 20;

#[derive(Default)]
struct State {
    memory: VecDeque<Vec<u8>>,
    memory_bytes: usize,
    /// Where bytes beyond the cap go, once they do; in order after `memory`.
    file: Option<File>,
    written: u64,
    read: u64,
    closed: bool,
    reader_gone: bool,
    waker: Option<Waker>,
    /// A file error, reported to the reader.
    failed: Option<io::ErrorKind>,
    /// The stream was cut short (the connection died): once the bytes that came are read,
    /// the reader gets `ConnectionAborted`, never a clean end of file.
    aborted: bool,
}

/// The pump's end.
pub(crate) struct SpillWriter(Arc<Mutex<State>>);

/// The reader's end: a tokio [`AsyncRead`].
pub(crate) struct SpillReader(Arc<Mutex<State>>);

/// A new pipe.
pub(crate) fn spill_pipe() -> (SpillWriter, SpillReader) {
    let state = Arc::new(Mutex::new(State::default()));
    (SpillWriter(state.clone()), SpillReader(state))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock leaves nothing half-done that matters more than
    // the bytes themselves: keep going.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SpillWriter {
    /// Adds bytes; never waits. Bytes for a reader that is gone are dropped.
    pub(crate) fn push(&self, bytes: Vec<u8>) {
        let mut state = lock(&self.0);
        if state.reader_gone || bytes.is_empty() {
            return;
        }
        if state.file.is_none() && state.memory_bytes + bytes.len() <= MEMORY_CAP {
            state.memory_bytes += bytes.len();
            state.memory.push_back(bytes);
        } else if let Err(error) = append(&mut state, &bytes) {
            state.failed = Some(error.kind());
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

fn append(state: &mut State, bytes: &[u8]) -> io::Result<()> {
    if state.file.is_none() {
        state.file = Some(tempfile::tempfile()?);
        state.written = 0;
        state.read = 0;
    }
    let offset = state.written;
    if let Some(file) = &state.file {
        file.write_all_at(bytes, offset)?;
    }
    state.written += bytes.len() as u64;
    Ok(())
}

impl SpillWriter {
    /// Ends the stream as cut short: the reader gets what arrived, then `ConnectionAborted`.
    pub(crate) fn abort(self) {
        lock(&self.0).aborted = true;
    }
}

impl Drop for SpillWriter {
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        state.closed = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl AsyncRead for SpillReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = lock(&self.0);
        if let Some(kind) = state.failed {
            return Poll::Ready(Err(io::Error::new(
                kind,
                "spilling channel output to a temp file failed",
            )));
        }
        if let Some(mut chunk) = state.memory.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            state.memory_bytes -= n;
            if n < chunk.len() {
                chunk.drain(..n);
                state.memory.push_front(chunk);
            }
            return Poll::Ready(Ok(()));
        }
        if state.read < state.written {
            let want = buf
                .remaining()
                .min(1 << 20)
                .min((state.written - state.read) as usize);
            let mut bytes = vec![0; want];
            let offset = state.read;
            let result = match &state.file {
                Some(file) => file.read_at(&mut bytes, offset),
                None => Ok(0),
            };
            let n = result?;
            buf.put_slice(&bytes[..n]);
            state.read += n as u64;
            if state.read == state.written {
                // Caught up: back to memory, and the disk space is freed.
                state.file = None;
            }
            return Poll::Ready(Ok(()));
        }
        if state.closed && state.aborted {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the SSH connection was lost before the end of the stream",
            )));
        }
        if state.closed {
            return Poll::Ready(Ok(()));
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SpillReader {
    fn drop(&mut self) {
        let mut state = lock(&self.0);
        state.reader_gone = true;
        state.memory.clear();
        state.memory_bytes = 0;
        state.file = None;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn bytes_come_out_in_order_across_memory_and_disk() {
        let (writer, mut reader) = spill_pipe();
        let chunk = 1 << 20;
        let total = MEMORY_CAP * 3 + 12345;
        let expected: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        for piece in expected.chunks(chunk) {
            writer.push(piece.to_vec());
        }
        assert!(lock(&writer.0).memory_bytes <= MEMORY_CAP);
        assert!(lock(&writer.0).file.is_some(), "the excess went to disk");
        // Read half, then write more while the file is still being read.
        let mut first = vec![0; total / 2];
        reader.read_exact(&mut first).await.unwrap();
        writer.push(b"tail".to_vec());
        drop(writer);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        first.extend(rest);
        let mut all = expected;
        all.extend_from_slice(b"tail");
        assert!(first == all, "the bytes differ");
    }

    #[tokio::test]
    async fn a_stream_cut_short_ends_in_an_error_after_its_bytes() {
        let (writer, mut reader) = spill_pipe();
        writer.push(b"partial".to_vec());
        writer.abort();
        let mut got = [0; 7];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"partial");
        let error = reader.read(&mut [0; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn a_waiting_reader_is_woken() {
        let (writer, mut reader) = spill_pipe();
        let read = tokio::spawn(async move {
            let mut text = String::new();
            reader.read_to_string(&mut text).await.unwrap();
            text
        });
        tokio::task::yield_now().await;
        writer.push(b"late".to_vec());
        drop(writer);
        assert_eq!(read.await.unwrap(), "late");
    }
}
