//! Commands and files as another user on an SSH machine: the channel's exec string runs
//! `sudo`, which starts `/bin/sh` (for a pipeline) or the server's `sftp-server` (for
//! files) as that user.
//!
//! # The gate
//!
//! Before anything of the script or the user's stdin is sent, the channel is read here
//! until sudo has started the command ([`pass_gate`]): sudo is run with `-S` (the password
//! from stdin) and `-p` a prompt holding a token new for every start, and the command it
//! starts first prints a ready line with another form of that token. So:
//! - sudo prints the prompt: the password (asked for at most once per machine) is sent,
//!   once; a second prompt means it was refused, and the channel is ended at once (sudo
//!   would ask up to three times, with a delay after each);
//! - the ready line arrives: the command runs as the user; what follows is the command's;
//! - sudo exits first: it would not run the command. Without a terminal and without having
//!   asked anything, that is how `Defaults requiretty` refuses: the start is tried once
//!   more with a pty (and the machine view remembers to use one);
//! - nothing comes for [`GATE_SILENCE`]: sudo waits on a prompt that is not leadpipe's
//!   (`passprompt_override`, a PAM module's own question), so the start fails instead
//!   of hanging.
//!
//! The decision rests on sudo's prompts and exit, never on its wording (lectures, prompts
//! and messages are customised and translated). The password goes only to sudo's stdin,
//! with the terminal's echo off where there is one, and no error holds it.
//!
//! # Where the command runs
//!
//! Without a pty, sudo runs the command in the login's process group (sudo leads it): the
//! line reports that group, which is killed as always, but through `sudo` ([`kill_line`]),
//! since the user's own `kill` cannot reach root's processes. With a pty and sudo's
//! `use_pty`, the command leads a session of sudo's terminal; the same report names it.

use std::{future::Future, time::Duration};

use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client::Msg};

use super::remote_line::BOOTSTRAP_DIRECT;
use crate::{
    Error,
    sudo::{Gate, Runas, Step},
};

/// How long sudo may print nothing before the start is given up.
pub(crate) const GATE_SILENCE: Duration = Duration::from_secs(10);

/// Where the server keeps `sftp-server`, tried in order: Debian and Ubuntu, Red Hat and
/// SUSE, Arch, the BSDs and macOS, others.
const SFTP_SERVERS: &str = "/usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server \
                            /usr/lib/ssh/sftp-server /usr/libexec/sftp-server \
                            /usr/lib/sftp-server /usr/local/libexec/sftp-server";

/// `exec sudo -S -p PROMPT -u USER -- /bin/sh -c 'SCRIPT'`, readable alike by every login
/// shell (the script holds no `'`).
fn sudo_exec(user: &str, gate: &Gate, script: &str) -> String {
    format!(
        "exec sudo -S -p '{}' -u '{user}' -- /bin/sh -c '{script}'",
        gate.prompt()
    )
}

/// The exec string of a pipeline run as `user`: the ready line, then the bootstrap every
/// remote line runs (the marker and script follow on stdin once the gate is passed). On a
/// pty, the terminal sudo may have made for the command gets echo and line editing off
/// while the header goes through (the script turns them back on).
pub(crate) fn line_exec(user: &str, gate: &Gate, pty: bool) -> String {
    let quiet = if pty {
        "stty -echo -icanon 2>/dev/null; "
    } else {
        ""
    };
    let script = format!("{quiet}printf %s {} >&2; {BOOTSTRAP_DIRECT}", gate.ready());
    sudo_exec(user, gate, &script)
}

/// The exec string of an SFTP session as `user`: the ready line, then the first
/// `sftp-server` found in the usual places.
pub(crate) fn sftp_exec(user: &str, gate: &Gate) -> String {
    let script = format!(
        "printf %s {} >&2; for lp_p in {SFTP_SERVERS}; do \
         [ -x \"$lp_p\" ] && exec \"$lp_p\"; done; \
         echo \"no sftp-server in {SFTP_SERVERS}\" >&2; exit 127",
        gate.ready()
    );
    sudo_exec(user, gate, &script)
}

/// The kill line, run through sudo as `user`: sudo ignores the stdin it is not asked for,
/// so the password is sent whether or not it is needed.
pub(crate) fn kill_exec(user: &str, kill_line: &str) -> String {
    let rest = kill_line.strip_prefix("exec ").unwrap_or(kill_line);
    format!("exec sudo -S -p '' -u '{user}' -- {rest}")
}

/// A channel as the gate reads it: a whole one (SFTP) or its two halves (a pipeline,
/// whose read half goes on to the pump).
pub(crate) trait GateChannel: Send {
    fn next(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send;
    fn send(&mut self, bytes: Vec<u8>) -> impl Future<Output = bool> + Send;
}

impl GateChannel for russh::Channel<Msg> {
    async fn next(&mut self) -> Option<ChannelMsg> {
        self.wait().await
    }

    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        self.data(&bytes[..]).await.is_ok()
    }
}

/// A read half and the write half of the same channel.
pub(crate) struct Halves<'a>(
    pub(crate) &'a mut ChannelReadHalf,
    pub(crate) &'a ChannelWriteHalf<Msg>,
);

impl GateChannel for Halves<'_> {
    async fn next(&mut self) -> Option<ChannelMsg> {
        self.0.wait().await
    }

    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        self.1.data(&bytes[..]).await.is_ok()
    }
}

/// How the gate ended without the command starting.
pub(crate) enum Shut {
    /// sudo refused or failed: the error says why.
    Refused(Error),
    /// sudo exited without asking anything and without a terminal: maybe `requiretty`.
    NoTerminal(Error),
    /// The connection died.
    Lost,
}

/// Reads `channel` (already exec'd with a string from this module) until the command
/// runs; returns what the command printed after its ready line.
pub(crate) async fn pass_gate(
    channel: &mut impl GateChannel,
    gate: &mut Gate,
    runas: &Runas,
    machine: &str,
    pty: bool,
) -> std::result::Result<Vec<u8>, Shut> {
    let refused = |gate: &Gate, why: String| {
        let printed = gate.printed();
        let reason = if printed.is_empty() {
            why
        } else {
            format!("{why}; sudo printed: {printed}")
        };
        Error::Sudo {
            machine: machine.to_owned(),
            user: runas.user.clone(),
            reason,
        }
    };
    let mut status = None;
    loop {
        let message = match tokio::time::timeout(GATE_SILENCE, channel.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(_) => {
                let why = format!(
                    "sudo neither asked for the password with leadpipe's prompt nor started \
                     the command within {} s (a prompt of its own: passprompt_override, a \
                     PAM module's question?)",
                    GATE_SILENCE.as_secs()
                );
                return Err(Shut::Refused(refused(gate, why)));
            }
        };
        let bytes = match message {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, ext: 1 } => data,
            ChannelMsg::ExitStatus { exit_status } => {
                status = Some(exit_status);
                continue;
            }
            ChannelMsg::Close => break,
            _ => continue,
        };
        match gate.feed(&bytes) {
            Step::Wait => {}
            Step::Ready(rest) => return Ok(rest),
            Step::Answer => {
                let Some(password) = runas.password.get(machine).await else {
                    let why = "sudo asks for a password and none was given (sudo_password)";
                    return Err(Shut::Refused(refused(gate, why.to_owned())));
                };
                let mut line = password.expose().to_vec();
                line.push(b'\n');
                if !channel.send(line).await {
                    return Err(Shut::Lost);
                }
            }
            Step::Refused => {
                let why = "the password was refused (sudo asked for it again)";
                return Err(Shut::Refused(refused(gate, why.to_owned())));
            }
        }
    }
    let Some(status) = status else {
        return Err(Shut::Lost);
    };
    let why = format!("sudo exited with code {status} before starting the command");
    let error = refused(gate, why);
    if !pty && !gate.asked() && status == 1 {
        Err(Shut::NoTerminal(error))
    } else {
        Err(Shut::Refused(error))
    }
}

/// `Result` of a gate as leadpipe's.
pub(crate) fn shut_error(shut: Shut, lost: impl FnOnce() -> Error) -> Error {
    match shut {
        Shut::Refused(error) | Shut::NoTerminal(error) => error,
        Shut::Lost => lost(),
    }
}
