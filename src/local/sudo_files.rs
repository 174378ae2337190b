//! This machine's files as another user: SFTP, as on an SSH machine's `sudo` view, to a
//! local `sftp-server` that `sudo` starts as the user, spoken over the child's stdin and
//! stdout (`ssh/sftp.rs` does the rest, unchanged).
//!
//! The child is started as `sudo -S -p PROMPT -u USER -- /bin/sh -c 'printf READY >&2;
//! exec "$0"' SFTP_SERVER`, in a session of its own (no terminal: sudo reads the password
//! from its stdin, and never puts the binary protocol through a pty), and passes the same
//! gate as a remote one (`ssh/sudo.rs`): the password is written to its stdin once, when
//! leadpipe's prompt appears on its stderr; a second prompt is a refused password.
//!
//! The child belongs to the session: when the session's last handle is dropped, its stdin
//! is closed (`sftp-server` ends at end of file, and sudo with it), and a task reaps it,
//! killing sudo after [`GRACE`] if it has not ended. stderr is drained until then.

use std::{
    io,
    path::Path,
    pin::Pin,
    process::Stdio,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};
use russh::ChannelMsg;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    process::{Child, ChildStderr, ChildStdin, ChildStdout},
    sync::oneshot,
};

use crate::{
    Error,
    files::FilesRef,
    ssh::{
        channel::ChannelEnd,
        sftp::{Server, SftpFiles, Transport},
        sudo::{GateChannel, SFTP_SERVERS, pass_gate, shut_error},
    },
    sudo::{Gate, Runas, token},
};

/// How long a child whose stdin was closed may take to end before sudo is killed.
const GRACE: Duration = Duration::from_secs(2);

/// The files of this machine as `runas`'s user (a session is started on first use).
pub(super) fn files(runas: Runas) -> FilesRef {
    let name = runas.view_name("local");
    Arc::new(SftpFiles::over(Box::new(LocalSftp { runas }), name))
}

struct LocalSftp {
    runas: Runas,
}

impl Server for LocalSftp {
    fn start(&self) -> BoxFuture<'static, io::Result<Transport>> {
        start(self.runas.clone()).boxed()
    }

    fn gone(&self) -> Option<Error> {
        None
    }
}

/// The first `sftp-server` of the usual places that this process can see.
fn sftp_server() -> io::Result<&'static str> {
    use std::os::unix::fs::PermissionsExt as _;
    SFTP_SERVERS
        .split_whitespace()
        .find(|path| {
            std::fs::metadata(Path::new(path))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "files as another user need OpenSSH's sftp-server, found in none of \
                     {SFTP_SERVERS} (install openssh-sftp-server)"
                ),
            )
        })
}

async fn start(runas: Runas) -> io::Result<Transport> {
    let user = runas
        .checked_user("local")
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        .to_owned();
    let server = sftp_server()?;
    let mut gate = Gate::new(&token());
    let script = format!("printf %s {} >&2; exec \"$0\"", gate.ready());
    let mut command = tokio::process::Command::new("sudo");
    command
        .args([
            "-S",
            "-p",
            gate.prompt(),
            "-u",
            &user,
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg(script)
        .arg(server)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Should the task below never run, the child still dies with its handle.
        .kill_on_drop(true);
    // SAFETY: `setsid` is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start sudo: {e}")))?;
    let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io::Error::other("sudo was started without pipes"));
    };
    let passed = {
        let mut pipes = ChildGate {
            stderr: &mut stderr,
            stdin: &mut stdin,
            child: &mut child,
            exited: false,
        };
        pass_gate(&mut pipes, &mut gate, &runas, "local", false).await
    };
    if let Err(shut) = passed {
        let _ = child.start_kill();
        let _ = child.wait().await;
        let error = shut_error(shut, || Error::Sudo {
            machine: "local".to_owned(),
            user: user.clone(),
            reason: "sudo ended before it started sftp-server".to_owned(),
        });
        // Kind `Other`, so that the file error shows sudo's reason.
        return Err(io::Error::other(error.to_string()));
    }
    let (mark, end) = ChannelEnd::marked();
    let (stop, stopped) = oneshot::channel::<()>();
    crate::lifecycle::spawn(async move {
        let drain = async {
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        };
        let reap = async {
            tokio::select! {
                // It ended by itself (sftp-server died): reaped here.
                _ = child.wait() => {}
                // The session is over: its stdin is closed, so sftp-server ends.
                _ = stopped => {
                    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                    }
                }
            }
            drop(mark);
        };
        tokio::join!(drain, reap);
    });
    Ok(Transport {
        stream: Box::new(Pipes {
            stdout,
            stdin: Some(stdin),
        }),
        end,
        hold: Box::new(stop),
    })
}

/// The child as the gate reads it: stderr as the channel's extended data, then its exit.
struct ChildGate<'a> {
    stderr: &'a mut ChildStderr,
    stdin: &'a mut ChildStdin,
    child: &'a mut Child,
    exited: bool,
}

impl GateChannel for ChildGate<'_> {
    async fn next(&mut self) -> Option<ChannelMsg> {
        if self.exited {
            return None;
        }
        let mut buffer = vec![0; 4096];
        match self.stderr.read(&mut buffer).await {
            Ok(n) if n > 0 => {
                buffer.truncate(n);
                Some(ChannelMsg::ExtendedData {
                    data: buffer.into(),
                    ext: 1,
                })
            }
            _ => {
                self.exited = true;
                let status = self.child.wait().await.ok()?;
                // A signal's death reads as 128 + its number, as a shell shows it.
                let code = status.code().or_else(|| {
                    std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s)
                })?;
                Some(ChannelMsg::ExitStatus {
                    exit_status: u32::try_from(code).unwrap_or(u32::MAX),
                })
            }
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) -> bool {
        self.stdin.write_all(&bytes).await.is_ok() && self.stdin.flush().await.is_ok()
    }
}

/// The child's stdout and stdin as one stream; `shutdown` closes stdin (tokio's own
/// `shutdown` of a pipe leaves it open, and `sftp-server` ends only at end of file).
struct Pipes {
    stdout: ChildStdout,
    stdin: Option<ChildStdin>,
}

impl AsyncRead for Pipes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

fn stdin_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "sftp-server's stdin is closed")
}

impl AsyncWrite for Pipes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.stdin {
            Some(stdin) => Pin::new(stdin).poll_write(cx, buf),
            None => Poll::Ready(Err(stdin_closed())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stdin {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}
