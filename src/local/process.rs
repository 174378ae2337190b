//! The local process backend: a plan's processes on this machine, started without a shell.
//!
//! A pipeline's stages are spawned directly (no `sh -c`), connected by OS pipes that this
//! process never reads, and put in one new process group so that a timeout, `kill()` or a
//! dropped `Child` can stop every stage and everything the stages started with one
//! `killpg`. Hazards handled here, each next to the code that defends against it:
//! pipe ends leaking into other children, a program missing in stage three while stages
//! one and two already run, signalling a process group id the kernel has reused, and
//! terminal job control.

use std::{
    ffi::{OsStr, OsString},
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    process::Stdio,
};

use futures::future::BoxFuture;
use tokio::net::unix::pipe;

use crate::{
    Error, ExitStatus, Result, Signal,
    lifecycle::{Kind, Registration},
    machine::{
        Backend, BoxWrite, Plan, Process, ReadEnd, Running, StagePlan, StderrPlan, StdinPlan,
        StdoutPlan,
    },
};

/// The backend every `LocalMachine` shares.
pub(crate) struct LocalBackend;

impl Backend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn start(&self, plan: Plan) -> BoxFuture<'_, Result<Box<dyn Running>>> {
        // Spawning does not block; the future only exists to share the interface (and to
        // be inside the runtime, which the pipes below register with).
        Box::pin(async move { start(plan).map(|running| Box::new(running) as Box<dyn Running>) })
    }
}

/// Where `program` is found on `path` (else this process's `PATH`), relative paths taken
/// in `cwd` (else this process's directory).
pub(super) fn which(program: &OsStr, path: Option<&OsStr>, cwd: Option<&Path>) -> Result<PathBuf> {
    let searched: OsString = path
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let not_found = || Error::CommandNotFound {
        program: program.to_string_lossy().into_owned(),
        machine: "local".to_owned(),
        searched: searched.to_string_lossy().into_owned(),
    };
    if program.is_empty() {
        return Err(not_found());
    }
    if let Some(found) = path_cache::lookup(&searched, program) {
        return Ok(found);
    }
    let base = match cwd {
        Some(dir) if dir.is_absolute() => dir.to_path_buf(),
        _ => std::env::current_dir()
            .map_err(|e| Error::io("cannot read the current directory", e))?
            .join(cwd.unwrap_or(Path::new(""))),
    };
    match which::which_in(program, Some(&searched), &base) {
        Ok(found) => {
            path_cache::remember(&searched, program, &found);
            Ok(found)
        }
        Err(_) if found_without_execute(program, &searched, &base) => Err(Error::NotExecutable {
            program: program.to_string_lossy().into_owned(),
            machine: "local".to_owned(),
        }),
        Err(_) => Err(not_found()),
    }
}

/// Programs found on `PATH`, remembered per (`PATH`, program) so that a spawn costs a
/// `stat` of the directories searched rather than a search.
///
/// An entry holds the directories searched, up to the one the program was found in, each
/// with its identity and modification time; it is used only while every one of them is
/// unchanged (a program added to an earlier directory, or removed from its own, changes
/// one). A directory modified within the last [`SETTLED`] is not trusted to show its next
/// change (timestamps are coarse), so such a lookup is not remembered. Only plain names
/// on a `PATH` of absolute directories are remembered: others depend on the working
/// directory.
mod path_cache {
    use std::{
        collections::HashMap,
        ffi::{OsStr, OsString},
        os::unix::{ffi::OsStrExt, fs::MetadataExt},
        path::{Path, PathBuf},
        sync::Mutex,
        time::{Duration, SystemTime},
    };

    /// How long a directory must have been unchanged for a lookup in it to be remembered.
    const SETTLED: Duration = Duration::from_secs(2);
    /// Entries kept at most (then the cache starts afresh).
    const MOST: usize = 512;

    /// A directory as it was: device, inode, modification time.
    type Stamp = (u64, u64, i64, i64);

    struct Entry {
        found: PathBuf,
        /// Each directory searched and its stamp (`None`: it did not exist).
        searched: Vec<(PathBuf, Option<Stamp>)>,
    }

    static CACHE: Mutex<Option<HashMap<(OsString, OsString), Entry>>> = Mutex::new(None);

    fn stamp(dir: &Path) -> Option<Stamp> {
        let meta = dir.metadata().ok()?;
        Some((meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec()))
    }

    fn cacheable(program: &OsStr) -> bool {
        !program.as_bytes().contains(&b'/')
    }

    /// The program found before, if no directory searched has changed since.
    pub(super) fn lookup(path: &OsStr, program: &OsStr) -> Option<PathBuf> {
        if !cacheable(program) {
            return None;
        }
        let mut cache = CACHE.lock().ok()?;
        let cache = cache.as_mut()?;
        let key = (path.to_os_string(), program.to_os_string());
        let entry = cache.get(&key)?;
        let unchanged = (entry.searched.iter()).all(|(dir, was)| stamp(dir) == *was);
        if unchanged {
            return Some(entry.found.clone());
        }
        cache.remove(&key);
        None
    }

    /// Remembers where `program` was found on `path`, when every directory searched has
    /// settled.
    pub(super) fn remember(path: &OsStr, program: &OsStr, found: &Path) {
        if !cacheable(program) {
            return;
        }
        let settled_before = SystemTime::now().checked_sub(SETTLED);
        let mut searched = Vec::new();
        for dir in std::env::split_paths(path) {
            if !dir.is_absolute() {
                return;
            }
            // Listed twice: its first stamp stands for both.
            if searched.iter().any(|(seen, _)| *seen == dir) {
                continue;
            }
            // A directory missing now is remembered as missing: created later, it shows.
            let stamp = stamp(&dir);
            if let Some((_, _, secs, nanos)) = stamp {
                let modified = SystemTime::UNIX_EPOCH.checked_add(Duration::new(
                    u64::try_from(secs).unwrap_or(0),
                    u32::try_from(nanos).unwrap_or(0),
                ));
                if settled_before
                    .zip(modified)
                    .is_none_or(|(settled, at)| at > settled)
                {
                    return;
                }
            }
            let here = dir.join(program) == found;
            searched.push((dir, stamp));
            if here {
                let mut cache = match CACHE.lock() {
                    Ok(cache) => cache,
                    Err(_) => return,
                };
                let cache = cache.get_or_insert_with(HashMap::new);
                if cache.len() >= MOST {
                    cache.clear();
                }
                let key = (path.to_os_string(), program.to_os_string());
                cache.insert(
                    key,
                    Entry {
                        found: found.to_path_buf(),
                        searched,
                    },
                );
                return;
            }
        }
    }
}

/// Whether `program` names a file that exists but that `which` skipped: it lacks the
/// execute permission (or is not a regular file). That is not "not found".
fn found_without_execute(program: &OsStr, searched: &OsStr, base: &Path) -> bool {
    let exists = |path: PathBuf| path.metadata().is_ok_and(|m| !m.is_dir());
    if program.as_bytes().contains(&b'/') {
        return exists(base.join(program));
    }
    std::env::split_paths(searched).any(|dir| exists(base.join(dir).join(program)))
}

/// The program a stage runs, as the command's env would have it looked up.
fn resolve(spec: &Process) -> Result<PathBuf> {
    // The command's own PATH wins; if it clears or removes PATH, this process's is used.
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .and_then(|(_, value)| value.as_deref());
    which(&spec.program, path, spec.cwd.as_deref())
}

/// Where a stage's stdout goes, before it becomes the child's: kept as a descriptor so
/// that `2>&1` can duplicate it.
enum Out {
    Inherit,
    Null,
    Fd(OwnedFd),
}

impl Out {
    fn duplicate(&self) -> io::Result<Stdio> {
        Ok(match self {
            Out::Inherit => io::stdout().as_fd().try_clone_to_owned()?.into(),
            Out::Null => Stdio::null(),
            Out::Fd(fd) => fd.try_clone()?.into(),
        })
    }

    fn into_stdio(self) -> Stdio {
        match self {
            Out::Inherit => Stdio::inherit(),
            Out::Null => Stdio::null(),
            Out::Fd(fd) => fd.into(),
        }
    }
}

/// A pipe whose write end goes to a child and whose read end stays here.
///
/// `std::io::pipe` creates both ends close-on-exec: a child spawned concurrently by another
/// thread cannot inherit them and hold our pipe open (only the end we hand to a child
/// is dup'ed onto its fd 0/1/2, without the flag).
fn pipe_to_us() -> io::Result<(ReadEnd, OwnedFd)> {
    let (reader, writer) = pipe_pair()?;
    Ok((ReadEnd::Fd(reader.into()), writer.into()))
}

/// A pipe with a larger buffer than the kernel's default 64 KiB: every refill of a full
/// pipe costs the reader a wakeup (and, in this process, a trip through the runtime), so a
/// bigger buffer moves bulk data with a fraction of them. Growing it may fail once the
/// user's pipe memory passes `/proc/sys/fs/pipe-user-pages-soft`; the pipe then keeps
/// its default size, which is only slower.
fn pipe_pair() -> io::Result<(io::PipeReader, io::PipeWriter)> {
    let (reader, writer) = io::pipe()?;
    // SAFETY: fcntl on a descriptor we own; failure leaves it unchanged.
    unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&reader),
            libc::F_SETPIPE_SZ,
            PIPE_BUFFER,
        )
    };
    Ok((reader, writer))
}

const PIPE_BUFFER: libc::c_int = 1 << 20;

fn open_out(path: &Path, append: bool) -> io::Result<OwnedFd> {
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    Ok(options.open(path)?.into())
}

/// A redirect path as the child would see it: relative to the child's directory.
fn at_cwd(stage: &StagePlan, path: &Path) -> PathBuf {
    match &stage.process.cwd {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    }
}

fn redirect_error(stage: &StagePlan, what: &str, path: &Path, error: io::Error) -> Error {
    Error::io(
        format!(
            "cannot open {} for {what} of `{}` on local",
            path.display(),
            stage.process.line
        ),
        error,
    )
}

fn stdout_of(stage: &StagePlan, stdout: &mut Option<ReadEnd>) -> Result<Out> {
    let open = |path: &Path, append| {
        let path = at_cwd(stage, path);
        open_out(&path, append).map_err(|e| redirect_error(stage, "stdout", &path, e))
    };
    Ok(match &stage.stdout {
        StdoutPlan::Inherit => Out::Inherit,
        StdoutPlan::Null => Out::Null,
        StdoutPlan::File(path) => Out::Fd(open(path, false)?),
        StdoutPlan::Append(path) => Out::Fd(open(path, true)?),
        StdoutPlan::Pipe => {
            let (reader, writer) = pipe_to_us().map_err(|e| Error::io("creating a pipe", e))?;
            *stdout = Some(reader);
            Out::Fd(writer)
        }
        // Only the last stage's stdout is resolved here; the others are pipes made in `start`.
        StdoutPlan::Next => Out::Null,
    })
}

fn start(plan: Plan) -> Result<LocalRunning> {
    let count = plan.stages.len();
    if let Some(stage) = plan.stages.iter().find(|s| s.process.pty) {
        return Err(Error::io(
            format!("cannot start `{}` on local", stage.process.line),
            io::Error::new(
                io::ErrorKind::Unsupported,
                "pty(true) is supported on SSH machines only",
            ),
        ));
    }
    // Every program is found before anything starts: a typo in the last stage must not
    // leave the first ones running.
    let programs = plan
        .stages
        .iter()
        .map(|stage| resolve(&stage.process))
        .collect::<Result<Vec<_>>>()?;

    // Job control: a process reading the terminal must be in the terminal's foreground
    // process group, or the kernel stops it with SIGTTIN (and Ctrl-C must reach it). So a
    // pipeline that reads our terminal stays in our group, and is signalled stage by stage
    // (its grandchildren are then out of reach of timeouts and drops). Everything else
    // gets a process group of its own.
    let reads_terminal = !plan.detached
        && plan.stages.iter().any(|s| s.stdin == StdinPlan::Inherit)
        // SAFETY: isatty only inspects the descriptor.
        && unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;

    let mut running = LocalRunning {
        children: Vec::with_capacity(count),
        group: None,
        // A detached stage makes a session of its own (see `detach`).
        own_group: !reads_terminal && !plan.detached,
        detached: Vec::new(),
        live: None,
        stdin: (0..count).map(|_| None).collect(),
        stdout: None,
        stderr: (0..count).map(|_| None).collect(),
    };
    // The last stdout first: any stage's stderr may be sent there (`(a | b) 2>&1`).
    let last_stage = &plan.stages[count - 1];
    let mut last_out = Some(stdout_of(last_stage, &mut running.stdout)?);
    let mut previous: Option<OwnedFd> = None;

    for (i, (stage, program)) in plan.stages.iter().zip(&programs).enumerate() {
        let spec = &stage.process;
        let pipe_error = |e| Error::io("creating a pipe", e);
        let stdin: Stdio = match &stage.stdin {
            // A terminal comes with a pty, which was refused above.
            StdinPlan::Inherit | StdinPlan::Terminal => Stdio::inherit(),
            StdinPlan::Null => Stdio::null(),
            StdinPlan::File(path) => {
                let path = at_cwd(stage, path);
                File::open(&path)
                    .map_err(|e| redirect_error(stage, "stdin", &path, e))?
                    .into()
            }
            StdinPlan::Pipe | StdinPlan::Bytes(_) => {
                let (reader, writer) = pipe_pair().map_err(pipe_error)?;
                let writer = pipe::Sender::from_owned_fd(writer.into()).map_err(pipe_error)?;
                running.stdin[i] = Some(Box::new(writer));
                reader.into()
            }
            // The previous stage's stdout, or end of file when it went elsewhere.
            StdinPlan::Previous => previous.take().map_or_else(Stdio::null, Stdio::from),
        };
        // Dropping an unused read end here makes the previous stage's writes fail with
        // EPIPE, as in a shell: `a > file | b` gives b nothing.
        previous = None;
        let out = if i + 1 == count {
            last_out.take().unwrap_or(Out::Null)
        } else if stage.stdout == StdoutPlan::Next {
            let (reader, writer) = pipe_pair().map_err(pipe_error)?;
            previous = Some(reader.into());
            Out::Fd(writer.into())
        } else {
            stdout_of(stage, &mut None)?
        };
        let dup_error = |e| Error::io("duplicating stdout for 2>&1", e);
        let stderr: Stdio = match &stage.stderr {
            StderrPlan::Inherit => Stdio::inherit(),
            StderrPlan::Null => Stdio::null(),
            StderrPlan::File(path) | StderrPlan::Append(path) => {
                let path = at_cwd(stage, path);
                let append = matches!(stage.stderr, StderrPlan::Append(_));
                open_out(&path, append)
                    .map_err(|e| redirect_error(stage, "stderr", &path, e))?
                    .into()
            }
            StderrPlan::Pipe => {
                let (reader, writer) = pipe_to_us().map_err(pipe_error)?;
                running.stderr[i] = Some(reader);
                writer.into()
            }
            StderrPlan::Stdout => out.duplicate().map_err(dup_error)?,
            StderrPlan::PipelineStdout => match &last_out {
                Some(last) => last.duplicate().map_err(dup_error)?,
                None => out.duplicate().map_err(dup_error)?,
            },
        };

        let mut process = tokio::process::Command::new(program);
        process.arg0(&spec.program).args(&spec.args);
        if spec.env_clear {
            process.env_clear();
        }
        for (key, value) in &spec.env {
            match value {
                Some(value) => process.env(key, value),
                None => process.env_remove(key),
            };
        }
        if let Some(dir) = &spec.cwd {
            process.current_dir(dir);
        }
        process.stdin(stdin).stdout(out.into_stdio()).stderr(stderr);
        if running.own_group {
            // Stage 0 leads a new group; the others join it. The leader cannot have been
            // reaped yet (only `wait` reaps), so its group id is still valid.
            process.process_group(running.group.unwrap_or(0));
        }
        let detached_pid = if plan.detached {
            Some(detach(&mut process).map_err(|e| spawn_error(stage, e))?)
        } else {
            None
        };
        // On error, `running` is dropped and kills the stages already started.
        let child = process.spawn().map_err(|e| {
            running.kill_detached();
            spawn_error(stage, e)
        })?;
        if let Some(reader) = detached_pid {
            // `process` holds the write end: closed, the read below cannot wait for ever.
            drop(process);
            let pid = read_detached_pid(reader).map_err(|e| {
                running.kill_detached();
                Error::io(
                    format!(
                        "cannot detach `{}` on local: no pid came back",
                        stage.process.line
                    ),
                    e,
                )
            })?;
            running.detached.push(pid);
            running.children.push((child, None));
            continue;
        }
        if i == 0 && running.own_group {
            running.group = child.id().and_then(|id| i32::try_from(id).ok());
        }
        running.children.push((child, None));
        // `process` is dropped here, closing our copies of the ends this child now holds:
        // otherwise the next stage would never see end of file.
    }
    if !plan.detached {
        running.live = Some(register(&running));
    }
    Ok(running)
}

/// Makes `process` start its program as a grandchild of this process, in a session of its
/// own, so that it outlives this process and leaves no zombie here: the child std forks
/// forks once more (in `pre_exec`, where it is single-threaded), writes the grandchild's pid
/// to a pipe and exits at once; the grandchild calls `setsid()` (it leads its session and
/// process group: `kill -- -PID` reaches all it starts) and goes on to `exec`. std's spawn
/// returns only once every copy of its close-on-exec error pipe is closed: by the child's
/// exit and the grandchild's `exec`. So it returns once the program runs, and a failed
/// `exec` (or `setsid`) of the grandchild comes back as the spawn's error, through that
/// same pipe. The child is reaped by `wait`; the grandchild is re-parented to init.
///
/// Returns the read end of the pipe the pid arrives on.
fn detach(process: &mut tokio::process::Command) -> io::Result<io::PipeReader> {
    let (reader, writer) = io::pipe()?;
    let report = std::os::fd::AsRawFd::as_raw_fd(&writer);
    // SAFETY: the closure runs in the forked child and calls only async-signal-safe
    // functions (fork, setsid, write, _exit); `writer` (moved in) stays open until then.
    // Close-on-exec, the pipe's ends reach no program.
    unsafe {
        process.pre_exec(move || {
            let _writer = &writer;
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => {
                    if libc::setsid() == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                }
                pid => {
                    let bytes = pid.to_ne_bytes();
                    libc::write(report, bytes.as_ptr().cast(), bytes.len());
                    libc::_exit(0)
                }
            }
        });
    }
    Ok(reader)
}

/// The grandchild's pid, written by the child of [`detach`] before it exited.
fn read_detached_pid(mut reader: io::PipeReader) -> io::Result<u32> {
    let mut bytes = [0u8; size_of::<libc::pid_t>()];
    io::Read::read_exact(&mut reader, &mut bytes)?;
    u32::try_from(libc::pid_t::from_ne_bytes(bytes))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a negative pid"))
}

fn spawn_error(stage: &StagePlan, error: io::Error) -> Error {
    let line = &stage.process.line;
    match &stage.process.cwd {
        Some(dir) if error.kind() == io::ErrorKind::NotFound && !dir.is_dir() => Error::io(
            format!(
                "cannot start `{line}` on local: no directory {}",
                dir.display()
            ),
            error,
        ),
        _ => Error::io(format!("cannot start `{line}` on local"), error),
    }
}

/// The processes of a started local pipeline.
struct LocalRunning {
    /// Each stage's child and, once reaped, its status.
    children: Vec<(tokio::process::Child, Option<ExitStatus>)>,
    /// The pipeline's process group (the first stage's pid), when it has its own.
    group: Option<i32>,
    own_group: bool,
    /// For a detached plan: the pid of each stage's program (the grandchild), in order.
    detached: Vec<u32>,
    /// Listed until every stage is reaped, so that a signal or `std::process::exit` kills
    /// the pipeline too (see `lifecycle`); never a detached one, which is to outlive us.
    live: Option<Registration>,
    stdin: Vec<Option<BoxWrite>>,
    stdout: Option<ReadEnd>,
    stderr: Vec<Option<ReadEnd>>,
}

impl LocalRunning {
    /// A detached plan that could not start whole: stops the stages that did, which are
    /// no children of ours (nothing else kills them). Their pids are fresh: just started,
    /// each leads its own session until it exits.
    fn kill_detached(&mut self) {
        for pid in self.detached.drain(..) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

impl Running for LocalRunning {
    fn take_stdin(&mut self, stage: usize) -> Option<BoxWrite> {
        self.stdin.get_mut(stage)?.take()
    }

    fn take_stdout(&mut self) -> Option<ReadEnd> {
        self.stdout.take()
    }

    fn take_stderr(&mut self, stage: usize) -> Option<ReadEnd> {
        self.stderr.get_mut(stage)?.take()
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<Vec<ExitStatus>>> {
        Box::pin(async move {
            let mut statuses = Vec::with_capacity(self.children.len());
            for (child, status) in &mut self.children {
                let status = match status {
                    Some(status) => *status,
                    None => {
                        let waited = child
                            .wait()
                            .await
                            .map_err(|e| Error::io("waiting for a child process", e))?;
                        *status = Some(waited.into());
                        waited.into()
                    }
                };
                statuses.push(status);
            }
            // Reaped: the group id may be reused from now on.
            self.live = None;
            Ok(statuses)
        })
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        // A reaped child's pid (and so a group led by it, once the group is empty) may
        // belong to an unrelated process by now: signal only while one of ours is
        // unreaped. tokio's `id()` turns `None` exactly when the child is reaped; a live or
        // zombie member keeps the group id from being reused.
        let alive: Vec<u32> = self.children.iter().filter_map(|(c, _)| c.id()).collect();
        if alive.is_empty() {
            return Ok(());
        }
        let sent = match self.group {
            // SAFETY: plain syscall on a group id we own, see above.
            Some(group) => unsafe { libc::killpg(group, signal.as_raw()) },
            None => alive
                .iter()
                // SAFETY: plain syscall on an unreaped child's pid.
                .map(|&pid| unsafe { libc::kill(pid as libc::pid_t, signal.as_raw()) })
                .min()
                .unwrap_or(0),
        };
        let error = io::Error::last_os_error();
        if sent == 0 || error.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(Error::io(format!("sending {signal} on local"), error))
        }
    }

    fn id(&self) -> Option<u32> {
        self.children.first().and_then(|(child, _)| child.id())
    }

    fn detached_pid(&self) -> Option<u32> {
        self.detached.first().copied()
    }
}

/// Lists a started pipeline for `lifecycle::stop_all`: SIGKILL to its group (or to each
/// stage in our own group). Unlisted once reaped, so the ids are still ours when used.
fn register(running: &LocalRunning) -> Registration {
    let group = running.group;
    let pids: Vec<libc::pid_t> = running
        .children
        .iter()
        .filter_map(|(child, _)| child.id().and_then(|id| libc::pid_t::try_from(id).ok()))
        .collect();
    crate::lifecycle::register(Kind::Process, move || {
        match group {
            // SAFETY: plain syscalls on ids of unreaped children (see above).
            Some(group) => unsafe {
                libc::killpg(group, libc::SIGKILL);
            },
            None => {
                for &pid in &pids {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        Box::pin(async {})
    })
}

impl Drop for LocalRunning {
    fn drop(&mut self) {
        // Dropped before every stage ended (a timeout, a dropped Child or Lines, a failed
        // start): kill them all. tokio reaps the dropped children in the background, so
        // no zombie is left behind.
        let _ = self.signal(Signal::KILL);
    }
}
