//! Fleets of real OpenSSH hosts (tests/support/sshd.rs: one sshd listening on several
//! loopback addresses, each a host): results in host order, unreachable hosts among healthy
//! ones, rolling batches with a failure budget, inventories, prefixed live output. Every
//! test skips where sshd is missing (and fails where `CI=true`).

mod support;

use std::{
    fs,
    io::ErrorKind,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use leadpipe::{Error, Fleet, FleetBuilder, HostKeyProblem, Inventory};
use support::sshd::Sshd;

/// Loopback addresses `127.0.0.1` to `127.0.0.N`.
fn addresses(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("127.0.0.{i}")).collect()
}

/// One sshd listening on `127.0.0.1` to `127.0.0.N`.
fn sshd_on(n: usize) -> Option<Sshd> {
    let extra = addresses(n);
    let extra: Vec<&str> = extra[1..].iter().map(String::as_str).collect();
    Sshd::start_on(&extra)
}

/// `user@ADDRESS:PORT` for each address.
fn destinations(sshd: &Sshd, addresses: &[String]) -> Vec<String> {
    (addresses.iter())
        .map(|a| format!("{}@{a}:{}", sshd.user, sshd.port))
        .collect()
}

/// A fleet builder with the harness's key and known_hosts, reading no ssh_config.
fn builder(sshd: &Sshd, inventory: Inventory) -> FleetBuilder {
    let key = sshd.client_key.clone();
    let known_hosts = sshd.known_hosts.clone();
    Fleet::builder(inventory).ssh(move |b| {
        b.identity_file(&key)
            .known_hosts(&known_hosts)
            .ssh_config(None)
    })
}

/// The server address of the connection a command runs on (`$SSH_CONNECTION`'s third
/// word): which host it reached.
const SERVER_ADDRESS: &str = "set -- $SSH_CONNECTION; echo $3";

#[tokio::test]
async fn results_come_in_host_order_each_from_its_host() {
    let Some(sshd) = sshd_on(5) else { return };
    let hosts = addresses(5);
    let fleet = builder(&sshd, Inventory::new(destinations(&sshd, &hosts)))
        .connect()
        .await;
    let connected = fleet.connected().await;
    assert!(connected.is_ok(), "{connected}");
    // The first host finishes last: the report keeps host order, not finishing order.
    let report = fleet
        .run(|m| async move {
            let me = m.cmd("sh").args(["-c", SERVER_ADDRESS]).read().await?;
            let last: u64 = me.rsplit('.').next().unwrap_or("0").parse().unwrap_or(0);
            let nap = format!("{}", (6 - last) as f64 * 0.15);
            m.cmd("sleep").arg(nap).run().await?;
            Ok(me)
        })
        .await;
    assert!(report.is_ok(), "{report}");
    let got: Vec<(&str, &str)> = report
        .iter()
        .map(|(host, result)| (host, result.as_ref().unwrap().as_str()))
        .collect();
    let want = destinations(&sshd, &hosts);
    let want: Vec<(&str, &str)> = (want.iter().map(String::as_str))
        .zip(hosts.iter().map(String::as_str))
        .collect();
    assert_eq!(got, want);
    assert_eq!(report.to_string(), "5 hosts: 5 ok, 0 failed");

    // The one-command shorthand, same order.
    let read = fleet.cmd("sh").args(["-c", SERVER_ADDRESS]).read().await;
    let got: Vec<String> = read.into_iter().map(|(_, r)| r.unwrap()).collect();
    assert_eq!(got, hosts);
}

#[tokio::test]
async fn unreachable_hosts_fail_alone_with_their_reasons() {
    let Some(sshd) = sshd_on(4) else { return };
    // Refused: a port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    // Frozen: the kernel accepts the connection, nobody ever answers.
    let frozen = TcpListener::bind("127.0.0.1:0").unwrap();
    let frozen_port = frozen.local_addr().unwrap().port();
    // Wrong host key: 127.0.0.4 answers, but this known_hosts does not vouch for it.
    let known_hosts = sshd.dir.path().join("known_hosts_without_4");
    let lines: String = fs::read_to_string(&sshd.known_hosts)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("[127.0.0.4]"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&known_hosts, lines).unwrap();

    let user = &sshd.user;
    let port = sshd.port;
    let inventory = Inventory::new([
        format!("{user}@127.0.0.1:{port}"),
        format!("{user}@127.0.0.1:{closed_port}"),
        format!("{user}@127.0.0.2:{port}"),
        format!("{user}@127.0.0.1:{frozen_port}"),
        format!("{user}@127.0.0.4:{port}"),
        format!("{user}@127.0.0.3:{port}"),
        format!("no-such-user@127.0.0.2:{port}"),
    ]);
    let key = sshd.client_key.clone();
    let limit = Duration::from_secs(4);
    let started = Instant::now();
    let fleet = Fleet::builder(inventory)
        .ssh(move |b| {
            b.identity_file(&key)
                .known_hosts(&known_hosts)
                .ssh_config(None)
        })
        .connect_timeout(limit)
        .connect()
        .await;
    // The frozen host is left connecting in the background: the others need not wait.
    let connecting = started.elapsed();
    assert!(connecting < limit, "{connecting:?}");

    let report = fleet
        .run(|m| async move {
            let address = m.cmd("sh").args(["-c", SERVER_ADDRESS]).read().await?;
            Ok((address, started.elapsed()))
        })
        .await;
    let total = started.elapsed();
    // The frozen host costs its own timeout, and nothing on top of the others' time.
    assert!(total >= limit, "{total:?}");
    assert!(total < limit + Duration::from_secs(5), "{total:?}");
    let results: Vec<_> = report.iter().map(|(_, r)| r).collect();
    for (i, address) in [(0, "127.0.0.1"), (2, "127.0.0.2"), (5, "127.0.0.3")] {
        let (answered, when) = results[i].as_ref().unwrap();
        assert_eq!(answered, address, "{report:?}");
        assert!(
            *when < limit,
            "host {i} waited for the frozen one: {when:?}"
        );
    }
    let refused = results[1].as_ref().unwrap_err();
    assert_eq!(
        refused.io_kind(),
        Some(ErrorKind::ConnectionRefused),
        "{refused}"
    );
    let timed_out = results[3].as_ref().unwrap_err();
    assert_eq!(
        timed_out.io_kind(),
        Some(ErrorKind::TimedOut),
        "{timed_out}"
    );
    match results[4].as_ref().unwrap_err() {
        Error::HostKey { problem, .. } => assert_eq!(*problem, HostKeyProblem::Unknown),
        other => panic!("{other}"),
    }
    assert!(
        matches!(results[6].as_ref().unwrap_err(), Error::Auth { .. }),
        "{report}"
    );
    let summary = report.to_string();
    assert!(
        summary.starts_with("7 hosts: 3 ok, 4 failed\n"),
        "{summary}"
    );
    for (i, host) in fleet.hosts().enumerate() {
        let listed = (summary.lines()).any(|l| l.trim_start().starts_with(&format!("{host} ")));
        assert_eq!(listed, [1, 3, 4, 6].contains(&i), "{host} in {summary}");
    }
    assert!(summary.contains("refused"), "{summary}");
    assert!(summary.contains("connect timeout"), "{summary}");
    assert!(summary.contains("host key of"), "{summary}");
    assert!(summary.contains("authentication failed"), "{summary}");
    drop(frozen);
}

#[tokio::test]
async fn batches_stop_once_failures_pass_the_budget() {
    let Some(sshd) = sshd_on(6) else { return };
    let fleet = builder(&sshd, Inventory::new(destinations(&sshd, &addresses(6))))
        .connect()
        .await;
    let connected = fleet.connected().await;
    assert!(connected.is_ok(), "{connected}");
    // Hosts 2 and 3 fail; each host that runs counts itself.
    let ran = AtomicUsize::new(0);
    let work = |m: leadpipe::SshMachine| {
        let ran = &ran;
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
            let me = m.cmd("sh").args(["-c", SERVER_ADDRESS]).read().await?;
            if me == "127.0.0.2" || me == "127.0.0.3" {
                m.cmd("sh")
                    .args(["-c", "echo broken >&2; exit 3"])
                    .run()
                    .await?;
            }
            Ok(me)
        }
    };
    let outcome = |report: &leadpipe::FleetReport<String>| -> String {
        report
            .iter()
            .map(|(_, r)| match r {
                Ok(_) => 'o',
                Err(Error::NotRun { .. }) => '-',
                Err(_) => 'x',
            })
            .collect()
    };

    // Batches of 2, one failure allowed: batch 1 (1 failure) goes on, batch 2 brings the
    // second, batch 3 never starts.
    let report = fleet.clone().batch(2).max_failures(1).run(work).await;
    assert_eq!(outcome(&report), "oxxo--", "{report}");
    assert_eq!(ran.swap(0, Ordering::SeqCst), 4);
    let summary = report.to_string();
    assert!(
        summary.starts_with("6 hosts: 2 ok, 2 failed, 2 not run"),
        "{summary}"
    );
    assert!(
        summary.contains("more than max_failures(1) allows"),
        "{summary}"
    );

    // The default keeps going.
    let report = fleet.run(work).await;
    assert_eq!(outcome(&report), "oxxooo", "{report}");
    assert_eq!(ran.swap(0, Ordering::SeqCst), 6);

    // Fail fast, one host at a time: nothing starts after the first failure.
    let report = fleet.clone().concurrency(1).fail_fast().run(work).await;
    assert_eq!(outcome(&report), "ox----", "{report}");
    assert_eq!(ran.swap(0, Ordering::SeqCst), 2);

    // At most two at once, and two do run at once.
    let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let report = (fleet.clone().concurrency(2))
        .run(|m| {
            let (now, peak) = (&now, &peak);
            async move {
                peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let slept = m.cmd("sleep").arg("0.3").run().await;
                now.fetch_sub(1, Ordering::SeqCst);
                slept
            }
        })
        .await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(peak.load(Ordering::SeqCst), 2);

    // A percentage: 34 % of 6 hosts is 2 failures allowed, so all batches run.
    let report = fleet
        .clone()
        .batch(2)
        .max_failures_percent(34.0)
        .run(work)
        .await;
    assert_eq!(outcome(&report), "oxxooo", "{report}");
    // 20 % of 6 is 1: as max_failures(1).
    let report = (fleet.cmd("sh").args([
        "-c",
        &format!("{SERVER_ADDRESS} | grep -qv '127.0.0.[23]$'"),
    ]))
    .batch(2)
    .max_failures_percent(20.0)
    .read()
    .await;
    assert_eq!(outcome(&report), "oxxo--", "{report}");
}

#[tokio::test]
async fn an_ansible_inventory_with_groups_and_a_destination_file() {
    let Some(sshd) = sshd_on(4) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("hosts.ini");
    fs::write(
        &ini,
        format!(
            "[web]\n\
             web[1:2] ansible_user={user}\n\
             \n\
             [db]\n\
             db1 ansible_host=127.0.0.4\n\
             \n\
             [prod:children]\n\
             web\n\
             db\n\
             \n\
             [prod:vars]\n\
             ansible_port={port}\n\
             ansible_user=nobody-here\n\
             \n\
             [db:vars]\n\
             ansible_user={user}\n\
             \n\
             [all:vars]\n\
             ansible_port=1\n",
            user = sshd.user,
            port = sshd.port,
        ),
    )
    .unwrap();
    // web1 and web2 are ssh_config names, as an Ansible inventory often has them.
    let ssh_config = dir.path().join("ssh_config");
    fs::write(
        &ssh_config,
        "Host web1\n  HostName 127.0.0.2\nHost web2\n  HostName 127.0.0.3\n",
    )
    .unwrap();
    let inventory = Inventory::ansible_ini(&ini).unwrap();
    assert_eq!(
        inventory.groups().collect::<Vec<_>>(),
        ["web", "db", "prod"]
    );

    let read = |inventory: Inventory| {
        let key = sshd.client_key.clone();
        let known_hosts = sshd.known_hosts.clone();
        let ssh_config = ssh_config.clone();
        async move {
            let fleet = Fleet::builder(inventory)
                .ssh(move |b| {
                    b.identity_file(&key)
                        .known_hosts(&known_hosts)
                        .ssh_config(Some(ssh_config.clone()))
                })
                .connect()
                .await;
            let report = fleet.cmd("sh").args(["-c", SERVER_ADDRESS]).read().await;
            report
                .into_iter()
                .map(|(host, r)| format!("{host}={}", r.unwrap_or_else(|e| e.to_string())))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        read(inventory.group("prod")).await,
        ["web1=127.0.0.2", "web2=127.0.0.3", "db1=127.0.0.4"]
    );
    assert_eq!(read(inventory.group("db")).await, ["db1=127.0.0.4"]);
    let missing = read(inventory.group("dbs")).await;
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].starts_with("dbs=") && missing[0].contains("no group \"dbs\""),
        "{missing:?}"
    );

    // A file of destinations, with a range and a comment.
    let list = dir.path().join("hosts.txt");
    fs::write(
        &list,
        format!(
            "# the first three\n{user}@127.0.0.[1-3]:{port}\n\n{user}@web2:{port}  # by its alias\n",
            user = sshd.user,
            port = sshd.port
        ),
    )
    .unwrap();
    let got = read(Inventory::file(&list).unwrap()).await;
    let want: Vec<String> = (1..=3)
        .map(|i| format!("{}@127.0.0.{i}:{}=127.0.0.{i}", sshd.user, sshd.port))
        .chain([format!("{}@web2:{}=127.0.0.3", sshd.user, sshd.port)])
        .collect();
    assert_eq!(got, want);
}

/// The child half of the tests of prefixed output: prints through the fleet, as
/// `LEADPIPE_FLEET_CHILD_MODE` says (`cmd`: `fleet.cmd`; `run`: commands inside
/// `fleet.run`; `log`: echo and a log directory).
#[tokio::test]
async fn prefixed_output_child() {
    let Ok(port) = std::env::var("LEADPIPE_FLEET_CHILD_PORT") else {
        return;
    };
    let var = |name: &str| std::env::var(format!("LEADPIPE_FLEET_CHILD_{name}")).unwrap();
    let (user, key, known_hosts) = (var("USER"), var("KEY"), var("KNOWN_HOSTS"));
    let fleet = Fleet::builder(Inventory::new([
        format!("{user}@127.0.0.1:{port}"),
        format!("{user}@127.0.0.2:{port}"),
    ]))
    .ssh(move |b| {
        b.identity_file(&key)
            .known_hosts(&known_hosts)
            .ssh_config(None)
    })
    .connect()
    .await;
    // Both hosts print 300 lines of 5000 bytes at once, half of them to stderr.
    let script = "set -- $SSH_CONNECTION; i=0; line=$(printf \"%5000s\" | tr ' ' \"${3##*.}\"); \
                  while [ $i -lt 300 ]; do echo \"$i:$line\"; echo \"$i:$line\" >&2; i=$((i+1)); done";
    match var("MODE").as_str() {
        "cmd" => {
            let report = fleet.cmd("sh").args(["-c", script]).run().await;
            assert!(report.is_ok(), "{report}");
        }
        "run" => {
            let report = fleet
                .run(|m| async move { m.cmd("sh").args(["-c", script]).run().await })
                .await;
            assert!(report.is_ok(), "{report}");
        }
        "log" => {
            let report = fleet
                .echo(true)
                .log_dir(var("LOG_DIR"))
                .run(|m| async move {
                    let said = m.cmd("echo").arg("it's read").read().await?;
                    m.cmd("sh")
                        .args(["-c", LOGGED_SCRIPT, "sh"])
                        .arg(said)
                        .run()
                        .await
                })
                .await;
            assert_eq!(report.failed_count(), 2, "{report}");
        }
        mode => panic!("unknown mode {mode}"),
    }
}

/// What each host runs in `echo_and_a_log_directory_per_host`.
const LOGGED_SCRIPT: &str = "echo out; echo \"$1\" >&2; printf partial; exit 3";

/// Runs `prefixed_output_child` in `mode` against `sshd`; its stdout and stderr.
fn run_child(sshd: &Sshd, mode: &str, log_dir: &std::path::Path) -> (String, String) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "prefixed_output_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LEADPIPE_FLEET_CHILD_PORT", sshd.port.to_string())
        .env("LEADPIPE_FLEET_CHILD_USER", &sshd.user)
        .env("LEADPIPE_FLEET_CHILD_KEY", &sshd.client_key)
        .env("LEADPIPE_FLEET_CHILD_KNOWN_HOSTS", &sshd.known_hosts)
        .env("LEADPIPE_FLEET_CHILD_MODE", mode)
        .env("LEADPIPE_FLEET_CHILD_LOG_DIR", log_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "{mode}: {stderr}");
    (stdout, stderr)
}

/// Two hosts print long lines to stdout and stderr at once, through `fleet.cmd` and
/// through commands inside `fleet.run`: every line arrives whole, prefixed, in order.
#[test]
fn prefixed_output_never_mixes_lines() {
    let Some(sshd) = sshd_on(2) else { return };
    let unused = tempfile::tempdir().unwrap();
    for mode in ["cmd", "run"] {
        let (stdout, stderr) = run_child(&sshd, mode, unused.path());
        for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            let mut counts = [0usize; 2];
            for line in text.lines().filter(|l| l.contains(" | ")) {
                let (host, rest) = line.split_once(" | ").unwrap();
                let n = if host.contains("@127.0.0.1:") { 0 } else { 1 };
                let digit = char::from(b'1' + n as u8);
                let (i, body) = rest
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{mode} {stream}: {line:.80}"));
                assert_eq!(i, counts[n].to_string(), "{mode} {stream}: {line:.80}");
                assert!(
                    body.len() == 5000 && body.chars().all(|c| c == digit),
                    "{mode} {stream}: a mixed line: {line:.120}"
                );
                counts[n] += 1;
            }
            assert_eq!(counts, [300, 300], "{mode} {stream}");
        }
    }
}

/// `echo` prints each command line, prefixed, before it runs; `log_dir` keeps each host's
/// command lines with how they ended, and what they printed, whether read or inherited.
#[test]
fn echo_and_a_log_directory_per_host() {
    let Some(sshd) = sshd_on(2) else { return };
    let logs = tempfile::tempdir().unwrap();
    let (stdout, stderr) = run_child(&sshd, "log", logs.path());
    let script_line = format!("sh -c '{LOGGED_SCRIPT}' sh 'it'\\''s read'");
    for address in ["127.0.0.1", "127.0.0.2"] {
        let host = format!("{}@{address}:{}", sshd.user, sshd.port);
        for echoed in [
            format!("{host} | + echo 'it'\\''s read'"),
            format!("{host} | + {script_line}"),
            format!("{host} | it's read"),
        ] {
            assert!(
                stderr.lines().any(|l| l == echoed),
                "no `{echoed}` in stderr:\n{stderr}"
            );
        }
        for printed in [format!("{host} | out"), format!("{host} | partial")] {
            assert!(
                // The test harness's own `test NAME ... ` may start the first line.
                stdout.lines().any(|l| l.ends_with(&printed)),
                "no `{printed}` in stdout:\n{stdout}"
            );
        }
        let dir = logs.path().join(&host);
        let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(read("stdout.log"), "it's read\nout\npartial");
        assert_eq!(read("stderr.log"), "it's read\n");
        let commands = read("commands.log");
        let lines: Vec<&str> = (commands.lines())
            .map(|l| l.split_once(' ').unwrap().1)
            .collect();
        assert_eq!(lines.len(), 4, "{commands}");
        assert_eq!(lines[0], "$ echo 'it'\\''s read'");
        assert!(lines[1].starts_with("# exit code 0 after "), "{commands}");
        assert_eq!(lines[2], format!("$ {script_line}"));
        assert!(lines[3].starts_with("# exit code 3 after "), "{commands}");
    }
}

/// `Fleet` holds any `Machine`: a fleet of local machines runs the same calls.
#[tokio::test]
async fn a_fleet_of_local_machines() {
    let fleet = Fleet::from_machines([leadpipe::local(), leadpipe::local().with_env("X", "2")]);
    let report = fleet.cmd("sh").args(["-c", "echo ${X:-1}"]).read().await;
    let got: Vec<String> = report.into_iter().map(|(_, r)| r.unwrap()).collect();
    assert_eq!(got, ["1", "2"]);
}

#[tokio::test]
async fn uploads_to_every_host_and_downloads_into_a_directory_per_host() {
    let Some(sshd) = sshd_on(3) else { return };
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut hosts = destinations(&sshd, &addresses(3));
    hosts.insert(1, format!("{}@127.0.0.1:{closed_port}", sshd.user));
    let fleet = builder(&sshd, Inventory::new(&hosts)).connect().await;

    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("release.txt");
    fs::write(&source, "release 42\n").unwrap();
    // Every host is the same sshd here: one remote directory each, by its address.
    let remote = sshd.dir.path().join("remote");
    fs::create_dir(&remote).unwrap();
    fs::set_permissions(&remote, fs::Permissions::from_mode(0o777)).unwrap();
    let report = fleet.upload(&source, remote.join("release.txt")).await;
    let bytes: Vec<_> = report
        .iter()
        .map(|(_, r)| r.as_ref().ok().copied())
        .collect();
    assert_eq!(bytes, [Some(11), None, Some(11), Some(11)], "{report}");
    assert_eq!(
        fs::read_to_string(remote.join("release.txt")).unwrap(),
        "release 42\n"
    );

    // Each host writes its own address into a file, then all are downloaded.
    let report = fleet
        .run(|m| {
            let remote = remote.clone();
            async move {
                let me = m.cmd("sh").args(["-c", SERVER_ADDRESS]).read().await?;
                m.path(remote.join(&me)).write(format!("{me}\n")).await?;
                Ok(me)
            }
        })
        .await;
    assert_eq!(report.failed_count(), 1, "{report}");
    let into = local.path().join("logs");
    let report = fleet.download(remote.join("127.0.0.2"), &into).await;
    assert_eq!(report.failed_count(), 1, "{report}");
    for (host, result) in report.iter() {
        let file = into.join(host).join("127.0.0.2");
        assert_eq!(result.is_ok(), file.exists(), "{host}: {report}");
        if result.is_ok() {
            assert_eq!(fs::read_to_string(&file).unwrap(), "127.0.0.2\n");
        }
    }
    assert!(!into.join(&hosts[1]).exists());
}

/// Threads of leadpipe's runtime (its workers and blocking threads) alive now; an idle
/// blocking thread lives on for 10 s.
fn leadpipe_threads() -> usize {
    (fs::read_dir("/proc/self/task").unwrap())
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "leadpipe")
        .count()
}

/// The child half of `connecting_many_hosts_at_once_starts_few_threads`, alone in its
/// process so that no other test's blocking work adds threads.
#[tokio::test]
async fn connecting_many_hosts_child() {
    if std::env::var_os("LEADPIPE_THREADS_CHILD").is_none() {
        return;
    }
    let Some(sshd) = sshd_on(4) else { return };
    let hosts: Vec<String> = addresses(4).into_iter().cycle().take(60).collect();
    let fleet = builder(&sshd, Inventory::new(destinations(&sshd, &hosts)))
        .concurrency(60)
        .connect()
        .await;
    let connected = fleet.connected().await;
    assert!(connected.is_ok(), "{connected}");
    let threads = leadpipe_threads();
    // 2 workers, 4 resolving, up to 4 more just done.
    assert!(threads <= 12, "{threads} threads for 60 connections");
}

/// Connecting many hosts at once resolves their settings on a few blocking threads, not
/// on a thread per host (each thread's stack and allocator cache would stay resident).
#[test]
fn connecting_many_hosts_at_once_starts_few_threads() {
    if Sshd::start().is_none() {
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "connecting_many_hosts_child", "--test-threads=1"])
        .env("LEADPIPE_THREADS_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// This process's open-file limit: (soft, hard).
fn open_file_limit() -> (libc::rlim_t, libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

/// sshd drops the connections over its `MaxStartups` before its banner; a burst of
/// connections to many hosts behind one such sshd all log in, retried rather than
/// reported as failures. Connecting also raised the open-file limit to the hard one.
#[tokio::test]
async fn a_handshake_dropped_by_max_startups_is_retried() {
    let (_, hard) = open_file_limit();
    let lowered = libc::rlimit {
        rlim_cur: hard.min(512),
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let hosts = addresses(12);
    let extra: Vec<&str> = hosts[1..].iter().map(String::as_str).collect();
    let Some(sshd) = Sshd::start_on_with(&extra, &["MaxStartups 2:100:2"]) else {
        return;
    };
    let fleet = builder(&sshd, Inventory::new(destinations(&sshd, &hosts)))
        .concurrency(12)
        .connect()
        .await;
    let connected = fleet.connected().await;
    assert!(connected.is_ok(), "{connected}");
    assert_eq!(open_file_limit(), (hard, hard));
    let log = sshd.log_text();
    assert!(
        log.contains("MaxStartups") || log.contains("drop connection"),
        "sshd dropped nothing, so nothing was retried:\n{log}"
    );
}
