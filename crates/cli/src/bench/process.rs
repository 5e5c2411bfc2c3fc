//! The server process as the bench sees it from outside: its RSS, open fds and CPU time
//! (`/proc/PID`).

use std::time::{Duration, Instant};

use super::Target;

/// RSS (bytes) and open fds of a process.
pub(super) fn proc_stats(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss_kb * 1024, fds))
}

/// User + system CPU seconds of a process so far (`/proc/PID/stat`, all its threads).
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) and its closing parenthesis.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)); reading it would need libc.
    Some(ticks as f64 / 100.0)
}

/// The server's RSS and fds once it has noticed the last closes: polled until its fd count
/// is back to `before`'s (or stops falling), for at most 10 s.
pub(super) async fn settle_fds(t: &Target, before: Option<(u64, usize)>) -> Option<(u64, usize)> {
    let settle = Instant::now() + Duration::from_secs(10);
    let mut after = t.pid.and_then(proc_stats);
    let mut prev = usize::MAX;
    while let Some((_, fa)) = after {
        let done = match before {
            Some((_, fb)) => fa <= fb,
            None => fa >= prev, // stopped falling
        };
        if done || Instant::now() > settle {
            break;
        }
        prev = fa;
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = t.pid.and_then(proc_stats);
    }
    after
}
