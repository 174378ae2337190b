// The macro's input itself: one string literal, optionally after a machine.
use leadpipe::cmd;

fn main() {
    let template = "ls";
    let machine = ();
    let _ = cmd!(template);
    let _ = cmd!(b"ls");
    let _ = cmd!(machine "ls");
    let _ = cmd!();
    let _ = cmd!("");
    let _ = cmd!("ls |");
    let _ = cmd!("echo 'unclosed");
}
