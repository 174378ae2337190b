//! `Inventory`: the hosts of a fleet, from destinations as `ssh` takes them, host ranges,
//! a file of destinations, or an Ansible INI inventory.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// How many hosts one pattern may expand to: a typo such as `web[1-100000000]` is an error
/// rather than a fleet that takes the machine's memory.
const MAX_EXPANSION: usize = 100_000;

/// The hosts a [`Fleet`](crate::Fleet) connects to, in order.
///
/// Each host is a destination as `ssh` takes it: `host`, `user@host`, `user@host:port`,
/// `[::1]:2222`, `ssh://user@host:port`, or an alias of ssh_config (which the connection
/// reads, as `ssh` does). A destination may hold host ranges, expanded in place:
/// `web[01-20].example.com` is `web01.example.com` to `web20.example.com` (a leading zero
/// in the first bound keeps every number at its width), `10.0.0.[1-9]`, `db-[a-c]`; a
/// range may also be written Ansible's way, `[01:20]` or `[0:100:10]` (with a step).
/// Brackets that hold no range (an IPv6 address) stay as they are.
///
/// An entry that cannot be used (a range that does not parse, a port that is not a
/// number, a group that does not exist) is kept, in its place, as a host that fails with
/// the reason: the fleet's report shows it rather than silently running on fewer hosts.
///
/// # Example
/// ```no_run
/// # fn demo() -> leadpipe::Result<()> {
/// use leadpipe::Inventory;
/// let web = Inventory::new(["deploy@web[01-20].example.com", "db1"]);
/// assert_eq!(web.len(), 21);
/// let db = Inventory::ansible_ini("hosts.ini")?.group("db");
/// let listed = Inventory::file("hosts.txt")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    entries: Vec<Entry>,
    /// The groups of an Ansible inventory (empty otherwise).
    groups: Groups,
}

/// One host of an inventory, or the reason an entry could not become one.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// A host to connect to.
    Host(HostSpec),
    /// An entry that cannot be used: its name, and why.
    Invalid {
        /// How the report names it.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
}

impl Entry {
    /// How reports and prefixed output name this entry.
    pub(crate) fn name(&self) -> &str {
        match self {
            Entry::Host(spec) => &spec.name,
            Entry::Invalid { name, .. } => name,
        }
    }
}

/// Where and how to connect to one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostSpec {
    /// How reports and prefixed output name the host: the destination as written (after
    /// range expansion), or the inventory's host name.
    pub(crate) name: String,
    /// The host to give to [`SshMachine::builder`](crate::SshMachine::builder): a name, an
    /// address or an ssh_config alias.
    pub(crate) host: String,
    pub(crate) user: Option<String>,
    pub(crate) port: Option<u16>,
    pub(crate) identity_file: Option<PathBuf>,
}

/// An Ansible inventory's groups: members, child groups, variables.
#[derive(Clone, Debug, Default)]
struct Groups {
    /// Where the inventory came from, for errors.
    source: String,
    /// Group names in the order the file first names them.
    order: Vec<String>,
    groups: HashMap<String, Group>,
}

#[derive(Clone, Debug, Default)]
struct Group {
    /// Host names listed directly under `[group]`.
    hosts: Vec<String>,
    /// Groups listed under `[group:children]`.
    children: Vec<String>,
}

impl Inventory {
    /// An inventory of `destinations`, each written as `ssh` takes it, host ranges expanded.
    pub fn new<I>(destinations: I) -> Inventory
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut entries = Vec::new();
        for destination in destinations {
            push_destination(&mut entries, destination.as_ref().trim());
        }
        Inventory {
            entries,
            groups: Groups::default(),
        }
    }

    /// An inventory of the destinations in the file at `path`: one a line (host ranges
    /// expanded), blank lines and lines starting with `#` skipped, and anything after a
    /// ` #` on a line a comment.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read.
    pub fn file(path: impl AsRef<Path>) -> Result<Inventory> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the host list {}", path.display()), e))?;
        Ok(Inventory::new(text.lines().filter_map(|line| {
            let line = line.split(" #").next().unwrap_or_default().trim();
            (!line.is_empty() && !line.starts_with('#')).then_some(line)
        })))
    }

    /// An Ansible inventory in INI form, every host of it (select some with
    /// [`group`](Inventory::group)).
    ///
    /// Read: `[group]` sections of hosts (a line is a host name or range, Ansible's
    /// `web[01:20]` or `web[01-20]`, then `key=value` variables), `[group:children]`,
    /// `[group:vars]` and `[all:vars]`, hosts before any section (group `ungrouped`),
    /// comments starting with `#` or `;`. The variables leadpipe uses are `ansible_host`,
    /// `ansible_user`, `ansible_port` and `ansible_ssh_private_key_file` (also under their
    /// older `ansible_ssh_*` names); the others are ignored. A host's own line wins over the
    /// groups that list it, which win over the groups above them, which win over
    /// `[all:vars]`. The host's name in the inventory names it in reports; what is not set
    /// comes from ssh_config for the host (`ansible_host` when set), as `ssh` reads it.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read or a line is not an inventory line
    /// (naming file and line).
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::{Fleet, Inventory};
    /// let fleet = Fleet::builder(Inventory::ansible_ini("hosts.ini")?.group("web"))
    ///     .concurrency(100)
    ///     .connect()
    ///     .await;
    /// # Ok(()) }
    /// ```
    pub fn ansible_ini(path: impl AsRef<Path>) -> Result<Inventory> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the inventory {}", path.display()), e))?;
        parse_ini(&text, &path.display().to_string())
            .map_err(|e| Error::io(e, std::io::ErrorKind::InvalidData.into()))
    }

    /// The hosts of group `name` (with those of its child groups), in inventory order. `all`
    /// is every host; `ungrouped` those before any section.
    ///
    /// A group the inventory does not have gives an inventory of one entry that fails with
    /// that reason (naming the groups there are), so a typo shows in the fleet's report
    /// instead of running on nothing.
    ///
    /// # Example
    /// ```no_run
    /// # async fn demo() -> leadpipe::Result<()> {
    /// use leadpipe::{Fleet, Inventory};
    /// let web = Inventory::ansible_ini("hosts.ini")?.group("web");
    /// let fleet = Fleet::builder(web).concurrency(20).connect().await;
    /// # Ok(()) }
    /// ```
    pub fn group(&self, name: &str) -> Inventory {
        let groups = &self.groups;
        let members: HashSet<&str> = if name == "all" {
            self.entries.iter().map(Entry::name).collect()
        } else if name == "ungrouped" {
            let grouped: HashSet<&str> = groups
                .groups
                .values()
                .flat_map(|g| g.hosts.iter().map(String::as_str))
                .collect();
            (self.entries.iter().map(Entry::name))
                .filter(|h| !grouped.contains(h))
                .collect()
        } else if groups.groups.contains_key(name) {
            let mut members = HashSet::new();
            for group in groups.with_children(name) {
                members.extend(groups.groups[group].hosts.iter().map(String::as_str));
            }
            members
        } else {
            let known = if groups.order.is_empty() {
                "it has none".to_owned()
            } else {
                format!("its groups: {}", groups.order.join(", "))
            };
            let source = if groups.source.is_empty() {
                "this inventory".to_owned()
            } else {
                groups.source.clone()
            };
            return Inventory {
                entries: vec![Entry::Invalid {
                    name: name.to_owned(),
                    reason: format!("no group {name:?} in {source} ({known})"),
                }],
                groups: self.groups.clone(),
            };
        };
        Inventory {
            entries: (self.entries.iter())
                .filter(|e| members.contains(e.name()))
                .cloned()
                .collect(),
            groups: self.groups.clone(),
        }
    }

    /// The names of the groups of an Ansible inventory, in the order the file names them.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.order.iter().map(String::as_str)
    }

    /// The hosts' names, in order: how the fleet's report and prefixed output name them.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(Entry::name)
    }

    /// How many hosts (and unusable entries) the inventory holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

impl<S: AsRef<str>> FromIterator<S> for Inventory {
    fn from_iter<I: IntoIterator<Item = S>>(destinations: I) -> Inventory {
        Inventory::new(destinations)
    }
}

impl fmt::Display for Inventory {
    /// The hosts' names, separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for name in self.hosts() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl Groups {
    /// `name` and every group below it through `:children`, each once.
    fn with_children<'a>(&'a self, name: &'a str) -> Vec<&'a str> {
        let mut seen = vec![name];
        let mut todo = vec![name];
        while let Some(group) = todo.pop() {
            for child in self.groups.get(group).into_iter().flat_map(|g| &g.children) {
                if !seen.contains(&child.as_str()) && self.groups.contains_key(child) {
                    seen.push(child);
                    todo.push(child);
                }
            }
        }
        seen
    }
}

/// Expands `destination`'s ranges and parses each result into `entries`.
fn push_destination(entries: &mut Vec<Entry>, destination: &str) {
    if destination.is_empty() {
        return;
    }
    match expand(destination) {
        Ok(names) => {
            for name in names {
                entries.push(match parse_destination(&name) {
                    Ok(spec) => Entry::Host(spec),
                    Err(reason) => Entry::Invalid { name, reason },
                });
            }
        }
        Err(reason) => entries.push(Entry::Invalid {
            name: destination.to_owned(),
            reason,
        }),
    }
}

/// `user@host:port` (or `ssh://...`, `[v6]:port`) as `ssh` reads a destination.
pub(crate) fn parse_destination(destination: &str) -> std::result::Result<HostSpec, String> {
    let parsed = crate::ssh::parse_destination(destination)?;
    Ok(HostSpec {
        name: destination.to_owned(),
        host: parsed.host.to_owned(),
        user: parsed.user.map(str::to_owned),
        port: parsed.port,
        identity_file: None,
    })
}

/// Expands every host range of `pattern`, left to right: `web[01-03]` is `web01`,
/// `web02`, `web03`. Brackets that hold no range stay as they are.
pub(crate) fn expand(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let mut done = vec![String::new()];
    let mut rest = pattern;
    loop {
        let Some((open, close, values)) = next_range(rest, pattern)? else {
            for name in &mut done {
                name.push_str(rest);
            }
            return Ok(done);
        };
        let before = &rest[..open];
        if done.len().saturating_mul(values.len()) > MAX_EXPANSION {
            return Err(format!(
                "{pattern}: expands to more than {MAX_EXPANSION} hosts"
            ));
        }
        done = done
            .iter()
            .flat_map(|prefix| values.iter().map(move |v| format!("{prefix}{before}{v}")))
            .collect();
        rest = &rest[close + 1..];
    }
}

/// The first `[...]` of `text` that holds a range: where it opens and closes, and its
/// values. `Ok(None)` when there is none.
#[allow(clippy::type_complexity)]
fn next_range(
    text: &str,
    pattern: &str,
) -> std::result::Result<Option<(usize, usize, Vec<String>)>, String> {
    let mut from = 0;
    while let Some(open) = text[from..].find('[').map(|i| i + from) {
        let Some(close) = text[open..].find(']').map(|i| i + open) else {
            return Ok(None);
        };
        if let Some(values) = range_values(&text[open + 1..close], pattern)? {
            return Ok(Some((open, close, values)));
        }
        from = close + 1;
    }
    Ok(None)
}

/// The values of a range's inside (`01-20`, `1:9`, `0:100:10`, `a-f`); `Ok(None)` when it
/// is not a range (such as an IPv6 address).
fn range_values(inside: &str, pattern: &str) -> std::result::Result<Option<Vec<String>>, String> {
    let parts: Vec<&str> = inside.split([':', '-']).collect();
    let dashes = inside.matches('-').count();
    let shape_ok = match parts.len() {
        2 => true,
        // A step only in Ansible's form: `[0:100:10]`.
        3 => dashes == 0,
        _ => false,
    };
    if !shape_ok || dashes > 1 {
        return Ok(None);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let letter = |s: &str| s.len() == 1 && s.bytes().all(|b| b.is_ascii_alphabetic());
    let step = match parts.get(2) {
        Some(step) if digits(step) => step.parse::<usize>().unwrap_or(0),
        Some(_) => return Ok(None),
        None => 1,
    };
    let bad = |why: &str| Err(format!("{pattern}: the range [{inside}] {why}"));
    if step == 0 {
        return bad("has a step of 0");
    }
    let (start, end) = (parts[0], parts[1]);
    if digits(start) && digits(end) {
        let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) else {
            return bad("has a bound too large");
        };
        if a > b {
            return bad("runs backwards");
        }
        if (b - a) / step as u64 >= MAX_EXPANSION as u64 {
            return bad(&format!("has more than {MAX_EXPANSION} values"));
        }
        // `[01-20]` keeps the width of the first bound: 01, 02, ..., 20.
        let width = if start.len() > 1 && start.starts_with('0') {
            start.len()
        } else {
            0
        };
        let values = (a..=b)
            .step_by(step)
            .map(|n| format!("{n:0width$}"))
            .collect();
        return Ok(Some(values));
    }
    if letter(start) && letter(end) {
        let (a, b) = (start.as_bytes()[0], end.as_bytes()[0]);
        if a > b || a.is_ascii_lowercase() != b.is_ascii_lowercase() {
            return bad("runs backwards or mixes cases");
        }
        let values = (a..=b)
            .step_by(step)
            .map(|c| char::from(c).to_string())
            .collect();
        return Ok(Some(values));
    }
    Ok(None)
}

/// Splits an inventory line into words at blanks, with `'...'` and `"..."` quoting.
fn words(line: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '#') if !in_word => break,
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// What a `[...]` header opens.
enum Section {
    Hosts(String),
    Children(String),
    Vars(String),
}

/// Parses an Ansible INI inventory; `source` names it in errors.
pub(crate) fn parse_ini(text: &str, source: &str) -> std::result::Result<Inventory, String> {
    // Hosts in order of first mention, with the variables of their own lines.
    let mut hosts: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups = Groups {
        source: source.to_owned(),
        ..Groups::default()
    };
    let mut group_vars: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut section = Section::Hosts("ungrouped".to_owned());
    let note_group = |groups: &mut Groups, name: &str| {
        if !groups.groups.contains_key(name) {
            groups.order.push(name.to_owned());
            groups.groups.insert(name.to_owned(), Group::default());
        }
    };
    for (number, line) in text.lines().enumerate() {
        let at = |why: String| format!("{source}:{}: {why}", number + 1);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(header) = trimmed.strip_prefix('[') {
            let header = header
                .strip_suffix(']')
                .ok_or_else(|| at(format!("a section header without `]`: {trimmed}")))?
                .trim();
            section = match header.split_once(':') {
                None => Section::Hosts(header.to_owned()),
                Some((name, "children")) => Section::Children(name.to_owned()),
                Some((name, "vars")) => Section::Vars(name.to_owned()),
                Some((_, kind)) => {
                    return Err(at(format!("unknown section kind {kind:?} in [{header}]")));
                }
            };
            match &section {
                Section::Hosts(name) | Section::Children(name) | Section::Vars(name)
                    if name != "all" && name != "ungrouped" =>
                {
                    note_group(&mut groups, name)
                }
                _ => {}
            }
            continue;
        }
        let words = words(trimmed).map_err(|e| at(e.to_owned()))?;
        let Some((first, rest)) = words.split_first() else {
            continue;
        };
        match &section {
            Section::Hosts(group) => {
                let vars = rest
                    .iter()
                    .map(|word| {
                        word.split_once('=')
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .ok_or_else(|| at(format!("{word:?} is not key=value")))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                for name in expand(first).map_err(at)? {
                    let i = *index.entry(name.clone()).or_insert_with(|| {
                        hosts.push((name.clone(), Vec::new()));
                        hosts.len() - 1
                    });
                    hosts[i].1.extend(vars.iter().cloned());
                    if group != "ungrouped" && group != "all" {
                        let members = &mut groups.groups.get_mut(group).expect("noted").hosts;
                        if !members.contains(&name) {
                            members.push(name);
                        }
                    }
                }
            }
            Section::Children(group) => {
                if !rest.is_empty() {
                    return Err(at(format!("a child group line holds one name: {trimmed}")));
                }
                note_group(&mut groups, first);
                (groups.groups.get_mut(group).expect("noted").children).push(first.clone());
            }
            Section::Vars(group) => {
                let joined = words.join(" ");
                let (key, value) = joined
                    .split_once('=')
                    .ok_or_else(|| at(format!("{trimmed:?} is not key=value")))?;
                group_vars
                    .entry(group.clone())
                    .or_default()
                    .push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }

    let entries = hosts
        .into_iter()
        .map(|(name, own)| {
            let vars = resolve_vars(&groups, &group_vars, &name, own);
            match spec_from_vars(&name, &vars) {
                Ok(spec) => Entry::Host(spec),
                Err(reason) => Entry::Invalid {
                    name,
                    reason: format!("{source}: {reason}"),
                },
            }
        })
        .collect();
    Ok(Inventory { entries, groups })
}

/// A host's variables, later ones winning: `[all:vars]`, the groups above the host's own,
/// the host's own groups, its own lines.
fn resolve_vars(
    groups: &Groups,
    group_vars: &HashMap<String, Vec<(String, String)>>,
    host: &str,
    own: Vec<(String, String)>,
) -> HashMap<String, String> {
    let direct: Vec<&str> = (groups.order.iter())
        .filter(|g| groups.groups[*g].hosts.iter().any(|h| h == host))
        .map(String::as_str)
        .collect();
    let above: Vec<&str> = (groups.order.iter())
        .map(String::as_str)
        .filter(|g| !direct.contains(g))
        .filter(|g| {
            let below = groups.with_children(g);
            direct.iter().any(|d| below.contains(d))
        })
        .collect();
    let mut vars = HashMap::new();
    let layers = std::iter::once("all")
        .chain(above)
        .chain(direct.iter().copied());
    for group in layers {
        for (key, value) in group_vars.get(group).into_iter().flatten() {
            vars.insert(key.clone(), value.clone());
        }
    }
    vars.extend(own);
    vars
}

/// The connection settings of inventory host `name` from its variables.
fn spec_from_vars(
    name: &str,
    vars: &HashMap<String, String>,
) -> std::result::Result<HostSpec, String> {
    let get = |keys: [&str; 2]| keys.iter().find_map(|k| vars.get(*k)).cloned();
    let port = match get(["ansible_port", "ansible_ssh_port"]) {
        Some(port) => Some(
            port.parse::<u16>()
                .map_err(|_| format!("ansible_port of {name} is not a port number: {port:?}"))?,
        ),
        None => None,
    };
    Ok(HostSpec {
        name: name.to_owned(),
        host: get(["ansible_host", "ansible_ssh_host"]).unwrap_or_else(|| name.to_owned()),
        user: get(["ansible_user", "ansible_ssh_user"]),
        port,
        identity_file: get(["ansible_ssh_private_key_file", "ansible_private_key_file"])
            .map(PathBuf::from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(inventory: &Inventory) -> Vec<&str> {
        inventory.hosts().collect()
    }

    #[test]
    fn ranges_keep_zero_padding() {
        let hosts = expand("web[01-12].example.com").unwrap();
        assert_eq!(hosts.len(), 12);
        assert_eq!(hosts[0], "web01.example.com");
        assert_eq!(hosts[8], "web09.example.com");
        assert_eq!(hosts[11], "web12.example.com");
        assert_eq!(
            expand("10.0.0.[1-3]").unwrap(),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(expand("h[8-10]").unwrap(), ["h8", "h9", "h10"]);
        assert_eq!(expand("n[001:003]").unwrap(), ["n001", "n002", "n003"]);
        assert_eq!(expand("s[0:10:5]").unwrap(), ["s0", "s5", "s10"]);
    }

    #[test]
    fn several_ranges_multiply_and_letters_count() {
        assert_eq!(
            expand("r[1-2]-[a-b]").unwrap(),
            ["r1-a", "r1-b", "r2-a", "r2-b"]
        );
    }

    #[test]
    fn brackets_without_a_range_stay() {
        assert_eq!(expand("[::1]:2222").unwrap(), ["[::1]:2222"]);
        assert_eq!(expand("plain").unwrap(), ["plain"]);
        assert_eq!(expand("[fe80::1]").unwrap(), ["[fe80::1]"]);
    }

    #[test]
    fn bad_ranges_are_errors_naming_the_pattern() {
        let e = expand("web[9-1]").unwrap_err();
        assert!(e.contains("web[9-1]") && e.contains("backwards"), "{e}");
        let e = expand("w[0-99999]x[0-99]").unwrap_err();
        assert!(e.contains("more than"), "{e}");
        assert!(expand("w[0:4:0]").unwrap_err().contains("step of 0"));
    }

    #[test]
    fn destinations_parse_as_ssh_reads_them() {
        let spec = parse_destination("deploy@web1:2222").unwrap();
        assert_eq!(
            (spec.user.as_deref(), spec.host.as_str(), spec.port),
            (Some("deploy"), "web1", Some(2222))
        );
        let spec = parse_destination("ssh://root@[::1]:22").unwrap();
        assert_eq!((spec.host.as_str(), spec.port), ("::1", Some(22)));
        let spec = parse_destination("fe80::1").unwrap();
        assert_eq!((spec.host.as_str(), spec.port), ("fe80::1", None));
        assert!(
            parse_destination("web1:http")
                .unwrap_err()
                .contains("not a number")
        );
        let inventory = Inventory::new(["a@h[1-2]:22", "bad:port", " ", "x[3-1]"]);
        assert_eq!(
            names(&inventory),
            ["a@h1:22", "a@h2:22", "bad:port", "x[3-1]"]
        );
        assert!(matches!(inventory.entries[2], Entry::Invalid { .. }));
        assert!(matches!(inventory.entries[3], Entry::Invalid { .. }));
    }

    const INI: &str = "\
# a comment
bastion ansible_host=192.0.2.1

[web]
web[01:03].example.com ansible_user=deploy
web-canary ansible_host=10.0.0.9 ansible_port=2222 # canary

[db]
db1 ansible_host=10.0.0.5 ansible_user=\"pg admin\"
web01.example.com

[prod:children]
web
db

[prod:vars]
ansible_user=ops
ansible_port=22

[db:vars]
ansible_user = postgres

[all:vars]
ansible_port=2200
";

    fn spec<'a>(inventory: &'a Inventory, name: &str) -> &'a HostSpec {
        inventory
            .entries
            .iter()
            .find_map(|e| match e {
                Entry::Host(spec) if spec.name == name => Some(spec),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    #[test]
    fn ansible_groups_children_and_order() {
        let inventory = parse_ini(INI, "hosts.ini").unwrap();
        assert_eq!(
            inventory.groups().collect::<Vec<_>>(),
            ["web", "db", "prod"]
        );
        assert_eq!(
            names(&inventory.group("web")),
            [
                "web01.example.com",
                "web02.example.com",
                "web03.example.com",
                "web-canary"
            ]
        );
        assert_eq!(names(&inventory.group("db")), ["web01.example.com", "db1"]);
        assert_eq!(inventory.group("prod").len(), 5);
        assert_eq!(names(&inventory.group("ungrouped")), ["bastion"]);
        assert_eq!(inventory.group("all").len(), 6);
        let missing = inventory.group("wbe");
        assert_eq!(missing.len(), 1);
        match &missing.entries[0] {
            Entry::Invalid { reason, .. } => {
                assert!(
                    reason.contains("\"wbe\"") && reason.contains("web, db, prod"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ansible_variables_and_their_precedence() {
        let inventory = parse_ini(INI, "hosts.ini").unwrap();
        // Own line over the group above (prod: ops) and all:vars.
        let web02 = spec(&inventory, "web02.example.com");
        assert_eq!(
            (web02.host.as_str(), web02.user.as_deref()),
            ("web02.example.com", Some("deploy"))
        );
        // prod:vars (a group above) over all:vars.
        assert_eq!(web02.port, Some(22));
        let canary = spec(&inventory, "web-canary");
        assert_eq!(
            (canary.host.as_str(), canary.port, canary.user.as_deref()),
            ("10.0.0.9", Some(2222), Some("ops"))
        );
        // Own line over db:vars; quoted values keep their blank.
        let db1 = spec(&inventory, "db1");
        assert_eq!(
            (db1.host.as_str(), db1.user.as_deref()),
            ("10.0.0.5", Some("pg admin"))
        );
        let bastion = spec(&inventory, "bastion");
        assert_eq!((bastion.user.as_deref(), bastion.port), (None, Some(2200)));
    }

    #[test]
    fn ansible_errors_name_file_and_line() {
        let e = parse_ini("[web\nh1\n", "inv").unwrap_err();
        assert!(e.starts_with("inv:1:"), "{e}");
        let e = parse_ini("[web]\nh1 user\n", "inv").unwrap_err();
        assert!(e.starts_with("inv:2:") && e.contains("key=value"), "{e}");
        let bad_port = parse_ini("h1 ansible_port=ssh\n", "inv").unwrap();
        assert!(
            matches!(&bad_port.entries[0], Entry::Invalid { reason, .. } if reason.contains("not a port"))
        );
    }
}
