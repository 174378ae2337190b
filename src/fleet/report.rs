//! `FleetReport`: what each host of a fleet gave, in host order, and the summary a person
//! reads.

use std::fmt;

use crate::{Error, Result};

/// Each host's result of one fleet call, in the fleet's host order.
///
/// A host that could not be connected, whose work failed, or that did not run because the
/// failure budget was spent (an [`Error::NotRun`]) has its `Err` here; the others have
/// what their work returned. `Display` is the summary for a person: the counts, then one
/// line per failure (the first line of its error).
///
/// # Example
/// ```no_run
/// # async fn demo() -> leadpipe::Result<()> {
/// use leadpipe::Fleet;
/// let fleet = Fleet::connect(["web[01-20]", "db1"]).await;
/// let report = fleet.run(|m| async move { m.cmd("uptime").read().await }).await;
/// println!("{report}");
/// for (host, result) in report.iter() {
///     if let Ok(uptime) = result {
///         println!("{host}: {uptime}");
///     }
/// }
/// report.into_result()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a fleet call's failures are only in its report"]
pub struct FleetReport<T> {
    hosts: Vec<(String, Result<T>)>,
}

impl<T> FleetReport<T> {
    pub(crate) fn new(hosts: Vec<(String, Result<T>)>) -> FleetReport<T> {
        FleetReport { hosts }
    }

    /// Each host's name and result, in host order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Result<T>)> {
        self.hosts
            .iter()
            .map(|(host, result)| (host.as_str(), result))
    }

    /// The result of `host` (named as the fleet names it), if the fleet has it.
    pub fn get(&self, host: &str) -> Option<&Result<T>> {
        self.iter().find(|(h, _)| *h == host).map(|(_, r)| r)
    }

    /// The hosts that failed (not connected, failed, or not run), with their errors, in
    /// host order.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &Error)> {
        (self.iter()).filter_map(|(host, result)| result.as_ref().err().map(|e| (host, e)))
    }

    /// How many hosts the report holds.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the fleet had no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// How many hosts succeeded.
    pub fn ok_count(&self) -> usize {
        self.hosts.iter().filter(|(_, r)| r.is_ok()).count()
    }

    /// How many hosts failed or did not run.
    pub fn failed_count(&self) -> usize {
        self.len() - self.ok_count()
    }

    /// Whether every host succeeded.
    pub fn is_ok(&self) -> bool {
        self.hosts.iter().all(|(_, r)| r.is_ok())
    }

    /// Every host's value, in host order, when all succeeded.
    ///
    /// # Errors
    /// The first failed host's error, in host order (the report's `Display` has them all).
    pub fn into_result(self) -> Result<Vec<(String, T)>> {
        self.hosts
            .into_iter()
            .map(|(host, result)| result.map(|value| (host, value)))
            .collect()
    }
}

impl<T> IntoIterator for FleetReport<T> {
    type Item = (String, Result<T>);
    type IntoIter = std::vec::IntoIter<(String, Result<T>)>;

    /// Each host's name and result, in host order.
    fn into_iter(self) -> Self::IntoIter {
        self.hosts.into_iter()
    }
}

impl<T> fmt::Display for FleetReport<T> {
    /// `5 hosts: 3 ok, 1 failed, 1 not run`, then a line per host that did not succeed:
    /// its name and the first line of its error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not_run = (self.failures())
            .filter(|(_, e)| matches!(e, Error::NotRun { .. }))
            .count();
        let failed = self.failed_count() - not_run;
        let hosts = if self.len() == 1 { "host" } else { "hosts" };
        write!(
            f,
            "{} {hosts}: {} ok, {failed} failed",
            self.len(),
            self.ok_count()
        )?;
        if not_run > 0 {
            write!(f, ", {not_run} not run")?;
        }
        let width = self.failures().map(|(h, _)| h.len()).max().unwrap_or(0);
        for (host, error) in self.failures() {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or_default();
            // The line already names the host: keep what comes after it.
            let first = match error {
                Error::NotRun { reason, .. } => format!("not run: {reason}"),
                _ => first.to_owned(),
            };
            write!(f, "\n  {host:<width$}  {first}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_counts_and_first_lines() {
        let report: FleetReport<()> = FleetReport::new(vec![
            ("web01".into(), Ok(())),
            (
                "web02".into(),
                Err(Error::io(
                    "line one\nline two",
                    std::io::ErrorKind::Other.into(),
                )),
            ),
            (
                "db1".into(),
                Err(Error::NotRun {
                    host: "db1".into(),
                    reason: "1 host failed, over max_failures (0)".into(),
                }),
            ),
        ]);
        assert_eq!(
            report.to_string(),
            "3 hosts: 1 ok, 1 failed, 1 not run\n  web02  line one\n  db1    not run: 1 host \
             failed, over max_failures (0)"
        );
        assert_eq!((report.ok_count(), report.failed_count()), (1, 2));
        assert!(report.get("web01").is_some_and(|r| r.is_ok()));
        assert!(report.into_result().is_err());
    }
}
