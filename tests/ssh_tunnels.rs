//! Reaching services on the remote side through the one SSH connection: sockets, tunnels,
//! reverse tunnels, a jump host. Real services (redis-server, Python's HTTP server) behind
//! a real OpenSSH sshd, talked to with ordinary Rust clients.

mod support;

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use leadpipe::{ChannelRefusal, Error, Socket, SshMachine, local};
use leadpipe_test_server::FaultProxy;
use support::sshd::Sshd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A service process, killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on port {port}");
}

/// redis-server on 127.0.0.1 (and a Unix socket when `unix` is given), or `None` (with a
/// note) where it is not installed; CI installs it.
fn redis(unix: Option<&Path>) -> Option<(Service, u16)> {
    if !Path::new("/usr/bin/redis-server").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server is missing: apt-get install redis-server"
        );
        eprintln!("skipped: redis-server not found");
        return None;
    }
    let port = free_port();
    let mut command = Command::new("redis-server");
    command.args([
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    if let Some(path) = unix {
        command
            .arg("--unixsocket")
            .arg(path)
            .args(["--unixsocketperm", "777"]);
    }
    let child = command.stdout(Stdio::null()).spawn().unwrap();
    wait_for_port(port);
    Some((Service(child), port))
}

/// Python's HTTP server over a directory holding `hello.txt`.
fn http_server(dir: &Path) -> (Service, u16) {
    std::fs::write(dir.join("hello.txt"), "hello through ssh\n").unwrap();
    // Port 0, and the port read from what the server prints: a port picked here and bound
    // there could be taken by a parallel test's service in between.
    let mut child = Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut banner,
    )
    .unwrap();
    // "Serving HTTP on 127.0.0.1 port 43567 (http://127.0.0.1:43567/) ..."
    let port = banner
        .split_whitespace()
        .skip_while(|word| *word != "port")
        .nth(1)
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {banner:?}"));
    wait_for_port(port);
    (Service(child), port)
}

/// Written once for any machine's socket: PING, SET, GET with the redis crate.
async fn redis_round_trip(socket: Socket, key: &str) -> String {
    let info = redis::RedisConnectionInfo::default();
    let (mut connection, driver) = redis::aio::MultiplexedConnection::new(&info, socket)
        .await
        .unwrap();
    tokio::spawn(driver);
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(format!("value of {key}"))
        .query_async(&mut connection)
        .await
        .unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap()
}

async fn http_get(socket: Socket, path: &str) -> (u16, Vec<u8>) {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

#[tokio::test]
async fn connect_sock_reaches_redis_and_http_the_same_way_on_both_machines() {
    let Some(sshd) = Sshd::start() else { return };
    let Some((_redis, redis_port)) = redis(None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_http, http_port) = http_server(dir.path());
    let remote = sshd.machine().await;

    let through_ssh = redis_round_trip(remote.connect_sock(redis_port).await.unwrap(), "ssh").await;
    assert_eq!(through_ssh, "value of ssh");
    let direct = redis_round_trip(local().connect_sock(redis_port).await.unwrap(), "local").await;
    assert_eq!(direct, "value of local");

    let (status, body) =
        http_get(remote.connect_sock(http_port).await.unwrap(), "/hello.txt").await;
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"hello through ssh\n"[..])
    );
    let (status, _) = http_get(
        remote
            .connect_sock_to("localhost", http_port)
            .await
            .unwrap(),
        "/missing",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn half_close_sends_end_of_file_and_still_reads_the_answer() {
    let Some(sshd) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_http, http_port) = http_server(dir.path());
    let remote = sshd.machine().await;
    let mut socket = remote.connect_sock(http_port).await.unwrap();
    socket
        .write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    socket.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer))
        .await
        .expect("end of file arrives")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.ends_with("hello through ssh\n"), "{text}");
}

#[tokio::test]
async fn a_closed_port_is_a_clear_error() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let port = free_port();
    let error = remote.connect_sock(port).await.unwrap_err();
    let Error::ChannelRefused {
        refusal, target, ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!(refusal, &Some(ChannelRefusal::ConnectFailed), "{error}");
    assert_eq!(refusal.map(ChannelRefusal::code), Some(2));
    assert_eq!(
        target.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    let text = error.to_string();
    assert!(
        text.contains(&format!("cannot reach 127.0.0.1:{port} from there")),
        "{text}"
    );
    // A sentence, not the protocol's enum name.
    assert!(text.contains("nothing listens there"), "{text}");
    assert!(!text.contains("ConnectFailed"), "{text}");
    // The connection is fine afterwards.
    assert_eq!(remote.cmd("echo").arg("ok").read().await.unwrap(), "ok");
}

#[tokio::test]
async fn unix_sockets_are_reached_with_streamlocal_forwarding() {
    let Some(sshd) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The test user must reach the socket's directory.
    let socket_dir = dir.path().join("sock");
    std::fs::create_dir(&socket_dir).unwrap();
    Command::new("chmod")
        .args(["0777"])
        .arg(dir.path())
        .arg(&socket_dir)
        .status()
        .unwrap();
    let path = socket_dir.join("redis.sock");
    let Some((_redis, _)) = redis(Some(&path)) else {
        return;
    };
    for _ in 0..200 {
        if path.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let remote = sshd.machine().await;
    let value = redis_round_trip(remote.connect_unix(&path).await.unwrap(), "unix").await;
    assert_eq!(value, "value of unix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_serves_clients_that_only_know_host_and_port() {
    let Some(sshd) = Sshd::start() else { return };
    let Some((_redis, redis_port)) = redis(None) else {
        return;
    };
    let remote = sshd.machine().await;
    let tunnel = remote.tunnel(0, redis_port).await.unwrap();
    let address = tunnel.local_addr();
    assert_ne!(address.port(), 0);
    let client = redis::Client::open(format!("redis://{address}/")).unwrap();
    // 50 connections at once, each its own channel.
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut connection = client.get_multiplexed_async_connection().await.unwrap();
                let key = format!("key-{i}");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                let value: i32 = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                value
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert_eq!(client.await.unwrap(), i as i32);
    }
    drop(tunnel);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener stopped"
    );
}

#[tokio::test]
async fn a_reverse_tunnel_lets_the_remote_side_reach_a_local_service() {
    let Some(sshd) = Sshd::start() else { return };
    let Some((_redis, redis_port)) = redis(None) else {
        return;
    };
    let remote = sshd.machine().await;
    let reverse = remote
        .reverse_tunnel(0, ([127, 0, 0, 1], redis_port).into())
        .await
        .unwrap();
    let port = reverse.remote_port();
    assert_ne!(port, 0, "the server chose a port");
    let pong = remote
        .cmd("redis-cli")
        .args(["-p", &port.to_string(), "PING"])
        .read()
        .await
        .unwrap();
    assert_eq!(pong, "PONG");
    drop(reverse);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = remote
        .cmd("redis-cli")
        .args(["-p", &port.to_string(), "PING"])
        .unchecked()
        .output()
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&after.stdout).contains("PONG"),
        "the forward was cancelled"
    );
}

#[tokio::test]
async fn a_jump_host_carries_the_session_to_the_service() {
    let Some(sshd) = Sshd::start() else { return };
    let Some((_redis, redis_port)) = redis(None) else {
        return;
    };
    let bastion = sshd.machine().await;
    // Two hops: through the bastion's direct-tcpip channel to the same sshd, then to redis.
    let inner = SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key)
        .known_hosts(&sshd.known_hosts)
        .ssh_config(None)
        .jump(&bastion)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        inner
            .cmd("echo")
            .arg("via the bastion")
            .read()
            .await
            .unwrap(),
        "via the bastion"
    );
    let value = redis_round_trip(inner.connect_sock(redis_port).await.unwrap(), "jump").await;
    assert_eq!(value, "value of jump");
}

/// `socat` serving `what` on a fresh port (each connection gets its own), or `None` where
/// socat is not installed; CI installs it. socat's default 8 KiB block stays below a pipe's
/// capacity: a larger one deadlocks socat itself on `PIPE` and `EXEC:cat` (it writes a block
/// the other side cannot take while it is not reading).
fn socat(what: &str) -> Option<(Service, u16)> {
    if !Path::new("/usr/bin/socat").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "socat is missing: apt-get install socat"
        );
        eprintln!("skipped: socat not found");
        return None;
    }
    let port = free_port();
    let listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork");
    let child = Command::new("socat").args([&listen, what]).spawn().unwrap();
    wait_for_port(port);
    Some((Service(child), port))
}

/// Byte `i` of the test stream: not a short period, so a lost or repeated block shows.
fn pattern(offset: u64, buffer: &mut [u8]) {
    for (i, byte) in buffer.iter_mut().enumerate() {
        let n = offset + i as u64;
        *byte = (n ^ (n >> 11) ^ (n >> 23)) as u8;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_each_way_through_one_tunnel_arrives_intact() {
    use sha2::{Digest, Sha256};
    let Some(sshd) = Sshd::start() else { return };
    let Some((_echo, echo_port)) = socat("EXEC:cat") else {
        return;
    };
    let remote = sshd.machine().await;
    let tunnel = remote.tunnel(0, echo_port).await.unwrap();
    let stream = tokio::net::TcpStream::connect(tunnel.local_addr())
        .await
        .unwrap();
    let (mut from, mut to) = stream.into_split();
    const TOTAL: u64 = 1 << 30;
    let writer = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut chunk = vec![0; 1 << 20];
        let mut sent = 0;
        while sent < TOTAL {
            pattern(sent, &mut chunk);
            hash.update(&chunk);
            to.write_all(&chunk).await.unwrap();
            sent += chunk.len() as u64;
        }
        to.shutdown().await.unwrap();
        hash.finalize()
    });
    let mut hash = Sha256::new();
    let mut received = 0u64;
    let mut chunk = vec![0; 1 << 20];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), from.read(&mut chunk))
            .await
            .expect("no stall")
            .unwrap();
        if n == 0 {
            break;
        }
        hash.update(&chunk[..n]);
        received += n as u64;
    }
    assert_eq!(received, TOTAL);
    assert_eq!(
        hash.finalize(),
        writer.await.unwrap(),
        "the bytes came back different"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_a_fast_service_keeps_memory_bounded_and_gets_every_byte() {
    let Some(sshd) = Sshd::start() else { return };
    // A service that sends 256 MiB as fast as it can, then closes.
    let Some((_zeros, port)) = socat("SYSTEM:head -c 268435456 /dev/zero") else {
        return;
    };
    let remote = sshd.machine().await;
    let before = resident_bytes();
    let mut socket = remote.connect_sock(port).await.unwrap();
    let mut chunk = vec![0; 1 << 20];
    for _ in 0..20 {
        socket.read_exact(&mut chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "memory grew by {} MiB", grown >> 20);
    let mut rest = 0u64;
    loop {
        let n = socket.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        rest += n as u64;
    }
    assert_eq!(rest + (20 << 20), 256 << 20, "every byte, then end of file");
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

/// How long any single step of the fault tests may take before it counts as a hang. Not a
/// benchmark: the steps take milliseconds; this only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test (naming `what`) if it has not finished within [`HANG`].
async fn finishes<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {HANG:?}"))
}

/// The bytes a test service sends: [`pattern`] from offset 0.
fn pattern_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    pattern(0, &mut bytes);
    bytes
}

/// A service on 127.0.0.1 (the remote loopback: sshd runs on this machine) that, for each
/// connection, waits for the first bytes of a request, sends `len` bytes of [`pattern`],
/// sends end of file, and then goes away without reading the rest of the request (its
/// close is a reset while the client is still sending). Each time a connection is gone, a
/// message comes out of the receiver.
async fn closes_mid_stream(len: usize) -> (u16, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (gone, gone_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let gone = gone.clone();
            tokio::spawn(async move {
                let mut first = [0; 1];
                if stream.read_exact(&mut first).await.is_err() {
                    return;
                }
                let _ = stream.write_all(&pattern_bytes(len)).await;
                let _ = stream.shutdown().await;
                // The reset drops what sshd has not acknowledged: wait until it has it all.
                while unacknowledged(&stream) > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let _ = stream.set_zero_linger();
                drop(stream);
                let _ = gone.send(());
            });
        }
    });
    (port, gone_rx)
}

/// Bytes (and the end of file) sent on `stream` that the peer has not acknowledged.
fn unacknowledged(stream: &tokio::net::TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ on a socket writes one int through a pointer to a live c_int.
    let result = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(result, 0, "TIOCOUTQ");
    queued
}

/// Waits until the service has gone, and a moment more for sshd to close the channel: the
/// client below reads only then, as a slow client would.
async fn after_the_service_went(gone: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    finishes("the service closing", gone.recv()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Writes to `to` until a write fails, and returns that error.
async fn write_until_error(mut to: impl tokio::io::AsyncWrite + Unpin) -> std::io::Error {
    let chunk = vec![7; 64 * 1024];
    loop {
        if let Err(error) = to.write_all(&chunk).await {
            return error;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_closes_mid_stream_gives_every_byte_then_the_end() {
    let Some(sshd) = Sshd::start() else { return };
    // More than a channel window, and more than the client's and the tunnel's socket
    // buffers hold: a slow client still has bytes to take when the channel closes.
    const LEN: usize = (24 << 20) + 17;
    let (port, mut gone) = closes_mid_stream(LEN).await;
    let remote = sshd.machine().await;

    // connect_sock: the client keeps sending while the service closes.
    let socket = remote.connect_sock(port).await.unwrap();
    let (mut from, to) = tokio::io::split(socket);
    let writer = tokio::spawn(write_until_error(to));
    after_the_service_went(&mut gone).await;
    let mut received = Vec::new();
    finishes(
        "reading a socket whose service closed",
        from.read_to_end(&mut received),
    )
    .await
    .expect("the service's end of file reads as the end, not an error");
    assert_eq!(received.len(), LEN, "every byte sent, no more");
    assert!(received == pattern_bytes(LEN), "the bytes differ");
    // The service is gone: writing fails instead of waiting for a window that never comes.
    let error = finishes("writing to a socket whose service closed", writer)
        .await
        .unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");

    // The same through a tunnel, twice on one tunnel: a service going away ends only its
    // own connection.
    let tunnel = remote.tunnel(0, port).await.unwrap();
    for _ in 0..2 {
        let stream = tokio::net::TcpStream::connect(tunnel.local_addr())
            .await
            .unwrap();
        let (mut from, to) = stream.into_split();
        let writer = tokio::spawn(write_until_error(to));
        after_the_service_went(&mut gone).await;
        let mut received = Vec::new();
        finishes(
            "reading a tunnel whose service closed",
            from.read_to_end(&mut received),
        )
        .await
        .expect("the end of file, not an error");
        assert_eq!(
            received.len(),
            LEN,
            "every byte sent through the tunnel, no more"
        );
        assert!(received == pattern_bytes(LEN), "the bytes differ");
        finishes("writing to a tunnel whose service closed", writer)
            .await
            .unwrap();
    }
}

/// A service on 127.0.0.1 that greets each connection with `hello\n`, then holds it open
/// and never reads.
async fn greets_and_holds() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"hello\n").await;
            held.push(stream);
        }
    });
    port
}

/// `sshd`'s host key listed for `proxy`'s address, so a client can reach sshd through it.
fn known_hosts_through(sshd: &Sshd, proxy: &FaultProxy, dir: &Path) -> std::path::PathBuf {
    let line = std::fs::read_to_string(&sshd.known_hosts).unwrap().replace(
        &format!("[127.0.0.1]:{}", sshd.port),
        &format!("[127.0.0.1]:{}", proxy.addr().port()),
    );
    let path = dir.join("known_hosts");
    std::fs::write(&path, line).unwrap();
    path
}

async fn connect_through(sshd: &Sshd, proxy: &FaultProxy, dir: &Path) -> SshMachine {
    sshd.builder(&sshd.user)
        .port(proxy.addr().port())
        .known_hosts(known_hosts_through(sshd, proxy, dir))
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_connection_dies_open_sockets_and_tunnels_end() {
    let Some(sshd) = Sshd::start() else { return };
    let proxy = FaultProxy::start(([127, 0, 0, 1], sshd.port).into()).await;
    let dir = tempfile::tempdir().unwrap();
    let remote = connect_through(&sshd, &proxy, dir.path()).await;
    let port = greets_and_holds().await;

    // A socket, read to its greeting.
    let mut socket = remote.connect_sock(port).await.unwrap();
    let mut hello = [0; 6];
    socket.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    // A socket whose writer waits for window: the service never reads, so the channel's
    // window runs out.
    let blocked = remote.connect_sock(port).await.unwrap();
    let writer = tokio::spawn(write_until_error(blocked));
    // A tunnel with a connection open through it.
    let tunnel = remote.tunnel(0, port).await.unwrap();
    let address = tunnel.local_addr();
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    client.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    // Long enough for the writer to fill the window and wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "the writer waits for window");

    proxy.cut();

    let read = finishes(
        "reading a socket of a dead connection",
        socket.read(&mut hello),
    )
    .await;
    let error = read.expect_err("a lost connection is not an end of file");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted,
        "{error}"
    );
    let written = finishes(
        "writing a socket of a dead connection",
        socket.write_all(b"x"),
    )
    .await;
    assert!(
        written.is_err(),
        "writing after the connection died succeeded"
    );
    let error = finishes("a writer waiting for window on a dead connection", writer)
        .await
        .unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    // The tunnel's open connection ends (end of file or reset)...
    let read = finishes(
        "reading a tunnel of a dead connection",
        client.read(&mut hello),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // ... and its listener stops: a new connection is refused, or closed at once.
    finishes("the tunnel's listener stopping", async {
        loop {
            match tokio::net::TcpStream::connect(address).await {
                Err(_) => break,
                Ok(mut late) => {
                    let read = late.read(&mut hello).await;
                    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let error = remote.cmd("true").run().await.unwrap_err();
    assert!(matches!(error, Error::ConnectionLost { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_connection_dies_reverse_tunnel_connections_end() {
    let Some(sshd) = Sshd::start() else { return };
    let proxy = FaultProxy::start(([127, 0, 0, 1], sshd.port).into()).await;
    let dir = tempfile::tempdir().unwrap();
    let remote = connect_through(&sshd, &proxy, dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reverse = remote
        .reverse_tunnel(0, listener.local_addr().unwrap())
        .await
        .unwrap();
    // A remote client that connects to the forwarded port and holds the connection.
    let hold = format!(
        "import socket, time; s = socket.create_connection(('127.0.0.1', {})); \
         s.sendall(b'from there\\n'); time.sleep(60)",
        reverse.remote_port()
    );
    let _client = remote
        .cmd("python3")
        .args(["-c", &hold])
        .spawn()
        .await
        .unwrap();
    let (mut accepted, _) = finishes("the forwarded connection", listener.accept())
        .await
        .unwrap();
    let mut greeting = [0; 11];
    accepted.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"from there\n");

    proxy.cut();

    let mut byte = [0; 1];
    let read = finishes(
        "a forwarded connection of a dead connection",
        accepted.read(&mut byte),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_socket_closes_the_services_connection() {
    let Some(sshd) = Sshd::start() else { return };
    // A service that greets, then reads until its client is gone, and reports what it read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let report = report.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(b"hello\n").await;
                let mut got = Vec::new();
                let _ = stream.read_to_end(&mut got).await;
                let _ = report.send(got);
            });
        }
    });
    let remote = sshd.machine().await;
    for _ in 0..3 {
        let mut socket = remote.connect_sock(port).await.unwrap();
        let mut hello = [0; 6];
        socket.read_exact(&mut hello).await.unwrap();
        socket.write_all(b"bye").await.unwrap();
        socket.flush().await.unwrap();
        // No shutdown: dropping is how most code ends a connection.
        drop(socket);
        let got = finishes("the service seeing its client go", reports.recv()).await;
        assert_eq!(got.unwrap(), b"bye", "what the client wrote, then the end");
    }
    // The connection is fine afterwards.
    assert_eq!(remote.cmd("echo").arg("ok").read().await.unwrap(), "ok");
}
