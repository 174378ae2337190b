// The expansion needs nothing in scope, moves nothing, and its own names cannot clash with
// the user's.
#![no_implicit_prelude]
#![deny(warnings)]

struct Config {
    port: ::std::string::String,
    extra: ::std::option::Option<::std::string::String>,
}

fn main() {
    let cfg = Config {
        port: ::std::borrow::ToOwned::to_owned("8080"),
        extra: ::std::option::Option::None,
    };
    let args = ::std::vec![::std::borrow::ToOwned::to_owned("-v")];
    let __leadpipe_machine = "mine";
    let __leadpipe_arg = "mine too";
    let sh = ::leadpipe::local();
    let _command: ::leadpipe::Command = ::leadpipe::cmd!(
        sh,
        "serve --port={cfg.port} {cfg.extra...} {args...} {__leadpipe_machine} {__leadpipe_arg}"
    );
    // Everything interpolated is still usable: nothing was moved.
    let _ = (cfg, args, sh);
}
