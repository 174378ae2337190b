//! A pipeline started on an SSH machine: one session channel running one command line.
//!
//! Invariant: **no channel is ever left without a task draining it.** russh feeds every
//! channel of a connection from one loop through small per-channel queues, so one channel
//! nobody reads stalls all the others, new channel opens and keepalives included. The
//! [`pump`] task reads every message of its channel from the moment it is open until the
//! server closes it, whatever the caller does: it forwards stdout and stderr to the pipes
//! handed to `exec` (or to this process's own streams, or nowhere), strips the status
//! lines, and keeps the exit status.
//!
//! The pump hands the streams on through [`spill`](super::spill) pipes, which never make it
//! wait and keep memory bounded by spilling to a temp file.

use std::{
    ffi::OsString,
    io,
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use russh::{ChannelMsg, Pty, Sig, client::Msg};
use tokio::{
    io::AsyncWriteExt,
    sync::{oneshot, watch},
};

use super::{
    connection::Connection,
    remote_line::{self, DirProblem, Filter, Marker, Reports, StartFailure},
    spill::{SpillWriter, spill_pipe},
    sudo::{self as ssh_sudo, Halves, Shut},
};
use crate::{
    Error, ExitStatus, Result, Signal,
    machine::{BoxWrite, Line, Plan, ReadEnd, Running, StderrPlan, StdinPlan, StdoutPlan},
    sudo::{Gate, Runas, token},
};

/// The terminal modes of a pty while the header goes through it: no echo and no line
/// editing (the script restores both), so the marker is not echoed into the output and a
/// script line past the terminal's 4 KiB line limit is not cut short.
const QUIET_PTY: [(Pty, u32); 2] = [(Pty::ECHO, 0), (Pty::ICANON, 0)];

/// Where the pump sends one of the channel's two streams. Sending never waits (see
/// [`spill`](super::spill)), so the pump always keeps its channel drained.
enum Sink {
    Pipe(SpillWriter),
    /// Nobody: the stream was redirected on the remote side.
    Discard,
}

impl Sink {
    fn send(&self, bytes: Vec<u8>) {
        if let Sink::Pipe(pipe) = self {
            pipe.push(bytes);
        }
    }

    /// The stream was cut short: its reader gets an error, not a clean end of file.
    fn abort(self) {
        if let Sink::Pipe(pipe) = self {
            pipe.abort();
        }
    }

    /// A pipe to the caller.
    fn to_caller() -> (Sink, ReadEnd) {
        let (writer, reader) = spill_pipe();
        (Sink::Pipe(writer), ReadEnd::Async(Box::new(reader)))
    }

    /// This process's own stdout or stderr (`run()`), written by a task of its own: a slow
    /// terminal or pipe on our side must not hold up the pump.
    fn to_own<W>(mut own: W) -> Sink
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (writer, mut reader) = spill_pipe();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut reader, &mut own).await;
            let _ = own.flush().await;
        });
        Sink::Pipe(writer)
    }
}

/// A remote stdin that sends end of file when dropped, as closing a local pipe does
/// (russh's writer sends it only on `shutdown`, so a remote `cat` would wait for ever).
struct EofOnDrop {
    writer: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    /// A second writer of the same channel, to send the end of file from `Drop`.
    eof: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
}

impl tokio::io::AsyncWrite for EofOnDrop {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let done = self.writer.as_mut().poll_shutdown(cx);
        if done.is_ready() {
            self.eof = None;
        }
        done
    }
}

impl Drop for EofOnDrop {
    fn drop(&mut self) {
        // On leadpipe's runtime: a blocking script, or one whose runtime is ending, sends
        // the end of file too.
        if let Some(mut eof) = self.eof.take() {
            crate::lifecycle::cleanup(async move {
                let _ = eof.shutdown().await;
            });
        }
    }
}

/// What the pump learns that the caller needs while the pipeline runs.
struct Control {
    connection: Arc<Connection>,
    channel: russh::ChannelWriteHalf<Msg>,
    /// The remote shell's pid (leader of the pipeline's process group), once reported.
    pid: watch::Receiver<Option<u32>>,
    finished: OnceLock<()>,
    /// For a detached plan: the pid the line reported for what it started.
    detached: OnceLock<u32>,
    /// The line runs under sudo, on a pty or not: so must its kill.
    sudo: Option<(Runas, bool)>,
    /// Whether a signal was sent (a shell killed by it before its first report was killed
    /// by us, not from outside).
    signaled: AtomicBool,
}

impl Control {
    /// Signals the whole remote pipeline: a `signal` request on the channel (honoured for
    /// ordinary logins) and `kill -SIG -PGID` from a second channel (which also works
    /// where sshd refuses `signal`, e.g. for root).
    async fn signal(self: Arc<Self>, signal: Signal) {
        self.signaled.store(true, Ordering::Relaxed);
        if let Some(sig) = to_sig(signal) {
            let _ = self.channel.signal(sig).await;
        }
        let mut pid = self.pid.clone();
        let known =
            tokio::time::timeout(Duration::from_secs(10), pid.wait_for(Option::is_some)).await;
        let Some(pid) = known.ok().and_then(|p| p.ok().and_then(|p| *p)) else {
            return;
        };
        if self.finished.get().is_some() {
            return;
        }
        let Some(command) = remote_line::kill_line(pid, signal) else {
            return;
        };
        let Ok((channel, _permit)) = self.connection.open_session(true).await else {
            return;
        };
        let (mut read, write) = channel.split();
        // As the user the line runs as: the login's own `kill` cannot reach root's
        // processes. sudo reads the password only if it asks; a password never asked for
        // is not asked for now.
        let (command, password) = match &self.sudo {
            Some((runas, pty)) => {
                if *pty {
                    let _ = write
                        .request_pty(false, "xterm", 80, 24, 0, 0, &QUIET_PTY)
                        .await;
                }
                let command = ssh_sudo::kill_exec(&runas.user, &command);
                (command, runas.password.known())
            }
            None => (command, None),
        };
        if write.exec(false, command.into_bytes()).await.is_ok() {
            if let Some(password) = password {
                let mut line = password.expose().to_vec();
                line.push(b'\n');
                let _ = write.data(&line[..]).await;
            }
            let _ = write.eof().await;
            while read.wait().await.is_some() {}
        }
    }
}

fn to_sig(signal: Signal) -> Option<Sig> {
    Some(match signal {
        Signal::HUP => Sig::HUP,
        Signal::INT => Sig::INT,
        Signal::QUIT => Sig::QUIT,
        Signal::ABRT => Sig::ABRT,
        Signal::KILL => Sig::KILL,
        Signal::SEGV => Sig::SEGV,
        Signal::PIPE => Sig::PIPE,
        Signal::ALRM => Sig::ALRM,
        Signal::TERM => Sig::TERM,
        Signal::USR1 => Sig::USR1,
        _ => return None,
    })
}

fn from_sig(sig: &Sig) -> Signal {
    let name = format!("{sig:?}");
    let name = match sig {
        Sig::Custom(custom) => custom.as_str(),
        _ => name.as_str(),
    };
    Signal::from_name(name).unwrap_or(Signal::from_raw(0))
}

/// A started remote pipeline.
pub(crate) struct SshRunning {
    stdin: Option<BoxWrite>,
    stdout: Option<ReadEnd>,
    /// All stages share the channel's one stderr; it is handed out for the first stage that
    /// pipes stderr here.
    stderr: Option<(usize, ReadEnd)>,
    done: Option<oneshot::Receiver<Outcome>>,
    outcome: Option<Outcome>,
    control: Arc<Control>,
    /// What errors about a stage that could not start need to name.
    stages: Vec<StageNames>,
}

/// A stage's program, command line and directory, for start-failure errors.
struct StageNames {
    program: OsString,
    line: Line,
    cwd: Option<PathBuf>,
}

/// The pipeline's command lines, as errors show it.
fn pipeline_line(stages: &[StageNames]) -> String {
    let lines: Vec<&str> = stages.iter().map(|stage| stage.line.as_str()).collect();
    lines.join(" | ")
}

/// How the channel ended, kept so that `wait` can answer again.
type Outcome = std::result::Result<Vec<ExitStatus>, Failure>;

#[derive(Clone)]
enum Failure {
    /// The connection died before the server closed the channel.
    Lost,
    /// The line reported that (a stage of) the pipeline could not start.
    Start(StartFailure),
    /// The warm spare's shell ended before it read the line (killed from outside between
    /// the check of the spare and the header): nothing of the line ran.
    Gone,
}

/// Starts `plan` on a channel of `connection`; as another user through sudo when
/// `runas` says so.
pub(crate) async fn start(
    connection: Arc<Connection>,
    plan: Plan,
    runas: Option<&Runas>,
) -> Result<SshRunning> {
    let stages: Vec<StageNames> = plan
        .stages
        .iter()
        .map(|stage| StageNames {
            program: stage.process.program.clone(),
            line: stage.process.line.clone(),
            cwd: stage.process.cwd.clone(),
        })
        .collect();
    if let Err(reason) = remote_line::check(&plan) {
        return Err(Error::io(
            format!(
                "cannot start `{}` on {}",
                pipeline_line(&stages),
                connection.name
            ),
            io::Error::new(io::ErrorKind::InvalidInput, reason),
        ));
    }
    let mut pty = plan.stages.iter().any(|s| s.process.pty);
    // Under sudo, the channel arrives exec'd, read until sudo started the line's shell.
    let (channel, early) = match runas {
        Some(runas) => {
            let (channel, used_pty) = sudo_channel(&connection, runas, pty).await?;
            pty = used_pty;
            (channel, None)
        }
        // A warm spare has run the bootstrap already; a pty must be asked for before.
        None => {
            let (connection, opened) = connection.open_for_command(!pty).await?;
            let (read, write) = opened.channel.split();
            let channel = LineChannel {
                connection,
                read,
                write,
                slot: opened.slot,
            };
            (channel, opened.warm)
        }
    };
    let warm = early.is_some();
    let exec_sent = runas.is_some() || warm;
    let LineChannel {
        connection,
        read,
        write,
        slot: permit,
    } = channel;
    let marker = Marker::new();
    let (exec_string, ask_login) = match runas {
        // Under sudo the line's shell is always `/bin/sh`, and not the login's.
        Some(_) => (remote_line::BOOTSTRAP, false),
        None => connection.login_shell.exec_string(),
    };
    let header = remote_line::header(&plan, &marker, ask_login, runas.is_some());

    let last = plan.stages.len() - 1;
    let (stdout_sink, stdout) = match plan.stages[last].stdout {
        StdoutPlan::Pipe => {
            let (sink, end) = Sink::to_caller();
            (sink, Some(end))
        }
        StdoutPlan::Inherit => (Sink::to_own(tokio::io::stdout()), None),
        _ => (Sink::Discard, None),
    };
    let stderr_stage = plan
        .stages
        .iter()
        .position(|s| s.stderr == StderrPlan::Pipe);
    let (stderr_sink, stderr) = match stderr_stage {
        Some(stage) => {
            let (sink, end) = Sink::to_caller();
            (sink, Some((stage, end)))
        }
        None if plan.stages.iter().any(|s| s.stderr == StderrPlan::Inherit) => {
            (Sink::to_own(tokio::io::stderr()), None)
        }
        None => (Sink::Discard, None),
    };
    let (pid_sender, pid) = watch::channel(None);
    let control = Arc::new(Control {
        connection: connection.clone(),
        channel: write,
        pid,
        finished: OnceLock::new(),
        detached: OnceLock::new(),
        sudo: runas.map(|runas| (runas.clone(), pty)),
        signaled: AtomicBool::new(false),
    });
    let (done_sender, done) = oneshot::channel();
    let pump = Pump {
        pty,
        warm,
        detached: plan.detached,
        ask_login,
        stages: plan.stages.len(),
        filter: Filter::new(&marker),
        reports: Reports::new(plan.stages.len()),
        stdout: stdout_sink,
        stderr: stderr_sink,
        pid: pid_sender,
        control: control.clone(),
        _permit: permit,
    };
    // Listed while the channel is open, so that a signal or the exit hook kills it; not a
    // detached start, whose kill could reach what it starts.
    let kill = control.clone();
    let live = (!plan.detached).then(|| {
        crate::lifecycle::register(crate::lifecycle::Kind::Process, move || {
            Box::pin(kill.clone().signal(Signal::KILL))
        })
    });
    // The pump drains the channel from its first message on, whatever happens to this
    // future (a deadline may drop it at any await below); on leadpipe's runtime, so that
    // it outlives the caller's.
    crate::lifecycle::spawn(async move {
        let result = pump.run(early.unwrap_or_default(), read).await;
        drop(live);
        let _ = done_sender.send(result);
    });
    let mut unstarted = Unstarted {
        control: Some(control.clone()),
        exec_sent,
    };
    let write = &control.channel;
    if !exec_sent {
        if pty {
            write
                .request_pty(false, "xterm", 80, 24, 0, 0, &QUIET_PTY)
                .await
                .map_err(|_| connection.lost())?;
        }
        write
            .exec(true, exec_string)
            .await
            .map_err(|_| connection.lost())?;
        unstarted.exec_sent = true;
    }
    // The header goes first on stdin, the user's bytes after it. The pump is already
    // draining the channel, so a header larger than the window cannot stall it.
    write
        .data(&header[..])
        .await
        .map_err(|_| connection.lost())?;
    let stdin = if matches!(plan.stages[0].stdin, StdinPlan::Pipe | StdinPlan::Bytes(_)) {
        Some(Box::new(EofOnDrop {
            writer: Box::pin(write.make_writer()),
            eof: Some(Box::pin(write.make_writer())),
        }) as BoxWrite)
    } else {
        write.eof().await.map_err(|_| connection.lost())?;
        None
    };
    unstarted.control = None;
    Ok(SshRunning {
        stdin,
        stdout,
        stderr,
        done: Some(done),
        outcome: None,
        control,
        stages,
    })
}

/// A channel for a line, and the connection it is on (under sudo: sudo has started the
/// line's `/bin/sh` on it, waiting for its header).
struct LineChannel {
    /// The one of the machine's connections it is on.
    connection: Arc<Connection>,
    read: russh::ChannelReadHalf,
    write: russh::ChannelWriteHalf<Msg>,
    slot: super::slots::Slot,
}

/// A channel on which sudo has started the line's `/bin/sh` as `runas`'s user, waiting
/// for its header; and whether it has a pty (the plan asked for one, or sudo needs one).
///
/// Each attempt runs in a task of its own on leadpipe's runtime, so that a caller dropped
/// in the middle (a deadline, while sudo still asks) leaves no channel behind: the task
/// ends the channel itself when nobody takes it.
async fn sudo_channel(
    connection: &Arc<Connection>,
    runas: &Runas,
    mut pty: bool,
) -> Result<(LineChannel, bool)> {
    runas.checked_user(&connection.name)?;
    pty |= runas.needs_pty.load(Ordering::Relaxed);
    loop {
        let (sender, receiver) = oneshot::channel();
        let attempt = sudo_attempt(connection.clone(), runas.clone(), pty);
        crate::lifecycle::spawn(async move {
            if let Err(Ok(channel)) = sender.send(attempt.await) {
                end_channel(channel).await;
            }
        });
        match receiver.await {
            Ok(Ok(channel)) => return Ok((channel, pty)),
            Ok(Err((_, true))) if !pty => {
                runas.needs_pty.store(true, Ordering::Relaxed);
                pty = true;
            }
            Ok(Err((error, _))) => return Err(error),
            Err(_) => return Err(connection.lost()),
        }
    }
}

/// One start through sudo: the channel, its exec and the gate. The error says whether sudo
/// refused without a terminal (worth one more try with a pty).
async fn sudo_attempt(
    connection: Arc<Connection>,
    runas: Runas,
    pty: bool,
) -> std::result::Result<LineChannel, (Error, bool)> {
    let user = runas
        .checked_user(&connection.name)
        .map_err(|error| (error, false))?;
    let (connection, opened) =
        (connection.open_for_command(false).await).map_err(|e| (e, false))?;
    let (mut read, write) = opened.channel.split();
    let lost = || (connection.lost(), false);
    let mut gate = Gate::new(&token());
    if pty {
        (write
            .request_pty(false, "xterm", 80, 24, 0, 0, &QUIET_PTY)
            .await)
            .map_err(|_| lost())?;
    }
    let exec = ssh_sudo::line_exec(user, &gate, pty);
    write.exec(true, exec).await.map_err(|_| lost())?;
    let passed = ssh_sudo::pass_gate(
        &mut Halves(&mut read, &write),
        &mut gate,
        &runas,
        &connection.name,
        pty,
    )
    .await;
    let channel = LineChannel {
        connection: connection.clone(),
        read,
        write,
        slot: opened.slot,
    };
    match passed {
        Ok(_) => Ok(channel),
        Err(shut) => {
            crate::lifecycle::spawn(end_channel(channel));
            let no_terminal = matches!(shut, Shut::NoTerminal(_));
            Err((
                ssh_sudo::shut_error(shut, || connection.lost()),
                no_terminal,
            ))
        }
    }
}

/// Ends a channel whose line will not run: sudo (or the shell waiting for its header)
/// sees end of file, and the channel is drained until the server closes it.
async fn end_channel(mut channel: LineChannel) {
    let _ = channel.write.eof().await;
    let _ = channel.write.close().await;
    while channel.read.wait().await.is_some() {}
    drop(channel.slot);
}

/// A start that did not finish (an error, or its future dropped by a deadline): the
/// channel is ended from here, so neither it nor a remote shell waiting for its header is
/// left behind. An end of file makes that shell's `read` fail and exit; a channel that never
/// got its exec is closed.
struct Unstarted {
    control: Option<Arc<Control>>,
    exec_sent: bool,
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        let Some(control) = self.control.take() else {
            return;
        };
        let exec_sent = self.exec_sent;
        // On leadpipe's runtime, as every clean-up (see `lifecycle`).
        crate::lifecycle::cleanup(async move {
            let _ = control.channel.eof().await;
            if !exec_sent {
                let _ = control.channel.close().await;
            }
        });
    }
}

struct Pump {
    /// With a pty, stderr (and so the reports) arrives in the stdout data.
    pty: bool,
    /// The line went to a warm spare's shell (see `connection::Opened::warm`).
    warm: bool,
    /// The line was asked to report the login shell, and has not yet.
    ask_login: bool,
    /// The line starts the stages in the background and exits: its status stands for all.
    detached: bool,
    stages: usize,
    filter: Filter,
    reports: Reports,
    stdout: Sink,
    stderr: Sink,
    pid: watch::Sender<Option<u32>>,
    control: Arc<Control>,
    /// The channel's slot, given back when the server has closed it.
    _permit: super::slots::Slot,
}

impl Pump {
    /// Drains the channel: the messages a warm spare had received first (`early`), then
    /// `read` until the server closes it.
    async fn run(mut self, early: Vec<ChannelMsg>, mut read: russh::ChannelReadHalf) -> Outcome {
        let mut exit = None;
        let mut closed = false;
        let mut user = Vec::new();
        let mut early = early.into_iter();
        loop {
            let message = match early.next() {
                Some(message) => message,
                None => match read.wait().await {
                    Some(message) => message,
                    None => break,
                },
            };
            match message {
                ChannelMsg::Data { data } if !self.pty => self.stdout.send(data.to_vec()),
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, ext: 1 } => {
                    self.filter.feed(&data, &mut user, &mut self.reports);
                    if self.pid.borrow().is_none() && self.reports.pid().is_some() {
                        let _ = self.pid.send(self.reports.pid());
                    }
                    if let Some(pid) = self.reports.detached() {
                        let _ = self.control.detached.set(pid);
                    }
                    if self.ask_login
                        && let Some(login) = self.reports.login()
                    {
                        self.control.connection.login_shell.learn(login);
                        self.ask_login = false;
                    }
                    let user = std::mem::take(&mut user);
                    if self.pty {
                        self.stdout.send(user);
                    } else {
                        self.stderr.send(user);
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    exit = Some(ExitStatus::Code(exit_status as i32));
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    exit = Some(ExitStatus::Signal(from_sig(&signal_name)));
                }
                ChannelMsg::Eof => {}
                ChannelMsg::Close => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        let _ = self.control.finished.set(());
        let mut rest = Vec::new();
        self.filter.finish(&mut rest);
        if self.pty {
            self.stdout.send(rest);
        } else {
            self.stderr.send(rest);
        }
        if !closed && exit.is_none() {
            // A truncated stream must never pass for a whole one.
            self.stdout.abort();
            self.stderr.abort();
            return Err(Failure::Lost);
        }
        // The pid report comes before anything of the line runs; a signal of ours may
        // have come first.
        let signaled = self.control.signaled.load(Ordering::Relaxed);
        if self.warm && self.reports.pid().is_none() && !signaled {
            return Err(Failure::Gone);
        }
        if let Some(failure) = self.reports.failure() {
            return Err(Failure::Start(failure.clone()));
        }
        let exit = exit.unwrap_or(ExitStatus::Signal(Signal::KILL));
        if self.stages == 1 || self.detached {
            return Ok(vec![exit; self.stages]);
        }
        // A stage with no status report was killed before it could report: with the shell.
        let fallback = match exit {
            ExitStatus::Signal(signal) => ExitStatus::Signal(signal),
            _ => ExitStatus::Signal(Signal::KILL),
        };
        Ok((0..self.stages)
            .map(|stage| {
                self.reports
                    .status(stage)
                    .map_or(fallback, remote_line::shell_status)
            })
            .collect())
    }
}

impl SshRunning {
    /// The error for a stage that could not start.
    fn start_error(&self, failure: &StartFailure) -> Error {
        let machine = self.control.connection.name.clone();
        let names = |stage: usize| &self.stages[stage.min(self.stages.len() - 1)];
        match failure {
            StartFailure::Missing { stage, path } => Error::CommandNotFound {
                program: names(*stage).program.to_string_lossy().into_owned(),
                machine,
                searched: String::from_utf8_lossy(path).into_owned(),
            },
            StartFailure::NotExecutable { stage } => Error::NotExecutable {
                program: names(*stage).program.to_string_lossy().into_owned(),
                machine,
            },
            StartFailure::NoDirectory { stage, problem } => {
                let stage = names(stage.unwrap_or(0));
                let dir = stage
                    .cwd
                    .as_deref()
                    .map(|dir| dir.display().to_string())
                    .unwrap_or_default();
                let (what, kind) = match problem {
                    DirProblem::Missing => (format!("no directory {dir}"), io::ErrorKind::NotFound),
                    DirProblem::NotADirectory => (
                        format!("{dir} is not a directory"),
                        io::ErrorKind::NotADirectory,
                    ),
                    DirProblem::Denied => (
                        format!("cannot enter directory {dir}"),
                        io::ErrorKind::PermissionDenied,
                    ),
                };
                Error::io(
                    format!("cannot start `{}` on {machine}: {what}", stage.line),
                    io::Error::from(kind),
                )
            }
        }
    }
}

impl Running for SshRunning {
    fn take_stdin(&mut self, stage: usize) -> Option<BoxWrite> {
        if stage == 0 { self.stdin.take() } else { None }
    }

    fn take_stdout(&mut self) -> Option<ReadEnd> {
        self.stdout.take()
    }

    fn take_stderr(&mut self, stage: usize) -> Option<ReadEnd> {
        match &self.stderr {
            Some((owner, _)) if *owner == stage => self.stderr.take().map(|(_, end)| end),
            _ => None,
        }
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<Vec<ExitStatus>>> {
        Box::pin(async move {
            if let Some(done) = &mut self.done {
                // Cancel-safe: the receiver stays in place until it has answered.
                self.outcome = Some(done.await.unwrap_or(Err(Failure::Lost)));
                self.done = None;
            }
            match self.outcome.clone().unwrap_or(Err(Failure::Lost)) {
                Ok(statuses) => Ok(statuses),
                Err(Failure::Lost) => Err(self.control.connection.lost()),
                Err(Failure::Start(failure)) => Err(self.start_error(&failure)),
                Err(Failure::Gone) => Err(Error::io(
                    format!(
                        "cannot start `{}` on {}: the remote shell that was to run it ended \
                         first (was it killed?); nothing of it ran",
                        pipeline_line(&self.stages),
                        self.control.connection.name
                    ),
                    io::Error::from(io::ErrorKind::BrokenPipe),
                )),
            }
        })
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.control.finished.get().is_none() {
            crate::lifecycle::spawn(self.control.clone().signal(signal));
        }
        Ok(())
    }

    fn id(&self) -> Option<u32> {
        None
    }

    fn logged_pid(&self) -> Option<u32> {
        *self.control.pid.borrow()
    }

    fn detached_pid(&self) -> Option<u32> {
        self.control.detached.get().copied()
    }
}

impl Drop for SshRunning {
    fn drop(&mut self) {
        // Dropped before the server closed the channel (timeout, dropped Child): kill the
        // remote pipeline. The pump keeps draining until the close comes. On leadpipe's
        // runtime: from a blocking script, or while the caller's runtime ends, too.
        if self.control.finished.get().is_none() {
            crate::lifecycle::cleanup(self.control.clone().signal(Signal::KILL));
        }
    }
}
