//! Shared helpers for leadpipe's integration tests.
#![allow(dead_code)]

use std::{path::Path, time::Duration};

#[cfg(feature = "ssh")]
pub mod sshd;
pub mod trace;

/// The test helper program with exact behaviour (see tests/bin/testbin.rs).
pub const TESTBIN: &str = env!("CARGO_BIN_EXE_leadpipe-testbin");

/// `leadpipe-testbin` on the local machine.
pub fn testbin() -> leadpipe::Command {
    leadpipe::local().cmd(TESTBIN)
}

/// What `leadpipe-testbin write` puts on stdout: byte i is `i % 251`.
pub fn stdout_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// What `leadpipe-testbin write` puts on stderr: byte i is `b'a' + i % 26`.
pub fn stderr_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The state letter of a process from /proc (`R`, `S`, `Z`, ...), `None` once it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits up to 5 s for a process to be gone or a zombie (reaped by whoever its parent is).
pub fn wait_gone(pid: u32) -> bool {
    for _ in 0..500 {
        match process_state(pid) {
            None | Some('Z') | Some('X') => return true,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    false
}

/// Reads a pid written by a test command into `file`, waiting up to 5 s for it to appear.
pub fn read_pid(file: &Path) -> u32 {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no pid in {}", file.display());
}

/// A process's parent, process group and session from /proc/PID/stat; `None` once gone.
pub fn process_ids(pid: u32) -> Option<(u32, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(1);
    let mut next = || fields.next()?.parse().ok();
    Some((next()?, next()?, next()?))
}

/// A process's command line, its arguments joined by spaces (empty once it is gone).
pub fn process_cmdline(pid: u32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = bytes
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    words.join(" ")
}

/// Sends SIGKILL to a process (a negative `pid`: to a process group) when dropped: the
/// clean-up of a test that started something meant to outlive it, even when it fails.
pub struct KillOnDrop(pub i64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
