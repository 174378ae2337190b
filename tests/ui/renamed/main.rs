//! Built by tests/macro_ui.rs as part of a crate that depends on leadpipe under the name
//! `shell`, so no `leadpipe` exists here: the expansion must reach the library through
//! `$crate`. No prelude either, so it must not lean on traits being in scope.
#![no_implicit_prelude]
#![deny(warnings)]

fn main() {
    let dir = "/tmp";
    let files = ::std::vec!["a", "b"];
    let text = ::std::borrow::ToOwned::to_owned("x");
    let _command: ::shell::Command =
        ::shell::cmd!("ls -l {dir} --x={dir}/y {files...} < {dir}/in > {dir}/out 2>&1");
    let machine = ::shell::local();
    let _pipeline: ::shell::Pipeline =
        ::shell::cmd!(machine, "cat <<< {text} | sort &>> log | wc -l 2> /dev/null");
    let _ = (machine, files, text);
}
