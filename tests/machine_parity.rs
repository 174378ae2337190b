//! One test body, written once against the `Machine` trait, run on the local machine and on
//! a real sshd: the two machines answer every shared call alike.

mod support;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use leadpipe::{Error, Machine, Socket, local};
use support::sshd::Sshd;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, UnixListener},
};

/// Answers a connection with `echo:` and what it read.
async fn echo(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut request = Vec::new();
    stream.read_to_end(&mut request).await.unwrap();
    stream.write_all(b"echo:").await.unwrap();
    stream.write_all(&request).await.unwrap();
}

/// An echo service on this host's loopback. sshd runs on this host too, so the remote
/// machine's loopback reaches it.
async fn echo_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    port
}

/// An echo service on a Unix socket any user may reach (sshd's user may not be this one).
async fn echo_unix_service() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let open = std::fs::Permissions::from_mode(0o777);
    std::fs::set_permissions(dir.path(), open.clone()).unwrap();
    let path = dir.path().join("echo.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, open).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    (dir, path)
}

/// Sends `ping`, then reads the answer to its end.
async fn ping(mut socket: Socket) -> Vec<u8> {
    socket.write_all(b"ping").await.unwrap();
    socket.shutdown().await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    answer
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Everything the two machines share, checked through the trait only. `name` is what the
/// machine must call itself.
async fn parity<M: Machine>(m: M, name: String) {
    assert_eq!(m.name(), name);

    // Commands and pipelines.
    assert_eq!(
        m.cmd("printf").arg("%s").arg("a b").read().await.unwrap(),
        "a b"
    );
    let counted = (m.cmd("printf").arg("1\n2\n3\n") | m.cmd("wc").arg("-l"))
        .read()
        .await
        .unwrap();
    assert_eq!(counted.trim(), "3");
    let error = (m.cmd("false") | m.cmd("cat")).run().await.unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error}")
    };
    assert_eq!(exit.machine(), name, "{error}");
    assert_eq!(
        exit.stage().map(|(i, n, _)| (i, n)),
        Some((0, 2)),
        "{error}"
    );

    // which.
    let sh = m.which("sh").await.unwrap();
    assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
    let missing = m.which("leadpipe-no-such-program").await.unwrap_err();
    let Error::CommandNotFound { machine, .. } = &missing else {
        panic!("{missing}")
    };
    assert_eq!(machine, &name);

    // A tempdir, and views of the machine in it: paths and commands resolve alike.
    let dir = m.tempdir().await.unwrap();
    let root = dir.path().as_path().to_owned();
    let there = m.with_cwd(&root);
    assert_eq!(there.get_cwd(), Some(root.as_path()));
    assert_eq!(m.get_cwd(), None);
    there.path("sub/inner").mkdir().await.unwrap();
    there
        .path("sub/note.txt")
        .write("written by path")
        .await
        .unwrap();
    let deeper = there.with_cwd("sub");
    assert_eq!(
        deeper.cmd("cat").arg("note.txt").read().await.unwrap(),
        "written by path"
    );
    assert_eq!(
        deeper.cmd("pwd").read().await.unwrap(),
        root.join("sub").to_str().unwrap()
    );
    assert!(m.path(root.join("sub/inner")).is_dir().await.unwrap());
    // The owner, as `stat` gives it.
    let meta = there.path("sub/note.txt").metadata().await.unwrap();
    let stat = deeper.cmd("stat").args(["-c", "%u %g", "note.txt"]);
    let owner = format!("{} {}", meta.uid().unwrap(), meta.gid().unwrap());
    assert_eq!(owner, stat.read().await.unwrap());

    // with_env: on the view's commands only, views stack, the machine is unchanged.
    let env = m.with_env("LP_PARITY", "one two").with_env("LP_OTHER", "x");
    let script = "printf '%s|%s' \"$LP_PARITY\" \"${LP_OTHER-unset}\"";
    assert_eq!(
        env.cmd("sh").args(["-c", script]).read().await.unwrap(),
        "one two|x"
    );
    assert_eq!(
        m.cmd("sh").args(["-c", script]).read().await.unwrap(),
        "|unset"
    );

    // upload takes `from` in this process's directory and `to` in the view; download
    // mirrors it. (Relative `from`: the tests run in the crate's root.)
    let manifest = std::fs::read(Path::new("Cargo.toml")).unwrap();
    let copied = there.upload("Cargo.toml", "copied.toml").await.unwrap();
    assert_eq!(copied, manifest.len() as u64);
    assert_eq!(there.path("copied.toml").read().await.unwrap(), manifest);
    let back = tempfile::tempdir().unwrap();
    there
        .download("copied.toml", back.path().join("back.toml"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(back.path().join("back.toml")).unwrap(),
        manifest
    );

    // connect_sock, connect_sock_to and connect_unix reach services on the machine.
    let port = echo_service().await;
    let (_socket_dir, socket_path) = echo_unix_service().await;
    for socket in [
        m.connect_sock(port).await.unwrap(),
        m.connect_sock_to("127.0.0.1", port).await.unwrap(),
        m.connect_unix(&socket_path).await.unwrap(),
    ] {
        assert_eq!(ping(socket).await, b"echo:ping");
    }
    let closed = free_port();
    let refused = m.connect_sock(closed).await.unwrap_err();
    assert!(
        refused.to_string().contains(&format!("127.0.0.1:{closed}")),
        "{refused}"
    );

    dir.close().await.unwrap();
    assert!(!m.path(&root).exists().await.unwrap());
}

#[tokio::test]
async fn the_local_machine_through_the_trait() {
    // Spawned: the body's futures are Send for any machine type.
    tokio::spawn(parity(local(), "local".to_owned()))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_ssh_machine_through_the_trait() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let name = format!("{}@127.0.0.1:{}", sshd.user, sshd.port);
    tokio::spawn(parity(remote, name)).await.unwrap();
}
