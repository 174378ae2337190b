//! `Command`: one program with its arguments, environment, directory and streams.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::{
    ArgValue, Child, Input, Lines, Output, Pipeline, Redirect, Result, exec::Job,
    machine::MachineRef, observe::Observe, quote, respond::Responder, status::ExitStatus,
};

/// A command to run: a program, its arguments, environment, working directory, where its
/// streams go, and how its exit status is checked, bound to the machine that made it.
///
/// A `Command` is a value. Building one runs nothing; it is cheap to clone (the parts are
/// shared until a clone changes them), and every builder returns a new value. Run it with
/// one of the async calls ([`run`](Command::run), [`read`](Command::read),
/// [`output`](Command::output), [`status`](Command::status), [`spawn`](Command::spawn),
/// [`lines`](Command::lines), ...), as often as you like. Compose commands with `|` into a
/// [`Pipeline`], feed bytes with `<<`, append stdout to a file with `>>`.
///
/// `Display` renders the command line quoted as a POSIX shell needs it, so it can be pasted
/// into a terminal; environment and working directory are left out of it (they often hold
/// secrets) and shown by `Debug`.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::prelude::*;
/// let sh = local();
/// let log = sh.cmd("git").args(["log", "--oneline", "-n", "5"]).env("GIT_PAGER", "");
/// println!("{log}");                       // git log --oneline -n 5
/// let text = log.read().await?;
/// let count = (log | sh.cmd("wc").arg("-l")).read().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Command(Arc<CommandSpec>);

#[derive(Clone)]
pub(crate) struct CommandSpec {
    pub(crate) machine: MachineRef,
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    /// Indexes of the arguments that are [`Secret`](crate::Secret)s: shown as `***`.
    pub(crate) secret_args: Vec<usize>,
    pub(crate) env_clear: bool,
    /// In order of the calls; `None` removes the variable.
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) stdin: Option<Input>,
    pub(crate) stdout: Option<Redirect>,
    pub(crate) stderr: Option<Stderr>,
    /// `None`: every status is fine (`unchecked`).
    pub(crate) ok_codes: Option<Arc<[i32]>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) pty: bool,
    /// Patterns watched for in the output, and their answers (`respond`).
    pub(crate) responders: Vec<Responder>,
    /// What the run shows of itself: echo, a fleet's prefix and log.
    pub(crate) observe: Observe,
}

/// Where a command's stderr was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stderr {
    To(Redirect),
    /// `2>&1`: wherever this command's stdout finally goes.
    ToStdout,
    /// `(a | b) 2>&1`: wherever the pipeline's last stdout goes.
    ToPipelineStdout,
}

/// The environment and directory a machine view gives the commands it makes.
#[derive(Clone, Default)]
pub(crate) struct Scope {
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) observe: Observe,
}

impl Scope {
    /// `path` as this view sees it: relative to its directory, when it has one.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        join_dir(self.cwd.as_deref(), path)
    }

    pub(crate) fn with_cwd(&self, dir: &Path) -> Scope {
        Scope {
            cwd: Some(join_dir(self.cwd.as_deref(), dir)),
            ..self.clone()
        }
    }

    pub(crate) fn with_env(&self, key: &OsStr, value: Option<&OsStr>) -> Scope {
        let mut env = self.env.clone();
        set_env(&mut env, key, value);
        Scope {
            env,
            ..self.clone()
        }
    }

    pub(crate) fn with_echo(&self, echo: bool) -> Scope {
        let mut scope = self.clone();
        scope.observe.echo = echo;
        scope
    }
}

fn join_dir(base: Option<&Path>, dir: &Path) -> PathBuf {
    match base {
        Some(base) => base.join(dir),
        None => dir.to_path_buf(),
    }
}

fn set_env(env: &mut Vec<(OsString, Option<OsString>)>, key: &OsStr, value: Option<&OsStr>) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_os_string(), value.map(OsStr::to_os_string)));
}

impl Command {
    pub(crate) fn new(machine: MachineRef, scope: &Scope, program: &OsStr) -> Command {
        Command(Arc::new(CommandSpec {
            machine,
            program: program.to_os_string(),
            args: Vec::new(),
            secret_args: Vec::new(),
            env_clear: false,
            env: scope.env.clone(),
            cwd: scope.cwd.clone(),
            stdin: None,
            stdout: None,
            stderr: None,
            ok_codes: Some(Arc::new([0])),
            timeout: None,
            pty: false,
            responders: Vec::new(),
            observe: scope.observe.clone(),
        }))
    }

    pub(crate) fn spec(&self) -> &CommandSpec {
        &self.0
    }

    fn edit(mut self, change: impl FnOnce(&mut CommandSpec)) -> Command {
        change(Arc::make_mut(&mut self.0));
        self
    }

    /// Adds one argument, passed to the program exactly as given: never split, never
    /// globbed, never interpreted by a shell. A [`Secret`](crate::Secret) is passed as its bytes and
    /// shown as `***` (see [`Secret`](crate::Secret) for where an argument remains visible).
    pub fn arg(self, arg: impl ArgValue) -> Command {
        self.args([arg])
    }

    /// Adds several arguments, each as [`arg`](Command::arg) does. An `Option` adds its
    /// value when it has one.
    pub fn args<I>(self, args: I) -> Command
    where
        I: IntoIterator,
        I::Item: ArgValue,
    {
        self.edit(|c| {
            for arg in args {
                let (arg, secret) = arg.into_value();
                if secret {
                    c.secret_args.push(c.args.len());
                }
                c.args.push(arg);
            }
        })
    }

    /// Sets an environment variable for this command (the machine's and this process's
    /// environment are left as they are). The value may be a [`Secret`](crate::Secret). No value is
    /// ever shown by `Display`, `Debug` or errors, nor put in a command line (on an SSH
    /// machine it travels on the channel's stdin), so an environment variable is the
    /// best way to hand a program a secret.
    pub fn env(self, key: impl AsRef<OsStr>, value: impl ArgValue) -> Command {
        let (value, _) = value.into_value();
        self.edit(|c| set_env(&mut c.env, key.as_ref(), Some(&value)))
    }

    /// Removes an environment variable from what this command inherits.
    pub fn env_remove(self, key: impl AsRef<OsStr>) -> Command {
        self.edit(|c| set_env(&mut c.env, key.as_ref(), None))
    }

    /// Starts this command from an empty environment, as std's `Command::env_clear`: the
    /// variables set before this call (by the command or by its machine view) are dropped
    /// too; only those set after it are passed. The program is still looked up on this
    /// process's `PATH` unless the command sets one.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let sh = leadpipe::local();
    /// let env = sh.cmd("env").env("DROPPED", "1").env_clear().env("KEPT", "2");
    /// assert_eq!(env.read().await?, "KEPT=2");
    /// # Ok(()) }
    /// ```
    pub fn env_clear(self) -> Command {
        self.edit(|c| {
            c.env_clear = true;
            c.env.clear();
        })
    }

    /// Sets the working directory. A relative `dir` is taken from the directory the
    /// command already has (the machine view's, or an earlier `cwd`), as `cd` would.
    /// Relative redirect paths are taken from the working directory too.
    pub fn cwd(self, dir: impl AsRef<Path>) -> Command {
        self.edit(|c| c.cwd = Some(join_dir(c.cwd.as_deref(), dir.as_ref())))
    }

    /// Sets where standard input comes from (the last setting wins).
    pub fn stdin(self, input: impl Into<Input>) -> Command {
        let input = input.into();
        self.edit(|c| c.stdin = Some(input))
    }

    /// Sets where standard output goes (the last setting wins).
    pub fn stdout(self, redirect: impl Into<Redirect>) -> Command {
        let redirect = redirect.into();
        self.edit(|c| c.stdout = Some(redirect))
    }

    /// Sets where standard error goes (the last setting wins, including over
    /// [`stderr_to_stdout`](Command::stderr_to_stdout)).
    pub fn stderr(self, redirect: impl Into<Redirect>) -> Command {
        let redirect = redirect.into();
        self.edit(|c| c.stderr = Some(Stderr::To(redirect)))
    }

    /// Sends standard error wherever standard output goes (`2>&1`), whatever the order of
    /// the calls: `.stderr_to_stdout().stdout(Redirect::File(p))` writes both to `p`.
    pub fn stderr_to_stdout(self) -> Command {
        self.edit(|c| c.stderr = Some(Stderr::ToStdout))
    }

    pub(crate) fn stderr_to_pipeline_stdout(self) -> Command {
        self.edit(|c| c.stderr = Some(Stderr::ToPipelineStdout))
    }

    /// Sets the exit codes that count as success (default `[0]`). Any other code, or
    /// death by a signal, makes the checking calls return [`Error::Exit`](crate::Error::Exit).
    pub fn ok_codes(self, codes: impl IntoIterator<Item = i32>) -> Command {
        let codes: Arc<[i32]> = codes.into_iter().collect();
        self.edit(|c| c.ok_codes = Some(codes))
    }

    /// Accepts every exit status: no call returns [`Error::Exit`](crate::Error::Exit) for
    /// this command.
    pub fn unchecked(self) -> Command {
        self.edit(|c| c.ok_codes = None)
    }

    /// Kills the command, and everything it started, when it runs longer than `limit`;
    /// the call then returns [`Error::Timeout`](crate::Error::Timeout). For
    /// [`spawn`](Command::spawn) the clock starts at the spawn and is enforced while
    /// waiting.
    ///
    /// The limit covers the whole call: the start (on an SSH machine, the wait for a free
    /// channel), the output, the exit, and the clean-up after the kill, which waits at
    /// most half a second for the machine to confirm it. So the call returns at most
    /// `limit` + 0.5 s after it began, even when the machine stopped answering.
    pub fn timeout(self, limit: Duration) -> Command {
        self.edit(|c| c.timeout = Some(limit))
    }

    /// Runs the command with a pseudo-terminal, for programs that insist on one (`sudo`
    /// asking for a password, tools that only colour or prompt on a tty). On an SSH machine
    /// the channel asks for a pty (as `ssh -t`); its stdout and stderr then arrive as one
    /// stream (stdout), with the terminal's `\r\n` line ends. The local machine does not
    /// allocate ptys: starting such a command there is an error.
    pub fn pty(self, pty: bool) -> Command {
        self.edit(|c| c.pty = pty)
    }

    /// Answers a prompt: each time `pattern` appears in the command's stdout or stderr
    /// (as the bytes stream, so a prompt cut across two reads still counts), writes
    /// `answer` and a newline to its stdin. `answer` may be a [`Secret`](crate::Secret).
    /// Call it again for more prompts: each pattern is watched on its own.
    ///
    /// For interactive installers, `passwd`, a `Continue? [y/N]`: the command's stdin
    /// becomes leadpipe's (setting a here-string or a file as stdin is an error), and its
    /// output is read through the watch wherever it goes (captured, `lines`, a `Child`'s
    /// pipes, or this process's terminal for [`run`](Command::run)). Programs that only
    /// prompt on a terminal need [`pty(true)`](Command::pty) (SSH machines): the terminal
    /// echoes what is typed, and the echo of each answer is taken out of the output again,
    /// so an answer is not captured (a program that turns echo off, as for a password,
    /// echoes nothing anyway). Answers are never shown: not by `Display`, `Debug`, errors
    /// or logs. Only a single command responds, not a stage of a pipeline.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// use leadpipe::Secret;
    /// web1.cmd("passwd")
    ///     .pty(true)
    ///     .respond("Current password:", Secret::new("old"))
    ///     .respond("New password:", Secret::new("new"))
    ///     .respond("Retype new password:", Secret::new("new"))
    ///     .run()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn respond(self, pattern: impl AsRef<str>, answer: impl ArgValue) -> Command {
        let (answer, _) = answer.into_value();
        let mut bytes = answer.as_bytes().to_vec();
        bytes.push(b'\n');
        let responder = Responder {
            pattern: Arc::from(pattern.as_ref().as_bytes()),
            answer: bytes.into(),
        };
        self.edit(|c| c.responders.push(responder))
    }

    /// Prints the command line to this process's stderr, as `+ line`, each time the
    /// command is started, as `set -x` does (a pipeline is printed whole when one of its
    /// stages echoes). The line is the command's `Display`, so secrets show as `***`.
    /// [`LocalMachine::echo`](crate::LocalMachine::echo) and
    /// [`SshMachine::echo`](crate::SshMachine::echo) turn it on for every command of a
    /// machine view.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// let sh = leadpipe::local();
    /// sh.cmd("ls").args(["-l", "my dir"]).echo(true).run().await?; // + ls -l 'my dir'
    /// # Ok(()) }
    /// ```
    pub fn echo(self, echo: bool) -> Command {
        self.edit(|c| c.observe.echo = echo)
    }

    /// The program, as given.
    pub fn get_program(&self) -> &OsStr {
        &self.0.program
    }

    /// The arguments, as given.
    pub fn get_args(&self) -> impl ExactSizeIterator<Item = &OsStr> {
        self.0.args.iter().map(OsString::as_os_str)
    }

    /// The working directory, if the command or its machine view set one.
    pub fn get_cwd(&self) -> Option<&Path> {
        self.0.cwd.as_deref()
    }

    fn job(&self) -> Job {
        Job::new(vec![self.clone()], None)
    }

    /// Runs the command with this process's stdin, stdout and stderr (unless redirected),
    /// as a shell script would, and checks its exit status.
    ///
    /// # Errors
    /// [`Error::CommandNotFound`](crate::Error::CommandNotFound),
    /// [`Error::Exit`](crate::Error::Exit) for a status outside `ok_codes` (its stderr was
    /// shown, not captured), [`Error::Timeout`](crate::Error::Timeout),
    /// [`Error::Io`](crate::Error::Io) when a redirect target cannot be opened.
    pub async fn run(&self) -> Result<()> {
        self.job().run().await
    }

    /// Runs the command and returns its standard output as text, with one trailing newline
    /// removed. Stdin is `/dev/null` unless set; stderr is kept for the error.
    ///
    /// # Errors
    /// As [`run`](Command::run), and [`Error::InvalidUtf8`](crate::Error::InvalidUtf8)
    /// when the output is not UTF-8 (use [`read_bytes`](Command::read_bytes) for that).
    pub async fn read(&self) -> Result<String> {
        self.job().read().await
    }

    /// Runs the command and returns its standard output, byte for byte.
    ///
    /// # Errors
    /// As [`run`](Command::run).
    pub async fn read_bytes(&self) -> Result<Vec<u8>> {
        self.job().read_bytes().await
    }

    /// Runs the command and returns its status, stdout and stderr in full.
    ///
    /// # Errors
    /// As [`run`](Command::run); with [`unchecked`](Command::unchecked) a failing status
    /// is returned in the [`Output`] instead.
    pub async fn output(&self) -> Result<Output> {
        self.job().output().await
    }

    /// Runs the command quietly (stdin, stdout and stderr on `/dev/null` unless set) and
    /// returns how it ended; a failing status is not an error.
    ///
    /// # Errors
    /// Only when it cannot run: not found, a redirect that cannot be opened, a timeout.
    pub async fn status(&self) -> Result<ExitStatus> {
        self.job().status().await
    }

    /// Runs the command quietly and tells whether it succeeded (its status is in
    /// `ok_codes`).
    ///
    /// # Errors
    /// As [`status`](Command::status).
    pub async fn success(&self) -> Result<bool> {
        self.job().success().await
    }

    /// Starts the command and returns at once with a [`Child`] to talk to it: its stdin
    /// and stdout are pipes (unless set), its stderr is kept by leadpipe for the error
    /// (set [`Redirect::Pipe`] to read it yourself).
    ///
    /// # Errors
    /// When it cannot start: not found, a redirect that cannot be opened.
    pub async fn spawn(&self) -> Result<Child> {
        self.job().spawn().await
    }

    /// Starts the command to outlive this script (a service, a restart that must not be
    /// cut short) and returns its pid once it runs: the one way to start something that
    /// nothing in leadpipe stops. [`spawn`](Command::spawn)'s child, by contrast, is killed
    /// when its [`Child`] is dropped.
    ///
    /// The process leads a new session (and process group) of its own, so neither the
    /// script's end, its terminal's hangup nor a closed SSH connection reaches it, and
    /// `kill -- -PID` stops it with everything it starts. Its stdin, stdout and stderr are
    /// `/dev/null` unless redirected to files ([`Input::File`](crate::Input::File),
    /// [`Redirect::File`], [`Redirect::Append`], [`stderr_to_stdout`](Command::stderr_to_stdout)).
    /// A stream connected to the script itself would end with it, so a here-string,
    /// [`Redirect::Pipe`] or `Inherit` is refused rather than quietly replaced.
    ///
    /// Locally, the program is started as a grandchild of this process (the child in
    /// between exits at once and is reaped), so it leaves no zombie behind. On an SSH
    /// machine it is started through `setsid`; where the machine has none, in the
    /// background with SIGHUP ignored (then it shares the login's session). The call
    /// returns once the program has been found and started; a
    /// [`timeout`](Command::timeout) bounds only that.
    ///
    /// # Errors
    /// [`Error::CommandNotFound`](crate::Error::CommandNotFound) and
    /// [`Error::NotExecutable`](crate::Error::NotExecutable) as for every call;
    /// [`Error::Io`](crate::Error::Io) when a redirect cannot be opened, or with
    /// `InvalidInput` for a stream to this script or `pty(true)`;
    /// [`Error::Timeout`](crate::Error::Timeout).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// use leadpipe::Redirect;
    /// let pid = web
    ///     .cmd("/srv/app/bin/server")
    ///     .stdout(Redirect::Append("/srv/app/server.log".into()))
    ///     .stderr_to_stdout()
    ///     .spawn_detached()
    ///     .await?;
    /// println!("server running as pid {pid}");
    /// # Ok(()) }
    /// ```
    pub async fn spawn_detached(&self) -> Result<u32> {
        self.job().spawn_detached().await
    }

    /// The command's stdout and stderr lines, as they come. The command starts when the
    /// stream is first polled and is killed if the stream is dropped before its end; the
    /// exit status is checked at the end (a failure is the stream's last item).
    pub fn lines(&self) -> Lines {
        self.job().lines()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_line())
    }
}

impl Command {
    /// The command line with its redirects, quoted for a POSIX shell.
    pub(crate) fn display_line(&self) -> String {
        let spec = &self.0;
        let mut line = quote::display_line(
            spec.program.as_bytes(),
            spec.args.iter().enumerate().map(|(i, a)| {
                if spec.secret_args.contains(&i) {
                    b"***".as_slice()
                } else {
                    a.as_bytes()
                }
            }),
        );
        let mut redirect = |op: &str, path: &Path| {
            line.push(' ');
            line.push_str(op);
            line.push(' ');
            line.push_str(&quote::display_line(
                path.as_os_str().as_bytes(),
                [].into_iter(),
            ));
        };
        match &spec.stdin {
            Some(Input::File(path)) => redirect("<", path),
            Some(Input::Null) => redirect("<", Path::new("/dev/null")),
            _ => {}
        }
        match &spec.stdout {
            Some(Redirect::File(path)) => redirect(">", path),
            Some(Redirect::Append(path)) => redirect(">>", path),
            Some(Redirect::Null) => redirect(">", Path::new("/dev/null")),
            _ => {}
        }
        match &spec.stderr {
            Some(Stderr::To(Redirect::File(path))) => redirect("2>", path),
            Some(Stderr::To(Redirect::Append(path))) => redirect("2>>", path),
            Some(Stderr::To(Redirect::Null)) => redirect("2>", Path::new("/dev/null")),
            Some(Stderr::ToStdout | Stderr::ToPipelineStdout) => line.push_str(" 2>&1"),
            _ => {}
        }
        if let Some(Input::Bytes(bytes)) = &spec.stdin {
            // The bytes themselves stay out of logs and errors: they may be a secret.
            line.push_str(&format!(" <<< [{} bytes]", bytes.len()));
        }
        line
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spec = &self.0;
        let mut debug = f.debug_struct("Command");
        debug
            .field("machine", &spec.machine.name())
            .field("line", &self.display_line());
        if let Some(cwd) = &spec.cwd {
            debug.field("cwd", cwd);
        }
        if spec.env_clear {
            debug.field("env_clear", &true);
        }
        if !spec.env.is_empty() {
            // Names only: values are often tokens.
            let names: Vec<_> = spec
                .env
                .iter()
                .map(|(k, v)| match v {
                    Some(_) => k.to_string_lossy().into_owned(),
                    None => format!("-{}", k.to_string_lossy()),
                })
                .collect();
            debug.field("env", &names);
        }
        if let Some(timeout) = spec.timeout {
            debug.field("timeout", &timeout);
        }
        debug.finish()
    }
}

impl std::ops::BitOr<Command> for Command {
    type Output = Pipeline;
    /// `a | b`: a's stdout feeds b's stdin.
    fn bitor(self, rhs: Command) -> Pipeline {
        Pipeline::from(self) | rhs
    }
}

impl std::ops::BitOr<Pipeline> for Command {
    type Output = Pipeline;
    /// `a | (b | c)`: a's stdout feeds the pipeline's first stage.
    fn bitor(self, rhs: Pipeline) -> Pipeline {
        Pipeline::from(self) | rhs
    }
}

macro_rules! here_string {
    ($($ty:ty),*) => {$(
        impl std::ops::Shl<$ty> for Command {
            type Output = Command;
            /// `cmd << bytes`: feeds exactly these bytes to stdin (a here-string; no
            /// newline is added).
            fn shl(self, input: $ty) -> Command {
                self.stdin(Input::bytes(input))
            }
        }
    )*};
}
here_string!(&str, String, Vec<u8>, &[u8]);

impl<P: AsRef<Path>> std::ops::Shr<P> for Command {
    type Output = Command;
    /// `cmd >> path`: appends stdout to a file, as in the shell.
    fn shr(self, path: P) -> Command {
        self.stdout(Redirect::Append(path.as_ref().to_path_buf()))
    }
}
