//! leadpipe: shell-like programs in Rust.
#![allow(missing_docs)]
