//! `TestServer` (from the `leadpipe-test-server` crate) with leadpipe's `SshMachine` and
//! with russh's client directly, and that crate's `FaultProxy` in front of it: cut and
//! frozen connections must fail calls with `Error::ConnectionLost`, promptly.

mod support;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use leadpipe::{Error, ExitStatus, Signal, SshBuilder, SshMachine};
use leadpipe_test_server::{FaultProxy, TestServer};
use russh::{
    ChannelMsg,
    client::{self, AuthResult},
    keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate},
};
use support::read_pid;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Waits (off the runtime's threads) for a process to be gone or a zombie.
async fn gone(pid: u32) -> bool {
    tokio::task::spawn_blocking(move || support::wait_gone(pid))
        .await
        .unwrap()
}

async fn read_pid_file(path: &Path) -> u32 {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || read_pid(&path))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_commands_pipelines_and_here_strings() -> TestResult {
    let server = TestServer::start().await?;
    let remote = server.connect().await?;
    assert_eq!(
        remote.name(),
        format!("{}@127.0.0.1:{}", server.user(), server.port())
    );
    assert_eq!(
        remote.cmd("echo").arg("hello,  world").read().await?,
        "hello,  world"
    );
    let sorted = (remote.cmd("printf").arg("pear\\napple\\nfig\\n") | remote.cmd("sort"))
        .read()
        .await?;
    assert_eq!(sorted, "apple\nfig\npear");
    let upper = (remote.cmd("tr").args(["a-z", "A-Z"]) << "it's $HOME")
        .read()
        .await?;
    assert_eq!(upper, "IT'S $HOME");
    // More than the channel windows both ways (2 MiB server side), through a command that
    // writes while it reads.
    let big: Vec<u8> = (0..6 << 20).map(|i| (i % 251) as u8).collect();
    let echoed = (remote.cmd("cat") << big.clone()).read_bytes().await?;
    assert!(echoed == big, "cat returned {} bytes", echoed.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_exit_codes_signals_and_stderr() -> TestResult {
    let server = TestServer::start().await?;
    let remote = server.connect().await?;
    let out = remote
        .cmd("sh")
        .args(["-c", "echo out; echo err >&2; exit 3"])
        .unchecked()
        .output()
        .await?;
    assert_eq!(out.status, ExitStatus::Code(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    let error = remote
        .cmd("sh")
        .args(["-c", "echo oops >&2; exit 3"])
        .read()
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("exit code 3"), "{text}");
    assert!(text.contains("oops"), "{text}");
    assert!(text.contains(remote.name()), "{text}");
    // A single command is exec'ed by the remote line: its death is the channel's exit-signal.
    let status = remote
        .cmd("sh")
        .args(["-c", "kill -TERM $$"])
        .status()
        .await?;
    assert_eq!(status, ExitStatus::Signal(Signal::TERM));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_the_process_group() -> TestResult {
    let server = TestServer::start().await?;
    let remote = server.connect().await?;
    let dir = tempfile::tempdir()?;
    let pids = dir.path().join("pids");
    let mut child = remote
        .cmd("sh")
        .args(["-c", "sleep 30 & echo $! > \"$1\"; wait", "sh"])
        .arg(&pids)
        .spawn()
        .await?;
    let grandchild = read_pid_file(&pids).await;
    child.signal(Signal::TERM)?;
    let error = child.wait().await.unwrap_err();
    assert!(error.to_string().contains("SIGTERM"), "{error}");
    assert!(
        gone(grandchild).await,
        "sleep {grandchild} survived SIGTERM"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_leaves_nothing_running() -> TestResult {
    let server = TestServer::start().await?;
    let remote = server.connect().await?;
    let dir = tempfile::tempdir()?;
    let (shell, sleeper) = (dir.path().join("shell"), dir.path().join("sleeper"));
    let started = Instant::now();
    let error = remote
        .cmd("sh")
        .args([
            "-c",
            "echo $$ > \"$1\"; sleep 30 & echo $! > \"$2\"; wait",
            "sh",
        ])
        .arg(&shell)
        .arg(&sleeper)
        .timeout(Duration::from_millis(500))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    for pid in [read_pid_file(&shell).await, read_pid_file(&sleeper).await] {
        assert!(gone(pid).await, "pid {pid} still runs after the timeout");
    }
    // The connection is still good.
    assert_eq!(remote.cmd("echo").arg("after").read().await?, "after");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_bounds_the_call_when_the_server_stops_answering() -> TestResult {
    let server = TestServer::start().await?;
    // Keepalive at its default (10 s x 3): the timeouts must not depend on it.
    let remote = server.connect().await?;
    let running = tokio::spawn({
        let remote = remote.clone();
        async move {
            remote
                .cmd("sleep")
                .arg("30")
                .timeout(Duration::from_millis(800))
                .run()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.freeze();
    let frozen_at = Instant::now();
    let running = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .map_err(
            |_| "a call running when the server froze (timeout 0.8 s) still ran 5 s later",
        )??;
    assert!(matches!(running, Err(Error::Timeout { .. })), "{running:?}");
    let started = tokio::time::timeout(
        Duration::from_secs(5),
        remote.cmd("true").timeout(Duration::from_millis(500)).run(),
    )
    .await
    .map_err(|_| "a call started on the frozen server (timeout 0.5 s) still ran 5 s later")?;
    assert!(matches!(started, Err(Error::Timeout { .. })), "{started:?}");
    assert!(frozen_at.elapsed() < Duration::from_secs(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_remote_childs_stdin_ends_its_input() -> TestResult {
    let server = TestServer::start().await?;
    let remote = server.connect().await?;
    let mut child = remote.cmd("cat").spawn().await?;
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"to cat").await?;
    drop(stdin);
    let mut echoed = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stdout.read_to_end(&mut echoed))
        .await
        .map_err(|_| "cat got no EOF after its stdin was dropped")??;
    assert_eq!(echoed, b"to cat");
    child.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_and_a_strict_host_key_check() -> TestResult {
    let server = TestServer::start_with_password("open sesame").await?;
    let by_password = SshMachine::builder("127.0.0.1")
        .port(server.port())
        .user(server.user())
        .password("open sesame")
        .known_hosts(server.known_hosts_file())
        .ssh_config(None)
        .connect()
        .await?;
    assert_eq!(by_password.cmd("echo").arg("in").read().await?, "in");

    let wrong = SshMachine::builder("127.0.0.1")
        .port(server.port())
        .password("guess")
        .known_hosts(server.known_hosts_file())
        .ssh_config(None)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Auth { .. }), "{wrong}");

    // Another server's key for this address: refused under the Strict policy.
    let other = TestServer::start().await?;
    let dir = tempfile::tempdir()?;
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("{}\n", other.known_hosts_line_for(server.addr())),
    )?;
    let refused = SshMachine::builder("127.0.0.1")
        .port(server.port())
        .identity_file(server.identity_file())
        .known_hosts(&known_hosts)
        .ssh_config(None)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::HostKey { .. }), "{refused}");
    Ok(())
}

/// russh's client, checking the host key against the TestServer's known_hosts line.
struct Client {
    host_key: PublicKey,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        Ok(matches!(key, PublicKeyOrCertificate::PublicKey { key, .. }
            if key.key_data() == self.host_key.key_data()))
    }
}

async fn russh_client(server: &TestServer) -> client::Handle<Client> {
    let (_, key) = server.known_hosts_line().split_once(' ').unwrap();
    let host_key = PublicKey::from_openssh(key).unwrap();
    let mut handle = client::connect(
        Arc::new(client::Config::default()),
        server.addr(),
        Client { host_key },
    )
    .await
    .unwrap();
    let key = russh::keys::load_secret_key(server.identity_file(), None).unwrap();
    let auth = handle
        .authenticate_publickey(
            server.user(),
            PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await
        .unwrap();
    assert!(matches!(auth, AuthResult::Success));
    handle
}

/// The next reply to a channel request (`Success` or `Failure`).
async fn reply(channel: &mut russh::Channel<client::Msg>) -> ChannelMsg {
    loop {
        let message = channel.wait().await.expect("the channel ended");
        if matches!(message, ChannelMsg::Success | ChannelMsg::Failure) {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_channel_protocol() -> TestResult {
    let server = TestServer::start().await?;
    let ssh = russh_client(&server).await;
    let mut channel = ssh.channel_open_session().await?;
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await?;
    assert!(matches!(reply(&mut channel).await, ChannelMsg::Success));
    channel.request_shell(true).await?;
    assert!(matches!(reply(&mut channel).await, ChannelMsg::Failure));
    channel.request_subsystem(true, "no-such-subsystem").await?;
    assert!(matches!(reply(&mut channel).await, ChannelMsg::Failure));
    channel
        .exec(true, "printf out; printf err >&2; head -c 3; exit 7")
        .await?;
    assert!(matches!(reply(&mut channel).await, ChannelMsg::Success));
    channel.data(&b"input"[..]).await?;
    channel.eof().await?;
    // Everything the command wrote, then its status, then EOF, then close.
    let (mut stdout, mut stderr, mut after) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } if after.is_empty() => stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } if after.is_empty() => {
                stderr.extend_from_slice(&data)
            }
            ChannelMsg::ExitStatus { exit_status } => after.push(format!("status {exit_status}")),
            ChannelMsg::Eof => after.push("eof".into()),
            ChannelMsg::Close => {
                after.push("close".into());
                break;
            }
            other => after.push(format!("{other:?}")),
        }
    }
    assert_eq!(stdout, b"outinp");
    assert_eq!(stderr, b"err");
    assert_eq!(after, ["status 7", "eof", "close"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tcpip_copies_both_ways_with_half_close() -> TestResult {
    let server = TestServer::start().await?;
    // An echo server that answers until EOF, then closes its side.
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_port = echo.local_addr()?.port();
    let echo_task = tokio::spawn(async move {
        let (mut socket, _) = echo.accept().await.unwrap();
        let (mut read, mut write) = socket.split();
        let copied = tokio::io::copy(&mut read, &mut write).await.unwrap();
        write.shutdown().await.unwrap();
        copied
    });
    let ssh = russh_client(&server).await;
    let channel = ssh
        .channel_open_direct_tcpip("127.0.0.1", u32::from(echo_port), "127.0.0.1", 0)
        .await?;
    let (mut read, write) = channel.split();
    let sent: Vec<u8> = (0..3 << 20).map(|i| (i % 253) as u8).collect();
    let writer = tokio::spawn({
        let sent = sent.clone();
        async move {
            write.data(&sent[..]).await.unwrap();
            write.eof().await.unwrap();
            write
        }
    });
    let (mut received, mut eof, mut closed) = (Vec::new(), false, false);
    while let Some(message) = read.wait().await {
        match message {
            ChannelMsg::Data { data } => received.extend_from_slice(&data),
            ChannelMsg::Eof => eof = true,
            ChannelMsg::Close => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    let _write = writer.await?;
    assert!(
        received == sent,
        "echoed {} of {} bytes",
        received.len(),
        sent.len()
    );
    assert!(eof && closed, "eof {eof}, close {closed}");
    // The target saw our EOF: its copy ended with everything.
    assert_eq!(echo_task.await?, sent.len() as u64);

    // A port nobody listens on: the channel is refused.
    let closed_port = {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        listener.local_addr()?.port()
    };
    let refused = ssh
        .channel_open_direct_tcpip("127.0.0.1", u32::from(closed_port), "127.0.0.1", 0)
        .await;
    assert!(
        matches!(
            refused,
            Err(russh::Error::ChannelOpenFailure(
                russh::ChannelOpenFailure::ConnectFailed
            ))
        ),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_knobs_fail_calls_with_connection_lost() -> TestResult {
    let server = TestServer::start().await?;

    let remote = server.connect().await?;
    let call = tokio::spawn({
        let remote = remote.clone();
        async move { remote.cmd("sleep").arg("30").run().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut_at = Instant::now();
    server.disconnect_all();
    let result = tokio::time::timeout(Duration::from_secs(5), call).await??;
    assert!(
        matches!(result, Err(Error::ConnectionLost { .. })),
        "{result:?}"
    );
    assert!(cut_at.elapsed() < Duration::from_secs(2));
    assert!(remote.is_closed());

    // The server still takes new connections; frozen, they stop answering.
    let remote = server
        .builder()
        .keepalive(Duration::from_millis(300), 3)
        .connect()
        .await?;
    assert_eq!(remote.cmd("echo").arg("ok").read().await?, "ok");
    server.freeze();
    let frozen_at = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), remote.cmd("true").run()).await?;
    assert!(
        matches!(result, Err(Error::ConnectionLost { .. })),
        "{result:?}"
    );
    assert!(frozen_at.elapsed() < Duration::from_secs(5));

    // A freeze shorter than the keepalive window is survived.
    server.thaw();
    let remote = server
        .builder()
        .keepalive(Duration::from_secs(2), 3)
        .connect()
        .await?;
    server.freeze();
    let call = tokio::spawn({
        let remote = remote.clone();
        async move { remote.cmd("echo").arg("later").read().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.thaw();
    assert_eq!(call.await??, "later");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_kills_commands_and_ends_its_tasks() -> TestResult {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    let server = TestServer::start().await?;
    let remote = server.connect().await?;
    let dir = tempfile::tempdir()?;
    let pid_file = dir.path().join("pid");
    let call = tokio::spawn({
        let remote = remote.clone();
        let pid_file = pid_file.clone();
        async move {
            remote
                .cmd("sh")
                .args(["-c", "echo $$ > \"$1\"; exec sleep 30", "sh"])
                .arg(&pid_file)
                .run()
                .await
        }
    });
    let pid = read_pid_file(&pid_file).await;
    let key_file = server.identity_file();
    drop(server);
    if !gone(pid).await {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let me = std::process::id();
        panic!("sleep {pid} survived the server; stat {stat}; test pid {me}");
    }
    let result = tokio::time::timeout(Duration::from_secs(5), call).await??;
    assert!(
        matches!(result, Err(Error::ConnectionLost { .. })),
        "{result:?}"
    );
    assert!(!key_file.exists(), "{} is left", key_file.display());
    drop(remote);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks() > before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tasks(), before, "tasks left running");
    Ok(())
}

/// A builder for `server` reached through `proxy` (its host key listed for the proxy's
/// address in a known_hosts file under `dir`).
fn through(server: &TestServer, proxy: &FaultProxy, dir: &Path) -> SshBuilder {
    let known_hosts = dir.join("proxy_known_hosts");
    std::fs::write(
        &known_hosts,
        format!("{}\n", server.known_hosts_line_for(proxy.addr())),
    )
    .unwrap();
    server
        .builder()
        .port(proxy.addr().port())
        .known_hosts(known_hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_cut_fails_a_running_call_promptly() -> TestResult {
    let server = TestServer::start().await?;
    let proxy = FaultProxy::start(server.addr()).await;
    let dir = tempfile::tempdir()?;
    // Keepalive at its default (10 s): a cut must be noticed long before.
    let remote = through(&server, &proxy, dir.path()).connect().await?;
    assert_eq!(
        remote.cmd("echo").arg("via proxy").read().await?,
        "via proxy"
    );
    let call = tokio::spawn({
        let remote = remote.clone();
        async move { remote.cmd("sleep").arg("30").run().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut_at = Instant::now();
    proxy.cut();
    let result = tokio::time::timeout(Duration::from_secs(5), call).await??;
    assert!(
        matches!(result, Err(Error::ConnectionLost { .. })),
        "{result:?}"
    );
    assert!(
        cut_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        cut_at.elapsed()
    );
    // The proxy itself still works for new connections.
    let again = through(&server, &proxy, dir.path()).connect().await?;
    assert_eq!(again.cmd("echo").arg("again").read().await?, "again");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_proxy_freeze_fails_calls_after_the_keepalives() -> TestResult {
    let server = TestServer::start().await?;
    let proxy = FaultProxy::start(server.addr()).await;
    let dir = tempfile::tempdir()?;
    let remote = through(&server, &proxy, dir.path())
        .keepalive(Duration::from_millis(300), 3)
        .connect()
        .await?;
    assert_eq!(remote.cmd("echo").arg("ok").read().await?, "ok");
    let running = tokio::spawn({
        let remote = remote.clone();
        async move { remote.cmd("sleep").arg("30").run().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.freeze();
    let frozen_at = Instant::now();
    // One call that was running, one started after the freeze.
    let started = tokio::time::timeout(Duration::from_secs(10), remote.cmd("true").run()).await?;
    let running = tokio::time::timeout(Duration::from_secs(10), running).await??;
    for result in [started, running] {
        assert!(
            matches!(result, Err(Error::ConnectionLost { .. })),
            "{result:?}"
        );
    }
    assert!(
        frozen_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        frozen_at.elapsed()
    );
    Ok(())
}

/// The limit of the timeout tests, and how much later than it a timed-out call may
/// return: leadpipe waits at most 0.5 s for the killed job to be reaped (the kill needs a
/// server that may have stopped answering), plus scheduling on a loaded test machine.
const LIMIT: Duration = Duration::from_millis(500);
const BOUND: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(300);

/// Awaits `call` (cut off at 10 s), which must end in `Error::Timeout` within
/// `LIMIT + BOUND` of `since` (with `SLACK`); returns how long after `since` it ended.
async fn times_out<T: std::fmt::Debug>(
    what: &str,
    since: Instant,
    call: impl Future<Output = Result<T, Error>>,
) -> Duration {
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what} (timeout {LIMIT:?}) still ran 10 s later"));
    let took = since.elapsed();
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "{what}: {result:?}"
    );
    assert!(
        took < LIMIT + BOUND + SLACK,
        "{what} returned {took:?} after it started (limit {LIMIT:?})"
    );
    eprintln!("{what}: Error::Timeout after {took:?}");
    took
}

/// The first item of a `lines()` stream that is an error, or the end of the stream.
async fn first_error(mut lines: leadpipe::Lines) -> Result<(), Error> {
    use futures::StreamExt;
    while let Some(line) = lines.next().await {
        line?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_times_out_within_its_limit_when_the_server_stops_answering() -> TestResult {
    let server = TestServer::start().await?;
    // Keepalive at its default (10 s x 3): the timeouts must not depend on it.
    let remote = server.connect().await?;
    let sleep = || remote.cmd("sleep").arg("30").timeout(LIMIT);

    // Calls running when the server froze.
    let since = Instant::now();
    let read = tokio::spawn({
        let c = sleep();
        async move { c.read().await }
    });
    let output = tokio::spawn({
        let c = sleep();
        async move { c.output().await }
    });
    let lines = tokio::spawn(first_error(sleep().lines()));
    let mut child = sleep().spawn().await?;
    let wait = tokio::spawn(async move { child.wait().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.freeze();
    times_out("read() running at the freeze", since, async {
        read.await.unwrap()
    })
    .await;
    times_out("output() running at the freeze", since, async {
        output.await.unwrap()
    })
    .await;
    times_out("lines() running at the freeze", since, async {
        lines.await.unwrap()
    })
    .await;
    times_out("Child::wait() running at the freeze", since, async {
        wait.await.unwrap()
    })
    .await;

    // Calls started on the frozen server: the start itself waits for the server.
    let since = Instant::now();
    times_out("read() started frozen", since, async {
        sleep().read().await
    })
    .await;
    let since = Instant::now();
    times_out("output() started frozen", since, async {
        sleep().output().await
    })
    .await;
    let since = Instant::now();
    times_out(
        "lines() started frozen",
        since,
        first_error(sleep().lines()),
    )
    .await;
    let since = Instant::now();
    times_out("spawn() started frozen", since, async {
        sleep().spawn().await
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_a_channel_times_out_within_its_limit() -> TestResult {
    let server = TestServer::start().await?;
    // One slot for commands (the other is kept for kills), held by a long command.
    let remote = server.builder().max_channels(2).connect().await?;
    let holder = remote.cmd("sleep").arg("30").spawn().await?;
    let short = || remote.cmd("true").timeout(LIMIT);
    let since = Instant::now();
    times_out(
        "lines() waiting for a channel",
        since,
        first_error(short().lines()),
    )
    .await;
    let since = Instant::now();
    times_out("read() waiting for a channel", since, async {
        short().read().await
    })
    .await;
    let since = Instant::now();
    times_out("spawn() waiting for a channel", since, async {
        short().spawn().await
    })
    .await;
    // Once the slot is free again, calls run.
    drop(holder);
    let after = tokio::time::timeout(
        Duration::from_secs(5),
        remote.cmd("echo").arg("after").read(),
    )
    .await
    .map_err(|_| "no channel 5 s after the holder was dropped")??;
    assert_eq!(after, "after");
    Ok(())
}
