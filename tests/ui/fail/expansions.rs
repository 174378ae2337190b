// Expansions a shell would perform on the template: cmd! performs none of them.
use leadpipe::cmd;

fn main() {
    let _ = cmd!("echo $(date)");
    let _ = cmd!("echo `date`");
    let _ = cmd!("echo $HOME");
    let _ = cmd!("echo \"${HOME}/x\"");
    let _ = cmd!("echo price: $");
    let _ = cmd!("rm *.o");
    let _ = cmd!("ls file?.txt");
    let _ = cmd!("ls [ab].txt");
    let _ = cmd!("ls ~/src");
    let _ = cmd!("make PREFIX=~/.local install");
    let _ = cmd!("ls # list");
    let _ = cmd!("RUST_LOG=debug cargo run");
}
