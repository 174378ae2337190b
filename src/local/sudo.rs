//! This machine's `sudo` views: every stage of a plan started as `sudo -n -u USER --
//! PROGRAM ARGS`, after sudo's credentials were validated once with the password.
//!
//! The stages stay connected by OS pipes, without a shell, as every local pipeline: each
//! is its own `sudo`. The password cannot go to each stage's stdin (that is the pipeline's),
//! so it goes once to `sudo -S -v` (prompts counted as on SSH machines: a second prompt is
//! a refused password), which leaves sudo's credential cache valid for this process (sudo
//! keys it by terminal, or by parent process without one), and the stages run with `-n`:
//! never a prompt, a clear failure when the cache is off (`timestamp_timeout=0`).

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use super::process::LocalBackend;
use crate::{
    Error, Input, Result,
    machine::{Backend, Plan, Process, Running},
    sudo::{Gate, Runas, Step, token},
};

/// The backend of a local `sudo` view.
pub(super) struct SudoBackend {
    pub(super) runas: Runas,
    pub(super) name: String,
    /// sudo's credentials were validated with the password (once per view).
    validated: OnceCell<()>,
}

impl SudoBackend {
    pub(super) fn new(runas: Runas) -> SudoBackend {
        SudoBackend {
            name: runas.view_name("local"),
            runas,
            validated: OnceCell::new(),
        }
    }

    /// `sudo -S -p PROMPT -u USER -v` with the password on stdin.
    async fn validate(&self, user: &str) -> Result<()> {
        let mut gate = Gate::new(&token());
        let mut input = Vec::new();
        if let Some(password) = self.runas.password.get("local").await {
            input.extend_from_slice(password.expose());
            input.push(b'\n');
        }
        let output = crate::local()
            .cmd("sudo")
            .args(["-S", "-p", gate.prompt(), "-u", user, "-v"])
            .stdin(Input::Bytes(input.into()))
            .unchecked()
            .output()
            .await?;
        let refused = gate.feed(&output.stderr) == Step::Refused;
        if output.status.success() {
            return Ok(());
        }
        let why = if refused {
            "the password was refused (sudo asked for it again)".to_owned()
        } else {
            format!("sudo -v ended with {}", output.status)
        };
        let printed = gate.printed();
        Err(Error::Sudo {
            machine: "local".to_owned(),
            user: user.to_owned(),
            reason: if printed.is_empty() {
                why
            } else {
                format!("{why}; sudo printed: {printed}")
            },
        })
    }
}

impl Backend for SudoBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, mut plan: Plan) -> BoxFuture<'_, Result<Box<dyn Running>>> {
        Box::pin(async move {
            let user = self.runas.checked_user("local")?.to_owned();
            if self.runas.password.is_set() {
                self.validated
                    .get_or_try_init(|| self.validate(&user))
                    .await?;
            }
            for stage in &mut plan.stages {
                wrap(&mut stage.process, &user);
            }
            LocalBackend.start(plan).await
        })
    }
}

/// `sudo -n -u USER [--preserve-env=NAMES] -- PROGRAM ARGS`: the variables the command sets
/// are kept through sudo's `env_reset` by name (their values stay in the environment, out
/// of any argv).
fn wrap(process: &mut Process, user: &str) {
    let mut args: Vec<std::ffi::OsString> = vec!["-n".into(), "-u".into(), user.into()];
    let names: Vec<String> = process
        .env
        .iter()
        .filter(|(_, value)| value.is_some())
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    if !names.is_empty() {
        args.push(format!("--preserve-env={}", names.join(",")).into());
    }
    args.push("--".into());
    args.push(std::mem::replace(&mut process.program, "sudo".into()));
    let shift = args.len();
    args.append(&mut process.args);
    process.args = args;
    for index in &mut process.secret_args {
        *index += shift;
    }
}
