//! Paths and files on both machines: the same checks run on a local temp directory and on a
//! remote one (SFTP through a real OpenSSH sshd), plus transfers between them.

mod support;

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use leadpipe::{
    Command, Error, FileKind, HostKeyPolicy, MachinePath, SshMachine, TempDir, Transfer, local,
};
use leadpipe_test_server::FaultProxy;
use sha2::{Digest, Sha256};
use support::sshd::Sshd;

/// Connects to `sshd`, or through a proxy in front of it at `port` (whose address
/// known_hosts does not list).
async fn connect_to(sshd: &Sshd, port: u16) -> SshMachine {
    sshd.builder(&sshd.user)
        .port(port)
        .host_key_policy(if port == sshd.port {
            HostKeyPolicy::Strict
        } else {
            HostKeyPolicy::AcceptAny
        })
        .connect()
        .await
        .unwrap()
}

/// A machine under test: where its temp directory is and how to run a command there.
struct Side {
    dir: TempDir,
    cmd: Box<dyn Fn(&str) -> Command>,
}

async fn local_side() -> Side {
    let sh = local();
    Side {
        dir: sh.tempdir().await.unwrap(),
        cmd: Box::new(move |program| sh.cmd(program)),
    }
}

async fn remote_side(remote: &SshMachine) -> Side {
    let remote = remote.clone();
    Side {
        dir: remote.tempdir().await.unwrap(),
        cmd: Box::new(move |program| remote.cmd(program)),
    }
}

fn every_byte() -> Vec<u8> {
    // Every value, every pair of neighbours, then a length that is not a round number.
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    for a in 0..=255u8 {
        for b in [0u8, 10, 13, 255] {
            bytes.extend([a, b]);
        }
    }
    bytes.extend((0..300_007u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    bytes
}

fn file_error(error: &Error) -> &leadpipe::FileError {
    match error {
        Error::File(file) => file,
        other => panic!("expected a file error, got: {other}"),
    }
}

/// The checks every machine must pass, on a fresh directory of it.
async fn check_basics(side: &Side) {
    let dir = side.dir.path();
    let bytes = every_byte();
    let file = dir / "bytes.bin";
    file.write(&bytes).await.unwrap();
    assert_eq!(file.read().await.unwrap(), bytes);
    let meta = file.metadata().await.unwrap();
    assert_eq!(
        (meta.kind(), meta.len()),
        (FileKind::File, bytes.len() as u64)
    );
    assert!(meta.modified().is_some());
    // The machine's own tools see the same bytes.
    let cat = (side.cmd)("cat").arg(&file).read_bytes().await.unwrap();
    assert_eq!(cat, bytes);

    // Replace keeps the mode; append adds.
    file.chmod(0o640).await.unwrap();
    file.write("first\n").await.unwrap();
    assert_eq!(file.metadata().await.unwrap().mode(), 0o640);
    file.append("second\n").await.unwrap();
    assert_eq!(file.read_to_string().await.unwrap(), "first\nsecond\n");
    let fresh = dir / "fresh.txt";
    fresh.append("made by append").await.unwrap();
    assert_eq!(fresh.read_to_string().await.unwrap(), "made by append");

    // Directories, existence, kinds.
    let deep = dir / "a/b/c";
    deep.mkdir().await.unwrap();
    deep.mkdir().await.unwrap();
    assert!(deep.is_dir().await.unwrap());
    assert!(!deep.is_file().await.unwrap());
    assert!(!(dir / "missing").exists().await.unwrap());
    assert!(!(dir / "missing").is_dir().await.unwrap());
    assert_eq!(
        (dir / "a").list().await.unwrap(),
        vec![dir / "a/b"],
        "list gives paths on the same machine"
    );
    // As `mkdir -p x/sub/.` and `mkdir -p ./y/./z/.`.
    (dir / "x/sub/.").mkdir().await.unwrap();
    assert!((dir / "x/sub").is_dir().await.unwrap());
    (dir / "x/sub/.").mkdir().await.unwrap();
    (dir / "./y/./z/.").mkdir().await.unwrap();
    assert!((dir / "y/z").is_dir().await.unwrap());
    let parent_is_file = file.join("sub").mkdir().await.unwrap_err();
    assert_eq!(
        file_error(&parent_is_file).kind(),
        std::io::ErrorKind::NotADirectory
    );

    // Links.
    let link = dir / "link";
    link.symlink("bytes.bin").await.unwrap();
    assert_eq!(link.read_link().await.unwrap(), PathBuf::from("bytes.bin"));
    assert!(link.symlink_metadata().await.unwrap().is_symlink());
    assert!(link.metadata().await.unwrap().is_file());
    assert_eq!(link.read_to_string().await.unwrap(), "first\nsecond\n");
    let canonical = (dir / "a/b/../../link").canonicalize().await.unwrap();
    assert_eq!(canonical, file.canonicalize().await.unwrap());
    assert!(canonical.as_path().is_absolute());

    // Rename in place, copy beside, remove.
    let renamed = fresh
        .rename(fresh.with_file_name("renamed.txt"))
        .await
        .unwrap();
    assert_eq!(renamed, dir / "renamed.txt");
    assert!(!fresh.exists().await.unwrap());
    let copied = renamed.copy_to(dir / "copied.txt").await.unwrap();
    assert_eq!(copied, "made by append".len() as u64);
    assert_eq!(
        (dir / "copied.txt").read_to_string().await.unwrap(),
        "made by append"
    );
    renamed.remove().await.unwrap();
    assert!(!renamed.exists().await.unwrap());
    let is_dir = (dir / "a").remove().await.unwrap_err();
    assert_eq!(file_error(&is_dir).kind(), std::io::ErrorKind::IsADirectory);
    (dir / "a").remove_all().await.unwrap();
    assert!(!(dir / "a").exists().await.unwrap());

    // Errors name the operation, the machine and the path.
    let missing = dir / "nope.conf";
    let error = missing.read().await.unwrap_err();
    let details = file_error(&error);
    assert_eq!(details.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(details.op(), "read");
    assert_eq!(details.path(), missing.as_path());
    assert_eq!(
        error.to_string(),
        format!(
            "cannot read {}:{}: no such file or directory",
            missing.machine(),
            missing.as_path().display()
        )
    );
    let error = dir.read().await.unwrap_err();
    assert_eq!(
        file_error(&error).kind(),
        std::io::ErrorKind::IsADirectory,
        "{error}"
    );
    let error = (dir / "bytes.bin").list().await.unwrap_err();
    assert_eq!(file_error(&error).op(), "list");
}

/// Names a shell would mangle, created, listed, read back and passed to a command.
async fn check_odd_names(side: &Side) {
    let dir = side.dir.path();
    let names = [
        "with space",
        "quote's \"both\"",
        "new\nline",
        "ünïcødé ✓",
        "-starts-with-dash",
        "*?[glob]",
        "$HOME;`x`",
        "trailing space ",
    ];
    for name in names {
        (dir / name)
            .write(format!("content of {name}"))
            .await
            .unwrap();
    }
    let mut listed: Vec<String> = dir
        .list()
        .await
        .unwrap()
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    for name in names {
        let path = dir / name;
        let through_cat = (side.cmd)("cat").arg(&path).read().await.unwrap();
        assert_eq!(through_cat, format!("content of {name}"));
        assert_eq!(
            path.read_to_string().await.unwrap(),
            format!("content of {name}")
        );
    }
}

async fn check_glob(side: &Side) {
    let dir = side.dir.path();
    for file in [
        "app.log",
        "app.log.1",
        "db.log",
        ".hidden.log",
        "src/main.rs",
        "src/lib.rs",
        "src/deep/er/mod.rs",
        "src/.git/x.rs",
        "x1.txt",
        "x2.txt",
        "xa.txt",
    ] {
        let path = dir / file;
        path.parent().unwrap().mkdir().await.unwrap();
        path.write("x").await.unwrap();
    }
    let names = |found: Vec<MachinePath>| -> Vec<String> {
        found
            .iter()
            .map(|path| {
                path.as_path()
                    .strip_prefix(dir.as_path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    assert_eq!(
        names(dir.glob("*.log").await.unwrap()),
        ["app.log", "db.log"]
    );
    assert_eq!(names(dir.glob(".*.log").await.unwrap()), [".hidden.log"]);
    assert_eq!(
        names(dir.glob("x[0-9].txt").await.unwrap()),
        ["x1.txt", "x2.txt"]
    );
    assert_eq!(names(dir.glob("x[!0-9].txt").await.unwrap()), ["xa.txt"]);
    assert_eq!(
        names(dir.glob("?pp.log*").await.unwrap()),
        ["app.log", "app.log.1"]
    );
    assert_eq!(
        names(dir.glob("**/*.rs").await.unwrap()),
        ["src/deep/er/mod.rs", "src/lib.rs", "src/main.rs"]
    );
    assert_eq!(
        names(dir.glob("src/*/*/mod.rs").await.unwrap()),
        ["src/deep/er/mod.rs"]
    );
    assert_eq!(
        names(dir.glob("src/main.rs").await.unwrap()),
        ["src/main.rs"]
    );
    assert!(dir.glob("nothing/*.rs").await.unwrap().is_empty());
    let error = dir.glob("[unclosed").await.unwrap_err();
    assert!(error.to_string().contains("unclosed ["), "{error}");
}

#[tokio::test]
async fn local_files() {
    let side = local_side().await;
    check_basics(&side).await;
    let side = local_side().await;
    check_odd_names(&side).await;
    let side = local_side().await;
    check_glob(&side).await;
}

#[tokio::test]
async fn remote_files() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let side = remote_side(&remote).await;
    check_basics(&side).await;
    let side = remote_side(&remote).await;
    check_odd_names(&side).await;
    let side = remote_side(&remote).await;
    check_glob(&side).await;
}

#[tokio::test]
async fn local_relative_paths_follow_the_view() {
    let dir = local().tempdir().await.unwrap();
    let view = local().with_cwd(dir.as_path());
    view.path("inside.txt").write("here").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("inside.txt").as_path()).unwrap(),
        "here"
    );
}

#[tokio::test]
async fn remote_relative_paths_start_at_login_or_view() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let home = remote.cmd("pwd").read().await.unwrap();
    assert_eq!(
        remote.path(".").canonicalize().await.unwrap().as_path(),
        Path::new(&home)
    );
    let dir = remote.tempdir().await.unwrap();
    let view = remote.with_cwd(dir.as_path());
    view.path("inside.txt").write("there").await.unwrap();
    assert_eq!(
        view.cmd("cat").arg("inside.txt").read().await.unwrap(),
        "there"
    );
}

/// A tree with modes, a symlink, a read-only directory and 1000 small files.
fn make_tree(root: &Path) -> u64 {
    let mut bytes = 0;
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("many/sub")).unwrap();
    std::fs::create_dir_all(root.join("locked")).unwrap();
    let mut write = |relative: &str, content: &[u8], mode: u32| {
        let path = root.join(relative);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        bytes += content.len() as u64;
    };
    write("bin/run", b"#!/bin/sh\necho ran\n", 0o755);
    write("secret", b"s3cret", 0o600);
    // Group and other may write: bits a umask of 022 would strip on creation.
    write("shared", b"for everyone", 0o666);
    write("empty", b"", 0o644);
    write("locked/inside", b"kept", 0o444);
    for i in 0..1000 {
        let content = format!("file {i}\n").repeat(i % 7 + 1);
        let dir = if i % 2 == 0 { "many" } else { "many/sub" };
        write(&format!("{dir}/f{i:04}"), content.as_bytes(), 0o644);
    }
    std::os::unix::fs::symlink("bin/run", root.join("run-link")).unwrap();
    std::fs::set_permissions(root.join("locked"), std::fs::Permissions::from_mode(0o555)).unwrap();
    bytes
}

/// Every entry under `root`: relative path → (mode with type bits, content or link target).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_owned();
            let mode = meta.permissions().mode();
            if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                into.insert(
                    relative,
                    (mode, target.into_os_string().into_encoded_bytes()),
                );
            } else if meta.is_dir() {
                into.insert(relative, (mode, Vec::new()));
                walk(root, &path, into);
            } else {
                into.insert(relative, (mode, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut into = BTreeMap::new();
    walk(root, root, &mut into);
    into
}

#[tokio::test]
async fn trees_go_up_and_down_with_modes_and_progress() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("release");
    let bytes = make_tree(&source);
    let there = remote.tempdir().await.unwrap();

    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let copied = remote
        .upload(&source, there.as_path())
        .progress(move |done, total| seen.lock().unwrap().push((done, total)))
        .await
        .unwrap();
    assert_eq!(copied, bytes);
    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.first(), Some(&(0, bytes)));
    assert_eq!(reports.last(), Some(&(bytes, bytes)));
    assert!(
        reports
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[1].1 == bytes)
    );

    // The remote side's own tools see the modes and contents.
    let remote_release = there.join("release");
    let listing = remote
        .cmd("stat")
        .args(["-c", "%a %n"])
        .arg(remote_release.join("bin/run"))
        .arg(remote_release.join("secret"))
        .arg(remote_release.join("shared"))
        .arg(remote_release.join("locked"))
        .arg(remote_release.join("locked/inside"))
        .read()
        .await
        .unwrap();
    let modes: Vec<&str> = listing
        .lines()
        .map(|line| line.split(' ').next().unwrap())
        .collect();
    assert_eq!(modes, ["755", "600", "666", "555", "444"]);
    assert_eq!(
        remote
            .cmd(remote_release.join("run-link"))
            .read()
            .await
            .unwrap(),
        "ran"
    );
    let count = remote
        .cmd("find")
        .arg(&remote_release)
        .args(["-type", "f"])
        .read()
        .await
        .unwrap();
    assert_eq!(count.lines().count(), 1005);

    // And back down: the same tree, byte for byte, mode for mode.
    let back = here.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let copied = remote.download(&remote_release, &back).await.unwrap();
    assert_eq!(copied, bytes);
    assert_eq!(snapshot(&source), snapshot(&back.join("release")));

    // A read-only directory can still be removed with the tree (by its owner).
    remote
        .cmd("chmod")
        .args(["-R", "u+w"])
        .arg(&remote_release)
        .run()
        .await
        .unwrap();
    there.close().await.unwrap();
}

#[tokio::test]
async fn copy_between_two_remote_machines_and_into_directories() {
    let Some(sshd) = Sshd::start() else { return };
    let (one, two) = (sshd.machine().await, sshd.machine().await);
    let (a, b) = (one.tempdir().await.unwrap(), two.tempdir().await.unwrap());
    let bytes = every_byte();
    (a.path() / "data.bin").write(&bytes).await.unwrap();
    (a.path() / "data.bin").chmod(0o604).await.unwrap();
    // Into an existing directory: under the source's name.
    let copied = leadpipe::copy(&(a.path() / "data.bin"), b.path())
        .await
        .unwrap();
    assert_eq!(copied, bytes.len() as u64);
    let landed = b.path() / "data.bin";
    assert_eq!(landed.read().await.unwrap(), bytes);
    assert_eq!(landed.metadata().await.unwrap().mode(), 0o604);
    // To a new name; over an existing file.
    leadpipe::copy(&(a.path() / "data.bin"), &(b.path() / "renamed.bin"))
        .await
        .unwrap();
    (b.path() / "renamed.bin").write("old").await.unwrap();
    leadpipe::copy(&(a.path() / "data.bin"), &(b.path() / "renamed.bin"))
        .await
        .unwrap();
    assert_eq!((b.path() / "renamed.bin").read().await.unwrap(), bytes);
    // Onto itself is refused, naming the path.
    let error = leadpipe::copy(&(a.path() / "data.bin"), &(a.path() / "data.bin"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("data.bin"), "{error}");
    // A missing source names the source.
    let error = leadpipe::copy(&(a.path() / "nope"), b.path())
        .await
        .unwrap_err();
    assert_eq!(file_error(&error).kind(), std::io::ErrorKind::NotFound);
    assert_eq!(file_error(&error).machine(), one.name());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes 1 GiB of pseudo-random bytes to `path`; returns their SHA-256 in hex.
fn write_one_gib(path: &Path) -> String {
    use std::io::Write;
    let mut expected = Sha256::new();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..1024 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        expected.update(&block);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    hex(&expected.finalize())
}

#[tokio::test]
async fn one_gib_up_and_down_with_checksums() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("big.bin");
    let expected = write_one_gib(&source);
    let there = remote.tempdir().await.unwrap();
    let copied = remote.upload(&source, there.as_path()).await.unwrap();
    assert_eq!(copied, 1 << 30);
    let remote_sum = remote
        .cmd("sha256sum")
        .arg(there.join("big.bin"))
        .read()
        .await
        .unwrap();
    assert_eq!(remote_sum.split(' ').next().unwrap(), expected);
    let back = here.path().join("back.bin");
    remote.download(there.join("big.bin"), &back).await.unwrap();
    let mut hash = Sha256::new();
    let mut file = std::fs::File::open(&back).unwrap();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut block).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&block[..n]);
    }
    assert_eq!(hex(&hash.finalize()), expected);
}

#[tokio::test]
async fn an_interrupted_write_leaves_the_old_file() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let dir = remote.tempdir().await.unwrap();
    let conf = dir.path() / "app.conf";
    conf.write("old content\n").await.unwrap();
    let big = vec![b'n'; 512 << 20];
    // Dropped half way (the future is cancelled by the timeout).
    let cut_short = tokio::time::timeout(Duration::from_millis(100), conf.write(&big)).await;
    assert!(
        cut_short.is_err(),
        "the write finished before it could be interrupted"
    );
    assert_eq!(conf.read_to_string().await.unwrap(), "old content\n");
    // The temporary file is removed in the background.
    let mut names = Vec::new();
    for _ in 0..100 {
        names = dir.list().await.unwrap();
        if names.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(names, vec![conf.clone()]);

    // The connection cut half way: an error, and the old file, seen from a new connection.
    let proxy = FaultProxy::start(format!("{}:{}", sshd.host, sshd.port).parse().unwrap()).await;
    let through = connect_to(&sshd, proxy.addr().port()).await;
    let conf_through = through.path(conf.as_path());
    let write = tokio::spawn(async move { conf_through.write(vec![b'n'; 512 << 20]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.cut();
    let result = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the write hung after the connection was cut")
        .unwrap();
    assert!(
        matches!(result, Err(Error::ConnectionLost { .. })),
        "{result:?}"
    );
    assert_eq!(conf.read_to_string().await.unwrap(), "old content\n");
    // Calls on the dead connection fail the same way, at once.
    let later = through.path(conf.as_path()).exists().await.unwrap_err();
    assert!(matches!(later, Error::ConnectionLost { .. }), "{later}");
}

/// 300 whole-file writes at once on one connection all land: OpenSSH's `sftp-server` names
/// a handle past the 128th open at once with bytes that are not UTF-8, so leadpipe never
/// holds more than 128 open in a session (the others wait for a close).
#[tokio::test]
async fn three_hundred_writes_at_once_share_one_session() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let dir = remote.tempdir().await.unwrap();
    let files: Vec<MachinePath> = (0..300).map(|i| dir.join(format!("f{i:03}"))).collect();
    // Joined, every open goes out before any of their answers is read.
    let written = futures::future::join_all(
        files
            .iter()
            .zip(0..)
            .map(|(file, i)| file.write(format!("{i}\n"))),
    )
    .await;
    for (result, file) in written.iter().zip(&files) {
        assert!(result.is_ok(), "{file:?}: {result:?}");
    }
    for (file, i) in files.iter().zip(0..) {
        assert_eq!(file.read_to_string().await.unwrap(), format!("{i}\n"));
    }
    assert_eq!(names_in(dir.path()).await.len(), 300);
}

/// A tree of 1000 small files (each its own bytes) uploaded twenty times on one connection
/// lands byte for byte every time: with many files in flight, a file's write once went out
/// after its close and landed in the next file opened under the same handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_land_byte_for_byte_every_time() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("tree");
    for dir in ["a", "b/c"] {
        std::fs::create_dir_all(source.join(dir)).unwrap();
    }
    for i in 0..1000u32 {
        let len = 1024 + (i.wrapping_mul(2_654_435_761) % 7168) as usize;
        let content: Vec<u8> = (0..len)
            .map(|j| (j as u32 ^ i.wrapping_mul(97)) as u8)
            .collect();
        let dir = if i % 2 == 0 { "a" } else { "b/c" };
        std::fs::write(source.join(dir).join(format!("f{i:04}")), content).unwrap();
    }
    let expected = snapshot(&source);
    let there = remote.tempdir().await.unwrap();
    let back = here.path().join("back");
    for round in 0..20 {
        let target = there.join(format!("round{round}"));
        // In a task of its own, as a script's transfers run.
        let upload = remote.upload(&source, target.as_path());
        tokio::spawn(upload).await.unwrap().unwrap();
        std::fs::create_dir(&back).unwrap();
        remote.download(target.as_path(), &back).await.unwrap();
        let landed = snapshot(&back.join(format!("round{round}")));
        let wrong: Vec<&PathBuf> = expected
            .iter()
            .filter(|(path, entry)| landed.get(*path) != Some(entry))
            .map(|(path, _)| path)
            .collect();
        assert!(wrong.is_empty(), "round {round}: {wrong:?} differ");
        std::fs::remove_dir_all(&back).unwrap();
    }
}

/// An upload of 400 files, many in flight, one of which cannot replace what is in its place
/// (a directory that is not empty): the error names that file, and every other file at the
/// destination is whole or absent, with no temporary file left behind.
#[tokio::test]
async fn a_file_failing_among_many_in_flight_is_named_and_the_rest_are_whole() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("tree");
    std::fs::create_dir(&source).unwrap();
    let content = |i: usize| format!("file {i}\n").repeat(i % 50 + 1);
    for i in 0..400 {
        std::fs::write(source.join(format!("f{i:03}")), content(i)).unwrap();
    }
    let there = remote.tempdir().await.unwrap();
    let tree = there.join("tree");
    let blocked = tree.join("f200");
    blocked.mkdir().await.unwrap();
    blocked.join("keep").write("kept").await.unwrap();

    let error = remote.upload(&source, there.as_path()).await.unwrap_err();
    assert_eq!(file_error(&error).path(), blocked.as_path(), "{error}");
    assert_eq!(blocked.join("keep").read_to_string().await.unwrap(), "kept");
    // Temporary files of the files cut short go in the background.
    let mut names = Vec::new();
    for _ in 0..100 {
        names = names_in(&tree).await;
        if !names.iter().any(|name| name.contains(".leadpipe-")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !names.iter().any(|name| name.contains(".leadpipe-")),
        "left behind: {names:?}"
    );
    for name in names.iter().filter(|name| *name != "f200") {
        let i: usize = name[1..].parse().unwrap();
        assert_eq!(
            tree.join(name).read_to_string().await.unwrap(),
            content(i),
            "{name}"
        );
    }
}

#[tokio::test]
async fn tempdirs_are_private_and_go_away() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    for machine_dir in [
        local().tempdir().await.unwrap(),
        remote.tempdir().await.unwrap(),
    ] {
        let meta = machine_dir.metadata().await.unwrap();
        assert_eq!((meta.kind(), meta.mode()), (FileKind::Dir, 0o700));
        let path = machine_dir.path().clone();
        (path.join("sub/file"))
            .parent()
            .unwrap()
            .mkdir()
            .await
            .unwrap();
        path.join("sub/file").write("x").await.unwrap();
        drop(machine_dir);
        let mut gone = false;
        for _ in 0..100 {
            if !path.exists().await.unwrap() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            gone,
            "{path:?} is still there after the TempDir was dropped"
        );
    }
    let closed = remote.tempdir().await.unwrap();
    let path = closed.path().clone();
    closed.close().await.unwrap();
    assert!(!path.exists().await.unwrap());
    let kept = remote.tempdir().await.unwrap().keep();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(kept.is_dir().await.unwrap());
    kept.remove_all().await.unwrap();
}

/// The embedded server runs OpenSSH's sftp-server when it is installed; without it, file
/// calls fail with an error that says why, and commands still run.
#[tokio::test]
async fn test_server_files_follow_its_sftp_server() {
    let server = leadpipe_test_server::TestServer::start().await.unwrap();
    let remote = server.connect().await.unwrap();
    let installed = [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/lib/ssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .iter()
    .any(|path| Path::new(path).is_file());
    let dir = tempfile::tempdir().unwrap();
    let file = remote.path(dir.path().join("via-test-server"));
    match file.write("over sftp").await {
        Ok(()) => {
            assert!(installed, "wrote without an sftp-server installed?");
            let local_copy = std::fs::read_to_string(dir.path().join("via-test-server")).unwrap();
            assert_eq!(local_copy, "over sftp");
        }
        Err(error) => {
            assert!(!installed, "sftp-server is installed, yet: {error}");
            assert!(
                error.to_string().contains("refused the sftp subsystem"),
                "{error}"
            );
        }
    }
    assert_eq!(remote.cmd("echo").arg("ok").read().await.unwrap(), "ok");
}

#[test]
fn blocking_scripts_use_files_too() {
    use leadpipe::blocking::Wait;
    let dir = tempfile::tempdir().unwrap();
    let path = local().path(dir.path()).join("note.txt");
    path.write("from a plain fn").wait().unwrap();
    assert_eq!(path.read_to_string().wait().unwrap(), "from a plain fn");
    let temp = local().tempdir().wait().unwrap();
    let inside = temp.path().clone();
    drop(temp);
    assert!(!inside.exists().wait().unwrap());
}

/// The `progress-bar` feature: the bar's length is the total and it ends full and finished.
#[cfg(feature = "progress-bar")]
#[tokio::test]
async fn progress_bar_follows_an_upload() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let here = tempfile::tempdir().unwrap();
    let content = every_byte().repeat(4);
    let bytes = content.len() as u64;
    std::fs::write(here.path().join("data.bin"), &content).unwrap();
    let there = remote.tempdir().await.unwrap();
    let bar = indicatif::ProgressBar::hidden();
    remote
        .upload(here.path().join("data.bin"), there.as_path())
        .progress_bar(bar.clone())
        .await
        .unwrap();
    assert_eq!((bar.length(), bar.position()), (Some(bytes), bytes));
    assert!(bar.is_finished());
}

/// Where an interrupted transfer stops: about 200 MiB into 1 GiB.
const CUT_AT: u64 = 200 << 20;

/// Runs `transfer` until `at` bytes have gone, then returns it unfinished (its progress
/// callback is taken).
async fn run_until(transfer: Transfer, at: u64) -> Transfer {
    let reached = Arc::new(tokio::sync::Notify::new());
    let notify = reached.clone();
    let mut transfer = transfer.progress(move |done, _| {
        if done >= at {
            notify.notify_one();
        }
    });
    tokio::select! {
        biased;
        _ = reached.notified() => transfer,
        result = &mut transfer => panic!("the transfer ended before {at} bytes: {result:?}"),
    }
}

/// The names in `dir` that look like the temporary files of writes to `name`.
fn temp_files_of(names: &[String], name: &str) -> Vec<String> {
    let prefix = format!(".{name}.leadpipe-");
    names
        .iter()
        .filter(|other| other.starts_with(&prefix) && other.ends_with(".tmp"))
        .cloned()
        .collect()
}

async fn names_in(dir: &MachinePath) -> Vec<String> {
    let mut names: Vec<String> = dir
        .list()
        .await
        .unwrap()
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Waits up to 5 s for `dir` to hold exactly `expected` (a dropped transfer removes its
/// temporary file in the background).
async fn settles_to(dir: &MachinePath, expected: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..100 {
        names = names_in(dir).await;
        if names == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    names
}

async fn assert_untouched(file: &MachinePath, old: &[u8], mode: u32) {
    let now = file.read().await.unwrap();
    assert!(
        now == old,
        "{file:?} holds {} bytes instead of the old {}",
        now.len(),
        old.len()
    );
    assert_eq!(file.metadata().await.unwrap().mode(), mode, "{file:?}");
}

/// A transfer cut off (connection reset, future dropped) at 200 MiB of 1 GiB, up, down and
/// locally, leaves the previous file byte for byte and mode for mode, and no temporary
/// file, except the one a cut connection could not remove, which the next transfer into
/// the directory removes once it is old.
#[tokio::test]
async fn interrupted_transfers_keep_the_old_file() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let here = tempfile::tempdir().unwrap();
    let source = here.path().join("big.bin");
    let expected = write_one_gib(&source);
    // Bits a umask of 022 would strip: they come from the source exactly.
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o666)).unwrap();
    let old = every_byte();
    let local_dir = local().path(here.path());

    // Locally: a copy dropped half way.
    let copy_target = local_dir.join("copy.bin");
    copy_target.write(&old).await.unwrap();
    copy_target.chmod(0o640).await.unwrap();
    let copy = leadpipe::copy(&local_dir.join("big.bin"), &copy_target);
    drop(run_until(copy, CUT_AT).await);
    assert_untouched(&copy_target, &old, 0o640).await;
    let names = settles_to(&local_dir, &["big.bin".into(), "copy.bin".into()]).await;
    assert_eq!(names, ["big.bin", "copy.bin"]);

    // Up, cut: the previous remote file stays; the temporary file may stay (the
    // connection is gone), and only that one.
    let there = remote.tempdir().await.unwrap();
    let target = there.path() / "big.bin";
    target.write(&old).await.unwrap();
    target.chmod(0o640).await.unwrap();
    let proxy = FaultProxy::start(format!("{}:{}", sshd.host, sshd.port).parse().unwrap()).await;
    let through = connect_to(&sshd, proxy.addr().port()).await;
    let upload = run_until(through.upload(&source, target.as_path()), CUT_AT).await;
    proxy.cut();
    let result = tokio::time::timeout(Duration::from_secs(30), upload)
        .await
        .expect("the upload hung after the connection was cut");
    assert!(
        matches!(result, Err(Error::ConnectionLost { .. })),
        "{result:?}"
    );
    assert_untouched(&target, &old, 0o640).await;
    let names = names_in(there.path()).await;
    let stale = temp_files_of(&names, "big.bin");
    assert_eq!(
        stale.len(),
        1,
        "the temporary file a cut upload leaves: {names:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");

    // Up, dropped: the same, and its temporary file goes.
    let upload = run_until(remote.upload(&source, target.as_path()), CUT_AT).await;
    drop(upload);
    assert_untouched(&target, &old, 0o640).await;
    let mut left = vec!["big.bin".to_owned()];
    left.extend(stale.iter().cloned());
    left.sort();
    assert_eq!(settles_to(there.path(), &left).await, left);

    // The next transfer into the directory removes the cut one's temporary file once it
    // is old (here: made old), and leaves a young one (a write under way) alone.
    for name in &stale {
        remote
            .cmd("touch")
            .args(["-m", "-d", "2000-01-01"])
            .arg(there.path() / name)
            .run()
            .await
            .unwrap();
    }
    let young = there.path() / ".other.leadpipe-1-2-3.tmp";
    young.write("being written").await.unwrap();
    let copied = remote.upload(&source, target.as_path()).await.unwrap();
    assert_eq!(copied, 1 << 30);
    let remote_sum = remote.cmd("sha256sum").arg(&target).read().await.unwrap();
    assert_eq!(remote_sum.split(' ').next().unwrap(), expected);
    assert_eq!(target.metadata().await.unwrap().mode(), 0o666);
    assert_eq!(
        names_in(there.path()).await,
        [".other.leadpipe-1-2-3.tmp", "big.bin"]
    );

    // Down, cut: the previous local file stays, and no temporary file.
    let back = local_dir.join("back.bin");
    back.write(&old).await.unwrap();
    back.chmod(0o640).await.unwrap();
    let through = connect_to(&sshd, proxy.addr().port()).await;
    let download = run_until(through.download(target.as_path(), back.as_path()), CUT_AT).await;
    proxy.cut();
    let result = tokio::time::timeout(Duration::from_secs(30), download)
        .await
        .expect("the download hung after the connection was cut");
    assert!(
        matches!(result, Err(Error::ConnectionLost { .. })),
        "{result:?}"
    );
    assert_untouched(&back, &old, 0o640).await;
    let all = ["back.bin".to_owned(), "big.bin".into(), "copy.bin".into()];
    assert_eq!(names_in(&local_dir).await, all);

    // Down, dropped: the same.
    let download = run_until(remote.download(target.as_path(), back.as_path()), CUT_AT).await;
    drop(download);
    assert_untouched(&back, &old, 0o640).await;
    assert_eq!(settles_to(&local_dir, &all).await, all);
}

/// Renames resolve a relative destination as the machine view does, refuse another
/// machine, and name both paths when they fail.
async fn check_renames(view: &MachinePath, dir: &MachinePath, elsewhere: &MachinePath) {
    // `view` is `dir` as seen by a view whose directory is `dir`.
    let logs = view.join("logs");
    logs.mkdir().await.unwrap();
    let log = logs.join("a.log");
    log.write("entry\n").await.unwrap();
    let moved = log.rename("b.log").await.unwrap();
    assert_eq!(
        moved,
        dir / "b.log",
        "as `mv logs/a.log b.log` in the view's directory"
    );
    assert_eq!((dir / "b.log").read_to_string().await.unwrap(), "entry\n");
    assert!(!(dir / "logs/b.log").exists().await.unwrap());
    // A MachinePath destination, a relative one with a directory.
    let back = moved.rename(&log).await.unwrap();
    assert_eq!(back, dir / "logs/a.log");
    let copied = back.copy_to("logs/c.log").await.unwrap();
    assert_eq!(copied, 6);
    assert!((dir / "logs/c.log").is_file().await.unwrap());

    // Both paths in the error.
    let error = view.join("missing").rename("other").await.unwrap_err();
    let machine = dir.machine();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot rename {machine}:{} to {machine}:{}: no such file or directory",
            dir.join("missing"),
            dir.join("other")
        )
    );
    let details = file_error(&error);
    assert_eq!(
        (details.op(), details.kind()),
        ("rename", std::io::ErrorKind::NotFound)
    );
    assert_eq!(details.destination(), Some(dir.join("other").as_path()));

    // Another machine's path is refused, and nothing moves.
    let error = back.rename(elsewhere).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "cannot rename {machine}:{} to {}:{}: the destination is on another machine \
             (copy, then remove)",
            back,
            elsewhere.machine(),
            elsewhere
        )
    );
    assert_eq!(file_error(&error).kind(), std::io::ErrorKind::InvalidInput);
    assert!(back.is_file().await.unwrap());
    assert!(!elsewhere.exists().await.unwrap());
}

#[tokio::test]
async fn local_renames_follow_the_view() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let there = remote.tempdir().await.unwrap();
    let dir = local().tempdir().await.unwrap();
    let view = local().with_cwd(dir.as_path());
    check_renames(&view.path(""), dir.path(), &(there.path() / "moved")).await;
}

#[tokio::test]
async fn remote_renames_follow_the_view() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = sshd.machine().await;
    let here = local().tempdir().await.unwrap();
    let dir = remote.tempdir().await.unwrap();
    let view = remote.with_cwd(dir.as_path());
    check_renames(&view.path(""), dir.path(), &(here.path() / "moved")).await;
}

/// Two tree copies within one remote machine at once, and two between two remote machines
/// in opposite directions, each of 200 files, all finish: every file of such a copy holds
/// a handle on the source while it opens one on the destination, and an SFTP session holds
/// 128 at most.
#[tokio::test]
async fn copies_holding_two_handles_per_file_at_once_all_finish() {
    let Some(sshd) = Sshd::start() else { return };
    let (a, b) = (sshd.machine().await, sshd.machine().await);
    let (a_dir, b_dir) = (a.tempdir().await.unwrap(), b.tempdir().await.unwrap());
    for dir in [&a_dir, &b_dir] {
        for name in ["one", "two"] {
            let tree = dir.join(name);
            tree.mkdir().await.unwrap();
            let files = (0..200).map(|i| {
                let file = tree.join(format!("f{i:03}"));
                async move { file.write(format!("{i}\n")).await }
            });
            for written in futures::future::join_all(files).await {
                written.unwrap();
            }
        }
    }
    let copies = futures::future::join_all([
        a_dir.join("one").copy_to(a_dir.join("one-copy")),
        a_dir.join("two").copy_to(a_dir.join("two-copy")),
        a_dir.join("one").copy_to(b_dir.join("from-a")),
        b_dir.join("one").copy_to(a_dir.join("from-b")),
    ]);
    let copied = tokio::time::timeout(Duration::from_secs(120), copies)
        .await
        .expect("the copies finished");
    for result in copied {
        // 0-9, 10-99 and 100-199 with their newlines.
        assert_eq!(result.unwrap(), 10 * 2 + 90 * 3 + 100 * 4);
    }
    for copy in [
        a_dir.join("one-copy"),
        a_dir.join("from-b"),
        b_dir.join("from-a"),
    ] {
        for i in [0, 99, 199] {
            let text = copy
                .join(format!("f{i:03}"))
                .read_to_string()
                .await
                .unwrap();
            assert_eq!(text, format!("{i}\n"));
        }
    }
}
