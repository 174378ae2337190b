//! `ProxyCommand`: a local command whose stdin and stdout carry the SSH connection, started
//! as `ssh` starts it (`$SHELL -c "exec COMMAND"`, else `/bin/sh`; stderr inherited).
//!
//! The child belongs to the connection: a task waits for it, and when the connection is
//! dropped ([`ProxyGuard`]) that task kills it and reaps it, so no proxy outlives its
//! machine and none is left a zombie.

use std::process::Stdio;

use tokio::{
    io::{AsyncRead, AsyncWrite},
    process::Command,
    sync::oneshot,
};

/// Kills and reaps the proxy when dropped.
#[derive(Debug)]
pub(crate) struct ProxyGuard {
    /// Dropping it wakes the task that owns the child.
    _stop: oneshot::Sender<()>,
}

/// Starts `command` (tokens already expanded) and returns its stdin/stdout as one stream.
///
/// # Errors
/// The shell could not be started.
pub(crate) fn spawn(
    command: &str,
) -> std::io::Result<(
    impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    ProxyGuard,
)> {
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let mut child = Command::new(shell)
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Should the runtime go away before the task below runs, the child still dies.
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("the proxy command has no pipes"));
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            // It ended by itself (the server closed, or it failed): reaped here.
            _ = child.wait() => {}
            _ = stopped => {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    });
    Ok((tokio::io::join(stdout, stdin), ProxyGuard { _stop: stop }))
}
