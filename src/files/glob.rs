//! Shell-style patterns (`*`, `?`, `[...]`, `**`) matched against a machine's directories.
//!
//! The walk lists only the directories the pattern can reach: each component is matched
//! against one listing, and `**` is the only thing that descends without a name to follow.
//! Listings of sibling directories run concurrently (one SFTP round trip each).

use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};

use std::ffi::OsString;

use super::{
    FileKind, MachinePath, Metadata,
    path::{TREE_CONCURRENCY, list_with_meta},
};
use crate::Result;

/// A parsed pattern: its `/`-separated components.
#[derive(Debug)]
pub(crate) struct Pattern {
    components: Vec<Component>,
}

#[derive(Debug)]
enum Component {
    /// `**`: any number of directories.
    AnyDirs,
    /// A name pattern.
    Name(Vec<Token>),
}

#[derive(Debug, Clone)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Any,
    /// `[...]`: ranges (a single character is a range of one), negated or not.
    Set(bool, Vec<(char, char)>),
}

impl Pattern {
    pub(crate) fn parse(text: &str) -> std::result::Result<Pattern, String> {
        if text.is_empty() {
            return Err("the pattern is empty".to_owned());
        }
        if text.starts_with('/') {
            return Err(format!(
                "the pattern {text:?} is absolute: it is matched under the path glob() is called on"
            ));
        }
        let mut components = Vec::new();
        for part in text
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
        {
            if part == "**" {
                if !matches!(components.last(), Some(Component::AnyDirs)) {
                    components.push(Component::AnyDirs);
                }
                continue;
            }
            components.push(Component::Name(parse_name(part, text)?));
        }
        Ok(Pattern { components })
    }
}

fn parse_name(part: &str, whole: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = part.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => Token::Any,
            '?' => Token::One,
            '\\' => Token::Literal(chars.next().unwrap_or('\\')),
            '[' => {
                let negated = matches!(chars.peek(), Some('!' | '^'));
                if negated {
                    chars.next();
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let Some(start) = chars.next() else {
                        return Err(format!("unclosed [ in the pattern {whole:?}"));
                    };
                    if start == ']' && !first {
                        break;
                    }
                    first = false;
                    let start = if start == '\\' {
                        chars.next().unwrap_or('\\')
                    } else {
                        start
                    };
                    let mut ahead = chars.clone();
                    if ahead.next() == Some('-') && ahead.peek().is_some_and(|c| *c != ']') {
                        chars.next();
                        let end = chars.next().unwrap_or(start);
                        ranges.push((start, end));
                    } else {
                        ranges.push((start, start));
                    }
                }
                Token::Set(negated, ranges)
            }
            c => Token::Literal(c),
        });
    }
    Ok(tokens)
}

/// Whether `name` matches `tokens`; a leading `.` must be matched by a literal `.`.
fn matches(tokens: &[Token], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    if name.first() == Some(&'.') && !matches!(tokens.first(), Some(Token::Literal('.'))) {
        return false;
    }
    match_from(tokens, &name)
}

fn match_from(tokens: &[Token], name: &[char]) -> bool {
    // Iterative with one backtrack point for the last `*`, as in fnmatch: linear for the
    // usual patterns, no exponential blow-up for many stars.
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::Any) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(Token::One) => {
                t += 1;
                n += 1;
                continue;
            }
            Some(Token::Literal(c)) if *c == name[n] => {
                t += 1;
                n += 1;
                continue;
            }
            Some(Token::Set(negated, ranges))
                if ranges.iter().any(|(a, b)| (*a..=*b).contains(&name[n])) != *negated =>
            {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((star_t, star_n)) => {
                t = star_t + 1;
                n = star_n + 1;
                star = Some((star_t, star_n + 1));
            }
            None => return false,
        }
    }
    tokens[t..].iter().all(|token| matches!(token, Token::Any))
}

/// Every path under `base` that `pattern` matches (unsorted, possibly repeated).
pub(crate) async fn walk(base: &MachinePath, pattern: &Pattern) -> Result<Vec<MachinePath>> {
    walk_from(base.clone(), &pattern.components).await
}

fn walk_from(dir: MachinePath, rest: &[Component]) -> BoxFuture<'_, Result<Vec<MachinePath>>> {
    Box::pin(async move {
        if rest.is_empty() {
            return Ok(vec![dir]);
        }
        match list_with_meta(&dir).await? {
            Some(entries) => walk_listed(dir, entries, rest).await,
            None => Ok(Vec::new()),
        }
    })
}

/// What `rest` matches under `dir`, whose listing is `entries`.
fn walk_listed(
    dir: MachinePath,
    entries: Vec<(OsString, Metadata)>,
    rest: &[Component],
) -> BoxFuture<'_, Result<Vec<MachinePath>>> {
    Box::pin(async move {
        let Some((first, after)) = rest.split_first() else {
            return Ok(vec![dir]);
        };
        let mut next: Vec<(MachinePath, &[Component])> = Vec::new();
        match first {
            Component::AnyDirs => {
                // Zero directories: what follows `**` applies here. A trailing `**` matches
                // every entry below, files and directories, but not the directory itself.
                let mut found = if after.is_empty() {
                    Vec::new()
                } else {
                    walk_listed(dir.clone(), entries.clone(), after).await?
                };
                for (name, meta) in entries {
                    if name.to_string_lossy().starts_with('.') {
                        continue;
                    }
                    let child = dir.join(&name);
                    if after.is_empty() {
                        found.push(child.clone());
                    }
                    if meta.kind == FileKind::Dir {
                        next.push((child, rest));
                    }
                }
                found.extend(descend(next).await?);
                return Ok(found);
            }
            Component::Name(tokens) => {
                for (name, meta) in entries {
                    if !matches(tokens, &name.to_string_lossy()) {
                        continue;
                    }
                    let is_dir = match meta.kind {
                        FileKind::Dir => true,
                        // A symlink to a directory is followed when a named component
                        // continues through it, as a shell does.
                        FileKind::Symlink => true,
                        _ => false,
                    };
                    if after.is_empty() || is_dir {
                        next.push((dir.join(&name), after));
                    }
                }
            }
        }
        descend(next).await
    })
}

async fn descend(next: Vec<(MachinePath, &[Component])>) -> Result<Vec<MachinePath>> {
    let mut found = Vec::new();
    let mut walking = FuturesUnordered::new();
    let mut queue = next.into_iter();
    loop {
        while walking.len() < TREE_CONCURRENCY {
            let Some((path, rest)) = queue.next() else {
                break;
            };
            walking.push(walk_from(path, rest));
        }
        match walking.next().await {
            Some(result) => found.extend(result?),
            None => return Ok(found),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_matches(pattern: &str, name: &str) -> bool {
        let parsed = Pattern::parse(pattern).unwrap();
        match &parsed.components[..] {
            [Component::Name(tokens)] => matches(tokens, name),
            other => panic!("not one name component: {other:?}"),
        }
    }

    #[test]
    fn names() {
        assert!(name_matches("*.log", "app.log"));
        assert!(!name_matches("*.log", "app.log.1"));
        assert!(name_matches("*.log*", "app.log.1"));
        assert!(name_matches("a?c", "abc"));
        assert!(!name_matches("a?c", "ac"));
        assert!(name_matches("[a-c]x", "bx"));
        assert!(!name_matches("[!a-c]x", "bx"));
        assert!(name_matches("[^a-c]x", "dx"));
        assert!(name_matches("[]]", "]"));
        assert!(name_matches("[a-]", "-"));
        assert!(name_matches("\\*", "*"));
        assert!(!name_matches("\\*", "x"));
        assert!(name_matches("*", "ünïcødé name"));
        assert!(name_matches("*a*a*a*a*b", "aaaaaaaaaaaaaaaaab"));
        assert!(!name_matches(
            "*a*a*a*a*b",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
    }

    #[test]
    fn hidden_names_need_a_literal_dot() {
        assert!(!name_matches("*", ".profile"));
        assert!(!name_matches("?profile", ".profile"));
        assert!(name_matches(".*", ".profile"));
    }

    #[test]
    fn bad_patterns_are_named() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("/etc/*").unwrap_err().contains("absolute"));
        assert!(Pattern::parse("a[bc").unwrap_err().contains("unclosed ["));
    }
}
