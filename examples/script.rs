//! A plain `fn main` script with `leadpipe::blocking`: `.wait()` where async code would
//! write `.await`. Run it with `cargo run --example script`.

use leadpipe::{blocking::Wait, prelude::*};

fn main() -> Result<()> {
    let sh = local();
    let kernel = sh.cmd("uname").arg("-sr").read().wait()?;
    println!("kernel: {kernel}");
    let count = (sh.cmd("ls").arg("/") | sh.cmd("wc").arg("-l"))
        .read()
        .wait()?;
    println!("entries in /: {count}");
    if !sh.cmd("sh").args(["-c", "exit 1"]).success().wait()? {
        println!("`sh -c 'exit 1'` failed, as it should");
    }
    // Errors say what ran and what it printed; returned from main they print the same
    // text, since Debug is Display.
    if let Err(error) = sh
        .cmd("sh")
        .args(["-c", "echo about to fail >&2; exit 2"])
        .read()
        .wait()
    {
        println!("{error}");
    }
    Ok(())
}
