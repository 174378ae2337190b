//! Seeing what runs: `echo` (each command line before it runs, as `set -x`), the tracing
//! span of every command, and the two things a fleet adds to each host's machine view: its
//! live output prefixed with the host's name, and a per-host log directory.
//!
//! A machine view carries an [`Observe`] (in its `Scope`); every command it makes copies
//! it, and the run loop (`exec::Started`) consults it at three points: before the start
//! (echo, the log's command line, the span), while draining (the output a prefix or a log
//! diverts from the inherited stdio), and at the end (the status and duration in the log
//! and the span).
//!
//! Nothing here ever sees a command's secrets: it renders command lines only through
//! `Job::display`, the same text errors show.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// What a machine view shows of the commands it runs, beyond their own streams.
///
/// `pub` only so the sealed `Machine` trait can name it; the module is private.
#[derive(Clone, Default)]
pub struct Observe {
    /// Print each command line to stderr before it runs, as `+ line`.
    pub(crate) echo: bool,
    /// Written before every line the command prints to an inherited stdout or stderr
    /// (`web03 | `); such output is then read here and written line by line.
    pub(crate) prefix: Option<Arc<str>>,
    /// Where the host's commands, output and statuses are logged.
    pub(crate) log: Option<Arc<HostLog>>,
}

impl fmt::Debug for Observe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observe")
            .field("echo", &self.echo)
            .field("prefix", &self.prefix)
            .field("logged", &self.log.is_some())
            .finish()
    }
}

impl Observe {
    /// Whether output meant for this process's stdio is read here first (to prefix its
    /// lines or log it) instead of being inherited.
    pub(crate) fn diverts_output(&self) -> bool {
        self.prefix.is_some() || self.log.is_some()
    }

    /// Prints `+ line` to stderr when echo is on, and logs the line when there is a log.
    pub(crate) fn starting(&self, line: &str) {
        if self.echo {
            let text = format!("{}+ {line}\n", self.prefix.as_deref().unwrap_or(""));
            let _ = io::stderr().lock().write_all(text.as_bytes());
        }
        if let Some(log) = &self.log {
            log.command(&format!("$ {line}"));
        }
    }

    /// Logs how the command ended.
    pub(crate) fn ended(&self, outcome: impl fmt::Display, took: Duration) {
        if let Some(log) = &self.log {
            log.command(&format!("# {outcome} after {:.3} s", took.as_secs_f64()));
        }
    }

    /// Where bytes of `stream` read from a diverted or captured pipe go besides the call.
    /// `to_terminal`: they were meant for this process's own stdout/stderr.
    pub(crate) fn sink(&self, stream: Stream, to_terminal: bool) -> Option<Sink> {
        let terminal = to_terminal.then(|| self.prefix.clone());
        if terminal.is_none() && self.log.is_none() {
            return None;
        }
        Some(Sink {
            stream,
            terminal,
            log: self.log.clone(),
            partial: Vec::new(),
        })
    }
}

/// A command's two output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Where one pipe's bytes go as they are read: this process's stdout or stderr (each line
/// prefixed, when there is a prefix) and the host's log.
pub(crate) struct Sink {
    stream: Stream,
    /// `Some(prefix)`: write to this process's own stream, with the prefix if any.
    terminal: Option<Option<Arc<str>>>,
    log: Option<Arc<HostLog>>,
    /// The start of a line not yet ended, held back while a prefix is written, so that
    /// lines of different hosts never mix mid-line.
    partial: Vec<u8>,
}

impl Sink {
    /// Passes on `bytes`, the next bytes read from the pipe.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        if let Some(log) = &self.log {
            log.output(self.stream, bytes);
        }
        match &self.terminal {
            None => {}
            Some(None) => self.to_terminal(bytes),
            Some(Some(prefix)) => {
                let prefix = prefix.clone();
                let mut rest = bytes;
                while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                    let mut line = Vec::with_capacity(prefix.len() + self.partial.len() + end + 1);
                    line.extend_from_slice(prefix.as_bytes());
                    line.append(&mut self.partial);
                    line.extend_from_slice(&rest[..=end]);
                    self.to_terminal(&line);
                    rest = &rest[end + 1..];
                }
                self.partial.extend_from_slice(rest);
                // A line longer than this is shown in pieces rather than held forever.
                if self.partial.len() > 64 * 1024 {
                    let mut line = prefix.as_bytes().to_vec();
                    line.append(&mut self.partial);
                    line.push(b'\n');
                    self.to_terminal(&line);
                }
            }
        }
    }

    /// The pipe ended: a last line without its newline is shown with one.
    pub(crate) fn finish(&mut self) {
        if let (Some(Some(prefix)), false) = (&self.terminal, self.partial.is_empty()) {
            let mut line = prefix.as_bytes().to_vec();
            line.append(&mut self.partial);
            line.push(b'\n');
            self.to_terminal(&line);
        }
    }

    /// One write under the stream's lock, as `print!` does.
    fn to_terminal(&self, bytes: &[u8]) {
        let _ = match self.stream {
            Stream::Stdout => io::stdout().lock().write_all(bytes),
            Stream::Stderr => io::stderr().lock().write_all(bytes),
        };
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One host's log directory: `commands.log` (each command line as `$ line`, then
/// `# exit 0 after 0.012 s`), `stdout.log` and `stderr.log` (what the commands printed, as
/// they printed it). Files are appended to; every line of `commands.log` starts with the
/// time (seconds since the Unix epoch, to the millisecond).
pub(crate) struct HostLog {
    commands: Mutex<File>,
    stdout: Mutex<File>,
    stderr: Mutex<File>,
}

impl HostLog {
    /// Opens (creating as needed) the log files in `dir`.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only fleets make logs
    pub(crate) fn open(dir: &Path) -> io::Result<HostLog> {
        std::fs::create_dir_all(dir)?;
        let open = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .map(Mutex::new)
        };
        Ok(HostLog {
            commands: open("commands.log")?,
            stdout: open("stdout.log")?,
            stderr: open("stderr.log")?,
        })
    }

    fn command(&self, text: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!("{}.{:03} {text}\n", now.as_secs(), now.subsec_millis());
        if let Ok(mut file) = self.commands.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }

    fn output(&self, stream: Stream, bytes: &[u8]) {
        let file = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        if let Ok(mut file) = file.lock() {
            let _ = file.write_all(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_in(dir: &Path) -> Arc<HostLog> {
        Arc::new(HostLog::open(dir).unwrap())
    }

    #[test]
    fn a_sink_logs_every_byte_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let observe = Observe {
            log: Some(log_in(dir.path())),
            ..Observe::default()
        };
        let mut sink = observe.sink(Stream::Stderr, false).unwrap();
        sink.write(b"one\ntw");
        sink.write(b"o\n\xff");
        drop(sink);
        let logged = std::fs::read(dir.path().join("stderr.log")).unwrap();
        assert_eq!(logged, b"one\ntwo\n\xff");
        assert_eq!(std::fs::read(dir.path().join("stdout.log")).unwrap(), b"");
    }

    #[test]
    fn nothing_to_do_is_no_sink() {
        assert!(Observe::default().sink(Stream::Stdout, true).is_some());
        assert!(Observe::default().sink(Stream::Stdout, false).is_none());
    }

    #[test]
    fn the_command_log_has_the_line_and_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let observe = Observe {
            log: Some(log_in(dir.path())),
            ..Observe::default()
        };
        observe.starting("echo 'a b'");
        observe.ended("exit 0", Duration::from_millis(12));
        let text = std::fs::read_to_string(dir.path().join("commands.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with(" $ echo 'a b'"), "{text}");
        assert!(lines[1].ends_with(" # exit 0 after 0.012 s"), "{text}");
    }
}
