//! leadpipe: shell-like programs in Rust.
//!
//! Deployment scripts, release tooling and fleet operations are mostly "run this, feed it
//! that, check it worked". leadpipe makes each command a typed value you build, compose
//! and run, on this machine or on remote machines over SSH, with errors that say
//! what ran, where, and what it printed.
//!
//! # Commands are values
//!
//! A machine makes commands; building one runs nothing.
//!
//! ```no_run
//! # async fn demo() -> leadpipe::Result<()> {
//! use leadpipe::prelude::*;
//!
//! let sh = local();
//! let ls = sh.cmd("ls").arg("-la").arg("/var/log");
//! println!("{ls}");                      // ls -la /var/log  (quoted for a shell)
//! let listing: String = ls.read().await?;
//! # Ok(()) }
//! ```
//!
//! Arguments are passed as they are: no shell sits in the middle, so nothing is split,
//! globbed or interpreted, whatever a variable holds.
//!
//! # Pipes and redirects
//!
//! `|` connects commands into a [`Pipeline`] (OS pipes; the data never passes through
//! your program), `<<` feeds bytes, `>>` appends to a file, and methods do the rest.
//!
//! ```no_run
//! # async fn demo() -> leadpipe::Result<()> {
//! use leadpipe::prelude::*;
//! let sh = local();
//! let errors = (sh.cmd("grep").args(["-c", "ERROR"]) << "ok\nERROR x\n").read().await?;
//! let first = (sh.cmd("yes") | sh.cmd("head").arg("-1")).read().await?;
//! (sh.cmd("date") >> "deploy.log").run().await?;
//! sh.cmd("make").stdout(Redirect::Null).stderr_to_stdout().run().await?;
//! # Ok(()) }
//! ```
//!
//! A pipeline fails when any stage fails (bash's `pipefail`), except a stage that died of
//! SIGPIPE because a later one stopped reading. The error names the stage and shows its
//! own stderr.
//!
//! # Running
//!
//! | call | returns | stdin / stdout / stderr when not set | status |
//! | --- | --- | --- | --- |
//! | [`run`](Command::run) | `()` | inherited / inherited / inherited | checked |
//! | [`read`](Command::read) | `String`, one trailing `\n` trimmed | null / captured / kept for the error | checked |
//! | [`read_bytes`](Command::read_bytes) | `Vec<u8>` | null / captured / kept for the error | checked |
//! | [`output`](Command::output) | [`Output`] | null / captured / captured | checked unless `unchecked()` |
//! | [`status`](Command::status) | [`ExitStatus`] | null / null / null | never an error |
//! | [`success`](Command::success) | `bool` | null / null / null | never an error |
//! | [`spawn`](Command::spawn) | [`Child`] | pipe / pipe / kept for the error | checked at `wait` |
//! | [`lines`](Command::lines) | [`Lines`] stream | null / lines / lines | checked at the end |
//! | [`spawn_detached`](Command::spawn_detached) | the pid, once it runs | null / null / null (files only) | not waited for |
//!
//! "Checked" means a status outside [`ok_codes`](Command::ok_codes) (default `[0]`) is an
//! [`Error::Exit`]. [`timeout`](Command::timeout) kills the command and everything it
//! started; dropping a [`Child`] does the same. What must outlive the script (a service it
//! restarts) is started with [`spawn_detached`](Command::spawn_detached), in a session of
//! its own.
//!
//! # Machines
//!
//! [`LocalMachine`] runs commands here. `with_cwd` and `with_env` return views of a machine
//! instead of changing the process's directory or environment.
//!
//! [`SshMachine`] makes the same calls on a remote host over one SSH connection (every
//! process on its own channel); pipelines may mix machines. [`SshMachine::connect_sock`]
//! and [`SshMachine::tunnel`] reach services on the remote side through that connection;
//! [`LocalMachine::connect_sock`] is the same call here.
//!
//! Both implement the [`Machine`] trait (in the prelude), so a step written once as
//! `async fn deploy(m: &impl Machine)` runs on either.
//!
//! # Files
//!
//! [`LocalMachine::path`] and [`SshMachine::path`] give a [`MachinePath`]: a path bound to
//! its machine, with the same file calls on both (`read`, `write`, `list`, `glob`, `mkdir`,
//! `remove_all`, `rename`, `chmod`, `metadata`, ...), SFTP on a channel of the SSH
//! connection remotely. [`SshMachine::upload`], [`SshMachine::download`] and [`copy`] move
//! files and trees between machines; `tempdir()` gives a [`TempDir`] on either machine.
//!
//! # Another user, prompts, secrets
//!
//! `machine.sudo()` / `sudo_as("postgres")` is a view on which commands (and, on an SSH
//! machine, file operations too) run as that user; sudo's password comes from
//! [`SshBuilder::sudo_password`] or a callback asked once, and a refused one is an
//! [`Error::Sudo`] at once. [`Command::respond`] answers a program's prompts as they
//! appear. A [`Secret`] is an argument, environment value, stdin or answer whose bytes
//! reach the program while `Display`, `Debug`, errors and logs show `***`.
//!
//! ```no_run
//! # async fn demo(web1: leadpipe::SshMachine) -> leadpipe::Result<()> {
//! use leadpipe::prelude::*;
//! let token = Secret::new(std::env::var("DEPLOY_TOKEN").unwrap_or_default());
//! let root = web1.sudo_password(Secret::new("s3cret")).sudo();
//! root.upload("dist/app.service", "/etc/systemd/system/app.service").await?;
//! root.cmd("/srv/app/bin/migrate").env("DEPLOY_TOKEN", &token).run().await?;
//! # Ok(()) }
//! ```
//!
//! # Without async
//!
//! [`blocking`] gives every call to a plain `fn main`: write `.wait()` where async code
//! writes `.await`.
//!
//! # When the script ends
//!
//! Nothing it started outlives it, however it ends: dropped handles are cleaned up on
//! leadpipe's own runtime (also from a blocking `main`, and while an async `main` returns or
//! unwinds), and Ctrl-C, SIGTERM and SIGHUP stop every local and remote process and remove
//! the temp dirs before the script dies of the signal. [`signals`] has the opt-out and
//! what `std::process::exit` and SIGKILL leave.
//!
//! # Errors
//!
//! One [`enum@Error`] type. Its `Display` is meant for the person running the script:
//!
//! ```text
//! stage 1 of 2 failed with exit code 2 on local:
//!   $ ls /nope | wc -l
//!   stage 1: ls /nope
//!   stderr: ls: cannot access '/nope': No such file or directory
//! ```
//!
//! Connection failures carry their data too: [`Error::io_kind`] tells a refused connection
//! from a timeout, [`HostKeyProblem`] an unknown host key from a changed one,
//! [`ChannelRefusal`] the server's reason code. `Error` is `Send + Sync + 'static` and
//! chains its causes as [`source`](std::error::Error::source), so `?` also takes it into
//! `anyhow::Result` or `Box<dyn std::error::Error>`.
//!
//! Every start emits a `tracing` event at debug level with the command line and machine.
//!
//! # Features
//!
//! - `ssh` (default): [`SshMachine`] and everything remote (tunnels, SFTP, known_hosts,
//!   [`Fleet`]).
//!   A script that only runs local commands builds faster without it:
//!   `leadpipe = { version = "0.1", default-features = false }`. The error variants only
//!   SSH produces ([`Error::Connect`], [`Error::HostKey`], ...) stay in [`enum@Error`]
//!   either way, so matching on them compiles with and without the feature.
//! - `progress-bar`: `Transfer::progress_bar`, progress on an `indicatif` bar.
//!
//! leadpipe runs on Unix only (Linux, macOS, the BSDs).

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(unix))]
compile_error!(
    "leadpipe supports Unix only (Linux, macOS, the BSDs): it relies on process groups, \
     signals and Unix sockets"
);

pub mod blocking;
mod child;
mod cmd_macro;
mod command;
mod error;
mod exec;
mod files;
#[cfg(feature = "ssh")]
mod fleet;
#[cfg(feature = "ssh")]
#[cfg_attr(docsrs, doc(cfg(feature = "ssh")))]
pub use crate::fleet::{Fleet, FleetBuilder, FleetCommand, FleetReport, Inventory};
mod lifecycle;
mod lines;
mod local;
mod machine;
mod machine_trait;
mod mixed;
mod observe;
mod pipeline;
mod quote;
mod redirect;
mod respond;
mod secret;
pub mod signals;
mod socket;
#[cfg(feature = "ssh")]
mod ssh;
mod status;
mod sudo;

#[cfg(feature = "ssh")]
#[cfg_attr(docsrs, doc(cfg(feature = "ssh")))]
pub use crate::ssh::{HostKeyPolicy, ReverseTunnel, SshBuilder, SshMachine, SshSettings, Tunnel};
pub use crate::{
    child::{Child, ChildStderr, ChildStdin, ChildStdout},
    command::Command,
    error::{ChannelRefusal, Error, ExitError, HostKeyProblem, Result},
    files::{FileError, FileKind, IntoMachinePath, MachinePath, Metadata, TempDir, Transfer, copy},
    lines::{Line, Lines},
    local::{LocalMachine, local},
    machine_trait::Machine,
    pipeline::Pipeline,
    redirect::{Input, Redirect},
    secret::{ArgValue, Secret},
    socket::Socket,
    status::{ExitStatus, Output, Signal},
};

/// The names a script needs: `use leadpipe::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "ssh")]
    pub use crate::SshMachine;
    pub use crate::{
        Command, Error, Input, LocalMachine, Machine, Pipeline, Redirect, Result, Secret, cmd,
        local,
    };
}

/// What the `cmd!` expansion needs from this crate that is not part of its API.
#[doc(hidden)]
pub mod __private {
    pub use leadpipe_macros::cmd_impl;
}

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
