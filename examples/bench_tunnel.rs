//! Side-by-side benchmark of leadpipe's forwarding (`connect_sock`, `tunnel`) against
//! OpenSSH's `ssh -L`, in one run, to the same server.
//!
//! Needs a throw-away OpenSSH server and its settings in the environment, as for
//! `bench_ssh` (`LAB_HOST`, `LAB_PORT`, `LAB_USER`, `LAB_KEY`, `LAB_KNOWN_HOSTS`,
//! `LAB_SSH_CONFIG`, whose host `lab` is the same server for `ssh`), and `python3` on the
//! server. Then `cargo run --release --example bench_tunnel [ROUNDS]`.
//!
//! The service is a zero server on the server's loopback, started through the connection:
//! each client gets N zero bytes, sent 1 MiB per `send`, then the connection closes (one
//! thread per client). Throughput: 1 GiB read through each path, MiB/s. Open latency: a
//! new connection through each path until its first byte (a 1-byte server), median of
//! 100. leadpipe negotiates AES-256-GCM; OpenSSH's client prefers chacha20-poly1305, so
//! `ssh -L` runs both with its default and with `-c aes256-gcm@openssh.com`. Values are
//! medians of the rounds (default 3); a ratio is the median of the rounds' leadpipe /
//! `ssh -L` throughput ratios (each round runs the paths back to back). Client CPU is the
//! CPU time of everything on this side for the GiB: this process (the reader included),
//! plus the `ssh` process for `ssh -L`; the server's share (sshd, the zero server) is not
//! in it.

#[allow(dead_code)]
mod lab;

use std::{
    process::{Command as Std, Stdio},
    time::{Duration, Instant},
};

use leadpipe::{Child, SshMachine};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// The remote service: `python3 -c ZERO_SERVER N` listens on a free port of 127.0.0.1,
/// prints it, and sends each client N zero bytes.
const ZERO_SERVER: &str = r#"
import socket, sys, threading
total = int(sys.argv[1])
zeros = memoryview(bytes(1 << 20))
def serve(client):
    with client:
        left = total
        while left:
            left -= client.send(zeros[:min(left, len(zeros))])
server = socket.create_server(("127.0.0.1", 0), backlog=128)
print(server.getsockname()[1], flush=True)
while True:
    client, _ = server.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
"#;

const GIB: u64 = 1 << 30;
const OPENS: usize = 100;

/// CPU seconds (user + system) used so far by process `pid` ("self" for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15 of stat (11 and 12 after the command name).
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

/// Starts a zero server of `bytes` per client on the remote machine; its port.
async fn zero_server(remote: &SshMachine, bytes: u64) -> leadpipe::Result<(Child, u16)> {
    let mut child = remote
        .cmd("python3")
        .args(["-c", ZERO_SERVER, &bytes.to_string()])
        .spawn()
        .await?;
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("the zero server's port");
    let port = line.trim().parse().expect("a port number");
    Ok((child, port))
}

/// Reads `stream` (through `path`) to its end; the time it took, after checking the byte
/// count.
async fn drain(path: &str, mut stream: impl AsyncRead + Unpin, start: Instant) -> Duration {
    let mut buffer = vec![0; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buffer).await.expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let took = start.elapsed();
    assert_eq!(total, GIB, "bytes through {path}: a truncated stream");
    took
}

/// Time to the first byte, then the rest (one byte and the end) outside the timing.
async fn first_byte<S: AsyncRead + AsyncWriteExt + Unpin>(
    open: impl Future<Output = S>,
) -> Duration {
    let start = Instant::now();
    let mut stream = open.await;
    let mut byte = [0; 1];
    stream.read_exact(&mut byte).await.expect("first byte");
    let took = start.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("end");
    // Our end of file: the server then closes the channel (no channel left behind).
    let _ = stream.shutdown().await;
    took
}

/// An `ssh -L` forward to the remote `port` on a free local port, run as an OpenSSH
/// ControlMaster (so it can be stopped by its control socket); its local port.
struct SshForward {
    control: String,
    config: String,
    port: u16,
    /// The ssh process, for its CPU time.
    pid: String,
}

impl SshForward {
    fn start(config: &str, cipher: Option<&str>, remote_port: u16) -> SshForward {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let control = std::env::temp_dir()
            .join(format!(
                "leadpipe-bench-tunnel-{}-{port}.sock",
                std::process::id()
            ))
            .display()
            .to_string();
        let forward = format!("127.0.0.1:{port}:127.0.0.1:{remote_port}");
        let mut ssh = Std::new("ssh");
        ssh.args(["-F", config, "-M", "-S", &control, "-f", "-N"])
            .args(["-o", "ExitOnForwardFailure=yes", "-L", &forward]);
        if let Some(cipher) = cipher {
            ssh.args(["-c", cipher]);
        }
        // `-f` returns once the forward listens.
        let status = ssh.arg("lab").status().expect("ssh");
        assert!(status.success(), "ssh -L failed to start");
        // "Master running (pid=N)"
        let check = Std::new("ssh")
            .args(["-F", config, "-S", &control, "-O", "check", "lab"])
            .output()
            .expect("ssh -O check");
        let text = String::from_utf8_lossy(&check.stderr).into_owned();
        let pid = text
            .split("pid=")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .expect("the master's pid")
            .to_owned();
        SshForward {
            control,
            config: config.to_owned(),
            port,
            pid,
        }
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        let _ = Std::new("ssh")
            .args(["-F", &self.config, "-S", &self.control, "-O", "exit", "lab"])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::main]
async fn main() -> leadpipe::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let config = lab::var("LAB_SSH_CONFIG");
    let remote = lab::connect().await?;
    let (mut zeros, zero_port) = zero_server(&remote, GIB).await?;
    let (mut ones, one_port) = zero_server(&remote, 1).await?;
    let tunnel = remote.tunnel(0, zero_port).await?;
    let one_tunnel = remote.tunnel(0, one_port).await?;
    let chacha = SshForward::start(&config, None, zero_port);
    let gcm = SshForward::start(&config, Some("aes256-gcm@openssh.com"), zero_port);
    let one_chacha = SshForward::start(&config, None, one_port);
    let one_gcm = SshForward::start(&config, Some("aes256-gcm@openssh.com"), one_port);

    let tunnel_port = tunnel.local_addr().port();
    let one_tunnel_port = one_tunnel.local_addr().port();
    // Per path: seconds for 1 GiB, and the client's CPU seconds for it.
    let mut throughput: [Vec<(Duration, f64)>; 4] = Default::default();
    let mut latency: [Vec<Duration>; 4] = Default::default();
    for _ in 0..rounds {
        // In a task, where async code runs (from `main`, each wakeup also hops threads).
        let machine = remote.clone();
        let (ours, ours_open) = tokio::spawn(async move {
            let (start, cpu) = (Instant::now(), cpu_seconds("self"));
            let socket = machine.connect_sock(zero_port).await.expect("connect_sock");
            let sock = (
                drain("connect_sock", socket, start).await,
                cpu_seconds("self") - cpu,
            );
            let (start, cpu) = (Instant::now(), cpu_seconds("self"));
            let tunneled = (
                drain("tunnel", tcp(tunnel_port).await, start).await,
                cpu_seconds("self") - cpu,
            );
            let (mut sock_opens, mut tunnel_opens) = (Vec::new(), Vec::new());
            for _ in 0..OPENS {
                let open = async { machine.connect_sock(one_port).await.expect("open") };
                sock_opens.push(first_byte(open).await);
                tunnel_opens.push(first_byte(tcp(one_tunnel_port)).await);
            }
            (
                (sock, tunneled),
                (lab::median(&sock_opens), lab::median(&tunnel_opens)),
            )
        })
        .await
        .expect("task");
        throughput[0].push(ours.0);
        throughput[1].push(ours.1);
        latency[0].push(ours_open.0);
        latency[1].push(ours_open.1);
        for (i, forward) in [(2, &chacha), (3, &gcm)] {
            // The client side is ssh and the reader here (which, for `tunnel`, is in
            // leadpipe's own figure).
            let cpu = || cpu_seconds(&forward.pid) + cpu_seconds("self");
            let (start, before) = (Instant::now(), cpu());
            let took = drain("ssh -L", tcp(forward.port).await, start).await;
            throughput[i].push((took, cpu() - before));
        }
        for (i, forward) in [(2, &one_chacha), (3, &one_gcm)] {
            let mut opens = Vec::new();
            for _ in 0..OPENS {
                opens.push(first_byte(tcp(forward.port)).await);
            }
            latency[i].push(lab::median(&opens));
        }
    }
    // Ratios per round (the paths ran back to back, under the same load), then their
    // median: steadier on a shared machine than a ratio of medians.
    let ratio = |ours: usize, theirs: usize| {
        let mut ratios: Vec<f64> = throughput[ours]
            .iter()
            .zip(&throughput[theirs])
            .map(|(a, b)| b.0.as_secs_f64() / a.0.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let ratios = [(ratio(0, 3), ratio(0, 2)), (ratio(1, 3), ratio(1, 2))];
    // The median round by time, with that round's CPU.
    let [sock, tun, chacha_l, gcm_l] = throughput.map(|mut samples| {
        samples.sort_by_key(|sample| sample.0);
        let (took, cpu) = samples[samples.len() / 2];
        (1024.0 / took.as_secs_f64(), cpu)
    });
    let [sock_open, tun_open, chacha_open, gcm_open] =
        latency.map(|samples| lab::median(&samples).as_secs_f64() * 1e3);
    println!(
        "| 1 GiB from a remote zero server | MiB/s | client CPU s | vs ssh -L, aes256-gcm | \
         vs ssh -L, default cipher |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for ((name, (rate, cpu)), (gcm, chacha)) in [
        ("leadpipe `connect_sock`", sock),
        ("leadpipe `tunnel`", tun),
    ]
    .into_iter()
    .zip(ratios)
    {
        println!("| {name} | {rate:.0} | {cpu:.2} | {gcm:.2}x | {chacha:.2}x |");
    }
    for (name, (rate, cpu)) in [
        ("`ssh -L`, aes256-gcm", gcm_l),
        ("`ssh -L`, default cipher", chacha_l),
    ] {
        println!("| {name} | {rate:.0} | {cpu:.2} | | |");
    }
    println!();
    println!("| new connection until its first byte (median of {OPENS}) | ms |");
    println!("| --- | --- |");
    for (name, ms) in [
        ("leadpipe `connect_sock`", sock_open),
        ("leadpipe `tunnel`", tun_open),
        ("`ssh -L`, aes256-gcm", gcm_open),
        ("`ssh -L`, default cipher", chacha_open),
    ] {
        println!("| {name} | {ms:.3} |");
    }
    // Stopped here, while the runtime still runs: a child merely dropped as `main`
    // returns would be asked to stop by a task that never gets to run.
    zeros.kill().await?;
    ones.kill().await?;
    Ok(())
}

async fn tcp(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}
