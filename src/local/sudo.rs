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
/// of any argv). sudo stays the program's parent for as long as it runs, so a secret
/// argument must not be in sudo's argv: it travels in a variable of its own, and a
/// `/bin/sh` run as the user puts it back in place and `exec`s the program, which alone
/// has it in its argv:
///
/// ```text
/// sudo -n -u USER --preserve-env=LEADPIPE_SECRET_1 -- /bin/sh -c \
///     'lp_1=$LEADPIPE_SECRET_1; unset LEADPIPE_SECRET_1; exec "$0" "${1}" "$lp_1"' PROGRAM a ''
/// ```
fn wrap(process: &mut Process, user: &str) {
    let mut program_args: Vec<std::ffi::OsString> = std::mem::take(&mut process.args);
    let mut program = std::mem::replace(&mut process.program, "sudo".into());
    let secrets = std::mem::take(&mut process.secret_args);
    let mut args: Vec<std::ffi::OsString> = vec!["-n".into(), "-u".into(), user.into()];
    if !secrets.is_empty() {
        let mut script = String::new();
        let mut call = String::from("exec \"$0\"");
        for (index, arg) in program_args.iter_mut().enumerate() {
            if secrets.contains(&index) {
                let name = format!("LEADPIPE_SECRET_{index}");
                process
                    .env
                    .push((name.clone().into(), Some(std::mem::take(arg))));
                script.push_str(&format!("lp_{index}=${name}; unset {name}; "));
                call.push_str(&format!(" \"$lp_{index}\""));
            } else {
                call.push_str(&format!(" \"${{{}}}\"", index + 1));
            }
        }
        script.push_str(&call);
        program_args.insert(0, program);
        program = "/bin/sh".into();
        program_args.insert(0, script.into());
        program_args.insert(0, "-c".into());
    }
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
    args.push(program);
    args.append(&mut program_args);
    process.args = args;
}
