//! The deployment files in `deploy/` say what README's "Running several nodes" says: the
//! systemd unit (checked by `systemd-analyze verify` when present, and parsed) stops a node
//! with SIGTERM and waits longer than its drain; the Consul service reads `/ready` on the
//! node's port often enough to see a drain begin. (`deploy/nginx.conf` runs for real in
//! cluster_nginx.rs and deploy_nginx.rs.) The README's install steps create what the unit
//! names. No systemd or Consul daemon is needed.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::repo_root;

/// "40s", "500ms", "2min", "1m", "1h" (the forms systemd and Consul both read).
fn duration(s: &str) -> Duration {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {s:?}"));
    match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => panic!("duration {s:?}: unit {unit:?}"),
    }
}

/// `[Section]` → key → values (a key may repeat).
fn parse_unit(text: &str) -> HashMap<String, HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line:?}"));
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

fn default_shutdown() -> (Duration, Duration) {
    let s = wshub_server::config::Shutdown::default();
    let window = if s.drain_window.is_zero() { s.timeout / 2 } else { s.drain_window };
    (s.timeout, window)
}

#[test]
fn systemd_unit_stops_with_sigterm_and_waits_for_the_drain() {
    let text = std::fs::read_to_string(repo_root().join("deploy/wshub.service")).unwrap();
    let unit = parse_unit(&text);
    let service = &unit["Service"];
    let one = |k: &str| -> &str {
        let v = service.get(k).unwrap_or_else(|| panic!("[Service] {k} missing"));
        assert_eq!(v.len(), 1, "[Service] {k} set {} times", v.len());
        &v[0]
    };
    assert_eq!(one("KillSignal"), "SIGTERM");
    // `systemctl reload`: SIGHUP reloads, it never ends the node (tests/centrifugo_deploy.rs).
    assert!(one("ExecReload").contains("kill -HUP $MAINPID"), "{}", one("ExecReload"));
    assert_eq!(one("Restart"), "on-failure");
    let nofile: u64 = one("LimitNOFILE").parse().unwrap();
    assert!(nofile >= 65_536, "LimitNOFILE {nofile}: one descriptor per client");
    let (timeout, _) = default_shutdown();
    let stop = duration(one("TimeoutStopSec"));
    assert!(
        stop > timeout,
        "TimeoutStopSec {stop:?} must exceed shutdown.timeout {timeout:?}, or systemd kills a draining node"
    );
    let exec = one("ExecStart");
    assert!(exec.contains(" serve") && exec.contains("--config "), "{exec}");
    assert!(unit["Install"].contains_key("WantedBy"));

    // systemd's own parser, when the machine has it: no complaint at all (it reports
    // unknown keys and bad values on stderr and still exits 0). The binary path is made
    // one that exists here, since verify checks it.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("systemd-analyze not installed: the unit was only parsed");
        return;
    };
    assert!(version.status.success());
    let dir = common::temp_dir("systemd-verify");
    let rendered = text.replace("/usr/local/bin/wshub", env!("CARGO_BIN_EXE_wshub"));
    assert_ne!(rendered, text, "ExecStart no longer names /usr/local/bin/wshub");
    let path = dir.join("wshub.service");
    std::fs::write(&path, rendered).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("wshub.service"),
        "systemd-analyze verify complains about the unit: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn consul_check_reads_ready_on_the_service_port_within_the_drain_window() {
    let text = std::fs::read_to_string(repo_root().join("deploy/consul/wshub.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let service = &v["service"];
    assert_eq!(service["name"], "wshub");
    let port = service["port"].as_u64().unwrap();
    let check = &service["check"];
    let url = check["http"].as_str().unwrap();
    assert_eq!(url, format!("http://127.0.0.1:{port}/ready"), "the check reads this node's /ready");
    assert!(check["method"].is_null() || check["method"] == "GET");
    let interval = duration(check["interval"].as_str().unwrap());
    let timeout = duration(check["timeout"].as_str().unwrap());
    assert!(timeout <= interval, "timeout {timeout:?} above interval {interval:?}");
    // Consul sees the 503 at most interval + timeout after the drain began; by then at
    // most the first two of the drain's 20 batches have been closed.
    let (_, window) = default_shutdown();
    assert!(
        interval + timeout <= window / 10,
        "check every {interval:?} (+{timeout:?}): too slow for a {window:?} drain window"
    );
}

/// The README's install steps for a node create what the unit names: its binary at the
/// `ExecStart` path, its `User` and `Group`, the configuration file `ExecStart` reads, and
/// they check the configuration and the unit before starting it.
#[test]
fn readme_install_steps_create_what_the_unit_names() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split_once("### Installing a node on Debian")
        .expect("README has the install steps")
        .1;
    let steps = section.split_once("```sh\n").unwrap().1.split_once("```").unwrap().0;
    let text = std::fs::read_to_string(repo_root().join("deploy/wshub.service")).unwrap();
    let unit = parse_unit(&text);
    let service = &unit["Service"];
    let exec = &service["ExecStart"][0];
    let binary = exec.split_whitespace().next().unwrap();
    let config = exec.split_once("--config ").unwrap().1.split_whitespace().next().unwrap();
    let (user, group) = (&service["User"][0], &service["Group"][0]);
    assert_eq!(user, group, "one system user, whose group reads the configuration");
    let has = |what: &str, line: &dyn Fn(&str) -> bool| {
        assert!(steps.lines().any(line), "README's install steps: no line that {what}:\n{steps}");
    };
    has("installs the binary", &|l| {
        l.starts_with("install ") && l.ends_with(&format!(" {binary}"))
    });
    has("creates the user", &|l| {
        l.starts_with("useradd --system") && l.ends_with(&format!(" {user}"))
    });
    has("installs the configuration readable by the group", &|l| {
        l.starts_with("install ") && l.contains(&format!("-g {group}")) && l.ends_with(&format!(" {config}"))
    });
    has("checks the configuration", &|l| l == format!("{binary} checkconfig -c {config}"));
    has("installs the unit", &|l| {
        l.starts_with("install ") && l.contains("deploy/wshub.service /etc/systemd/system/")
    });
    has("verifies the unit", &|l| l.starts_with("systemd-analyze verify "));
    has("starts it", &|l| l == "systemctl enable --now wshub");
    // The configuration folder: created before the file goes in, and readable by the group.
    let dir = Path::new(config).parent().unwrap().display().to_string();
    has("creates the configuration folder", &|l| {
        l.starts_with("install -d") && l.contains(&format!("-g {group}")) && l.ends_with(&format!(" {dir}"))
    });
    // And the nginx host's step that takes Debian's default site out of the way.
    assert!(section.contains("rm /etc/nginx/sites-enabled/default"));
}
