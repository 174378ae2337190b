//! Procedural macros for [leadpipe](https://docs.rs/leadpipe). Use them through
//! `leadpipe::cmd!`; this crate is an implementation detail.
//!
//! `cmd_impl!{ $crate; [machine,] "template" }` parses the template at compile time (see
//! `template.rs`) and expands to the builder calls a user could write by hand on leadpipe's
//! public API: `machine.cmd(program).arg(..).args(..).stdout(..)`, joined with `|`. No syn or
//! quote: the input is a path, an optional expression passed through untouched and one string
//! literal, and the output is built from strings parsed into tokens.

#![deny(missing_docs, rust_2018_idioms)]

mod template;

use proc_macro::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};

use template::{Arg, Piece, Redirect, Stage, Word};

/// Implementation of `leadpipe::cmd!`; call it through that macro, which passes `$crate`
/// first so that the expansion names leadpipe correctly even where it is renamed.
#[proc_macro]
pub fn cmd_impl(input: TokenStream) -> TokenStream {
    match expand(input) {
        Ok(tokens) => tokens,
        Err((message, span)) => compile_error(&message, span),
    }
}

type Failure = (String, Span);

fn expand(input: TokenStream) -> Result<TokenStream, Failure> {
    let mut tokens: Vec<TokenTree> = input.into_iter().collect();
    let semi = tokens
        .iter()
        .position(|t| is_punct(t, ';'))
        .ok_or_else(|| {
            (
                "cmd_impl! is called through leadpipe::cmd!".to_owned(),
                Span::call_site(),
            )
        })?;
    let mut rest = tokens.split_off(semi + 1);
    tokens.pop();
    let root: TokenStream = tokens.into_iter().collect();

    if rest.last().is_some_and(|t| is_punct(t, ',')) {
        rest.pop();
    }
    let usage = "cmd! takes a template string, optionally after a machine: \
                 `cmd!(\"ls -l {dir}\")` or `cmd!(machine, \"ls -l {dir}\")`";
    let Some(last) = rest.pop() else {
        return Err((usage.to_owned(), Span::call_site()));
    };
    let literal = match unwrap_invisible(last) {
        TokenTree::Literal(lit) => lit,
        other => {
            return Err((
                format!(
                    "{usage}; the template must be a string literal, so that it can be checked at compile time"
                ),
                other.span(),
            ));
        }
    };
    let Some(text) = template::literal_value(&literal.to_string()) else {
        return Err((
            format!("{usage}; `{literal}` is not a plain string literal"),
            literal.span(),
        ));
    };
    let machine = match rest.pop() {
        None => None,
        Some(comma) if is_punct(&comma, ',') && !rest.is_empty() => {
            let span = rest[0].span();
            Some((rest.into_iter().collect::<TokenStream>(), span))
        }
        Some(other) => {
            return Err((
                format!("{usage}; expected a `,` between the machine and the template"),
                other.span(),
            ));
        }
    };

    let stages =
        template::parse(&text).map_err(|e| (template::render(&text, &e), literal.span()))?;
    Ok(Gen::new(root, literal).expansion(machine, &stages))
}

fn is_punct(token: &TokenTree, c: char) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == c)
}

/// A literal forwarded through `macro_rules!` may arrive wrapped in an invisible group.
fn unwrap_invisible(token: TokenTree) -> TokenTree {
    match token {
        TokenTree::Group(g) if g.delimiter() == Delimiter::None => {
            let mut inner = g.stream().into_iter();
            match (inner.next(), inner.next()) {
                (Some(only), None) => unwrap_invisible(only),
                _ => TokenTree::Group(g),
            }
        }
        other => other,
    }
}

/// `::core::compile_error!{"..."}` with every token at `span`, so the error points there.
fn compile_error(message: &str, span: Span) -> TokenStream {
    let mut tokens = respan("::core::compile_error!".parse().unwrap(), span);
    let mut literal = Literal::string(message);
    literal.set_span(span);
    let mut group = Group::new(Delimiter::Brace, TokenTree::Literal(literal).into());
    group.set_span(span);
    tokens.extend([TokenTree::Group(group)]);
    tokens
}

fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                TokenTree::Group(group)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// Builds the expansion. Spans: the code the macro adds is located at the template but keeps
/// the macro's own hygiene (so lints treat it as macro output, and its `let`s cannot clash
/// with the user's names); the interpolated names take the template's own span, so they
/// resolve to the user's variables and editors map them back into the string.
struct Gen {
    root: TokenStream,
    literal: Literal,
    /// For code the macro writes.
    span: Span,
    /// For the user's interpolated names.
    user: Span,
}

impl Gen {
    fn new(root: TokenStream, literal: Literal) -> Gen {
        let user = literal.span();
        Gen {
            root,
            literal,
            span: Span::mixed_site().located_at(user),
            user,
        }
    }

    fn code(&self, code: &str) -> TokenStream {
        respan(code.parse().expect("generated code lexes"), self.span)
    }

    /// `$crate::` followed by `path`.
    fn krate(&self, path: &str) -> TokenStream {
        let mut tokens = self.root.clone();
        tokens.extend(self.code(&format!("::{path}")));
        tokens
    }

    fn group(&self, delimiter: Delimiter, inner: TokenStream) -> TokenStream {
        let mut group = Group::new(delimiter, inner);
        group.set_span(self.span);
        TokenTree::Group(group).into()
    }

    fn parens(&self, inner: TokenStream) -> TokenStream {
        self.group(Delimiter::Parenthesis, inner)
    }

    fn string(&self, text: &str) -> TokenStream {
        let mut literal = Literal::string(text);
        literal.set_span(self.span);
        TokenTree::Literal(literal).into()
    }

    fn call(&self, method: &str, arg: TokenStream) -> TokenStream {
        let mut tokens = self.code(&format!(".{method}"));
        tokens.extend(self.parens(arg));
        tokens
    }

    fn local(&self, name: &str) -> TokenStream {
        TokenTree::Ident(Ident::new(name, self.span)).into()
    }

    /// `(expr)`, the user's expression with the template's span.
    fn user_expr(&self, expr: &str) -> TokenStream {
        let user = expr
            .parse::<TokenStream>()
            .expect("checked by the template parser");
        self.parens(respan(user, self.user))
    }

    /// `&(expr)`: borrowed like `format!` borrows, so interpolating never moves a value.
    fn borrowed(&self, expr: &str) -> TokenStream {
        let amp = TokenTree::Punct(Punct::new('&', Spacing::Alone));
        let mut tokens = respan(amp.into(), self.span);
        tokens.extend(self.user_expr(expr));
        tokens
    }

    fn expansion(&self, machine: Option<(TokenStream, Span)>, stages: &[Stage]) -> TokenStream {
        // Errors about the machine (no `cmd` method) point at the machine expression.
        let cmd_span = machine
            .as_ref()
            .map_or(self.span, |&(_, span)| Span::mixed_site().located_at(span));
        let mut body = TokenStream::new();
        // For rust-analyzer, as xshell does: it highlights `{name}` in a string literal passed
        // to `format_args!`, even in code that is configured out. `cfg(any())` is false.
        body.extend(self.code("#[cfg(any())] ::core::format_args!"));
        body.extend(self.parens(TokenTree::Literal(self.literal.clone()).into()));
        body.extend(self.code(";"));

        // Evaluate the machine once and borrow it, so `cmd!(remote, ..)` leaves `remote` usable.
        body.extend(self.code("let"));
        body.extend(self.local("__leadpipe_machine"));
        body.extend(self.code("= &"));
        match machine {
            Some((expr, span)) => {
                let mut group = Group::new(Delimiter::Parenthesis, expr);
                group.set_span(span);
                body.extend([TokenTree::Group(group)]);
            }
            None => {
                body.extend(self.krate("local"));
                body.extend(self.parens(TokenStream::new()));
            }
        }
        body.extend(self.code(";"));

        for (n, stage) in stages.iter().enumerate() {
            if n > 0 {
                body.extend(self.code("|"));
            }
            body.extend(self.stage(stage, cmd_span));
        }
        self.group(Delimiter::Brace, body)
    }

    fn stage(&self, stage: &Stage, cmd_span: Span) -> TokenStream {
        let mut tokens = self.local("__leadpipe_machine");
        tokens.extend(respan(".cmd".parse().unwrap(), cmd_span));
        tokens.extend(self.parens(self.os_str(&stage.program)));
        for arg in &stage.args {
            tokens.extend(match arg {
                Arg::Word(word) => self.call("arg", self.os_str(word)),
                // A method call's result is a temporary: hand it over, so that
                // `{files.iter()...}` works.
                Arg::Splat(expr) if expr.ends_with(')') => self.call("args", self.user_expr(expr)),
                // A place is borrowed, like `{x}`. `(&xs).into_iter()` rather than
                // `IntoIterator::into_iter(&xs)`: method lookup also accepts `xs: &[T]` (a
                // common parameter type), which `&&[T]` would not be.
                Arg::Splat(expr) => {
                    // The trait is imported in a block of its own, so that this also works
                    // under `#![no_implicit_prelude]`.
                    let mut iter = self.code("use ::core::iter::IntoIterator as _;");
                    iter.extend(self.parens(self.borrowed(expr)));
                    iter.extend(self.code(".into_iter()"));
                    self.call("args", self.group(Delimiter::Brace, iter))
                }
            });
        }
        for redirect in &stage.redirects {
            tokens.extend(match redirect {
                Redirect::StdinFile(file) => {
                    self.call("stdin", self.wrap("Input::File", self.path(file)))
                }
                Redirect::HereString(word) => self.call("stdin", self.here_string(word)),
                Redirect::Stdout { target, append } => {
                    self.call("stdout", self.output(target, *append))
                }
                Redirect::Stderr { target, append } => {
                    self.call("stderr", self.output(target, *append))
                }
                Redirect::StderrToStdout => self.code(".stderr_to_stdout()"),
            });
        }
        tokens
    }

    /// `$crate::variant(inner)`.
    fn wrap(&self, variant: &str, inner: TokenStream) -> TokenStream {
        let mut tokens = self.krate(variant);
        tokens.extend(self.parens(inner));
        tokens
    }

    fn output(&self, target: &Word, append: bool) -> TokenStream {
        // `/dev/null` is the one file name with a meaning of its own: no file to open, on any
        // machine.
        if target.as_text().as_deref() == Some("/dev/null") {
            return self.krate("Redirect::Null");
        }
        let variant = if append {
            "Redirect::Append"
        } else {
            "Redirect::File"
        };
        self.wrap(variant, self.path(target))
    }

    /// A value that is `AsRef<OsStr>`: a string literal, a borrowed interpolation, or an
    /// `OsString` glued from pieces (pushing `OsStr`s keeps non-UTF-8 bytes intact).
    fn os_str(&self, word: &Word) -> TokenStream {
        match word.pieces.as_slice() {
            [] => self.string(""),
            [Piece::Text(text)] => self.string(text),
            [Piece::Expr(expr)] => self.borrowed(expr),
            pieces => {
                let mut block = self.code("let mut");
                block.extend(self.local("__leadpipe_arg"));
                block.extend(self.code("= ::std::ffi::OsString::new();"));
                for piece in pieces {
                    block.extend(self.local("__leadpipe_arg"));
                    block.extend(self.call(
                        "push",
                        match piece {
                            Piece::Text(text) => self.string(text),
                            Piece::Expr(expr) => self.borrowed(expr),
                        },
                    ));
                    block.extend(self.code(";"));
                }
                block.extend(self.local("__leadpipe_arg"));
                self.group(Delimiter::Brace, block)
            }
        }
    }

    fn path(&self, word: &Word) -> TokenStream {
        let mut tokens = self.code("<::std::path::PathBuf as ::core::convert::From<_>>::from");
        tokens.extend(self.parens(self.os_str(word)));
        tokens
    }

    /// `<<< word`: the word's bytes (`AsRef<[u8]>` for interpolations) and a newline, as bash
    /// feeds a here-string.
    fn here_string(&self, word: &Word) -> TokenStream {
        let mut block = self.code("let mut");
        block.extend(self.local("__leadpipe_bytes"));
        block.extend(self.code("= ::std::vec::Vec::<u8>::new();"));
        let mut extend = |bytes: TokenStream| {
            block.extend(self.local("__leadpipe_bytes"));
            block.extend(self.call("extend_from_slice", bytes));
            block.extend(self.code(";"));
        };
        for piece in &word.pieces {
            match piece {
                Piece::Text(text) => {
                    let mut literal = Literal::byte_string(text.as_bytes());
                    literal.set_span(self.span);
                    extend(TokenTree::Literal(literal).into());
                }
                Piece::Expr(expr) => {
                    let mut bytes = self.code("::core::convert::AsRef::<[u8]>::as_ref");
                    bytes.extend(self.parens(self.borrowed(expr)));
                    extend(bytes);
                }
            }
        }
        extend(self.code("b\"\\n\""));
        block.extend(self.local("__leadpipe_bytes"));
        let mut tokens = self.code("<");
        tokens.extend(self.krate("Input"));
        tokens.extend(self.code("as ::core::convert::From<::std::vec::Vec<u8>>>::from"));
        tokens.extend(self.parens(self.group(Delimiter::Brace, block)));
        tokens
    }
}
