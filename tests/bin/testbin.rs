//! A program with exact behaviour for leadpipe's tests: `leadpipe-testbin COMMAND ARGS...`.
//!
//! - `echo-argv ARGS...`: writes each argument's raw bytes followed by a NUL to stdout.
//! - `write OUT ERR`: writes OUT bytes to stdout and ERR bytes to stderr, alternating in
//!   64 KiB chunks; stdout byte i is `i % 251`, stderr byte i is `b'a' + i % 26`.
//! - `exit CODE [MESSAGE]`: writes MESSAGE and a newline to stderr, exits with CODE.
//! - `signal NUMBER`: kills itself with that signal.
//! - `cat`: copies stdin to stdout.
//! - `sleep SECONDS`: sleeps.
//! - `pgid`: prints its pid and process group id.
//! - `env NAME`: prints the variable's value, or `<unset>`.
//! - `pwd`: prints its working directory.

use std::{
    env,
    io::{self, Read, Write},
    os::unix::ffi::OsStrExt,
    process::exit,
    time::Duration,
};

unsafe extern "C" {
    fn raise(signal: i32) -> i32;
    fn signal(signal: i32, handler: usize) -> usize;
    fn getpgrp() -> i32;
}

fn number(arg: Option<std::ffi::OsString>) -> u64 {
    arg.and_then(|a| a.to_str()?.parse().ok())
        .unwrap_or_else(|| fail("expected a number"))
}

fn fail(message: &str) -> ! {
    eprintln!("leadpipe-testbin: {message}");
    exit(100)
}

fn main() {
    let mut args = env::args_os().skip(1);
    let command = args.next().unwrap_or_default();
    let mut stdout = io::stdout().lock();
    match command.to_str().unwrap_or("") {
        "echo-argv" => {
            for arg in args {
                stdout.write_all(arg.as_bytes()).unwrap();
                stdout.write_all(b"\0").unwrap();
            }
        }
        "write" => {
            let (out, err) = (number(args.next()), number(args.next()));
            let (mut done_out, mut done_err) = (0u64, 0u64);
            let mut stderr = io::stderr().lock();
            while done_out < out || done_err < err {
                let n = (out - done_out).min(65536);
                let chunk: Vec<u8> = (done_out..done_out + n).map(|i| (i % 251) as u8).collect();
                stdout.write_all(&chunk).unwrap();
                done_out += n;
                let n = (err - done_err).min(65536);
                let chunk: Vec<u8> = (done_err..done_err + n)
                    .map(|i| b'a' + (i % 26) as u8)
                    .collect();
                stderr.write_all(&chunk).unwrap();
                done_err += n;
            }
        }
        "exit" => {
            let code = number(args.next());
            if let Some(message) = args.next() {
                eprintln!("{}", message.to_string_lossy());
            }
            exit(code as i32)
        }
        "signal" => {
            let number = number(args.next());
            // SAFETY: restoring the default action (Rust's runtime ignores SIGPIPE) and
            // raising the signal on ourselves.
            unsafe {
                signal(number as i32, 0);
                raise(number as i32)
            };
            std::thread::sleep(Duration::from_secs(5));
            fail("the signal did not kill me")
        }
        "cat" => {
            let mut buffer = vec![0; 65536];
            let mut stdin = io::stdin().lock();
            loop {
                match stdin.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => stdout.write_all(&buffer[..n]).unwrap(),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => fail(&e.to_string()),
                }
            }
        }
        "sleep" => {
            let seconds: f64 = args
                .next()
                .and_then(|a| a.to_str()?.parse().ok())
                .unwrap_or_else(|| fail("expected seconds"));
            std::thread::sleep(Duration::from_secs_f64(seconds));
        }
        // SAFETY: getpgrp cannot fail.
        "pgid" => writeln!(stdout, "{} {}", std::process::id(), unsafe { getpgrp() }).unwrap(),
        "env" => {
            let name = args.next().unwrap_or_default();
            match env::var_os(&name) {
                Some(value) => stdout.write_all(value.as_bytes()).unwrap(),
                None => stdout.write_all(b"<unset>").unwrap(),
            }
        }
        "pwd" => stdout
            .write_all(env::current_dir().unwrap().as_os_str().as_bytes())
            .unwrap(),
        other => fail(&format!("unknown command {other:?}")),
    }
}
