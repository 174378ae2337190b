//! What the benchmarks share: the lab server's settings from the environment, and medians.
//!
//! The lab scripts (`sshd-up.sh`, `netns-up.sh`) print `LAB_HOST`, `LAB_PORT`, `LAB_USER`,
//! `LAB_KEY`, `LAB_KNOWN_HOSTS` and `LAB_SSH_CONFIG` (whose host `lab` is the same server
//! for OpenSSH's clients).

use std::time::Duration;

use leadpipe::SshMachine;

/// A lab setting; panics naming it when the lab is not up.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start a lab sshd first"))
}

/// Connects to the lab server with its own key and known_hosts, reading no ssh config.
pub async fn connect() -> leadpipe::Result<SshMachine> {
    SshMachine::builder(var("LAB_HOST"))
        .port(var("LAB_PORT").parse().expect("LAB_PORT is a port number"))
        .user(var("LAB_USER"))
        .identity_file(var("LAB_KEY"))
        .known_hosts(var("LAB_KNOWN_HOSTS"))
        .ssh_config(None)
        .connect()
        .await
}

/// The middle sample (the upper one of an even count).
pub fn median(samples: &[Duration]) -> Duration {
    let mut samples = samples.to_vec();
    samples.sort();
    samples[samples.len() / 2]
}
