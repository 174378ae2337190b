//! ssh_config fidelity: each config of the corpus is resolved by leadpipe
//! ([`SshBuilder::resolve`]) and by `ssh -G -F FILE DEST` on this machine, and every
//! field leadpipe honours must agree.

use std::{collections::HashMap, fs, path::PathBuf, process::Command, time::Duration};

use leadpipe::{HostKeyPolicy, SshMachine, SshSettings};

/// (destination, config). `{dir}` is the directory of the config file, which also holds
/// `inc/a.conf`, `inc/b.conf` and `inc/.hidden.conf` for the `Include` cases.
const CORPUS: &[(&str, &str)] = &[
    // Host blocks, ordering, defaults.
    (
        "web1",
        "Host web1\n  User deploy\n  Port 2201\nHost *\n  User nobody\n  Port 22\n",
    ),
    (
        "db1",
        "Host web1\n  User deploy\nHost *\n  User nobody\n  ConnectTimeout 9\n",
    ),
    ("web1", "User first\nHost web1\n  User second\n"),
    (
        "a.example.com",
        "Host *.example.com !b.example.com\n  User ex\n",
    ),
    (
        "b.example.com",
        "Host *.example.com !b.example.com\n  User ex\nHost *\n  User other\n",
    ),
    ("web2", "Host !web1\n  User not-web1\n"),
    ("db7", "Host db? web?\n  HostName %h.internal\n  User db\n"),
    ("DB7", "Host db7\n  User lower\nHost DB7\n  User upper\n"),
    ("alias", "Host alias\n  HostName Real.Example.COM\n"),
    ("alias", "Host alias\n  HostName 10.0.0.%%5\n"),
    (
        "h",
        "Host h\n  Port 2222\n  Port 3333\nHost *\n  Port 4444\n",
    ),
    ("h", "HOST=h\n  user = eq\n  PORT=2022\n"),
    // Identity, known_hosts, checking.
    (
        "h",
        "Host h\n  IdentityFile ~/.ssh/id_h\nHost *\n  IdentityFile ~/.ssh/id_all\n  IdentityFile ~/.ssh/id_h\n",
    ),
    (
        "h",
        "Host h\n  User u\n  Port 2200\n  IdentityFile ~/.ssh/%r@%h:%p\n  IdentityFile %d/k/%n\n",
    ),
    (
        "h",
        "UserKnownHostsFile ~/.ssh/kh_%h_%p %d/kh2\nHost *\n  UserKnownHostsFile /never\n",
    ),
    (
        "h",
        "UserKnownHostsFile /srv/%u/%r/%n/%l/%L/%i/%C/%k\n  HostKeyAlias Alias.H\n",
    ),
    ("h", "UserKnownHostsFile none\n"),
    (
        "h",
        "GlobalKnownHostsFile /etc/g1 /etc/g2\nGlobalKnownHostsFile /never\n",
    ),
    ("h", "StrictHostKeyChecking accept-new\n"),
    ("h", "StrictHostKeyChecking no\n"),
    ("h", "StrictHostKeyChecking yes\nStrictHostKeyChecking no\n"),
    ("h", "HostKeyAlias MyAlias\nCheckHostIP yes\n"),
    ("h", "CheckHostIP no\nConnectionAttempts 3\n"),
    ("h", "ForwardAgent ~/.ssh/agent-%h-%p.sock\n"),
    (
        "h",
        "Host h\n  ForwardAgent no\nHost *\n  ForwardAgent /run/agent.sock\n",
    ),
    (
        "h",
        "CertificateFile ~/.ssh/id_ed25519-cert.pub\nCertificateFile /c/%h-cert.pub\n",
    ),
    // Timeouts and keepalives.
    (
        "h",
        "ConnectTimeout 1m30s\nServerAliveInterval 15\nServerAliveCountMax 5\n",
    ),
    (
        "h",
        "Host h\n  ServerAliveInterval 0\nHost *\n  ServerAliveInterval 20\n",
    ),
    // ProxyJump and ProxyCommand.
    ("h", "Host h\n  ProxyJump jump@bastion:2222\n"),
    ("h", "Host h\n  ProxyJump a,b@c:2,d\n"),
    (
        "h",
        "Host h\n  ProxyJump none\nHost *\n  ProxyJump bastion\n",
    ),
    ("bastion", "Host * !bastion\n  ProxyJump bastion\n"),
    ("h", "Host h\n  ProxyCommand socat - TCP:%h:%p\n"),
    ("h", "ProxyCommand none\nProxyCommand nc %h %p\n"),
    ("h", "ProxyJump a\nProxyCommand nc %h %p\n"),
    ("h", "ProxyCommand ssh -W %h:%p bastion\nProxyJump a\n"),
    (
        "h",
        "ProxyCommand=sh -c 'exec nc \"%h\" %p'   # not a comment to ssh\n",
    ),
    // Algorithms: leadpipe offers what ssh would, in the config's order.
    (
        "h",
        "Ciphers aes128-ctr,aes256-gcm@openssh.com,aes128-cbc\n",
    ),
    (
        "h",
        "Ciphers -chacha20*\nMACs hmac-sha2-256,hmac-sha2-512-etm@openssh.com\n",
    ),
    (
        "h",
        "Host h\n  KexAlgorithms curve25519-sha256,diffie-hellman-group16-sha512\nHost *\n  KexAlgorithms +diffie-hellman-group1-sha1\n",
    ),
    (
        "h",
        "HostKeyAlgorithms ssh-ed25519,rsa-sha2-*\nCiphers ^aes128-ctr\n",
    ),
    (
        "h",
        "HostKeyAlgorithms +ssh-rsa\nKexAlgorithms -*sha1,diffie-hellman-group-exchange*\nMACs ^hmac-sha2-256\n",
    ),
    // Environment and agent.
    (
        "h",
        "SetEnv A=1 B=\"two words\" A=3\nSetEnv C=4\nForwardAgent yes\n",
    ),
    (
        "h",
        "SendEnv LANG LC_* XDG_*\nSendEnv -LC_*\nForwardAgent no\nAddKeysToAgent yes\n",
    ),
    // Match.
    ("web1", "Match host web1\n  User m\nHost web1\n  User h\n"),
    (
        "web1",
        "Host web1\n  HostName web1.example.com\nMatch host *.example.com\n  User by-hostname\n",
    ),
    (
        "web1",
        "Host web1\n  HostName web1.example.com\nMatch originalhost web1.example.com\n  User never\nMatch originalhost WEB1\n  User orig\n",
    ),
    (
        "h",
        "User alice\nMatch user alice,!bob\n  Port 2001\nMatch user bob\n  Port 2002\n",
    ),
    ("h", "Match localuser {user}\n  User local-matched\n"),
    (
        "h",
        "Match !localuser {user}\n  User never\nMatch all\n  User all\n",
    ),
    ("h", "Match exec \"test %h = h\"\n  User exec-true\n"),
    (
        "h",
        "Match exec false\n  User never\nMatch !exec false\n  User negated\n",
    ),
    (
        "h",
        "Match host nope exec \"exit 1\"\n  User never\nMatch exec \"test %n:%p:%r = h:22:{user}\"\n  User tokens\n",
    ),
    (
        "alias",
        "Host alias\n  HostName Real.Example.COM\nMatch canonical host real.example.com\n  User canon\nMatch final\n  Port 2345\n",
    ),
    (
        "h",
        "Match canonical\n  User never\nMatch final all\n  SendEnv A\nHost *\n  SendEnv B\n",
    ),
    (
        "h",
        "Match final\n  IdentityFile ~/.ssh/a\nHost *\n  IdentityFile ~/.ssh/b\n",
    ),
    (
        "h",
        "CanonicalizeHostname no\nCanonicalDomains example.com\nMatch canonical\n  User never\n",
    ),
    // Include.
    ("a", "Include {dir}/inc/*.conf\nHost *\n  User default\n"),
    ("b", "Include {dir}/inc/*.conf\nHost *\n  User default\n"),
    (
        "c",
        "Include {dir}/inc/*.conf {dir}/absent\nHost *\n  User default\n",
    ),
    (
        "a",
        "Host other\n  Include {dir}/inc/a.conf\nHost *\n  Port 2020\n",
    ),
    (
        "a",
        "Match host a\n  Include {dir}/inc/a.conf\n  Port 2121\n",
    ),
    ("x", "Include {dir}/inc/b.conf\nUser after\n"),
    // Harmless keywords ignored.
    (
        "h",
        "ForwardX11 yes\nControlMaster auto\nControlPath ~/.ssh/cm-%C\nCompression yes\nUser u\nLogLevel ERROR\nRequestTTY no\nHashKnownHosts yes\n",
    ),
    ("h", "IgnoreUnknown Fancy*\nFancyOption yes\nUser fancy\n"),
];

/// `ssh -G` output: keyword to values, in order.
fn ssh_g(file: &std::path::Path, dest: &str) -> HashMap<String, Vec<String>> {
    let output = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(file)
        .arg(dest)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh is installed (openssh-client)");
    assert!(
        output.status.success(),
        "ssh -G failed for {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        map.entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    map
}

/// `ssh`'s expansion of a file name it prints unexpanded (`IdentityFile`,
/// `CertificateFile`), from the values it printed itself.
fn expand_like_ssh(value: &str, ssh: &HashMap<String, Vec<String>>, dest: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap();
    let value = match value.strip_prefix("~/") {
        Some(rest) => format!("{home}/{rest}"),
        None => value.to_owned(),
    };
    let one = |key: &str| ssh[key][0].clone();
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(&one("hostname")),
            Some('p') => out.push_str(&one("port")),
            Some('r') => out.push_str(&one("user")),
            Some('n') => out.push_str(dest),
            Some('d') => out.push_str(&home),
            Some('%') => out.push('%'),
            other => panic!("the corpus uses token {other:?}, which this test does not expand"),
        }
    }
    PathBuf::from(out)
}

fn check(index: usize, dest: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("inc")).unwrap();
    fs::write(
        dir.path().join("inc/a.conf"),
        "Host a\n  User from-a\n  Port 2001\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("inc/b.conf"),
        "Host b\n  User from-b\nMatch all\n  Port 2002\nHost nothing\n",
    )
    .unwrap();
    fs::write(dir.path().join("inc/.hidden.conf"), "User hidden\n").unwrap();
    let user = Command::new("id").arg("-un").output().unwrap();
    let user = String::from_utf8(user.stdout).unwrap().trim().to_owned();
    let text = text
        .replace("{dir}", &dir.path().display().to_string())
        .replace("{user}", &user);
    let file = dir.path().join("config");
    fs::write(&file, &text).unwrap();
    let ssh = ssh_g(&file, dest);
    let ours: SshSettings = SshMachine::builder(dest)
        .ssh_config(Some(file.clone()))
        .resolve()
        .unwrap_or_else(|e| panic!("corpus #{index} ({dest}):\n{text}\nleadpipe: {e}"));
    let context = format!("corpus #{index} ({dest}):\n{text}\nleadpipe: {ours:#?}\n");
    let one = |key: &str| ssh.get(key).map(|v| v[0].clone()).unwrap_or_default();
    let all = |key: &str| ssh.get(key).cloned().unwrap_or_default();

    assert_eq!(ours.hostname, one("hostname"), "hostname, {context}");
    assert_eq!(ours.user, one("user"), "user, {context}");
    assert_eq!(ours.port.to_string(), one("port"), "port, {context}");

    let defaults = [
        "rsa",
        "ecdsa",
        "ecdsa_sk",
        "ed25519",
        "ed25519_sk",
        "xmss",
        "dsa",
    ]
    .map(|k| format!("~/.ssh/id_{k}"));
    let ssh_identities = all("identityfile");
    let expected: Vec<PathBuf> = if ssh_identities == defaults {
        Vec::new()
    } else {
        ssh_identities
            .iter()
            .map(|v| expand_like_ssh(v, &ssh, dest))
            .collect()
    };
    assert_eq!(ours.identity_files, expected, "identityfile, {context}");
    let certificates: Vec<PathBuf> = all("certificatefile")
        .iter()
        .map(|v| expand_like_ssh(v, &ssh, dest))
        .collect();
    assert_eq!(
        ours.certificate_files, certificates,
        "certificatefile, {context}"
    );

    let files =
        // `ssh -G` prints `none` for a list set to none.
        |key: &str| -> Vec<PathBuf> {
            let value = one(key);
            if value == "none" {
                return Vec::new();
            }
            value.split_whitespace().map(PathBuf::from).collect()
        };
    assert_eq!(
        ours.known_hosts_files,
        files("userknownhostsfile"),
        "userknownhostsfile, {context}"
    );
    assert_eq!(
        ours.global_known_hosts_files,
        files("globalknownhostsfile"),
        "globalknownhostsfile, {context}"
    );
    let policy = match one("stricthostkeychecking").as_str() {
        "false" => HostKeyPolicy::AcceptAny,
        "accept-new" => HostKeyPolicy::AcceptNew,
        _ => HostKeyPolicy::Strict,
    };
    assert_eq!(
        ours.host_key_policy, policy,
        "stricthostkeychecking, {context}"
    );
    assert_eq!(
        ours.host_key_alias.unwrap_or_default(),
        one("hostkeyalias"),
        "hostkeyalias, {context}"
    );
    assert_eq!(
        ours.check_host_ip,
        one("checkhostip") == "yes",
        "checkhostip, {context}"
    );
    assert_eq!(
        ours.connection_attempts.to_string(),
        one("connectionattempts"),
        "connectionattempts, {context}"
    );

    let timeout = match one("connecttimeout").as_str() {
        "none" => Duration::from_secs(15),
        secs => Duration::from_secs(secs.parse().unwrap()),
    };
    assert_eq!(ours.connect_timeout, timeout, "connecttimeout, {context}");
    let interval = match one("serveraliveinterval").as_str() {
        // ssh's default is off, leadpipe's 10 s.
        "0" if !text.contains("ServerAliveInterval 0") => Some(Duration::from_secs(10)),
        "0" => None,
        secs => Some(Duration::from_secs(secs.parse().unwrap())),
    };
    assert_eq!(
        ours.keepalive_interval, interval,
        "serveraliveinterval, {context}"
    );
    assert_eq!(
        ours.keepalive_max.to_string(),
        one("serveralivecountmax"),
        "serveralivecountmax, {context}"
    );

    assert_eq!(
        ours.proxy_jump.unwrap_or_default(),
        one("proxyjump"),
        "proxyjump, {context}"
    );
    assert_eq!(
        ours.proxy_command.unwrap_or_default(),
        one("proxycommand"),
        "proxycommand, {context}"
    );
    // `ssh -G` prints the socket when one is named, and the flag otherwise (a first
    // `ForwardAgent no` keeps forwarding off, though a later socket path still shows).
    let forward_agent = one("forwardagent");
    if ["yes", "no"].contains(&forward_agent.as_str()) {
        assert_eq!(
            ours.forward_agent,
            forward_agent == "yes",
            "forwardagent, {context}"
        );
    } else if ours.forward_agent {
        assert_eq!(
            ours.forward_agent_socket,
            Some(expand_like_ssh(&forward_agent, &ssh, dest)),
            "forwardagent socket, {context}"
        );
    }
    let set_env: Vec<String> = ours
        .set_env
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    assert_eq!(set_env, all("setenv"), "setenv, {context}");
    assert_eq!(ours.send_env, all("sendenv"), "sendenv, {context}");

    // What ssh offers with no config, to see what a list removed.
    let defaults = ssh_g(std::path::Path::new("/dev/null"), "h");
    for (keyword, offered) in [
        ("Ciphers", &ours.ciphers),
        ("KexAlgorithms", &ours.kex_algorithms),
        ("MACs", &ours.macs),
        ("HostKeyAlgorithms", &ours.host_key_algorithms),
    ] {
        let key = keyword.to_ascii_lowercase();
        let list = |map: &HashMap<String, Vec<String>>| -> Vec<String> {
            map[&key][0].split(',').map(str::to_owned).collect()
        };
        let theirs = list(&ssh);
        assert!(!offered.is_empty(), "{key}, {context}");
        // Nothing the config took out of ssh's defaults is offered.
        for name in list(&defaults).iter().filter(|d| !theirs.contains(d)) {
            assert!(
                !offered.contains(name),
                "{key}: {name} was removed, {context}"
            );
        }
        // A plain list: only what it names, in its order of preference.
        let plain = text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(keyword)
                .map(str::trim)
                .filter(|value| !value.starts_with(['+', '-', '^']))
        });
        if let Some(plain) = plain {
            for name in offered {
                assert!(
                    theirs.contains(name),
                    "{key}: {name} not in ssh's {theirs:?}, {context}"
                );
            }
            // Within one wildcard each orders by its own list of what it supports.
            if !plain.contains(['*', '?']) {
                let same_order: Vec<&String> =
                    theirs.iter().filter(|t| offered.contains(t)).collect();
                let ours_order: Vec<&String> = offered.iter().collect();
                assert_eq!(ours_order, same_order, "{key} order, {context}");
            }
        }
    }
}

#[test]
fn leadpipe_resolves_the_corpus_as_ssh_dash_g_does() {
    assert!(CORPUS.len() >= 40);
    for (index, (dest, text)) in CORPUS.iter().enumerate() {
        check(index, dest, text);
    }
}

#[test]
fn a_keyword_leadpipe_does_not_honour_stops_resolve_and_connect() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config");
    fs::write(
        &file,
        "Host web1\n  User deploy\n\n  IdentityAgent ~/.other-agent.sock\n",
    )
    .unwrap();
    let builder = SshMachine::builder("web1").ssh_config(Some(file.clone()));
    let error = builder.resolve().unwrap_err().to_string();
    assert!(error.contains(&format!("{}:4:", file.display())), "{error}");
    assert!(error.contains("IdentityAgent"), "{error}");
    assert!(
        error.contains("ignore_config_keyword(\"IdentityAgent\")"),
        "{error}"
    );
    let error = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(builder.clone().connect())
        .unwrap_err()
        .to_string();
    assert!(error.contains("IdentityAgent"), "{error}");
    // Ignored by name, in any case; or overridden by identity files given to the builder.
    let settings = builder
        .clone()
        .ignore_config_keyword("identityagent")
        .resolve()
        .unwrap();
    assert!(settings.use_agent);
    assert_eq!(settings.user, "deploy");
    assert!(builder.identity_file("/k/id").resolve().is_ok());
}
