//! Fault injection and a remote machine that needs nothing installed, for leadpipe's tests,
//! examples and demos.
//!
//! - [`TestServer`]: an SSH server in this process, on loopback, running commands as the
//!   current user; [`TestServer::connect`] gives a [`leadpipe::SshMachine`] logged in to it.
//!   It can freeze or drop its connections.
//! - [`FaultProxy`]: a loopback TCP proxy in front of any server (an OpenSSH sshd too) that
//!   cuts (RST) or freezes every connection through it.
//!
//! Both are for tests and demos: the server is not a stand-in for OpenSSH's sshd, and
//! leadpipe's SSH tests run against a real sshd. The crate uses leadpipe's public API
//! only.
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> leadpipe::Result<()> {
//! use leadpipe::Error;
//! use leadpipe_test_server::{FaultProxy, TestServer};
//!
//! let server = TestServer::start().await?;
//! let proxy = FaultProxy::start(server.addr()).await;
//! // The server's host key, listed for the proxy's address.
//! let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
//! let known_hosts = dir.path().join("known_hosts");
//! std::fs::write(&known_hosts, server.known_hosts_line_for(proxy.addr()) + "\n")
//!     .map_err(|e| Error::io("writing known_hosts", e))?;
//! let remote = server
//!     .builder()
//!     .port(proxy.addr().port())
//!     .known_hosts(known_hosts)
//!     .connect()
//!     .await?;
//! assert_eq!(remote.cmd("echo").arg("hi").read().await?, "hi");
//! proxy.cut();
//! assert!(remote.cmd("true").run().await.is_err());
//! # Ok(()) }
//! ```

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod fault_proxy;
mod server;

pub use crate::{fault_proxy::FaultProxy, server::TestServer};
