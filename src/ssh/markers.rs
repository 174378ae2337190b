//! Reading the status lines that [`super::command_line`] writes into the channel's stderr.
//!
//! Each is `\x1e<marker>:<what>\n` (0x1e, ASCII's record separator, then the marker),
//! written by one `printf` (a single write well under `PIPE_BUF`, so no other stage's
//! output can land inside it). It need not start a line: a stage's last line without a
//! newline is followed by it directly. The filter removes exactly those bytes and passes
//! everything else through unchanged and at once (it holds back only a tail that could be
//! the start of `\x1e<marker>:`, which ordinary text never is), even when a status line
//! arrives split across two packets.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
};

/// What a status line said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The pid of the remote shell, which leads the process group of the whole line.
    Pid(u32),
    /// A program the remote shell could not find.
    Missing(Vec<u8>),
    /// Stage `stage` of a pipeline ended with `$?` = `code`.
    Status { stage: usize, code: i32 },
}

/// A marker no program prints by accident: 128 random bits, new for every run.
pub(crate) fn new_marker() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded from the OS's randomness; hashing a counter with two fresh
    // states gives 128 bits without a random-number dependency.
    let mut halves = [0u64; 2];
    for half in &mut halves {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(count);
        *half = hasher.finish();
    }
    format!("lp{:016x}{:016x}", halves[0], halves[1])
}

/// Strips status lines out of a stderr stream.
pub(crate) struct Filter {
    /// `\x1e<marker>:`
    needle: Vec<u8>,
    /// Bytes not yet passed on: a possible start of a status line.
    pending: Vec<u8>,
}

impl Filter {
    pub(crate) fn new(marker: &str) -> Filter {
        Filter {
            needle: format!("\x1e{marker}:").into_bytes(),
            pending: Vec::new(),
        }
    }

    /// Takes the next chunk of stderr; returns what belongs to the user, and adds what the
    /// status lines said to `events`.
    pub(crate) fn feed(&mut self, chunk: &[u8], events: &mut Vec<Event>) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        loop {
            match find(&self.pending, &self.needle) {
                Some(start) => {
                    let body = start + self.needle.len();
                    let Some(end) = self.pending[body..].iter().position(|&b| b == b'\n') else {
                        // The rest of the status line is still on its way.
                        out.extend_from_slice(&self.pending[..start]);
                        self.pending.drain(..start);
                        return out;
                    };
                    // Through a pty the line ends in `\r\n` (onlcr).
                    let line = &self.pending[body..body + end];
                    if let Some(event) = parse(line.strip_suffix(b"\r").unwrap_or(line)) {
                        events.push(event);
                    }
                    out.extend_from_slice(&self.pending[..start]);
                    self.pending.drain(..body + end + 1);
                }
                None => {
                    // Keep back a tail that could be the start of the needle.
                    let keep = (1..self.needle.len().min(self.pending.len() + 1))
                        .rev()
                        .find(|&k| self.pending.ends_with(&self.needle[..k]))
                        .unwrap_or(0);
                    let pass = self.pending.len() - keep;
                    out.extend_from_slice(&self.pending[..pass]);
                    self.pending.drain(..pass);
                    return out;
                }
            }
        }
    }

    /// The end of the stream: whatever was held back is the user's.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse(body: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(body).ok();
    if let Some(name) = body.strip_prefix(b"missing:") {
        return Some(Event::Missing(name.to_vec()));
    }
    let text = text?;
    if let Some(pid) = text.strip_prefix("pid:") {
        return pid.parse().ok().map(Event::Pid);
    }
    let (stage, code) = text.strip_prefix("status:")?.split_once(':')?;
    Some(Event::Status {
        stage: stage.parse().ok()?,
        code: code.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(marker: &str, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Event>) {
        let mut filter = Filter::new(marker);
        let mut events = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(filter.feed(chunk, &mut events));
        }
        out.extend(filter.finish());
        (out, events)
    }

    #[test]
    fn status_lines_are_removed_exactly_and_reported() {
        // A stage's last line without a newline, then the status line the wrapper adds.
        let stream =
            b"\x1eM:pid:42\nerror: x\npartial\x1eM:status:0:1\n\x1eM:missing:pr og\nM:end\n";
        let (out, events) = run("M", &[stream]);
        assert_eq!(out, b"error: x\npartialM:end\n");
        let missing = Event::Missing(b"pr og".to_vec());
        assert_eq!(
            events,
            [Event::Pid(42), Event::Status { stage: 0, code: 1 }, missing]
        );
    }

    #[test]
    fn a_status_line_split_across_chunks_is_still_found() {
        let text: &[u8] = b"a\nb\x1eMARK:status:1:141\nc";
        for split in 0..=text.len() {
            let (out, events) = run("MARK", &[&text[..split], &text[split..]]);
            assert_eq!(out, b"a\nbc", "split at {split}");
            assert_eq!(
                events,
                [Event::Status {
                    stage: 1,
                    code: 141
                }],
                "split at {split}"
            );
        }
    }

    #[test]
    fn status_lines_through_a_pty_lose_their_carriage_returns_too() {
        let (out, events) = run("M", &[b"out\r\n\x1eM:pid:7\r\nmore\r\n"]);
        assert_eq!(out, b"out\r\nmore\r\n");
        assert_eq!(events, [Event::Pid(7)]);
    }

    #[test]
    fn a_line_end_is_passed_on_at_once() {
        let mut filter = Filter::new("M");
        let mut events = Vec::new();
        assert_eq!(filter.feed(b"early\n", &mut events), b"early\n");
    }

    #[test]
    fn markers_are_unique() {
        let a = new_marker();
        assert_eq!(a.len(), 34);
        assert_ne!(a, new_marker());
    }
}
