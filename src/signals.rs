//! Ctrl-C, SIGTERM and SIGHUP: stop what the script started, then exit as the signal would.
//!
//! Local pipelines run in process groups of their own (so that a kill reaches their
//! grandchildren), which also means the terminal's Ctrl-C does not reach them, and remote
//! processes never see a local signal at all. So, from the first thing leadpipe starts
//! (a process, a connection's pipeline, a temp dir), it handles **SIGINT, SIGTERM and
//! SIGHUP**: it kills every local process group and every remote pipeline still running,
//! removes every temp dir not yet dropped (on either machine), then restores the signal's
//! default action and raises it again, so the script ends as the signal would have ended it
//! (status 130, 143, 129 in a shell). All of it is bounded: within about a second on a
//! responsive connection, however many things are running.
//!
//! A signal the process ignores when leadpipe first starts something (`nohup` ignores
//! SIGHUP) or already handles is left alone. A script that handles these signals itself
//! calls [`install`]`(false)` before starting anything (a handler installed after
//! leadpipe's, such as `tokio::signal`'s, runs before it but does not replace it), and may
//! call [`stop_all`] from its own handler.
//!
//! What can and cannot be cleaned up, by how the script ends:
//! - **`main` returns, fails through `?`, or panics** (unwinding): every handle is dropped,
//!   and every drop's clean-up runs on leadpipe's own runtime; an exit hook waits for them
//!   (two seconds at most) before the process ends. Nothing is left.
//! - **`std::process::exit`** runs no destructors, but it runs leadpipe's exit hook: local
//!   process groups and remote pipelines still running are killed and temp dirs still alive
//!   (local ones too) are removed, within two seconds.
//! - **SIGKILL**, an abort (`panic = "abort"`), a crash: nothing runs. Local process groups
//!   live on (re-parented to init), as do local temp dirs. The SSH connection simply ends;
//!   what OpenSSH's sshd then does to the remote processes (measured with OpenSSH 9.2): it
//!   closes the session's pipes and sends no signal. A remote process that reads its stdin
//!   gets end of file, one that writes to its stdout or stderr dies of SIGPIPE (`yes`), a
//!   `pty(true)` command gets SIGHUP from the closed terminal and dies; one that does
//!   neither (`sleep`, a server, a background child of the command) runs on, re-parented to
//!   init. Remote temp dirs stay.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicI32, Ordering},
    },
    time::Duration,
};

/// The signals handled.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// How long the handler spends stopping things before it exits anyway.
const STOP_LIMIT: Duration = Duration::from_millis(900);

/// Whether leadpipe handles the signals (`None`: not decided, on by default), and the
/// actions it replaced, to restore them.
struct State {
    enabled: Option<bool>,
    replaced: Vec<(libc::c_int, libc::sigaction)>,
    thread_started: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    enabled: None,
    replaced: Vec::new(),
    thread_started: false,
});

/// The write end of the pipe from the signal handler to the thread that acts on it.
static PIPE: AtomicI32 = AtomicI32::new(-1);

/// Whether leadpipe handles SIGINT, SIGTERM and SIGHUP (the default: yes, from the first
/// thing it starts). With `false`, leadpipe leaves them alone, and restores the actions
/// it replaced if it had installed its handlers already; with `true`, it installs them now.
///
/// A script that handles these signals itself (say with `tokio::signal`) calls
/// `install(false)` first, before starting anything, and calls [`stop_all`] from its
/// handler when it wants leadpipe's processes gone.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// leadpipe::signals::install(false);
/// let mut server = leadpipe::local().cmd("my-server").spawn().await?;
/// tokio::signal::ctrl_c().await.ok();
/// server.kill().await?; // the script's own shutdown
/// # Ok(()) }
/// ```
pub fn install(enabled: bool) {
    let Ok(mut state) = STATE.lock() else {
        return;
    };
    state.enabled = Some(enabled);
    if enabled {
        install_locked(&mut state);
    } else {
        for (signal, old) in state.replaced.drain(..) {
            // SAFETY: reads the current action, and restores the one we replaced only while
            // ours is still in place (a handler installed since, such as tokio's, chains
            // to ours and stays; ours then does nothing).
            unsafe {
                let mut current: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                    && current.sa_sigaction == handler()
                {
                    libc::sigaction(signal, &old, std::ptr::null_mut());
                }
            }
        }
    }
}

/// Stops everything leadpipe started that is still running (local process groups by
/// SIGKILL, remote pipelines by their kill) and removes every temp dir still alive, on
/// either machine. Returns when that is done, or after about a second on an unresponsive
/// connection. For a script's own signal handler; handles stay usable (their processes
/// are simply gone).
///
/// # Example
/// ```no_run
/// // A script with a SIGTERM handler of its own: leadpipe stays out of the way, and the
/// // handler stops what was started before the script exits.
/// leadpipe::signals::install(false);
/// // ... in that handler (or the task it wakes):
/// leadpipe::signals::stop_all();
/// ```
pub fn stop_all() {
    crate::lifecycle::stop_and_flush(STOP_LIMIT);
}

/// Installs the handlers unless the script decided otherwise.
pub(crate) fn ensure() {
    let Ok(mut state) = STATE.lock() else {
        return;
    };
    if state.enabled.is_none() {
        state.enabled = Some(true);
        install_locked(&mut state);
    }
}

fn install_locked(state: &mut State) {
    if !state.thread_started {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        let [read, write] = fds;
        // SAFETY: a flag on our own descriptor: a full pipe drops a signal, never blocks.
        unsafe { libc::fcntl(write, libc::F_SETFL, libc::O_NONBLOCK) };
        let started = std::thread::Builder::new()
            .name("leadpipe-signals".to_owned())
            .spawn(move || act_on_signals(read));
        if started.is_err() {
            // SAFETY: closing the descriptors just made.
            unsafe {
                libc::close(read);
                libc::close(write);
            }
            return;
        }
        PIPE.store(write, Ordering::SeqCst);
        state.thread_started = true;
    }
    for signal in SIGNALS {
        if state.replaced.iter().any(|(s, _)| *s == signal) {
            continue;
        }
        // SAFETY: sigaction with a zeroed struct to read, then a filled one to set.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                // Ignored (nohup) or handled by the script: not ours to take.
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler();
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) == 0 {
                state.replaced.push((signal, old));
            }
        }
    }
}

fn handler() -> libc::sighandler_t {
    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t
}

/// The handler: only hands the signal's number to the thread (async-signal-safe).
extern "C" fn on_signal(signal: libc::c_int) {
    let errno = std::io::Error::last_os_error().raw_os_error();
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; the pipe end stays open for good.
    unsafe { libc::write(PIPE.load(Ordering::Relaxed), (&raw const byte).cast(), 1) };
    if let Some(errno) = errno {
        set_errno(errno);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_errno(errno: libc::c_int) {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_errno(errno: libc::c_int) {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__error() = errno };
}

/// The thread behind the handler: stops everything, then dies of the signal.
fn act_on_signals(read: libc::c_int) {
    loop {
        let mut byte = 0u8;
        // SAFETY: reads one byte into `byte`.
        let n = unsafe { libc::read(read, (&raw mut byte).cast(), 1) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let signal = libc::c_int::from(byte);
        let handled = STATE
            .lock()
            .map(|s| s.enabled == Some(true))
            .unwrap_or(false);
        if !handled {
            continue;
        }
        crate::lifecycle::stop_and_flush(STOP_LIMIT);
        // SAFETY: back to the default action, then raised in this thread with the signal
        // unblocked: the process ends as the signal makes it end.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
            libc::_exit(128 + signal);
        }
    }
}
