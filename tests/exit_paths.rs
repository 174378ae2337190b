//! Nothing left behind, however a script ends: the script (tests/bin/exit_script.rs) holds
//! a remote and a local `sleep` and a remote and a local `TempDir`, then returns, fails
//! through `?`, panics, exits, or gets SIGINT (Ctrl-C in a real terminal, tmux), SIGTERM or
//! SIGHUP; within 2 s neither machine runs its processes (nor the connection's shell waiting
//! for a command) and both dirs are gone. And from
//! a plain `fn main` (`leadpipe::blocking`, no runtime): a dropped remote `Child` is
//! killed, a dropped remote `ChildStdin` gives its reader end of file, a dropped
//! `ReverseTunnel` stops listening. Against a real OpenSSH sshd, as the normal user.

mod support;

use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use leadpipe::{
    SshMachine,
    blocking::{Wait, block_on},
};
use support::sshd::Sshd;
use tokio::io::AsyncWriteExt;

const SCRIPT: &str = env!("CARGO_BIN_EXE_leadpipe-exit-script");

/// A `sleep` argument no other test uses: `7PID.N` (the script adds 1 or 2 in front).
fn unique_tag() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "7{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed) + 1
    )
}

/// Pids of every process on this machine whose command line contains `pattern` (the
/// server's processes are on this machine too).
/// What the command line of a remote shell waiting for leadpipe's line contains.
const WAITING_SHELL: &str = "read -r lp_m";

fn pgrep_anywhere(pattern: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if support::process_state(pid).is_none_or(|s| s == 'Z') {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let line: Vec<u8> = cmdline
                .iter()
                .map(|&b| if b == 0 { b' ' } else { b })
                .collect();
            if String::from_utf8_lossy(&line).contains(pattern) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A started script and what it reported.
struct Script {
    tag: String,
    state: tempfile::TempDir,
}

impl Script {
    fn args(sshd: &Sshd, mode: &str, user: &str) -> (Script, Vec<String>) {
        let script = Script {
            tag: unique_tag(),
            state: tempfile::tempdir().unwrap(),
        };
        let args = vec![
            mode.to_owned(),
            script.state.path().display().to_string(),
            script.tag.clone(),
            sshd.host.clone(),
            sshd.port.to_string(),
            user.to_owned(),
            sshd.client_key.display().to_string(),
            sshd.known_hosts.display().to_string(),
        ];
        (script, args)
    }

    /// The local and the remote temp dir, once the script holds everything (30 s at most).
    fn wait_ready(&self, sshd: &Sshd) -> (PathBuf, PathBuf) {
        let file = self.state.path().join("ready");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines().map(PathBuf::from);
                return (lines.next().unwrap(), lines.next().unwrap());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the script never got ready\nsshd log:\n{}", sshd.log_text());
    }

    fn remote_pattern(&self) -> String {
        format!("sleep 1{}", self.tag)
    }

    fn local_pattern(&self) -> String {
        format!("sleep 2{}", self.tag)
    }

    /// Checks that both sleeps ran, then that within 2 s of `since` nothing of the script
    /// is left: no process on either side, neither temp dir.
    fn assert_nothing_left(&self, sshd: &Sshd, dirs: &(PathBuf, PathBuf), since: Instant) {
        let (local_dir, remote_dir) = dirs;
        let left = || {
            let mut left = Vec::new();
            let remote = sshd.pgrep(&self.remote_pattern());
            if !remote.is_empty() {
                left.push(format!("remote sleep {remote:?}"));
            }
            // The connection's warm spare: a shell waiting for a command line.
            let waiting = sshd.pgrep(WAITING_SHELL);
            if !waiting.is_empty() {
                left.push(format!("remote waiting shell {waiting:?}"));
            }
            let local = pgrep_anywhere(&self.local_pattern());
            if !local.is_empty() {
                left.push(format!("local sleep {local:?}"));
            }
            for (dir, side) in [(local_dir, "local"), (remote_dir, "remote")] {
                if dir.exists() {
                    left.push(format!("{side} temp dir {}", dir.display()));
                }
            }
            left
        };
        loop {
            let now = left();
            if now.is_empty() {
                return;
            }
            if since.elapsed() > Duration::from_secs(2) {
                let remote = sshd.pgrep(&self.remote_pattern());
                for pid in remote.into_iter().chain(sshd.pgrep(WAITING_SHELL)) {
                    // SAFETY: cleaning up after the failed check.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                for pid in pgrep_anywhere(&self.local_pattern()) {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                panic!("left behind 2 s after the script ended: {}", now.join(", "));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs the script in `mode` to its end; checks its exit and that nothing is left.
fn ends_cleanly(mode: &str, expect_code: i32) {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let (script, args) = Script::args(&sshd, mode, &user);
        let output = Command::new(SCRIPT)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let ended = Instant::now();
        assert_eq!(
            output.status.code(),
            Some(expect_code),
            "{mode} as {user}: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let dirs = script.wait_ready(&sshd);
        script.assert_nothing_left(&sshd, &dirs, ended);
    }
}

#[test]
fn async_main_that_drops_everything_and_returns() {
    ends_cleanly("drop-return", 0);
}

#[test]
fn async_main_returns_ok() {
    ends_cleanly("return-ok", 0);
}

#[test]
fn async_main_returns_an_error_through_question_mark() {
    ends_cleanly("return-err", 1);
}

#[test]
fn async_main_panics() {
    ends_cleanly("panic", 101);
}

#[test]
fn async_main_calls_process_exit() {
    ends_cleanly("exit", 3);
}

#[test]
fn blocking_main_that_drops_everything_and_returns() {
    ends_cleanly("blocking-drop-return", 0);
}

#[test]
fn blocking_main_calls_process_exit() {
    ends_cleanly("blocking-exit", 3);
}

#[test]
fn blocking_main_returns_ok() {
    ends_cleanly("blocking-return-ok", 0);
}

#[test]
fn blocking_main_returns_an_error_through_question_mark() {
    ends_cleanly("blocking-return-err", 1);
}

#[test]
fn blocking_main_panics() {
    ends_cleanly("blocking-panic", 101);
}

/// What a signalled script left: the script, its status, when the signal went, its dirs.
type Signalled = (Script, ExitStatus, Instant, (PathBuf, PathBuf));

/// Starts the script in `mode` (one that waits), sends it `signal` once it holds
/// everything, and waits (5 s at most) for it to end.
fn signalled(sshd: &Sshd, mode: &str, signal: i32, user: &str) -> Signalled {
    let (script, args) = Script::args(sshd, mode, user);
    let mut child = Command::new(SCRIPT)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let dirs = script.wait_ready(sshd);
    assert!(!sshd.pgrep(&script.remote_pattern()).is_empty());
    assert!(!pgrep_anywhere(&script.local_pattern()).is_empty());
    let sent = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (script, status, sent, dirs);
        }
        if sent.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            script.assert_nothing_left(sshd, &dirs, sent);
            panic!("{mode}: the script did not end within 5 s of signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The script dies of `signal` within a second or so, and nothing is left.
fn signal_stops_everything(mode: &str, signal: i32) {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        let (script, status, sent, dirs) = signalled(&sshd, mode, signal, &user);
        let took = sent.elapsed();
        eprintln!("{mode} as {user}: ended {took:?} after signal {signal}: {status}");
        assert_eq!(status.signal(), Some(signal), "{mode} as {user}: {status}");
        assert!(
            took < Duration::from_millis(1500),
            "{mode} as {user}: took {took:?}"
        );
        script.assert_nothing_left(&sshd, &dirs, sent);
    }
}

#[test]
fn sigterm_stops_everything_and_the_script_dies_of_it() {
    signal_stops_everything("wait", libc::SIGTERM);
}

#[test]
fn sighup_stops_everything_and_the_script_dies_of_it() {
    signal_stops_everything("wait", libc::SIGHUP);
}

#[test]
fn sigterm_to_a_blocking_script() {
    signal_stops_everything("blocking-wait", libc::SIGTERM);
}

/// A script that handles SIGTERM itself keeps it (no re-raise: it exits with its own
/// status), and `signals::stop_all` from its handler stops everything (the script then
/// `_exit`s, which runs neither destructors nor the exit hook).
#[test]
fn a_script_with_its_own_handler_opts_out_and_stops_all_itself() {
    let Some(sshd) = Sshd::start() else { return };
    let (script, status, sent, dirs) = signalled(&sshd, "own-handler", libc::SIGTERM, &sshd.user);
    assert_eq!(status.code(), Some(7), "{status}");
    script.assert_nothing_left(&sshd, &dirs, sent);
}

/// SIGKILL: nothing of the script runs, and its connection simply ends. What OpenSSH's sshd
/// then does to the remote processes (documented in `leadpipe::signals`): it closes the
/// session's pipes and sends no signal, so a reader gets end of file, a writer dies of
/// SIGPIPE, a pty command gets SIGHUP; a process with no I/O runs on, and so do a
/// command's background children. Locally, the pipeline's own process group runs on.
#[test]
fn what_a_sigkilled_script_leaves() {
    let Some(sshd) = Sshd::start() else { return };
    let (script, args) = Script::args(&sshd, "wait-with-more", &sshd.user);
    let mut child = Command::new(SCRIPT)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let dirs = script.wait_ready(&sshd);
    let on_server = |n: u32| sshd.pgrep(&format!("{n}{}", script.tag));
    for n in [1, 4, 5, 6, 7] {
        wait_running(&sshd, &format!("{n}{}", script.tag));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    // The reader got end of file: its shell went on to `exec sleep 3TAG` (so no command
    // line holds `exec` any more), and the writer and the pty command die.
    let reader = format!("sleep 3{}", script.tag);
    let over = |pattern: &str| sshd.pgrep(pattern).is_empty();
    let exec = format!("exec {reader}");
    while !(over(&exec) && !over(&reader) && on_server(4).is_empty() && on_server(5).is_empty()) {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "reader still waiting: {}, writer: {:?}, pty: {:?}",
            !over(&exec),
            on_server(4),
            on_server(5)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The rest runs on, remote and local, and the temp dirs stay.
    let survivors: Vec<u32> = [1, 6, 7].into_iter().flat_map(on_server).collect();
    let local = pgrep_anywhere(&script.local_pattern());
    let dirs_left = [&dirs.0, &dirs.1].map(|dir| dir.exists());
    for pid in survivors.iter().chain(&local).chain(&sshd.pgrep(&reader)) {
        // SAFETY: cleaning up what the killed script left.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    for dir in [&dirs.0, &dirs.1] {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert_eq!(survivors.len(), 3, "sleep 1, 6 and 7 run on");
    assert_eq!(local.len(), 1, "the local sleep runs on");
    assert_eq!(dirs_left, [true, true]);
}

/// `tmux` with a server of our own (`-L`), so that parallel tests do not share one.
fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux is installed")
}

/// Ctrl-C typed in a real terminal: the terminal sends SIGINT to its foreground process
/// group, which holds the script but not its local pipelines (they have groups of their
/// own). The shell in the terminal catches SIGINT (`trap :`, a handler, which the script
/// does not inherit) to write down the script's status.
fn ctrl_c_in_a_terminal(mode: &str) {
    let Some(sshd) = Sshd::start() else { return };
    for user in sshd.users() {
        ctrl_c_as(&sshd, mode, &user);
    }
}

fn ctrl_c_as(sshd: &Sshd, mode: &str, user: &str) {
    let (script, args) = Script::args(sshd, mode, user);
    let status_file = script.state.path().join("status");
    let mut line = String::from("trap : INT; ");
    line.push_str(&shell_words(SCRIPT));
    for arg in &args {
        line.push(' ');
        line.push_str(&shell_words(arg));
    }
    line.push_str(&format!(
        "; echo $? > {}.tmp; mv {0}.tmp {0}",
        shell_words(&status_file.display().to_string())
    ));
    let socket = format!("leadpipe-{}", script.tag);
    let started = tmux(
        &socket,
        &["new-session", "-d", "-x", "80", "-y", "24", &line],
    );
    assert!(started.status.success(), "{started:?}");
    struct KillServer<'a>(&'a str);
    impl Drop for KillServer<'_> {
        fn drop(&mut self) {
            let _ = tmux(self.0, &["kill-server"]);
        }
    }
    let _server = KillServer(&socket);
    let dirs = script.wait_ready(sshd);
    let sent = Instant::now();
    let keys = tmux(&socket, &["send-keys", "C-c"]);
    assert!(keys.status.success(), "{keys:?}");
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            break text.trim().to_owned();
        }
        if sent.elapsed() > Duration::from_secs(5) {
            script.assert_nothing_left(sshd, &dirs, sent);
            panic!("{mode}: the script did not end within 5 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = sent.elapsed();
    eprintln!("{mode}: ended {took:?} after Ctrl-C, status {status}");
    assert_eq!(status, "130", "{mode}: the shell saw status {status}");
    assert!(took < Duration::from_millis(1500), "{mode}: took {took:?}");
    script.assert_nothing_left(sshd, &dirs, sent);
}

/// A word quoted for `sh`.
fn shell_words(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

#[test]
fn ctrl_c_in_a_terminal_stops_everything() {
    ctrl_c_in_a_terminal("wait");
}

#[test]
fn ctrl_c_in_a_terminal_stops_a_blocking_script() {
    ctrl_c_in_a_terminal("blocking-wait");
}

// Blocking code: plain `#[test]` functions, no runtime.

fn blocking_login(sshd: &Sshd) -> SshMachine {
    sshd.builder(&sshd.user).connect().wait().unwrap()
}

/// Waits up to 10 s until `pattern` runs on the server.
fn wait_running(sshd: &Sshd, pattern: &str) {
    let start = Instant::now();
    while sshd.pgrep(pattern).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{pattern} never ran\nsshd log:\n{}",
            sshd.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether nothing matching `pattern` runs on the server within 2 s.
fn gone_within_2s(sshd: &Sshd, pattern: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if sshd.pgrep(pattern).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn blocking_drop_of_a_remote_child_kills_it() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = blocking_login(&sshd);
    let pattern = format!("sleep {}", unique_tag());
    let child = remote.cmd("sh").args(["-c", &format!("exec {pattern}")]);
    let child = child.spawn().wait().unwrap();
    wait_running(&sshd, &pattern);
    drop(child);
    assert!(
        gone_within_2s(&sshd, &pattern),
        "the remote process outlived its dropped Child"
    );
}

#[test]
fn blocking_drop_of_a_remote_stdin_ends_the_reader() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = blocking_login(&sshd);
    let mut child = remote.cmd("wc").arg("-c").spawn().wait().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    block_on(async {
        stdin.write_all(b"hello").await.unwrap();
        stdin.flush().await.unwrap();
        Ok(())
    })
    .unwrap();
    drop(stdin);
    // The wait on another thread: without the end of file, `wc` would never finish.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output().wait());
    });
    let output = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("wc -c got no end of file from the dropped ChildStdin")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "5");
}

#[test]
fn blocking_drop_of_a_reverse_tunnel_stops_listening() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = blocking_login(&sshd);
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reverse = remote
        .reverse_tunnel(0, target.local_addr().unwrap())
        .wait()
        .unwrap();
    let port = reverse.remote_port();
    // The server is this machine: its listener is reachable here directly.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(reverse);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the server still listens on {port} after the ReverseTunnel was dropped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A remote `Child` and `TempDir` held by a task of a runtime that shuts down (what
/// `#[tokio::main]` does to its tasks when `main` returns): both are cleaned up.
#[test]
fn handles_held_by_a_runtime_that_shuts_down() {
    let Some(sshd) = Sshd::start() else { return };
    let pattern = format!("sleep {}", unique_tag());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir: PathBuf = runtime.block_on(async {
        let remote = sshd.machine().await;
        let child = remote
            .cmd("sh")
            .args(["-c", &format!("exec {pattern}")])
            .spawn()
            .await
            .unwrap();
        let dir = remote.tempdir().await.unwrap();
        let path = dir.as_path().to_owned();
        tokio::spawn(async move {
            let _held = (child, dir, remote);
            std::future::pending::<()>().await;
        });
        path
    });
    wait_running(&sshd, &pattern);
    assert!(dir.exists());
    drop(runtime);
    assert!(
        gone_within_2s(&sshd, &pattern),
        "the remote process outlived the runtime"
    );
    let start = Instant::now();
    while Path::new(&dir).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the remote temp dir outlived the runtime"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
