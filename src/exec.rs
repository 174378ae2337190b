//! Running commands and pipelines: the part of every call that is the same on every
//! machine.
//!
//! Each call (`run`, `read`, `output`, ...) picks the defaults for the streams a command
//! did not set ([`Mode`]), turns the job into a [`Plan`], has the machine start it, and then
//! feeds here-strings, drains every pipe that leads here *at the same time* (a child
//! blocked writing stderr while we wait for its stdout is the classic deadlock), enforces
//! the timeout, and checks each stage's status.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    Child, Command, Error, ExitStatus, Input, Lines, Output, Redirect, Result, Signal,
    command::Stderr,
    error::{ExitError, TAIL_BYTES},
    machine::{
        BoxRead, MachineRef, Plan, ReadEnd, Running, StagePlan, StderrPlan, StdinPlan, StdoutPlan,
    },
};

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
}

impl Job {
    pub(crate) fn new(stages: Vec<Command>, timeout: Option<Duration>) -> Job {
        Job { stages, timeout }
    }

    pub(crate) fn stages(&self) -> &[Command] {
        &self.stages
    }

    /// The command line of the whole job.
    pub(crate) fn display(&self) -> String {
        let lines: Vec<String> = self.stages.iter().map(Command::display_line).collect();
        lines.join(" | ")
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
                    Some(Input::Bytes(_)) => StdinPlan::Pipe,
                    None if i > 0 => StdinPlan::Previous,
                    None => match mode {
                        Mode::Run => StdinPlan::Inherit,
                        Mode::Spawn => StdinPlan::Pipe,
                        Mode::Read | Mode::Output | Mode::Quiet | Mode::Lines => StdinPlan::Null,
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
                        Mode::Quiet => StdoutPlan::Null,
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
                        Mode::Quiet => StderrPlan::Null,
                        Mode::Read | Mode::Output | Mode::Spawn | Mode::Lines => StderrPlan::Pipe,
                    },
                };
                StagePlan {
                    command: command.clone(),
                    stdin,
                    stdout,
                    stderr,
                }
            })
            .collect();
        Plan { stages }
    }

    /// Starts the job on its machine, with here-strings already being fed.
    pub(crate) async fn start(&self, plan: Plan) -> Result<Box<dyn Running>> {
        // Both fields are built only when the event is enabled: not on every start.
        tracing::debug!(machine = self.machine_name(), command = %self.display(), "starting");
        let mut running = match self.machine() {
            Some(machine) => machine.start(plan).await?,
            None => crate::mixed::start(plan).await?,
        };
        for (i, command) in self.stages.iter().enumerate() {
            if let Some(Input::Bytes(bytes)) = &command.spec().stdin
                && let Some(pipe) = running.take_stdin(i)
            {
                tokio::spawn(feed(pipe, bytes.clone()));
            }
        }
        Ok(running)
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

    /// bash's `pipefail` status: the last stage that failed, else the last stage's.
    pub(crate) fn status_of(&self, statuses: &[ExitStatus]) -> ExitStatus {
        statuses
            .iter()
            .enumerate()
            .rev()
            .find(|(i, status)| !self.stage_ok(*i, **status))
            .map_or(statuses[statuses.len() - 1], |(_, status)| *status)
    }

    pub(crate) fn succeeded(&self, statuses: &[ExitStatus]) -> bool {
        statuses
            .iter()
            .enumerate()
            .all(|(i, status)| self.stage_ok(i, *status))
    }

    /// `Err(Error::Exit)` naming the first stage that failed, with its own output tails.
    pub(crate) fn check(&self, statuses: &[ExitStatus], output: &Captured) -> Result<()> {
        let Some((index, status)) = statuses
            .iter()
            .enumerate()
            .find(|(i, status)| !self.stage_ok(*i, **status))
        else {
            return Ok(());
        };
        let count = self.stages.len();
        let stdout = if index + 1 == count {
            tail(&output.stdout)
        } else {
            Vec::new()
        };
        let (stderr, stderr_captured) = if output.shared_stderr {
            (
                tail(&output.stderr.concat()),
                output.stderr_captured.iter().any(|c| *c),
            )
        } else {
            let stderr = output.stderr.get(index).map_or_else(Vec::new, |s| tail(s));
            (
                stderr,
                output.stderr_captured.get(index).copied().unwrap_or(false),
            )
        };
        Err(Error::Exit(Box::new(ExitError {
            command: self.display(),
            stage: (count > 1).then(|| (index, count, self.stages[index].display_line())),
            machine: self.machine_name(),
            status: *status,
            stdout,
            stderr,
            stderr_captured,
        })))
    }

    pub(crate) fn timed_out(&self) -> Error {
        Error::Timeout {
            command: self.display(),
            machine: self.machine_name(),
            timeout: self.timeout().unwrap_or_default(),
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.timeout().map(|limit| Instant::now() + limit)
    }
}

/// Writes a here-string into a stage's stdin and closes it. A stage that exits without
/// reading all of it (`head -c1 <<< ...`) makes the write fail with EPIPE: that is the
/// stage's choice, not an error.
async fn feed(mut pipe: crate::machine::BoxWrite, bytes: Arc<[u8]>) {
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

/// What the pipes that led here carried.
#[derive(Default)]
pub(crate) struct Captured {
    pub(crate) stdout: Vec<u8>,
    /// Per stage: everything, or only the tail, as the mode wants.
    pub(crate) stderr: Vec<Vec<u8>>,
    /// Per stage: whether its stderr came here at all.
    pub(crate) stderr_captured: Vec<bool>,
    /// Every stage wrote one stream, found at one stage (see `Running::shared_stderr`).
    pub(crate) shared_stderr: bool,
}

/// The last [`TAIL_BYTES`] of `bytes`.
pub(crate) fn tail(bytes: &[u8]) -> Vec<u8> {
    bytes[bytes.len().saturating_sub(TAIL_BYTES)..].to_vec()
}

/// Reads a pipe to its end; with `keep_tail`, only the last [`TAIL_BYTES`] are kept, so a
/// chatty stderr costs bounded memory.
pub(crate) async fn drain(mut pipe: BoxRead, keep_tail: bool) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
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

/// Runs a job to its end in `mode`, draining every pipe that leads here concurrently, and
/// returns the statuses with what was captured. Not checked.
async fn collect(job: &Job, mode: Mode) -> Result<(Vec<ExitStatus>, Captured)> {
    let deadline = job.deadline();
    let plan = job.plan(mode);
    let stderr_captured: Vec<bool> = plan
        .stages
        .iter()
        .map(|s| s.stderr == StderrPlan::Pipe)
        .collect();
    // The deadline covers starting too: a remote start waits for a channel, which may
    // never come from a server that stopped answering or has no free slot.
    let Some(started) = until(deadline, job.start(plan)).await else {
        return Err(job.timed_out());
    };
    let mut running = started?;
    let shared_stderr = running.shared_stderr();
    // Stdout is the bulk of what comes back: drained on a blocking thread where the
    // machine hands over an OS pipe. Stderr, usually small, is read by async tasks, which
    // also keeps a chatty stderr's memory bounded to its tail.
    let cancel = CancelOnDrop::default();
    let stdout = running
        .take_stdout()
        .map(|end| end.read_to_end(cancel.0.clone()));
    let keep_tail = mode != Mode::Output;
    let mut stderr = Vec::with_capacity(job.stages.len());
    for stage in 0..job.stages.len() {
        let end = running
            .take_stderr(stage)
            .map(ReadEnd::into_async)
            .transpose();
        let end = end.map_err(|e| Error::io("reading stderr", e))?;
        stderr.push(end.map(|pipe| tokio::spawn(drain(pipe, keep_tail))));
    }
    let drains: Vec<_> = stderr.iter().flatten().map(|t| t.abort_handle()).collect();
    let work = async {
        let stdout = joined(stdout);
        let stderr = futures::future::try_join_all(stderr.into_iter().map(joined));
        let (stdout, stderr, statuses) = tokio::join!(stdout, stderr, running.wait());
        let context = || format!("reading the output of `{}`", job.display());
        Ok::<_, Error>((
            statuses?,
            Captured {
                stdout: stdout.map_err(|e| Error::io(context(), e))?,
                stderr: stderr.map_err(|e| Error::io(context(), e))?,
                stderr_captured,
                shared_stderr,
            },
        ))
    };
    match until(deadline, work).await {
        Some(done) => done,
        None => {
            // The killed stages' pipes end, but a grandchild that left the group could
            // hold one open: don't leave its drain behind.
            drains.iter().for_each(tokio::task::AbortHandle::abort);
            drop(cancel);
            stop(running.as_mut()).await;
            Err(job.timed_out())
        }
    }
}

/// Stops a blocking drain when a call ends early (timeout, or the caller dropped it).
#[derive(Default)]
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The bytes a drain task read; nothing when there was no pipe.
async fn joined(drain: Option<JoinHandle<std::io::Result<Vec<u8>>>>) -> std::io::Result<Vec<u8>> {
    match drain {
        Some(task) => task.await.map_err(std::io::Error::other)?,
        None => Ok(Vec::new()),
    }
}

/// Runs `work` until `deadline`, if there is one; `None` when the deadline came first.
pub(crate) async fn until<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = T>,
) -> Option<T> {
    match deadline {
        None => Some(work.await),
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
    }
}

/// Kills everything a job started and reaps it. The wait is bounded: locally the reap is
/// immediate, but a remote kill needs the server, which may be the reason for the
/// timeout; the machine finishes the kill in the background.
pub(crate) async fn stop(running: &mut dyn Running) {
    if let Err(error) = running.signal(Signal::KILL) {
        tracing::debug!(%error, "killing a timed-out command failed");
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), running.wait()).await;
}

pub(crate) async fn run(job: Job) -> Result<()> {
    let (statuses, captured) = collect(&job, Mode::Run).await?;
    job.check(&statuses, &captured)
}

pub(crate) async fn read_bytes(job: Job) -> Result<Vec<u8>> {
    let (statuses, captured) = collect(&job, Mode::Read).await?;
    job.check(&statuses, &captured)?;
    Ok(captured.stdout)
}

pub(crate) async fn read(job: Job) -> Result<String> {
    let mut bytes = read_bytes(job.clone()).await?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|invalid| Error::InvalidUtf8 {
        command: job.display(),
        machine: job.machine_name(),
        valid_up_to: invalid.utf8_error().valid_up_to(),
    })
}

pub(crate) async fn output(job: Job) -> Result<Output> {
    let (statuses, captured) = collect(&job, Mode::Output).await?;
    job.check(&statuses, &captured)?;
    Ok(Output {
        status: job.status_of(&statuses),
        stdout: captured.stdout,
        stderr: captured.stderr.concat(),
        statuses,
    })
}

pub(crate) async fn status(job: Job) -> Result<ExitStatus> {
    let (statuses, _) = collect(&job, Mode::Quiet).await?;
    Ok(job.status_of(&statuses))
}

pub(crate) async fn success(job: Job) -> Result<bool> {
    let (statuses, _) = collect(&job, Mode::Quiet).await?;
    Ok(job.succeeded(&statuses))
}

pub(crate) async fn spawn(job: Job) -> Result<Child> {
    let deadline = job.deadline();
    let Some(started) = until(deadline, job.start(job.plan(Mode::Spawn))).await else {
        return Err(job.timed_out());
    };
    Child::new(job, started?, deadline)
}

pub(crate) fn lines(job: Job) -> Lines {
    Lines::new(job)
}
