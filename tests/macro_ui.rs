//! What `cmd!` does at compile time: every rejected construct with the exact error it
//! gives (tests/ui/fail), and expansions that must compile (tests/ui/pass).
//!
//! After changing a message on purpose, regenerate the expected output with
//! `TRYBUILD=overwrite cargo test --test macro_ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
