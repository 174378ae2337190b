//! The `cmd!` macro: commands and pipelines spelled as in a shell, checked at compile time.
//!
//! The parsing lives in the `leadpipe-macros` crate; this module holds the public wrapper,
//! which hands the proc macro `$crate` so the expansion names this crate by the path the
//! caller sees, even when it is renamed in Cargo.toml.

/// Builds a [`Command`](crate::Command) or a [`Pipeline`](crate::Pipeline) from a template
/// written as in a shell, parsed and checked at compile time.
///
/// ```no_run
/// use leadpipe::cmd;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = "/var/log";
/// let pats = ["-e", "error"];
/// let n: usize = cmd!("ls -1 {dir} | grep {pats...} | wc -l").read().await?.parse()?;
///
/// let rev = "HEAD~3";
/// cmd!("git log --oneline {rev}.. > changes.txt 2>&1").run().await?;
/// # Ok(()) }
/// ```
///
/// `cmd!` builds a value and runs nothing; run it with the usual methods (`run`, `read`,
/// `output`, `status`, `spawn`, ...). A template without `|` gives a [`Command`](crate::Command),
/// one with `|` a [`Pipeline`](crate::Pipeline). No shell is involved at any point: the
/// template is split into a program and its arguments when your crate compiles, and the
/// expansion is nothing more than the builder calls you could write by hand:
///
/// ```no_run
/// # use leadpipe::cmd;
/// # let (dir, pats) = ("/var/log", ["-e", "error"]);
/// // cmd!("ls -1 {dir} | grep {pats...} > hits.txt") is
/// let local = leadpipe::local();
/// let pipeline = local.cmd("ls").arg("-1").arg(&dir)
///     | local.cmd("grep").args(&pats).stdout(leadpipe::Redirect::File("hits.txt".into()));
/// ```
///
/// # Machines
///
/// `cmd!("...")` runs on the local machine ([`local()`](crate::local)). `cmd!(machine, "...")`
/// binds the command to any machine: a [`LocalMachine`](crate::LocalMachine), an SSH machine,
/// or a view of one such as `machine.with_cwd(dir)`. The machine expression is evaluated once
/// and borrowed, so `cmd!(remote, "...")` does not move `remote`:
///
/// ```no_run
/// # use leadpipe::cmd;
/// # async fn demo(remote: leadpipe::LocalMachine) -> Result<(), Box<dyn std::error::Error>> {
/// let dir = "/var/log/nginx";
/// cmd!(remote, "tar czf /tmp/logs.tgz -C {dir} .").run().await?;
/// let size = cmd!(remote, "stat -c %s /tmp/logs.tgz").read().await?;
/// let status = cmd!(remote.with_cwd("/srv/app"), "git status --short").read().await?;
/// # Ok(()) }
/// ```
///
/// # Words and quoting
///
/// | template | arguments |
/// | --- | --- |
/// | `a  b` | words split on spaces, tabs and newlines (as bash, not on other Unicode spaces): `a`, `b` |
/// | `'a b'` | single quotes: one argument, every character literal (`{`, `$`, `\` included) |
/// | `"a b"` | double quotes: one argument; `{x}` is interpolated inside, `\"`, `\\`, `` \` `` and `\$` are escapes, any other `\` stays |
/// | `a\ b` | outside quotes, `\` makes the next character literal: `a b` |
/// | `''` or `""` | an empty argument, never dropped |
/// | `--x='a b'"c"d` | adjacent pieces glue into one argument: `--x=a bcd` |
/// | `{{` and `}}` | literal braces, as in `format!` (outside single quotes) |
///
/// The template may be any string literal; a raw string saves escaping double quotes:
/// `cmd!(r#"git commit -m "fix the build""#)`.
///
/// # Interpolation
///
/// `{x}` passes the value of `x` as **exactly one argument**, whatever it contains: spaces,
/// quotes, `$`, `*`, newlines or bytes that are not UTF-8. It is never split, never globbed
/// and never seen by a shell. It may be glued to text (`--out={dir}/x.txt` is one argument,
/// built as an [`OsString`](std::ffi::OsString), so non-UTF-8 paths survive).
///
/// `{xs...}` spreads a collection into one argument per item; nothing at all if it is empty.
/// Since `Option` is a collection of zero or one item, `{opt...}` is an optional argument.
/// A spread stands alone: it cannot be glued to text or sit inside quotes.
///
/// ```no_run
/// # use leadpipe::cmd;
/// # use std::path::PathBuf;
/// # async fn demo(files: &[PathBuf]) -> Result<(), Box<dyn std::error::Error>> {
/// struct Config { host: String, port: String, key: Option<String> }
/// let cfg = Config { host: "db".into(), port: "5432".into(), key: None };
/// let n = 20.to_string();
/// cmd!("psql -h {cfg.host} -p {cfg.port} {cfg.key...} -c 'select 1'").run().await?;
/// cmd!("tail -n {n} {files...}").run().await?;
/// # Ok(()) }
/// ```
///
/// What can go between the braces: a variable, then any number of fields, tuple indices and
/// method calls without arguments: `{name}`, `{cfg.port}`, `{pair.0}`, `{tmp.path()}`. Bind
/// anything else to a variable first. Format specs (`{x:?}`) are not supported.
///
/// Types, checked by the compiler as if you had written the builder calls:
///
/// - `{x}` needs `x: AsRef<OsStr>`: `&str`, `String`, `Path`, `PathBuf`, `OsStr`, `OsString`
///   and references to them. Numbers are not: convert them first (`let n = n.to_string();`
///   or `{n.to_string()}`).
/// - `{xs...}` needs `&xs` (or `xs`, when it is itself a reference) to iterate over items that
///   are `AsRef<OsStr>`: a `Vec`, slice, array, `Option`, set, or a reference to one.
/// - Interpolations are borrowed, as `format!` borrows: nothing is moved into the command.
///   The one exception is a spread ending in a method call, whose result is consumed, so an
///   iterator can be spread that way: `{paths.iter()...}`, `{env.keys()...}`. An iterator held
///   in a variable cannot be borrowed into arguments: spread `{it.by_ref()...}`, collect it,
///   or call [`.args(it)`](crate::Command::args).
///
/// # Pipes and redirects
///
/// | template | meaning | builder call |
/// | --- | --- | --- |
/// | `a \| b` | `a`'s stdout into `b`'s stdin | `a \| b` |
/// | `> f` | stdout to file `f`, truncated | `.stdout(Redirect::File(f))` |
/// | `>> f` | stdout appended to `f` | `.stdout(Redirect::Append(f))` |
/// | `2> f`, `2>> f` | the same for stderr | `.stderr(..)` |
/// | `2>&1` | stderr goes wherever stdout goes | `.stderr_to_stdout()` |
/// | `&> f`, `&>> f` | stdout and stderr to `f` | `.stdout(..).stderr_to_stdout()` |
/// | `< f` | stdin from file `f` | `.stdin(Input::File(f))` |
/// | `<<< word` | stdin is `word` and a newline | `.stdin(Input::from(bytes))` |
///
/// `1>` and `1>>` are accepted as `>` and `>>`. Redirects apply to the command they are written
/// in, as in a shell: in `a > f | b`, `a`'s stdout goes to `f` (and `b` reads nothing). They
/// may come anywhere in that command, before the program too (`< in.txt sort`). File names may
/// be interpolated or glued: `> {dir}/out.log`. `> /dev/null` (and `2>`, `&>` to it) becomes
/// [`Redirect::Null`](crate::Redirect::Null), which means the same on every machine.
///
/// A stream may be redirected once per command. `2>&1` means "stderr follows stdout to its
/// final destination", so write it after the stdout redirect: `> log 2>&1`, or `&> log`. The
/// shell's `2>&1 > log`, which sends stderr to the *old* stdout, is refused rather than given
/// another meaning. Only the first command of a pipeline can take stdin from `<` or `<<<`.
///
/// **Here-strings** follow bash: `<<<` feeds the word followed by one newline, so
/// `cmd!("wc -l <<< {text}")` counts the lines of `text` as bash would. An interpolated
/// here-string needs `AsRef<[u8]>` (`&str`, `String`, `Vec<u8>`, `&[u8]`). To feed bytes
/// exactly, with no newline added, use the `<<` operator on the command
/// (`cmd!("wc -c") << bytes`) or [`.stdin(..)`](crate::Command::stdin).
///
/// ```no_run
/// # use leadpipe::cmd;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let log = std::path::Path::new("/tmp/build.log");
/// let script = "print(6 * 7)";
/// cmd!("make -j4 all &>> {log}").run().await?;
/// let answer = cmd!("python3 <<< {script}").read().await?;
/// cmd!("sort -u < words.txt | tee sorted.txt > /dev/null").run().await?;
/// # Ok(()) }
/// ```
///
/// # What a shell would do that `cmd!` does not
///
/// Anything else a shell gives a meaning to is a compile error that names the construct and
/// says what to write instead. The macro builds typed values; it never hides a shell.
///
/// | construct | instead |
/// | --- | --- |
/// | `a; b`, `a && b`, `a \|\| b` | one `cmd!` after another in Rust; `?` stops at the first failure |
/// | `a &` | `.spawn()`, stopped when its `Child` drops; `.spawn_detached()` for what must outlive the script (its own session, stdio on `/dev/null` or files) |
/// | `! a` | `!cmd!("a").success().await?` |
/// | `$(..)`, `` `..` `` | run the inner command first, then interpolate its output |
/// | `$VAR`, `${VAR}` | `std::env::var`, then `{value}`; `'$'` or `\$` for a dollar sign |
/// | `*`, `?`, `[` unquoted | list the files in Rust and spread them with `{files...}`; quote them to pass them as text |
/// | `~` | build the path in Rust; `'~'` for the character |
/// | `NAME=value prog` | `.env("NAME", value)` |
/// | `( .. )`, `<( .. )`, `<< EOF`, `# comment`, `>&2`, `3>` | not supported |
///
/// ```compile_fail
/// # use leadpipe::cmd;
/// // error: `&&` is not supported: cmd! builds one command or pipeline, not a script [...]
/// let build = cmd!("make && make install");
/// ```
///
/// ```compile_fail
/// # use leadpipe::cmd;
/// // error: unquoted `*` is a glob pattern in a shell; cmd! does not expand globs [...]
/// let clean = cmd!("rm *.o");
/// ```
///
/// Errors point at the template and show the offending part:
///
/// ```text
/// error: `&&` is not supported: cmd! builds one command or pipeline, not a script: [...]
///            make && make install
///                 ^^
///  --> src/main.rs:4:22
///   |
/// 4 |     let build = cmd!("make && make install");
///   |                      ^^^^^^^^^^^^^^^^^^^^^^
/// ```
///
/// # Editors
///
/// The interpolated names are ordinary expressions in the expansion, carrying the template's
/// span: the compiler and rust-analyzer see them as uses of your variables (no "unused
/// variable" warnings, type errors point at the template), and the template is also passed to
/// a configured-out `format_args!` so that rust-analyzer highlights the `{name}` parts.
#[macro_export]
macro_rules! cmd {
    ($($template:tt)*) => {
        $crate::__private::cmd_impl! { $crate; $($template)* }
    };
}
