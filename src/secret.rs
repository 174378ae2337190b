//! `Secret`: a value whose bytes reach a program and nothing else.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    os::unix::ffi::{OsStrExt, OsStringExt},
    sync::Arc,
};

use crate::Input;

/// A password, token or key: its bytes reach the program, and `***` is all that
/// `Display`, `Debug`, errors, `echo` and logs ever show of it.
///
/// A `Secret` can be an argument ([`Command::arg`](crate::Command::arg), `{secret}` in
/// [`cmd!`](crate::cmd)), an environment value ([`Command::env`](crate::Command::env)), the
/// standard input (`cmd << secret`, [`Command::stdin`](crate::Command::stdin)), sudo's
/// password ([`SshBuilder::sudo_password`](crate::SshBuilder::sudo_password)) and a
/// prompt's answer ([`Command::respond`](crate::Command::respond)). Cloning it shares the
/// bytes.
///
/// What it hides, and what it cannot:
/// - An environment value never appears in a command line, locally or remotely: on an SSH
///   machine it travels on the channel's stdin and is set by the remote shell, so no `ps`
///   on that host shows it (only the process itself and root can read its environment).
///   Prefer it to an argument.
/// - An argument is, by its nature, in the program's own argv: on a shared host
///   `/proc/PID/cmdline` of that one process (and so `ps`) shows it while it runs, as for
///   any program started by any means. leadpipe puts it in no other process's argv (not
///   the remote shell's, not `sudo`'s wrapper), but prefer the environment or stdin when
///   the program takes the value there.
/// - Its memory is not wiped when dropped.
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::{Secret, local};
/// let token = Secret::new(std::env::var("API_TOKEN").unwrap_or_default());
/// let deploy = local().cmd("deploy-tool").arg("--token").arg(&token).env("API_TOKEN", &token);
/// assert_eq!(deploy.to_string(), "deploy-tool --token '***'");
/// deploy.run().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// A secret holding these bytes (a `&str`, `String`, `Vec<u8>` or `&[u8]`).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::Secret;
    /// let token = Secret::new(std::env::var("API_TOKEN").unwrap_or_default());
    /// let call = leadpipe::local().cmd("curl").arg("-H").arg(&token).arg("https://api.example");
    /// println!("{call}");                         // curl -H '***' https://api.example
    /// # Ok(()) }
    /// ```
    pub fn new(value: impl Into<Vec<u8>>) -> Secret {
        Secret(value.into().into())
    }

    /// The bytes, for code that must hand them on itself. Whatever prints them shows them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<Secret> for Input {
    /// The secret's bytes as standard input; the command line shows only their count.
    fn from(secret: Secret) -> Input {
        Input::Bytes(secret.0)
    }
}

impl From<&Secret> for Input {
    fn from(secret: &Secret) -> Input {
        Input::Bytes(secret.0.clone())
    }
}

macro_rules! secret_here_string {
    ($($target:ty),*) => {$(
        impl std::ops::Shl<Secret> for $target {
            type Output = $target;
            /// `cmd << secret`: feeds the secret's bytes to stdin; the command line shows
            /// only their count.
            fn shl(self, secret: Secret) -> $target {
                self.stdin(secret)
            }
        }

        impl std::ops::Shl<&Secret> for $target {
            type Output = $target;
            /// `cmd << &secret`: as `cmd << secret`.
            fn shl(self, secret: &Secret) -> $target {
                self.stdin(secret)
            }
        }
    )*};
}
secret_here_string!(crate::Command, crate::Pipeline);

/// What [`Command::arg`](crate::Command::arg), [`args`](crate::Command::args) and
/// [`env`](crate::Command::env) take: anything that is `AsRef<OsStr>` (`&str`, `String`,
/// `Path`, `OsString`...), or a [`Secret`], which is shown as `***`.
///
/// The trait is sealed: it cannot be implemented outside leadpipe.
pub trait ArgValue: sealed::Sealed {
    /// The value, and whether it is secret.
    #[doc(hidden)]
    fn into_value(self) -> (OsString, bool);
}

mod sealed {
    pub trait Sealed {}
}

impl<T: AsRef<OsStr>> sealed::Sealed for T {}
impl<T: AsRef<OsStr>> ArgValue for T {
    fn into_value(self) -> (OsString, bool) {
        (self.as_ref().to_os_string(), false)
    }
}

impl sealed::Sealed for Secret {}
impl ArgValue for Secret {
    fn into_value(self) -> (OsString, bool) {
        (OsString::from_vec(self.0.to_vec()), true)
    }
}

impl sealed::Sealed for &Secret {}
impl ArgValue for &Secret {
    fn into_value(self) -> (OsString, bool) {
        (self.as_os_str().to_os_string(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_nothing_of_itself() {
        let secret = Secret::new("hunter2");
        assert_eq!(secret.to_string(), "***");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(***))");
        assert_eq!(secret.expose(), b"hunter2");
    }
}
