//! The template language of `cmd!`, kept free of `proc_macro` types so that it can be
//! unit-tested like any other code.
//!
//! Two passes over the template (the string literal's value, Rust escapes already
//! resolved): [`lex`] turns characters into words, splats and operators, and [`parse`]
//! groups those into pipeline stages with their redirects. Every construct a shell
//! would give a meaning to and `cmd!` does not is rejected here, with the byte range
//! it occupies, so the caller can show the user where it is.

use std::ops::Range;

/// A rejected template: what to tell the user, and which bytes of the template it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error {
    pub(crate) message: String,
    pub(crate) at: Range<usize>,
}

fn error<T>(at: Range<usize>, message: impl Into<String>) -> Result<T, Error> {
    Err(Error {
        message: message.into(),
        at,
    })
}

/// Part of one argument: literal text, or an interpolated Rust place such as `cfg.port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Expr(String),
}

/// One argument (or file name): its pieces glued together. No pieces is the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Word {
    pub(crate) pieces: Vec<Piece>,
}

impl Word {
    /// The word's text when it has no interpolation in it.
    pub(crate) fn as_text(&self) -> Option<String> {
        let mut text = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Expr(_) => return None,
            }
        }
        Some(text)
    }

    fn push_text(&mut self, c: char) {
        match self.pieces.last_mut() {
            Some(Piece::Text(t)) => t.push(c),
            _ => self.pieces.push(Piece::Text(c.to_string())),
        }
    }
}

/// A command-line argument after the program: one word, or `{expr...}` spread into many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    Word(Word),
    Splat(String),
}

/// A redirect of one stage, in the order written. `&> f` is `Stdout` then `StderrToStdout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    StdinFile(Word),
    /// `<<< word`: the word's bytes followed by one newline, as bash feeds them.
    HereString(Word),
    Stdout {
        target: Word,
        append: bool,
    },
    Stderr {
        target: Word,
        append: bool,
    },
    StderrToStdout,
}

/// One command of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stage {
    pub(crate) program: Word,
    pub(crate) args: Vec<Arg>,
    pub(crate) redirects: Vec<Redirect>,
}

/// Resolves the escapes of a Rust string literal as written in source (`"..."`, `r"..."`,
/// `r#"..."#`). `None` if `src` is not a plain string literal (a byte or C string, a number, a
/// string with a suffix).
pub(crate) fn literal_value(src: &str) -> Option<String> {
    if let Some(raw) = src.strip_prefix('r') {
        let hashes = raw.len() - raw.trim_start_matches('#').len();
        let body = raw[hashes..].strip_prefix('"')?;
        let body = body.strip_suffix(&raw[..hashes])?.strip_suffix('"')?;
        return Some(body.to_owned());
    }
    let body = src.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'x' => {
                let hex: String = [chars.next()?, chars.next()?].iter().collect();
                out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
            }
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let mut hex = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        '_' => {}
                        h => hex.push(h),
                    }
                }
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            '\n' | '\r' => {
                // A line continuation: the newline and the next line's indentation vanish.
                while chars.next_if(|&c| is_blank(c)).is_some() {}
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Renders an error with the template line it is about and carets under the offending
/// part: the compiler can only underline the whole string literal.
pub(crate) fn render(template: &str, err: &Error) -> String {
    if template.trim().is_empty() {
        return err.message.clone();
    }
    let start = err.at.start.min(template.len());
    let line_start = template[..start].rfind('\n').map_or(0, |p| p + 1);
    let line_end = template[start..]
        .find('\n')
        .map_or(template.len(), |p| start + p);
    let end = err.at.end.clamp(start, line_end);
    let line: String = template[line_start..line_end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let indent = template[line_start..start].chars().count();
    let width = template[start..end].chars().count().max(1);
    format!(
        "{}\n    {}\n    {}{}",
        err.message,
        line.trim_end(),
        " ".repeat(indent),
        "^".repeat(width)
    )
}

/// Parses a whole template into the stages of a pipeline (one stage: a plain command).
pub(crate) fn parse(template: &str) -> Result<Vec<Stage>, Error> {
    let tokens = lex(template)?;
    Parser::default().run(template, tokens)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StdinFile,
    HereString,
    Stdout { append: bool },
    Stderr { append: bool },
    StderrToStdout,
    Both { append: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// `assignment`: starts with an unquoted `NAME=`, which a shell takes as an environment
    /// variable when it comes before the program. `bang`: an unquoted `!`, which negates the
    /// exit status there.
    Word {
        word: Word,
        assignment: bool,
        bang: bool,
    },
    Splat(String),
    Pipe,
    Redirect(Op),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    tok: Tok,
    at: Range<usize>,
}

/// The word being read.
struct Partial {
    start: usize,
    word: Word,
    /// Only unquoted, unescaped literal characters so far (and their text), which is what
    /// makes `2>` a redirect of stderr and `NAME=` an environment assignment.
    plain: Option<String>,
    assignment: bool,
    /// The previous character was the `=` of `NAME=`: a shell expands a `~` right after it.
    after_assignment: bool,
}

fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let mut lexer = Lexer {
        src,
        chars: src.char_indices().collect(),
        i: 0,
        tokens: Vec::new(),
        partial: None,
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'a> {
    src: &'a str,
    chars: Vec<(usize, char)>,
    i: usize,
    tokens: Vec<Token>,
    partial: Option<Partial>,
}

/// Whitespace between words: what bash splits on (and newline, so templates may span lines).
/// Not Unicode spaces such as U+00A0, which bash keeps inside a word.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Characters that end an unquoted word, as in a POSIX shell.
fn is_boundary(c: char) -> bool {
    is_blank(c) || matches!(c, '|' | '&' | ';' | '<' | '>' | '(' | ')')
}

/// A shell variable name, which `NAME=` before a program would assign.
fn is_shell_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

const GLOB: &str = "and cmd! does not expand globs: list the files in Rust and pass them with \
                    `{files...}`, or quote it";
const SUBSTITUTION: &str = "(cmd! runs no shell): run the inner command first \
                            (`let out = cmd!(\"..\").read().await?;`) and pass its output with `{out}`";
const VARIABLE: &str = "(cmd! runs no shell): read the value in Rust (`std::env::var(\"NAME\")`) and \
                        pass it with `{value}`";
const SEQUENCE: &str = "cmd! builds one command or pipeline, not a script: run one cmd! after \
                        another in Rust";

impl Lexer<'_> {
    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.i + n).map(|&(_, c)| c)
    }

    fn peek(&self) -> Option<char> {
        self.peek_at(0)
    }

    /// Byte offset of the character `n` places ahead (the template's end past the last).
    fn offset(&self, n: usize) -> usize {
        self.chars
            .get(self.i + n)
            .map_or(self.src.len(), |&(o, _)| o)
    }

    /// Byte range of the next `n` characters.
    fn here(&self, n: usize) -> Range<usize> {
        self.offset(0)..self.offset(n)
    }

    fn partial(&mut self) -> &mut Partial {
        let start = self.offset(0);
        self.partial.get_or_insert_with(|| Partial {
            start,
            word: Word::default(),
            plain: Some(String::new()),
            assignment: false,
            after_assignment: false,
        })
    }

    /// Adds a quoted or escaped character: one that can never be an operator.
    fn push_quoted(&mut self, c: char) {
        let p = self.partial();
        p.word.push_text(c);
        p.plain = None;
        p.after_assignment = false;
    }

    fn push_plain(&mut self, c: char) {
        let p = self.partial();
        p.word.push_text(c);
        p.after_assignment = false;
        if let Some(plain) = &mut p.plain {
            if c == '=' && !p.assignment && is_shell_name(plain) {
                p.assignment = true;
                p.after_assignment = true;
            }
            plain.push(c);
        }
    }

    fn end_word(&mut self) {
        if let Some(p) = self.partial.take() {
            let end = self.offset(0);
            self.tokens.push(Token {
                tok: Tok::Word {
                    word: p.word,
                    assignment: p.assignment,
                    bang: p.plain.as_deref() == Some("!"),
                },
                at: p.start..end,
            });
        }
    }

    fn push_token(&mut self, tok: Tok, at: Range<usize>) {
        self.tokens.push(Token { tok, at });
    }

    fn run(&mut self) -> Result<(), Error> {
        while let Some(c) = self.peek() {
            match c {
                c if is_blank(c) => {
                    self.end_word();
                    self.i += 1;
                }
                '\'' => self.single_quoted()?,
                '"' => self.double_quoted()?,
                '\\' => match self.peek_at(1) {
                    // A line continuation: both characters vanish, the word goes on.
                    Some('\n') => self.i += 2,
                    Some(c) => {
                        self.push_quoted(c);
                        self.i += 2;
                    }
                    None => {
                        return error(
                            self.here(1),
                            "a trailing `\\` escapes nothing: remove it, or write `\\\\` for a \
                             backslash",
                        );
                    }
                },
                '{' => self.brace(false)?,
                '}' => self.close_brace()?,
                '|' => self.pipe()?,
                '&' => self.ampersand()?,
                '<' | '>' => self.redirect()?,
                ';' => return error(self.here(1), format!("`;` is not supported: {SEQUENCE}")),
                '$' => return Err(self.dollar(false)),
                '`' => return Err(self.backtick()),
                '(' | ')' => {
                    return error(
                        self.here(1),
                        format!(
                            "unquoted `{c}` groups commands in a shell (a subshell), which cmd! \
                             does not support: quote it (`'{c}'`) to pass it as text"
                        ),
                    );
                }
                '*' | '?' | '[' => {
                    return error(
                        self.here(1),
                        format!(
                            "unquoted `{c}` is a glob pattern in a shell, {GLOB} (`'{c}'`) to pass it as text"
                        ),
                    );
                }
                '#' if self.partial.is_none() => {
                    return error(
                        self.here(1),
                        "`#` starts a comment in a shell and cmd! has no comments: quote it \
                         (`'#'`) to pass it as text",
                    );
                }
                '~' if self.partial.as_ref().is_none_or(|p| p.after_assignment) => {
                    return error(
                        self.here(1),
                        "cmd! does not expand `~` to the home directory: build the path in Rust \
                         (for instance from `std::env::home_dir()`) and pass it with `{path}`, or \
                         quote it (`'~'`) to pass it as text",
                    );
                }
                c => {
                    self.push_plain(c);
                    self.i += 1;
                }
            }
        }
        self.end_word();
        Ok(())
    }

    /// A quote starts or continues a word, even an empty one: `''` is an empty argument.
    fn open_quote(&mut self) {
        let p = self.partial();
        p.plain = None;
        p.after_assignment = false;
        self.i += 1;
    }

    fn single_quoted(&mut self) -> Result<(), Error> {
        let start = self.offset(0);
        self.open_quote();
        loop {
            match self.peek() {
                Some('\'') => break,
                Some(c) => self.push_quoted(c),
                None => {
                    return error(
                        start..self.src.len(),
                        "unclosed `'`: end the quoted text with another `'`",
                    );
                }
            }
            self.i += 1;
        }
        self.i += 1;
        Ok(())
    }

    fn double_quoted(&mut self) -> Result<(), Error> {
        let start = self.offset(0);
        self.open_quote();
        loop {
            let Some(c) = self.peek() else {
                return error(
                    start..self.src.len(),
                    "unclosed `\"`: end the quoted text with another `\"`",
                );
            };
            match c {
                '"' => break,
                '\\' => match self.peek_at(1) {
                    Some(e @ ('"' | '\\' | '$' | '`')) => {
                        self.push_quoted(e);
                        self.i += 2;
                        continue;
                    }
                    Some('\n') => {
                        self.i += 2;
                        continue;
                    }
                    // Any other backslash is kept, as bash keeps it inside double quotes.
                    _ => self.push_quoted('\\'),
                },
                '$' => return Err(self.dollar(true)),
                '`' => return Err(self.backtick()),
                '{' => {
                    self.brace(true)?;
                    continue;
                }
                '}' => {
                    self.close_brace()?;
                    continue;
                }
                c => self.push_quoted(c),
            }
            self.i += 1;
        }
        self.i += 1;
        Ok(())
    }

    fn dollar(&self, quoted: bool) -> Error {
        let literal = if quoted {
            "write `\\$` for a dollar sign inside double quotes"
        } else {
            "quote it (`'$'`) to pass a dollar sign"
        };
        match self.peek_at(1) {
            Some('(') => Error {
                at: self.here(2),
                message: format!("command substitution `$(..)` is not supported {SUBSTITUTION}"),
            },
            Some(c)
                if c == '{' || c == '_' || c.is_ascii_alphanumeric() || "?#@*!-$".contains(c) =>
            {
                Error {
                    at: self.here(2),
                    message: format!(
                        "shell variables (`$NAME`, `${{NAME}}`) are not expanded {VARIABLE}; {literal}"
                    ),
                }
            }
            _ => Error {
                at: self.here(1),
                message: format!(
                    "`$` introduces shell expansions, which cmd! does not do: {literal}"
                ),
            },
        }
    }

    fn backtick(&self) -> Error {
        Error {
            at: self.here(1),
            message: format!("command substitution with backticks is not supported {SUBSTITUTION}"),
        }
    }

    /// `{{`, `{expr}` or `{expr...}`; `self.i` is on the `{`.
    fn brace(&mut self, quoted: bool) -> Result<(), Error> {
        if self.peek_at(1) == Some('{') {
            self.push_quoted('{');
            self.i += 2;
            return Ok(());
        }
        let start = self.offset(0);
        let mut len = 1;
        while self.peek_at(len).is_some_and(|c| c != '}') {
            len += 1;
        }
        if self.peek_at(len).is_none() {
            return error(
                start..self.src.len(),
                "unclosed `{`: end the interpolation with `}`, or write `{{` for a literal brace",
            );
        }
        let at = start..self.offset(len + 1);
        let content = &self.src[self.offset(1)..self.offset(len)];
        let (expr, splat) = interpolation(content).map_err(|message| Error {
            message,
            at: at.clone(),
        })?;
        self.i += len + 1;
        if !splat {
            let p = self.partial();
            p.word.pieces.push(Piece::Expr(expr));
            p.plain = None;
            p.after_assignment = false;
            return Ok(());
        }
        let glued = if quoted {
            Some("inside quotes")
        } else if self.partial.is_some() {
            Some("glued to the text before it")
        } else if self.peek().is_some_and(|c| !is_boundary(c)) {
            Some("glued to the text after it")
        } else {
            None
        };
        if let Some(how) = glued {
            return error(
                at,
                format!(
                    "`{{{content}}}` spreads into separate arguments and cannot be {how}: \
                     separate it with spaces, or build the arguments in Rust"
                ),
            );
        }
        self.push_token(Tok::Splat(expr), at);
        Ok(())
    }

    fn close_brace(&mut self) -> Result<(), Error> {
        if self.peek_at(1) == Some('}') {
            self.push_quoted('}');
            self.i += 2;
            return Ok(());
        }
        error(
            self.here(1),
            "unmatched `}`: write `}}` for a literal brace",
        )
    }

    fn pipe(&mut self) -> Result<(), Error> {
        self.end_word();
        match self.peek_at(1) {
            Some('|') => error(
                self.here(2),
                "`||` is not supported: cmd! builds one command or pipeline, not a script; check \
                 `.success().await` of the first command in Rust and run the second when it is \
                 false",
            ),
            Some('&') => error(
                self.here(2),
                "`|&` is not supported: write `2>&1 |` to pipe stderr along with stdout",
            ),
            _ => {
                let at = self.here(1);
                self.i += 1;
                self.push_token(Tok::Pipe, at);
                Ok(())
            }
        }
    }

    fn ampersand(&mut self) -> Result<(), Error> {
        self.end_word();
        match (self.peek_at(1), self.peek_at(2)) {
            (Some('&'), _) => error(
                self.here(2),
                format!(
                    "`&&` is not supported: {SEQUENCE}, e.g. `cmd!(\"a\").run().await?; \
                     cmd!(\"b\").run().await?;` (`?` stops at the first failure, as `&&` does)"
                ),
            ),
            (Some('>'), Some('>')) => self.op(3, Op::Both { append: true }),
            (Some('>'), _) => self.op(2, Op::Both { append: false }),
            _ => error(
                self.here(1),
                "`&` (run in the background) is not supported: call `.spawn()` on the command \
                 and wait for the child when you need it",
            ),
        }
    }

    fn op(&mut self, len: usize, op: Op) -> Result<(), Error> {
        let at = self.here(len);
        self.i += len;
        self.push_token(Tok::Redirect(op), at);
        Ok(())
    }

    /// `<`, `>` and their relatives, with the file descriptor number written before them.
    fn redirect(&mut self) -> Result<(), Error> {
        let fd = match &self.partial {
            Some(p) => match &p.plain {
                Some(digits)
                    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    let fd = (digits.clone(), p.start);
                    self.partial = None;
                    Some(fd)
                }
                _ => {
                    self.end_word();
                    None
                }
            },
            None => None,
        };
        let start = fd.as_ref().map_or(self.offset(0), |&(_, s)| s);
        let c = self.peek();
        let (next, after) = (self.peek_at(1), self.peek_at(2));
        // Length of the operator without the fd digits, to report ranges.
        let mut len = 1;
        let op = match (c, next, after) {
            (Some('<'), Some('<'), Some('<')) => {
                len = 3;
                Op::HereString
            }
            (Some('<'), Some('<'), _) => {
                return error(
                    start..self.offset(2),
                    "here-documents (`<<`) are not supported: use a here-string (`<<< {text}`) \
                     or `.stdin(..)` on the command",
                );
            }
            (Some('<'), Some('('), _) | (Some('>'), Some('('), _) => {
                return error(
                    start..self.offset(2),
                    "process substitution is not supported: run the inner command separately, \
                     or connect the commands with `|`",
                );
            }
            (Some('<'), Some(o @ ('&' | '>')), _) => {
                return error(
                    start..self.offset(2),
                    format!(
                        "`<{o}` is not supported: cmd! redirects stdin from a file (`<`) or a \
                         here-string (`<<<`) only"
                    ),
                );
            }
            (Some('<'), _, _) => Op::StdinFile,
            (Some('>'), Some('>'), _) => {
                len = 2;
                Op::Stdout { append: true }
            }
            (Some('>'), Some('|'), _) => {
                return error(
                    start..self.offset(2),
                    "`>|` is not supported: write `>`, which always overwrites the file",
                );
            }
            (Some('>'), Some('&'), _) => {
                let fd_is_stderr = fd.as_ref().is_some_and(|(d, _)| d == "2");
                let target_ends = self.peek_at(3).is_none_or(is_boundary);
                if fd_is_stderr && after == Some('1') && target_ends {
                    self.i += 3;
                    self.push_token(Tok::Redirect(Op::StderrToStdout), start..self.offset(0));
                    return Ok(());
                }
                let message = if fd.is_none() && after == Some('2') {
                    "`>&2` (stdout into stderr) is not supported; cmd! can only send stderr \
                     into stdout (`2>&1`)"
                } else if fd.is_none() || fd_is_stderr && after != Some('1') {
                    "`>&` is not supported: write `&> file` to send stdout and stderr to a \
                     file, or `2>&1` to send stderr where stdout goes"
                } else {
                    "only `2>&1` is supported among the `>&` duplications: it sends stderr \
                     where stdout goes"
                };
                return error(start..self.offset(3), message);
            }
            _ => Op::Stdout { append: false },
        };
        let op = match (fd.as_ref().map(|(d, _)| d.as_str()), op) {
            (None, op) | (Some("0"), op @ (Op::StdinFile | Op::HereString)) => op,
            (Some("1"), op @ Op::Stdout { .. }) => op,
            (Some("2"), Op::Stdout { append }) => Op::Stderr { append },
            (Some(d), _) => {
                let op_text = &self.src[self.offset(0)..self.offset(len)];
                return error(
                    start..self.offset(len),
                    format!(
                        "`{d}{op_text}` redirects file descriptor {d}, which cmd! does not \
                         support: only stdin (`<`), stdout (`>`, `1>`) and stderr (`2>`) can be \
                         redirected"
                    ),
                );
            }
        };
        self.i += len;
        self.push_token(Tok::Redirect(op), start..self.offset(0));
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    let s = s.strip_prefix("r#").unwrap_or(s);
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && s != "_"
}

/// Checks what is between `{` and `}`: a variable, then fields, tuple indices and method
/// calls without arguments (`cfg.port`, `pair.0`, `dir.path()`), optionally followed by
/// `...`. Returns the expression's text and whether it is a splat.
fn interpolation(content: &str) -> Result<(String, bool), String> {
    let (body, splat) = match content.trim().strip_suffix("...") {
        Some(body) => (body.trim(), true),
        None => (content.trim(), false),
    };
    if body.is_empty() {
        return Err(
            "empty `{}`: write the variable to pass, as in `{path}`, or `{{}}` for literal \
             braces"
                .to_owned(),
        );
    }
    if body.contains(':') && !body.contains("::") {
        return Err(format!(
            "format specs like `{{{content}}}` are not supported: cmd! passes values as they are \
             (`AsRef<OsStr>`), so format the value into a `String` first"
        ));
    }
    let valid = body.split('.').enumerate().all(|(n, segment)| {
        let name = segment.strip_suffix("()").unwrap_or(segment);
        let is_index = n > 0
            && !name.is_empty()
            && name == segment
            && name.bytes().all(|b| b.is_ascii_digit());
        is_index || is_identifier(name)
    });
    if !valid {
        return Err(format!(
            "`{{{content}}}` cannot be interpolated: write a variable, its fields, or method \
             calls without arguments (`{{name}}`, `{{cfg.port}}`, `{{dir.path()}}`); bind \
             anything else to a variable first"
        ));
    }
    Ok((body.to_owned(), splat))
}

#[derive(Default)]
struct Parser {
    stages: Vec<Stage>,
    program: Option<Word>,
    args: Vec<Arg>,
    redirects: Vec<Redirect>,
    /// Where this stage's stdout and stderr are redirected, to reject conflicts.
    stdout_at: Option<Range<usize>>,
    stderr_at: Option<(Range<usize>, bool)>,
    stdin_at: Option<Range<usize>>,
    /// Where the current stage starts (after the `|`), to point at an empty one.
    stage_start: usize,
}

impl Parser {
    fn run(mut self, src: &str, tokens: Vec<Token>) -> Result<Vec<Stage>, Error> {
        let mut tokens = tokens.into_iter().peekable();
        if tokens.peek().is_none() {
            return error(
                0..src.len(),
                "empty command: the template needs at least a program, as in `cmd!(\"ls -l\")`",
            );
        }
        while let Some(Token { tok, at }) = tokens.next() {
            match tok {
                Tok::Word {
                    word,
                    assignment,
                    bang,
                } => {
                    if self.program.is_some() {
                        self.args.push(Arg::Word(word));
                    } else if bang {
                        return error(
                            at,
                            "`!` before a command negates its exit status in a shell, which cmd! \
                             does not do: test `.success().await` in Rust, or quote it (`'!'`) to \
                             run a program named `!`",
                        );
                    } else if assignment {
                        let name = &src[at.start..][..src[at.start..].find('=').unwrap_or(0)];
                        return error(
                            at,
                            format!(
                                "environment assignments before the program (`{name}=..`) are \
                                 not supported: call `.env(\"{name}\", value)` on the command"
                            ),
                        );
                    } else {
                        self.program = Some(word);
                    }
                }
                Tok::Splat(expr) => {
                    if self.program.is_none() {
                        return error(
                            at,
                            format!(
                                "the program cannot be spread from `{{{expr}...}}`: write \
                                 `{{program}} {{args...}}`"
                            ),
                        );
                    }
                    self.args.push(Arg::Splat(expr));
                }
                Tok::Pipe => {
                    self.finish_stage(src, Some(at.clone()))?;
                    self.stage_start = at.end;
                    if tokens.peek().is_none() {
                        return error(at, "`|` needs a command after it");
                    }
                }
                Tok::Redirect(op) => {
                    let mut full = at.clone();
                    let target = if op == Op::StderrToStdout {
                        Word::default()
                    } else {
                        match tokens.next() {
                            Some(Token {
                                tok: Tok::Word { word, .. },
                                at: word_at,
                            }) => {
                                full.end = word_at.end;
                                word
                            }
                            Some(Token {
                                tok: Tok::Splat(expr),
                                at: splat_at,
                            }) => {
                                return error(
                                    splat_at,
                                    format!(
                                        "`{}` needs exactly one value, but `{{{expr}...}}` \
                                         spreads into many: write `{{{expr}}}`",
                                        &src[at]
                                    ),
                                );
                            }
                            _ => {
                                let what = if op == Op::HereString {
                                    "the text to feed to stdin"
                                } else {
                                    "a file name"
                                };
                                return error(
                                    at.clone(),
                                    format!("`{}` needs {what} after it", &src[at]),
                                );
                            }
                        }
                    };
                    self.redirect(src, op, target, full)?;
                }
            }
        }
        self.finish_stage(src, None)?;
        Ok(self.stages)
    }

    /// Closes the current stage, at a `|` (`pipe`, its range) or at the template's end.
    fn finish_stage(&mut self, src: &str, pipe: Option<Range<usize>>) -> Result<(), Error> {
        let Some(program) = self.program.take() else {
            // This stage's text, without the blanks around it.
            let end = pipe.as_ref().map_or(src.len(), |p| p.start);
            let start = self.stage_start.min(end);
            let text = &src[start..end];
            let start = start + (text.len() - text.trim_start_matches(is_blank).len());
            let end = (end - (text.len() - text.trim_end_matches(is_blank).len())).max(start);
            let (message, at) = match pipe {
                _ if !self.redirects.is_empty() => (
                    "a redirect needs a command to apply to: this part of the template has no \
                     program",
                    start..end,
                ),
                Some(pipe) => ("`|` needs a command before it", pipe),
                None => ("`|` needs a command after it", start..end),
            };
            return error(at, message);
        };
        self.stages.push(Stage {
            program,
            args: std::mem::take(&mut self.args),
            redirects: std::mem::take(&mut self.redirects),
        });
        self.stdout_at = None;
        self.stderr_at = None;
        self.stdin_at = None;
        Ok(())
    }

    fn redirect(&mut self, src: &str, op: Op, target: Word, at: Range<usize>) -> Result<(), Error> {
        let twice = |stream: &str, first: &Range<usize>| Error {
            message: format!(
                "{stream} is redirected twice in one command (`{}` and `{}`): keep one",
                &src[first.clone()],
                &src[at.clone()]
            ),
            at: at.clone(),
        };
        let sets_stdout = matches!(op, Op::Stdout { .. } | Op::Both { .. });
        let sets_stderr = matches!(op, Op::Stderr { .. } | Op::Both { .. } | Op::StderrToStdout);
        if matches!(op, Op::StdinFile | Op::HereString) {
            if !self.stages.is_empty() {
                return error(
                    at,
                    "only the first command of a pipeline can take its stdin from `<` or \
                     `<<<`; the others read the pipe",
                );
            }
            if let Some(first) = &self.stdin_at {
                return Err(twice("stdin", first));
            }
            self.stdin_at = Some(at.clone());
        }
        if sets_stdout {
            // `2>&1 > f` in a shell sends stderr where stdout went *before* `> f`; here
            // `2>&1` always follows stdout's final destination, so refuse the other reading.
            if let Some((first, true)) = &self.stderr_at
                && !matches!(op, Op::Both { .. })
            {
                return error(
                    first.start..at.end,
                    format!(
                        "`{}` before `{}` sends stderr to the old stdout in a shell, which cmd! \
                         does not model: write `> file 2>&1` or `&> file`",
                        &src[first.clone()],
                        &src[at.clone()]
                    ),
                );
            }
            if let Some(first) = &self.stdout_at {
                return Err(twice("stdout", first));
            }
            self.stdout_at = Some(at.clone());
        }
        if sets_stderr {
            if let Some((first, _)) = &self.stderr_at {
                return Err(twice("stderr", first));
            }
            self.stderr_at = Some((at.clone(), op == Op::StderrToStdout));
        }
        match op {
            Op::StdinFile => self.redirects.push(Redirect::StdinFile(target)),
            Op::HereString => self.redirects.push(Redirect::HereString(target)),
            Op::Stdout { append } => self.redirects.push(Redirect::Stdout { target, append }),
            Op::Stderr { append } => self.redirects.push(Redirect::Stderr { target, append }),
            Op::StderrToStdout => self.redirects.push(Redirect::StderrToStdout),
            Op::Both { append } => {
                self.redirects.push(Redirect::Stdout { target, append });
                self.redirects.push(Redirect::StderrToStdout);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Piece {
        Piece::Text(s.to_owned())
    }

    fn expr(s: &str) -> Piece {
        Piece::Expr(s.to_owned())
    }

    fn word(pieces: &[Piece]) -> Word {
        Word {
            pieces: pieces.to_vec(),
        }
    }

    fn lit(s: &str) -> Word {
        word(&[text(s)])
    }

    fn arg(s: &str) -> Arg {
        Arg::Word(lit(s))
    }

    fn one(template: &str) -> Stage {
        let mut stages = parse(template).unwrap();
        assert_eq!(stages.len(), 1, "{template}");
        stages.pop().unwrap()
    }

    /// The error, checking that its message contains `needle` and that it points at `at`.
    fn fails(template: &str, at: &str, needle: &str) -> Error {
        let err = parse(template).expect_err(template);
        assert!(
            err.message.contains(needle),
            "{template}: message {:?} lacks {needle:?}",
            err.message
        );
        assert_eq!(&template[err.at.clone()], at, "{template}: {err:?}");
        err
    }

    #[test]
    fn words_split_on_whitespace() {
        let stage = one("  git\tlog \n --oneline   -n 3 ");
        assert_eq!(stage.program, lit("git"));
        assert_eq!(
            stage.args,
            [arg("log"), arg("--oneline"), arg("-n"), arg("3")]
        );
        assert!(stage.redirects.is_empty());
    }

    #[test]
    fn quotes_group_and_glue() {
        let stage = one(r#"echo 'a b' "c  d" e'f'"g"h '' """#);
        assert_eq!(
            stage.args,
            [
                arg("a b"),
                arg("c  d"),
                arg("efgh"),
                Arg::Word(word(&[])),
                Arg::Word(word(&[]))
            ]
        );
    }

    #[test]
    fn single_quotes_are_literal() {
        let stage = one(r#"echo '{x} $HOME \ "* ; && | > ~' '\'"#);
        assert_eq!(stage.args, [arg(r#"{x} $HOME \ "* ; && | > ~"#), arg("\\")]);
    }

    #[test]
    fn double_quotes_interpolate_and_escape() {
        let stage = one(r#"echo "a {x} b" "\"\\\$\`" "\n" "{{}}""#);
        assert_eq!(
            stage.args,
            [
                Arg::Word(word(&[text("a "), expr("x"), text(" b")])),
                arg("\"\\$`"),
                arg("\\n"),
                arg("{}"),
            ]
        );
    }

    #[test]
    fn backslash_outside_quotes_escapes_one_character() {
        let stage = one("echo a\\ b \\* \\$x \\\\ \\2>f x\\\ny");
        assert_eq!(
            stage.args,
            [
                arg("a b"),
                arg("*"),
                arg("$x"),
                arg("\\"),
                arg("2"),
                arg("xy")
            ]
        );
        assert_eq!(
            stage.redirects,
            [Redirect::Stdout {
                target: lit("f"),
                append: false
            }]
        );
    }

    #[test]
    fn interpolations() {
        let stage =
            one("{bin} {x} --out={dir}/x.txt {cfg.port} {pair.0} {tmp.path()} {xs...} {o ...}");
        assert_eq!(stage.program, word(&[expr("bin")]));
        assert_eq!(
            stage.args,
            [
                Arg::Word(word(&[expr("x")])),
                Arg::Word(word(&[text("--out="), expr("dir"), text("/x.txt")])),
                Arg::Word(word(&[expr("cfg.port")])),
                Arg::Word(word(&[expr("pair.0")])),
                Arg::Word(word(&[expr("tmp.path()")])),
                Arg::Splat("xs".to_owned()),
                Arg::Splat("o".to_owned()),
            ]
        );
    }

    #[test]
    fn braces_escape_by_doubling() {
        let stage = one("echo {{}} a{{b}}c '{{'");
        assert_eq!(stage.args, [arg("{}"), arg("a{b}c"), arg("{{")]);
    }

    #[test]
    fn pipelines() {
        let stages = parse("ls -1 {dir} | grep {pats...}|wc -l").unwrap();
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0].program, lit("ls"));
        assert_eq!(stages[1].args, [Arg::Splat("pats".to_owned())]);
        assert_eq!(stages[2].program, lit("wc"));
        assert_eq!(stages[2].args, [arg("-l")]);
    }

    #[test]
    fn redirects() {
        let stage = one("cmd < in >> out 2> {err} x");
        assert_eq!(stage.args, [arg("x")]);
        assert_eq!(
            stage.redirects,
            [
                Redirect::StdinFile(lit("in")),
                Redirect::Stdout {
                    target: lit("out"),
                    append: true
                },
                Redirect::Stderr {
                    target: word(&[expr("err")]),
                    append: false
                },
            ]
        );
        assert_eq!(
            one("cmd 1>out 2>>'e r'").redirects,
            [
                Redirect::Stdout {
                    target: lit("out"),
                    append: false
                },
                Redirect::Stderr {
                    target: lit("e r"),
                    append: true
                },
            ]
        );
        assert_eq!(
            one("cmd 1>>out").redirects,
            [Redirect::Stdout {
                target: lit("out"),
                append: true
            }]
        );
    }

    #[test]
    fn redirects_written_tight_and_before_the_program() {
        let stage = one("<in sort>out");
        assert_eq!(stage.program, lit("sort"));
        assert_eq!(
            stage.redirects,
            [
                Redirect::StdinFile(lit("in")),
                Redirect::Stdout {
                    target: lit("out"),
                    append: false
                }
            ]
        );
        // A word that is not all digits ends before `>`: `a2>f` is `a2` then `> f`.
        let stage = one("echo a2>f");
        assert_eq!(stage.args, [arg("a2")]);
        // Quoted digits are an argument, not a file descriptor.
        let stage = one("echo '2'>f");
        assert_eq!(stage.args, [arg("2")]);
    }

    #[test]
    fn stderr_into_stdout() {
        assert_eq!(one("make 2>&1").redirects, [Redirect::StderrToStdout]);
        assert_eq!(
            parse("make > log 2>&1 | cat").unwrap()[0].redirects,
            [
                Redirect::Stdout {
                    target: lit("log"),
                    append: false
                },
                Redirect::StderrToStdout
            ]
        );
        assert_eq!(
            one("make &>> {log}").redirects,
            [
                Redirect::Stdout {
                    target: word(&[expr("log")]),
                    append: true
                },
                Redirect::StderrToStdout
            ]
        );
        assert_eq!(
            one("make &>log").redirects,
            [
                Redirect::Stdout {
                    target: lit("log"),
                    append: false
                },
                Redirect::StderrToStdout
            ]
        );
    }

    #[test]
    fn here_strings() {
        assert_eq!(
            one("cat <<< 'hello world'").redirects,
            [Redirect::HereString(lit("hello world"))]
        );
        assert_eq!(
            one("cat <<<{text}").redirects,
            [Redirect::HereString(word(&[expr("text")]))]
        );
    }

    #[test]
    fn characters_a_shell_leaves_alone_are_plain() {
        let stage = one("echo a=b --x=1,2 ] ! % ^ @ + foo~ a#b host:~/dir http://h/#frag");
        let args: Vec<_> = [
            "a=b",
            "--x=1,2",
            "]",
            "!",
            "%",
            "^",
            "@",
            "+",
            "foo~",
            "a#b",
            "host:~/dir",
            "http://h/#frag",
        ]
        .into_iter()
        .map(arg)
        .collect();
        assert_eq!(stage.args, args);
        // `NAME=value` is an argument after the program.
        assert_eq!(one("make CC=gcc").args, [arg("CC=gcc")]);
        // Only a valid shell name makes an assignment; `!` is plain after the program.
        assert_eq!(one("é=x a").program, lit("é=x"));
        assert_eq!(one("'!' x").program, lit("!"));
        assert_eq!(one("test ! -e f").args, [arg("!"), arg("-e"), arg("f")]);
        // bash splits on blanks only: a no-break space stays inside the word.
        assert_eq!(one("echo a\u{a0}b").args, [arg("a\u{a0}b")]);
    }

    #[test]
    fn rejects_shell_sequencing() {
        fails("a; b", ";", "`;` is not supported");
        fails("a && b", "&&", "`&&` is not supported");
        fails("a || b", "||", "`||` is not supported");
        fails("a & b", "&", "`.spawn()`");
        fails("a |& b", "|&", "2>&1 |");
        fails("(a)", "(", "subshell");
        fails("a )", ")", "subshell");
    }

    #[test]
    fn rejects_expansions() {
        fails("echo $(date)", "$(", "command substitution");
        fails("echo \"$(date)\"", "$(", "command substitution");
        fails("echo `date`", "`", "backticks");
        fails("echo $HOME", "$H", "shell variables");
        fails("echo ${HOME}", "${", "shell variables");
        fails("echo \"$HOME\"", "$H", "write `\\$`");
        fails("echo $", "$", "quote it");
        fails("ls *.rs", "*", "glob");
        fails("ls a?", "?", "glob");
        fails("ls [ab]", "[", "glob");
        fails("cd ~/x", "~", "`~`");
        fails("env X=~/x", "~", "`~`");
        fails("echo # hi", "#", "comment");
        fails("FOO=bar make", "FOO=bar", ".env(\"FOO\", value)");
        fails("! grep -q x f", "!", "negates its exit status");
        fails("a | ! b", "!", "negates its exit status");
        fails("FOO=\"a b\" make", "FOO=\"a b\"", ".env(\"FOO\"");
    }

    #[test]
    fn rejects_unsupported_redirects() {
        fails("a << EOF", "<<", "here-documents");
        fails("diff <(a) b", "<(", "process substitution");
        fails("tee >(a)", ">(", "process substitution");
        fails("a 2>&1 > f", "2>&1 > f", "`> file 2>&1` or `&> file`");
        fails("a 2>&1 >> f", "2>&1 >> f", "`> file 2>&1`");
        fails("a >&2", ">&2", "stdout into stderr");
        fails("a >&f", ">&f", "&> file");
        fails("a 1>&2", "1>&2", "only `2>&1`");
        fails("a 3> f", "3>", "file descriptor 3");
        fails("a 2< f", "2<", "file descriptor 2");
        fails("a > x > y", "> y", "stdout is redirected twice");
        fails("a &> x 2> y", "2> y", "stderr is redirected twice");
        fails("a < x <<< y", "<<< y", "stdin is redirected twice");
        fails("a | b < f", "< f", "only the first command");
        fails("a >| f", ">|", "`>|`");
        fails("a <> f", "<>", "`<>`");
        fails("a >", ">", "needs a file name");
        fails("a > | b", ">", "needs a file name");
        fails("a <<<", "<<<", "the text to feed");
        fails("a > {fs...}", "{fs...}", "write `{fs}`");
    }

    #[test]
    fn rejects_bad_templates() {
        fails("", "", "empty command");
        fails("   ", "   ", "empty command");
        fails("| a", "|", "command before it");
        fails("a |", "|", "command after it");
        fails("a | | b", "|", "command before it");
        fails("> f", "> f", "needs a command");
        fails("> f | b", "> f", "needs a command");
        fails("a | 2> f ", "2> f", "needs a command");
        fails("echo 'a", "'a", "unclosed `'`");
        fails("echo \"a", "\"a", "unclosed `\"`");
        fails("echo {a", "{a", "unclosed `{`");
        fails("echo a}", "}", "`}}`");
        fails("echo \\", "\\", "trailing `\\`");
        fails("echo {}", "{}", "empty `{}`");
        fails("echo {x:?}", "{x:?}", "format specs");
        fails("echo {a + b}", "{a + b}", "bind anything else");
        fails("echo {f(x)}", "{f(x)}", "bind anything else");
        fails("echo {0}", "{0}", "bind anything else");
        fails("echo {x.}", "{x.}", "bind anything else");
        fails("{xs...} a", "{xs...}", "program cannot be spread");
        fails("echo a{xs...}", "{xs...}", "glued to the text before it");
        fails("echo {xs...}b", "{xs...}", "glued to the text after it");
        fails("echo {xs...}'b'", "{xs...}", "glued to the text after it");
        fails("echo \"{xs...}\"", "{xs...}", "inside quotes");
    }

    #[test]
    fn splat_may_touch_operators() {
        let stages = parse("echo {xs...}|cat").unwrap();
        assert_eq!(stages[0].args, [Arg::Splat("xs".to_owned())]);
    }

    #[test]
    fn renders_the_offending_part() {
        let template = "make && make install";
        let err = parse(template).unwrap_err();
        let rendered = render(template, &err);
        let mut lines = rendered.lines().skip(1);
        assert_eq!(lines.next(), Some("    make && make install"));
        assert_eq!(lines.next(), Some("         ^^"));
        // On a multi-line template, the line with the error.
        let template = "sort\n  | uniq *";
        let err = parse(template).unwrap_err();
        assert!(render(template, &err).ends_with("\n      | uniq *\n             ^"));
    }

    #[test]
    fn rust_literals() {
        assert_eq!(
            literal_value(r#""a\"b\\c\n\x41\u{1F600}""#).as_deref(),
            Some("a\"b\\c\nA\u{1F600}")
        );
        assert_eq!(literal_value("\"a \\\n     b\"").as_deref(), Some("a b"));
        assert_eq!(
            literal_value(r###"r#"say "hi""#"###).as_deref(),
            Some(r#"say "hi""#)
        );
        assert_eq!(literal_value(r#"r"a\b""#).as_deref(), Some(r"a\b"));
        assert_eq!(literal_value(r#"b"x""#), None);
        assert_eq!(literal_value(r#"c"x""#), None);
        assert_eq!(literal_value("42"), None);
        assert_eq!(literal_value(r#""x"suffix"#), None);
    }
}
