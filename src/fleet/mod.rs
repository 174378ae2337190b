//! `Fleet`: many machines driven as one, with bounded concurrency, rolling batches, a
//! failure budget, and a report per host.

mod inventory;
mod report;

use std::{
    ffi::{OsStr, OsString},
    fmt,
    future::Future,
    path::Path,
    sync::Arc,
    time::Duration,
};

use futures::{
    FutureExt, StreamExt,
    future::{BoxFuture, Shared},
    stream::FuturesUnordered,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{Error, Machine, Result, SshBuilder, SshMachine, observe::HostLog};
use inventory::{Entry, HostSpec};

pub use inventory::Inventory;
pub use report::FleetReport;

/// How many hosts connect, or run, at once unless told otherwise.
const DEFAULT_CONCURRENCY: usize = 50;
/// How long one host may take to connect and log in unless told otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Many machines driven as one: the same work on every host, a bounded number at a time,
/// with each host's result in a [`FleetReport`].
///
/// A fleet of SSH hosts is made from an [`Inventory`] (destinations as `ssh` takes them,
/// host ranges, a file, an Ansible inventory) by [`Fleet::connect`] or [`Fleet::builder`];
/// a fleet of any [`Machine`] by [`Fleet::from_machines`]. A host that cannot be reached
/// (refused, no answer within the connect timeout, host key refused, login refused) stays
/// in the fleet as a failure: every report has its `Err`, and it never stalls or stops
/// the others.
///
/// # Running
///
/// [`run`](Fleet::run) calls an async closure once per host with that host's machine (a
/// clone: machines are cheap handles on one connection) and collects what each returned.
/// [`cmd`](Fleet::cmd) is the shorthand for one command everywhere, with each host's
/// output printed live, prefixed with its name (`web03 | ...`).
///
/// Everything runs in the task that awaits the call: no thread and no task per host. A
/// host's closure that panics unwinds out of the call. A host still connecting when the
/// fleet was returned (see [`FleetBuilder::connect`]) is awaited in its slot.
///
/// # Options
///
/// Set on the builder, on the fleet (each returns the changed fleet; clone the fleet to
/// keep both) or on one [`FleetCommand`]:
/// - [`concurrency(n)`](Fleet::concurrency): at most `n` hosts at once (default 50).
/// - [`batch(n)`](Fleet::batch): rolling batches of `n` hosts, in host order; a batch
///   starts when the one before has ended.
/// - [`max_failures(n)`](Fleet::max_failures) or
///   [`max_failures_percent(p)`](Fleet::max_failures_percent): once more hosts than that
///   have failed, no further host starts (with batches: no later batch); the hosts left
///   are [`Error::NotRun`] in the report. Hosts that could not be connected count.
/// - [`fail_fast()`](Fleet::fail_fast): no host starts after the first failure. Hosts
///   already running are let finish, so no host is left half-done by another's failure.
///
/// The default keeps going: every host runs, whatever the others did.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::{Fleet, Inventory};
///
/// let fleet = Fleet::builder(Inventory::ansible_ini("hosts.ini")?.group("web"))
///     .concurrency(100)
///     .connect()
///     .await;
/// let report = fleet.run(|m| async move { m.cmd("uptime").read().await }).await;
/// println!("{report}");                       // 20 hosts: 19 ok, 1 failed ...
///
/// // Restart five hosts at a time; stop after a second failure.
/// let restart = fleet.cmd("systemctl").args(["restart", "app"]);
/// let report = restart.batch(5).max_failures(1).run().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Fleet<M = SshMachine> {
    hosts: Vec<Host<M>>,
    options: Options,
    /// The task still connecting stragglers, stopped once no fleet (or straggler) needs it.
    _connecting: Option<Arc<Background>>,
}

/// How long [`FleetBuilder::connect`] waits, at least and at most, with no host connecting,
/// before it leaves the hosts still connecting to finish in the background.
const STRAGGLER_WAIT_MIN: Duration = Duration::from_millis(100);
const STRAGGLER_WAIT_MAX: Duration = Duration::from_secs(2);

/// A background task, aborted when dropped.
struct Background(Option<tokio::task::JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// One host: its name and its machine, or why it has none.
#[derive(Clone)]
struct Host<M> {
    name: String,
    machine: Link<M>,
}

/// A host's machine, or why it has none.
type Outcome<M> = std::result::Result<M, Arc<Error>>;

/// A host's connection: made (or failed), or still being made in the background.
///
/// [`FleetBuilder::connect`] waits for every host, except stragglers: once no host has
/// connected for a while, the hosts still connecting go on in the background and the
/// fleet is returned. The calls then await each straggler in its own slot, so a frozen
/// host costs the others nothing beyond the slot it holds.
#[derive(Clone)]
enum Link<M> {
    Settled(Outcome<M>),
    Connecting(Shared<BoxFuture<'static, Outcome<M>>>),
}

impl<M: Clone> Link<M> {
    /// The outcome, if it is known.
    fn now(&self) -> Option<&Outcome<M>> {
        match self {
            Link::Settled(outcome) => Some(outcome),
            Link::Connecting(connecting) => connecting.peek(),
        }
    }

    /// The outcome, once known.
    async fn get(&self) -> Outcome<M> {
        match self {
            Link::Settled(outcome) => outcome.clone(),
            Link::Connecting(connecting) => connecting.clone().await,
        }
    }
}

/// How a fleet call runs its hosts.
#[derive(Clone, Debug)]
struct Options {
    concurrency: usize,
    batch: Option<usize>,
    budget: Budget,
    /// Each host's commands print their line before they run.
    echo: bool,
    /// Where each host's log directory is made.
    log_dir: Option<Arc<Path>>,
}

/// How many failures a call takes before it starts no further host.
#[derive(Clone, Copy, Debug)]
enum Budget {
    /// Every host runs.
    Unlimited,
    /// At most this many hosts may fail.
    Count(usize),
    /// At most this share of the hosts, in percent.
    Percent(f64),
    /// None may fail: `fail_fast`.
    FailFast,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            concurrency: DEFAULT_CONCURRENCY,
            batch: None,
            budget: Budget::Unlimited,
            echo: false,
            log_dir: None,
        }
    }
}

impl Options {
    /// How many failures `hosts` hosts may have, and the option that says so.
    fn allowed(&self, hosts: usize) -> Option<(usize, String)> {
        match self.budget {
            Budget::Unlimited => None,
            Budget::Count(n) => Some((n, format!("max_failures({n})"))),
            Budget::Percent(p) => {
                let n = (hosts as f64 * p / 100.0).floor() as usize;
                Some((n, format!("max_failures_percent({p}) of {hosts} hosts")))
            }
            Budget::FailFast => Some((0, "fail_fast".to_owned())),
        }
    }
}

/// The option setters, written once for the builder, the fleet and a fleet command.
macro_rules! option_setters {
    () => {
        /// At most `n` hosts at once (default 50; 0 counts as 1).
        pub fn concurrency(mut self, n: usize) -> Self {
            self.options.concurrency = n.max(1);
            self
        }

        /// Rolling batches of `n` hosts in host order: a batch starts when the one before
        /// it has ended (0 counts as 1).
        pub fn batch(mut self, n: usize) -> Self {
            self.options.batch = Some(n.max(1));
            self
        }

        /// Once more than `n` hosts have failed, no further host (or batch) starts; those
        /// left are [`Error::NotRun`](crate::Error::NotRun) in the report.
        pub fn max_failures(mut self, n: usize) -> Self {
            self.options.budget = Budget::Count(n);
            self
        }

        /// As [`max_failures`](Self::max_failures), as a share of the hosts: once more than
        /// `percent` % of them (rounded down) have failed, no further host starts.
        pub fn max_failures_percent(mut self, percent: f64) -> Self {
            self.options.budget = Budget::Percent(percent.clamp(0.0, 100.0));
            self
        }

        /// No host starts after the first failure; hosts already running finish.
        pub fn fail_fast(mut self) -> Self {
            self.options.budget = Budget::FailFast;
            self
        }

        /// Each host's commands print their command line before they run, prefixed with
        /// the host's name (`web03 | + systemctl restart app`), as
        /// [`Command::echo`](crate::Command::echo) does.
        pub fn echo(mut self, echo: bool) -> Self {
            self.options.echo = echo;
            self
        }

        /// Logs each host's work into `dir/HOST/` (created as needed; `HOST` is the host's
        /// name, a `/` in it written `_`): `commands.log` has each command line (`$
        /// line`, secrets as `***`) and how it ended (`# exit code 0 after 0.012 s`), each
        /// line after the time in seconds since the Unix epoch; `stdout.log` and
        /// `stderr.log` have what the commands printed, as they printed it. Files are
        /// appended to. Output handed to the script as a stream
        /// ([`spawn`](crate::Command::spawn), [`lines`](crate::Command::lines)) is the
        /// script's to log; everything else (inherited, read, captured) is logged.
        ///
        /// # Example
        /// ```no_run
        /// # async fn demo(fleet: leadpipe::Fleet) {
        /// // logs/web01/commands.log, logs/web01/stdout.log, ...
        /// let report = fleet.cmd("apt-get").arg("upgrade").log_dir("logs").echo(true).run().await;
        /// # }
        /// ```
        pub fn log_dir(mut self, dir: impl AsRef<Path>) -> Self {
            self.options.log_dir = Some(Arc::from(dir.as_ref()));
            self
        }
    };
}

/// Adjusts every host's [`SshBuilder`] (see [`FleetBuilder::ssh`]).
type Template = Arc<dyn Fn(SshBuilder) -> SshBuilder + Send + Sync>;

impl Fleet<SshMachine> {
    /// Connects to `destinations` (each as `ssh` takes it, ssh_config aliases and host
    /// ranges included: see [`Inventory`]) with the default options. Never fails as a
    /// whole: a host that cannot be reached is a failure in every report.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() {
    /// let fleet = leadpipe::Fleet::connect(["web[01-20]", "deploy@db1:2222"]).await;
    /// println!("{}", fleet.cmd("uptime").run().await);
    /// # }
    /// ```
    pub async fn connect<I>(destinations: I) -> Fleet
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Fleet::builder(Inventory::new(destinations)).connect().await
    }

    /// Settings for a fleet of the hosts of `inventory`, before connecting.
    pub fn builder(inventory: Inventory) -> FleetBuilder {
        FleetBuilder {
            inventory,
            options: Options::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            template: None,
        }
    }
}

/// How to connect a [`Fleet`]: its hosts, options, connect timeout, and the SSH settings
/// every host shares. From [`Fleet::builder`].
pub struct FleetBuilder {
    inventory: Inventory,
    options: Options,
    connect_timeout: Duration,
    template: Option<Template>,
}

impl FleetBuilder {
    option_setters!();

    /// How long one host may take to connect and log in (default 15 s), ssh_config
    /// included; a host over it is an [`Error::Connect`] whose
    /// [`io_kind`](Error::io_kind) is `TimedOut`. ssh_config's `ConnectTimeout` still
    /// bounds the TCP connection and handshake on its own.
    pub fn connect_timeout(mut self, limit: Duration) -> FleetBuilder {
        self.connect_timeout = limit;
        self
    }

    /// Adjusts every host's [`SshBuilder`] before it connects: keys, known_hosts, host-key
    /// policy, another ssh_config, a jump host. It gets the builder of the host's address
    /// and returns it changed; the user, port and identity file the destination or
    /// inventory gives are applied after it, so they win.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() {
    /// use leadpipe::{Fleet, Inventory};
    /// let fleet = Fleet::builder(Inventory::new(["10.0.0.[1-9]"]))
    ///     .ssh(|b| b.user("deploy").identity_file("~/.ssh/deploy_ed25519").ssh_config(None))
    ///     .connect()
    ///     .await;
    /// # }
    /// ```
    pub fn ssh(
        mut self,
        adjust: impl Fn(SshBuilder) -> SshBuilder + Send + Sync + 'static,
    ) -> FleetBuilder {
        self.template = Some(Arc::new(adjust));
        self
    }

    /// Connects to every host, [`concurrency`](FleetBuilder::concurrency) at a time, each
    /// within the connect timeout. Never fails as a whole: a host that cannot be reached
    /// keeps its error, which every report of the fleet shows.
    ///
    /// It returns once every host has connected or failed, or, after the first has, once
    /// no host has for a while (ten times the median gap between hosts settling, between
    /// 100 ms and 2 s): the hosts
    /// still connecting then (a frozen server, a slow link) finish in the background, and
    /// every call of the fleet waits for each of them in its own slot, while the others
    /// run. So one host that never answers costs the fleet its connect timeout in one slot,
    /// not a stall of every host. Connections are made on leadpipe's runtime (no thread,
    /// and no task, per host).
    pub async fn connect(self) -> Fleet {
        let FleetBuilder {
            inventory,
            options,
            connect_timeout,
            template,
        } = self;
        raise_open_file_limit();
        let entries = inventory.into_entries();
        let total = entries.len();
        let names: Vec<String> = entries.iter().map(|e| e.name().to_owned()).collect();
        let mut receivers = Vec::with_capacity(total);
        let mut jobs = Vec::with_capacity(total);
        for entry in entries {
            let (sender, receiver) = oneshot::channel::<Outcome<SshMachine>>();
            receivers.push(receiver);
            jobs.push((entry, sender));
        }
        // Each host's connection is made by one task on leadpipe's runtime, `concurrency`
        // at a time; it goes on after this call returns while stragglers connect.
        let (settled, mut settling) = mpsc::unbounded_channel::<()>();
        let concurrency = options.concurrency;
        let connecting = futures::stream::iter(jobs)
            .map(move |(entry, sender)| {
                let template = template.clone();
                let settled = settled.clone();
                async move {
                    let machine = match entry {
                        Entry::Host(spec) => connect_host(spec, template, connect_timeout).await,
                        Entry::Invalid { name, reason } => Err(Error::Connect {
                            destination: name.clone(),
                            given: name,
                            address: None,
                            reason,
                            source: None,
                        }),
                    };
                    let _ = sender.send(machine.map_err(Arc::new));
                    let _ = settled.send(());
                }
            })
            .buffer_unordered(concurrency)
            .for_each(|()| async {});
        let connecting = Arc::new(Background(crate::lifecycle::spawn_handle(connecting)));
        // Wait for every host, or, once one has, until none has for ten times the median
        // gap between hosts settling so far (at least 100 ms, at most 2 s): the rest are
        // stragglers. The typical gap, not a host's own time: a hundred hosts connecting at
        // once each take long, but they finish one after the other.
        crate::lifecycle::run(async move {
            let mut gaps: Vec<Duration> = Vec::with_capacity(total);
            let mut last: Option<Instant> = None;
            for _ in 0..total {
                let next = match last {
                    None => settling.recv().await,
                    Some(_) if gaps.is_empty() => {
                        tokio::time::timeout(STRAGGLER_WAIT_MAX, settling.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                    Some(_) => {
                        let mut sorted = gaps.clone();
                        let middle = sorted.len() / 2;
                        let (_, median, _) = sorted.select_nth_unstable(middle);
                        let quiet = (*median * 10).clamp(STRAGGLER_WAIT_MIN, STRAGGLER_WAIT_MAX);
                        tokio::time::timeout(quiet, settling.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                };
                if next.is_none() {
                    break;
                }
                let now = Instant::now();
                if let Some(last) = last {
                    gaps.push(now - last);
                }
                last = Some(now);
            }
        })
        .await;
        let hosts = (names.into_iter().zip(receivers))
            .map(|(name, mut receiver)| {
                let machine = match receiver.try_recv() {
                    Ok(outcome) => Link::Settled(outcome),
                    Err(_) => {
                        let straggler = name.clone();
                        let keep = connecting.clone();
                        Link::Connecting(
                            async move {
                                let outcome = receiver.await.unwrap_or_else(|_| {
                                    Err(Arc::new(Error::NotRun {
                                        host: straggler,
                                        reason: "its connection was abandoned".to_owned(),
                                    }))
                                });
                                drop(keep);
                                outcome
                            }
                            .boxed()
                            .shared(),
                        )
                    }
                };
                Host { name, machine }
            })
            .collect();
        Fleet {
            hosts,
            options,
            _connecting: Some(connecting),
        }
    }
}

/// Connects one host within `limit`, on leadpipe's runtime (so the timer works whatever
/// runtime, or none, the caller has).
///
/// A connection the server drops before the SSH handshake completes (reset, or closed
/// before its banner) is tried again after a pause that doubles each time (50 ms to 1.6 s,
/// with jitter), until the limit: that is how sshd sheds connections over its
/// `MaxStartups`, which a burst of many hosts behind one sshd (or a jump host) trips. A
/// refused TCP connection, a host key or a login refused are not retried.
async fn connect_host(
    spec: HostSpec,
    template: Option<Template>,
    limit: Duration,
) -> Result<SshMachine> {
    let mut builder = SshMachine::builder(&spec.host);
    if let Some(template) = &template {
        builder = template(builder);
    }
    if let Some(user) = &spec.user {
        builder = builder.user(user);
    }
    if let Some(port) = spec.port {
        builder = builder.port(port);
    }
    if let Some(key) = &spec.identity_file {
        builder = builder.identity_file(key);
    }
    let name = spec.name;
    crate::lifecycle::run(async move {
        let attempts = async {
            let mut pause = Duration::from_millis(50);
            loop {
                match builder.clone().connect().await {
                    Err(error) if dropped_before_handshake(&error) => {
                        tokio::time::sleep(jittered(pause, &name)).await;
                        pause = (pause * 2).min(Duration::from_millis(1600));
                    }
                    Err(error) => return Err(explain_open_file_limit(error)),
                    connected => return connected,
                }
            }
        };
        match tokio::time::timeout(limit, attempts).await {
            Ok(connected) => connected,
            Err(_) => Err(Error::Connect {
                destination: name.clone(),
                given: name,
                address: None,
                reason: format!(
                    "no connection and login within {limit:?} (the fleet's connect timeout)"
                ),
                source: Some(std::io::ErrorKind::TimedOut.into()),
            }),
        }
    })
    .await
}

/// Whether the server dropped the connection before the SSH handshake was done: reset, or
/// closed with no banner (sshd over `MaxStartups`).
fn dropped_before_handshake(error: &Error) -> bool {
    matches!(error, Error::Connect { source: Some(source), .. }
    if matches!(
        source.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionAborted
    ))
}

/// `pause` plus up to half of it again, different per host and call, so that hosts
/// dropped together do not all come back together.
fn jittered(pause: Duration, host: &str) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(host.as_bytes());
    let spread = pause.as_micros() as u64 / 2 + 1;
    pause + Duration::from_micros(hasher.finish() % spread)
}

/// A connect error for want of file descriptors, with the limit that ran out named.
fn explain_open_file_limit(error: Error) -> Error {
    match error {
        Error::Connect {
            destination,
            given,
            address,
            reason,
            source: Some(source),
        } if source.raw_os_error() == Some(libc::EMFILE) => {
            let limit =
                open_file_limit().map_or_else(|| "?".to_owned(), |l| l.rlim_cur.to_string());
            Error::Connect {
                destination,
                given,
                address,
                reason: format!(
                    "{reason}: this process has used up its open-file limit (RLIMIT_NOFILE, \
                     `ulimit -n`: {limit}), which the fleet raised to its hard limit; raise \
                     the hard limit, or lower the fleet's concurrency"
                ),
                source: Some(source),
            }
        }
        other => other,
    }
}

/// This process's open-file limits: the soft one, which applies, and the hard one.
fn open_file_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives across the call.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (got == 0).then_some(limit)
}

/// Raises this process's open-file limit to its hard limit (each connected host holds a
/// socket, and each running command a few pipes): what `ulimit -n $(ulimit -Hn)` does.
fn raise_open_file_limit() {
    let Some(limit) = open_file_limit().filter(|l| l.rlim_cur < l.rlim_max) else {
        return;
    };
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        ..limit
    };
    // SAFETY: setrlimit reads the struct it is given, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::debug!("raising the open-file limit failed");
    }
}

impl<M: Machine> Fleet<M> {
    /// A fleet of machines already made (any [`Machine`]: local ones, SSH machines
    /// connected by hand), named by [`Machine::name`], in the order given.
    pub fn from_machines(machines: impl IntoIterator<Item = M>) -> Fleet<M> {
        Fleet {
            hosts: machines
                .into_iter()
                .map(|m| Host {
                    name: m.name().to_owned(),
                    machine: Link::Settled(Ok(m)),
                })
                .collect(),
            options: Options::default(),
            _connecting: None,
        }
    }

    option_setters!();

    /// The hosts' names, in order (connected or not).
    pub fn hosts(&self) -> impl ExactSizeIterator<Item = &str> {
        self.hosts.iter().map(|h| h.name.as_str())
    }

    /// The connected machines with their names, in host order. A host still connecting
    /// (see [`FleetBuilder::connect`]) is left out; [`connected`](Fleet::connected) waits
    /// for it.
    pub fn machines(&self) -> impl Iterator<Item = (&str, &M)> {
        (self.hosts.iter()).filter_map(|h| match h.machine.now() {
            Some(Ok(m)) => Some((h.name.as_str(), m)),
            _ => None,
        })
    }

    /// How many hosts the fleet has (connected or not).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The connection report: `Ok(())` for each connected host, the connect error of the
    /// others. Waits for the hosts still connecting (see [`FleetBuilder::connect`]).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() {
    /// let fleet = leadpipe::Fleet::connect(["web[01-20]"]).await;
    /// let connected = fleet.connected().await;
    /// if !connected.is_ok() {
    ///     eprintln!("{connected}");             // 20 hosts: 19 ok, 1 failed ...
    /// }
    /// # }
    /// ```
    pub async fn connected(&self) -> FleetReport<()> {
        let mut report = Vec::with_capacity(self.hosts.len());
        for host in &self.hosts {
            let outcome = host.machine.get().await;
            report.push((host.name.clone(), outcome.map(drop).map_err(|e| replay(&e))));
        }
        FleetReport::new(report)
    }

    /// Runs `work` on every host with that host's machine, under the fleet's options, and
    /// reports what each returned, in host order.
    ///
    /// # Output
    ///
    /// What the host's commands print to an inherited stdout or stderr (as
    /// [`Command::run`](crate::Command::run) does) is printed here line by line, prefixed
    /// with the host's name, `web03 | line` (names padded to one width). Each line is
    /// written whole with one write under the stream's lock, so lines of different hosts
    /// never mix mid-line; a line without its newline at the end of the output gets one,
    /// and a line over 64 KiB is shown in pieces. An inherited stdin is `/dev/null` (many
    /// hosts cannot share a terminal). The lines are written as `println!` writes: a stdout
    /// that does not drain (a full pipe nobody reads) holds every host's output back. With
    /// [`log_dir`](Fleet::log_dir), the same output also goes to the host's log.
    ///
    /// `work` gets the machine by value (a clone of the fleet's: the same connection), so
    /// an `async move` block can own it; write `|m| async move { deploy(&m).await }` for a
    /// step written as `async fn deploy(m: &impl Machine)`. The futures are polled in the
    /// caller's task and need not be `Send` or `'static`.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(fleet: leadpipe::Fleet) {
    /// let report = fleet
    ///     .run(|m| async move {
    ///         m.path("/etc/app.conf").write("level = info\n").await?;
    ///         m.cmd("systemctl").args(["reload", "app"]).run().await
    ///     })
    ///     .await;
    /// println!("{report}");
    /// # }
    /// ```
    pub async fn run<T, F, Fut>(&self, work: F) -> FleetReport<T>
    where
        F: Fn(M) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        drive(&self.hosts, &self.options, |_: &str, m| work(m)).await
    }

    /// Copies the file or tree `from` on this process's machine to `to` on every host (see
    /// [`Machine::upload`]), under the fleet's options; each host's result is the number of
    /// bytes copied.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(fleet: leadpipe::Fleet) {
    /// let report = fleet.upload("dist/app.tar.gz", "/srv/app/app.tar.gz").await;
    /// println!("{report}");
    /// # }
    /// ```
    pub async fn upload(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> FleetReport<u64> {
        let (from, to) = (from.as_ref(), to.as_ref());
        drive(&self.hosts, &self.options, |_: &str, m: M| {
            m.upload(from, to)
        })
        .await
    }

    /// Copies the file or tree `from` on every host into a directory of its own here:
    /// `into/HOST/NAME`, where `HOST` is the host's name in the fleet (a `/` in it written
    /// `_`) and `NAME` the last component of `from`. The host directories are created as
    /// needed; each host's result is the number of bytes copied.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(fleet: leadpipe::Fleet) {
    /// // logs/web01/app.log, logs/web02/app.log, ...
    /// let report = fleet.download("/var/log/app.log", "logs").await;
    /// # }
    /// ```
    pub async fn download(
        &self,
        from: impl AsRef<Path>,
        into: impl AsRef<Path>,
    ) -> FleetReport<u64> {
        let (from, into) = (from.as_ref(), into.as_ref());
        drive(&self.hosts, &self.options, |name: &str, m: M| {
            let dir = into.join(name.replace('/', "_"));
            let to = match from.file_name() {
                Some(file) => dir.join(file),
                None => dir.clone(),
            };
            // Created here (a directory entry is quick) rather than on a runtime's blocking
            // threads: the call works from any runtime.
            let made = std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e));
            async move {
                made?;
                m.download(from, &to).await
            }
        })
        .await
    }

    /// One command on every host: the shorthand for
    /// [`run`](Fleet::run)`(|m| async move { m.cmd(program).args(..).run().await })`, with
    /// live prefixed output (see [`FleetCommand::run`]).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo(fleet: leadpipe::Fleet) {
    /// // Two hosts at a time; stop starting new ones after the first failure.
    /// let report = fleet
    ///     .cmd("systemctl")
    ///     .args(["restart", "app"])
    ///     .batch(2)
    ///     .max_failures(1)
    ///     .run()
    ///     .await;
    /// println!("{report}");
    /// # }
    /// ```
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> FleetCommand<'_, M> {
        FleetCommand {
            fleet: self,
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            options: self.options.clone(),
        }
    }
}

impl<M> fmt::Debug for Fleet<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        f.debug_struct("Fleet")
            .field("hosts", &hosts)
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Debug for FleetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBuilder")
            .field("hosts", &self.inventory.to_string())
            .field("options", &self.options)
            .field("connect_timeout", &self.connect_timeout)
            .field("ssh", &self.template.as_ref().map(|_| "(adjusted)"))
            .finish()
    }
}

/// One command for every host of a fleet, from [`Fleet::cmd`]: its arguments, and options
/// for this call only.
pub struct FleetCommand<'a, M> {
    fleet: &'a Fleet<M>,
    program: OsString,
    args: Vec<OsString>,
    options: Options,
}

impl<M: Machine> FleetCommand<'_, M> {
    option_setters!();

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I>(mut self, args: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the command on every host, printing each line of its stdout to this process's
    /// stdout, and of its stderr to its stderr, as it comes, prefixed with the host's name:
    /// `web03 | line` (see [`Fleet::run`] on prefixed output). A failing status is that
    /// host's [`Error::Exit`].
    pub async fn run(&self) -> FleetReport<()> {
        drive(&self.fleet.hosts, &self.options, |_: &str, m: M| {
            let command = m.cmd(&self.program).args(&self.args);
            async move { command.run().await }
        })
        .await
    }

    /// Runs the command on every host and reports each host's stdout (as
    /// [`Command::read`](crate::Command::read): one trailing newline trimmed, status
    /// checked).
    pub async fn read(&self) -> FleetReport<String> {
        drive(&self.fleet.hosts, &self.options, |_: &str, m: M| {
            let command = m.cmd(&self.program).args(&self.args);
            async move { command.read().await }
        })
        .await
    }
}

impl<M> fmt::Debug for FleetCommand<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetCommand")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("options", &self.options)
            .finish()
    }
}

/// Runs `work` on `hosts` under `options`: in host order, in batches, at most
/// `concurrency` at once, starting nothing more once the failure budget is spent.
async fn drive<M, T, F, Fut>(hosts: &[Host<M>], options: &Options, work: F) -> FleetReport<T>
where
    M: Machine,
    F: Fn(&str, M) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let total = hosts.len();
    let width = hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
    // The host's machine as its work sees it: output prefixed, echoed and logged.
    let observed = |host: &Host<M>, machine: &M| -> Result<M> {
        let log = match &options.log_dir {
            None => None,
            Some(dir) => {
                let dir = dir.join(host.name.replace('/', "_"));
                let log = HostLog::open(&dir).map_err(|e| {
                    Error::io(format!("opening the log directory {}", dir.display()), e)
                })?;
                Some(Arc::new(log))
            }
        };
        let prefix: Arc<str> = Arc::from(format!("{:<width$} | ", host.name));
        Ok(machine.observed(&|observe| {
            observe.prefix = Some(prefix.clone());
            observe.log = log.clone();
            observe.echo |= options.echo;
        }))
    };
    let allowed = options.allowed(total);
    let batch = options.batch.unwrap_or(total).max(1);
    let mut results: Vec<Option<Result<T>>> = (0..total).map(|_| None).collect();
    let mut failed: Vec<usize> = Vec::new();
    // Why nothing more starts, once the budget is spent.
    let mut stopped: Option<String> = None;
    let mut note_failure = |i: usize, stopped: &mut Option<String>| {
        failed.push(i);
        if let Some((allowed, option)) = &allowed
            && failed.len() > *allowed
            && stopped.is_none()
        {
            let names: Vec<&str> = failed.iter().map(|&i| hosts[i].name.as_str()).collect();
            let count = failed.len();
            let hosts_word = if count == 1 { "host" } else { "hosts" };
            *stopped = Some(format!(
                "{count} {hosts_word} failed ({}), more than {option} allows",
                names.join(", ")
            ));
        }
    };
    let mut start = 0;
    while start < total && stopped.is_none() {
        let end = (start + batch).min(total);
        let mut next = start;
        let mut running = FuturesUnordered::new();
        loop {
            while stopped.is_none() && running.len() < options.concurrency && next < end {
                let i = next;
                next += 1;
                let host = &hosts[i];
                // A known outcome without waiting: a host that could not connect takes no
                // slot; a straggler is awaited in its slot.
                if let Some(Err(error)) = host.machine.now() {
                    results[i] = Some(Err(replay(error)));
                    note_failure(i, &mut stopped);
                    continue;
                }
                let (work, observed) = (&work, &observed);
                running.push(async move {
                    let machine = match host.machine.get().await {
                        Ok(machine) => observed(host, &machine),
                        Err(error) => Err(replay(&error)),
                    };
                    match machine {
                        Ok(machine) => (i, work(&host.name, machine).await),
                        Err(error) => (i, Err(error)),
                    }
                });
            }
            let Some((i, result)) = running.next().await else {
                break;
            };
            if result.is_err() {
                note_failure(i, &mut stopped);
            }
            results[i] = Some(result);
        }
        start = end;
    }
    let report = (hosts.iter().zip(results))
        .map(|(host, result)| {
            let result = result.unwrap_or_else(|| {
                Err(Error::NotRun {
                    host: host.name.clone(),
                    reason: stopped.clone().unwrap_or_default(),
                })
            });
            (host.name.clone(), result)
        })
        .collect();
    FleetReport::new(report)
}

/// A new error saying what a host's stored connect error says: every report of the fleet
/// shows it, and `Error` is not `Clone` (it holds an `io::Error`).
fn replay(error: &Error) -> Error {
    match error {
        Error::Connect {
            destination,
            given,
            address,
            reason,
            source,
        } => Error::Connect {
            destination: destination.clone(),
            given: given.clone(),
            address: *address,
            reason: reason.clone(),
            source: source
                .as_ref()
                .map(|e| std::io::Error::new(e.kind(), e.to_string())),
        },
        Error::Auth {
            destination,
            given,
            tried,
            accepted,
        } => Error::Auth {
            destination: destination.clone(),
            given: given.clone(),
            tried: tried.clone(),
            accepted: accepted.clone(),
        },
        Error::HostKey {
            host,
            given,
            problem,
            fingerprint,
            reason,
        } => Error::HostKey {
            host: host.clone(),
            given: given.clone(),
            problem: *problem,
            fingerprint: fingerprint.clone(),
            reason: reason.clone(),
        },
        other => Error::Connect {
            destination: String::new(),
            given: String::new(),
            address: None,
            reason: other.to_string(),
            source: other.io_kind().map(std::io::Error::from),
        },
    }
}
