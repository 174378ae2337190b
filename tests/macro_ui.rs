//! What `cmd!` does at compile time: every rejected construct with the exact error it
//! gives (tests/ui/fail), expansions that must compile (tests/ui/pass), and the expansion
//! in a crate that knows leadpipe under another name (tests/ui/renamed).
//!
//! After changing a message on purpose, regenerate the expected output with
//! `TRYBUILD=overwrite cargo test --test macro_ui` and review the diff.

use std::path::Path;
use std::process::Command;

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}

/// trybuild always gives its test crates leadpipe under its own name, so a renamed
/// dependency is checked with a small crate of its own, generated here and checked with
/// the same Cargo.lock (no new downloads).
#[test]
fn works_in_a_crate_that_renames_leadpipe() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("renamed-leadpipe");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        r#"[package]
name = "renamed-leadpipe"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
shell = {{ package = "leadpipe", path = {root:?} }}

[[bin]]
name = "renamed-leadpipe"
path = {main:?}

[workspace]
"#,
        root = root,
        main = root.join("tests/ui/renamed/main.rs"),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    if let Ok(lock) = std::fs::read(root.join("Cargo.lock")) {
        std::fs::write(dir.join("Cargo.lock"), lock).unwrap();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .arg("check")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the renamed crate does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
