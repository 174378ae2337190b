//! Pipelines whose stages are on different machines: the bytes stream through this
//! process. Against a real OpenSSH sshd (tests/support/sshd.rs).

mod support;

use std::{ffi::OsStr, os::unix::ffi::OsStrExt, time::Duration};

use leadpipe::{Error, SshMachine, local};
use support::{sshd::Sshd, stdout_pattern, testbin};

async fn connect(sshd: &Sshd) -> SshMachine {
    SshMachine::builder(&sshd.host)
        .port(sshd.port)
        .user(&sshd.user)
        .identity_file(&sshd.client_key)
        .known_hosts(&sshd.known_hosts)
        .ssh_config(None)
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn bytes_cross_machines_exactly_in_both_directions() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = connect(&sshd).await;
    let args: Vec<&[u8]> = vec![
        b"",
        b"two words",
        b"$(id)",
        b"\xff\xfe",
        b"line\nbreak",
        "ünï".as_bytes(),
    ];
    let echo = testbin()
        .arg("echo-argv")
        .args(args.iter().map(|a| OsStr::from_bytes(a)));
    let expected: Vec<u8> = args
        .iter()
        .flat_map(|a| a.iter().copied().chain([0]))
        .collect();
    let out = (echo | remote.cmd("cat") | local().cmd("cat"))
        .read_bytes()
        .await
        .unwrap();
    assert_eq!(out, expected);

    let size = 20 * 1024 * 1024 + 3;
    let up = (testbin().args(["write", &size.to_string(), "0"]) | remote.cmd("wc").arg("-c"))
        .read()
        .await
        .unwrap();
    assert_eq!(up.trim(), size.to_string());
    let remote_bytes = remote
        .cmd("head")
        .args(["-c", &size.to_string(), "/dev/zero"]);
    let down = (remote_bytes | local().cmd("wc").arg("-c"))
        .read()
        .await
        .unwrap();
    assert_eq!(down.trim(), size.to_string());
    let round_trip = (testbin().args(["write", &size.to_string(), "0"])
        | remote.cmd("cat")
        | testbin().arg("cat"))
    .read_bytes()
    .await
    .unwrap();
    assert!(
        round_trip == stdout_pattern(size),
        "a 20 MiB round trip came back different"
    );
}

#[tokio::test]
async fn a_reader_that_stops_early_ends_the_writer_on_either_side() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = connect(&sshd).await;
    let limit = Duration::from_secs(30);
    let remote_yes = remote.cmd("yes") | local().cmd("head").arg("-1");
    assert_eq!(
        tokio::time::timeout(limit, remote_yes.read())
            .await
            .expect("no hang")
            .unwrap(),
        "y"
    );
    let local_yes = local().cmd("yes") | remote.cmd("head").arg("-1");
    assert_eq!(
        tokio::time::timeout(limit, local_yes.read())
            .await
            .expect("no hang")
            .unwrap(),
        "y"
    );
    assert!(
        sshd.pgrep("yes").is_empty(),
        "no remote yes left: {:?}",
        sshd.pgrep("yes")
    );
}

#[tokio::test]
async fn a_failing_stage_is_named_with_its_machine() {
    let Some(sshd) = Sshd::start() else { return };
    let remote = connect(&sshd).await;
    let pipeline = local().cmd("echo").arg("x")
        | remote
            .cmd("sh")
            .args(["-c", "cat >/dev/null; echo remote trouble >&2; exit 3"])
        | local().cmd("cat");
    let error = pipeline.read().await.unwrap_err();
    let Error::Exit(exit) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(exit.stage().map(|(i, n, _)| (i, n)), Some((1, 3)));
    assert_eq!(exit.stderr(), b"remote trouble\n");
    let machines = format!("local | {}@127.0.0.1:{} | local", sshd.user, sshd.port);
    assert!(
        error.to_string().starts_with(&format!(
            "stage 2 of 3 failed with exit code 3 on {machines}:"
        )),
        "{error}"
    );
}
