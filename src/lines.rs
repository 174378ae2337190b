//! `lines()`: a command's output as a stream of lines, stdout and stderr as they come.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{
    Stream, StreamExt,
    stream::{BoxStream, SelectAll},
};
use tokio::io::AsyncBufReadExt;

use crate::{
    Error, Result,
    exec::{Job, Mode, Started},
    machine::BoxRead,
};

/// One line of output, without its line ending (`\n` or `\r\n`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Line {
    /// A line the (last stage of the) command wrote to stdout.
    Stdout(String),
    /// A line a stage wrote to stderr.
    Stderr(String),
}

impl Line {
    /// The text of the line, whichever stream it came from.
    pub fn text(&self) -> &str {
        match self {
            Line::Stdout(text) | Line::Stderr(text) => text,
        }
    }

    /// Whether the line came from stderr.
    pub fn is_stderr(&self) -> bool {
        matches!(self, Line::Stderr(_))
    }
}

/// The stream returned by [`Command::lines`](crate::Command::lines): every line of stdout
/// and stderr in the order they arrive.
///
/// The command starts when the stream is first polled; its timeout counts from then and
/// covers the start too (on an SSH machine, the wait for a channel). A line that is not UTF-8 ends the
/// stream with [`Error::InvalidUtf8`]; a failing exit status ends it with
/// [`Error::Exit`] (whose stderr tail is the stage's last stderr lines). Dropping the
/// stream early kills what it started.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use futures::StreamExt;
/// use leadpipe::Line;
/// let mut lines = leadpipe::local().cmd("make").lines();
/// while let Some(line) = lines.next().await {
///     match line? {
///         Line::Stdout(text) => println!("{text}"),
///         Line::Stderr(text) => eprintln!("make: {text}"),
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Lines {
    inner: BoxStream<'static, Result<Line>>,
}

/// Where a raw line came from: stdout, or the stderr of stage N.
#[derive(Clone, Copy)]
enum Source {
    Stdout,
    Stderr(usize),
}

type RawLines = SelectAll<BoxStream<'static, (Source, std::io::Result<Vec<u8>>)>>;

enum State {
    Start(Job),
    Running(Box<Reading>),
    Done,
}

/// A started job and the lines of its pipes, merged as they come.
struct Reading {
    started: Started,
    sources: RawLines,
}

impl Lines {
    pub(crate) fn new(job: Job) -> Lines {
        let inner = futures::stream::unfold(State::Start(job), step).boxed();
        Lines { inner }
    }
}

impl Stream for Lines {
    type Item = Result<Line>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for Lines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lines")
    }
}

fn raw_lines(
    source: Source,
    pipe: BoxRead,
) -> BoxStream<'static, (Source, std::io::Result<Vec<u8>>)> {
    let reader = tokio::io::BufReader::new(pipe);
    futures::stream::unfold(Some(reader), move |reader| async move {
        let mut reader = reader?;
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => None,
            Ok(_) => Some(((source, Ok(line)), Some(reader))),
            Err(error) => Some(((source, Err(error)), None)),
        }
    })
    .boxed()
}

async fn start(job: Job) -> Result<Box<Reading>> {
    let mut started = Started::start(job, Mode::Lines).await?;
    let mut sources = SelectAll::new();
    let pipe_error = |e| Error::io("setting up a pipe", e);
    if let Some(pipe) = started.take_stdout() {
        sources.push(raw_lines(
            Source::Stdout,
            pipe.into_async().map_err(pipe_error)?,
        ));
    }
    for (stage, pipe) in started.read_stderr()? {
        sources.push(raw_lines(Source::Stderr(stage), pipe));
    }
    Ok(Box::new(Reading { started, sources }))
}

/// One item of the stream: the next line, or the end (checked).
async fn step(state: State) -> Option<(Result<Line>, State)> {
    let mut reading = match state {
        State::Done => return None,
        State::Running(reading) => reading,
        State::Start(job) => match start(job).await {
            Ok(reading) => reading,
            Err(error) => return Some((Err(error), State::Done)),
        },
    };
    let Reading { started, sources } = &mut *reading;
    let next = match started.within(sources.next()).await {
        Ok(next) => next,
        Err(error) => return Some((Err(error), State::Done)),
    };
    match next {
        Some((source, Ok(mut bytes))) => {
            if let Source::Stderr(stage) = source {
                started.keep_stderr(stage, &bytes);
            }
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            match String::from_utf8(bytes) {
                Ok(text) => {
                    let line = match source {
                        Source::Stdout => Line::Stdout(text),
                        Source::Stderr(_) => Line::Stderr(text),
                    };
                    Some((Ok(line), State::Running(reading)))
                }
                Err(invalid) => Some((
                    Err(Error::InvalidUtf8 {
                        command: started.job().display(),
                        machine: started.job().machine_name(),
                        valid_up_to: invalid.utf8_error().valid_up_to(),
                    }),
                    State::Done,
                )),
            }
        }
        Some((_, Err(error))) => Some((
            Err(Error::io(
                format!("reading the output of `{}`", started.job().display()),
                error,
            )),
            State::Done,
        )),
        None => {
            // Every pipe has ended: only the exit is left to wait for.
            let checked = match started.finish(async { Ok(()) }).await {
                Ok(statuses) => started.check(&statuses, &[]),
                Err(error) => Err(error),
            };
            match checked {
                Ok(()) => None,
                Err(error) => Some((Err(error), State::Done)),
            }
        }
    }
}
