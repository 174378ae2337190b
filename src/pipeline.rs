//! `Pipeline`: commands whose stdout feeds the next one's stdin.

use std::{ffi::OsStr, fmt, path::Path, time::Duration};

use crate::{
    ArgValue, Child, Command, Input, Lines, Output, Redirect, Result, exec::Job, status::ExitStatus,
};

/// Commands connected stdout to stdin, made with `|`: `a | b | c`.
///
/// On a local machine the stages are connected by OS pipes, so the data flows from process
/// to process without passing through this one. Every stage's stderr is drained at the
/// same time (a stage that writes a lot of stderr never stalls the pipeline) and kept for
/// the error unless redirected.
///
/// A pipeline fails when any stage fails, like bash's `set -o pipefail`, with two
/// refinements: a stage killed by SIGPIPE because a later stage stopped reading is not a
/// failure (`yes | head -1` succeeds, as in bash), and the error names the *first* stage
/// that failed, with that stage's own stderr, since that is usually the cause.
///
/// Settings made on the pipeline apply to its stages: `stdin` to the first, `stdout` to the
/// last, `stderr`, `env`, `cwd`, `ok_codes` and `unchecked` to every stage, and `timeout`
/// to the whole (a stage's own timeout also limits the whole pipeline). Settings made on a
/// command before it joins a pipeline stay with that stage: `(a.stdout(f) | b)` sends a's
/// output to `f` and gives b an empty stdin, as the shell does.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::prelude::*;
/// let sh = local();
/// let first = (sh.cmd("yes") | sh.cmd("head").arg("-1")).read().await?;
/// assert_eq!(first, "y");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pipeline {
    stages: Vec<Command>,
    timeout: Option<Duration>,
}

impl From<Command> for Pipeline {
    fn from(command: Command) -> Pipeline {
        Pipeline {
            stages: vec![command],
            timeout: None,
        }
    }
}

impl Pipeline {
    fn each(mut self, change: impl Fn(Command) -> Command) -> Pipeline {
        self.stages = self.stages.into_iter().map(change).collect();
        self
    }

    fn first(mut self, change: impl FnOnce(Command) -> Command) -> Pipeline {
        let first = self.stages.remove(0);
        self.stages.insert(0, change(first));
        self
    }

    fn last(mut self, change: impl FnOnce(Command) -> Command) -> Pipeline {
        if let Some(last) = self.stages.pop() {
            self.stages.push(change(last));
        }
        self
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[Command] {
        &self.stages
    }

    /// Sets the first stage's standard input.
    pub fn stdin(self, input: impl Into<Input>) -> Pipeline {
        let input = input.into();
        self.first(|c| c.stdin(input))
    }

    /// Sets the last stage's standard output.
    pub fn stdout(self, redirect: impl Into<Redirect>) -> Pipeline {
        let redirect = redirect.into();
        self.last(|c| c.stdout(redirect))
    }

    /// Sets every stage's standard error.
    pub fn stderr(self, redirect: impl Into<Redirect>) -> Pipeline {
        let redirect = redirect.into();
        self.each(|c| c.stderr(redirect.clone()))
    }

    /// Sends every stage's standard error wherever the last stage's standard output goes,
    /// like `{ a | b; } 2>&1` in a shell.
    pub fn stderr_to_stdout(self) -> Pipeline {
        self.each(Command::stderr_to_pipeline_stdout)
    }

    /// Sets an environment variable for every stage.
    pub fn env(self, key: impl AsRef<OsStr>, value: impl ArgValue) -> Pipeline {
        let (value, _) = value.into_value();
        self.each(|c| c.env(key.as_ref(), &value))
    }

    /// Removes an environment variable from every stage.
    pub fn env_remove(self, key: impl AsRef<OsStr>) -> Pipeline {
        self.each(|c| c.env_remove(key.as_ref()))
    }

    /// Sets every stage's working directory (as [`Command::cwd`]).
    pub fn cwd(self, dir: impl AsRef<Path>) -> Pipeline {
        self.each(|c| c.cwd(dir.as_ref()))
    }

    /// Sets the exit codes that count as success for every stage.
    pub fn ok_codes(self, codes: impl IntoIterator<Item = i32>) -> Pipeline {
        let codes: Vec<i32> = codes.into_iter().collect();
        self.each(|c| c.ok_codes(codes.iter().copied()))
    }

    /// Accepts every exit status of every stage.
    pub fn unchecked(self) -> Pipeline {
        self.each(Command::unchecked)
    }

    /// Kills every stage, and everything they started, when the pipeline runs longer than
    /// `limit`; the call returns [`Error::Timeout`](crate::Error::Timeout), at most
    /// `limit` + 0.5 s after it began, as [`Command::timeout`] explains.
    pub fn timeout(mut self, limit: Duration) -> Pipeline {
        self.timeout = Some(limit);
        self
    }

    fn job(&self) -> Job {
        Job::new(self.stages.clone(), self.timeout)
    }

    /// Runs the pipeline as [`Command::run`] does.
    ///
    /// # Errors
    /// As [`Command::run`]; the error names the stage that failed.
    pub async fn run(&self) -> Result<()> {
        self.job().run().await
    }

    /// Runs the pipeline and returns the last stage's stdout as text, as [`Command::read`].
    ///
    /// # Errors
    /// As [`Command::read`].
    pub async fn read(&self) -> Result<String> {
        self.job().read().await
    }

    /// Runs the pipeline and returns the last stage's stdout, byte for byte.
    ///
    /// # Errors
    /// As [`Command::read_bytes`].
    pub async fn read_bytes(&self) -> Result<Vec<u8>> {
        self.job().read_bytes().await
    }

    /// Runs the pipeline and returns every stage's status, the last stdout and all stderr.
    ///
    /// # Errors
    /// As [`Command::output`].
    pub async fn output(&self) -> Result<Output> {
        self.job().output().await
    }

    /// Runs the pipeline quietly and returns its status, as bash's `pipefail` gives it:
    /// the last stage that did not exit with 0 (checked or not), else the last stage's.
    /// See [`Output::status`](crate::Output::status).
    ///
    /// # Errors
    /// As [`Command::status`].
    pub async fn status(&self) -> Result<ExitStatus> {
        self.job().status().await
    }

    /// Runs the pipeline quietly and tells whether every stage succeeded.
    ///
    /// # Errors
    /// As [`Command::success`].
    pub async fn success(&self) -> Result<bool> {
        self.job().success().await
    }

    /// Starts the pipeline; the [`Child`] holds the first stage's stdin and the last
    /// stage's stdout.
    ///
    /// # Errors
    /// As [`Command::spawn`].
    pub async fn spawn(&self) -> Result<Child> {
        self.job().spawn().await
    }

    /// Starts the pipeline to outlive this script, as [`Command::spawn_detached`], and
    /// returns, once every stage runs, the pid that leads its session. The stages are
    /// connected to each other as usual; every other stream follows the rules of
    /// [`Command::spawn_detached`] (files, or `/dev/null` when unset).
    ///
    /// Locally, every stage leads a session of its own (a process joins a session only by
    /// being started inside it, and the stages are started from here) and the pid is the
    /// first stage's. On an SSH machine the stages run under one `/bin/sh` that leads
    /// their session, and the pid is that shell's: there `kill -- -PID` stops the whole
    /// pipeline.
    ///
    /// # Errors
    /// As [`Command::spawn_detached`]; also [`Error::Io`](crate::Error::Io) with
    /// `InvalidInput` for a pipeline whose stages run on several machines.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
    /// use leadpipe::Redirect;
    /// let worker = (web1.cmd("tail").args(["-F", "/var/log/app.log"]) | web1.cmd("grep").arg("ERROR"))
    ///     .stdout(Redirect::File("/var/log/app-errors.log".into()));
    /// let pid = worker.spawn_detached().await?;
    /// println!("watching errors as pid {pid}; `kill -- -{pid}` stops it");
    /// # Ok(()) }
    /// ```
    pub async fn spawn_detached(&self) -> Result<u32> {
        self.job().spawn_detached().await
    }

    /// The last stage's stdout lines and every stage's stderr lines, as they come.
    pub fn lines(&self) -> Lines {
        self.job().lines()
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.job().display())
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.stages)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl std::ops::BitOr<Command> for Pipeline {
    type Output = Pipeline;
    /// `(a | b) | c`: the last stage's stdout feeds `c`.
    fn bitor(mut self, rhs: Command) -> Pipeline {
        self.stages.push(rhs);
        self
    }
}

impl std::ops::BitOr<Pipeline> for Pipeline {
    type Output = Pipeline;
    /// `(a | b) | (c | d)`: one pipeline of four stages.
    fn bitor(mut self, rhs: Pipeline) -> Pipeline {
        self.stages.extend(rhs.stages);
        self.timeout = match (self.timeout, rhs.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

macro_rules! here_string {
    ($($ty:ty),*) => {$(
        impl std::ops::Shl<$ty> for Pipeline {
            type Output = Pipeline;
            /// `pipeline << bytes`: feeds exactly these bytes to the first stage's stdin.
            fn shl(self, input: $ty) -> Pipeline {
                self.stdin(Input::bytes(input))
            }
        }
    )*};
}
here_string!(&str, String, Vec<u8>, &[u8]);

impl<P: AsRef<Path>> std::ops::Shr<P> for Pipeline {
    type Output = Pipeline;
    /// `pipeline >> path`: appends the last stage's stdout to a file.
    fn shr(self, path: P) -> Pipeline {
        self.stdout(Redirect::Append(path.as_ref().to_path_buf()))
    }
}
