//! Side-by-side benchmark of a fleet run: leadpipe against fabric, parallel-ssh, pyinfra and
//! Ansible on the same loopback fleet, running the pyinfra-performance workload.
//!
//! Needs the lab (`LAB_DIR`, the directory with `fleet-up.sh` and
//! `baselines/fleet/`), root (sshd for many users), and the peers in a venv
//! (`FLEET_VENV`, default `/tmp/lab/fleet-venv`; see the lab's README). Then:
//!
//! ```sh
//! cargo build --release --example bench_fleet
//! LAB_DIR=path/to/lab target/release/examples/bench_fleet            # 10 100 250, then 1000
//! LAB_DIR=path/to/lab BENCH_FLEET_PEERS="pssh fabric" target/release/examples/bench_fleet 100
//! ```
//!
//! For each fleet size it starts the fleet (`fleet-up.sh`), runs every tool in turn, each
//! run timed by the lab's own harness (`baselines/fleet/common.sh`: `/usr/bin/time -v`, a
//! cpuacct cgroup for the client, the fleet's cgroup for the servers, a check that every
//! host got its files), then stops it, and prints one table: wall time, client CPU per
//! host, peak client memory, and each peer's wall time over leadpipe's. At 250 hosts it
//! also runs leadpipe with one refused and one frozen host added in the middle of the
//! list. leadpipe alone runs at the sizes in `BENCH_FLEET_ALONE` (default 1000).
//!
//! `bench_fleet worker N [-faulty|-commands]` is the leadpipe client the harness times: the
//! workload on the first N hosts of `$FLEET_HOSTS`, with host keys checked against
//! `$FLEET_KNOWN_HOSTS` (connect timeout 3 s). Its log (in `fleet-logs/`) has its memory
//! per connected host.
//!
//! The workload (per host `R = $FLEET_WORK/ADDRESS`): check the user, make `R` owned by it,
//! make `R.log` with mode 777 owned by it, upload a 54-byte file to `R/test_file.txt` owned
//! by it, `echo "hi!"`. Each tool does it its own way: fabric and parallel-ssh with `id
//! -u`, `mkdir -p`, `touch`, `chmod` and three `chown` (and an SFTP put), pyinfra and
//! Ansible with their operations and modules. Row `leadpipe` does it as a leadpipe script
//! would: `id -u`, then the file API over the connection's SFTP channel (`mkdir`,
//! `append`, `chmod`, `upload`, and `metadata` to run `chown` only where the owner is
//! wrong, as pyinfra and Ansible do), then `echo`; row `leadpipe-commands` runs the very
//! commands fabric and parallel-ssh run. Each host's steps run in one `Fleet::run`
//! closure (the peers run each step on every host before the next).

#[allow(dead_code)]
mod lab;

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command as Process,
    time::{Duration, Instant},
};

use leadpipe::{Fleet, Inventory, Redirect};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        let hosts: usize = args.get(1).and_then(|n| n.parse().ok()).expect("worker N");
        let mode = args.get(2).map_or("", String::as_str);
        std::process::exit(worker(
            hosts,
            mode.contains("faulty"),
            mode.contains("commands"),
        ));
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![10, 100, 250]
    } else {
        args.iter()
            .map(|a| a.parse().expect("a fleet size"))
            .collect()
    };
    let alone: Vec<usize> = std::env::var("BENCH_FLEET_ALONE")
        .unwrap_or_else(|_| {
            if args.is_empty() {
                "1000".into()
            } else {
                String::new()
            }
        })
        .split_whitespace()
        .map(|n| n.parse().expect("a fleet size"))
        .collect();
    orchestrate(&sizes, &alone);
}

// ---------------------------------------------------------------------------------------
// The leadpipe client

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (status.lines())
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn worker(count: usize, faulty: bool, commands: bool) -> i32 {
    let var = lab::var;
    let (user, work) = (var("FLEET_USER"), var("FLEET_WORK"));
    let (key, known_hosts) = (var("FLEET_KEY"), var("FLEET_KNOWN_HOSTS"));
    let test_file = Path::new(&var("LAB_DIR")).join("baselines/fleet/test_file.txt");
    let hosts_text = std::fs::read_to_string(var("FLEET_HOSTS")).expect("FLEET_HOSTS");
    let mut hosts: Vec<String> = hosts_text
        .split_whitespace()
        .take(count)
        .map(str::to_owned)
        .collect();
    // A refused host (a port nobody listens on) and a frozen one (the kernel accepts the
    // connection, nothing ever answers).
    let frozen = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    if faulty {
        let closed = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let refused_port = closed.local_addr().unwrap().port();
        drop(closed);
        // In the middle of the list: a frozen host costs its connect timeout counted from
        // when its turn to connect comes, so at the very end of a long list it would
        // outlast the others by up to that timeout.
        let middle = hosts.len() / 2;
        let frozen_port = frozen.local_addr().unwrap().port();
        hosts.insert(middle, format!("{user}@127.0.0.1:{refused_port}"));
        hosts.insert(middle, format!("{user}@127.0.0.1:{frozen_port}"));
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let began = Instant::now();
    let before = rss_kib();
    let report = runtime.block_on(async {
        let fleet = Fleet::builder(Inventory::new(&hosts))
            .concurrency(100)
            .connect_timeout(Duration::from_secs(3))
            .ssh(move |b| {
                b.identity_file(&key)
                    .known_hosts(&known_hosts)
                    .ssh_config(None)
            })
            .connect()
            .await;
        println!("connect returned after {:?}", began.elapsed());
        // Memory once every host connected; not with the faulty hosts, whose frozen one
        // would be waited for here instead of in its own slot of the run.
        if !faulty {
            let ok = fleet.connected().await.ok_count().max(1) as u64;
            let connected = began.elapsed();
            if std::env::var_os("BENCH_FLEET_TRIM").is_some() {
                // SAFETY: malloc_trim only returns free heap memory to the system.
                unsafe { libc::malloc_trim(0) };
            }
            let after = rss_kib();
            println!(
                "connected {ok} of {} hosts in {connected:?}; memory {} KiB before, {} KiB \
                 after: {} KiB per connected host",
                hosts.len(),
                before,
                after,
                after.saturating_sub(before) / ok
            );
        }
        let (user, work, test_file) = (&user, &work, &test_file);
        fleet
            .run(|m| async move {
                // `user@ADDRESS:PORT`: the per-host root is named by the address.
                let name = m.name().to_owned();
                let address = name.rsplit('@').next().unwrap_or(&name);
                let address = address.rsplit_once(':').map_or(address, |(a, _)| a);
                let root = format!("{work}/{address}");
                let log = format!("{root}.log");
                let file = format!("{root}/test_file.txt");
                if commands {
                    m.cmd("id")
                        .args(["-u", user])
                        .stdout(Redirect::Null)
                        .run()
                        .await?;
                    m.cmd("mkdir").args(["-p", &root]).run().await?;
                    m.cmd("chown")
                        .args([&format!("{user}:{user}"), &root])
                        .run()
                        .await?;
                    m.cmd("touch").arg(&log).run().await?;
                    m.cmd("chmod").args(["777", &log]).run().await?;
                    m.cmd("chown").args([user, &log]).run().await?;
                    m.upload(test_file, &file).await?;
                    m.cmd("chown").args([user, &file]).run().await?;
                } else {
                    let uid: u32 = m
                        .cmd("id")
                        .args(["-u", user])
                        .read()
                        .await?
                        .parse()
                        .unwrap_or(0);
                    // chown only where the owner is not already right, as pyinfra and
                    // Ansible do.
                    let owned = |path: String, owner: String| {
                        let m = m.clone();
                        async move {
                            if m.path(&path).metadata().await?.uid() != Some(uid) {
                                m.cmd("chown").args([&owner, &path]).run().await?;
                            }
                            leadpipe::Result::Ok(())
                        }
                    };
                    m.path(&root).mkdir().await?;
                    owned(root.clone(), format!("{user}:{user}")).await?;
                    m.path(&log).append("").await?;
                    m.path(&log).chmod(0o777).await?;
                    owned(log.clone(), user.clone()).await?;
                    m.upload(test_file, &file).await?;
                    owned(file.clone(), user.clone()).await?;
                }
                m.cmd("echo").arg("hi!").read().await
            })
            .await
    });
    println!("{report}");
    println!("total {:?}", began.elapsed());
    let expected_failures = if faulty { 2 } else { 0 };
    if report.failed_count() == expected_failures {
        0
    } else {
        1
    }
}

// ---------------------------------------------------------------------------------------
// The side-by-side runs

/// One timed run, as the lab's harness wrote it.
#[derive(Debug)]
struct Run {
    tool: String,
    hosts: usize,
    ok: bool,
    wall_s: f64,
    client_cpu_s: f64,
    rss_mb: f64,
    log: String,
    load: String,
}

fn orchestrate(sizes: &[usize], alone: &[usize]) {
    let lab = PathBuf::from(lab::var("LAB_DIR"));
    let lab = lab.canonicalize().expect("LAB_DIR exists");
    let fleet_dir = lab.join("baselines/fleet");
    let worker = std::env::current_exe().expect("this program's path");
    let peers =
        std::env::var("BENCH_FLEET_PEERS").unwrap_or_else(|_| "pssh fabric pyinfra ansible".into());
    let port = std::env::var("BENCH_FLEET_PORT").unwrap_or_else(|_| "24600".into());
    let results = tempfile::NamedTempFile::new().expect("a temp file");
    let mut plan: Vec<(usize, Vec<String>)> = Vec::new();
    for &n in sizes {
        let mut cases = vec!["leadpipe".to_owned(), "leadpipe-commands".to_owned()];
        cases.extend(peers.split_whitespace().map(str::to_owned));
        if n == 250 {
            cases.push("leadpipe-faulty".to_owned());
        }
        plan.push((n, cases));
    }
    for &n in alone {
        plan.push((n, vec!["leadpipe".to_owned()]));
    }
    for (n, cases) in &plan {
        let env = fleet_up(&lab, *n, &port);
        for case in cases {
            eprintln!("=== {n} hosts: {case}");
            let mut command = match case.as_str() {
                "leadpipe" | "leadpipe-faulty" | "leadpipe-commands" => {
                    let mut c = Process::new("bash");
                    c.arg("-c")
                        .arg(". \"$0/common.sh\" \"$1\"; timed \"$2\" c100 \"$3\" worker \"$1\" \"$4\"")
                        .arg(&fleet_dir)
                        .arg(n.to_string())
                        .arg(case)
                        .arg(&worker)
                        .arg(case.trim_start_matches("leadpipe"));
                    c
                }
                "pssh" => script(&fleet_dir, "run-pssh.sh", &[&n.to_string()]),
                "fabric" => script(&fleet_dir, "run-fabric.sh", &[&n.to_string()]),
                "pyinfra" => script(&fleet_dir, "run-pyinfra.sh", &[&n.to_string(), "0"]),
                "ansible" => script(&fleet_dir, "run-ansible.sh", &[&n.to_string(), "50"]),
                other => panic!("unknown peer {other}"),
            };
            let status = command
                .envs(&env)
                .env("LAB_DIR", &lab)
                .env("FLEET_RESULTS", results.path())
                .status()
                .expect("bash runs");
            if !status.success() {
                eprintln!("{case} at {n} hosts failed ({status})");
            }
        }
        let down = Process::new("bash")
            .arg(lab.join("fleet-down.sh"))
            .arg(&env["FLEET_DIR"])
            .status();
        if !down.is_ok_and(|s| s.success()) {
            eprintln!("fleet-down.sh failed");
        }
    }
    let text = std::fs::read_to_string(results.path()).unwrap_or_default();
    let runs: Vec<Run> = text.lines().filter_map(parse_run).collect();
    print_table(&runs);
}

fn script(dir: &Path, name: &str, args: &[&str]) -> Process {
    let mut c = Process::new("bash");
    c.arg(dir.join(name)).args(args);
    c
}

/// Starts a fleet of `n` hosts; the `FLEET_*` settings it printed.
fn fleet_up(lab: &Path, n: usize, port: &str) -> BTreeMap<String, String> {
    let output = Process::new("bash")
        .arg(lab.join("fleet-up.sh"))
        .args([&n.to_string(), port])
        .output()
        .expect("fleet-up.sh runs");
    assert!(
        output.status.success(),
        "fleet-up.sh {n} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut env = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some((key, value)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            let words = shell_words(value);
            env.insert(key.to_owned(), words);
        }
    }
    env
}

/// The value of a shell assignment as `fleet-up.sh` prints it: plain, or quoted.
fn shell_words(value: &str) -> String {
    let value = value.trim();
    for quote in ['\'', '"'] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

/// A number or string field of one JSON line written by the lab's harness.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{name}\": "))? + name.len() + 4;
    let rest = &line[at..];
    if let Some(text) = rest.strip_prefix('"') {
        return text.split('"').next();
    }
    rest.split([',', '}']).next().map(str::trim)
}

fn parse_run(line: &str) -> Option<Run> {
    let number = |name: &str| field(line, name).and_then(|v| v.parse::<f64>().ok());
    let hosts = number("hosts")? as usize;
    let tool = field(line, "tool")?.to_owned();
    Some(Run {
        ok: number("rc") == Some(0.0) && number("hosts_ok") == Some(hosts as f64),
        tool,
        hosts,
        wall_s: number("wall_s")?,
        client_cpu_s: number("client_cg_cpu_s").or_else(|| number("cpu_s"))?,
        // The sampled sum over the client's processes (ansible forks), or the largest
        // process's peak when the run ended before the first sample.
        rss_mb: number("tree_rss_peak_mb")?.max(number("max_rss_mb")?),
        log: field(line, "log").unwrap_or_default().to_owned(),
        load: field(line, "load_before").unwrap_or_default().to_owned(),
    })
}

fn print_table(runs: &[Run]) {
    println!(
        "| hosts | tool | wall s | client CPU ms/host | peak client RSS MB | wall / leadpipe's | \
         all hosts done | load at start |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | --- | --- |");
    for run in runs {
        let ours = runs
            .iter()
            .find(|r| r.hosts == run.hosts && r.tool == "leadpipe")
            .map(|r| r.wall_s);
        let ratio = ours.map_or("".into(), |w| format!("{:.2}x", run.wall_s / w));
        println!(
            "| {} | {} | {:.2} | {:.1} | {:.0} | {} | {} | {} |",
            run.hosts,
            run.tool,
            run.wall_s,
            run.client_cpu_s * 1000.0 / run.hosts as f64,
            run.rss_mb,
            ratio,
            if run.ok { "yes" } else { "NO" },
            run.load,
        );
    }
    // Memory after connecting, per size: what each host adds is the slope between sizes
    // (the process's own few MiB of code and runtime are not per host).
    let mut after: Vec<(usize, u64)> = Vec::new();
    for run in runs.iter().filter(|r| r.tool.starts_with("leadpipe")) {
        let Ok(log) = std::fs::read_to_string(&run.log) else {
            continue;
        };
        for line in (log.lines()).filter(|l| l.starts_with("connected ") || l.contains("hosts:")) {
            println!("{} at {} hosts: {line}", run.tool, run.hosts);
            let kib = line
                .split(" KiB after")
                .next()
                .and_then(|l| l.rsplit(' ').next());
            if let (true, Some(Ok(kib))) = (run.tool == "leadpipe", kib.map(str::parse)) {
                after.push((run.hosts, kib));
            }
        }
    }
    after.sort();
    for pair in after.windows(2) {
        let ((n1, kib1), (n2, kib2)) = (pair[0], pair[1]);
        if n2 > n1 {
            let slope = kib2.saturating_sub(kib1) as f64 / (n2 - n1) as f64;
            println!("leadpipe memory from {n1} to {n2} hosts: {slope:.0} KiB per added host");
        }
    }
}
