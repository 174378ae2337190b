//! The remote command line: how a pipeline runs on an SSH machine, and how it reports back.
//!
//! One concept in one file: the exec string leadpipe sends, the script it feeds that string,
//! the reports the script writes, how they are told apart from the user's output, and
//! what each report means. The pump (`process.rs`) only moves bytes and asks this module.
//!
//! # What goes over the channel
//!
//! sshd hands the exec string to the user's *login shell* (`$SHELL -c STRING`): bash, dash,
//! zsh, tcsh, fish... They do not agree on quoting or redirects (tcsh: "Ambiguous output
//! redirect"; fish treats `\` in single quotes specially). So the exec string is always
//! the same [`BOOTSTRAP`], written in the little syntax they all read alike:
//! `exec /bin/sh -c '...'`, where the quoted text has no `'`, no `\\`, no `!` and no
//! newline. **Every command runs under `/bin/sh`, whatever the login shell.** The first
//! command of a connection also reports the login shell ([`LoginShell`]); when it is a
//! POSIX shell that splits fields as `sh` does, later commands send the quoted text itself
//! ([`BOOTSTRAP_DIRECT`]), which that shell runs the same way, one `exec` cheaper.
//!
//! The bootstrap reads two lines from the channel's stdin before anything else: the
//! *marker* and the *script* (the whole pipeline as one line of `sh`), then `eval`s the
//! script. What follows on stdin is the user's stdin: `read` takes a pipe one byte at a
//! time, so it never consumes past its line. The script, not the exec string, carries the
//! user's words, for three reasons:
//! - **Secrecy.** Anything in an argv is readable by every process the line starts
//!   (`/proc/$PPID/cmdline`) and by other users through `ps`. The marker that
//!   authenticates the reports must not be: it lives only in the remote shell's memory.
//!   (Environment values set with `export` stay out of any argv too.)
//! - **Size.** The exec string is one SSH packet and one argv string; sshd drops the whole
//!   connection (every call in flight) past the packet limit. On stdin, a pipeline is
//!   limited only by what `execve` takes per program ([`MAX_ARG_BYTES`], [`MAX_STAGE_BYTES`]),
//!   which [`check`] enforces before anything is sent.
//! - **One syntax.** The script is parsed by `/bin/sh` only.
//!
//! A word that contains a newline is written as `'...'"$lp_n"'...'` ([`push_word_one_line`]),
//! so the script stays one line; `lp_n` is a newline taken from the shell's default `IFS`.
//!
//! # Reports
//!
//! The script writes reports to descriptor 3, a copy of the channel's stderr made before
//! any user program runs (which get it closed), so no redirect of the user's can divert
//! them. Each is one `printf` of `\x1e<marker>:<body>\n`, well under `PIPE_BUF`, so no
//! other output lands inside one. [`Filter`] removes them from the stderr stream, in one
//! pass (linear in its input, a body longer than [`MAX_BODY`] is not a report), and
//! [`Reports`] keeps what they say:
//! - `pid:N`: the shell's pid, first of all. sshd starts each session's shell as a session
//!   (and group) leader, so `-N` names everything the line starts; kills go there.
//! - `missing:I:PATH`, `noexec:I`, `nocwd:I:WHY`: stage `I` (or `-` for the whole line)
//!   could not start. Every program is checked before any starts (as locally), by a `PATH`
//!   walk in the shell itself: no extra process per command.
//! - `status:I:CODE`: stage `I`'s `$?`, for a pipeline of several stages (POSIX `sh` has no
//!   `pipefail`, and sshd reports only the last stage). Each stage runs as
//!   `{ (exec PROGRAM ...); report $?; }`: the program, never a builtin, runs in a child
//!   of the wrapper, so a stage killed by a signal (SIGPIPE included) still has its status
//!   reported, exactly as bash's `PIPESTATUS` shows it.
//!
//! - `detached:PID`: for a detached plan (`spawn_detached`), the pid of what the line
//!   started in the background in a session of its own ([`push_detached_script`]); the
//!   line exits right after it.
//!
//! A single command is `exec`ed by the shell itself, so sshd reports its exit status or
//! signal exactly.
//!
//! **Forgery.** A user program cannot write a report: it would need the marker, which is
//! in no argv and no environment it can read. Even so, every report is accepted at most
//! once per slot (the first pid, the first status of each stage, the first start failure),
//! and the pid — the one number leadpipe will ever signal — is the first report of all,
//! written before any user program exists; the kill line checks once more that it still
//! leads its own process group ([`kill_line`]).

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, path::Path, sync::atomic::Ordering};

use crate::{
    Signal,
    machine::{Plan, Process, StagePlan, StderrPlan, StdinPlan, StdoutPlan},
    quote::push_word_one_line,
};

/// The part of the exec string that any POSIX shell runs: it defines the helpers the
/// script calls (`lp_r BODY` writes a report, `lp_x STAGE PROGRAM [PATH]` checks that a
/// program can be started, `lp_c STAGE DIR` enters a directory, `lp_e KIND DETAIL` reports
/// a start failure and exits), reads the marker and the script from stdin, and runs it.
/// It holds no `'`, `\\`, `!` or newline, so it can be single-quoted for any login shell.
macro_rules! bootstrap_body {
    () => {
        concat!(
            "set -f; lp_n=${IFS#??}; lp_n=${lp_n%\"${lp_n#?}\"}; ",
            "IFS= read -r lp_m || exit 125; IFS= read -r lp_s || exit 125; ",
            "lp_r() { printf \"\\036%s:%.8192s\\n\" \"$lp_m\" \"$1\" >&3; }; ",
            "lp_e() { lp_r \"$1:$2\"; exit 127; }; ",
            "lp_x() { case $2 in */*) [ -f \"$2\" ] && [ -x \"$2\" ] && return 0; ",
            "[ -e \"$2\" ] && lp_e noexec \"$1\"; lp_e missing \"$1:\";; esac; ",
            "lp_f=; lp_i=$IFS; IFS=:; for lp_d in ${3-$PATH}; do ",
            "[ -f \"${lp_d:-.}/$2\" ] || continue; ",
            "[ -x \"${lp_d:-.}/$2\" ] && { IFS=$lp_i; return 0; }; lp_f=1; done; IFS=$lp_i; ",
            "[ -z \"$lp_f\" ] || lp_e noexec \"$1\"; lp_e missing \"$1:${3-$PATH}\"; }; ",
            "lp_c() { cd \"$2\" 2>/dev/null && return 0; if [ -d \"$2\" ]; then lp_e nocwd \"$1:denied\"; ",
            "elif [ -e \"$2\" ]; then lp_e nocwd \"$1:notdir\"; else lp_e nocwd \"$1:missing\"; fi; }; ",
            "eval \"$lp_s\"",
        )
    };
}

/// The exec string for any login shell: the body, run by `/bin/sh`. bash, dash, zsh, tcsh
/// and fish all read `exec /bin/sh -c '...'` alike (see the module docs).
pub(crate) const BOOTSTRAP: &str = concat!("exec /bin/sh -c '", bootstrap_body!(), "'");

/// The exec string for a login shell known to be a POSIX shell that splits fields as `sh`
/// does (sh, dash, bash, ksh, mksh, ash): the body itself, which saves starting
/// `/bin/sh` (about half a millisecond of the server's CPU per command).
pub(crate) const BOOTSTRAP_DIRECT: &str = bootstrap_body!();

/// What a connection knows of its login shell: nothing yet, or whether it runs
/// [`BOOTSTRAP_DIRECT`]. Learnt from the `login:` report of the first command, which
/// carries `$SHELL` (sshd sets it from the user's passwd entry) and the shell of the
/// user's line in /etc/passwd.
#[derive(Debug, Default)]
pub(crate) struct LoginShell(std::sync::atomic::AtomicU8);

const UNKNOWN: u8 = 0;
const POSIX: u8 = 1;
const OTHER: u8 = 2;

impl LoginShell {
    /// The exec string to send, and whether the script should report the login shell.
    pub(crate) fn exec_string(&self) -> (&'static str, bool) {
        match self.0.load(Ordering::Relaxed) {
            POSIX => (BOOTSTRAP_DIRECT, false),
            OTHER => (BOOTSTRAP, false),
            _ => (BOOTSTRAP, true),
        }
    }

    /// Takes a `login:` report: `$SHELL:PASSWD_SHELL`. Only when both name a POSIX shell
    /// does the connection send [`BOOTSTRAP_DIRECT`].
    pub(crate) fn learn(&self, report: &[u8]) {
        let posix = |path: &[u8]| {
            let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
            matches!(name, b"sh" | b"dash" | b"bash" | b"ksh" | b"mksh" | b"ash")
        };
        let mut paths = report.splitn(2, |&b| b == b':');
        let both = paths.next().is_some_and(posix) && paths.next().is_some_and(posix);
        let known = if both { POSIX } else { OTHER };
        let _ = self
            .0
            .compare_exchange(UNKNOWN, known, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The longest argument (or `NAME=value` environment entry) a remote program can be given:
/// Linux's `MAX_ARG_STRLEN` (32 pages) less the terminating NUL. Locally the kernel
/// refuses the same sizes.
pub(crate) const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

/// The most a remote stage's program, arguments and environment entries may add up to
/// (each counted with its NUL and its pointer): half of the usual `ARG_MAX` of 2 MiB,
/// leaving the rest to the environment the remote login brings.
pub(crate) const MAX_STAGE_BYTES: usize = 1 << 20;

/// The longest report body [`Filter`] accepts (the script prints at most 8192 bytes of
/// one, a long `PATH` cut there); longer, the bytes are not a report.
pub(crate) const MAX_BODY: usize = 8192 + 64;

/// The random tag of one run's reports.
pub(crate) struct Marker(String);

impl Marker {
    /// 128 random bits, new for every run.
    pub(crate) fn new() -> Marker {
        Marker(crate::sudo::token())
    }

    #[cfg(test)]
    pub(crate) fn fixed(text: &str) -> Marker {
        Marker(text.to_owned())
    }
}

/// What is sent on the channel's stdin before the user's stdin: the marker line and the
/// script line.
/// `ask_login`: the script also reports the login shell (`login:$SHELL`).
/// `group`: the line runs under sudo, and reports its process group rather than its pid
/// (see `ssh/sudo.rs`).
pub(crate) fn header(plan: &Plan, marker: &Marker, ask_login: bool, group: bool) -> Vec<u8> {
    let mut header = Vec::with_capacity(256);
    header.extend_from_slice(marker.0.as_bytes());
    header.push(b'\n');
    if plan.detached {
        push_detached_script(&mut header, plan, ask_login, group);
    } else {
        push_script(&mut header, plan, ask_login, group);
    }
    header.push(b'\n');
    header
}

/// The shell variable holding a newline (set by [`BOOTSTRAP`]).
const NEWLINE_VAR: &str = "lp_n";

fn push_word(line: &mut Vec<u8>, word: &[u8]) {
    push_word_one_line(line, word, false, NEWLINE_VAR);
}

/// A directory for `cd`: a relative one gets `./`, so that `cd` neither reads it as an
/// option nor searches `CDPATH` for it.
fn push_dir(line: &mut Vec<u8>, dir: &Path) {
    let bytes = dir.as_os_str().as_bytes();
    if bytes.starts_with(b"/") {
        push_word(line, bytes);
    } else {
        let mut relative = b"./".to_vec();
        relative.extend_from_slice(bytes);
        push_word(line, &relative);
    }
}

/// The pipeline as one line of `sh` (no newline byte in it).
fn push_script(s: &mut Vec<u8>, plan: &Plan, ask_login: bool, group: bool) {
    push_first_reports(s, ask_login, group);
    if plan.stages.iter().any(|stage| stage.process.pty) {
        // The pty was opened without echo and line editing, so that the header is neither
        // echoed into the output nor cut at the terminal's line limit; give the programs
        // the terminal they expect.
        s.extend_from_slice(b"stty icanon echo 2>/dev/null; ");
    }
    // A directory shared by every stage (the usual case: a machine view's) is entered once,
    // before the programs are looked up, so relative program paths resolve in it.
    let shared_cwd = shared_cwd(plan);
    if let Some(dir) = &shared_cwd {
        s.extend_from_slice(b"lp_c - ");
        push_dir(s, dir);
        s.extend_from_slice(b"; ");
    }
    let own_cwd = shared_cwd.is_none();
    for (i, stage) in plan.stages.iter().enumerate() {
        if !(own_cwd && stage.process.cwd.is_some()) {
            push_check(s, i, stage);
        }
    }
    if plan.stages.len() == 1 {
        push_exec(s, &plan.stages[0], false);
        return;
    }
    // `(a | b) 2>&1`: every stage's stderr joins the pipeline's stdout.
    let merged = plan
        .stages
        .iter()
        .all(|stage| stage.stderr == StderrPlan::PipelineStdout);
    if merged {
        s.extend_from_slice(b"{ ");
    }
    for (i, stage) in plan.stages.iter().enumerate() {
        if i > 0 {
            s.extend_from_slice(b" | ");
        }
        s.extend_from_slice(b"{ ( ");
        if let (true, Some(dir)) = (own_cwd, &stage.process.cwd) {
            s.extend_from_slice(format!("lp_c {i} ").as_bytes());
            push_dir(s, dir);
            s.extend_from_slice(b"; ");
            push_check(s, i, stage);
        }
        push_exec(s, stage, merged);
        s.extend_from_slice(format!(" ); lp_r \"status:{i}:$?\"; }}").as_bytes());
    }
    if merged {
        s.extend_from_slice(b"; } 2>&1");
    }
}

/// What every script does first: fd 3 for the reports, the pid, and (`ask_login`) the
/// login shell. `group`: the shell's process group instead of its pid (under sudo, the
/// shell leads no group: sudo, or sudo's terminal session, does).
fn push_first_reports(s: &mut Vec<u8>, ask_login: bool, group: bool) {
    if group {
        s.extend_from_slice(
            b"exec 3>&2; if read -r lp_g < /proc/$$/stat; then lp_g=${lp_g##*) }; \
              set -- $lp_g; lp_r pid:$3; else lp_r pid:$$; fi 2>/dev/null; ",
        );
    } else {
        s.extend_from_slice(b"exec 3>&2; lp_r pid:$$; ");
    }
    if ask_login {
        // The login shell as sshd found it (`$SHELL`) and as /etc/passwd names it (an rc
        // file may change `$SHELL`; a user from another name service has no line there).
        s.extend_from_slice(
            b"lp_u=$(id -u); lp_p=; while IFS=: read -r lp_a lp_a lp_b lp_a lp_a lp_a lp_c; do \
              [ \"$lp_b\" = \"$lp_u\" ] && lp_p=$lp_c; done < /etc/passwd; \
              lp_r \"login:${SHELL-}:$lp_p\"; ",
        );
    }
}

/// The working directory of every stage, when they all have the same one.
fn shared_cwd(plan: &Plan) -> Option<std::path::PathBuf> {
    let first_cwd = plan.stages[0].process.cwd.clone();
    plan.stages
        .iter()
        .all(|stage| stage.process.cwd == first_cwd)
        .then_some(first_cwd)
        .flatten()
}

/// The script of a detached plan (`spawn_detached`), one line like [`push_script`]'s.
///
/// Every program and directory is checked first, as for any pipeline (start failures are
/// reported the same way). Then the stages start in the background under a `/bin/sh` of
/// their own, given the pipeline as its `-c` script: through `setsid` where the machine
/// has it, so that shell leads a new session (for one stage it `exec`s the program, which
/// then leads it); else with SIGHUP ignored, in the login's session. That shell writes its
/// pid (`$$`) to a command substitution of this line, then points its stdout at
/// `/dev/null`: so the line reads the pid once that shell runs in its session (`$!` could
/// come before `setsid` did), and goes on. Every stream is `/dev/null` unless redirected
/// to a file (`exec` plans nothing else), and neither that shell nor the stages hold a
/// descriptor of the channel (fd 3 included), so sshd closes the channel when this line
/// exits, which it does at once, after one report, `detached:PID`. The session survives
/// the channel and the connection: nothing sshd signals reaches it.
fn push_detached_script(s: &mut Vec<u8>, plan: &Plan, ask_login: bool, group: bool) {
    push_first_reports(s, ask_login, group);
    let shared_cwd = shared_cwd(plan);
    if let Some(dir) = &shared_cwd {
        s.extend_from_slice(b"lp_c - ");
        push_dir(s, dir);
        s.extend_from_slice(b"; ");
    }
    let own_cwd = |stage: &StagePlan| match (&shared_cwd, &stage.process.cwd) {
        (None, Some(dir)) => Some(dir.clone()),
        _ => None,
    };
    for (i, stage) in plan.stages.iter().enumerate() {
        match own_cwd(stage) {
            // Checked in a subshell, so the line stays where it is; its failure ends it.
            Some(dir) => {
                s.extend_from_slice(format!("( lp_c {i} ").as_bytes());
                push_dir(s, &dir);
                s.extend_from_slice(b"; ");
                push_check(s, i, stage);
                s.extend_from_slice(b") || exit 127; ");
            }
            None => push_check(s, i, stage),
        }
    }
    // The detached shell's script. It has none of the helpers, so it defines the newline
    // that words spanning lines are written with; it tells its pid, once it runs in its new
    // session, on the stdout the line reads it from, and then lets go of that pipe.
    let mut inner =
        format!("unset lp_dt; {NEWLINE_VAR}='\n'; echo $$; exec >/dev/null; ").into_bytes();
    let merged = plan.stages.len() > 1
        && plan
            .stages
            .iter()
            .all(|stage| stage.stderr == StderrPlan::PipelineStdout);
    if merged {
        inner.extend_from_slice(b"{ ");
    }
    for (i, stage) in plan.stages.iter().enumerate() {
        if plan.stages.len() > 1 {
            inner.extend_from_slice(if i == 0 { b"( " } else { b" | ( " });
        }
        if let Some(dir) = own_cwd(stage) {
            inner.extend_from_slice(b"cd ");
            push_dir(&mut inner, &dir);
            inner.extend_from_slice(b" || exit 127; ");
        }
        push_exec(&mut inner, stage, merged);
        if plan.stages.len() > 1 {
            inner.extend_from_slice(b" )");
        }
    }
    if merged {
        inner.extend_from_slice(b"; } 2>&1");
    }
    // The script goes to that shell in its environment, not its argv: the environment
    // values and words in it stay out of `ps` while the detached pipeline runs (a
    // process's environment is readable only by its user and root). It unsets the
    // variable first, so no program inherits it.
    s.extend_from_slice(b"lp_dt=");
    push_word(s, &inner);
    s.extend_from_slice(
        b"; if command -v setsid >/dev/null 2>&1; \
          then lp_dp=$(lp_dt=$lp_dt setsid /bin/sh -c 'eval \"$lp_dt\"' sh </dev/null 2>/dev/null 3>&- &); \
          else lp_dp=$(trap '' HUP; lp_dt=$lp_dt /bin/sh -c 'eval \"$lp_dt\"' sh </dev/null 2>/dev/null 3>&- &); fi; \
          lp_r \"detached:$lp_dp\"; exit 0",
    );
}

/// `lp_x I PROGRAM [PATH]`: the stage's own `PATH`, when it sets one, is the one searched.
fn push_check(s: &mut Vec<u8>, index: usize, stage: &StagePlan) {
    let spec = &stage.process;
    s.extend_from_slice(format!("lp_x {index} ").as_bytes());
    push_word(s, spec.program.as_bytes());
    let path = spec
        .env
        .iter()
        .find(|(name, _)| name == "PATH")
        .and_then(|(_, value)| value.as_ref());
    if let Some(path) = path {
        s.push(b' ');
        push_word(s, path.as_bytes());
    }
    s.extend_from_slice(b"; ");
}

/// Names that `export` must not set: the shell's own variables (some read-only in bash),
/// and leadpipe's (`lp_*`). They, and names that are not shell identifiers, go through
/// `env` instead.
fn exportable(name: &[u8]) -> bool {
    const SHELL_OWN: &[&[u8]] = &[
        b"IFS",
        b"PPID",
        b"OPTIND",
        b"OPTARG",
        b"LINENO",
        b"PS1",
        b"PS2",
        b"PS4",
        b"ENV",
        b"UID",
        b"EUID",
        b"GROUPS",
        b"SHELLOPTS",
        b"BASHOPTS",
        b"HOSTTYPE",
        b"MACHTYPE",
        b"OSTYPE",
        b"CDPATH",
    ];
    let identifier = name
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_');
    identifier
        && !name.starts_with(b"lp_")
        && !name.starts_with(b"BASH")
        && !SHELL_OWN.contains(&name)
}

/// Whether the stage's environment is set by `env` (a cleared environment, or a name
/// `export` must not set) rather than by the shell itself.
fn through_env(process: &Process) -> bool {
    process.env_clear
        || process
            .env
            .iter()
            .any(|(name, _)| !exportable(name.as_bytes()))
}

/// `[export NAME=value; ...] exec PROGRAM ARGS 3>&- REDIRECTS`, or, when `env` must set
/// the environment, [`push_exec_through_env`]'s line.
fn push_exec(s: &mut Vec<u8>, stage: &StagePlan, merged: bool) {
    let spec = &stage.process;
    if through_env(spec) {
        push_exec_through_env(s, stage, merged);
        return;
    }
    for (name, value) in &spec.env {
        match value {
            Some(value) => {
                s.extend_from_slice(b"export ");
                s.extend_from_slice(name.as_bytes());
                s.push(b'=');
                push_word(s, value.as_bytes());
            }
            None => {
                s.extend_from_slice(b"unset ");
                s.extend_from_slice(name.as_bytes());
            }
        }
        s.extend_from_slice(b"; ");
    }
    s.extend_from_slice(b"exec ");
    push_program(s, stage, merged);
}

/// `PROGRAM ARGS 3>&- REDIRECTS`.
fn push_program(s: &mut Vec<u8>, stage: &StagePlan, merged: bool) {
    let spec = &stage.process;
    push_word_one_line(s, spec.program.as_bytes(), true, NEWLINE_VAR);
    for arg in &spec.args {
        s.push(b' ');
        push_word(s, arg.as_bytes());
    }
    push_redirects(s, stage, merged);
}

/// The delimiter of the here-document that carries environment values past `env`.
const HEREDOC_END: &str = "lp_EOF";

/// A stage whose environment `env` sets (a cleared environment, or a name `export` must
/// not set), with no value in any argv where the names allow it:
///
/// ```text
/// eval "exec env -i -- /bin/sh -c '. /dev/fd/9 && exec env -u NAME -- \"\$@\" 9<&-' \
///     sh ODD.NAME=v PROGRAM ARGS 3>&- REDIRECTS 9<<'lp_EOF'${lp_n}export NAME=value${lp_n}lp_EOF"
/// ```
///
/// The values of names a shell can set travel in a here-document (a pipe or a private
/// temp file of `sh`, never an argv), which a `/bin/sh` reads before it `exec`s `env`,
/// which `exec`s the program: the program still replaces the line's processes, so its
/// status stays exact. The outer `env -i` clears the environment; the inner `env` removes
/// names (and, for a cleared environment, what that `sh` adds itself: `PWD`, `SHLVL`...)
/// and sets names no shell can hold (`A.B`, `IFS`): only such a value is in an argv, for
/// the instant before `env` `exec`s. A here-document needs newlines, which the one-line
/// script may not hold: `eval` gets them from `$lp_n`.
fn push_exec_through_env(s: &mut Vec<u8>, stage: &StagePlan, merged: bool) {
    const SHELL_ADDS: [&str; 4] = ["PWD", "OLDPWD", "SHLVL", "_"];
    let spec = &stage.process;
    let mut inner = b". /dev/fd/9 && exec env".to_vec();
    let mut removed: Vec<&[u8]> = spec
        .env
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| name.as_bytes())
        .collect();
    if spec.env_clear {
        for name in SHELL_ADDS {
            if !spec
                .env
                .iter()
                .any(|(set, _)| set.as_bytes() == name.as_bytes())
            {
                removed.push(name.as_bytes());
            }
        }
    }
    for name in removed {
        inner.extend_from_slice(b" -u ");
        push_word(&mut inner, name);
    }
    // `--` ends env's options, so no name can be read as one (`-i`, `--chdir`,
    // `--split-string`); `-u` takes the next word whatever it starts with.
    inner.extend_from_slice(b" -- \"$@\" 9<&-");
    let mut line = b"exec ".to_vec();
    if spec.env_clear {
        line.extend_from_slice(b"env -i -- ");
    }
    line.extend_from_slice(b"/bin/sh -c ");
    push_word(&mut line, &inner);
    line.extend_from_slice(b" sh");
    let mut exports: Vec<Vec<u8>> = vec![b"lp_n='".to_vec(), b"'".to_vec()];
    for (name, value) in &spec.env {
        let Some(value) = value else { continue };
        if exportable(name.as_bytes()) {
            let mut export = b"export ".to_vec();
            export.extend_from_slice(name.as_bytes());
            export.push(b'=');
            push_word(&mut export, value.as_bytes());
            exports.push(export);
        } else {
            let mut pair = name.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            line.push(b' ');
            push_word(&mut line, &pair);
        }
    }
    line.push(b' ');
    push_program(&mut line, stage, merged);
    line.extend_from_slice(format!(" 9<<'{HEREDOC_END}'").as_bytes());
    s.extend_from_slice(b"eval \"");
    push_double_quoted(s, &line);
    for export in exports
        .iter()
        .map(Vec::as_slice)
        .chain([HEREDOC_END.as_bytes()])
    {
        s.extend_from_slice(b"${lp_n}");
        push_double_quoted(s, export);
    }
    s.push(b'"');
}

/// `text` escaped for the inside of a double-quoted string.
fn push_double_quoted(s: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        if matches!(b, b'\\' | b'"' | b'$' | b'`') {
            s.push(b'\\');
        }
        s.push(b);
    }
}

/// `merged`: the pipeline as a whole sends stderr to its stdout, so a stage adds nothing.
fn push_redirects(s: &mut Vec<u8>, stage: &StagePlan, merged: bool) {
    s.extend_from_slice(b" 3>&-");
    let mut redirect = |op: &[u8], path: &Path| {
        s.push(b' ');
        s.extend_from_slice(op);
        s.push(b' ');
        push_word(s, path.as_os_str().as_bytes());
    };
    match &stage.stdin {
        StdinPlan::Null | StdinPlan::Inherit => redirect(b"<", Path::new("/dev/null")),
        StdinPlan::File(path) => redirect(b"<", path),
        StdinPlan::Pipe | StdinPlan::Bytes(_) | StdinPlan::Previous | StdinPlan::Terminal => {}
    }
    match &stage.stdout {
        StdoutPlan::Null => redirect(b">", Path::new("/dev/null")),
        StdoutPlan::File(path) => redirect(b">", path),
        StdoutPlan::Append(path) => redirect(b">>", path),
        StdoutPlan::Inherit | StdoutPlan::Pipe | StdoutPlan::Next => {}
    }
    match &stage.stderr {
        StderrPlan::Null => redirect(b"2>", Path::new("/dev/null")),
        StderrPlan::File(path) => redirect(b"2>", path),
        StderrPlan::Append(path) => redirect(b"2>>", path),
        // After the stdout redirect above, so it follows stdout's final target. A single
        // command's `PipelineStdout` is its own stdout; in a longer pipeline the script
        // wraps the whole when every stage asks for it (the only way the API sets it).
        StderrPlan::Stdout => s.extend_from_slice(b" 2>&1"),
        StderrPlan::PipelineStdout if !merged => s.extend_from_slice(b" 2>&1"),
        StderrPlan::Inherit | StderrPlan::Pipe | StderrPlan::PipelineStdout => {}
    }
}

/// Refuses, before anything is sent, what no remote program could receive: NUL bytes
/// (C strings end there), environment names that are empty or contain `=`, and words
/// past the kernel's limits. The reason names the part and the limit.
pub(crate) fn check(plan: &Plan) -> Result<(), String> {
    for (i, stage) in plan.stages.iter().enumerate() {
        let spec = &stage.process;
        let whose = if plan.stages.len() > 1 {
            format!(" of stage {}", i + 1)
        } else {
            String::new()
        };
        let no_nul = |what: &str, bytes: &[u8]| {
            if bytes.contains(&0) {
                Err(format!(
                    "{what}{whose} contains a NUL byte, which no program can be given"
                ))
            } else {
                Ok(())
            }
        };
        let mut total = 0usize;
        let mut word = |what: &str, bytes: &[u8]| {
            no_nul(what, bytes)?;
            if bytes.len() > MAX_ARG_BYTES {
                return Err(format!(
                    "{what}{whose} is {} bytes; a remote program takes at most {MAX_ARG_BYTES} \
                     bytes in one argument or environment entry",
                    bytes.len()
                ));
            }
            total += bytes.len() + 1 + std::mem::size_of::<usize>();
            Ok(())
        };
        word("the program", spec.program.as_bytes())?;
        for (n, arg) in spec.args.iter().enumerate() {
            let shown = if spec.secret_args.contains(&n) {
                "`***`".to_owned()
            } else {
                preview(arg)
            };
            word(&format!("argument {} ({shown})", n + 1), arg.as_bytes())?;
        }
        for (name, value) in &spec.env {
            let shown = preview(name);
            if name.is_empty() {
                return Err(format!("an environment variable{whose} has an empty name"));
            }
            if name.as_bytes().contains(&b'=') {
                return Err(format!(
                    "the environment variable name {shown}{whose} contains `=`"
                ));
            }
            no_nul(
                &format!("the environment variable name {shown}"),
                name.as_bytes(),
            )?;
            if let Some(value) = value {
                let mut pair = name.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                word(&format!("the environment variable {shown}"), &pair)?;
            }
        }
        if through_env(spec)
            && !spec.program.as_bytes().contains(&b'/')
            && spec.program.as_bytes().contains(&b'=')
        {
            return Err(format!(
                "the program {}{whose} has `=` in its name, which `env` would read as a \
                 variable; give it as a path",
                preview(&spec.program)
            ));
        }
        if total > MAX_STAGE_BYTES {
            return Err(format!(
                "the program, arguments and environment{whose} add up to {total} bytes; a \
                 remote program takes at most {MAX_STAGE_BYTES}"
            ));
        }
        if let Some(dir) = &spec.cwd {
            no_nul("the working directory", dir.as_os_str().as_bytes())?;
        }
        let paths = [
            match &stage.stdin {
                StdinPlan::File(path) => Some(path),
                _ => None,
            },
            match &stage.stdout {
                StdoutPlan::File(path) | StdoutPlan::Append(path) => Some(path),
                _ => None,
            },
            match &stage.stderr {
                StderrPlan::File(path) | StderrPlan::Append(path) => Some(path),
                _ => None,
            },
        ];
        for path in paths.into_iter().flatten() {
            no_nul("a redirect's path", path.as_os_str().as_bytes())?;
        }
    }
    Ok(())
}

/// The start of a word, escaped, for an error message.
fn preview(word: &OsStr) -> String {
    let bytes = word.as_bytes();
    let shown: String = bytes
        .iter()
        .take(24)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > 24 {
        format!("`{shown}...`")
    } else {
        format!("`{shown}`")
    }
}

/// The exec string of the second channel that sends `signal` to the process group `pid`
/// leads. Where `/proc` exists, it first checks that `pid` still leads its group (its
/// `pgrp` field equals it), so a pid reused by another process is not a target. Like
/// [`BOOTSTRAP`], readable by every login shell. `None` for a pid that cannot be a
/// pipeline's group leader (0, 1).
pub(crate) fn kill_line(pid: u32, signal: Signal) -> Option<String> {
    if pid <= 1 {
        return None;
    }
    // `kill -N -PGID`, without `--`: dash's builtin reads `kill -13 -- -5` as an illegal
    // number; bash and dash both take this form.
    Some(format!(
        "exec /bin/sh -c 'set -f; if read -r lp_s < /proc/{pid}/stat; then \
         lp_s=${{lp_s##*) }}; set -- $lp_s; [ \"$3\" = {pid} ] || exit 0; fi 2>/dev/null; \
         kill -{} -{pid} 2>/dev/null'",
        signal.as_raw()
    ))
}

/// Why a directory could not be entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DirProblem {
    Missing,
    NotADirectory,
    Denied,
}

/// A report that the line could not start (a stage of) the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StartFailure {
    /// The stage's program is not on the `PATH` shown (empty for a program given as a path).
    Missing { stage: usize, path: Vec<u8> },
    /// The stage's program exists but cannot be executed.
    NotExecutable { stage: usize },
    /// The working directory of the stage (`None`: of the whole line) cannot be entered.
    NoDirectory {
        stage: Option<usize>,
        problem: DirProblem,
    },
}

/// What the reports of one run said; each slot is taken by the first report for it.
#[derive(Debug, Default)]
pub(crate) struct Reports {
    pid: Option<u32>,
    login: Option<Vec<u8>>,
    statuses: Vec<Option<i32>>,
    failure: Option<StartFailure>,
    detached: Option<u32>,
}

impl Reports {
    pub(crate) fn new(stages: usize) -> Reports {
        Reports {
            pid: None,
            login: None,
            statuses: vec![None; stages],
            failure: None,
            detached: None,
        }
    }

    /// The pid of the shell (or program) a detached script started in the background.
    pub(crate) fn detached(&self) -> Option<u32> {
        self.detached
    }

    /// The remote shell's pid, which leads the process group of the whole line.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The login shell's path, when asked for and reported.
    pub(crate) fn login(&self) -> Option<&[u8]> {
        self.login.as_deref()
    }

    /// Stage `stage`'s `$?`, when reported.
    pub(crate) fn status(&self, stage: usize) -> Option<i32> {
        self.statuses.get(stage).copied().flatten()
    }

    /// The first start failure reported.
    pub(crate) fn failure(&self) -> Option<&StartFailure> {
        self.failure.as_ref()
    }

    /// Takes one report body; anything malformed, out of range, or for a slot already
    /// filled is ignored.
    fn accept(&mut self, body: &[u8]) {
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let Some((kind, rest)) = split(body) else {
            return;
        };
        let number = |bytes: &[u8]| -> Option<usize> {
            if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(bytes).ok()?.parse().ok()
        };
        let stage = |bytes: &[u8]| number(bytes).filter(|&i| i < self.statuses.len());
        match kind {
            b"pid" => {
                if self.pid.is_none()
                    && let Some(pid) = number(rest).and_then(|n| u32::try_from(n).ok())
                    && pid > 1
                {
                    self.pid = Some(pid);
                }
            }
            b"login" if self.login.is_none() => self.login = Some(rest.to_vec()),
            b"detached" => {
                if self.detached.is_none()
                    && let Some(pid) = number(rest).and_then(|n| u32::try_from(n).ok())
                    && pid > 1
                {
                    self.detached = Some(pid);
                }
            }
            b"status" => {
                let Some((index, code)) = split(rest) else {
                    return;
                };
                if let (Some(index), Some(code)) = (stage(index), number(code))
                    && self.statuses[index].is_none()
                {
                    self.statuses[index] = i32::try_from(code).ok();
                }
            }
            _ if self.failure.is_some() => {}
            b"missing" => {
                if let Some((index, path)) = split(rest)
                    && let Some(stage) = stage(index)
                {
                    self.failure = Some(StartFailure::Missing {
                        stage,
                        path: path.to_vec(),
                    });
                }
            }
            b"noexec" => {
                if let Some(stage) = stage(rest) {
                    self.failure = Some(StartFailure::NotExecutable { stage });
                }
            }
            b"nocwd" => {
                let Some((index, why)) = split(rest) else {
                    return;
                };
                let stage = match index {
                    b"-" => None,
                    index => match stage(index) {
                        Some(stage) => Some(stage),
                        None => return,
                    },
                };
                let problem = match why {
                    b"missing" => DirProblem::Missing,
                    b"notdir" => DirProblem::NotADirectory,
                    b"denied" => DirProblem::Denied,
                    _ => return,
                };
                self.failure = Some(StartFailure::NoDirectory { stage, problem });
            }
            _ => {}
        }
    }
}

fn split(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = bytes.iter().position(|&b| b == b':')?;
    Some((&bytes[..colon], &bytes[colon + 1..]))
}

/// Where the filter stands between two chunks.
enum State {
    /// In the user's bytes.
    Text,
    /// The first `n` bytes of `\x1e<marker>:` seen (held back: they may be a report).
    Needle(usize),
    /// After a whole `\x1e<marker>:`: the body so far.
    Body(Vec<u8>),
}

/// Takes the reports out of a stderr stream (or a pty's one stream) and passes everything
/// else on unchanged and at once: it holds back only a possible start of a report. Each
/// input byte is looked at once.
pub(crate) struct Filter {
    /// `\x1e<marker>:`. Its first byte occurs nowhere else in it, so a mismatch never
    /// hides the start of another match.
    needle: Vec<u8>,
    state: State,
}

impl Filter {
    pub(crate) fn new(marker: &Marker) -> Filter {
        Filter {
            needle: format!("\x1e{}:", marker.0).into_bytes(),
            state: State::Text,
        }
    }

    /// Takes the next chunk: the user's bytes are appended to `out`, reports go to
    /// `reports`.
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>, reports: &mut Reports) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match &mut self.state {
                State::Text => match rest.iter().position(|&b| b == 0x1e) {
                    Some(at) => {
                        out.extend_from_slice(&rest[..at]);
                        rest = &rest[at + 1..];
                        self.state = State::Needle(1);
                    }
                    None => {
                        out.extend_from_slice(rest);
                        rest = &[];
                    }
                },
                State::Needle(seen) => {
                    let want = &self.needle[*seen..];
                    let same = want.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if same == want.len() {
                        rest = &rest[same..];
                        self.state = State::Body(Vec::new());
                    } else if same == rest.len() {
                        *seen += same;
                        rest = &[];
                    } else {
                        // Not a report: what was held back is the user's; the mismatching
                        // byte is looked at again as text.
                        out.extend_from_slice(&self.needle[..*seen + same]);
                        rest = &rest[same..];
                        self.state = State::Text;
                    }
                }
                State::Body(body) => {
                    let room = MAX_BODY + 1 - body.len();
                    let end = rest.iter().take(room).position(|&b| b == b'\n');
                    match end {
                        Some(end) => {
                            body.extend_from_slice(&rest[..end]);
                            reports.accept(body);
                            rest = &rest[end + 1..];
                            self.state = State::Text;
                        }
                        None if rest.len() < room => {
                            body.extend_from_slice(rest);
                            rest = &[];
                        }
                        None => {
                            // Too long to be a report: the bytes are the user's.
                            out.extend_from_slice(&self.needle);
                            out.extend_from_slice(body);
                            self.state = State::Text;
                        }
                    }
                }
            }
        }
    }

    /// The end of the stream: whatever was held back is the user's.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        match std::mem::replace(&mut self.state, State::Text) {
            State::Text => {}
            State::Needle(seen) => out.extend_from_slice(&self.needle[..seen]),
            State::Body(body) => {
                out.extend_from_slice(&self.needle);
                out.extend_from_slice(&body);
            }
        }
    }
}

/// A stage's `$?` as an exit status: the shell reports death by signal N as 128 + N.
pub(crate) fn shell_status(code: i32) -> crate::ExitStatus {
    match code {
        129..=159 => crate::ExitStatus::Signal(Signal::from_raw(code - 128)),
        _ => crate::ExitStatus::Code(code),
    }
}

#[cfg(test)]
mod tests {
    //! The line run through this machine's own shells: every report kind, forgeries,
    //! hostile bytes and limits, without sshd (the SSH tests run it against a real one).

    use std::{
        io::Write,
        process::{Command as Std, Stdio},
    };

    use super::*;
    use crate::{Command, ExitStatus, LocalMachine, machine::StagePlan};

    const MARKER: &str = "0123456789abcdef0123456789abcdef";

    /// A pipeline of `commands`, stdin from /dev/null, stdout and stderr to the channel.
    fn plan(commands: Vec<Command>) -> Plan {
        let last = commands.len() - 1;
        Plan {
            stages: commands
                .into_iter()
                .enumerate()
                .map(|(i, command)| StagePlan {
                    process: crate::exec::process_of(&command),
                    stdin: if i == 0 {
                        StdinPlan::Null
                    } else {
                        StdinPlan::Previous
                    },
                    stdout: if i == last {
                        StdoutPlan::Pipe
                    } else {
                        StdoutPlan::Next
                    },
                    stderr: StderrPlan::Pipe,
                })
                .collect(),
            detached: false,
        }
    }

    fn cmd(program: &str, args: &[&str]) -> Command {
        LocalMachine::new().cmd(program).args(args)
    }

    struct Ran {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        reports: Reports,
        status: std::process::ExitStatus,
    }

    /// Runs `plan` as sshd would: `login_shell -c EXEC`, the header then `stdin` on stdin.
    fn run_with(login_shell: &str, exec: &str, plan: &Plan, stdin: &[u8]) -> Ran {
        let mut child = Std::new(login_shell)
            .arg("-c")
            .arg(exec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {login_shell}: {e}"));
        let mut input = header(plan, &Marker::fixed(MARKER), true, false);
        input.extend_from_slice(stdin);
        let mut pipe = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let mut filter = Filter::new(&Marker::fixed(MARKER));
        let mut reports = Reports::new(plan.stages.len());
        let mut stderr = Vec::new();
        filter.feed(&output.stderr, &mut stderr, &mut reports);
        filter.finish(&mut stderr);
        Ran {
            stdout: output.stdout,
            stderr,
            reports,
            status: output.status,
        }
    }

    /// The line under `/bin/sh`, and under dash and bash in its place where installed.
    /// `direct:SHELL`: SHELL as the login shell, given [`BOOTSTRAP_DIRECT`].
    fn inner_shells() -> Vec<String> {
        let mut shells = vec!["/bin/sh".to_owned()];
        for shell in ["/bin/dash", "/bin/bash"] {
            if Path::new(shell).exists() {
                shells.push(shell.to_owned());
                shells.push(format!("direct:{shell}"));
            } else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{shell} is needed for these tests in CI"
                );
            }
        }
        shells
    }

    fn run_in(inner: &str, plan: &Plan, stdin: &[u8]) -> Ran {
        if let Some(login) = inner.strip_prefix("direct:") {
            return run_with(login, BOOTSTRAP_DIRECT, plan, stdin);
        }
        run_with(
            "/bin/sh",
            &BOOTSTRAP.replacen("/bin/sh", inner, 1),
            plan,
            stdin,
        )
    }

    fn statuses(ran: &Ran, stages: usize) -> Vec<Option<ExitStatus>> {
        (0..stages)
            .map(|i| ran.reports.status(i).map(shell_status))
            .collect()
    }

    #[test]
    fn the_bootstrap_reads_alike_in_every_login_shell() {
        let plan = plan(vec![cmd(
            "printf",
            &["%s|", "a b", "it's", "$HOME", "\\n", "!x"],
        )]);
        let mut shells = 0;
        for shell in ["bash", "dash", "zsh", "tcsh", "fish"] {
            let path = ["/bin", "/usr/bin"]
                .iter()
                .map(|dir| format!("{dir}/{shell}"))
                .find(|path| Path::new(path).exists());
            let Some(path) = path else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "the login shell {shell} is needed for this test in CI"
                );
                continue;
            };
            let ran = run_with(&path, BOOTSTRAP, &plan, b"");
            assert_eq!(ran.stdout, b"a b|it's|$HOME|\\n|!x|", "under {shell}");
            assert_eq!(ran.stderr, b"", "under {shell}");
            assert!(ran.reports.pid().is_some(), "under {shell}");
            assert!(ran.status.success(), "under {shell}");
            shells += 1;
        }
        assert!(shells >= 2);
    }

    #[test]
    fn the_login_shell_is_learnt_from_the_first_report() {
        let ran = run_in("/bin/sh", &plan(vec![cmd("true", &[])]), b"");
        let login = ran.reports.login().expect("asked for");
        let (shell, passwd) = login.split_at(login.iter().position(|&b| b == b':').unwrap());
        assert_eq!(shell, std::env::var("SHELL").unwrap_or_default().as_bytes());
        assert!(passwd.len() > 1, "this user's passwd shell: {login:?}");
        let learnt = |report: &[u8]| {
            let shell = LoginShell::default();
            assert_eq!(shell.exec_string(), (BOOTSTRAP, true));
            shell.learn(report);
            shell.exec_string()
        };
        assert_eq!(learnt(b"/bin/bash:/bin/bash"), (BOOTSTRAP_DIRECT, false));
        assert_eq!(learnt(b"/bin/sh:/usr/bin/dash"), (BOOTSTRAP_DIRECT, false));
        for other in [
            &b"/usr/bin/fish:/usr/bin/fish"[..],
            b"/bin/bash:/usr/bin/fish",
            b"/usr/bin/zsh:/usr/bin/zsh",
            b"/bin/tcsh:/bin/bash",
            b"/bin/bash:",
            b"",
        ] {
            assert_eq!(learnt(other), (BOOTSTRAP, false), "{other:?}");
        }
    }

    #[test]
    fn the_users_stdin_follows_the_header_untouched() {
        let mut p = plan(vec![cmd("cat", &[]), cmd("od", &["-An", "-c"])]);
        p.stages[0].stdin = StdinPlan::Pipe;
        for inner in inner_shells() {
            let ran = run_in(&inner, &p, b"x\ny");
            let text = String::from_utf8(ran.stdout).unwrap();
            assert_eq!(
                text.split_whitespace().collect::<Vec<_>>(),
                ["x", "\\n", "y"],
                "{inner}"
            );
        }
    }

    #[test]
    fn every_stage_reports_its_own_status_as_pipestatus_would() {
        // (pipeline, expected statuses)
        let cases: Vec<(Vec<Command>, Vec<ExitStatus>)> = vec![
            (
                vec![
                    cmd("printf", &["%0200000d", "0"]),
                    cmd("head", &["-c", "1"]),
                ],
                vec![ExitStatus::Signal(Signal::PIPE), ExitStatus::Code(0)],
            ),
            (
                vec![cmd("echo", &["hi"]), cmd("true", &[])],
                vec![ExitStatus::Code(0), ExitStatus::Code(0)],
            ),
            (
                vec![
                    cmd("printf", &["a\\nb\\n"]),
                    cmd("sh", &["-c", "exit 3"]),
                    cmd("cat", &[]),
                ],
                vec![
                    ExitStatus::Code(0),
                    ExitStatus::Code(3),
                    ExitStatus::Code(0),
                ],
            ),
            (
                vec![cmd("sh", &["-c", "kill -TERM $$"]), cmd("cat", &[])],
                vec![ExitStatus::Signal(Signal::TERM), ExitStatus::Code(0)],
            ),
        ];
        for inner in inner_shells() {
            for (commands, expected) in &cases {
                let p = plan(commands.clone());
                let ran = run_in(&inner, &p, b"");
                let got = statuses(&ran, commands.len());
                // An upstream stage whose reader ends first may finish, or die of SIGPIPE
                // (`echo hi | true`): both are right, as in bash's PIPESTATUS.
                let last = commands.len() - 1;
                let got: Vec<_> = got
                    .into_iter()
                    .zip(expected)
                    .enumerate()
                    .map(|(i, (got, want))| match (got, want) {
                        (Some(ExitStatus::Signal(Signal::PIPE)), ExitStatus::Code(0))
                            if i < last =>
                        {
                            *want
                        }
                        (got, _) => got.unwrap_or(ExitStatus::Code(-1)),
                    })
                    .collect();
                assert_eq!(&got, expected, "{inner}: {:?}", p.stages.len());
            }
        }
    }

    #[test]
    fn a_program_that_cannot_start_is_reported_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\necho ran\n").unwrap();
        let plain = plain.to_str().unwrap();
        for inner in inner_shells() {
            let ran = run_in(
                &inner,
                &plan(vec![cmd("echo", &["x"]), cmd("no-such-program-lp", &[])]),
                b"",
            );
            assert_eq!(ran.stdout, b"", "{inner}: nothing ran");
            match ran.reports.failure() {
                Some(StartFailure::Missing { stage: 1, path }) => assert!(!path.is_empty()),
                other => panic!("{inner}: {other:?}"),
            }
            let ran = run_in(&inner, &plan(vec![cmd(plain, &[])]), b"");
            assert_eq!(
                ran.reports.failure(),
                Some(&StartFailure::NotExecutable { stage: 0 }),
                "{inner}"
            );
            let ran = run_in(
                &inner,
                &plan(vec![cmd("true", &[]).env("PATH", dir.path())]),
                b"",
            );
            assert_eq!(
                ran.reports.failure(),
                Some(&StartFailure::Missing {
                    stage: 0,
                    path: dir.path().as_os_str().as_bytes().to_vec()
                }),
                "{inner}: the stage's own PATH is searched"
            );
            let ran = run_in(
                &inner,
                &plan(vec![cmd("plain", &[]).env("PATH", dir.path())]),
                b"",
            );
            assert_eq!(
                ran.reports.failure(),
                Some(&StartFailure::NotExecutable { stage: 0 }),
                "{inner}: found on PATH without the execute bit"
            );
            for (cwd, problem) in [
                ("/no/such/dir", DirProblem::Missing),
                (plain, DirProblem::NotADirectory),
            ] {
                let ran = run_in(&inner, &plan(vec![cmd("pwd", &[]).cwd(cwd)]), b"");
                assert_eq!(
                    ran.reports.failure(),
                    Some(&StartFailure::NoDirectory {
                        stage: None,
                        problem
                    }),
                    "{inner}"
                );
            }
        }
    }

    #[test]
    fn every_byte_reaches_the_program_in_args_env_values_and_cwd() {
        let all: Vec<u8> = (1..=255).collect();
        let word = OsStr::from_bytes(&all);
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(OsStr::from_bytes(&all[..46])); // up to '.' (no '/')
        std::fs::create_dir(&odd).unwrap();
        // Set by the shell, and through `env` (a cleared environment: the here-document).
        let cases = [false, true]
            .into_iter()
            .flat_map(|clear| inner_shells().into_iter().map(move |inner| (inner, clear)));
        for (inner, clear) in cases {
            let mut command = LocalMachine::new().cmd("sh").args([
                OsStr::new("-c"),
                OsStr::new("printf '%s\\0' \"$@\" \"$LP_V\"; pwd"),
                OsStr::new("sh"),
                word,
                OsStr::new("-"),
            ]);
            if clear {
                command = command.env_clear().env("PATH", "/usr/bin:/bin");
            }
            let command = command.env("LP_V", word).cwd(&odd);
            let ran = run_in(&inner, &plan(vec![command]), b"");
            let mut expected = all.clone();
            expected.extend_from_slice(b"\0-\0");
            expected.extend_from_slice(&all);
            expected.push(0);
            expected.extend_from_slice(odd.as_os_str().as_bytes());
            expected.push(b'\n');
            assert_eq!(ran.stdout, expected, "{inner}");
            assert_eq!(ran.stderr, b"", "{inner}");
        }
    }

    #[test]
    fn environment_names_are_never_options() {
        let names = [
            "--split-string",
            "-i",
            "-u",
            "--",
            "-",
            "--chdir",
            "1X",
            "A-B",
            "lp_m",
            "IFS",
        ];
        for inner in inner_shells() {
            let mut command = cmd("env", &[]);
            for name in names {
                command = command.env(name, format!("v{name}"));
            }
            let ran = run_in(&inner, &plan(vec![command]), b"");
            let text = String::from_utf8(ran.stdout).unwrap();
            for name in names {
                assert!(
                    text.lines().any(|line| line == format!("{name}=v{name}")),
                    "{inner}: {name} missing from\n{text}"
                );
            }
            assert!(
                text.lines().any(|l| l.starts_with("PATH=")),
                "{inner}: env kept"
            );
            let cleared = run_in(
                &inner,
                &plan(vec![cmd("/usr/bin/env", &[]).env_clear().env("-u", "x")]),
                b"",
            );
            assert_eq!(cleared.stdout, b"-u=x\n", "{inner}");
            let removed = run_in(
                &inner,
                &plan(vec![
                    cmd("sh", &["-c", "echo ${HOME-unset}"]).env_remove("HOME"),
                ]),
                b"",
            );
            assert_eq!(removed.stdout, b"unset\n", "{inner}");
        }
    }

    #[test]
    fn a_value_env_must_set_is_written_only_into_the_here_document() {
        let command = cmd("env", &[])
            .env_clear()
            .env("LP_TOKEN", "value-42")
            .env("A.B", "odd-7");
        let script = header(&plan(vec![command]), &Marker::fixed(MARKER), false, false);
        let at = |needle: &str| {
            script
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap_or_else(|| panic!("{needle} missing"))
        };
        assert!(
            at("value-42") > at("9<<"),
            "{}",
            String::from_utf8_lossy(&script)
        );
        // A name no shell can hold is the one exception: env's own argument.
        assert!(at("odd-7") < at("9<<"));
    }

    #[test]
    fn environment_values_are_in_no_argv_however_they_are_set() {
        // Every process's argv, read while the stage runs (its own environment is where
        // the values belong, and only it and root can read that).
        let spy = "cat /proc/[0-9]*/cmdline 2>/dev/null; echo; \
                   printf '%s|%s|%s' \"$LP_TOKEN\" \"$LP_PLAIN\" \"${PWD-none}\"";
        let value = format!("tok'en\n{}", Marker::new().0);
        let cases = [
            cmd("sh", &["-c", spy])
                .env("LP_TOKEN", &value)
                .env("LP_PLAIN", "p"),
            cmd("sh", &["-c", spy])
                .env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("LP_TOKEN", &value)
                .env("LP_PLAIN", "p"),
            cmd("sh", &["-c", spy])
                .env("LP_TOKEN", &value)
                .env("A.B", "odd")
                .env("LP_PLAIN", "p"),
        ];
        for inner in inner_shells() {
            for case in &cases {
                let ran = run_in(&inner, &plan(vec![case.clone()]), b"");
                let text = String::from_utf8_lossy(&ran.stdout);
                let (argvs, seen) = text.rsplit_once('\n').unwrap();
                assert!(argvs.contains("/proc/[0-9]*"), "{inner}: {text}");
                assert!(
                    !argvs.contains(&value[8..]),
                    "{inner}: a value in an argv: {text}"
                );
                assert!(
                    seen.starts_with(&format!("{}|p|", &value[7..])),
                    "{inner}: {text}"
                );
            }
        }
    }

    #[test]
    fn the_marker_is_in_no_argv_or_environment_a_stage_can_read() {
        let spy = "cat /proc/$PPID/cmdline /proc/$PPID/environ /proc/$$/cmdline /proc/$$/environ; \
                   ps -eo args 2>/dev/null; true";
        for inner in inner_shells() {
            let ran = run_in(
                &inner,
                &plan(vec![cmd("sh", &["-c", spy]), cmd("cat", &[])]),
                b"",
            );
            assert!(!ran.stdout.is_empty());
            let found = ran
                .stdout
                .windows(MARKER.len())
                .any(|w| w == MARKER.as_bytes());
            assert!(!found, "{inner}: the marker leaked");
        }
    }

    #[test]
    fn forged_reports_are_not_reports() {
        let forge = "printf '\\036guess:status:0:0\\n\\036guess:pid:1\\n' >&2; exit 7";
        for inner in inner_shells() {
            let ran = run_in(
                &inner,
                &plan(vec![cmd("sh", &["-c", forge]), cmd("cat", &[])]),
                b"",
            );
            assert_eq!(ran.reports.status(0), Some(7), "{inner}");
            assert_ne!(ran.reports.pid(), Some(1), "{inner}");
            assert_eq!(
                ran.stderr, b"\x1eguess:status:0:0\n\x1eguess:pid:1\n",
                "{inner}"
            );
        }
        // Even with the real marker, a second report for a slot is ignored.
        let mut reports = Reports::new(2);
        let mut filter = Filter::new(&Marker::fixed("M"));
        let mut out = Vec::new();
        let stream =
            b"\x1eM:pid:42\n\x1eM:status:0:3\n\x1eM:pid:1\n\x1eM:status:0:0\n\x1eM:status:9:0\n";
        filter.feed(stream, &mut out, &mut reports);
        assert_eq!(
            (reports.pid(), reports.status(0), reports.status(1)),
            (Some(42), Some(3), None)
        );
        assert!(out.is_empty());
        let mut reports = Reports::new(1);
        filter.feed(b"\x1eM:pid:1\n", &mut out, &mut reports);
        assert_eq!(reports.pid(), None, "pid 1 is never a target");
    }

    #[test]
    fn the_filter_passes_text_at_once_and_finds_reports_across_chunks() {
        let text: &[u8] = b"a\nb\x1eMARK:status:1:141\nc\x1eMAX\x1e";
        for split in 0..=text.len() {
            let mut filter = Filter::new(&Marker::fixed("MARK"));
            let mut reports = Reports::new(2);
            let mut out = Vec::new();
            filter.feed(&text[..split], &mut out, &mut reports);
            filter.feed(&text[split..], &mut out, &mut reports);
            filter.finish(&mut out);
            assert_eq!(out, b"a\nbc\x1eMAX\x1e", "split at {split}");
            assert_eq!(reports.status(1), Some(141), "split at {split}");
        }
        let mut filter = Filter::new(&Marker::fixed("M"));
        let mut out = Vec::new();
        filter.feed(b"early\n\x1eM", &mut out, &mut Reports::new(1));
        assert_eq!(out, b"early\n", "only a possible report start is held back");
        // Through a pty a report ends in \r\n.
        let mut reports = Reports::new(1);
        filter.feed(b":pid:7\r\nmore\r\n", &mut out, &mut reports);
        assert_eq!(
            (reports.pid(), &out[..]),
            (Some(7), &b"early\nmore\r\n"[..])
        );
    }

    #[test]
    fn an_endless_report_start_is_passed_on_in_bounded_memory() {
        let mut filter = Filter::new(&Marker::fixed("M"));
        let mut reports = Reports::new(1);
        let chunk = vec![b'x'; 1 << 20];
        let mut passed = 0;
        let mut out = Vec::new();
        filter.feed(b"\x1eM:", &mut out, &mut reports);
        for _ in 0..80 {
            filter.feed(&chunk, &mut out, &mut reports);
            passed += out.len();
            out.clear();
            let held = match &filter.state {
                State::Text => 0,
                State::Needle(seen) => *seen,
                State::Body(body) => body.len(),
            };
            assert!(held <= MAX_BODY);
        }
        filter.finish(&mut out);
        passed += out.len();
        assert_eq!(passed, 3 + 80 * chunk.len());
        assert_eq!(reports.pid(), None);
    }

    #[test]
    fn input_no_remote_program_can_take_is_refused_with_its_name() {
        let refused = |command: Command| check(&plan(vec![command])).unwrap_err();
        assert_eq!(
            refused(cmd("echo", &["ok", "a\0b"])),
            "argument 2 (`a\\x00b`) contains a NUL byte, which no program can be given"
        );
        assert_eq!(
            refused(cmd("echo", &[]).env("", "x")),
            "an environment variable has an empty name"
        );
        assert_eq!(
            refused(cmd("echo", &[]).env("A=B", "x")),
            "the environment variable name `A=B` contains `=`"
        );
        assert!(refused(cmd("echo", &[]).env("A", "x\0")).contains("NUL"));
        assert!(refused(cmd("echo", &[]).cwd("/tmp/a\0")).contains("working directory"));
        let long = "x".repeat(MAX_ARG_BYTES + 1);
        assert_eq!(
            refused(cmd("echo", &[&long])),
            format!(
                "argument 1 (`xxxxxxxxxxxxxxxxxxxxxxxx...`) is {} bytes; a remote program \
                 takes at most 131071 bytes in one argument or environment entry",
                MAX_ARG_BYTES + 1
            )
        );
        let at_limit = "x".repeat(MAX_ARG_BYTES);
        assert!(check(&plan(vec![cmd("echo", &[&at_limit])])).is_ok());
        let many: Vec<String> = (0..40_000).map(|i| format!("a{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(check(&plan(vec![cmd("echo", &many)])).is_ok());
        let huge: Vec<&str> = vec![&at_limit; 9];
        assert!(refused(cmd("echo", &huge)).contains("add up to"));
        let two = check(&plan(vec![cmd("echo", &[]), cmd("cat", &["\0"])])).unwrap_err();
        assert!(two.contains("of stage 2"), "{two}");
    }

    #[test]
    fn arguments_at_the_limit_and_many_arguments_run() {
        let at_limit = "y".repeat(MAX_ARG_BYTES);
        let many: Vec<String> = (0..40_000).map(|i| format!("a{i}")).collect();
        for inner in inner_shells() {
            let ran = run_in(&inner, &plan(vec![cmd("printf", &["%s", &at_limit])]), b"");
            assert_eq!(ran.stdout.len(), MAX_ARG_BYTES, "{inner}");
            let ran = run_in(&inner, &plan(vec![cmd("echo", &[]).args(&many)]), b"");
            assert_eq!(
                String::from_utf8(ran.stdout).unwrap(),
                many.join(" ") + "\n",
                "{inner}"
            );
        }
    }

    #[test]
    fn the_kill_line_reads_alike_everywhere_and_spares_non_leaders() {
        assert_eq!(kill_line(1, Signal::KILL), None);
        assert_eq!(kill_line(0, Signal::KILL), None);
        // A process that leads its own group is killed with the group.
        let mut leader = Std::new("setsid")
            .args(["sh", "-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let line = kill_line(leader.id(), Signal::KILL).unwrap();
        for shell in ["sh", "tcsh", "fish"] {
            if Std::new("which")
                .arg(shell)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                let status = Std::new(shell).arg("-c").arg(&line).status().unwrap();
                assert!(status.success(), "{shell}");
            }
        }
        let status = leader.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        // One that does not lead a group (a child of ours) is left alone.
        let mut child = Std::new("sleep").arg("30").spawn().unwrap();
        let line = kill_line(child.id(), Signal::KILL).unwrap();
        Std::new("sh").arg("-c").arg(&line).status().unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "not a group leader: spared"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// `plan`, detached: every stream the pipeline leaves open on /dev/null.
    fn detached(mut plan: Plan) -> Plan {
        let last = plan.stages.len() - 1;
        plan.stages[0].stdin = StdinPlan::Null;
        if plan.stages[last].stdout == StdoutPlan::Pipe {
            plan.stages[last].stdout = StdoutPlan::Null;
        }
        for stage in &mut plan.stages {
            stage.stderr = StderrPlan::Null;
        }
        plan.detached = true;
        plan
    }

    /// Waits up to 5 s until `file` holds `text`.
    fn wait_for_text(file: &Path, text: &str) -> bool {
        (0..500).any(|_| {
            let found = std::fs::read_to_string(file).is_ok_and(|t| t == text);
            if !found {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            found
        })
    }

    #[test]
    fn a_detached_line_reports_a_session_of_its_own_and_ends_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for (n, inner) in inner_shells().into_iter().enumerate() {
            let out = dir.path().join(format!("out{n}"));
            let script = "printf '%s|' \"$1\" > \"$2\"; exec sleep 1003.5";
            let word = "two\nlines 'quoted'";
            let one = detached(plan(vec![cmd(
                "sh",
                &["-c", script, "sh", word, out.to_str().unwrap()],
            )]));
            // Returns at all only if nothing detached holds the line's stdout or stderr.
            let ran = run_in(&inner, &one, b"");
            assert!(ran.status.success(), "{inner}");
            assert_eq!((&ran.stdout[..], &ran.stderr[..]), (&b""[..], &b""[..]));
            let pid = ran.reports.detached().expect("a detached pid");
            let leader = pid as libc::pid_t;
            // SAFETY: plain syscalls.
            assert_eq!(unsafe { libc::getsid(leader) }, leader, "{inner}");
            assert!(wait_for_text(&out, &format!("{word}|")), "{inner}");
            // SAFETY: a group this test started.
            unsafe { libc::kill(-leader, libc::SIGKILL) };

            // Two stages, each in its own directory: one shell leads their session.
            let sub = dir.path().join(format!("sub{n}"));
            std::fs::create_dir(&sub).unwrap();
            let first = cmd("sh", &["-c", "echo hi; exec sleep 1003.5"]).cwd(&sub);
            let mut second = plan(vec![first, cmd("cat", &[]).cwd(dir.path())]);
            second.stages[1].stdout = StdoutPlan::File(format!("cat{n}").into());
            let ran = run_in(&inner, &detached(second), b"");
            assert!(ran.status.success(), "{inner}");
            let leader = ran.reports.detached().expect("a detached pid") as libc::pid_t;
            // SAFETY: plain syscall.
            assert_eq!(unsafe { libc::getsid(leader) }, leader, "{inner}");
            assert!(wait_for_text(&dir.path().join(format!("cat{n}")), "hi\n"));
            // SAFETY: a group this test started.
            unsafe { libc::kill(-leader, libc::SIGKILL) };
        }
        // Without `setsid` on the PATH: in the background with SIGHUP ignored.
        let out = dir.path().join("nosetsid");
        let script = "echo started > \"$1\"; exec /bin/sleep 1003.5";
        let bare = detached(plan(vec![cmd(
            "/bin/sh",
            &["-c", script, "sh", out.to_str().unwrap()],
        )]));
        let mut input = header(&bare, &Marker::fixed(MARKER), false, false);
        input.push(b'\n');
        let mut child = Std::new("/bin/sh")
            .args(["-c", BOOTSTRAP])
            .env("PATH", "/leadpipe/nowhere")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let output = child.wait_with_output().unwrap();
        let mut reports = Reports::new(1);
        let mut stderr = Vec::new();
        Filter::new(&Marker::fixed(MARKER)).feed(&output.stderr, &mut stderr, &mut reports);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&stderr)
        );
        let pid = reports.detached().expect("a detached pid");
        assert!(wait_for_text(&out, "started\n"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let ignored = status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .unwrap();
        let ignored = u64::from_str_radix(ignored.trim(), 16).unwrap();
        assert_eq!(ignored & 1, 1, "SIGHUP is ignored");
        // SAFETY: a process this test started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };

        // A missing program is reported as for any line, and nothing starts.
        let ran = run_in(
            "/bin/sh",
            &detached(plan(vec![cmd("leadpipe-missing", &[])])),
            b"",
        );
        assert!(matches!(
            ran.reports.failure(),
            Some(StartFailure::Missing { stage: 0, .. })
        ));
        assert_eq!(ran.reports.detached(), None);
        // The pid is taken once, and never 0 or 1.
        let mut reports = Reports::new(1);
        let mut out = Vec::new();
        let stream = b"\x1eM:detached:1\n\x1eM:detached:77\n\x1eM:detached:78\n";
        Filter::new(&Marker::fixed("M")).feed(stream, &mut out, &mut reports);
        assert_eq!(reports.detached(), Some(77));
    }
}
