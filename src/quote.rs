//! Quoting words for a POSIX shell.
//!
//! This is the only place that decides how an argument is written for a shell: the
//! command lines that `Display` renders (for a person to paste into a terminal) and, on
//! remote machines, the command line the remote shell parses. Both must agree, and a
//! remote argument must reach the remote process byte for byte, whatever it contains.

/// Appends `word` to `line`, quoted so that a POSIX shell reads it back as exactly these
/// bytes, as one word.
///
/// Words made only of characters no shell treats specially stay bare (`ls`, `-la`,
/// `/var/log`, `--out=x.txt`); everything else is single-quoted, with each `'` written as
/// `'\''`. `program` marks the first word of a command, where a bare `NAME=value` would be
/// read as a variable assignment instead of a command name, so there `=` is quoted too.
pub(crate) fn push_word(line: &mut Vec<u8>, word: &[u8], program: bool) {
    push_quoted(line, word, program, None);
}

/// [`push_word`] for a command line that must stay on one line: each newline byte of
/// `word` is written as `"$VAR"`, where the shell variable `newline_var` holds a newline.
#[cfg_attr(not(feature = "ssh"), allow(dead_code))] // only the SSH machine uses it
pub(crate) fn push_word_one_line(
    line: &mut Vec<u8>,
    word: &[u8],
    program: bool,
    newline_var: &str,
) {
    push_quoted(line, word, program, Some(newline_var));
}

/// The one quoting function behind both.
fn push_quoted(line: &mut Vec<u8>, word: &[u8], program: bool, newline_var: Option<&str>) {
    let bare = !word.is_empty()
        && word.iter().all(|&b| {
            b.is_ascii_alphanumeric() || b"-_./,:@%+".contains(&b) || (b == b'=' && !program)
        });
    if bare {
        line.extend_from_slice(word);
        return;
    }
    line.push(b'\'');
    for &b in word {
        match (b, newline_var) {
            (b'\'', _) => line.extend_from_slice(b"'\\''"),
            (b'\n', Some(var)) => {
                line.extend_from_slice(b"'\"$");
                line.extend_from_slice(var.as_bytes());
                line.extend_from_slice(b"\"'");
            }
            _ => line.push(b),
        }
    }
    line.push(b'\'');
}

/// A command line for display: the program and its arguments, quoted, as text. Bytes that
/// are not UTF-8 show as U+FFFD here; the remote command line keeps them exact.
pub(crate) fn display_line<'a>(program: &[u8], args: impl Iterator<Item = &'a [u8]>) -> String {
    let mut line = Vec::new();
    push_word(&mut line, program, true);
    for arg in args {
        line.push(b' ');
        push_word(&mut line, arg, false);
    }
    String::from_utf8(line)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(word: &str, program: bool) -> String {
        let mut line = Vec::new();
        push_word(&mut line, word.as_bytes(), program);
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn bare_words_stay_bare() {
        for word in ["ls", "-la", "/var/log", "a.b,c:d@e%f+g", "--out=x"] {
            assert_eq!(quoted(word, false), word);
        }
    }

    #[test]
    fn special_words_are_single_quoted() {
        assert_eq!(quoted("", false), "''");
        assert_eq!(quoted("a b", false), "'a b'");
        assert_eq!(quoted("it's", false), "'it'\\''s'");
        assert_eq!(quoted("$(rm -rf /)", false), "'$(rm -rf /)'");
        assert_eq!(quoted("~", false), "'~'");
        assert_eq!(quoted("*", false), "'*'");
        assert_eq!(quoted("#x", false), "'#x'");
        assert_eq!(quoted("A=b", true), "'A=b'");
    }

    #[test]
    fn one_line_words_carry_their_newlines_in_a_variable() {
        let mut line = Vec::new();
        push_word_one_line(&mut line, b"a\nb'c\n", false, "nl");
        assert_eq!(line, b"'a'\"$nl\"'b'\\''c'\"$nl\"''");
    }
}
