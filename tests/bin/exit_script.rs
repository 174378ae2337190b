//! A leadpipe script for the exit-path tests (tests/exit_paths.rs), ended in the way the
//! test asks: `leadpipe-exit-script MODE STATE_DIR TAG HOST PORT USER KEY KNOWN_HOSTS`.
//!
//! It connects to the test sshd, then holds what a script leaves behind when it ends
//! early: a remote `sleep 1TAG` and a local `sleep 2TAG` (each known to run: it printed a
//! line first), a remote and a local `TempDir`. It writes their paths to `STATE_DIR/ready`
//! (local dir, then remote dir, one a line) and ends by MODE:
//!
//! - `drop-return`: drops every handle, then `main` returns at once.
//! - `return-ok`, `return-err`, `panic`, `exit`: `main` returns `Ok`, returns an error
//!   through `?` (of a failed `false`), panics, or calls `std::process::exit(3)`, with
//!   every handle alive.
//! - `wait`: waits for ever (for a signal).
//! - `wait-with-more`: as `wait`, also holding remote processes that read stdin
//!   (`cat >/dev/null; exec sleep 3TAG`), write (`yes 4TAG`), run on a pty (`sleep 5TAG`),
//!   and one with a background child (`sleep 6TAG & exec sleep 7TAG`): for SIGKILL.
//! - `own-handler`: handles SIGTERM itself (`leadpipe::signals::install(false)` first); on
//!   SIGTERM it calls `leadpipe::signals::stop_all()` and `_exit`s with status 7.
//!
//! MODE prefixed with `blocking-` does the same from a plain `fn main` with
//! `leadpipe::blocking`; otherwise `main` is an async one on a multi-thread runtime, as
//! `#[tokio::main]` makes it.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use leadpipe::{Child, Result, SshMachine, TempDir, blocking::Wait, local};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Args {
    mode: String,
    state: PathBuf,
    tag: String,
    host: String,
    port: u16,
    user: String,
    key: PathBuf,
    known_hosts: PathBuf,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    assert_eq!(
        a.len(),
        8,
        "usage: MODE STATE_DIR TAG HOST PORT USER KEY KNOWN_HOSTS"
    );
    Args {
        mode: a[0].clone(),
        state: a[1].clone().into(),
        tag: a[2].clone(),
        host: a[3].clone(),
        port: a[4].parse().expect("port"),
        user: a[5].clone(),
        key: a[6].clone().into(),
        known_hosts: a[7].clone().into(),
    }
}

/// What the script holds when it ends.
struct Held {
    remote_child: Child,
    local_child: Child,
    remote_dir: TempDir,
    local_dir: TempDir,
    _remote: SshMachine,
}

/// Connects and starts everything; returns once both sleeps run.
async fn start(args: &Args) -> Result<Held> {
    let remote = SshMachine::builder(&args.host)
        .port(args.port)
        .user(&args.user)
        .identity_file(&args.key)
        .known_hosts(&args.known_hosts)
        .ssh_config(None)
        .connect()
        .await?;
    let line = format!("echo started; exec sleep 1{}", args.tag);
    let mut remote_child = remote.cmd("sh").args(["-c", &line]).spawn().await?;
    let line = format!("echo started; exec sleep 2{}", args.tag);
    let mut local_child = local().cmd("sh").args(["-c", &line]).spawn().await?;
    for child in [&mut remote_child, &mut local_child] {
        let stdout = child.stdout.as_mut().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .await
            .expect("first line");
        assert_eq!(first, "started\n");
    }
    if args.mode.ends_with("wait-with-more") {
        let t = &args.tag;
        let more = [
            remote
                .cmd("sh")
                .args(["-c", &format!("cat >/dev/null; exec sleep 3{t}")])
                .spawn()
                .await?,
            remote.cmd("yes").arg(format!("4{t}")).spawn().await?,
            remote
                .cmd("sleep")
                .arg(format!("5{t}"))
                .pty(true)
                .spawn()
                .await?,
            remote
                .cmd("sh")
                .args(["-c", &format!("sleep 6{t} & exec sleep 7{t}")])
                .spawn()
                .await?,
        ];
        // Held for good: the script is to be killed.
        std::mem::forget(more);
    }
    let remote_dir = remote.tempdir().await?;
    let local_dir = local().tempdir().await?;
    Ok(Held {
        remote_child,
        local_child,
        remote_dir,
        local_dir,
        _remote: remote,
    })
}

fn ready(args: &Args, held: &Held) {
    let text = format!(
        "{}\n{}\n",
        held.local_dir.as_path().display(),
        held.remote_dir.as_path().display()
    );
    let temporary = args.state.join("ready.tmp");
    std::fs::write(&temporary, text).expect("write ready");
    std::fs::rename(&temporary, args.state.join("ready")).expect("rename ready");
}

/// Ends as the mode says, with `held` alive unless the mode drops it.
fn end(mode: &str, held: Held) -> Result<()> {
    match mode {
        "drop-return" => {
            let Held {
                remote_child,
                local_child,
                remote_dir,
                local_dir,
                _remote,
            } = held;
            drop((remote_child, local_child, remote_dir, local_dir));
            Ok(())
        }
        "return-ok" => {
            let _kept = held;
            Ok(())
        }
        "panic" => {
            let _kept = held;
            panic!("the script panics");
        }
        "exit" => {
            let _kept = held;
            std::process::exit(3);
        }
        "wait" | "wait-with-more" => {
            let _kept = held;
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Set by the script's own SIGTERM handler.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERMINATED.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let args = args();
    if args.mode == "own-handler" {
        leadpipe::signals::install(false);
        // SAFETY: a handler that only stores to an atomic.
        unsafe {
            libc::signal(
                libc::SIGTERM,
                on_term as extern "C" fn(libc::c_int) as usize,
            )
        };
        let held = start(&args).wait()?;
        ready(&args, &held);
        while !TERMINATED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        leadpipe::signals::stop_all();
        // `_exit`: no exit hook, no destructors, so what is gone is what `stop_all` did.
        // SAFETY: ends the process.
        unsafe { libc::_exit(7) };
    }
    if let Some(mode) = args.mode.strip_prefix("blocking-") {
        let held = start(&args).wait()?;
        ready(&args, &held);
        if mode == "return-err" {
            local().cmd("false").run().wait()?;
        }
        return end(mode, held);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let held = start(&args).await?;
        ready(&args, &held);
        match args.mode.as_str() {
            "wait" | "wait-with-more" => {
                let _kept = held;
                std::future::pending().await
            }
            "return-err" => {
                let _kept = held;
                local().cmd("false").run().await
            }
            mode => end(mode, held),
        }
    })
}
