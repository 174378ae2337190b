//! A release, deployed the way a script does it on a real server: upload the release,
//! switch the `current` symlink as root, restart the service detached, and check its
//! health through the SSH connection.
//!
//! `cargo run --example deploy` runs it against an SSH server embedded in the example
//! (`leadpipe_test_server::TestServer`, on loopback, running commands here as you); sudo
//! is used where it works without a password there (as root, or with `NOPASSWD`), else the
//! login itself stands in for root. On a real host:
//!
//! ```text
//! cargo run --example deploy -- deploy@web1 [BASE_DIR] [PORT]
//! ```
//!
//! asks for sudo's password when sudo asks for one (or takes `LEADPIPE_SUDO_PASSWORD`),
//! deploys under BASE_DIR (default `/srv/leadpipe-demo`) and serves on PORT (default 18080)
//! of that host's loopback. The service is `python3 -m http.server`, so the host needs
//! python3.

use std::{io::Write as _, time::Duration};

use leadpipe::{Redirect, Secret, prelude::*};
use leadpipe_test_server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (machine, _server, base) = match args.first() {
        Some(destination) => {
            let machine = SshMachine::builder(destination.as_str())
                .sudo_password_with(ask_password)
                .connect()
                .await?;
            let base = args.get(1).cloned().unwrap_or("/srv/leadpipe-demo".into());
            (machine, None, base)
        }
        None => {
            let server = TestServer::start().await?;
            println!(
                "no host given: an SSH server embedded in the example, on {}",
                server.addr()
            );
            let base = format!("/tmp/leadpipe-deploy-demo-{}", std::process::id());
            (server.connect().await?, Some(server), base)
        }
    };
    let port: u16 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(18080);
    println!("deploying to {} under {base}", machine.name());

    // Root where sudo works; on the embedded server without it, the login stands in.
    let sudo_works = !args.is_empty() || machine.cmd("sudo").args(["-n", "true"]).success().await?;
    let root = if sudo_works {
        machine.sudo()
    } else {
        println!("(sudo needs a password here: running the root steps as the login)");
        machine.clone()
    };

    // 1. A release, built here.
    let version = format!("v{}", std::process::id());
    let build = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
    let sh = local().with_cwd(build.path());
    sh.path("bin").mkdir().await?;
    sh.path("public").mkdir().await?;
    sh.path("bin/serve")
        .write(
            "#!/bin/sh\n# Serves the release's public/ on 127.0.0.1:$1.\n\
             cd \"$(dirname \"$0\")/../public\" && exec python3 -m http.server \"$1\" --bind 127.0.0.1\n",
        )
        .await?;
    sh.path("bin/serve").chmod(0o755).await?;
    sh.path("public/health")
        .write(format!("ok {version}\n"))
        .await?;

    // 2. Uploaded as root into releases/VERSION, modes kept.
    let release = format!("{base}/releases/{version}");
    root.path(format!("{base}/releases")).mkdir().await?;
    let bytes = root.upload(build.path(), &release).await?;
    println!("uploaded {bytes} bytes to {release}");

    // 3. `current` switched in one rename, as root: no moment without a release.
    root.cmd("ln")
        .args(["-sfn", &release, &format!("{base}/current.new")])
        .run()
        .await?;
    root.cmd("mv")
        .args([
            "-T",
            &format!("{base}/current.new"),
            &format!("{base}/current"),
        ])
        .run()
        .await?;
    println!(
        "{base}/current -> {}",
        root.path(format!("{base}/current"))
            .read_link()
            .await?
            .display()
    );

    // 4. The service restarted detached: it outlives this script and its connection.
    let pidfile = format!("{base}/service.pid");
    let stop = "[ -f \"$1\" ] && kill -- \"-$(cat \"$1\")\" 2>/dev/null; rm -f \"$1\"";
    root.cmd("sh")
        .args(["-c", stop, "sh", &pidfile])
        .run()
        .await?;
    let pid = root
        .cmd(format!("{base}/current/bin/serve"))
        .arg(port.to_string())
        .stdout(Redirect::Append(format!("{base}/service.log").into()))
        .stderr_to_stdout()
        .spawn_detached()
        .await?;
    root.path(&pidfile).write(format!("{pid}\n")).await?;
    println!("service started detached as pid {pid}");

    // 5. Health, through the SSH connection: the port is open only on the loopback there.
    let health = health_check(&machine, port).await?;
    let body = health.rsplit("\r\n\r\n").next().unwrap_or_default().trim();
    println!("GET /health through connect_sock({port}) -> {body:?}");
    assert!(health.contains(&version), "the old release answered");

    if args.is_empty() {
        // The embedded demo leaves nothing behind.
        root.cmd("sh")
            .args(["-c", stop, "sh", &pidfile])
            .run()
            .await?;
        root.path(&base).remove_all().await?;
        println!("demo service stopped, {base} removed");
    }
    Ok(())
}

/// sudo's password, asked on the terminal (or taken from `LEADPIPE_SUDO_PASSWORD`) the
/// first time sudo asks.
fn ask_password(machine: &str) -> Option<Secret> {
    if let Ok(password) = std::env::var("LEADPIPE_SUDO_PASSWORD") {
        return Some(Secret::new(password));
    }
    eprint!("sudo password on {machine}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).ok()?;
    Some(Secret::new(line.trim_end_matches(['\r', '\n'])))
}

/// `GET /health` over a direct-tcpip channel, retried while the service starts.
async fn health_check(machine: &SshMachine, port: u16) -> Result<String> {
    let mut last = None;
    for _ in 0..50 {
        match get(machine, port).await {
            Ok(body) if body.starts_with("HTTP/1.0 200") => return Ok(body),
            Ok(other) => last = Some(Error::io("health check", std::io::Error::other(other))),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| Error::io("health check", std::io::Error::other("no answer"))))
}

async fn get(machine: &SshMachine, port: u16) -> Result<String> {
    let mut sock = machine.connect_sock(port).await?;
    let io = |e| Error::io("talking to the service", e);
    sock.write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .await
        .map_err(io)?;
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.map_err(io)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}
