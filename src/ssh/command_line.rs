//! The remote command line: a whole pipeline as one POSIX `sh` command line.
//!
//! A remote pipeline runs as one command line, so its data flows from remote process to
//! remote process and never crosses the network. Every word goes through
//! [`quote::push_word`](crate::quote::push_word), the one quoting function, so any byte
//! string arrives as the same bytes. Around the user's commands the line adds three
//! things, written to the channel's stderr behind a random *marker* that cannot occur by
//! accident (and that [`super::markers`] strips from what the user sees). They go through
//! descriptor 3, a copy of the channel's stderr made first, so that no redirect of the
//! user's (`2>&1`, `2> file`) can divert them; the programs themselves get fd 3 closed.
//!
//! 1. the shell's pid, before anything else runs. sshd starts each session's shell as a
//!    session (and process group) leader, so that pid names the group of everything the
//!    line starts: killing `-pid` from a second channel stops the whole pipeline, also for
//!    logins where OpenSSH refuses `signal` requests (root: "session signalling requires
//!    privilege separation").
//! 2. for each program that cannot be found, its name, so the error is
//!    [`Error::CommandNotFound`](crate::Error::CommandNotFound), not exit code 127.
//! 3. for a pipeline of several stages, each stage's `$?`: POSIX `sh` has no `pipefail` and
//!    sshd reports only the last stage's status.
//!
//! A single command is `exec`ed, so sshd reports its own exit status or signal.

use std::os::unix::ffi::OsStrExt;

use crate::{
    machine::{Plan, StagePlan, StderrPlan, StdinPlan, StdoutPlan},
    quote::push_word,
};

/// Builds the line for `plan`; `marker` is the random tag of this run's status lines.
pub(crate) fn build(plan: &Plan, marker: &str) -> Vec<u8> {
    let mut line = Vec::new();
    line.extend_from_slice(
        format!("exec 3>&2; printf '\\036{marker}:pid:%d\\n' $$ >&3; ").as_bytes(),
    );
    // A directory shared by every stage (the usual case: a machine view's) is entered once,
    // before the programs are looked up, so relative program paths resolve in it.
    let first_cwd = plan.stages[0].command.spec().cwd.clone();
    let shared_cwd = plan
        .stages
        .iter()
        .all(|s| s.command.spec().cwd == first_cwd)
        .then_some(first_cwd)
        .flatten();
    if let Some(dir) = &shared_cwd {
        line.extend_from_slice(b"cd ");
        push_word(&mut line, dir.as_os_str().as_bytes(), false);
        line.extend_from_slice(b" || exit 1; ");
    }
    line.extend_from_slice(b"for p in");
    for stage in &plan.stages {
        line.push(b' ');
        push_word(&mut line, stage.command.spec().program.as_bytes(), false);
    }
    line.extend_from_slice(
        format!(
            "; do command -v \"$p\" >/dev/null 2>&1 || {{ printf '\\036{marker}:missing:%s\\n' \"$p\" >&3; exit 127; }}; done; "
        )
        .as_bytes(),
    );
    if plan.stages.len() == 1 {
        line.extend_from_slice(b"exec ");
        push_stage(&mut line, &plan.stages[0], shared_cwd.is_none(), false);
        return line;
    }
    // `(a | b) 2>&1`: every stage's stderr joins the pipeline's stdout.
    let merged = plan
        .stages
        .iter()
        .all(|s| s.stderr == StderrPlan::PipelineStdout);
    if merged {
        line.extend_from_slice(b"{ ");
    }
    for (i, stage) in plan.stages.iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(b" | ");
        }
        line.extend_from_slice(b"{ ");
        push_stage(&mut line, stage, shared_cwd.is_none(), merged);
        line.extend_from_slice(
            format!("; printf '\\036{marker}:status:{i}:%d\\n' $? >&3; }}").as_bytes(),
        );
    }
    if merged {
        line.extend_from_slice(b"; } 2>&1");
    }
    line
}

/// One stage: its own directory (when not shared), environment, program, arguments and
/// redirects.
fn push_stage(line: &mut Vec<u8>, stage: &StagePlan, own_cwd: bool, merged: bool) {
    let spec = stage.command.spec();
    let subshell = own_cwd && spec.cwd.is_some();
    if subshell {
        line.extend_from_slice(b"( cd ");
        push_word(
            line,
            spec.cwd
                .as_deref()
                .unwrap_or(std::path::Path::new("."))
                .as_os_str()
                .as_bytes(),
            false,
        );
        line.extend_from_slice(b" && exec ");
    }
    if spec.env_clear || !spec.env.is_empty() {
        line.extend_from_slice(b"env");
        if spec.env_clear {
            line.extend_from_slice(b" -i");
        }
        for (key, value) in &spec.env {
            line.push(b' ');
            match value {
                Some(value) => {
                    let mut pair = key.as_bytes().to_vec();
                    pair.push(b'=');
                    pair.extend_from_slice(value.as_bytes());
                    push_word(line, &pair, false);
                }
                None => {
                    line.extend_from_slice(b"-u ");
                    push_word(line, key.as_bytes(), false);
                }
            }
        }
        line.push(b' ');
        // `env` would read a program named `A=b` as one more variable.
        push_word(line, spec.program.as_bytes(), true);
    } else {
        push_word(line, spec.program.as_bytes(), true);
    }
    for arg in &spec.args {
        line.push(b' ');
        push_word(line, arg.as_bytes(), false);
    }
    if subshell {
        line.extend_from_slice(b" )");
    }
    push_redirects(line, stage, merged);
}

/// `merged`: the pipeline as a whole sends stderr to its stdout, so a stage adds nothing.
fn push_redirects(line: &mut Vec<u8>, stage: &StagePlan, merged: bool) {
    line.extend_from_slice(b" 3>&-");
    let mut redirect = |op: &[u8], path: &[u8]| {
        line.push(b' ');
        line.extend_from_slice(op);
        line.push(b' ');
        push_word(line, path, false);
    };
    // With a pty, an unset stdin stays on the terminal (that is what the pty is for).
    let on_terminal = stage.command.spec().pty && stage.command.spec().stdin.is_none();
    match &stage.stdin {
        StdinPlan::Null | StdinPlan::Inherit if on_terminal => {}
        StdinPlan::Null | StdinPlan::Inherit => redirect(b"<", b"/dev/null"),
        StdinPlan::File(path) => redirect(b"<", path.as_os_str().as_bytes()),
        StdinPlan::Pipe | StdinPlan::Previous => {}
    }
    match &stage.stdout {
        StdoutPlan::Null => redirect(b">", b"/dev/null"),
        StdoutPlan::File(path) => redirect(b">", path.as_os_str().as_bytes()),
        StdoutPlan::Append(path) => redirect(b">>", path.as_os_str().as_bytes()),
        StdoutPlan::Inherit | StdoutPlan::Pipe | StdoutPlan::Next => {}
    }
    match &stage.stderr {
        StderrPlan::Null => redirect(b"2>", b"/dev/null"),
        StderrPlan::File(path) => redirect(b"2>", path.as_os_str().as_bytes()),
        StderrPlan::Append(path) => redirect(b"2>>", path.as_os_str().as_bytes()),
        // After the stdout redirect above, so it follows stdout's final target. A single
        // command's `PipelineStdout` is its own stdout; in a longer pipeline `build` wraps
        // the whole when every stage asks for it (the only way the API sets it).
        StderrPlan::Stdout => line.extend_from_slice(b" 2>&1"),
        StderrPlan::PipelineStdout if !merged => line.extend_from_slice(b" 2>&1"),
        StderrPlan::Inherit | StderrPlan::Pipe | StderrPlan::PipelineStdout => {}
    }
}
