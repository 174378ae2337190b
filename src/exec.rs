//! Running commands and pipelines: the part of every call that is the same on every
//! machine.
//!
//! Each call (`run`, `read`, `output`, ...) picks the defaults for the streams a command
//! did not set ([`Mode`]), turns the job into a [`Plan`], has the machine start it, and then
//! feeds here-strings, drains every pipe that leads here *at the same time* (a child
//! blocked writing stderr while we wait for its stdout is the classic deadlock), enforces
//! the timeout, and checks each stage's status.

use std::{
    fmt, io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::{AbortHandle, JoinHandle},
    time::Instant,
};

use crate::{
    Child, Command, Error, ExitStatus, Input, Lines, Output, Redirect, Result, Signal,
    command::Stderr,
    error::{ExitError, TAIL_BYTES},
    machine::{
        BoxRead, BoxWrite, Line, MachineRef, Plan, Process, ReadEnd, Running, StagePlan,
        StderrPlan, StdinPlan, StdoutPlan,
    },
    observe::{Observe, Sink, Stream},
};

/// What `command` runs, as a [`Plan`] carries it to the machine.
pub(crate) fn process_of(command: &Command) -> Process {
    let spec = command.spec();
    Process {
        machine: spec.machine.clone(),
        program: spec.program.clone(),
        args: spec.args.clone(),
        secret_args: spec.secret_args.clone(),
        env_clear: spec.env_clear,
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        pty: spec.pty,
        line: {
            let command = command.clone();
            Line::new(move || command.display_line())
        },
    }
}

/// The stages of a command or pipeline and the pipeline's own timeout.
#[derive(Clone)]
pub(crate) struct Job {
    stages: Vec<Command>,
    timeout: Option<Duration>,
}

/// What a call does with the streams a command left unset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// `run`: inherit all three, as a shell runs a command.
    Run,
    /// `read`: stdin null, stdout captured, stderr tail kept.
    Read,
    /// `output`: stdin null, stdout and stderr captured in full.
    Output,
    /// `status`/`success`: everything on /dev/null.
    Quiet,
    /// `spawn`: stdin and stdout are pipes for the caller, stderr is kept.
    Spawn,
    /// `lines`: stdin null, stdout and stderr read line by line.
    Lines,
    /// `spawn_detached`: everything on /dev/null; no stream may lead here.
    Detached,
}

impl Job {
    pub(crate) fn new(stages: Vec<Command>, timeout: Option<Duration>) -> Job {
        Job { stages, timeout }
    }

    /// How many stages the job has.
    pub(crate) fn stage_count(&self) -> usize {
        self.stages.len()
    }

    /// Whether the last stage's stderr was set to [`Redirect::Pipe`]: a spawned job hands
    /// it to the caller instead of keeping it for errors.
    pub(crate) fn pipes_last_stderr(&self) -> bool {
        self.stages
            .last()
            .is_some_and(|last| last.spec().stderr == Some(Stderr::To(Redirect::Pipe)))
    }

    /// The command line of the whole job.
    pub(crate) fn display(&self) -> String {
        let lines: Vec<String> = self.stages.iter().map(Command::display_line).collect();
        lines.join(" | ")
    }

    /// What the job shows of itself: echo when a stage echoes; the prefix and log of the
    /// first stage that has them.
    pub(crate) fn observe(&self) -> Observe {
        let mut observe = Observe::default();
        for command in &self.stages {
            let theirs = &command.spec().observe;
            observe.echo |= theirs.echo;
            if observe.prefix.is_none() {
                observe.prefix = theirs.prefix.clone();
            }
            if observe.log.is_none() {
                observe.log = theirs.log.clone();
            }
        }
        observe
    }

    /// The pipeline's limit, or the tightest limit of a stage.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.stages
            .iter()
            .filter_map(|c| c.spec().timeout)
            .chain(self.timeout)
            .min()
    }

    /// The machine of every stage, or `None` when the stages are on several.
    fn machine(&self) -> Option<&MachineRef> {
        let first = &self.stages[0].spec().machine;
        let shared = self
            .stages
            .iter()
            .all(|c| Arc::ptr_eq(&c.spec().machine, first));
        shared.then_some(first)
    }

    /// How errors name where the job ran: the machine, or every machine in stage order.
    pub(crate) fn machine_name(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for command in &self.stages {
            let name = command.spec().machine.name();
            if names.last() != Some(&name) {
                names.push(name);
            }
        }
        names.join(" | ")
    }

    /// Resolves every stream of every stage for `mode`.
    pub(crate) fn plan(&self, mode: Mode) -> Plan {
        let last = self.stages.len() - 1;
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, command)| {
                let spec = command.spec();
                let stdin = match &spec.stdin {
                    Some(Input::Inherit) => StdinPlan::Inherit,
                    Some(Input::Null) => StdinPlan::Null,
                    Some(Input::File(path)) => StdinPlan::File(path.clone()),
                    Some(Input::Bytes(bytes)) => StdinPlan::Bytes(bytes.clone()),
                    None if i > 0 => StdinPlan::Previous,
                    // With a pty, an unset stdin stays on the terminal (that is what the pty
                    // is for), unless the caller asked for a pipe.
                    None if spec.pty && mode != Mode::Spawn => StdinPlan::Terminal,
                    None => match mode {
                        Mode::Run => StdinPlan::Inherit,
                        Mode::Spawn => StdinPlan::Pipe,
                        Mode::Read | Mode::Output | Mode::Quiet | Mode::Lines | Mode::Detached => {
                            StdinPlan::Null
                        }
                    },
                };
                let stdout = match &spec.stdout {
                    Some(Redirect::Inherit) => StdoutPlan::Inherit,
                    Some(Redirect::Null) => StdoutPlan::Null,
                    Some(Redirect::File(path)) => StdoutPlan::File(path.clone()),
                    Some(Redirect::Append(path)) => StdoutPlan::Append(path.clone()),
                    Some(Redirect::Pipe) | None if i < last => StdoutPlan::Next,
                    Some(Redirect::Pipe) => StdoutPlan::Pipe,
                    None => match mode {
                        Mode::Run => StdoutPlan::Inherit,
                        Mode::Quiet | Mode::Detached => StdoutPlan::Null,
                        Mode::Read | Mode::Output | Mode::Spawn | Mode::Lines => StdoutPlan::Pipe,
                    },
                };
                let stderr = match &spec.stderr {
                    Some(Stderr::To(Redirect::Inherit)) => StderrPlan::Inherit,
                    Some(Stderr::To(Redirect::Null)) => StderrPlan::Null,
                    Some(Stderr::To(Redirect::File(path))) => StderrPlan::File(path.clone()),
                    Some(Stderr::To(Redirect::Append(path))) => StderrPlan::Append(path.clone()),
                    Some(Stderr::To(Redirect::Pipe)) => StderrPlan::Pipe,
                    Some(Stderr::ToStdout) => StderrPlan::Stdout,
                    Some(Stderr::ToPipelineStdout) => StderrPlan::PipelineStdout,
                    None => match mode {
                        Mode::Run => StderrPlan::Inherit,
                        Mode::Quiet | Mode::Detached => StderrPlan::Null,
                        Mode::Read | Mode::Output | Mode::Spawn | Mode::Lines => StderrPlan::Pipe,
                    },
                };
                StagePlan {
                    process: process_of(command),
                    stdin,
                    stdout,
                    stderr,
                }
            })
            .collect();
        Plan {
            stages,
            detached: mode == Mode::Detached,
        }
    }

    /// Refuses what a detached plan cannot have: a stream to or from this process (it
    /// would end with the script: a pipe, a here-string, the script's own stdio), a
    /// terminal, stages on several machines (their bytes would pass through here).
    fn check_detachable(&self, plan: &Plan) -> Result<()> {
        let refuse = |line: String, reason: &str| {
            Err(Error::io(
                format!("cannot detach `{line}` on {}", self.machine_name()),
                io::Error::new(io::ErrorKind::InvalidInput, reason.to_owned()),
            ))
        };
        if self.machine().is_none() {
            return refuse(
                self.display(),
                "its stages run on several machines, and the bytes between them would pass \
                 through this script",
            );
        }
        for stage in &plan.stages {
            let to_us = |stream: &str| {
                format!(
                    "its {stream} would be connected to this script, which it is meant to \
                     outlive: redirect it to a file, or leave it unset for /dev/null"
                )
            };
            let line = || stage.process.line.to_string();
            if matches!(
                stage.stdin,
                StdinPlan::Inherit | StdinPlan::Pipe | StdinPlan::Bytes(_)
            ) {
                return refuse(line(), &to_us("stdin"));
            }
            if matches!(stage.stdout, StdoutPlan::Inherit | StdoutPlan::Pipe) {
                return refuse(line(), &to_us("stdout"));
            }
            if matches!(stage.stderr, StderrPlan::Inherit | StderrPlan::Pipe) {
                return refuse(line(), &to_us("stderr"));
            }
            if stage.process.pty {
                return refuse(
                    line(),
                    "pty(true): a terminal ends with the connection that made it",
                );
            }
        }
        Ok(())
    }

    /// Starts the job on its machine.
    async fn start(&self, plan: Plan) -> Result<Box<dyn Running>> {
        match self.machine() {
            Some(machine) => machine.start(plan).await,
            None => crate::mixed::start(plan).await,
        }
    }

    /// Whether stage `index` ended well: a status in its `ok_codes`, or (for any stage but
    /// the last) death by SIGPIPE, which only means a later stage stopped reading.
    fn stage_ok(&self, index: usize, status: ExitStatus) -> bool {
        if index + 1 < self.stages.len() && status == ExitStatus::Signal(Signal::PIPE) {
            return true;
        }
        match &self.stages[index].spec().ok_codes {
            None => true,
            Some(codes) => status.code().is_some_and(|code| codes.contains(&code)),
        }
    }

    /// bash's `pipefail` status: the last stage that did not exit with 0, whether it is
    /// checked or not, else the last stage's. A stage before the last killed by SIGPIPE
    /// did not fail (a later stage stopped reading).
    pub(crate) fn status_of(&self, statuses: &[ExitStatus]) -> ExitStatus {
        let last = statuses.len() - 1;
        statuses
            .iter()
            .enumerate()
            .rev()
            .find(|(i, status)| {
                let upstream_sigpipe = *i < last && **status == ExitStatus::Signal(Signal::PIPE);
                !(status.success() || upstream_sigpipe)
            })
            .map_or(statuses[last], |(_, status)| *status)
    }

    pub(crate) fn succeeded(&self, statuses: &[ExitStatus]) -> bool {
        statuses
            .iter()
            .enumerate()
            .all(|(i, status)| self.stage_ok(i, *status))
    }

    /// When the job's limit runs out, counted from now.
    fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|limit| Instant::now() + limit)
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            command: self.display(),
            machine: self.machine_name(),
            timeout: self.timeout().unwrap_or_default(),
        }
    }
}

/// Writes a here-string into a stage's stdin and closes it. A stage that exits without
/// reading all of it (`head -c1 <<< ...`) makes the write fail with EPIPE: that is the
/// stage's choice, not an error.
async fn feed(mut pipe: BoxWrite, bytes: Arc<[u8]>) {
    let result = async {
        pipe.write_all(&bytes).await?;
        pipe.shutdown().await
    }
    .await;
    if let Err(error) = result
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        tracing::debug!(%error, "writing a here-string to stdin failed");
    }
}

/// The last [`TAIL_BYTES`] of `bytes`.
pub(crate) fn tail(bytes: &[u8]) -> Vec<u8> {
    bytes[bytes.len().saturating_sub(TAIL_BYTES)..].to_vec()
}

/// Reads a pipe to its end; with `keep_tail`, only the last [`TAIL_BYTES`] are kept, so a
/// chatty stderr costs bounded memory. Every byte also goes to `sink`, as it is read.
async fn drain(mut pipe: BoxRead, keep_tail: bool, mut sink: Option<Sink>) -> io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    if let Some(sink) = &mut sink {
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let n = pipe.read(&mut chunk).await?;
            if n == 0 {
                sink.finish();
                return Ok(buffer);
            }
            sink.write(&chunk[..n]);
            buffer.extend_from_slice(&chunk[..n]);
            if keep_tail && buffer.len() > 2 * TAIL_BYTES {
                buffer.drain(..buffer.len() - TAIL_BYTES);
            }
        }
    }
    if !keep_tail {
        pipe.read_to_end(&mut buffer).await?;
        return Ok(buffer);
    }
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buffer);
        }
        buffer.extend_from_slice(&chunk[..n]);
        if buffer.len() > 2 * TAIL_BYTES {
            buffer.drain(..buffer.len() - TAIL_BYTES);
        }
    }
}

/// How long a timed-out call waits, after the kill, for what it killed to be reaped.
///
/// Locally the reap is immediate. A remote kill needs the server, which may be the very
/// reason for the timeout (it stopped answering): then the machine finishes the kill in
/// the background and the call returns anyway. So every timeout returns
/// [`Error::Timeout`] at most this long after its limit.
pub(crate) const STOP_WAIT: Duration = Duration::from_millis(500);

/// What became of one stage's stderr.
enum StageStderr {
    /// It does not lead here (inherited, redirected, shared with another stage), or it
    /// was handed to the caller.
    Elsewhere,
    /// The pipe, not yet claimed by the call.
    Pipe(ReadEnd),
    /// A task reads it to its end.
    Draining(JoinHandle<io::Result<Vec<u8>>>),
    /// What it carried (all of it, or its tail, as the call wants).
    Kept(Vec<u8>),
}

/// A started job: the one run loop behind every call.
///
/// `run`/`read`/`output`/`status` ([`collect`]), [`Child`] and [`Lines`] all hold one. It
/// owns the running processes, the here-string writers, the concurrent drains of the
/// stderr pipes and what they kept, and the deadline, which covers the whole call: the
/// start (on SSH, the wait for a free channel), every read and wait, and the bounded
/// clean-up after a kill ([`STOP_WAIT`]). It checks the statuses into errors.
///
/// Dropped before the job ended, it kills what it started (through `Running`'s drop) and
/// stops its drains and here-string writers.
pub(crate) struct Started {
    job: Job,
    running: Box<dyn Running>,
    deadline: Option<Instant>,
    stderr: Vec<StageStderr>,
    /// Per stage: whether its stderr was planned to come here (for the error's text).
    stderr_captured: Vec<bool>,
    /// Every stage wrote one stream, found at one stage (see `Backend::shares_stderr`).
    shared_stderr: bool,
    feeds: Vec<AbortHandle>,
    /// Stops blocking reads of this job's pipes when the call ends early.
    cancel: CancelOnDrop,
    /// Once every stage has ended (or was killed and reaped).
    statuses: Option<Vec<ExitStatus>>,
    /// What the job shows of itself (see [`Observe`]).
    observe: Observe,
    /// Per stage: its stderr was meant for this process's own stderr and is read here
    /// (to prefix or log it).
    diverted_stderr: Vec<bool>,
    /// The last stage's stdout was meant for this process's own stdout and is read here.
    diverted_stdout: bool,
    /// The command's tracing span: machine, command line, pid; at the end, status and
    /// duration. Closed when the job is dropped.
    span: tracing::Span,
    began: Instant,
}

impl Started {
    /// Plans `job` for `mode` and starts it, within its deadline, which starts now; the
    /// here-strings are being fed when it returns.
    ///
    /// # Errors
    /// The machine's start errors; [`Error::Timeout`] when the start (on SSH: the wait for
    /// a channel) outlasts the limit.
    pub(crate) async fn start(job: Job, mode: Mode) -> Result<Started> {
        let began = Instant::now();
        let deadline = job.deadline();
        let mut plan = job.plan(mode);
        if plan.detached {
            job.check_detachable(&plan)?;
        }
        let observe = job.observe();
        let (diverted_stdout, diverted_stderr) = divert(&mut plan, &observe);
        // The fields are rendered only when a subscriber wants the span.
        let span = tracing::info_span!(
            "command",
            machine = %job.machine_name(),
            command = %job.display(),
            pid = tracing::field::Empty,
            status = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        if observe.echo || observe.log.is_some() {
            observe.starting(&job.display());
        }
        // `respond`: the stage's streams become pipes here, watched once it starts.
        let responders = &job.stages[0].spec().responders;
        let responding = if responders.is_empty() || plan.detached {
            None
        } else if plan.stages.len() > 1 {
            return Err(Error::io(
                format!("cannot answer prompts in `{}`", job.display()),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "respond() works on a single command, not in a pipeline",
                ),
            ));
        } else {
            Some(crate::respond::prepare(
                &mut plan.stages[0],
                &job.machine_name(),
            )?)
        };
        let stderr_captured: Vec<bool> = plan
            .stages
            .iter()
            .map(|s| s.stderr == StderrPlan::Pipe)
            .collect();
        let here_strings: Vec<(usize, Arc<[u8]>)> = plan
            .stages
            .iter()
            .enumerate()
            .filter_map(|(i, stage)| match &stage.stdin {
                StdinPlan::Bytes(bytes) => Some((i, bytes.clone())),
                _ => None,
            })
            .collect();
        let shared_stderr = job.machine().is_some_and(|m| m.shares_stderr());
        let started = {
            let _entered = span.enter();
            tracing::debug!("starting");
            until(deadline, job.start(plan)).await
        };
        let Some(running) = started else {
            observe.ended("timed out before it started", began.elapsed());
            return Err(job.timed_out());
        };
        let mut running = match running {
            Ok(running) => running,
            Err(error) => {
                let outcome = format_args!("not started: {}", FirstLine(&error));
                observe.ended(outcome, began.elapsed());
                return Err(error);
            }
        };
        if let Some(pid) = running.logged_pid() {
            span.record("pid", pid);
        }
        if let Some(prepared) = &responding {
            running = crate::respond::wrap(running, &job.stages[0].spec().responders, prepared)?;
        }
        let mut feeds = Vec::new();
        for (i, bytes) in here_strings {
            if let Some(pipe) = running.take_stdin(i) {
                feeds.push(tokio::spawn(feed(pipe, bytes)).abort_handle());
            }
        }
        let stderr = (0..job.stages.len())
            .map(|i| match running.take_stderr(i) {
                Some(pipe) => StageStderr::Pipe(pipe),
                None => StageStderr::Elsewhere,
            })
            .collect();
        Ok(Started {
            shared_stderr,
            job,
            running,
            deadline,
            stderr,
            stderr_captured,
            feeds,
            cancel: CancelOnDrop::default(),
            statuses: None,
            observe,
            diverted_stderr,
            diverted_stdout,
            span,
            began,
        })
    }

    /// Records how the job ended in its span and its log; `outcome` is rendered only for
    /// a span someone listens to, or a log.
    fn ended(&self, outcome: impl fmt::Display) {
        let took = self.began.elapsed();
        // A remote pid is known once the remote shell reported it, after the start.
        if let Some(pid) = self.running.logged_pid() {
            self.span.record("pid", pid);
        }
        self.span
            .record("status", tracing::field::display(&outcome));
        self.span.record("duration_ms", took.as_millis() as u64);
        self.observe.ended(outcome, took);
    }

    /// Where the bytes read from the last stage's stdout go besides the call, as read.
    pub(crate) fn stdout_sink(&self) -> Option<Sink> {
        self.observe.sink(Stream::Stdout, self.diverted_stdout)
    }

    pub(crate) fn job(&self) -> &Job {
        &self.job
    }

    /// The first stage's process id, where the machine has one.
    pub(crate) fn id(&self) -> Option<u32> {
        self.running.id()
    }

    pub(crate) fn signal(&mut self, signal: Signal) -> Result<()> {
        self.running.signal(signal)
    }

    /// The statuses, once every stage has ended.
    pub(crate) fn statuses(&self) -> Option<&[ExitStatus]> {
        self.statuses.as_deref()
    }

    /// The pipe into stage `stage`'s stdin, when it has one and no here-string took it.
    pub(crate) fn take_stdin(&mut self, stage: usize) -> Option<BoxWrite> {
        self.running.take_stdin(stage)
    }

    /// The pipe from the last stage's stdout, when it leads here.
    pub(crate) fn take_stdout(&mut self) -> Option<ReadEnd> {
        self.running.take_stdout()
    }

    /// Set when the call ends early: a blocking read of this job's pipe
    /// ([`ReadEnd::read_to_end`]) should stop.
    pub(crate) fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.0.clone()
    }

    /// Hands stage `stage`'s stderr pipe to the caller; it is then not kept for errors.
    pub(crate) fn give_stderr(&mut self, stage: usize) -> Option<ReadEnd> {
        let slot = self.stderr.get_mut(stage)?;
        match std::mem::replace(slot, StageStderr::Elsewhere) {
            StageStderr::Pipe(pipe) => {
                self.stderr_captured[stage] = false;
                Some(pipe)
            }
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Drains every stderr pipe not handed out, each in a task of its own, keeping all
    /// of it or (`keep_tail`) its last [`TAIL_BYTES`].
    ///
    /// # Errors
    /// [`Error::Io`] when a pipe cannot be registered with the runtime.
    pub(crate) fn drain_stderr(&mut self, keep_tail: bool) -> Result<()> {
        for (stage, slot) in self.stderr.iter_mut().enumerate() {
            if let StageStderr::Pipe(_) = slot {
                let StageStderr::Pipe(pipe) = std::mem::replace(slot, StageStderr::Elsewhere)
                else {
                    unreachable!("matched just above")
                };
                let pipe = pipe.into_async().map_err(pipe_error)?;
                let diverted = self.diverted_stderr.get(stage).copied().unwrap_or(false);
                let sink = self.observe.sink(Stream::Stderr, diverted);
                *slot = StageStderr::Draining(tokio::spawn(drain(pipe, keep_tail, sink)));
            }
        }
        Ok(())
    }

    /// The stderr pipes not handed out, with their stage, for a caller that reads them
    /// itself and reports what it read with [`keep_stderr`](Started::keep_stderr).
    ///
    /// # Errors
    /// [`Error::Io`] when a pipe cannot be registered with the runtime.
    pub(crate) fn read_stderr(&mut self) -> Result<Vec<(usize, BoxRead)>> {
        let mut pipes = Vec::new();
        for (stage, slot) in self.stderr.iter_mut().enumerate() {
            if let StageStderr::Pipe(_) = slot {
                let StageStderr::Pipe(pipe) =
                    std::mem::replace(slot, StageStderr::Kept(Vec::new()))
                else {
                    unreachable!("matched just above")
                };
                pipes.push((stage, pipe.into_async().map_err(pipe_error)?));
            }
        }
        Ok(pipes)
    }

    /// Adds `bytes`, read from stage `stage`'s stderr, to its kept tail.
    pub(crate) fn keep_stderr(&mut self, stage: usize, bytes: &[u8]) {
        if let Some(StageStderr::Kept(kept)) = self.stderr.get_mut(stage) {
            kept.extend_from_slice(bytes);
            if kept.len() > 2 * TAIL_BYTES {
                kept.drain(..kept.len() - TAIL_BYTES);
            }
        }
    }

    /// Every stage's kept stderr, in stage order (taken: later errors show none).
    pub(crate) fn take_stderr_kept(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        for slot in &mut self.stderr {
            if let StageStderr::Kept(kept) = slot {
                all.append(kept);
            }
        }
        all
    }

    /// Runs `work` (the caller's read of the job's output) until the deadline; past it,
    /// kills the job and returns [`Error::Timeout`].
    pub(crate) async fn within<T>(&mut self, work: impl Future<Output = T>) -> Result<T> {
        match until(self.deadline, work).await {
            Some(done) => Ok(done),
            None => Err(self.stop().await),
        }
    }

    /// Waits, within the deadline, for every stage to end, every stderr drain to finish,
    /// and `stdout` (the caller's read of the stdout pipe, if any), all at once: a child
    /// blocked writing one pipe while we wait on another would never end. Returns the
    /// statuses, unchecked; called again, the same statuses.
    ///
    /// # Errors
    /// [`Error::Timeout`] past the deadline (the job is killed); the machine's wait
    /// errors; [`Error::Io`] when reading a pipe fails.
    pub(crate) async fn finish(
        &mut self,
        stdout: impl Future<Output = io::Result<()>>,
    ) -> Result<Vec<ExitStatus>> {
        if let Some(statuses) = &self.statuses {
            return Ok(statuses.clone());
        }
        let Started {
            job,
            running,
            stderr,
            deadline,
            ..
        } = self;
        let work = async {
            let kept = async {
                for slot in stderr.iter_mut() {
                    if let StageStderr::Draining(task) = slot {
                        let bytes = task.await.map_err(io::Error::other)??;
                        *slot = StageStderr::Kept(bytes);
                    }
                }
                Ok::<_, io::Error>(())
            };
            let (read, kept, statuses) = tokio::join!(stdout, kept, running.wait());
            let context = || format!("reading the output of `{}`", job.display());
            let statuses = statuses?;
            read.map_err(|e| Error::io(context(), e))?;
            kept.map_err(|e| Error::io(context(), e))?;
            Ok::<_, Error>(statuses)
        };
        let done = until(*deadline, work).await;
        match done {
            Some(statuses) => {
                let statuses = match statuses {
                    Ok(statuses) => statuses,
                    Err(error) => {
                        self.ended(FirstLine(&error));
                        return Err(error);
                    }
                };
                self.ended(self.job.status_of(&statuses));
                self.statuses = Some(statuses.clone());
                Ok(statuses)
            }
            None => Err(self.stop().await),
        }
    }

    /// Kills everything the job started, stops its drains and here-string writers, and
    /// waits at most [`STOP_WAIT`] for the reap; the [`Error::Timeout`] to return.
    async fn stop(&mut self) -> Error {
        // The killed stages' pipes end, but a grandchild that left the group could hold
        // one open: don't leave its drain behind.
        self.abort_tasks();
        if let Err(error) = self.running.signal(Signal::KILL) {
            tracing::debug!(%error, "killing a timed-out command failed");
        }
        if let Ok(Ok(statuses)) = tokio::time::timeout(STOP_WAIT, self.running.wait()).await {
            self.statuses = Some(statuses);
        }
        self.ended("timed out");
        self.job.timed_out()
    }

    fn abort_tasks(&mut self) {
        self.cancel.0.store(true, Ordering::Relaxed);
        for feed in &self.feeds {
            feed.abort();
        }
        for slot in &mut self.stderr {
            if let StageStderr::Draining(task) = slot {
                task.abort();
                *slot = StageStderr::Kept(Vec::new());
            }
        }
    }

    /// `Err(Error::Exit)` naming the first stage that failed, with its own stderr tail
    /// (or the shared stream's) and, when it is the last stage, the tail of `stdout`.
    pub(crate) fn check(&self, statuses: &[ExitStatus], stdout: &[u8]) -> Result<()> {
        let job = &self.job;
        let Some((index, status)) = statuses
            .iter()
            .enumerate()
            .find(|(i, status)| !job.stage_ok(*i, **status))
        else {
            return Ok(());
        };
        let kept = |slot: &StageStderr| match slot {
            StageStderr::Kept(kept) => tail(kept),
            _ => Vec::new(),
        };
        let (stderr, stderr_captured) = if self.shared_stderr {
            let all: Vec<u8> = self.stderr.iter().flat_map(kept).collect();
            (tail(&all), self.stderr_captured.iter().any(|c| *c))
        } else {
            (
                self.stderr.get(index).map_or_else(Vec::new, kept),
                self.stderr_captured.get(index).copied().unwrap_or(false),
            )
        };
        let count = job.stages.len();
        Err(Error::Exit(Box::new(ExitError {
            command: job.display(),
            stage: (count > 1).then(|| (index, count, job.stages[index].display_line())),
            machine: job.machine_name(),
            status: *status,
            stdout: if index + 1 == count {
                tail(stdout)
            } else {
                Vec::new()
            },
            stderr,
            stderr_captured,
        })))
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.statuses.is_none() {
            self.abort_tasks();
        }
    }
}

/// The first line of an error's text, for a log line or a span field.
struct FirstLine<'a>(&'a Error);

impl fmt::Display for FirstLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        f.write_str(text.lines().next().unwrap_or_default())
    }
}

fn pipe_error(error: io::Error) -> Error {
    Error::io("setting up a pipe", error)
}

/// Stops a blocking drain when a call ends early (timeout, or the caller dropped it).
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` until `deadline`, if there is one; `None` when the deadline came first.
async fn until<T>(deadline: Option<Instant>, work: impl Future<Output = T>) -> Option<T> {
    match deadline {
        None => Some(work.await),
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
    }
}

/// Runs a job to its end in `mode`: stdout (when it leads here) read on a blocking thread
/// where the machine hands over an OS pipe, being the bulk of what comes back; stderr,
/// usually small, by async tasks, which keeps a chatty stderr's memory bounded to its tail.
/// Returns the job with the statuses and stdout, not checked.
async fn collect(job: Job, mode: Mode) -> Result<(Started, Vec<ExitStatus>, Vec<u8>)> {
    let mut started = Started::start(job, mode).await?;
    let sink = started.stdout_sink();
    let stdout = started.take_stdout();
    started.drain_stderr(mode != Mode::Output)?;
    let mut bytes = Vec::new();
    let statuses = match (stdout, sink) {
        (None, _) => started.finish(async { Ok(()) }).await?,
        (Some(end), None) => {
            let task = end.read_to_end(started.cancel_flag());
            started
                .finish(async {
                    bytes = task.await.map_err(io::Error::other)??;
                    Ok(())
                })
                .await?
        }
        // Read here as it comes, to be shown or logged live: only what the call returns
        // is kept whole (output meant for this process's stdout: its tail, for errors).
        (Some(end), Some(sink)) => {
            let pipe = end.into_async().map_err(pipe_error)?;
            let keep_tail = started.diverted_stdout;
            started
                .finish(async {
                    bytes = drain(pipe, keep_tail, Some(sink)).await?;
                    Ok(())
                })
                .await?
        }
    };
    Ok((started, statuses, bytes))
}

/// Diverts to this process the streams `observe` wants to see that the plan leaves
/// inherited: the last stage's stdout and every stage's stderr, then read by the call and
/// written on (prefixed, logged). Under a prefix (a fleet's host) an inherited stdin
/// becomes `/dev/null`: many hosts cannot share one terminal's input. Returns whether the
/// stdout, and each stage's stderr, were diverted.
fn divert(plan: &mut Plan, observe: &Observe) -> (bool, Vec<bool>) {
    let count = plan.stages.len();
    if !observe.diverts_output() || plan.detached {
        return (false, vec![false; count]);
    }
    let mut stdout = false;
    let mut stderr = Vec::with_capacity(count);
    for (i, stage) in plan.stages.iter_mut().enumerate() {
        if i + 1 == count && stage.stdout == StdoutPlan::Inherit {
            stage.stdout = StdoutPlan::Pipe;
            stdout = true;
        }
        let inherited = stage.stderr == StderrPlan::Inherit;
        if inherited {
            stage.stderr = StderrPlan::Pipe;
        }
        stderr.push(inherited);
        if observe.prefix.is_some() && stage.stdin == StdinPlan::Inherit {
            stage.stdin = StdinPlan::Null;
        }
    }
    (stdout, stderr)
}

/// The calls: the one entry of the command model into running ([`Command`] and
/// [`Pipeline`](crate::Pipeline) build a `Job` and call one of these).
impl Job {
    pub(crate) async fn run(self) -> Result<()> {
        let (started, statuses, stdout) = collect(self, Mode::Run).await?;
        started.check(&statuses, &stdout)
    }

    pub(crate) async fn read_bytes(self) -> Result<Vec<u8>> {
        let (started, statuses, stdout) = collect(self, Mode::Read).await?;
        started.check(&statuses, &stdout)?;
        Ok(stdout)
    }

    pub(crate) async fn read(self) -> Result<String> {
        let (command, machine) = (self.display(), self.machine_name());
        let mut bytes = self.read_bytes().await?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        String::from_utf8(bytes).map_err(|invalid| Error::InvalidUtf8 {
            command,
            machine,
            valid_up_to: invalid.utf8_error().valid_up_to(),
        })
    }

    pub(crate) async fn output(self) -> Result<Output> {
        let (mut started, statuses, stdout) = collect(self, Mode::Output).await?;
        started.check(&statuses, &stdout)?;
        Ok(Output {
            status: started.job.status_of(&statuses),
            stdout,
            stderr: started.take_stderr_kept(),
            statuses,
        })
    }

    pub(crate) async fn status(self) -> Result<ExitStatus> {
        let (started, statuses, _) = collect(self, Mode::Quiet).await?;
        Ok(started.job.status_of(&statuses))
    }

    pub(crate) async fn success(self) -> Result<bool> {
        let (started, statuses, _) = collect(self, Mode::Quiet).await?;
        Ok(started.job.succeeded(&statuses))
    }

    pub(crate) async fn spawn(self) -> Result<Child> {
        Child::new(Started::start(self, Mode::Spawn).await?)
    }

    /// Starts the job to outlive this process and returns the pid that leads its session,
    /// once every stage has started (its program found and executed).
    pub(crate) async fn spawn_detached(self) -> Result<u32> {
        let mut started = Started::start(self, Mode::Detached).await?;
        // What started the stages (locally an intermediate process per stage, remotely the
        // shell of the channel) ends at once; waiting for it reaps it, or closes the channel.
        let statuses = started.finish(async { Ok(()) }).await?;
        started.check(&statuses, &[])?;
        started.running.detached_pid().ok_or_else(|| {
            Error::io(
                format!(
                    "cannot detach `{}` on {}",
                    started.job.display(),
                    started.job.machine_name()
                ),
                io::Error::other("the machine did not report the pid of what it started"),
            )
        })
    }

    pub(crate) fn lines(self) -> Lines {
        Lines::new(self)
    }
}
