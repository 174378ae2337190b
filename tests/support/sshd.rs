//! A real OpenSSH server for leadpipe's SSH integration tests.
//!
//! [`Sshd::start`] starts `/usr/sbin/sshd` on a free port of 127.0.0.1 with everything it
//! needs in a temp dir of its own: host key, config, `authorized_keys`, client keys, a
//! `known_hosts` line and a client config for the OpenSSH `ssh`. Every `Sshd` is independent,
//! so tests (and test binaries) can start as many as they like in parallel. Dropping it kills
//! the server and every process it started, by pid, and removes the dir.
//!
//! Include it with `#[path = "support/sshd.rs"] mod sshd;` or through `mod support;`
//! (`support::sshd`). It needs only std and `tempfile`.
//!
//! Without sshd the tests skip (`start` prints one line and returns `None`); with `CI=true`
//! they fail instead, so that CI cannot pass without running them.
//!
//! Root and non-root: the tests run as root in CI. As root, the harness creates the user
//! [`TEST_USER`] once (shared by all harnesses, left in place afterwards) and sets its
//! password, and root can log in by key. Not as root, sshd runs as the current user and can
//! only log that user in: [`Sshd::privileged`] is false, [`Sshd::user`] is the current user,
//! password logins cannot work (sshd cannot read /etc/shadow) and `harness-root` cannot log
//! in. Tests of those parts check `privileged` first.
//!
//! A test run that is killed outright (SIGKILL, not a panic) cannot run `Drop`: its sshd
//! keeps running, with its dir in /tmp/leadpipe-sshd.*; the command line names the dir.
#![allow(dead_code)]

use leadpipe::{SshBuilder, SshMachine};
use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Where the harness looks for the server; nowhere else (sshd needs an absolute path anyway:
/// it re-executes itself for every connection).
pub const SSHD: &str = "/usr/sbin/sshd";
/// The normal (non-root) user the harness creates when it runs as root.
pub const TEST_USER: &str = "leadpipe-test";
/// A second name for uid 0, with `/bin/sh` as its login shell (see [`Sshd::users`]).
pub const ROOT_ALIAS: &str = "leadpipe-root";
/// [`TEST_USER`]'s password, set with `chpasswd` every time a test binary starts its first
/// harness (`UsePAM no` checks passwords against /etc/shadow: a locked account would not do).
pub const TEST_PASSWORD: &str = "leadpipe-test-password";
/// The passphrase of [`Sshd::client_key_encrypted`].
pub const PASSPHRASE: &str = "leadpipe-passphrase";

/// How long sshd gets to answer with its banner before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many free ports to try when another process takes ours between probe and bind.
const PORT_ATTEMPTS: usize = 5;

/// A running OpenSSH server on 127.0.0.1, its keys and its client configuration.
pub struct Sshd {
    /// Always "127.0.0.1".
    pub host: String,
    /// The port sshd listens on.
    pub port: u16,
    /// The server's own dir (mode 0755: see the comment in `try_start`); removed on drop.
    pub dir: tempfile::TempDir,
    /// One line, `[127.0.0.1]:PORT ssh-ed25519 AAAA...`, for this server's host key.
    pub known_hosts: PathBuf,
    /// The host key's fingerprint as `ssh-keygen -lf` prints it: `SHA256:...`.
    pub host_key_fingerprint: String,
    /// An ed25519 client key without passphrase, in `authorized_keys`.
    pub client_key: PathBuf,
    /// An ed25519 client key encrypted with [`Sshd::passphrase`], in `authorized_keys`.
    pub client_key_encrypted: PathBuf,
    /// The passphrase of `client_key_encrypted`.
    pub passphrase: &'static str,
    /// An RSA 3072 client key (for rsa-sha2-256/512), in `authorized_keys`.
    pub client_key_rsa: PathBuf,
    /// The normal user to log in as: [`TEST_USER`], or the current user when not root.
    pub user: String,
    /// `user`'s password (usable only when `privileged`).
    pub password: &'static str,
    /// True when sshd runs as root: `user` is [`TEST_USER`] with a working password, and
    /// root can log in by key (`harness-root`). False when the tests do not run as root.
    pub privileged: bool,
    /// sshd's own log (`-E`, LogLevel VERBOSE), for failure messages.
    pub log: PathBuf,
    /// The listening sshd (`sshd -D`: it stays in the foreground, so this is sshd itself).
    child: Child,
}

impl Sshd {
    /// Starts a server with the default configuration (see [`Sshd::start_with`]).
    ///
    /// `None` means "skip this test": sshd is not installed or could not be started, and one
    /// line saying so went to stderr. With `CI=true` that panics instead.
    pub fn start() -> Option<Sshd> {
        Sshd::start_with(&[])
    }

    /// Starts a server with `extra_config` lines added to its sshd_config, e.g.
    /// `"MaxSessions 2"` or `"PasswordAuthentication no"`.
    ///
    /// sshd keeps the *first* value it reads for a keyword, so the extra lines go before the
    /// harness's defaults and override them; from the first `Match` line on they go at the
    /// end, because everything after a `Match` belongs to it.
    ///
    /// The defaults: ListenAddress 127.0.0.1, its own ed25519 host key, PidFile none, an
    /// absolute AuthorizedKeysFile (the same keys for every user), UsePAM no,
    /// PasswordAuthentication yes, KbdInteractiveAuthentication yes (but with UsePAM no sshd
    /// has no keyboard-interactive device, so that method never succeeds), PermitRootLogin
    /// prohibit-password, StrictModes no, AllowTcpForwarding yes, AllowStreamLocalForwarding
    /// yes, Subsystem sftp internal-sftp, AcceptEnv LEADPIPE_*, LogLevel VERBOSE, MaxStartups
    /// 100:30:200, and MaxSessions left at OpenSSH's default, 10.
    pub fn start_with(extra_config: &[&str]) -> Option<Sshd> {
        match Sshd::try_start(extra_config) {
            Ok(sshd) => Some(sshd),
            Err(reason) => {
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("cannot start the test sshd: {reason}");
                }
                eprintln!("skipped: {}", reason.lines().next().unwrap_or_default());
                None
            }
        }
    }

    /// Starts one server that also listens on each of `addresses` (loopback ones such as
    /// `127.0.0.2`, on the same port), with a known_hosts line for each: many hosts for
    /// fleet tests from one sshd.
    pub fn start_on(addresses: &[&str]) -> Option<Sshd> {
        Sshd::start_on_with(addresses, &[])
    }

    /// [`start_on`](Sshd::start_on) with `extra_config` lines, as
    /// [`start_with`](Sshd::start_with) takes them.
    pub fn start_on_with(addresses: &[&str], extra_config: &[&str]) -> Option<Sshd> {
        let mut listen: Vec<String> = (addresses.iter())
            .map(|a| format!("ListenAddress {a}"))
            .collect();
        listen.extend(extra_config.iter().map(|line| line.to_string()));
        let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
        let sshd = Sshd::start_with(&listen)?;
        let line = fs::read_to_string(&sshd.known_hosts).expect("the harness wrote it");
        let key = line.split_once(' ').map_or("", |(_, key)| key);
        let mut lines = line.clone();
        for address in addresses {
            lines.push_str(&format!("[{address}]:{} {key}", sshd.port));
        }
        fs::write(&sshd.known_hosts, lines).expect("known_hosts is writable");
        Some(sshd)
    }

    /// A client config for the OpenSSH `ssh -F`, with the hosts `harness` (as `user`) and
    /// `harness-root` (as root), both with `client_key`, `IdentitiesOnly yes`, this server's
    /// `known_hosts`, `StrictHostKeyChecking yes` and `BatchMode yes` (override with `-o` on
    /// the command line: the first value wins there too).
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The pid of the listening sshd (which [`Sshd::pgrep`] does not include).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Pids (sorted) of the live processes whose command line (arguments joined by spaces)
    /// contains `pattern` and that belong to this server: descendants of the listening sshd,
    /// and processes whose environment says they come from a session on this server
    /// (`SSH_CONNECTION` ending in `127.0.0.1 PORT`). The second kind catches what a session
    /// left behind: once its session ends, such a process is re-parented to init and no
    /// longer a descendant. A process that clears its environment and detaches escapes both.
    /// Other harnesses' processes are never included, so parallel tests do not see each
    /// other's; the test process and its `ssh` clients are not included either. The empty
    /// pattern gives all of them.
    pub fn pgrep(&self, pattern: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .processes()
            .into_iter()
            .filter(|&pid| {
                fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    let line: Vec<u8> = cmdline
                        .strip_suffix(b"\0")
                        .unwrap_or(&cmdline)
                        .iter()
                        .map(|&b| if b == 0 { b' ' } else { b })
                        .collect();
                    String::from_utf8_lossy(&line).contains(pattern)
                })
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    /// sshd's log so far (empty if it cannot be read).
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// An `SshMachine` builder for this server as `user`: the harness's ed25519 key and
    /// known_hosts, hermetic from `~/.ssh` (no config file read).
    pub fn builder(&self, user: &str) -> SshBuilder {
        SshMachine::builder(&self.host)
            .port(self.port)
            .user(user)
            .identity_file(&self.client_key)
            .known_hosts(&self.known_hosts)
            .ssh_config(None)
    }

    /// Logs in as `user`; a failure panics with the server's log.
    pub async fn login(&self, user: &str) -> SshMachine {
        (self.builder(user).connect().await)
            .unwrap_or_else(|e| panic!("login as {user}: {e}\nsshd log:\n{}", self.log_text()))
    }

    /// Logs in as the normal user ([`Sshd::user`]).
    pub async fn machine(&self) -> SshMachine {
        self.login(&self.user).await
    }

    /// The users to run a test body as: the normal user, and a root login when root can
    /// log in. That login is [`ROOT_ALIAS`], uid 0 under another name with `/bin/sh` as its
    /// shell: sshd treats it exactly as root (it goes by the uid: no `signal` requests, no
    /// privilege separation after login), but it does not run root's own rc files, which
    /// on a developer's machine may be slow or wait on locks that a killed command left
    /// behind (pyenv's rehash lock waits 60 s).
    pub fn users(&self) -> Vec<String> {
        let mut users = vec![self.user.clone()];
        if self.privileged {
            ensure_root_alias();
            users.push(ROOT_ALIAS.to_owned());
        }
        users
    }

    /// A user whose login shell is `shell` (`bash`, `dash`, `zsh`, `tcsh`, `fish`), created
    /// once as `leadpipe-sh-SHELL` (and left in place), who logs in with the harness's keys
    /// like every user. `None` when not root, or when the shell is not installed (outside
    /// CI; in CI that fails the test, since `.ci/run` installs them).
    pub fn shell_user(&self, shell: &str) -> Option<String> {
        if !self.privileged {
            return None;
        }
        let Some(path) = ["/bin", "/usr/bin"]
            .iter()
            .map(|dir| format!("{dir}/{shell}"))
            .find(|path| Path::new(path).exists())
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "the login shell {shell} is not installed"
            );
            eprintln!("skipped: no {shell}");
            return None;
        };
        let name = format!("leadpipe-sh-{shell}");
        create_user(&name, &["-m", "-s", &path]);
        Some(name)
    }

    /// A user whose login shell is bash and whose `~/.bashrc` is `bashrc` (written anew
    /// each time), created once as `leadpipe-NAME` (and left in place). `None` when not
    /// root. bash reads `~/.bashrc` for every command sshd starts.
    pub fn bashrc_user(&self, name: &str, bashrc: &str) -> Option<String> {
        if !self.privileged {
            return None;
        }
        let name = format!("leadpipe-{name}");
        create_user(&name, &["-m", "-s", "/bin/bash"]);
        let home = passwd_entry(&name).expect("just created").home;
        fs::write(Path::new(&home).join(".bashrc"), bashrc).unwrap();
        Some(name)
    }

    /// [`Sshd::start_with`] without the skip-or-panic: why the server could not start
    /// (for a failed sshd: the end of its log), whatever `CI` says.
    pub fn try_start(extra_config: &[&str]) -> Result<Sshd, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!("{SSHD} not found; install openssh-server"));
        }
        if which("ssh-keygen").is_none() {
            return Err("ssh-keygen not found; install openssh-client".into());
        }
        let privileged = current_uid() == Some(0);
        let user = if privileged {
            ensure_test_user()?;
            // The privilege-separation dir: sshd refuses to start without it ("Missing
            // privilege separation directory: /run/sshd"), and nothing creates it on a
            // machine where the system sshd never ran. Creating it twice at once is fine.
            fs::create_dir_all("/run/sshd")
                .and_then(|()| fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)))
                .map_err(|e| format!("cannot create /run/sshd: {e}"))?;
            TEST_USER.to_owned()
        } else {
            current_user_name().ok_or("cannot find the current user in /etc/passwd")?
        };

        // In /tmp, not $TMPDIR: the test user must be able to reach authorized_keys, and
        // $TMPDIR may be under a home it cannot enter.
        let dir = tempfile::Builder::new()
            .prefix("leadpipe-sshd.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temp dir in /tmp: {e}"))?;
        let d = dir.path().to_owned();
        // sshd reads AuthorizedKeysFile as the user logging in, and TempDir makes the dir
        // 0700 root: open it to everyone so TEST_USER can get in (the private keys in it stay
        // 0600, and they are throw-away test keys anyway).
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;

        let host_key = d.join("ssh_host_ed25519_key");
        let client_key = d.join("id_ed25519");
        let client_key_encrypted = d.join("id_ed25519_encrypted");
        let client_key_rsa = d.join("id_rsa");
        // ssh-keygen writes private keys 0600 and public keys 0644: sshd insists on the first
        // for its host key, ssh for the client keys (both run as the user of the tests, who
        // owns them).
        let keys: [(&Path, &[&str], &str); 4] = [
            (&host_key, &["-t", "ed25519"], ""),
            (&client_key, &["-t", "ed25519"], ""),
            (&client_key_encrypted, &["-t", "ed25519"], PASSPHRASE),
            (&client_key_rsa, &["-t", "rsa", "-b", "3072"], ""),
        ];
        // RSA generation takes a moment: run the four at once.
        let keygens: Vec<_> = keys
            .iter()
            .map(|(path, kind, passphrase)| {
                Command::new("ssh-keygen")
                    .arg("-q")
                    .args(*kind)
                    .arg("-N")
                    .arg(passphrase)
                    .arg("-C")
                    .arg(format!(
                        "leadpipe-harness-{}",
                        path.file_name().unwrap_or_default().to_string_lossy()
                    ))
                    .arg("-f")
                    .arg(path)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot run ssh-keygen: {e}"))
            })
            .collect::<Result<_, _>>()?;
        for keygen in keygens {
            let out = keygen.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let public = |key: &Path| {
            fs::read_to_string(format!("{}.pub", key.display()))
                .map_err(|e| format!("cannot read the public key of {}: {e}", key.display()))
        };
        let authorized_keys = d.join("authorized_keys");
        let mut authorized = String::new();
        for key in [&client_key, &client_key_encrypted, &client_key_rsa] {
            authorized.push_str(&public(key)?);
        }
        fs::write(&authorized_keys, authorized).map_err(|e| e.to_string())?;
        // Readable by the user logging in (see the dir above); StrictModes no spares us the
        // ownership checks sshd would otherwise make on it and on /tmp.
        fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
        let host_public = public(&host_key)?;
        let fingerprint = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(format!("{}.pub", host_key.display()))
            .output()
            .map_err(|e| e.to_string())?;
        // "256 SHA256:... comment (ED25519)"
        let host_key_fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
            .split_whitespace()
            .nth(1)
            .filter(|f| f.starts_with("SHA256:"))
            .ok_or("ssh-keygen -lf printed no fingerprint")?
            .to_owned();

        let log = d.join("sshd.log");
        let config = d.join("sshd_config");
        let (mut child, port) = start_listening(&d, &config, &log, extra_config, &host_key)?;

        // Only now is the port known.
        let known_hosts = d.join("known_hosts");
        let mut host_key_fields = host_public.split_whitespace();
        let host_line = format!(
            "[127.0.0.1]:{port} {} {}\n",
            host_key_fields.next().unwrap_or_default(),
            host_key_fields.next().unwrap_or_default()
        );
        let mut ssh_config = String::new();
        for (host, login) in [("harness", user.as_str()), ("harness-root", "root")] {
            ssh_config.push_str(&format!(
                "Host {host}\n\
                 \x20   HostName 127.0.0.1\n\
                 \x20   Port {port}\n\
                 \x20   User {login}\n\
                 \x20   IdentityFile {key}\n\
                 \x20   IdentitiesOnly yes\n\
                 \x20   UserKnownHostsFile {known}\n\
                 \x20   GlobalKnownHostsFile /dev/null\n\
                 \x20   StrictHostKeyChecking yes\n\
                 \x20   UpdateHostKeys no\n\
                 \x20   BatchMode yes\n\
                 \x20   ConnectTimeout 10\n\
                 \x20   LogLevel ERROR\n",
                key = client_key.display(),
                known = known_hosts.display(),
            ));
        }
        let written = fs::write(&known_hosts, host_line)
            .and_then(|()| fs::write(d.join("ssh_config"), ssh_config));
        if let Err(e) = written {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot write the client files: {e}"));
        }

        Ok(Sshd {
            host: "127.0.0.1".into(),
            port,
            dir,
            known_hosts,
            host_key_fingerprint,
            client_key,
            client_key_encrypted,
            passphrase: PASSPHRASE,
            client_key_rsa,
            user,
            password: TEST_PASSWORD,
            privileged,
            log,
            child,
        })
    }

    /// The live (not zombie) processes of this server, not counting the listener itself: see
    /// [`Sshd::pgrep`].
    fn processes(&self) -> Vec<u32> {
        let table = process_table();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&pid, &(ppid, _)) in &table {
            children.entry(ppid).or_default().push(pid);
        }
        let mut ours = HashSet::new();
        let mut todo = vec![self.child.id()];
        while let Some(pid) = todo.pop() {
            for &child in children.get(&pid).into_iter().flatten() {
                if ours.insert(child) {
                    todo.push(child);
                }
            }
        }
        let me = std::process::id();
        for &pid in table.keys() {
            if pid != me && pid != self.child.id() && self.started_by_session(pid) {
                ours.insert(pid);
            }
        }
        ours.retain(|pid| table.get(pid).is_some_and(|&(_, state)| state != 'Z'));
        ours.into_iter().collect()
    }

    /// Whether `pid`'s environment has `SSH_CONNECTION=<client> <port> 127.0.0.1 <our port>`,
    /// which sshd sets for every session and its processes inherit. The port identifies this
    /// server as long as it runs: nobody else can listen on 127.0.0.1:PORT meanwhile.
    fn started_by_session(&self, pid: u32) -> bool {
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        environ.split(|&b| b == 0).any(|var| {
            var.strip_prefix(b"SSH_CONNECTION=").is_some_and(|value| {
                let value = String::from_utf8_lossy(value);
                let fields: Vec<&str> = value.split(' ').collect();
                fields.len() == 4 && fields[2] == "127.0.0.1" && fields[3] == self.port.to_string()
            })
        })
    }
}

impl Drop for Sshd {
    /// Kills every process of this server (see [`Sshd::pgrep`]) and then the listener, by
    /// pid, and removes the dir. Never by name: other sshds on this machine are not ours.
    fn drop(&mut self) {
        let listener = self.child.id();
        if matches!(self.child.try_wait(), Ok(None)) {
            // Freeze the tree from the top down: a stopped process cannot fork, so once a
            // scan finds nothing new, every process is known and stays where it is. Killed
            // right away instead, a per-connection sshd could start one more session whose
            // process would escape to init.
            let mut stopped = HashSet::from([listener]);
            let mut todo = vec![listener];
            for _ in 0..100 {
                signal("STOP", &todo);
                todo = self.processes();
                todo.retain(|pid| !stopped.contains(pid));
                if todo.is_empty() {
                    break;
                }
                stopped.extend(&todo);
            }
            // The listener stays (stopped) until the end: it holds the port, and with it
            // the meaning of SSH_CONNECTION=... PORT, so that the rounds below cannot hit a
            // new harness that got the same port.
            stopped.remove(&listener);
            signal("KILL", &stopped.into_iter().collect::<Vec<_>>());
            // Anything that slipped through (a process between fork and exec has no
            // SSH_CONNECTION yet): until two scans in a row find nothing.
            let mut empty_scans = 0;
            for _ in 0..100 {
                let pids = self.processes();
                if pids.is_empty() {
                    empty_scans += 1;
                    if empty_scans == 2 {
                        break;
                    }
                } else {
                    empty_scans = 0;
                    signal("KILL", &pids);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `ssh-agent -D` listening on a socket of the test's choosing, killed and reaped on
/// drop. Nothing of the test process's environment changes.
pub struct SshAgent {
    /// The agent's socket (what `SSH_AUTH_SOCK` would name).
    pub socket: PathBuf,
    child: Child,
}

impl SshAgent {
    /// Starts the agent on `socket` and waits until the socket exists; panics if it
    /// cannot.
    pub fn start(socket: &Path) -> SshAgent {
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent runs");
        let agent = SshAgent {
            socket: socket.to_owned(),
            child,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// `ssh-add KEY`: the key, and `KEY-cert.pub` when it is beside it.
    pub fn add(&self, key: &Path) {
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .stdin(Stdio::null())
            .output()
            .expect("ssh-add runs");
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes an ed25519 key pair without passphrase at `path` (and `path.pub`), with
/// `ssh-keygen`; panics when it fails.
pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("leadpipe-test-{}", path.display()))
        .arg("-f")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What [`sign`] makes.
pub enum CertKind {
    /// A user certificate (`ssh-keygen -s`).
    User,
    /// A host certificate (`ssh-keygen -s -h`).
    Host,
}

/// Signs the public key `public` (a `.pub` file) with the CA private key `ca`, as
/// `ssh-keygen -s CA -I ID -n PRINCIPALS -V VALIDITY` does: `principals` comma-separated
/// (empty: none, valid for every name), `validity` in ssh-keygen's syntax (`-5m:+1h`,
/// `20200101:20200102`, `always:forever`). Returns the certificate's path
/// (`KEY-cert.pub` beside `public`, as ssh-keygen writes it).
pub fn sign(ca: &Path, public: &Path, kind: CertKind, principals: &str, validity: &str) -> PathBuf {
    let mut command = Command::new("ssh-keygen");
    command
        .arg("-q")
        .arg("-s")
        .arg(ca)
        .args(["-I", "leadpipe-test-cert", "-V", validity]);
    if let CertKind::Host = kind {
        command.arg("-h");
    }
    if !principals.is_empty() {
        command.arg("-n").arg(principals);
    }
    let out = command
        .arg(public)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen -s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = public.to_string_lossy();
    PathBuf::from(format!(
        "{}-cert.pub",
        name.strip_suffix(".pub").unwrap_or(&name)
    ))
}

/// Picks a free port, starts sshd on it and waits until it answers; retries with another port
/// when something else took it first.
fn start_listening(
    d: &Path,
    config: &Path,
    log: &Path,
    extra_config: &[&str],
    host_key: &Path,
) -> Result<(Child, u16), String> {
    let mut last_error = String::new();
    for _ in 0..PORT_ATTEMPTS {
        // Bind port 0 to let the kernel choose a free port, then let go of it for sshd.
        // Another process may take it in between: sshd then fails to bind and we retry.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        fs::write(config, sshd_config(d, port, extra_config, host_key))
            .map_err(|e| e.to_string())?;
        let _ = fs::remove_file(log);
        let stderr = fs::File::create(log).map_err(|e| e.to_string())?;
        // -D: stay in the foreground, so the child is the listener itself; -E: log to a file
        // (stderr goes there too, for anything said before the log is open).
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(config)
            .arg("-E")
            .arg(log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {SSHD}: {e}"))?;
        match wait_until_ready(&mut child, port, log) {
            Ok(()) => return Ok((child, port)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = fs::read_to_string(log).unwrap_or_default();
                // One line that says it all (for the skip message), then the context.
                let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
                last_error = format!("{e}: {last}\nthe end of sshd's log:\n{}", tail(&text, 20));
                if !text.contains("Address already in use") {
                    break;
                }
            }
        }
    }
    Err(last_error)
}

/// Waits until our sshd logs that it listens on `port` and the port answers with an SSH-2.0
/// banner. Both, because after a lost bind race the banner may come from someone else.
fn wait_until_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let listening = format!("Server listening on 127.0.0.1 port {port}");
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited ({status}) on port {port}"));
        }
        if fs::read_to_string(log).is_ok_and(|text| text.contains(&listening))
            && banner(port).is_some_and(|b| b.starts_with("SSH-2.0-"))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "sshd did not answer on port {port} within {START_TIMEOUT:?}"
    ))
}

/// The first line the server on `port` sends.
fn banner(port: u16) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    // Say who we are and leave: sshd logs a short pre-auth disconnect, nothing else.
    let _ = stream.write_all(b"SSH-2.0-leadpipe_harness_probe\r\n");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}

fn sshd_config(d: &Path, port: u16, extra_config: &[&str], host_key: &Path) -> String {
    let at_match = extra_config
        .iter()
        .position(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case("match"))
        })
        .unwrap_or(extra_config.len());
    let (overrides, matches) = extra_config.split_at(at_match);
    let mut text = String::from("# leadpipe test sshd (tests/support/sshd.rs)\n");
    for line in overrides {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         HostKey {host_key}\n\
         PidFile none\n\
         AuthorizedKeysFile {keys}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication yes\n\
         KbdInteractiveAuthentication yes\n\
         PermitEmptyPasswords no\n\
         PermitRootLogin prohibit-password\n\
         UsePAM no\n\
         StrictModes no\n\
         AllowTcpForwarding yes\n\
         AllowStreamLocalForwarding yes\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         AcceptEnv LEADPIPE_*\n\
         Subsystem sftp internal-sftp\n\
         LogLevel VERBOSE\n",
        host_key = host_key.display(),
        keys = d.join("authorized_keys").display(),
    ));
    // Start refusing unauthenticated connections only at 100, not OpenSSH's 10: tests open
    // many connections at once and a dropped one would look like a client bug. Unlike most
    // keywords, sshd takes the last MaxStartups: a test's own is then the only one.
    let own_max_startups =
        (overrides.iter()).any(|line| line.to_ascii_lowercase().starts_with("maxstartups"));
    if !own_max_startups {
        text.push_str("MaxStartups 100:30:200\n");
    }
    // MaxSessions is not set: OpenSSH's default (10 sessions per connection) is what real
    // servers have, and what the client must cope with.
    for line in matches {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Creates [`TEST_USER`] if it is missing and sets its password; once per test binary.
/// Several test binaries may do this at the same time: `useradd` and `chpasswd` lock
/// /etc/passwd and /etc/shadow and fail (rather than wait) when another one holds the lock,
/// so both are retried, and "already exists" from `useradd` counts as success.
fn ensure_test_user() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let mut error = String::new();
        for _ in 0..100 {
            if passwd_entry(TEST_USER).is_some() {
                break;
            }
            let out = Command::new("/usr/sbin/useradd")
                .args(["-m", "-s", "/bin/sh", TEST_USER])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run useradd: {e}"))?;
            // 0: created; 9: someone else created it meanwhile; else (10: lock busy) retry.
            if !matches!(out.status.code(), Some(0 | 9)) {
                error = String::from_utf8_lossy(&out.stderr).into_owned();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let entry = passwd_entry(TEST_USER)
            .ok_or_else(|| format!("cannot create the user {TEST_USER}: {error}"))?;
        // An account made elsewhere without -m: sshd needs the home to chdir into.
        let home = Path::new(&entry.home);
        if !home.is_dir() {
            fs::create_dir_all(home)
                .and_then(|()| std::os::unix::fs::chown(home, Some(entry.uid), Some(entry.gid)))
                .map_err(|e| format!("cannot create {}: {e}", home.display()))?;
        }
        for _ in 0..100 {
            let mut chpasswd = Command::new("/usr/sbin/chpasswd")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run chpasswd: {e}"))?;
            let mut stdin = chpasswd.stdin.take().expect("piped stdin");
            let _ = writeln!(stdin, "{TEST_USER}:{TEST_PASSWORD}");
            drop(stdin);
            let out = chpasswd.wait_with_output().map_err(|e| e.to_string())?;
            if out.status.success() {
                return Ok(());
            }
            error = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("cannot set the password of {TEST_USER}: {error}"))
    })
    .clone()
}

/// Logins for sudo tests, each with its own rule in `/etc/sudoers.d/leadpipe-tests`, all
/// with [`TEST_PASSWORD`] and the harness's keys; and a user to become.
pub struct SudoUsers {
    /// `ALL` with a password: sudo asks every time (`timestamp_timeout=0`), with a
    /// lecture, its own prompt text and its own bad-password message.
    pub password: &'static str,
    /// `NOPASSWD: ALL`.
    pub nopasswd: &'static str,
    /// `ALL` with a password and `requiretty`.
    pub tty: &'static str,
    /// A service account to become (`/bin/sh`, home `/var/lib/leadpipe-pg`), as
    /// `postgres` is.
    pub service: &'static str,
}

/// The sudo rules of [`SudoUsers`].
const SUDOERS: &str = "\
Defaults:leadpipe-sudo-pw timestamp_timeout=0, lecture=always, passprompt=\"Custom prompt for %p: \", badpass_message=\"Nope, again.\"
leadpipe-sudo-pw ALL=(ALL:ALL) ALL
leadpipe-sudo-nopw ALL=(ALL:ALL) NOPASSWD: ALL
Defaults:leadpipe-sudo-tty requiretty, timestamp_timeout=0
leadpipe-sudo-tty ALL=(ALL:ALL) ALL
";

impl Sshd {
    /// Creates the [`SudoUsers`] and their sudoers file (once per test binary, left in
    /// place). `None` (skip) when not root or without `sudo`; in CI a missing `sudo` fails,
    /// since `.ci/run` installs it.
    pub fn sudo_users(&self) -> Option<SudoUsers> {
        if !self.privileged {
            eprintln!("skipped: sudo tests need root");
            return None;
        }
        if !Path::new("/usr/bin/sudo").exists() {
            assert!(std::env::var_os("CI").is_none(), "sudo is not installed");
            eprintln!("skipped: no sudo");
            return None;
        }
        static DONE: OnceLock<()> = OnceLock::new();
        DONE.get_or_init(|| {
            for name in [
                "leadpipe-sudo-pw",
                "leadpipe-sudo-nopw",
                "leadpipe-sudo-tty",
            ] {
                create_user(name, &["-m", "-s", "/bin/sh"]);
                set_password(name, TEST_PASSWORD);
            }
            create_user(
                "leadpipe-pg",
                &["-m", "-d", "/var/lib/leadpipe-pg", "-s", "/bin/sh"],
            );
            let file = Path::new("/etc/sudoers.d/leadpipe-tests");
            let partial = file.with_extension("partial");
            fs::write(&partial, SUDOERS).expect("write the sudoers file");
            fs::set_permissions(&partial, fs::Permissions::from_mode(0o440)).unwrap();
            let check = Command::new("visudo")
                .args(["-c", "-q", "-f"])
                .arg(&partial)
                .output()
                .expect("visudo");
            assert!(check.status.success(), "{check:?}");
            fs::rename(&partial, file).expect("install the sudoers file");
        });
        Some(SudoUsers {
            password: "leadpipe-sudo-pw",
            nopasswd: "leadpipe-sudo-nopw",
            tty: "leadpipe-sudo-tty",
            service: "leadpipe-pg",
        })
    }
}

/// Sets `name`'s password (retried while another process holds the shadow lock).
fn set_password(name: &str, password: &str) {
    for _ in 0..100 {
        let mut chpasswd = Command::new("/usr/sbin/chpasswd")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chpasswd");
        let mut stdin = chpasswd.stdin.take().expect("piped stdin");
        let _ = writeln!(stdin, "{name}:{password}");
        drop(stdin);
        if chpasswd.wait().is_ok_and(|status| status.success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot set the password of {name}");
}

/// The name `whoami` prints for a login as `user`: `root` for [`ROOT_ALIAS`].
pub fn unix_name(user: &str) -> &str {
    if user == ROOT_ALIAS { "root" } else { user }
}

/// Creates [`ROOT_ALIAS`] if it is missing (left in place afterwards, like [`TEST_USER`]).
fn ensure_root_alias() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let home = format!("/home/{ROOT_ALIAS}");
        // -o -u 0: a second name for root.
        let options = [
            "-o", "-u", "0", "-g", "0", "-m", "-d", &home, "-s", "/bin/sh",
        ];
        create_user(ROOT_ALIAS, &options);
    });
}

/// Creates `name` with `useradd OPTIONS`, and no password yet not locked (`*`: sshd refuses
/// key logins to locked accounts), unless it exists. Several test binaries may race: a
/// busy lock is retried, "already exists" counts as done.
fn create_user(name: &str, options: &[&str]) {
    for _ in 0..100 {
        if passwd_entry(name).is_some() {
            return;
        }
        let out = Command::new("/usr/sbin/useradd")
            .args(options)
            .args(["-p", "*", name])
            .stdin(Stdio::null())
            .output()
            .expect("useradd");
        if !matches!(out.status.code(), Some(0 | 9)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("cannot create the user {name}");
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries() -> Vec<PasswdEntry> {
    let text = fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: fields.first()?.to_string(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
                home: fields.get(5)?.to_string(),
            })
        })
        .collect()
}

fn passwd_entry(name: &str) -> Option<PasswdEntry> {
    passwd_entries().into_iter().find(|e| e.name == name)
}

/// The effective uid of this process (std has no getuid; /proc/self belongs to it).
fn current_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

fn current_user_name() -> Option<String> {
    let uid = current_uid()?;
    passwd_entries()
        .into_iter()
        .find(|e| e.uid == uid)
        .map(|e| e.name)
}

/// pid -> (parent pid, state letter) for every process in /proc.
fn process_table() -> HashMap<u32, (u32, char)> {
    let mut table = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return table;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let Some(ppid) = fields.next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        table.insert(pid, (ppid, state));
    }
    table
}

/// Sends a signal to pids with kill(1) (std cannot send signals); pids that are already gone
/// are no error.
fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-s")
        .arg(name)
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
