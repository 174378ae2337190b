//! Side-by-side benchmark of the local machine: leadpipe against what a Rust program or a
//! shell would do instead, in one run, as ratios.
//!
//! `cargo run --release --example bench_local [ROUNDS]` (default 9 rounds). Each value is
//! the median of the rounds, with the fastest round in parentheses; the contenders
//! alternate within a round so that a noisy neighbour hits both alike. On two cores, three
//! busy pipeline stages make single runs bimodal (the scheduler may put two of them on
//! one core), so compare medians over many rounds, not single runs.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use leadpipe::local;

const GIB: u64 = 1 << 30;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One row: runs `ours` and `theirs` alternately `rounds` times; prints the medians and
/// their ratio (ours / theirs: below 1 means leadpipe is faster).
async fn row<A, B>(name: &str, theirs_name: &str, rounds: usize, mut ours: A, mut theirs: B)
where
    A: AsyncFnMut(),
    B: AsyncFnMut(),
{
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        theirs().await;
        b.push(start.elapsed());
        let start = Instant::now();
        ours().await;
        a.push(start.elapsed());
    }
    let (a_min, b_min) = (*a.iter().min().unwrap(), *b.iter().min().unwrap());
    let (a, b) = (median(a), median(b));
    println!(
        "| {name} | {:.3} s ({:.3}) | {theirs_name}: {:.3} s ({:.3}) | {:.3} |",
        a.as_secs_f64(),
        a_min.as_secs_f64(),
        b.as_secs_f64(),
        b_min.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(9);
    let sh = local();
    println!("| case | leadpipe, median (min) | reference, median (min) | ratio of medians |");
    println!("| --- | --- | --- | --- |");

    let truth = sh.cmd("true");
    row(
        "spawn + wait `true` x1000",
        "std::process",
        rounds,
        async || {
            for _ in 0..1000 {
                assert!(truth.status().await.unwrap().success());
            }
        },
        async || {
            for _ in 0..1000 {
                let status = std::process::Command::new("true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        },
    )
    .await;

    // The same, awaited inside a spawned task: where async code usually runs. Awaited in
    // `main` (above), every wakeup also hops from the runtime's worker to the main thread.
    let in_task = truth.clone();
    row(
        "spawn + wait `true` x1000, in a task",
        "std::process",
        rounds,
        async || {
            let truth = in_task.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    assert!(truth.status().await.unwrap().success());
                }
            })
            .await
            .unwrap()
        },
        async || {
            for _ in 0..1000 {
                let status = std::process::Command::new("true")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success());
            }
        },
    )
    .await;

    let echo = sh.cmd("echo").arg("x");
    row(
        "read() of `echo x` x1000",
        "std::process output()",
        rounds,
        async || {
            for _ in 0..1000 {
                assert_eq!(echo.read().await.unwrap(), "x");
            }
        },
        async || {
            for _ in 0..1000 {
                let out = std::process::Command::new("echo")
                    .arg("x")
                    .output()
                    .unwrap();
                assert_eq!(out.stdout, b"x\n");
            }
        },
    )
    .await;

    let gib = GIB.to_string();
    let pipeline =
        sh.cmd("head").args(["-c", &gib, "/dev/zero"]) | sh.cmd("cat") | sh.cmd("wc").arg("-c");
    let script = format!("head -c {gib} /dev/zero | cat | wc -c");
    row(
        "3-stage pipeline moving 1 GiB",
        "bash -c 'a | b | c'",
        rounds,
        async || assert_eq!(pipeline.read().await.unwrap(), gib),
        async || {
            let out = std::process::Command::new("bash")
                .args(["-c", &script])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), gib);
        },
    )
    .await;

    let zeros = sh.cmd("head").args(["-c", &gib, "/dev/zero"]);
    row(
        "capture 1 GiB of stdout",
        "std::process output()",
        rounds,
        async || assert_eq!(zeros.read_bytes().await.unwrap().len() as u64, GIB),
        async || {
            let out = std::process::Command::new("head")
                .args(["-c", &gib, "/dev/zero"])
                .output()
                .unwrap();
            assert_eq!(out.stdout.len() as u64, GIB);
        },
    )
    .await;

    // How far past its limit a timed-out pipeline returns, the hanging stage first.
    let limit = Duration::from_millis(100);
    let hanging = (sh.cmd("sleep").arg("30") | sh.cmd("cat")).timeout(limit);
    let mut overshoot = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        assert!(hanging.run().await.is_err());
        overshoot.push(start.elapsed() - limit);
    }
    overshoot.sort();
    println!(
        "\ntimeout(100 ms) on `sleep 30 | cat`, 20 runs: returned after the limit + {:.1} ms (median), + {:.1} ms (max)",
        median(overshoot.clone()).as_secs_f64() * 1e3,
        overshoot[overshoot.len() - 1].as_secs_f64() * 1e3
    );
}
