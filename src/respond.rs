//! Prompt responders ([`Command::respond`](crate::Command::respond)): a command's stdout and
//! stderr are watched as they stream, and an answer is written to its stdin each time a
//! pattern appears.
//!
//! Written once for every machine, between the backend and the rest of `exec`: the plan's
//! streams are turned into pipes to this process ([`prepare`]), and the started job is
//! wrapped ([`wrap`]) so that whoever reads its stdout and stderr (a capture, `lines`, a
//! `Child`, or a copy to this process's own streams) reads them through [`Watch`], which
//! finds the patterns (across chunk boundaries) and hands the answers to the one task that
//! owns the command's stdin. On a pty the terminal echoes what is typed: the echo of each
//! answer is taken out of the output again, so neither it nor a secret answer is captured.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use futures::future::BoxFuture;
use tokio::{
    io::{AsyncRead, AsyncWriteExt, ReadBuf},
    sync::mpsc,
};

use crate::{
    Error, ExitStatus, Result, Signal,
    machine::{BoxRead, BoxWrite, ReadEnd, Running, StagePlan, StderrPlan, StdinPlan, StdoutPlan},
};

/// One pattern and its answer (the bytes given, then a newline).
#[derive(Clone)]
pub(crate) struct Responder {
    pub(crate) pattern: Arc<[u8]>,
    pub(crate) answer: Arc<[u8]>,
}

/// What becomes of one watched stream once it is read through [`Watch`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not watched: a file, or it goes with the other stream.
    Unwatched,
    /// The call reads it (captured, `lines`, `Child`).
    Caller,
    /// Copied to this process's own stdout or stderr.
    Own,
    /// Read and dropped.
    Discard,
}

/// How the streams of the responding stage were planned before they became pipes.
pub(crate) struct Prepared {
    stdout: Fate,
    stderr: Fate,
    pty: bool,
}

/// Makes the stage's stdin a pipe from here, and its stdout and stderr (those that are not
/// files) pipes to here.
///
/// # Errors
/// [`Error::Io`] (`InvalidInput`) when the stage's stdin is a here-string or a file: then
/// the answers would have nowhere to go.
pub(crate) fn prepare(stage: &mut StagePlan, machine: &str) -> Result<Prepared> {
    match stage.stdin {
        StdinPlan::Bytes(_) | StdinPlan::File(_) | StdinPlan::Previous => {
            return Err(Error::io(
                format!(
                    "cannot answer the prompts of `{}` on {machine}",
                    stage.process.line
                ),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "its stdin is set elsewhere (a here-string, a file, or an earlier stage); \
                     respond() writes its answers there",
                ),
            ));
        }
        _ => stage.stdin = StdinPlan::Pipe,
    }
    let fate = |pipe: bool, inherit: bool, null: bool| match (pipe, inherit, null) {
        (true, _, _) => Fate::Caller,
        (_, true, _) => Fate::Own,
        (_, _, true) => Fate::Discard,
        _ => Fate::Unwatched,
    };
    let stdout = fate(
        stage.stdout == StdoutPlan::Pipe,
        stage.stdout == StdoutPlan::Inherit,
        stage.stdout == StdoutPlan::Null,
    );
    if matches!(stdout, Fate::Own | Fate::Discard) {
        stage.stdout = StdoutPlan::Pipe;
    }
    let stderr = fate(
        stage.stderr == StderrPlan::Pipe,
        stage.stderr == StderrPlan::Inherit,
        stage.stderr == StderrPlan::Null,
    );
    if matches!(stderr, Fate::Own | Fate::Discard) {
        stage.stderr = StderrPlan::Pipe;
    }
    Ok(Prepared {
        stdout,
        stderr,
        pty: stage.process.pty,
    })
}

/// The started job, its stdin owned by the answering task and its stdout and stderr
/// watched.
pub(crate) fn wrap(
    mut running: Box<dyn Running>,
    responders: &[Responder],
    prepared: &Prepared,
) -> Result<Box<dyn Running>> {
    let (answers, mut queue) = mpsc::unbounded_channel::<Arc<[u8]>>();
    if let Some(mut stdin) = running.take_stdin(0) {
        tokio::spawn(async move {
            while let Some(answer) = queue.recv().await {
                if stdin.write_all(&answer).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
            let _ = stdin.shutdown().await;
        });
    }
    let watched = |end: Option<ReadEnd>, fate: Fate, echo: bool| -> Result<Option<ReadEnd>> {
        let Some(end) = end else { return Ok(None) };
        let read = end
            .into_async()
            .map_err(|e| Error::io("cannot watch a command's output for prompts", e))?;
        let watch = Watch::new(read, responders, answers.clone(), echo);
        match fate {
            Fate::Own | Fate::Discard => {
                let mut watch = watch;
                tokio::spawn(async move {
                    if fate == Fate::Own {
                        // Only stdout comes here as `Own`; stderr has its own copy below.
                        let mut own = tokio::io::stdout();
                        let _ = tokio::io::copy(&mut watch, &mut own).await;
                        let _ = own.flush().await;
                    } else {
                        let _ = tokio::io::copy(&mut watch, &mut tokio::io::sink()).await;
                    }
                });
                Ok(None)
            }
            _ => Ok(Some(ReadEnd::Async(Box::new(watch)))),
        }
    };
    let stdout = match prepared.stdout {
        Fate::Unwatched => running.take_stdout(),
        fate => watched(running.take_stdout(), fate, prepared.pty)?,
    };
    let stderr = match prepared.stderr {
        Fate::Unwatched => running.take_stderr(0),
        Fate::Own => {
            // To this process's stderr, not its stdout.
            let end = running.take_stderr(0);
            if let Some(end) = end {
                let read = end
                    .into_async()
                    .map_err(|e| Error::io("cannot watch a command's output for prompts", e))?;
                let mut watch = Watch::new(read, responders, answers.clone(), false);
                tokio::spawn(async move {
                    let mut own = tokio::io::stderr();
                    let _ = tokio::io::copy(&mut watch, &mut own).await;
                    let _ = own.flush().await;
                });
            }
            None
        }
        fate => watched(running.take_stderr(0), fate, false)?,
    };
    Ok(Box::new(Responding {
        inner: running,
        stdout,
        stderr,
    }))
}

/// A started job whose streams are watched.
struct Responding {
    inner: Box<dyn Running>,
    stdout: Option<ReadEnd>,
    stderr: Option<ReadEnd>,
}

impl Running for Responding {
    fn take_stdin(&mut self, _: usize) -> Option<BoxWrite> {
        None
    }

    fn take_stdout(&mut self) -> Option<ReadEnd> {
        self.stdout.take()
    }

    fn take_stderr(&mut self, stage: usize) -> Option<ReadEnd> {
        if stage == 0 { self.stderr.take() } else { None }
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<Vec<ExitStatus>>> {
        self.inner.wait()
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        self.inner.signal(signal)
    }

    fn id(&self) -> Option<u32> {
        self.inner.id()
    }

    fn logged_pid(&self) -> Option<u32> {
        self.inner.logged_pid()
    }

    fn detached_pid(&self) -> Option<u32> {
        self.inner.detached_pid()
    }
}

/// A stream read through: each pattern found sends its answer; on a pty, the terminal's
/// echo of an answer is taken out.
struct Watch {
    inner: BoxRead,
    /// Each responder with the end of the stream so far that could start a match.
    scanners: Vec<(Responder, Vec<u8>)>,
    answers: mpsc::UnboundedSender<Arc<[u8]>>,
    /// Whether the stream is a terminal's, which echoes what is typed.
    echo: bool,
    /// Echoes still to come, in order, and how far the first has arrived.
    expected: std::collections::VecDeque<Vec<u8>>,
    matched: usize,
    /// Bytes read and processed, not yet handed out.
    pending: Vec<u8>,
    offset: usize,
}

impl Watch {
    fn new(
        inner: BoxRead,
        responders: &[Responder],
        answers: mpsc::UnboundedSender<Arc<[u8]>>,
        echo: bool,
    ) -> Watch {
        Watch {
            inner,
            scanners: responders.iter().map(|r| (r.clone(), Vec::new())).collect(),
            answers,
            echo,
            expected: Default::default(),
            matched: 0,
            pending: Vec::new(),
            offset: 0,
        }
    }

    /// Takes the expected echoes out of `bytes`: a byte that differs means the terminal
    /// does not echo (a password prompt turns echo off), and nothing more is expected.
    fn strip_echo(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut kept = Vec::with_capacity(bytes.len());
        for &byte in bytes {
            match self.expected.front() {
                Some(echo) if echo[self.matched] == byte => {
                    self.matched += 1;
                    if self.matched == echo.len() {
                        self.expected.pop_front();
                        self.matched = 0;
                    }
                }
                Some(_) => {
                    // What had matched so far was the program's own output after all.
                    let echo = self.expected.front().cloned().unwrap_or_default();
                    kept.extend_from_slice(&echo[..self.matched]);
                    self.expected.clear();
                    self.matched = 0;
                    kept.push(byte);
                }
                None => kept.push(byte),
            }
        }
        kept
    }

    /// Sends an answer for every pattern that ends in `bytes`.
    fn scan(&mut self, bytes: &[u8]) {
        for (responder, carry) in &mut self.scanners {
            let pattern = &responder.pattern[..];
            if pattern.is_empty() {
                continue;
            }
            carry.extend_from_slice(bytes);
            let mut start = 0;
            while let Some(at) = carry[start..]
                .windows(pattern.len())
                .position(|w| w == pattern)
            {
                start += at + pattern.len();
                let _ = self.answers.send(responder.answer.clone());
                if self.echo {
                    let mut echo = responder.answer[..responder.answer.len() - 1].to_vec();
                    echo.extend_from_slice(b"\r\n");
                    self.expected.push_back(echo);
                }
            }
            // Keep only what could still begin a match.
            let keep_from = start.max(carry.len().saturating_sub(pattern.len() - 1));
            carry.drain(..keep_from);
        }
    }
}

impl AsyncRead for Watch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.offset < self.pending.len() {
                let this = &mut *self;
                let n = (this.pending.len() - this.offset).min(buf.remaining());
                buf.put_slice(&this.pending[this.offset..this.offset + n]);
                this.offset += n;
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read))?;
            let filled = read.filled();
            if filled.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let kept = if self.echo && !self.expected.is_empty() {
                self.strip_echo(filled)
            } else {
                filled.to_vec()
            };
            self.scan(&kept);
            self.pending = kept;
            self.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn patterns_cut_across_chunks_are_answered_and_echoes_taken_out() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let responders = [Responder {
            pattern: Arc::from(&b"Password:"[..]),
            answer: Arc::from(&b"s3cret\n"[..]),
        }];
        let mut watch = Watch::new(Box::new(tokio::io::empty()), &responders, tx, true);
        let mut out = Vec::new();
        for chunk in [
            &b"Pass"[..],
            b"word:",
            b"s3cr",
            b"et\r\nok Password:Password:",
        ] {
            let kept = watch.strip_echo(chunk);
            watch.scan(&kept);
            out.extend_from_slice(&kept);
        }
        assert_eq!(out, b"Password:ok Password:Password:");
        let mut answers = 0;
        while rx.try_recv().is_ok() {
            answers += 1;
        }
        assert_eq!(answers, 3);
    }
}
