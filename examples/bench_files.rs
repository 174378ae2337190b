//! Side-by-side benchmark of leadpipe's file transfers against OpenSSH's `sftp` and `scp`,
//! in one run.
//!
//! Needs a throw-away OpenSSH server (with an `sftp` subsystem) and its settings in the
//! environment, as the lab scripts print them (`eval "$(lab/sshd-up.sh 22033)"`, or
//! `netns-up.sh 22233 5` for a 10 ms round trip): `LAB_HOST`, `LAB_PORT`, `LAB_USER`,
//! `LAB_KEY`, `LAB_KNOWN_HOSTS`, `LAB_SSH_CONFIG` (whose host `lab` is the same server for
//! the OpenSSH clients). Then `cargo run --release --example bench_files [ROUNDS [CIPHER]]`:
//! ROUNDS defaults to 3; a CIPHER (say `aes256-gcm@openssh.com`, what leadpipe negotiates
//! with OpenSSH) is passed as `-c` to every OpenSSH client, which otherwise uses its
//! default (chacha20-poly1305).
//!
//! Rows: upload and download of a 1 GiB file, upload and download of a tree of 1000 files
//! of 1–8 KiB in five directories. leadpipe (`SshMachine::upload` / `download`) connects
//! once, before any timing, and reuses the connection. The OpenSSH clients (`sftp -b`,
//! `scp`, and `scp -O`, the legacy protocol) are timed twice: as a user runs them, each
//! paying its own connection setup, and through a ControlMaster started before timing.
//! Files go under `BENCH_FILES_DIR` on both sides when it is set (`/dev/shm` keeps the
//! disk and file system out of the comparison; on loopback and in the lab namespaces both
//! sides share this machine's files), else under the temp directories.
//! Every run writes fresh files (the destination is removed and `sync` run first, untimed)
//! and its result is checked (file count and bytes). Values are medians of the rounds;
//! a ratio is the other client's time over leadpipe's (above 1: leadpipe is faster).
//!
//! Bounds, for slow links: `BENCH_FILES_CASES` picks rows (`file`, `tree`, or all when
//! unset), and `BENCH_FILES_LIMIT` (seconds, default 120) cuts an OpenSSH run that takes
//! longer: the run is stopped, its cell shows `> LIMIT`, and its ratio is a lower bound.
//! `BENCH_FILES_CLIENTS` picks the OpenSSH clients (`sftp`, `scp`, `scp-O`, comma-separated;
//! all when unset; `none` times leadpipe alone): at a 10 ms round trip one OpenSSH run of
//! the tree takes tens of seconds.

#[allow(dead_code)]
mod lab;

use std::{
    collections::HashMap,
    fs,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    process::{Command as Std, Stdio},
    time::{Duration, Instant},
};

use leadpipe::{Error, SshMachine, local};

const GIB: u64 = 1 << 30;
const TREE_FILES: usize = 1000;
const TREE_DIRS: [&str; 5] = ["bin", "lib", "share/doc", "share/man", "etc"];

/// CPU time (user + system) of this process, or of its waited-for children.
fn cpu(who: libc::c_int) -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the call to fill in.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn io_context(context: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::io(context, source)
}

/// Deterministic bytes that no link could compress.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }

    fn below(&mut self, bound: u64) -> u64 {
        let mut word = [0; 8];
        self.fill(&mut word);
        u64::from_le_bytes(word) % bound
    }
}

fn write_big_file(path: &Path) -> io::Result<()> {
    let mut out = BufWriter::new(fs::File::create(path)?);
    let (mut noise, mut block) = (Noise(0x5eed_f11e), vec![0; 1 << 20]);
    for _ in 0..GIB >> 20 {
        noise.fill(&mut block);
        out.write_all(&block)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Writes the small-file tree; returns its total bytes.
fn write_tree(top: &Path) -> io::Result<u64> {
    let (mut noise, mut total) = (Noise(0x7ee5), 0);
    for dir in TREE_DIRS {
        fs::create_dir_all(top.join(dir))?;
    }
    for i in 0..TREE_FILES {
        let len = 1024 + noise.below(7 * 1024 + 1);
        let mut content = vec![0; len as usize];
        noise.fill(&mut content);
        let dir = TREE_DIRS[i % TREE_DIRS.len()];
        fs::write(top.join(dir).join(format!("file-{i:04}.dat")), content)?;
        total += len;
    }
    Ok(total)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Client {
    Leadpipe,
    Sftp,
    Scp,
    ScpLegacy,
}

const OPENSSH: [Client; 3] = [Client::Sftp, Client::Scp, Client::ScpLegacy];

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::Leadpipe => "leadpipe",
            Client::Sftp => "sftp",
            Client::Scp => "scp",
            Client::ScpLegacy => "scp -O",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Case {
    UploadFile,
    DownloadFile,
    UploadTree,
    DownloadTree,
}

const CASES: [Case; 4] = [
    Case::UploadFile,
    Case::DownloadFile,
    Case::UploadTree,
    Case::DownloadTree,
];

impl Case {
    fn upload(self) -> bool {
        matches!(self, Case::UploadFile | Case::UploadTree)
    }

    fn tree(self) -> bool {
        matches!(self, Case::UploadTree | Case::DownloadTree)
    }
}

/// Where everything lives, on both sides.
struct Places {
    local: PathBuf,
    remote: PathBuf,
}

impl Places {
    fn source(&self, case: Case) -> PathBuf {
        let side = if case.upload() {
            &self.local
        } else {
            &self.remote
        };
        side.join(if case.tree() { "tree" } else { "big.bin" })
    }

    fn target(&self, case: Case) -> PathBuf {
        let side = if case.upload() {
            &self.remote
        } else {
            &self.local
        };
        side.join(if case.tree() { "copy-tree" } else { "copy.bin" })
    }
}

/// How the OpenSSH clients are run: the config, a cipher, and the ControlMaster socket.
struct OpenSsh {
    config: String,
    cipher: Option<String>,
    control_path: String,
    scratch: PathBuf,
}

impl OpenSsh {
    fn options(&self, mux: bool) -> Vec<String> {
        let mut options = vec!["-F".to_owned(), self.config.clone()];
        if let Some(cipher) = &self.cipher {
            options.extend(["-c".to_owned(), cipher.clone()]);
        }
        if mux {
            for option in [
                "ControlMaster=auto",
                &format!("ControlPath={}", self.control_path),
                "ControlPersist=60",
            ] {
                options.extend(["-o".to_owned(), option.to_owned()]);
            }
        }
        options
    }

    /// Makes sure the ControlMaster is up (untimed), starting it if needed.
    fn ensure_master(&self) {
        let alive = Std::new("ssh")
            .args(self.options(true))
            .args(["-O", "check", "lab"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !alive {
            let started = Std::new("ssh")
                .args(self.options(true))
                .args(["lab", "true"])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            assert!(started, "starting the OpenSSH ControlMaster failed");
        }
    }

    fn stop_master(&self) {
        let _ = Std::new("ssh")
            .args(self.options(true))
            .args(["-O", "exit", "lab"])
            .stderr(Stdio::null())
            .status();
    }

    /// The command for one transfer (not started).
    fn command(&self, client: Client, case: Case, places: &Places, mux: bool) -> Std {
        let (from, to) = (places.source(case), places.target(case));
        let remote = |path: &Path| format!("lab:{}", path.display());
        let mut command;
        match client {
            Client::Sftp => {
                let batch = self.scratch.join("batch");
                let verb = if case.upload() { "put" } else { "get" };
                let recursive = if case.tree() { " -r" } else { "" };
                let line = format!(
                    "{verb}{recursive} \"{}\" \"{}\"\n",
                    from.display(),
                    to.display()
                );
                fs::write(&batch, line).expect("writing the sftp batch file");
                command = Std::new("sftp");
                command.arg("-b").arg(&batch).args(self.options(mux));
                command.arg("lab");
            }
            Client::Scp | Client::ScpLegacy => {
                command = Std::new("scp");
                command.arg("-q").args(self.options(mux));
                if client == Client::ScpLegacy {
                    command.arg("-O");
                }
                if case.tree() {
                    command.arg("-r");
                }
                if case.upload() {
                    command.arg(&from).arg(remote(&to));
                } else {
                    command.arg(remote(&from)).arg(&to);
                }
            }
            Client::Leadpipe => unreachable!("leadpipe is not an OpenSSH client"),
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Runs one transfer; the time it took and the CPU time its processes used. A run
    /// past `limit` is stopped, and reported as taking `limit`.
    fn run(
        &self,
        client: Client,
        case: Case,
        places: &Places,
        mux: bool,
        limit: Duration,
    ) -> (Duration, Duration) {
        let mut command = self.command(client, case, places, mux);
        command.stderr(Stdio::null());
        let (start, cpu_before) = (Instant::now(), cpu(libc::RUSAGE_CHILDREN));
        let mut child = command.spawn().expect("starting an OpenSSH client");
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for an OpenSSH client") {
                break Some(status);
            }
            if start.elapsed() >= limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let took = start.elapsed();
        let used = cpu(libc::RUSAGE_CHILDREN).saturating_sub(cpu_before);
        let Some(status) = status else {
            return (limit, used);
        };
        assert!(status.success(), "{} failed ({case:?})", client.label());
        (took, used)
    }
}

/// Files and bytes under `path` (a file or a tree), on the machine of `command`.
async fn census(find: leadpipe::Command) -> leadpipe::Result<(usize, u64)> {
    let sizes = find.args(["-type", "f", "-printf", "%s\\n"]).read().await?;
    let sizes: Vec<u64> = sizes.lines().filter_map(|n| n.parse().ok()).collect();
    Ok((sizes.len(), sizes.iter().sum()))
}

/// Removes the target of `case` on its side, then flushes the page cache's dirty pages.
async fn clear(remote: &SshMachine, places: &Places, case: Case) -> leadpipe::Result<()> {
    let target = places.target(case);
    if case.upload() {
        remote.cmd("rm").arg("-rf").arg(&target).run().await?;
    } else {
        local().cmd("rm").arg("-rf").arg(&target).run().await?;
    }
    local().cmd("sync").run().await
}

async fn check(
    remote: &SshMachine,
    places: &Places,
    case: Case,
    expected: (usize, u64),
    who: &str,
) -> leadpipe::Result<()> {
    let target = places.target(case);
    let find = if case.upload() {
        remote.cmd("find").arg(&target)
    } else {
        local().cmd("find").arg(&target)
    };
    let found = census(find).await?;
    assert_eq!(
        found,
        expected,
        "{who} ({case:?}) left (files, bytes) = {found:?} at {}",
        target.display()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> leadpipe::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args
        .next()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    let cipher = args.next();
    let config = lab::var("LAB_SSH_CONFIG");
    let cases: Vec<Case> = match std::env::var("BENCH_FILES_CASES").as_deref() {
        Ok("file") => CASES.into_iter().filter(|case| !case.tree()).collect(),
        Ok("tree") => CASES.into_iter().filter(|case| case.tree()).collect(),
        _ => CASES.to_vec(),
    };
    let limit = Duration::from_secs(
        std::env::var("BENCH_FILES_LIMIT")
            .ok()
            .and_then(|secs| secs.parse().ok())
            .unwrap_or(120),
    );
    // The OpenSSH clients to time: `sftp`, `scp`, `scp-O` (comma-separated), or all.
    let picked: Vec<Client> = match std::env::var("BENCH_FILES_CLIENTS") {
        Ok(list) => OPENSSH
            .into_iter()
            .filter(|client| {
                list.split(',')
                    .any(|name| name.trim() == client.label().replace(' ', ""))
            })
            .collect(),
        Err(_) => OPENSSH.to_vec(),
    };
    println!("load average at start: {}", lab::load());

    let started = Instant::now();
    let remote = lab::connect().await?;
    let connected = started.elapsed();
    // Both sides' directories: under BENCH_FILES_DIR when set (say /dev/shm, to leave the
    // file system out), else under the temp directories. Making the remote one also opens
    // the SFTP channel, so that no timed run pays for it.
    let unique = format!("leadpipe-bench-files-{}", std::process::id());
    let (local_parent, remote_parent) = match std::env::var_os("BENCH_FILES_DIR") {
        Some(dir) => (PathBuf::from(&dir), PathBuf::from(dir)),
        None => (std::env::temp_dir(), PathBuf::from("/tmp")),
    };
    let places = Places {
        local: local_parent.join(format!("{unique}-local")),
        remote: remote_parent.join(format!("{unique}-remote")),
    };
    remote.path(&places.remote).mkdir().await?;
    println!(
        "leadpipe connect + auth: {:.1} ms (excluded); SFTP channel + mkdir: {:.1} ms",
        connected.as_secs_f64() * 1e3,
        (started.elapsed() - connected).as_secs_f64() * 1e3
    );
    local().path(&places.local).mkdir().await?;
    println!(
        "files in {} (local) and {} (remote)",
        places.local.display(),
        places.remote.display()
    );
    print!("writing the 1 GiB file and the tree ... ");
    io::stdout().flush().ok();
    let big = places.local.join("big.bin");
    let files = cases.iter().any(|case| !case.tree());
    if files {
        write_big_file(&big).map_err(io_context("writing the 1 GiB file"))?;
    }
    let tree_bytes =
        write_tree(&places.local.join("tree")).map_err(io_context("writing the tree"))?;
    // The download sources, put there once (untimed).
    if files {
        remote.upload(&big, places.remote.join("big.bin")).await?;
    }
    remote
        .upload(places.local.join("tree"), places.remote.join("tree"))
        .await?;
    for case in [Case::DownloadFile, Case::DownloadTree]
        .into_iter()
        .filter(|case| cases.contains(case))
    {
        let source = places.source(case);
        let found = census(remote.cmd("find").arg(&source)).await?;
        let expected = if case.tree() {
            (TREE_FILES, tree_bytes)
        } else {
            (1, GIB)
        };
        assert_eq!(found, expected, "the remote copy of {}", source.display());
    }
    println!(
        "done ({TREE_FILES} files, {:.1} MiB in the tree)",
        tree_bytes as f64 / f64::from(1 << 20)
    );

    let openssh = OpenSsh {
        config,
        cipher,
        control_path: std::env::temp_dir()
            .join(format!("leadpipe-bench-files-{}.sock", std::process::id()))
            .display()
            .to_string(),
        scratch: places.local.clone(),
    };
    let mut fresh = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let ok = Std::new("ssh")
            .args(openssh.options(false))
            .args(["lab", "true"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        assert!(ok, "`ssh -F $LAB_SSH_CONFIG lab true` failed");
        fresh.push(start.elapsed());
    }
    println!(
        "OpenSSH connection setup (`ssh lab true`, median): {:.1} ms (included in the \
         fresh rows)",
        lab::median(&fresh).as_secs_f64() * 1e3
    );
    openssh.ensure_master();
    // `scp -O` needs the remote `scp` binary; leave its column out when it fails.
    let legacy = picked.contains(&Client::ScpLegacy) && {
        clear(&remote, &places, Case::UploadTree).await?;
        let mut probe = openssh.command(Client::ScpLegacy, Case::UploadTree, &places, false);
        probe.output().is_ok_and(|out| out.status.success())
    };
    let clients: Vec<Client> = picked
        .iter()
        .copied()
        .filter(|&client| legacy || client != Client::ScpLegacy)
        .collect();
    if !legacy && picked.contains(&Client::ScpLegacy) {
        println!("`scp -O` (legacy protocol) does not work against this server: left out");
    }

    // samples[(case, client, through the ControlMaster)]
    let mut samples: HashMap<(Case, Client, bool), Vec<Duration>> = HashMap::new();
    let mut cpu_samples = samples.clone();
    let mut cut = std::collections::HashSet::new();
    for round in 1..=rounds {
        println!("round {round}/{rounds}");
        for &case in &cases {
            let expected = if case.tree() {
                (TREE_FILES, tree_bytes)
            } else {
                (1, GIB)
            };
            clear(&remote, &places, case).await?;
            let transfer = if case.upload() {
                remote.upload(places.source(case), places.target(case))
            } else {
                remote.download(places.source(case), places.target(case))
            };
            let (start, cpu_before) = (Instant::now(), cpu(libc::RUSAGE_SELF));
            // In a task, where async code runs (from `main`, each wakeup also hops threads).
            let copied = tokio::spawn(transfer).await.expect("transfer task")?;
            let took = start.elapsed();
            let used = cpu(libc::RUSAGE_SELF).saturating_sub(cpu_before);
            assert_eq!(copied, expected.1, "leadpipe reported bytes ({case:?})");
            check(&remote, &places, case, expected, "leadpipe").await?;
            samples
                .entry((case, Client::Leadpipe, false))
                .or_default()
                .push(took);
            cpu_samples
                .entry((case, Client::Leadpipe, false))
                .or_default()
                .push(used);
            for mux in [false, true] {
                for &client in &clients {
                    clear(&remote, &places, case).await?;
                    if mux {
                        openssh.ensure_master();
                    }
                    let (took, used) = openssh.run(client, case, &places, mux, limit);
                    if took >= limit {
                        cut.insert((case, client, mux));
                    } else {
                        check(&remote, &places, case, expected, client.label()).await?;
                    }
                    samples.entry((case, client, mux)).or_default().push(took);
                    cpu_samples
                        .entry((case, client, mux))
                        .or_default()
                        .push(used);
                }
            }
        }
    }
    openssh.stop_master();
    for &case in &cases {
        clear(&remote, &places, case).await?;
    }
    remote
        .cmd("rm")
        .arg("-rf")
        .arg(&places.remote)
        .run()
        .await?;
    local()
        .cmd("rm")
        .arg("-rf")
        .arg(&places.local)
        .run()
        .await?;

    let cell = |case: Case, samples: &[Duration]| {
        let secs = lab::median(samples).as_secs_f64();
        if samples.iter().any(|took| *took >= limit) {
            format!("> {:.0} s (cut)", limit.as_secs_f64())
        } else if case.tree() {
            format!("{secs:.3} s")
        } else {
            format!("{secs:.2} s ({:.0} MiB/s)", 1024.0 / secs)
        }
    };
    let title = |case: Case| match case {
        Case::UploadFile => "upload 1 GiB file".to_owned(),
        Case::DownloadFile => "download 1 GiB file".to_owned(),
        Case::UploadTree => format!("upload tree, {TREE_FILES} files of 1-8 KiB (-r)"),
        Case::DownloadTree => format!("download tree, {TREE_FILES} files of 1-8 KiB (-r)"),
    };
    println!(
        "\nOpenSSH cipher: {}; medians of {rounds} rounds; ratio = OpenSSH time / leadpipe \
         time\n",
        openssh.cipher.as_deref().unwrap_or("its default")
    );
    println!("| case | leadpipe | sftp | scp | scp -O | ratio(s) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let ratio = |case: Case, client: Client, mux: bool| {
        let ours = lab::median(&samples[&(case, Client::Leadpipe, false)]).as_secs_f64();
        lab::median(&samples[&(case, client, mux)]).as_secs_f64() / ours
    };
    for &case in &cases {
        for mux in [false, true] {
            let mut row = title(case);
            row += if mux {
                ", OpenSSH via ControlMaster"
            } else {
                ", OpenSSH connecting each run"
            };
            let mut cells = vec![cell(case, &samples[&(case, Client::Leadpipe, false)])];
            let mut ratios = Vec::new();
            for client in OPENSSH {
                match samples.get(&(case, client, mux)) {
                    Some(times) => {
                        cells.push(cell(case, times));
                        ratios.push(format!(
                            "{} {}{:.2}x",
                            client.label(),
                            if cut.contains(&(case, client, mux)) {
                                ">"
                            } else {
                                ""
                            },
                            ratio(case, client, mux)
                        ));
                    }
                    None => cells.push("n/a".to_owned()),
                }
            }
            println!("| {row} | {} | {} |", cells.join(" | "), ratios.join(", "));
        }
    }

    println!("\nGoals:");
    for case in [Case::UploadFile, Case::DownloadFile]
        .into_iter()
        .filter(|case| cases.contains(case) && !clients.is_empty())
    {
        for mux in [false, true] {
            let (fastest, worst) = clients
                .iter()
                .map(|&client| (client, ratio(case, client, mux)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("at least one OpenSSH client");
            println!(
                "- {}: >= 1x OpenSSH{}: {worst:.2}x against the fastest ({}): {}",
                title(case),
                if mux { " (ControlMaster)" } else { "" },
                fastest.label(),
                if worst >= 1.0 { "met" } else { "NOT met" }
            );
        }
    }
    for case in [Case::UploadTree, Case::DownloadTree]
        .into_iter()
        .filter(|case| cases.contains(case) && clients.contains(&Client::Scp))
    {
        for mux in [false, true] {
            let against = ratio(case, Client::Scp, mux);
            println!(
                "- {}: >= 2x scp{}: {against:.2}x: {}",
                title(case),
                if mux { " (ControlMaster)" } else { "" },
                if against >= 2.0 { "met" } else { "NOT met" }
            );
        }
    }

    // Through a ControlMaster the crypto runs in the master, which is not a waited-for
    // child: only the runs that connect themselves count all of their client's work.
    println!(
        "\nClient CPU time (user + system, median), OpenSSH connecting each run (its ssh \
         included):\n"
    );
    println!("| case | leadpipe | sftp | scp | scp -O |");
    println!("| --- | --- | --- | --- | --- |");
    for &case in &cases {
        let cells: Vec<String> = [Client::Leadpipe]
            .into_iter()
            .chain(OPENSSH)
            .map(|client| match cpu_samples.get(&(case, client, false)) {
                Some(used) => format!("{:.2} s", lab::median(used).as_secs_f64()),
                None => "n/a".to_owned(),
            })
            .collect();
        println!("| {} | {} |", title(case), cells.join(" | "));
    }

    println!("\nEvery run, in seconds:");
    for &case in &cases {
        let mut keys: Vec<_> = samples.keys().filter(|key| key.0 == case).collect();
        keys.sort_by_key(|key| (key.2, key.1 as u8));
        for key in keys {
            let runs: Vec<String> = samples[key]
                .iter()
                .map(|d| format!("{:.3}", d.as_secs_f64()))
                .collect();
            println!(
                "- {} / {}{}: {}",
                title(case),
                key.1.label(),
                if key.2 { " (ControlMaster)" } else { "" },
                runs.join(", ")
            );
        }
    }
    println!("\nload average at the end: {}", lab::load());
    Ok(())
}
