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
use tokio::{io::AsyncBufReadExt, time::Instant};

use crate::{
    Error, Result,
    exec::{self, Captured, Job, Mode},
    machine::{BoxRead, Running, StderrPlan},
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
/// The command starts when the stream is first polled. A line that is not UTF-8 ends the
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
    Running(Box<Started>),
    Done,
}

struct Started {
    job: Job,
    running: Box<dyn Running>,
    sources: RawLines,
    stderr_tails: Vec<Vec<u8>>,
    stderr_captured: Vec<bool>,
    deadline: Option<Instant>,
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

async fn start(job: Job) -> Result<Box<Started>> {
    let deadline = job.deadline();
    let plan = job.plan(Mode::Lines);
    let stderr_captured: Vec<bool> = plan
        .stages
        .iter()
        .map(|s| s.stderr == StderrPlan::Pipe)
        .collect();
    let mut running = job.start(plan).await?;
    let mut sources = SelectAll::new();
    let pipe_error = |e| Error::io("setting up a pipe", e);
    if let Some(pipe) = running.take_stdout() {
        sources.push(raw_lines(
            Source::Stdout,
            pipe.into_async().map_err(pipe_error)?,
        ));
    }
    for i in 0..job.stages().len() {
        if let Some(pipe) = running.take_stderr(i) {
            sources.push(raw_lines(
                Source::Stderr(i),
                pipe.into_async().map_err(pipe_error)?,
            ));
        }
    }
    Ok(Box::new(Started {
        stderr_tails: vec![Vec::new(); job.stages().len()],
        job,
        running,
        sources,
        stderr_captured,
        deadline,
    }))
}

/// One item of the stream: the next line, or the end (checked).
async fn step(state: State) -> Option<(Result<Line>, State)> {
    let mut started = match state {
        State::Done => return None,
        State::Running(started) => started,
        State::Start(job) => match start(job).await {
            Ok(started) => started,
            Err(error) => return Some((Err(error), State::Done)),
        },
    };
    let Some(next) = exec::until(started.deadline, started.sources.next()).await else {
        exec::stop(started.running.as_mut()).await;
        return Some((Err(started.job.timed_out()), State::Done));
    };
    match next {
        Some((source, Ok(mut bytes))) => {
            if let Source::Stderr(stage) = source {
                let tail = &mut started.stderr_tails[stage];
                tail.extend_from_slice(&bytes);
                *tail = exec::tail(tail);
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
                    Some((Ok(line), State::Running(started)))
                }
                Err(invalid) => Some((
                    Err(Error::InvalidUtf8 {
                        command: started.job.display(),
                        machine: started.job.machine_name(),
                        valid_up_to: invalid.utf8_error().valid_up_to(),
                    }),
                    State::Done,
                )),
            }
        }
        Some((_, Err(error))) => Some((
            Err(Error::io(
                format!("reading the output of `{}`", started.job.display()),
                error,
            )),
            State::Done,
        )),
        None => {
            let waited = match exec::until(started.deadline, started.running.wait()).await {
                Some(waited) => waited,
                None => {
                    exec::stop(started.running.as_mut()).await;
                    Err(started.job.timed_out())
                }
            };
            let checked = waited.and_then(|statuses| {
                let captured = Captured {
                    stdout: Vec::new(),
                    stderr: std::mem::take(&mut started.stderr_tails),
                    stderr_captured: std::mem::take(&mut started.stderr_captured),
                    shared_stderr: started.running.shared_stderr(),
                };
                started.job.check(&statuses, &captured)
            });
            match checked {
                Ok(()) => None,
                Err(error) => Some((Err(error), State::Done)),
            }
        }
    }
}
