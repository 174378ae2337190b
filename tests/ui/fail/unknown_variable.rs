// A name the template uses but the code does not define is reported on the template.
fn main() {
    let _ = leadpipe::cmd!("git log -n {count}");
}
