//! `cmd!` at run time: the program receives exactly the arguments the template and the
//! interpolated values say, pipes and redirects go where a shell would send them, and a
//! property test throws random hostile argument vectors at `{args...}`.
//!
//! Written without `use leadpipe::...`: the macro must not need anything in scope.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_leadpipe-testbin");

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_owned()
}

/// The arguments a command was built with, program first, without running it.
fn argv(command: &leadpipe::Command) -> Vec<OsString> {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(os)
        .collect()
}

/// Splits `echo-argv` output (each argument followed by a NUL) back into arguments.
fn split_nul(bytes: &[u8]) -> Vec<OsString> {
    if bytes.is_empty() {
        return Vec::new();
    }
    assert_eq!(bytes.last(), Some(&0), "echo-argv output ends with NUL");
    bytes[..bytes.len() - 1]
        .split(|&b| b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()))
        .collect()
}

/// Runs `echo-argv` with the command's arguments and returns what it received.
async fn echoed(command: leadpipe::Command) -> Result<Vec<OsString>, leadpipe::Error> {
    Ok(split_nul(&command.read_bytes().await?))
}

#[tokio::test]
async fn words_quotes_and_glue() -> TestResult {
    let x = "X";
    let got = echoed(leadpipe::cmd!(
        r#"{BIN} echo-argv a  'b c'   "d {x}" '' "" e'f'"g"h {{}} \* '{x}' "\"\\\$" a\ b"#
    ))
    .await?;
    let want = [
        "a", "b c", "d X", "", "", "efgh", "{}", "*", "{x}", "\"\\$", "a b",
    ];
    assert_eq!(got, want.map(os));
    Ok(())
}

#[tokio::test]
async fn an_interpolated_value_is_one_argument_whatever_it_holds() -> TestResult {
    let hostile = [
        "",
        " ",
        "two words",
        "$HOME",
        "$(rm -rf /)",
        "`id`",
        "*",
        "~",
        "a;b && c || d | e & f",
        "'single' \"double\"",
        "line\nbreak\ttab",
        "\\",
        "{x} {{",
        "--flag=value",
        "-n",
        "ünïcödé ✓",
    ];
    for value in hostile {
        let got = echoed(leadpipe::cmd!("{BIN} echo-argv {value}")).await?;
        assert_eq!(got, [os(value)], "{value:?}");
        let got = echoed(leadpipe::cmd!(
            "{BIN} echo-argv \"<{value}>\" pre{value}post"
        ))
        .await?;
        assert_eq!(
            got,
            [os(format!("<{value}>")), os(format!("pre{value}post"))]
        );
    }
    Ok(())
}

#[tokio::test]
async fn non_utf8_survives_interpolation_and_glue() -> TestResult {
    let raw = OsString::from_vec(vec![0xff, b' ', 0xfe, b'*']);
    let path = PathBuf::from(OsString::from_vec(vec![b'/', 0x80, b'x']));
    let list = vec![raw.clone(), os("")];
    let got = echoed(leadpipe::cmd!(
        "{BIN} echo-argv {raw} --in={path}/sub {list...}"
    ))
    .await?;
    let mut glued = os("--in=");
    glued.push(&path);
    glued.push("/sub");
    assert_eq!(got, [raw.clone(), glued, raw, os("")]);
    Ok(())
}

struct Config {
    host: String,
    port: String,
    key: Option<PathBuf>,
    pair: (&'static str, &'static str),
}

impl Config {
    fn flags(&self) -> Vec<String> {
        vec![format!("--host={}", self.host), "-v".to_owned()]
    }
}

#[test]
fn fields_methods_and_spreads_build_the_expected_arguments() {
    let cfg = Config {
        host: "db.internal".to_owned(),
        port: "5432".to_owned(),
        key: None,
        pair: ("left", "right"),
    };
    let command = leadpipe::cmd!(
        "psql -h {cfg.host} -p {cfg.port} {cfg.key...} {cfg.pair.1} {cfg.flags()...} {cfg.host.len().to_string()}"
    );
    let want = [
        "psql",
        "-h",
        "db.internal",
        "-p",
        "5432",
        "right",
        "--host=db.internal",
        "-v",
        "11",
    ];
    assert_eq!(argv(&command), want.map(os));

    // Spreads of every common collection, and of a slice parameter; empty ones vanish.
    fn remove(files: &[PathBuf]) -> leadpipe::Command {
        leadpipe::cmd!("rm -- {files...}")
    }
    assert_eq!(
        argv(&remove(&[PathBuf::from("a b"), PathBuf::from("c")])),
        ["rm", "--", "a b", "c"].map(os)
    );
    let array = ["-e", "error"];
    let some = Some("-q");
    let none: Option<&str> = None;
    let empty: Vec<String> = Vec::new();
    let set = std::collections::BTreeSet::from(["x", "y"]);
    let words = "a b  c";
    let command = leadpipe::cmd!(
        "grep {array...} {some...} {none...} {empty...} {set...} {words.split_whitespace()...}"
    );
    assert_eq!(
        argv(&command),
        ["grep", "-e", "error", "-q", "x", "y", "a", "b", "c"].map(os)
    );

    // Interpolating borrows: every value above is still ours.
    drop((cfg, array, some, none, empty, set));
}

#[test]
fn redirect_targets_and_here_strings_build_the_expected_values() {
    // Only argv is observable without running; the redirects are checked at run time below.
    let dir = Path::new("/tmp/some dir");
    let command = leadpipe::cmd!("sort -u < {dir}/in.txt > {dir}/out.txt 2>> log");
    assert_eq!(argv(&command), ["sort", "-u"].map(os));
}

#[tokio::test]
async fn a_template_with_pipes_is_a_pipeline() -> TestResult {
    let pipeline: leadpipe::Pipeline =
        leadpipe::cmd!("{BIN} echo-argv a 'b c' | {BIN} cat | {BIN} cat");
    assert_eq!(pipeline.stages().len(), 3);
    assert_eq!(pipeline.read_bytes().await?, b"a\0b c\0");
    Ok(())
}

#[tokio::test]
async fn redirects_go_where_a_shell_sends_them() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let out = dir.join("out");

    leadpipe::cmd!("{BIN} echo-argv one > {out}").run().await?;
    assert_eq!(std::fs::read(&out)?, b"one\0");
    leadpipe::cmd!("{BIN} echo-argv two >> {out}").run().await?;
    leadpipe::cmd!("{BIN} echo-argv three 1>>{out}")
        .run()
        .await?;
    assert_eq!(std::fs::read(&out)?, b"one\0two\0three\0");
    leadpipe::cmd!("{BIN} echo-argv truncated >{dir}/out")
        .run()
        .await?;
    assert_eq!(std::fs::read(&out)?, b"truncated\0");

    // Redirects belong to their stage: `a > f | b` leaves b nothing to read.
    let piped = dir.join("piped");
    let rest = leadpipe::cmd!("{BIN} echo-argv x > {piped} | {BIN} cat")
        .read_bytes()
        .await?;
    assert_eq!(
        (std::fs::read(&piped)?, rest),
        (b"x\0".to_vec(), Vec::new())
    );

    // stderr: to a file, appended, into stdout, and both into one file.
    let err = dir.join("err.log");
    leadpipe::cmd!("{BIN} exit 0 first 2> {err}").run().await?;
    leadpipe::cmd!("{BIN} exit 0 second 2>> {err}")
        .run()
        .await?;
    assert_eq!(std::fs::read_to_string(&err)?, "first\nsecond\n");
    let merged = leadpipe::cmd!("{BIN} exit 0 'to stdout' 2>&1")
        .read()
        .await?;
    assert_eq!(merged, "to stdout");
    let merged = leadpipe::cmd!("{BIN} exit 0 piped 2>&1 | {BIN} cat")
        .read()
        .await?;
    assert_eq!(merged, "piped");
    let both = dir.join("both.log");
    leadpipe::cmd!("{BIN} exit 0 err &> {both}").run().await?;
    leadpipe::cmd!("{BIN} echo-argv out &>> {both}")
        .run()
        .await?;
    assert_eq!(std::fs::read(&both)?, b"err\nout\0");
    let both = dir.join("both2.log");
    leadpipe::cmd!("{BIN} exit 0 err > {both} 2>&1")
        .run()
        .await?;
    assert_eq!(std::fs::read(&both)?, b"err\n");

    // /dev/null swallows, on stdout and stderr alike.
    let nothing = leadpipe::cmd!("{BIN} echo-argv x > /dev/null")
        .read_bytes()
        .await?;
    assert!(nothing.is_empty());
    let quiet = leadpipe::cmd!("{BIN} exit 0 noise 2> /dev/null")
        .output()
        .await?;
    assert!(quiet.stderr.is_empty());

    // stdin from a file, written before or after the program.
    let input = dir.join("in put");
    std::fs::write(&input, b"from a file")?;
    let read = leadpipe::cmd!("{BIN} cat < {input}").read().await?;
    assert_eq!(read, "from a file");
    let read = leadpipe::cmd!("<{input} {BIN} cat | {BIN} cat")
        .read()
        .await?;
    assert_eq!(read, "from a file");
    Ok(())
}

#[tokio::test]
async fn here_strings_feed_the_word_and_a_newline() -> TestResult {
    let literal = leadpipe::cmd!("{BIN} cat <<< 'hello world'")
        .read_bytes()
        .await?;
    assert_eq!(literal, b"hello world\n");
    let text = String::from("line one\nline two");
    let bytes: Vec<u8> = vec![0xff, 0, b'x'];
    let read = leadpipe::cmd!("{BIN} cat <<< {text}").read_bytes().await?;
    assert_eq!(read, b"line one\nline two\n");
    let read = leadpipe::cmd!("{BIN} cat <<<{bytes}").read_bytes().await?;
    assert_eq!(read, b"\xff\0x\n");
    let read = leadpipe::cmd!("{BIN} cat <<< \"[{text}]\" | {BIN} cat")
        .read_bytes()
        .await?;
    assert_eq!(read, b"[line one\nline two]\n");
    let empty = leadpipe::cmd!("{BIN} cat <<< ''").read_bytes().await?;
    assert_eq!(empty, b"\n");
    drop((text, bytes));
    Ok(())
}

#[tokio::test]
async fn the_machine_is_evaluated_once_and_borrowed() -> TestResult {
    let sh = leadpipe::local();
    let got = echoed(leadpipe::cmd!(sh, "{BIN} echo-argv on-sh")).await?;
    assert_eq!(got, [os("on-sh")]);
    let both = leadpipe::cmd!(sh, "{BIN} echo-argv piped | {BIN} cat")
        .read_bytes()
        .await?;
    assert_eq!(both, b"piped\0");
    drop(sh); // not moved by the macro

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().canonicalize()?;
    let mut made = 0;
    let pipeline = leadpipe::cmd!(
        {
            made += 1;
            leadpipe::local().with_cwd(&dir)
        },
        "{BIN} pwd | {BIN} cat"
    );
    assert_eq!(made, 1);
    assert_eq!(Path::new(&pipeline.read().await?), dir);
    Ok(())
}

/// A small deterministic generator (xorshift64*), so that the property test needs no
/// dependency and a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An argument: often empty or short, made of characters a shell treats specially,
    /// whitespace, and arbitrary non-NUL bytes (so often not UTF-8).
    fn arg(&mut self) -> OsString {
        const SPECIAL: &[u8] = b" \t\n'\"\\$*?[]{}|&;<>()~#`!=-_.,:%^@+/aZ09";
        let len = match self.below(8) {
            0 => 0,
            1 => self.below(200) as usize,
            _ => self.below(12) as usize,
        };
        let bytes = (0..len)
            .map(|_| match self.below(4) {
                0 => 1 + self.below(255) as u8,
                _ => SPECIAL[self.below(SPECIAL.len() as u64) as usize],
            })
            .collect();
        OsString::from_vec(bytes)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// For random argument vectors, `{args...}` delivers exactly that vector to the program,
/// and `{arg}` / `x{arg}y` exactly one argument. Replay a failure with
/// `LEADPIPE_PROPTEST_SEED=<seed>`; run longer with `LEADPIPE_PROPTEST_CASES=<n>`.
#[tokio::test]
async fn property_spread_arguments_arrive_byte_for_byte() -> TestResult {
    let seed = env_number("LEADPIPE_PROPTEST_SEED", 0x1ead_91be_5eed);
    let cases = env_number("LEADPIPE_PROPTEST_CASES", 200);
    let mut rng = Rng(seed | 1);
    for case in 0..cases {
        let count = if case == 0 { 0 } else { rng.below(9) as usize };
        let args: Vec<OsString> = (0..count).map(|_| rng.arg()).collect();
        let context = format!("seed {seed:#x}, case {case}: {args:?}");

        let got = echoed(leadpipe::cmd!("{BIN} echo-argv {args...}")).await?;
        assert_eq!(got, args, "{context}");

        if let Some(first) = args.first() {
            let got = echoed(leadpipe::cmd!("{BIN} echo-argv {first} x{first}y")).await?;
            let mut glued = os("x");
            glued.push(first);
            glued.push("y");
            assert_eq!(got, [first.clone(), glued], "{context}");
        }
    }
    Ok(())
}

#[test]
fn argv_splitting_helper_round_trips() {
    assert!(split_nul(b"").is_empty());
    assert_eq!(split_nul(b"\0"), [os("")]);
    assert_eq!(split_nul(b"a\0\0b c\0"), [os("a"), os(""), os("b c")]);
    assert_eq!(OsStr::from_bytes(b"x"), "x");
}
