// What may appear between braces, and where a spread may stand.
use leadpipe::cmd;

fn main() {
    let _ = cmd!("echo {}");
    let _ = cmd!("echo {x:?}");
    let _ = cmd!("echo {a + b}");
    let _ = cmd!("echo {name");
    let _ = cmd!("echo name}");
    let _ = cmd!("{argv...}");
    let _ = cmd!("echo -I{dirs...}");
    let _ = cmd!("echo \"{words...}\"");
    let _ = cmd!("sort > {outs...}");
}
