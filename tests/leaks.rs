//! Runs many commands and checks that no descriptor and no zombie is left behind. In a
//! test binary of its own: other tests running in parallel would move the counts.

mod support;

use std::time::Duration;

use leadpipe::local;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Children of this process that have exited but not been reaped.
fn zombies() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str())
        })
        .count()
}

#[tokio::test]
async fn a_thousand_runs_leave_no_descriptors_and_no_zombies() {
    let sh = local();
    // Warm up: the runtime opens its own descriptors (epoll, signal pipe) once.
    (sh.cmd("true") | sh.cmd("cat")).read().await.unwrap();
    let descriptors = open_descriptors();
    let pipeline =
        (sh.cmd("echo").arg("x") << "in") | sh.cmd("cat") | support::testbin().arg("cat");
    for _ in 0..1000 {
        assert_eq!(pipeline.read().await.unwrap(), "x");
    }
    // The other ways to end: failures, timeouts, kills, drops.
    for _ in 0..20 {
        assert!((sh.cmd("false") | sh.cmd("cat")).read().await.is_err());
        let slow = support::testbin()
            .args(["sleep", "10"])
            .timeout(Duration::from_millis(5));
        assert!(slow.run().await.is_err());
        let mut child = (support::testbin().args(["sleep", "10"]) | sh.cmd("cat"))
            .spawn()
            .await
            .unwrap();
        child.kill().await.unwrap();
        drop(
            support::testbin()
                .args(["sleep", "10"])
                .spawn()
                .await
                .unwrap(),
        );
    }
    // Dropped children are reaped in the background; give that a moment.
    let mut left = (open_descriptors(), zombies());
    for _ in 0..100 {
        if left == (descriptors, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = (open_descriptors(), zombies());
    }
    assert_eq!(
        left,
        (descriptors, 0),
        "(open descriptors, zombies) after the runs"
    );
}
