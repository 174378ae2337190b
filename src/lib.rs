//! leadpipe: shell-like programs in Rust.
#![allow(missing_docs)]

mod cmd_macro;

#[doc(hidden)]
pub mod __private {
    pub use leadpipe_macros::cmd_impl;
}
