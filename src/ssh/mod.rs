//! SSH support: parsers for the OpenSSH files an SSH machine honours.

// Until the SSH machine calls them, only the unit tests use these parsers.
#[allow(dead_code)]
mod config;
#[allow(dead_code)]
mod known_hosts;
