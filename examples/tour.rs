//! A tour of leadpipe: every capability, with real output.
//!
//! `cargo run --example tour` needs nothing but a Unix machine with the usual tools
//! (sh, ls, sort, ...). Its remote part runs on an SSH server embedded in the tour
//! (`leadpipe_test_server::TestServer`, on loopback), or on a real host:
//! `cargo run --example tour -- user@host [PORT]`, where PORT is a line service (one that
//! answers each line) on that host's loopback for the sockets and tunnels step.

use std::time::Duration;

use futures::StreamExt;
use leadpipe::{Line, Secret, Signal, TempDir, prelude::*};
use leadpipe_test_server::TestServer;

/// Prints a heading, then what the step shows.
fn step(title: &str) {
    println!("\n== {title}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let sh = local();
    let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
    let here = sh.with_cwd(dir.path());

    step("Commands are values: building runs nothing, Display is a pasteable line");
    let greet = sh
        .cmd("echo")
        .arg("hello, world")
        .arg("it's $HOME, not expanded");
    println!("{greet}");
    println!("read() -> {:?}", greet.read().await?);

    step("Pipelines connect processes with OS pipes");
    let words = sh.cmd("printf").arg("pear\\napple\\nfig\\napple\\n");
    let sorted = (words.clone() | sh.cmd("sort") | sh.cmd("uniq").arg("-c"))
        .read()
        .await?;
    println!(
        "{}",
        words.clone() | sh.cmd("sort") | sh.cmd("uniq").arg("-c")
    );
    println!("{sorted}");
    println!(
        "yes | head -1 -> {:?} (SIGPIPE upstream is not a failure)",
        (sh.cmd("yes") | sh.cmd("head").arg("-1")).read().await?
    );

    step("Here-strings, redirects, appends");
    let upper = (sh.cmd("tr").args(["a-z", "A-Z"]) << "fed from a string")
        .read()
        .await?;
    println!("tr a-z A-Z << \"fed from a string\" -> {upper:?}");
    here.cmd("echo")
        .arg("first")
        .stdout(Redirect::File("log.txt".into()))
        .run()
        .await?;
    (here.cmd("echo").arg("second") >> "log.txt").run().await?;
    here.cmd("sh")
        .args(["-c", "echo to-stderr >&2"])
        .stderr_to_stdout()
        .stdout(Redirect::Append("log.txt".into()))
        .run()
        .await?;
    println!("log.txt:\n{}", here.cmd("cat").arg("log.txt").read().await?);

    step("cmd!: the same, spelled as in a shell and parsed at compile time");
    let file = "notes (draft).txt";
    let pats = ["-e", "apple", "-e", "fig"];
    cmd!(here, "echo apple pie > {file}").run().await?;
    println!("{}", cmd!(here, "cat {file} | grep {pats...} | tr a-z A-Z"));
    println!(
        "-> {:?}",
        cmd!(here, "cat {file} | grep {pats...} | tr a-z A-Z")
            .read()
            .await?
    );
    println!("here-string: {:?}", cmd!("wc -c <<< {file}").read().await?);

    step("Every call: output(), status(), success()");
    let out = sh
        .cmd("sh")
        .args(["-c", "echo out; echo err >&2; exit 3"])
        .unchecked()
        .output()
        .await?;
    println!(
        "status {}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("status() of false -> {}", sh.cmd("false").status().await?);
    println!(
        "success() of grep -q apple -> {}",
        (sh.cmd("grep").args(["-q", "apple"]) << "apple pie")
            .success()
            .await?
    );

    step("Errors say what ran, where, and what it printed");
    let failing = sh.cmd("ls").arg("/no/such/dir") | sh.cmd("wc").arg("-l");
    println!("{}", failing.read().await.unwrap_err());
    println!(
        "{}",
        sh.cmd("no-such-program-anywhere")
            .env("PATH", "/usr/local/bin:/usr/bin")
            .run()
            .await
            .unwrap_err()
    );
    println!(
        "{}",
        sh.cmd("printf").arg("\\377").read().await.unwrap_err()
    );

    step("Timeouts kill every stage, and what they started");
    let slow = (sh.cmd("sh").args(["-c", "sleep 30 & wait"]) | sh.cmd("cat"))
        .timeout(Duration::from_millis(200));
    println!("{}", slow.run().await.unwrap_err());

    step("spawn(): a Child with streams, signals and kill");
    let mut child = sh.cmd("sleep").arg("30").spawn().await?;
    println!("spawned pid {:?}", child.id());
    child.signal(Signal::TERM)?;
    println!("after SIGTERM: {}", child.wait().await.unwrap_err());

    step("lines(): stdout and stderr as they come");
    let mut lines = sh
        .cmd("sh")
        .args(["-c", "echo building; echo 'warning: x' >&2; echo done"])
        .lines();
    while let Some(line) = lines.next().await {
        match line? {
            Line::Stdout(text) => println!("  out | {text}"),
            Line::Stderr(text) => println!("  err | {text}"),
        }
    }

    step("Machine views scope cwd and env without touching the process");
    let view = here.with_env("DEPLOY_ENV", "staging");
    println!("pwd in the view: {}", view.cmd("pwd").read().await?);
    println!(
        "DEPLOY_ENV in the view: {}",
        view.cmd("sh")
            .args(["-c", "echo $DEPLOY_ENV"])
            .read()
            .await?
    );
    println!(
        "this process's DEPLOY_ENV: {:?}",
        std::env::var_os("DEPLOY_ENV")
    );
    println!("which sh -> {}", sh.which("sh").await?.display());

    step("Seeing what runs: echo, secrets as ***, prompts answered");
    let token = Secret::new("s3cret-token");
    let login = sh
        .cmd("sh")
        .args(["-c", "echo \"the program got ${#1} bytes\"", "sh"])
        .arg(&token)
        .echo(true);
    println!("Display: {login}");
    println!("read() -> {:?}", login.read().await?);
    let asks = "printf 'Continue? [y/N] '; read a; echo \"answered $a\"";
    let answered = sh.cmd("sh").args(["-c", asks]).respond("[y/N] ", "y");
    println!("respond(\"[y/N] \", \"y\") -> {:?}", answered.read().await?);
    match sh.sudo().cmd("id").arg("-un").read().await {
        Ok(user) => println!("local().sudo(): id -un -> {user}"),
        Err(error) => println!("local().sudo() here: {error}"),
    }

    remote_tour().await?;

    println!("\nFor a plain fn main without async, see examples/script.rs (leadpipe::blocking).");
    Ok(())
}

/// The same calls on an SSH machine: the host given on the command line, or an SSH server
/// embedded in this process.
async fn remote_tour() -> Result<()> {
    step("Remote machines: the same calls over SSH");
    // The embedded server, when there is one, serves as long as it is held.
    let (remote, _server) = match std::env::args().nth(1) {
        Some(destination) => {
            println!(
                "connecting to {destination} (ssh config, agent and known_hosts as ssh reads them)"
            );
            (SshMachine::connect(&destination).await?, None)
        }
        None => {
            let server = TestServer::start().await?;
            println!(
                "no host given: an SSH server embedded in the tour, on {} (it runs commands \
                 here, as you); `cargo run --example tour -- user@host` uses a real one",
                server.addr()
            );
            (server.connect().await?, Some(server))
        }
    };
    println!("connected to {}", remote.name());
    println!(
        "uname -sr -> {:?}",
        remote.cmd("uname").arg("-sr").read().await?
    );
    let fruit = remote.cmd("printf").arg("pear\\napple\\nfig\\n")
        | remote.cmd("sort")
        | remote.cmd("head").arg("-2");
    println!(
        "{fruit} -> {:?} (the data stays on that host)",
        fruit.read().await?
    );
    let input = "b\na\nc\n";
    println!(
        "sort -r << {input:?} -> {:?}",
        (remote.cmd("sort").arg("-r") << input).read().await?
    );
    println!(
        "{}",
        remote
            .cmd("ls")
            .arg("/no/such/dir")
            .read()
            .await
            .unwrap_err()
    );
    let slow = remote
        .cmd("sh")
        .args(["-c", "sleep 30 & wait"])
        .timeout(Duration::from_millis(300));
    println!("{}", slow.run().await.unwrap_err());
    // Commands at once run each on a channel of the one connection; for a server that
    // allows few per connection (OpenSSH's MaxSessions, 10 by default), spread them.
    let builder = match (&_server, std::env::args().nth(1)) {
        (Some(server), _) => server.builder(),
        (None, destination) => SshMachine::builder(destination.unwrap_or_default()),
    };
    let spread = builder.connections(2).connect().await?;
    let checks: Vec<Command> = (0..40)
        .map(|i| {
            spread
                .cmd("sh")
                .args(["-c", "exit $(($1 % 3))", "sh", &i.to_string()])
        })
        .collect();
    let statuses = futures::future::join_all(checks.iter().map(|check| check.status())).await;
    let codes: Vec<String> = statuses
        .into_iter()
        .map(|status| status.map(|status| status.code().unwrap_or(-1).to_string()))
        .collect::<leadpipe::Result<_>>()?;
    println!(
        "40 commands at once over connections(2), each exiting with its number mod 3: {}",
        codes.join(" ")
    );
    let name = "it's $HOME";
    println!(
        "cmd!(remote, \"echo {{name}} | tr a-z A-Z\") -> {:?}",
        cmd!(remote, "echo {name} | tr a-z A-Z").read().await?
    );

    step("Remote commands tell the truth, whatever the login shell");
    // Every stage reports its own status (as bash's PIPESTATUS), even one a signal killed.
    let stages = remote.cmd("printf").arg("a\\nb\\n")
        | remote.cmd("sh").args(["-c", "exit 3"])
        | remote.cmd("cat");
    println!("{}", stages.run().await.unwrap_err());
    // What no remote program could receive is refused before anything is sent; the
    // connection and every other call go on.
    println!(
        "{}",
        remote.cmd("echo").arg("a\0b").run().await.unwrap_err()
    );
    // An env name is never read as an option of `env`.
    let env = remote
        .cmd("env")
        .env("--split-string", "just a variable")
        .read()
        .await?;
    let line = env.lines().find(|line| line.starts_with("--split"));
    println!("env(\"--split-string\", ..) -> {line:?}");

    step("One function for every machine: the Machine trait");
    println!("local  -> {}", kernel(&local()).await?);
    println!("remote -> {}", kernel(&remote).await?);

    step("spawn_detached(): the one way to outlive the script");
    let pid = remote.cmd("sleep").arg("1000.25").spawn_detached().await?;
    let session = remote
        .cmd("ps")
        .args(["-o", "sid=", "-p"])
        .arg(pid.to_string());
    println!(
        "detached sleep: pid {pid}, session {} (its own)",
        session.read().await?.trim()
    );
    remote.cmd("kill").arg(pid.to_string()).run().await?;

    step("Services on the remote side, through the same connection");
    sockets_and_tunnels(&remote).await?;

    step("Files on both machines: paths, atomic writes, uploads with progress");
    match remote.tempdir().await {
        Ok(work) => remote_files(&remote, &work).await?,
        // The embedded server serves files with OpenSSH's sftp-server, if installed.
        Err(error) => println!("(skipped: {error})"),
    }
    Ok(())
}

/// Written once for any machine.
async fn kernel(machine: &impl Machine) -> Result<String> {
    let release = machine.cmd("uname").arg("-r").read().await?;
    Ok(format!("{release} on {}", machine.name()))
}

/// A line service listening on loopback, reached through the SSH connection: a socket for
/// this program, and a tunnel for any client that only knows host:port.
async fn sockets_and_tunnels(remote: &SshMachine) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let io = |context: &str, e: std::io::Error| Error::io(context, e);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let service = match (args.first(), args.get(1)) {
        // A real host: the port of a line service on its loopback (`-- user@host PORT`).
        (Some(_), Some(port)) => port.parse().map_err(|_| {
            io(
                "the service port",
                std::io::Error::other("not a port number"),
            )
        })?,
        (Some(host), None) => {
            println!("(skipped: `-- {host} PORT` names a line service on that host's loopback)");
            return Ok(());
        }
        // The embedded server reaches this machine's loopback: start one here.
        (None, _) => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| io("starting the line service", e))?;
            let port = listener
                .local_addr()
                .map_err(|e| io("its address", e))?
                .port();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let (read, mut write) = client.into_split();
                        let mut lines = BufReader::new(read).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            let reply = format!("{}\n", line.to_uppercase());
                            if write.write_all(reply.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            port
        }
    };
    let mut sock = remote.connect_sock(service).await?;
    sock.write_all(b"through a direct-tcpip channel\n")
        .await
        .map_err(|e| io("writing to the socket", e))?;
    sock.shutdown()
        .await
        .map_err(|e| io("half-closing it", e))?;
    let mut answer = String::new();
    sock.read_to_string(&mut answer)
        .await
        .map_err(|e| io("reading the answer", e))?;
    println!("connect_sock({service}) -> {:?}", answer.trim_end());
    let tunnel = remote.tunnel(0, service).await?;
    let mut client = tokio::net::TcpStream::connect(tunnel.local_addr())
        .await
        .map_err(|e| io("connecting to the tunnel", e))?;
    client
        .write_all(b"a client that knows only host:port\n")
        .await
        .map_err(|e| io("writing to the tunnel", e))?;
    client
        .shutdown()
        .await
        .map_err(|e| io("half-closing it", e))?;
    let mut answer = String::new();
    client
        .read_to_string(&mut answer)
        .await
        .map_err(|e| io("reading the answer", e))?;
    println!(
        "tunnel {} -> remote port {service} -> {:?}",
        tunnel.local_addr(),
        answer.trim_end()
    );
    println!(
        "{}",
        remote
            .connect_sock(1)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    Ok(())
}

async fn remote_files(remote: &SshMachine, work: &TempDir) -> Result<()> {
    let sh = local();
    let release = sh.tempdir().await?;
    (release.path() / "bin").mkdir().await?;
    (release.path() / "bin/app")
        .write("#!/bin/sh\necho app 1.2 running\n")
        .await?;
    (release.path() / "bin/app").chmod(0o755).await?;
    (release.path() / "app.conf").write("workers = 2\n").await?;
    println!("local release: {:?}", release.path().glob("**/*").await?);
    let bytes = remote
        .upload(release.path(), work.path())
        .progress(|done, total| {
            if done == total {
                println!("uploaded {done} of {total} bytes");
            }
        })
        .await?;
    let target = work.path() / release.path().file_name().unwrap_or_default();
    println!("{bytes} bytes to {:?}", target);
    println!(
        "{} -> {:?} (mode kept)",
        target.join("bin/app"),
        remote.cmd(target.join("bin/app")).read().await?
    );
    let conf = target.join("app.conf");
    let old = conf.read_to_string().await?;
    conf.write(old.replace("2", "8")).await?;
    println!(
        "app.conf replaced atomically: {:?}",
        conf.read_to_string().await?
    );
    println!(
        "a missing file names machine, path and operation:\n  {}",
        work.join("nope.conf").read().await.unwrap_err()
    );
    Ok(())
}
