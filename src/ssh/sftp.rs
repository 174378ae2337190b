//! The remote machine's files over SFTP, on a channel of the machine's one connection
//! (and this machine's files as another user, on a local `sftp-server` started through
//! sudo: only the start differs, see [`Server`]).
//!
//! One `sftp` subsystem channel per connection, opened on first use and shared by every
//! clone of the machine; it holds one of the connection's channel slots for as long as it
//! lives. Its bytes go through the same pump as every other channel
//! ([`ChannelSocket`](super::channel::ChannelSocket)), so a slow consumer never stalls the
//! connection. If the channel ends while the connection lives (the server's
//! `sftp-server` died), the next call opens a new one.
//!
//! russh-sftp's raw session carries the protocol; reading and writing files is done here
//! rather than with its `File` type, for four reasons, each a trap for a file API:
//! - writes are pipelined up to [`IN_FLIGHT`] requests of the server's largest write, and
//!   every acknowledgement is checked before `shutdown` returns (a dropped file would lose
//!   them);
//! - `flush` never sends `fsync@openssh.com` (a copy loop that flushes would fsync per
//!   chunk);
//! - reads ramp up from one request to [`IN_FLIGHT`], so a small file costs no burst of
//!   reads past its end; when a listing gave the size, the reads up to it and the one past
//!   it go out together, so a small file costs one round trip of reads, not two;
//! - requests get a long timeout ([`REQUEST_TIMEOUT_SECS`]): with many large requests in
//!   flight on a slow link one can wait far longer than the crate's default 10 s, and a
//!   dead connection is detected by the connection itself (keepalive, reset), failing
//!   every request at once.
//!
//! At most [`HANDLES`] files and directories are open at once in a session: an open waits
//! for a close, however many transfers and calls share the session.
//!
//! Replacing a file uses OpenSSH's `posix-rename@openssh.com` (SFTP's own RENAME refuses
//! an existing target). SFTP names are UTF-8 strings in russh-sftp; other paths are refused.

use std::{
    any::Any,
    ffi::OsString,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, UNIX_EPOCH},
};

use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesOrdered};
use russh::ChannelMsg;
use russh_sftp::{
    client::{Config, RawSftpSession, error::Error as SftpError},
    protocol::{Attrs, Data, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    channel::{ChannelEnd, ChannelSocket},
    connection::Connection,
    sudo as ssh_sudo,
};
use crate::{
    Error,
    files::{Files, Metadata, WriteMode, kind_of_mode, spawn_cleanup},
    machine::{BoxRead, BoxWrite},
    sudo::{Gate, Runas, token},
};

/// Requests of one file in flight at once.
const IN_FLIGHT: usize = 64;
/// The largest read or write asked for: OpenSSH's limit (256 KiB less 1 KiB of header room),
/// or less when the server's `limits@openssh.com` says so.
const MAX_CHUNK: u64 = 255 * 1024;
/// What a server that states no limits is sent: the size every SFTP server must accept.
const PORTABLE_CHUNK: u64 = 32 * 1024;
/// How long one request may wait for its answer.
const REQUEST_TIMEOUT_SECS: u64 = 600;
/// Handles open at once in one session. russh-sftp keeps a handle as a UTF-8 string, and
/// OpenSSH's `sftp-server` names the handle with index N as N's four big-endian bytes: past
/// index 127 those are not UTF-8, the name is mangled, and the server refuses every request
/// on it. OpenSSH reuses the lowest free index, so 128 handles open at once all work.
const HANDLES: usize = 128;

/// A byte stream an SFTP session runs on.
pub(crate) trait SftpStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> SftpStream for T {}

/// A started `sftp-server`: the stream that reaches it, when that stream is over, and
/// what must live as long as the session (a channel slot, the child's guard).
pub(crate) struct Transport {
    pub(crate) stream: Box<dyn SftpStream>,
    pub(crate) end: ChannelEnd,
    pub(crate) hold: Box<dyn Any + Send + Sync>,
}

/// Where a session's `sftp-server` comes from: a channel of an SSH connection, or a local
/// child (`local/sudo_files.rs`). Everything past the start is the same for both.
pub(crate) trait Server: Send + Sync + 'static {
    /// Starts a server (run on leadpipe's runtime).
    fn start(&self) -> BoxFuture<'static, io::Result<Transport>>;

    /// The error every call reports when the machine itself is gone.
    fn gone(&self) -> Option<Error>;
}

/// A machine's files over SFTP: a remote machine's, or this machine's as another user.
pub(crate) struct SftpFiles {
    server: Box<dyn Server>,
    live: tokio::sync::Mutex<Option<Arc<Live>>>,
    /// How errors name the machine (with the sudo user, for such a view).
    name: String,
}

/// An SFTP session on one stream.
struct Live {
    raw: Arc<Raw>,
    /// Over when the stream ends: the session is dead, start another.
    end: ChannelEnd,
    posix_rename: bool,
    chunk: u32,
    /// A permit per handle open (see [`HANDLES`]): an open waits for one, and gives it back
    /// once the server has answered its close.
    handles: Arc<tokio::sync::Semaphore>,
}

/// A permit to hold one handle open.
type HandlePermit = tokio::sync::OwnedSemaphorePermit;

impl Live {
    async fn handle_permit(&self) -> io::Result<HandlePermit> {
        (self.handles.clone().acquire_owned().await)
            .map_err(|_| io::Error::other("the SFTP session is closed"))
    }
}

/// The `sftp` subsystem on a channel of a connection, or `sftp-server` through sudo.
struct ChannelServer {
    connection: Arc<Connection>,
    /// Files as another user: `sftp-server` run through sudo (see `ssh/sudo.rs`).
    runas: Option<Runas>,
}

impl Server for ChannelServer {
    fn start(&self) -> BoxFuture<'static, io::Result<Transport>> {
        open_channel(self.connection.clone(), self.runas.clone()).boxed()
    }

    fn gone(&self) -> Option<Error> {
        self.connection.is_closed().then(|| self.connection.lost())
    }
}

impl SftpFiles {
    pub(crate) fn new(connection: Arc<Connection>) -> SftpFiles {
        SftpFiles::new_as(connection, None)
    }

    /// The files as `runas`'s user sees them, when given.
    pub(crate) fn new_as(connection: Arc<Connection>, runas: Option<Runas>) -> SftpFiles {
        let name = match &runas {
            Some(runas) => runas.view_name(&connection.name),
            None => connection.name.clone(),
        };
        SftpFiles::over(Box::new(ChannelServer { connection, runas }), name)
    }

    /// The files `server`'s sessions reach; errors name the machine `name`.
    pub(crate) fn over(server: Box<dyn Server>, name: String) -> SftpFiles {
        SftpFiles {
            server,
            live: tokio::sync::Mutex::new(None),
            name,
        }
    }

    async fn live(&self) -> io::Result<Arc<Live>> {
        let mut slot = self.live.lock().await;
        if let Some(live) = &*slot
            && !live.end.is_over()
        {
            return Ok(live.clone());
        }
        // On leadpipe's runtime: the session's reader task must outlive the caller's runtime
        // (a dropped remote TempDir is removed through it, see `lifecycle`).
        let transport = self.server.start();
        let live = Arc::new(crate::lifecycle::run(SftpFiles::start(transport)).await?);
        *slot = Some(live.clone());
        Ok(live)
    }

    async fn start(transport: BoxFuture<'static, io::Result<Transport>>) -> io::Result<Live> {
        let Transport { stream, end, hold } = transport.await?;
        let config = Config {
            max_packet_len: 256 * 1024 + 1024,
            request_timeout_secs: REQUEST_TIMEOUT_SECS,
            ..Config::default()
        };
        let mut raw = RawSftpSession::new_with_config(stream, config);
        let version = raw.init().await.map_err(io_error)?;
        let has = |name: &str| version.extensions.contains_key(name);
        let (mut chunk, mut handles) = (PORTABLE_CHUNK, HANDLES);
        if has("limits@openssh.com") {
            let limits = raw.limits().await.map_err(io_error)?;
            let largest = [limits.max_read_len, limits.max_write_len]
                .into_iter()
                .filter(|len| *len > 0)
                .min()
                .unwrap_or(MAX_CHUNK);
            chunk = largest.min(MAX_CHUNK);
            if limits.max_open_handles > 0 {
                let most = usize::try_from(limits.max_open_handles).unwrap_or(HANDLES);
                handles = handles.min(most);
            }
            raw.set_limits(limits.into());
        }
        Ok(Live {
            raw: Arc::new(Raw {
                session: raw,
                end: end.clone(),
                _hold: hold,
            }),
            end,
            posix_rename: has("posix-rename@openssh.com"),
            chunk: u32::try_from(chunk).unwrap_or(32 * 1024),
            handles: Arc::new(tokio::sync::Semaphore::new(handles)),
        })
    }
}

/// Opens an `sftp` channel on `connection` (through sudo as `runas`'s user, when given).
async fn open_channel(connection: Arc<Connection>, runas: Option<Runas>) -> io::Result<Transport> {
    let (mut channel, slot) =
        (connection.open_session(false).await).map_err(|e| io::Error::other(e.to_string()))?;
    if let Some(runas) = &runas {
        // `sftp-server` through sudo, as Ansible's become does: no pty (it would mangle
        // the binary protocol), so sudo must not require one for it.
        let user = runas
            .checked_user(&connection.name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut gate = Gate::new(&token());
        let exec = ssh_sudo::sftp_exec(user, &gate);
        channel
            .exec(true, exec)
            .await
            .map_err(|_| io::Error::other(connection.lost().to_string()))?;
        let passed =
            ssh_sudo::pass_gate(&mut channel, &mut gate, runas, &connection.name, false).await;
        if let Err(shut) = passed {
            let _ = channel.eof().await;
            let _ = channel.close().await;
            let error = ssh_sudo::shut_error(shut, || connection.lost());
            // Kind `Other`, so that the file error shows sudo's reason.
            return Err(io::Error::other(error.to_string()));
        }
    } else {
        let refused = || io::Error::other("the server refused the sftp subsystem");
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|_| refused())?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure | ChannelMsg::Close | ChannelMsg::Eof) | None => {
                    return Err(refused());
                }
                Some(_) => {}
            }
        }
    }
    let stream = ChannelSocket::new(channel);
    let end = stream.end();
    Ok(Transport {
        stream: Box::new(stream),
        end,
        hold: Box::new(slot),
    })
}

/// The SFTP session, each request of which fails once its channel is over.
///
/// russh-sftp fails the requests in flight when its transport ends, but one sent in the
/// moment between that and its writer task stopping is never answered and would wait for
/// the request timeout (minutes). Every request therefore also ends with the channel.
struct Raw {
    session: RawSftpSession,
    end: ChannelEnd,
    /// Dropped after the session (which ends the stream): the channel slot, or the guard
    /// that reaps a local child.
    _hold: Box<dyn Any + Send + Sync>,
}

/// The requests leadpipe makes, each as `RawSftpSession`'s, ended with the channel.
macro_rules! guarded {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        impl Raw {
            $(async fn $name(&self, $($arg: $ty),*) -> Result<$out, SftpError> {
                // A request goes out when its future is first polled, so that poll must
                // not be put off: `tokio::select!` polls nothing once the task's budget is
                // spent, which would let a request made later (a close) go out first.
                let reply = std::pin::pin!(self.session.$name($($arg),*));
                let over = std::pin::pin!(self.end.over());
                match futures::future::select(reply, over).await {
                    futures::future::Either::Left((reply, _)) => reply,
                    futures::future::Either::Right(((), _)) => Err(SftpError::Status(Status {
                        id: 0,
                        status_code: StatusCode::ConnectionLost,
                        error_message: "the SFTP channel is closed".to_owned(),
                        language_tag: String::new(),
                    })),
                }
            })*
        }
    };
}

guarded! {
    open(path: impl Into<String>, flags: OpenFlags, attrs: FileAttributes) -> Handle;
    close(handle: impl Into<String>) -> Status;
    read(handle: impl Into<String>, offset: u64, len: u32) -> Data;
    write(handle: impl Into<String>, offset: u64, data: Vec<u8>) -> Status;
    stat(path: impl Into<String>) -> Attrs;
    lstat(path: impl Into<String>) -> Attrs;
    fstat(handle: impl Into<String>) -> Attrs;
    fsetstat(handle: impl Into<String>, attrs: FileAttributes) -> Status;
    setstat(path: impl Into<String>, attrs: FileAttributes) -> Status;
    opendir(path: impl Into<String>) -> Handle;
    readdir(handle: impl Into<String>) -> Name;
    remove(path: impl Into<String>) -> Status;
    mkdir(path: impl Into<String>, attrs: FileAttributes) -> Status;
    rmdir(path: impl Into<String>) -> Status;
    realpath(path: impl Into<String>) -> Name;
    rename(from: impl Into<String>, to: impl Into<String>) -> Status;
    readlink(path: impl Into<String>) -> Name;
    symlink(path: impl Into<String>, target: impl Into<String>) -> Status;
    extended(request: impl Into<String>, data: Vec<u8>) -> Packet;
}

/// An SFTP failure as `io::Error`, keeping the kinds a script tests for.
fn io_error(error: SftpError) -> io::Error {
    match error {
        SftpError::Status(status) => {
            let kind = match status.status_code {
                StatusCode::NoSuchFile => io::ErrorKind::NotFound,
                StatusCode::PermissionDenied => io::ErrorKind::PermissionDenied,
                StatusCode::OpUnsupported => io::ErrorKind::Unsupported,
                StatusCode::Eof => io::ErrorKind::UnexpectedEof,
                StatusCode::NoConnection | StatusCode::ConnectionLost => {
                    io::ErrorKind::ConnectionAborted
                }
                _ => io::ErrorKind::Other,
            };
            let message = if status.error_message.is_empty() {
                format!("{}", status.status_code)
            } else {
                status.error_message
            };
            io::Error::new(kind, format!("{message} (SFTP)"))
        }
        SftpError::Timeout => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from the SFTP server within {REQUEST_TIMEOUT_SECS} s"),
        ),
        other => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("the SFTP session ended: {other}"),
        ),
    }
}

/// A path as SFTP names it.
fn name(path: &Path) -> io::Result<String> {
    match path.to_str() {
        Some("") => Ok(".".to_owned()),
        Some(text) => Ok(text.to_owned()),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a remote path must be UTF-8 (SFTP names are strings here)",
        )),
    }
}

fn metadata_of(attrs: &FileAttributes) -> Metadata {
    let mode = attrs.permissions.unwrap_or(0);
    Metadata {
        kind: kind_of_mode(mode),
        len: attrs.size.unwrap_or(0),
        mode: mode & 0o7777,
        modified: attrs
            .mtime
            .map(|secs| UNIX_EPOCH + Duration::from_secs(u64::from(secs))),
        owner: attrs.uid.zip(attrs.gid),
    }
}

fn with_mode(mode: Option<u32>) -> FileAttributes {
    let mut attrs = FileAttributes::empty();
    attrs.permissions = mode;
    attrs
}

/// A length-prefixed SFTP string, for extension requests.
fn put_string(data: &mut Vec<u8>, text: &str) {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    data.extend_from_slice(&len.to_be_bytes());
    data.extend_from_slice(text.as_bytes());
}

impl Files for SftpFiles {
    fn machine(&self) -> &str {
        &self.name
    }

    fn is_local(&self) -> bool {
        false
    }

    fn gone(&self) -> Option<Error> {
        self.server.gone()
    }

    fn metadata<'a>(&'a self, path: &'a Path, follow: bool) -> BoxFuture<'a, io::Result<Metadata>> {
        async move {
            let live = self.live().await?;
            let path = name(path)?;
            let attrs = if follow {
                live.raw.stat(path).await
            } else {
                live.raw.lstat(path).await
            };
            Ok(metadata_of(&attrs.map_err(io_error)?.attrs))
        }
        .boxed()
    }

    fn list<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, io::Result<Vec<(OsString, Metadata)>>> {
        async move {
            let live = self.live().await?;
            let _permit = live.handle_permit().await?;
            let handle = live.raw.opendir(name(dir)?).await.map_err(io_error)?.handle;
            let mut entries = Vec::new();
            let listed = loop {
                match live.raw.readdir(handle.as_str()).await {
                    Ok(batch) => {
                        for file in batch.files {
                            if file.filename != "." && file.filename != ".." {
                                entries.push((
                                    OsString::from(file.filename),
                                    metadata_of(&file.attrs),
                                ));
                            }
                        }
                    }
                    Err(SftpError::Status(status)) if status.status_code == StatusCode::Eof => {
                        break Ok(());
                    }
                    Err(error) => break Err(io_error(error)),
                }
            };
            let closed = live.raw.close(handle).await;
            listed?;
            closed.map_err(io_error)?;
            Ok(entries)
        }
        .boxed()
    }

    fn open_read<'a>(
        &'a self,
        path: &'a Path,
        size: Option<u64>,
    ) -> BoxFuture<'a, io::Result<BoxRead>> {
        async move {
            let live = self.live().await?;
            let permit = live.handle_permit().await?;
            let handle = (live
                .raw
                .open(name(path)?, OpenFlags::READ, FileAttributes::empty()))
            .await
            .map_err(io_error)?
            .handle;
            Ok(Box::new(SftpReader::new(&live, (handle, permit), size)) as BoxRead)
        }
        .boxed()
    }

    fn open_write<'a>(
        &'a self,
        path: &'a Path,
        how: WriteMode,
        mode: Option<u32>,
    ) -> BoxFuture<'a, io::Result<BoxWrite>> {
        async move {
            let live = self.live().await?;
            let permit = live.handle_permit().await?;
            let flags = OpenFlags::WRITE
                | OpenFlags::CREATE
                | match how {
                    WriteMode::Append => OpenFlags::APPEND,
                    WriteMode::CreateNew | WriteMode::CreateNewExact => OpenFlags::EXCLUDE,
                };
            let opened = live.raw.open(name(path)?, flags, with_mode(mode)).await;
            let handle = match opened {
                Ok(handle) => handle.handle,
                // SFTP reports "exists" as a generic failure: tell it apart.
                Err(error) if how != WriteMode::Append => {
                    let exists = live.raw.lstat(name(path)?).await.is_ok();
                    return Err(if exists {
                        io::Error::from(io::ErrorKind::AlreadyExists)
                    } else {
                        io_error(error)
                    });
                }
                Err(error) => return Err(io_error(error)),
            };
            let exact = (how == WriteMode::CreateNewExact).then_some(mode).flatten();
            Ok(Box::new(SftpWriter::new(&live, (handle, permit), exact)) as BoxWrite)
        }
        .boxed()
    }

    fn mkdir<'a>(&'a self, path: &'a Path, mode: u32) -> BoxFuture<'a, io::Result<()>> {
        async move {
            let live = self.live().await?;
            let made = live.raw.mkdir(name(path)?, with_mode(Some(mode))).await;
            match made {
                Ok(_) => Ok(()),
                Err(error) => match live.raw.lstat(name(path)?).await {
                    Ok(_) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
                    Err(_) => Err(io_error(error)),
                },
            }
        }
        .boxed()
    }

    fn rmdir<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        async move {
            let live = self.live().await?;
            live.raw.rmdir(name(path)?).await.map_err(io_error)?;
            Ok(())
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        async move {
            let live = self.live().await?;
            live.raw.remove(name(path)?).await.map_err(io_error)?;
            Ok(())
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        async move {
            let live = self.live().await?;
            let (from, to) = (name(from)?, name(to)?);
            if live.posix_rename {
                let mut data = Vec::new();
                put_string(&mut data, &from);
                put_string(&mut data, &to);
                let reply = live.raw.extended("posix-rename@openssh.com", data).await;
                return match reply.map_err(io_error)? {
                    Packet::Status(status) if status.status_code == StatusCode::Ok => Ok(()),
                    Packet::Status(status) => Err(io_error(SftpError::Status(status))),
                    _ => Err(io::Error::other("unexpected answer to posix-rename")),
                };
            }
            // SFTP's RENAME refuses an existing target: remove it first (not atomic).
            if live.raw.lstat(to.as_str()).await.is_ok() {
                live.raw.remove(to.as_str()).await.map_err(io_error)?;
            }
            live.raw.rename(from, to).await.map_err(io_error)?;
            Ok(())
        }
        .boxed()
    }

    fn chmod<'a>(&'a self, path: &'a Path, mode: u32) -> BoxFuture<'a, io::Result<()>> {
        async move {
            let live = self.live().await?;
            (live.raw.setstat(name(path)?, with_mode(Some(mode))).await).map_err(io_error)?;
            Ok(())
        }
        .boxed()
    }

    fn symlink<'a>(&'a self, target: &'a Path, link: &'a Path) -> BoxFuture<'a, io::Result<()>> {
        async move {
            let live = self.live().await?;
            // OpenSSH's sftp-server reads SYMLINK's two paths in the opposite order to the
            // draft (target first, then the link), and every common server follows it;
            // russh-sftp sends its first argument first.
            (live.raw.symlink(name(target)?, name(link)?).await).map_err(io_error)?;
            Ok(())
        }
        .boxed()
    }

    fn read_link<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<PathBuf>> {
        async move {
            let live = self.live().await?;
            let found = live.raw.readlink(name(path)?).await.map_err(io_error)?;
            first_name(found.files)
        }
        .boxed()
    }

    fn canonicalize<'a>(&'a self, path: &'a Path) -> BoxFuture<'a, io::Result<PathBuf>> {
        async move {
            let live = self.live().await?;
            let path = name(path)?;
            // realpath of a missing path succeeds on some servers: insist that it exists.
            live.raw.stat(path.as_str()).await.map_err(io_error)?;
            let found = live.raw.realpath(path).await.map_err(io_error)?;
            first_name(found.files)
        }
        .boxed()
    }
}

fn first_name(files: Vec<russh_sftp::protocol::File>) -> io::Result<PathBuf> {
    files
        .into_iter()
        .next()
        .map(|file| PathBuf::from(file.filename))
        .ok_or_else(|| io::Error::other("the server answered with no name"))
}

/// An open handle, and the permit that counts it.
type OpenHandle = (String, HandlePermit);

/// Closes a handle in the background: for readers at their end, and readers and writers
/// dropped before it. The permit goes back once the close is answered.
fn close_later(raw: Arc<Raw>, handle: String, permit: Option<HandlePermit>) {
    spawn_cleanup(async move {
        let _ = raw.close(handle).await;
        drop(permit);
    });
}

type ReadReply = (u64, u32, Result<Data, SftpError>);

/// A remote file being read: reads pipelined ahead of the consumer.
struct SftpReader {
    raw: Arc<Raw>,
    handle: Option<String>,
    /// Counts the handle until it is closed.
    permit: Option<HandlePermit>,
    chunk: u32,
    /// Requests to keep in flight now: doubles after every full read, up to `IN_FLIGHT`.
    window: usize,
    /// The size a listing gave: reads are cut to end there, so that the read past it (which
    /// finds the end of the file) goes out with them instead of a round trip later.
    expected: Option<u64>,
    next_offset: u64,
    in_flight: FuturesOrdered<BoxFuture<'static, ReadReply>>,
    buffer: Vec<u8>,
    pos: usize,
    eof: bool,
    /// The error being explained (see [`SftpReader::explain`]).
    failing: Option<BoxFuture<'static, io::Error>>,
}

impl SftpReader {
    fn new(live: &Live, (handle, permit): OpenHandle, expected: Option<u64>) -> SftpReader {
        // Every read up to the expected end, and the one past it, at once.
        let window = expected.map_or(1, |size| {
            let reads = size.div_ceil(u64::from(live.chunk)) + 1;
            usize::try_from(reads).unwrap_or(IN_FLIGHT).min(IN_FLIGHT)
        });
        SftpReader {
            raw: live.raw.clone(),
            handle: Some(handle),
            permit: Some(permit),
            chunk: live.chunk,
            window,
            expected,
            next_offset: 0,
            in_flight: FuturesOrdered::new(),
            buffer: Vec::new(),
            pos: 0,
            eof: false,
            failing: None,
        }
    }

    fn request(&mut self, handle: String) {
        let len = match self.expected {
            Some(end) if self.next_offset < end => u32::try_from(end - self.next_offset)
                .map_or(self.chunk, |left| left.min(self.chunk)),
            _ => self.chunk,
        };
        let (raw, offset) = (self.raw.clone(), self.next_offset);
        self.in_flight.push_back(
            async move {
                let reply = raw.read(handle, offset, len).await;
                (offset, len, reply)
            }
            .boxed(),
        );
        self.next_offset += u64::from(len);
    }

    /// Why a read failed: a directory reads as a generic failure, so ask.
    async fn explain(raw: Arc<Raw>, handle: String, error: SftpError) -> io::Error {
        match raw.fstat(handle).await {
            Ok(attrs) if metadata_of(&attrs.attrs).is_dir() => {
                io::Error::from(io::ErrorKind::IsADirectory)
            }
            _ => io_error(error),
        }
    }
}

impl AsyncRead for SftpReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if let Some(failing) = &mut this.failing {
                let error = ready!(failing.poll_unpin(cx));
                this.failing = None;
                return Poll::Ready(Err(error));
            }
            if this.pos < this.buffer.len() {
                let n = buf.remaining().min(this.buffer.len() - this.pos);
                buf.put_slice(&this.buffer[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            let Some(handle) = this.handle.clone() else {
                return Poll::Ready(Ok(()));
            };
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            while this.in_flight.len() < this.window {
                this.request(handle.clone());
            }
            let Some((offset, len, reply)) = ready!(this.in_flight.poll_next_unpin(cx)) else {
                continue;
            };
            match reply {
                Ok(data) if data.data.is_empty() => this.eof = true,
                Ok(data) => {
                    if data.data.len() < len as usize {
                        // A short read: at the end of the file, or a server that reads
                        // less: what was asked beyond it is void, ask again from there.
                        this.in_flight = FuturesOrdered::new();
                        this.next_offset = offset + data.data.len() as u64;
                        this.window = 1;
                    } else {
                        this.window = (this.window * 2).min(IN_FLIGHT);
                    }
                    this.buffer = data.data;
                    this.pos = 0;
                }
                Err(SftpError::Status(status)) if status.status_code == StatusCode::Eof => {
                    this.eof = true;
                }
                Err(error) => {
                    this.eof = true;
                    this.in_flight = FuturesOrdered::new();
                    // One more round trip, only on the error path.
                    let explain = Self::explain(this.raw.clone(), handle, error);
                    this.failing = Some(explain.boxed());
                    continue;
                }
            }
            if this.eof {
                this.in_flight = FuturesOrdered::new();
                if let Some(handle) = this.handle.take() {
                    close_later(this.raw.clone(), handle, this.permit.take());
                }
            }
        }
    }
}

impl Drop for SftpReader {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            close_later(self.raw.clone(), handle, self.permit.take());
        }
    }
}

/// A remote file being written: writes pipelined, each acknowledgement checked.
struct SftpWriter {
    raw: Arc<Raw>,
    handle: Option<String>,
    /// Counts the handle until it is closed.
    permit: Option<HandlePermit>,
    chunk: usize,
    offset: u64,
    in_flight: FuturesOrdered<BoxFuture<'static, Result<Status, SftpError>>>,
    closing: Option<BoxFuture<'static, io::Result<()>>>,
    /// The mode to set with the close (`fsetstat`), exactly.
    exact: Option<u32>,
}

impl SftpWriter {
    fn new(live: &Live, (handle, permit): OpenHandle, exact: Option<u32>) -> SftpWriter {
        SftpWriter {
            raw: live.raw.clone(),
            handle: Some(handle),
            permit: Some(permit),
            chunk: live.chunk as usize,
            offset: 0,
            in_flight: FuturesOrdered::new(),
            closing: None,
            exact,
        }
    }

    /// Takes the acknowledgements that have come, without waiting.
    fn collect_acks(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while let Poll::Ready(Some(ack)) = self.in_flight.poll_next_unpin(cx) {
            ack.map_err(io_error)?;
        }
        Ok(())
    }

    /// Waits for every acknowledgement.
    fn poll_acks(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(ack) = ready!(self.in_flight.poll_next_unpin(cx)) {
            ack.map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the file was already closed")
}

impl AsyncWrite for SftpWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(handle) = this.handle.clone() else {
            return Poll::Ready(Err(closed()));
        };
        this.collect_acks(cx)?;
        while this.in_flight.len() >= IN_FLIGHT {
            match ready!(this.in_flight.poll_next_unpin(cx)) {
                Some(ack) => {
                    ack.map_err(io_error)?;
                }
                None => break,
            }
        }
        let n = buf.len().min(this.chunk);
        let (raw, offset, data) = (this.raw.clone(), this.offset, buf[..n].to_vec());
        let mut write = async move { raw.write(handle, offset, data).await }.boxed();
        // The first poll sends the request: here, so that every write goes out before the
        // close `poll_shutdown` sends (a set of futures may put off polling a new one, and
        // a write sent after the close lands in whichever file the server opens next under
        // the same handle).
        match write.poll_unpin(cx) {
            Poll::Ready(ack) => drop(ack.map_err(io_error)?),
            Poll::Pending => this.in_flight.push_back(write),
        }
        this.offset += n as u64;
        // What has been acknowledged meanwhile is taken too.
        this.collect_acks(cx)?;
        Poll::Ready(Ok(n))
    }

    /// Waits for every write to be acknowledged (no `fsync`).
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_acks(cx)
    }

    /// Sends the mode (when it is to be set) and the close behind the last writes without
    /// waiting for them (the server handles one file's requests in order), then checks
    /// every answer: one round trip for a small file's end, not three.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing.is_none() {
            let Some(handle) = this.handle.take() else {
                return Poll::Ready(Ok(()));
            };
            let (raw, exact, permit) = (this.raw.clone(), this.exact, this.permit.take());
            let mut writes = std::mem::take(&mut this.in_flight);
            this.closing = Some(
                async move {
                    let written = async {
                        while let Some(ack) = writes.next().await {
                            ack?;
                        }
                        Ok(())
                    };
                    let set = async {
                        match exact {
                            Some(mode) => raw
                                .fsetstat(handle.as_str(), with_mode(Some(mode)))
                                .await
                                .map(drop),
                            None => Ok(()),
                        }
                    };
                    // Polled in this order, so the mode goes out before the close.
                    let (written, set, closed) =
                        futures::join!(written, set, raw.close(handle.as_str()));
                    drop(permit);
                    written.and(set).and(closed.map(drop)).map_err(io_error)
                }
                .boxed(),
            );
        }
        let Some(closing) = &mut this.closing else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(closing.poll_unpin(cx));
        this.closing = None;
        Poll::Ready(result)
    }
}

impl Drop for SftpWriter {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            close_later(self.raw.clone(), handle, self.permit.take());
        }
    }
}
