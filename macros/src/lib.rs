//! Procedural macros for [leadpipe](https://docs.rs/leadpipe). Use them through
//! `leadpipe::cmd!`; this crate is an implementation detail.

use proc_macro::TokenStream;

/// Implementation of `leadpipe::cmd!`; call it through that macro.
#[proc_macro]
pub fn cmd_impl(input: TokenStream) -> TokenStream {
    let _ = input;
    "::core::compile_error!(\"cmd! is not implemented yet\")"
        .parse()
        .unwrap()
}
