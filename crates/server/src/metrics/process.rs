//! The standard `process_*` series of Prometheus client libraries (Go's client exports them
//! from every Centrifugo node, and dashboards graph memory and CPU with them), read from
//! `/proc/self` at scrape time. Written as text: `process_cpu_seconds_total` is a counter
//! of fractional seconds, which the `metrics` facade's integer counters cannot carry.
//! Elsewhere than Linux nothing is written.

use std::fmt::Write as _;

/// Linux reports CPU times in `/proc` in USER_HZ ticks, fixed at 100 by its ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// The `process_*` lines, each with its `# HELP` and `# TYPE`; empty when `/proc` cannot
/// be read.
pub(super) fn render() -> String {
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `man 5 proc`: utime is field 14, stime 15, starttime 22, vsize 23; `fields[0]` is field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        let cpu = (utime + stime) as f64 / TICKS_PER_SECOND;
        line(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    if let Some(vsize) = field(23) {
        line(
            &mut out,
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vsize as f64,
        );
    }
    if let Some(rss) = status_kb("VmRSS:") {
        line(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss as f64 * 1024.0,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<u64>().ok()))
    });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        let started = boot as f64 + start as f64 / TICKS_PER_SECOND;
        line(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            started,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        line(
            &mut out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            dir.count() as f64,
        );
    }
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
        line(
            &mut out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            soft as f64,
        );
    }
    out
}

/// A value in kB from `/proc/self/status`.
fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
}

/// User and system CPU time of the process so far, in seconds (for `info`'s `process`).
pub(super) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// Resident memory in bytes.
pub(super) fn rss_bytes() -> Option<u64> {
    status_kb("VmRSS:").map(|kb| kb * 1024)
}
