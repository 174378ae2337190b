//! `uptime` across a fleet, with live prefixed output and a summary.
//!
//! `cargo run --example fleet` starts four SSH servers embedded in this process
//! (`leadpipe_test_server::TestServer`, on loopback) and adds a host that refuses
//! connections, to show how a failure is reported. With arguments it runs on real hosts:
//!
//! ```sh
//! cargo run --example fleet -- hosts.ini web       # a group of an Ansible INI inventory
//! cargo run --example fleet -- 'deploy@web[01-04]' db1   # destinations as ssh takes them
//! ```

use std::{net::TcpListener, time::Duration};

use leadpipe::{Error, Fleet, Inventory, Result};
use leadpipe_test_server::TestServer;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The embedded servers, when there are any, serve as long as they are held.
    let mut servers = Vec::new();
    let fleet = match args.first() {
        Some(file) if file.ends_with(".ini") => {
            let group = args.get(1).map_or("all", String::as_str);
            Fleet::builder(Inventory::ansible_ini(file)?.group(group))
                .connect_timeout(Duration::from_secs(10))
                .connect()
                .await
        }
        Some(_) => Fleet::connect(&args).await,
        None => {
            for _ in 0..4 {
                servers.push(TestServer::start().await?);
            }
            embedded_fleet(&servers).await?
        }
    };
    println!("{}", fleet.connected().await);

    println!("\n$ uptime   (live, each line prefixed with its host)");
    let report = fleet.cmd("uptime").run().await;
    println!("\n{report}");

    println!("\nthe same, as values:");
    let report = fleet
        .run(|m| async move {
            let load = m.cmd("cat").arg("/proc/loadavg").read().await?;
            Ok(load.split_whitespace().next().unwrap_or("?").to_owned())
        })
        .await;
    for (host, load) in report.iter() {
        match load {
            Ok(load) => println!("  {host}: load {load}"),
            Err(e) => println!("  {host}: {}", e.to_string().lines().next().unwrap_or("")),
        }
    }
    Ok(())
}

/// A fleet of the embedded servers, and one host where nothing listens.
async fn embedded_fleet(servers: &[TestServer]) -> Result<Fleet> {
    let dir = std::env::temp_dir().join(format!("leadpipe-fleet-example.{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating a temp dir", e))?;
    // One known_hosts for all of them; each server has its own client key.
    let known_hosts = dir.join("known_hosts");
    let lines: String = servers
        .iter()
        .map(|s| format!("{}\n", s.known_hosts_line()))
        .collect();
    std::fs::write(&known_hosts, lines).map_err(|e| Error::io("writing known_hosts", e))?;
    let keys: Vec<_> = servers.iter().map(TestServer::identity_file).collect();
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io("finding a closed port", e))?
        .port();
    let mut destinations: Vec<String> = servers
        .iter()
        .map(|s| format!("{}@127.0.0.1:{}", s.user(), s.port()))
        .collect();
    destinations.insert(2, format!("{}@127.0.0.1:{closed}", servers[0].user()));
    println!(
        "no hosts given: {} SSH servers embedded in this example, and one closed port",
        servers.len()
    );
    let fleet = Fleet::builder(Inventory::new(destinations))
        .ssh(move |mut b| {
            for key in &keys {
                b = b.identity_file(key);
            }
            b.known_hosts(&known_hosts).ssh_config(None)
        })
        .connect()
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(fleet)
}
