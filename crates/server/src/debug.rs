//! `debug.enabled`: what a Rust server can offer in place of Go's `net/http/pprof`, on the
//! internal port under `debug.handler_prefix` (`/debug/pprof` by default), as Centrifugo
//! serves its pprof handlers.
//!
//! - `profile?seconds=N&hz=F`: a CPU profile of the whole process, sampled for `N` seconds
//!   (30, Go's default) at `F` Hz (99), as folded stacks (`thread;outer;…;inner count` per
//!   line), the input of `inferno-flamegraph`, `flamegraph.pl` and speedscope. The sampler
//!   is pprof-rs: `setitimer(ITIMER_PROF)` sends `SIGPROF` per slice of CPU time the
//!   process spends, and its handler records the interrupted thread's stack. An idle
//!   process spends no CPU time, so it gets no signal and its profile is empty: a profile
//!   shows where the node's CPU goes while it is busy, never where it waits.
//! - `heap`: a summary of the process's memory as JSON. The binary keeps Rust's default
//!   allocator, the system's (glibc malloc on Linux), which keeps no per-call-site records:
//!   the summary is what the kernel reports (`/proc/self/status` and `/proc/self/smaps`):
//!   resident, anonymous and peak memory, glibc's main arena (the `[heap]` segment) and the
//!   anonymous mappings that hold its other arenas and its large allocations.
//! - `cmdline`: the command line, as Go's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use serde_json::json;

use crate::response::{full, json_response, text, Body};

/// Go's default sampling time.
pub const DEFAULT_SECONDS: u64 = 30;
/// The longest sampling time asked for (a request holding a profile longer is a mistake).
pub const MAX_SECONDS: u64 = 300;
/// Samples per CPU-second: an odd rate, so that sampling does not beat with periodic work.
pub const DEFAULT_HZ: i32 = 99;
pub const MAX_HZ: i32 = 1000;

/// One CPU profile at a time: the sampler is process-wide (one timer, one signal handler).
static PROFILING: AtomicBool = AtomicBool::new(false);

/// Answers `GET <prefix>/<name>`.
pub async fn handle<B>(req: Request<B>, name: &str) -> Response<Body> {
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    match name {
        "" => text(
            StatusCode::OK,
            "wshub debug endpoints:\n  profile?seconds=30&hz=99  CPU profile, folded stacks\n  heap  memory summary (JSON)\n  cmdline",
        ),
        "profile" => profile(req.uri()).await,
        "heap" => json_response(&heap_summary()),
        "cmdline" => text(StatusCode::OK, &std::env::args().collect::<Vec<_>>().join("\0")),
        _ => text(StatusCode::NOT_FOUND, "unknown profile"),
    }
}

fn param<T: std::str::FromStr>(uri: &http::Uri, name: &str, default: T) -> Result<T, String> {
    match crate::transports::query_param(uri, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{name}: not a number: {v}")),
    }
}

async fn profile(uri: &http::Uri) -> Response<Body> {
    let (seconds, hz) = match (param(uri, "seconds", DEFAULT_SECONDS), param(uri, "hz", DEFAULT_HZ)) {
        (Ok(s), Ok(h)) if (1..=MAX_SECONDS).contains(&s) && (1..=MAX_HZ).contains(&h) => (s, h),
        (Err(e), _) | (_, Err(e)) => return text(StatusCode::BAD_REQUEST, &e),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("seconds must be 1..={MAX_SECONDS} and hz 1..={MAX_HZ}"),
            )
        }
    };
    if PROFILING.swap(true, Ordering::AcqRel) {
        return text(StatusCode::CONFLICT, "a CPU profile is already being taken");
    }
    // The profiler's guard is not `Send`: it lives on a blocking thread, which waits out the
    // sampling time while the runtime's threads do the work being sampled.
    let taken = tokio::task::spawn_blocking(move || sample(Duration::from_secs(seconds), hz)).await;
    PROFILING.store(false, Ordering::Release);
    match taken {
        Ok(Ok(folded)) => {
            let mut r = Response::new(full(folded));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            r
        }
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("CPU profile failed: {e}")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("CPU profile failed: {e}")),
    }
}

/// Samples the process for `time` and writes the stacks seen, folded, heaviest first.
fn sample(time: Duration, hz: i32) -> Result<String, pprof::Error> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(hz)
        // Unwinding from inside these libraries' frames can deadlock or crash (pprof-rs's
        // advice): their samples are dropped.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()?;
    std::thread::sleep(time);
    // The report must be built while the guard lives: dropping it stops the sampler and
    // discards what it collected.
    let report = guard.report().build()?;
    drop(guard);
    let mut stacks: HashMap<String, isize> = HashMap::new();
    for (frames, count) in &report.data {
        let mut line = frames.thread_name.replace([';', ' '], "_");
        // Leaf first in the report; folded stacks are written root first, and an inlined
        // function's symbols are listed innermost first too.
        for symbols in frames.frames.iter().rev() {
            for symbol in symbols.iter().rev() {
                line.push(';');
                line.push_str(&symbol.name().replace([';', ' '], "_"));
            }
        }
        *stacks.entry(line).or_default() += count;
    }
    let mut sorted: Vec<_> = stacks.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(sorted.into_iter().map(|(stack, n)| format!("{stack} {n}\n")).collect())
}

/// A `/proc/self/status` line's value in kB, as bytes.
fn status_bytes(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?.trim();
        v.strip_suffix("kB").unwrap_or(v).trim().parse::<u64>().ok().map(|kb| kb * 1024)
    })
}

/// Sizes of mappings in `/proc/self/smaps`, as bytes: (count, size, rss) of the `[heap]`
/// segment and of anonymous mappings (no path: glibc's other arenas, its mmap'd large
/// allocations, thread stacks).
fn smaps_summary(smaps: &str) -> ([u64; 3], [u64; 3]) {
    let (mut heap, mut anon) = ([0u64; 3], [0u64; 3]);
    let mut current: Option<usize> = None;
    for l in smaps.lines() {
        let mut words = l.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: address range, perms, offset, device, inode[, path].
            let path = l.split_whitespace().nth(5);
            current = match path {
                Some("[heap]") => Some(0),
                None => Some(1),
                Some(_) => None,
            };
            if let Some(c) = current {
                [&mut heap, &mut anon][c][0] += 1;
            }
            continue;
        }
        let Some(c) = current else { continue };
        let kb = || words.clone().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
        let target = [&mut heap, &mut anon];
        match first {
            "Size:" => target[c][1] += kb(),
            "Rss:" => target[c][2] += kb(),
            _ => {}
        }
    }
    (heap, anon)
}

/// The process's memory, from the kernel's accounts.
pub fn heap_summary() -> serde_json::Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (heap, anon) = smaps_summary(&smaps);
    let s = |k| status_bytes(&status, k);
    json!({
        "allocator": "system (glibc malloc): no per-allocation records; figures from /proc/self/status and /proc/self/smaps",
        "rss_bytes": s("VmRSS"),
        "rss_anon_bytes": s("RssAnon"),
        "rss_file_bytes": s("RssFile"),
        "peak_rss_bytes": s("VmHWM"),
        "data_bytes": s("VmData"),
        "threads": status.lines().find_map(|l| l.strip_prefix("Threads:")?.trim().parse::<u64>().ok()),
        "heap_segment": {"mappings": heap[0], "size_bytes": heap[1], "rss_bytes": heap[2]},
        "anonymous_mappings": {"mappings": anon[0], "size_bytes": anon[1], "rss_bytes": anon[2]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_and_status_are_read() {
        let smaps = "\
55d0-55e0 rw-p 00000000 00:00 0                          [heap]
Size:                128 kB
Rss:                  64 kB
7f00-7f10 rw-p 00000000 00:00 0 
Size:                 16 kB
Rss:                   8 kB
7f10-7f20 r-xp 00000000 08:01 42                         /usr/lib/libc.so.6
Size:                 32 kB
Rss:                  32 kB
";
        let (heap, anon) = smaps_summary(smaps);
        assert_eq!(heap, [1, 128 * 1024, 64 * 1024]);
        assert_eq!(anon, [1, 16 * 1024, 8 * 1024]);
        assert_eq!(status_bytes("VmRSS:\t  1000 kB\nThreads: 3\n", "VmRSS"), Some(1_024_000));
        assert_eq!(status_bytes("VmRSS:\t  1000 kB\n", "VmHWM"), None);
        let live = heap_summary();
        assert!(live["rss_bytes"].as_u64().is_some_and(|r| r > 0), "{live}");
    }
}
