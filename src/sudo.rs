//! Running as another user through `sudo`: the password, asked for at most once per
//! machine, and the user a view becomes. How each machine runs `sudo` lives with it
//! (`ssh/sudo.rs`, `local/process.rs`).

use std::{
    fmt,
    sync::{Arc, atomic::AtomicBool},
};

use tokio::sync::OnceCell;

use crate::{Error, Result, Secret};

/// Asks for sudo's password: given the machine's name, returns it (`None`: there is none).
pub(crate) type AskPassword = Arc<dyn Fn(&str) -> Option<Secret> + Send + Sync>;

/// Where sudo's password comes from. Shared by a machine and every view made from it, so a
/// callback is asked at most once per machine, and only when sudo asks.
#[derive(Default)]
pub(crate) struct SudoPassword {
    given: Option<Secret>,
    ask: Option<AskPassword>,
    asked: OnceCell<Option<Secret>>,
}

impl SudoPassword {
    pub(crate) fn given(secret: Secret) -> Arc<SudoPassword> {
        Arc::new(SudoPassword {
            given: Some(secret),
            ..SudoPassword::default()
        })
    }

    pub(crate) fn asked(ask: AskPassword) -> Arc<SudoPassword> {
        Arc::new(SudoPassword {
            ask: Some(ask),
            ..SudoPassword::default()
        })
    }

    /// The password if it is known without asking anyone (given, or asked already).
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only remote kills need it
    pub(crate) fn known(&self) -> Option<Secret> {
        self.given
            .clone()
            .or_else(|| self.asked.get().cloned().flatten())
    }

    /// Whether a password can be had without asking anyone.
    pub(crate) fn is_set(&self) -> bool {
        self.given.is_some() || self.ask.is_some()
    }

    /// The password: the one given, else the callback's answer (asked once, on a blocking
    /// thread, since it may read a terminal).
    pub(crate) async fn get(&self, machine: &str) -> Option<Secret> {
        if let Some(given) = &self.given {
            return Some(given.clone());
        }
        let ask = self.ask.clone()?;
        let machine = machine.to_owned();
        self.asked
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || ask(&machine))
                    .await
                    .ok()
                    .flatten()
            })
            .await
            .clone()
    }
}

impl fmt::Debug for SudoPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "***" } else { "none" })
    }
}

/// The user a machine view runs everything as, and how to get sudo's password.
#[derive(Clone, Debug)]
pub(crate) struct Runas {
    pub(crate) user: String,
    pub(crate) password: Arc<SudoPassword>,
    /// Learnt from a refusal without a terminal (`requiretty`): start with a pty.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only SSH machines have ptys
    pub(crate) needs_pty: Arc<AtomicBool>,
}

impl Runas {
    /// Checks `user` before it reaches a command line: a name (letters, digits, `_`, `.`,
    /// `-`, `@`, `$`, not starting with `-`) or `#UID`.
    pub(crate) fn new(user: &str, password: Arc<SudoPassword>) -> Runas {
        Runas {
            user: user.to_owned(),
            password,
            needs_pty: Arc::default(),
        }
    }

    /// The user, unless it cannot be given to sudo safely.
    pub(crate) fn checked_user(&self, machine: &str) -> Result<&str> {
        let user = self.user.as_str();
        let name = !user.is_empty()
            && !user.starts_with('-')
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-@$".contains(&b));
        let uid = user.len() > 1
            && user.starts_with('#')
            && user[1..].bytes().all(|b| b.is_ascii_digit());
        if name || uid {
            Ok(user)
        } else {
            Err(Error::Sudo {
                machine: machine.to_owned(),
                user: user.escape_debug().to_string(),
                reason: "not a user name sudo can be given (letters, digits, `_.-@$`, or \
                         `#UID`)"
                    .to_owned(),
            })
        }
    }

    /// The name errors and logs give a machine seen through this view.
    pub(crate) fn view_name(&self, machine: &str) -> String {
        format!("{machine} (sudo -u {})", self.user)
    }
}

/// 128 random bits as hex, new for every call: the token of a [`Gate`], and the marker of
/// a remote line's reports.
pub(crate) fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // RandomState is seeded from the OS's randomness.
    let mut halves = [0u64; 2];
    for half in &mut halves {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(count);
        *half = hasher.finish();
    }
    format!("{:016x}{:016x}", halves[0], halves[1])
}

/// Counts sudo's prompts and finds the line that says the command has started, in what
/// sudo and the command print before it (chunks may cut either anywhere).
pub(crate) struct Gate {
    prompt: Vec<u8>,
    ready: Vec<u8>,
    seen: Vec<u8>,
    answered: usize,
}

/// What to do after feeding the [`Gate`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Read more.
    Wait,
    /// sudo asks for the password (the first time): send it.
    Answer,
    /// sudo asked again: the password was refused.
    Refused,
    /// The command runs: what came after the ready line is the command's.
    Ready(Vec<u8>),
}

/// What sudo printed before it gave up, kept for the error, up to this many bytes.
const KEEP: usize = 64 * 1024;

impl Gate {
    /// `token`: random, new for every start, so no text of sudo's or the user's can pass
    /// for the prompt or the ready line.
    pub(crate) fn new(token: &str) -> Gate {
        Gate {
            prompt: format!("lp-sudo-{token}:").into_bytes(),
            ready: format!("lp-ready-{token}.").into_bytes(),
            seen: Vec::new(),
            answered: 0,
        }
    }

    /// The `-p` prompt sudo is given.
    pub(crate) fn prompt(&self) -> &str {
        std::str::from_utf8(&self.prompt).unwrap_or_default()
    }

    /// What the command prints first, once sudo has started it.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))] // local stages print no ready line
    pub(crate) fn ready(&self) -> &str {
        std::str::from_utf8(&self.ready).unwrap_or_default()
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Step {
        if self.seen.len() < KEEP {
            self.seen.extend_from_slice(bytes);
        }
        if let Some(at) = find(&self.seen, &self.ready) {
            let rest = self.seen[at + self.ready.len()..].to_vec();
            return Step::Ready(rest);
        }
        let prompts = count(&self.seen, &self.prompt);
        if prompts > self.answered {
            self.answered = prompts;
            return if prompts > 1 {
                Step::Refused
            } else {
                Step::Answer
            };
        }
        Step::Wait
    }

    /// Whether sudo has asked for a password.
    #[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only the SSH gate retries
    pub(crate) fn asked(&self) -> bool {
        self.answered > 0
    }

    /// The end of what sudo printed (its last three lines: the reason comes last, after
    /// any lecture), its prompts taken out, for an error.
    pub(crate) fn printed(&self) -> String {
        let mut text = Vec::new();
        let mut rest = self.seen.as_slice();
        while let Some(at) = find(rest, &self.prompt) {
            text.extend_from_slice(&rest[..at]);
            rest = &rest[at + self.prompt.len()..];
        }
        text.extend_from_slice(rest);
        let text = String::from_utf8_lossy(&text).replace('\r', "");
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = haystack;
    while let Some(at) = find(rest, needle) {
        n += 1;
        rest = &rest[at + needle.len()..];
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_counted_across_chunks_and_the_ready_line_ends_the_gate() {
        let mut gate = Gate::new("t0k");
        assert_eq!(
            gate.feed(b"We trust you have received the usual lecture\nlp-su"),
            Step::Wait
        );
        assert_eq!(gate.feed(b"do-t0k:"), Step::Answer);
        assert_eq!(gate.feed(b"\n"), Step::Wait);
        assert_eq!(gate.feed(b"Sorry, try again.\nlp-sudo-t0k:"), Step::Refused);
        assert_eq!(
            gate.printed(),
            "We trust you have received the usual lecture / Sorry, try again."
        );
        assert!(!gate.printed().contains("lp-sudo"));
        let mut gate = Gate::new("t0k");
        assert_eq!(gate.feed(b"lp-ready-t0"), Step::Wait);
        assert_eq!(gate.feed(b"k.after"), Step::Ready(b"after".to_vec()));
    }

    #[test]
    fn only_names_and_uids_reach_sudo() {
        let check = |user: &str| {
            Runas::new(user, Arc::default())
                .checked_user("m")
                .map(str::to_owned)
        };
        for good in ["root", "postgres", "www-data", "a.b_c", "#1000"] {
            assert_eq!(check(good).unwrap(), good);
        }
        for bad in ["", "-u", "a b", "x'y", "#", "#1a", "a;b", "\u{e9}"] {
            assert!(matches!(check(bad), Err(Error::Sudo { .. })), "{bad}");
        }
    }
}
