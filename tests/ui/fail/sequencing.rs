// Running several commands is Rust's job, not the template's.
use leadpipe::cmd;

fn main() {
    let _ = cmd!("make; make install");
    let _ = cmd!("make && make install");
    let _ = cmd!("make || echo failed");
    let _ = cmd!("sleep 10 &");
    let _ = cmd!("make |& tee log");
    let _ = cmd!("(cd src && make)");
    let _ = cmd!("! grep -q error build.log");
}
