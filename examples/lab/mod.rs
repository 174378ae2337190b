//! What the benchmarks share: the lab server's settings from the environment, and medians.
//!
//! The lab scripts (`sshd-up.sh`, `netns-up.sh`) print `LAB_HOST`, `LAB_PORT`, `LAB_USER`,
//! `LAB_KEY`, `LAB_KNOWN_HOSTS` and `LAB_SSH_CONFIG` (whose host `lab` is the same server
//! for OpenSSH's clients), and keep them in `LAB_DIR/env.sh`.

use std::{collections::HashMap, time::Duration};

use leadpipe::SshMachine;

/// A lab setting; panics naming it when the lab is not up.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: start a lab sshd first"))
}

/// One lab server's settings.
#[derive(Clone, Debug)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: String,
    pub known_hosts: String,
    /// An ssh_config whose host `lab` is this server.
    pub ssh_config: String,
}

impl Server {
    /// The server the environment names (`LAB_*`).
    pub fn from_env() -> Server {
        Server::from_lookup(var)
    }

    /// The server of another lab directory (its `env.sh`), for a second server beside the
    /// one in the environment.
    pub fn from_dir(dir: &str) -> Server {
        let text = std::fs::read_to_string(format!("{dir}/env.sh"))
            .unwrap_or_else(|e| panic!("{dir}/env.sh: {e}"));
        let vars: HashMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
            .collect();
        Server::from_lookup(|name| {
            vars.get(name)
                .unwrap_or_else(|| panic!("{dir}/env.sh has no {name}"))
                .to_string()
        })
    }

    fn from_lookup(get: impl Fn(&str) -> String) -> Server {
        Server {
            host: get("LAB_HOST"),
            port: get("LAB_PORT").parse().expect("LAB_PORT is a port number"),
            user: get("LAB_USER"),
            key: get("LAB_KEY"),
            known_hosts: get("LAB_KNOWN_HOSTS"),
            ssh_config: get("LAB_SSH_CONFIG"),
        }
    }

    /// Connects with the server's own key and known_hosts, reading no ssh config.
    pub async fn connect(&self) -> leadpipe::Result<SshMachine> {
        self.builder().connect().await
    }

    /// The settings [`connect`](Server::connect) uses, to add to.
    pub fn builder(&self) -> leadpipe::SshBuilder {
        SshMachine::builder(&self.host)
            .port(self.port)
            .user(&self.user)
            .identity_file(&self.key)
            .known_hosts(&self.known_hosts)
            .ssh_config(None)
    }
}

/// Connects to the lab server with its own key and known_hosts, reading no ssh config.
pub async fn connect() -> leadpipe::Result<SshMachine> {
    Server::from_env().connect().await
}

/// The middle sample (the upper one of an even count).
pub fn median(samples: &[Duration]) -> Duration {
    let mut samples = samples.to_vec();
    samples.sort();
    samples[samples.len() / 2]
}

/// The load average over the last minute, as `/proc/loadavg` gives it.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
