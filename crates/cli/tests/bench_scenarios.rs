//! The bench scenarios that start their own server (`wshub bench shared-poll`, `wshub bench
//! map`), run with tiny numbers: each finishes within the process limit, and its JSON
//! report parses and shows that every part measured something.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::run_to_end;
use serde_json::Value;
use wshub_testkit::redis::RedisServer;

/// Runs `wshub bench ARGS`; its last output line, the JSON report.
fn bench(args: &[&str]) -> Value {
    let out = run_to_end(Command::new(env!("CARGO_BIN_EXE_wshub")).arg("bench").args(args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not a JSON report ({e}): {stdout}"))
}

fn positive(report: &Value, path: &[&str]) -> f64 {
    let v = path.iter().fold(report, |v, k| &v[*k]);
    let n = v.as_f64().unwrap_or_else(|| panic!("{path:?} missing: {report}"));
    assert!(n > 0.0, "{path:?} is {n}: {report}");
    n
}

#[test]
fn shared_poll_bench_reports_backend_load_memory_and_latency() {
    let r = bench(&[
        "shared-poll",
        "--clients",
        "10",
        "--keys-per-client",
        "3",
        "--unique-keys",
        "6",
        "--refresh-ms",
        "100",
        "--duration",
        "1",
        "--timeout",
        "25",
    ]);
    assert_eq!(r["scenario"], "shared_poll", "{r}");
    positive(&r, &["backend_requests"]);
    let keys = positive(&r, &["backend_keys"]);
    // Polled as a set: U = 6 keys per interval over the ~10 intervals of the window (60),
    // where polling per client would ask N·K = 30 per interval (300).
    assert!(keys <= 6.0 * 15.0, "{r}");
    positive(&r, &["updates"]);
    positive(&r, &["p50_ms"]);
    positive(&r, &["rss_after"]);
    assert!(r["bytes_per_tracked_key"].is_number(), "{r}");
}

#[test]
fn map_bench_reports_memory_loading_latency_and_writes() {
    let small = [
        "map",
        "--keys",
        "300",
        "--page-size",
        "100",
        "--loads",
        "1",
        "--subscribers",
        "2",
        "--rate",
        "50",
        "--publishers",
        "2",
        "--duration",
        "1",
        "--timeout",
        "25",
    ];
    let check = |r: &Value| {
        assert_eq!(r["scenario"], "map", "{r}");
        positive(r, &["fill_keys_per_sec"]);
        positive(r, &["load_keys_per_sec"]);
        for mode in ["eph", "per"] {
            positive(r, &[&format!("{mode}_latency"), "published"]);
            positive(r, &[&format!("{mode}_latency"), "delivered"]);
            positive(r, &[&format!("{mode}_writes"), "writes"]);
        }
    };
    let r = bench(&small);
    assert_eq!(r["broker"], "memory", "{r}");
    check(&r);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis = rt.block_on(RedisServer::start());
    let url = redis.url();
    let mut args = small.to_vec();
    args.extend(["--redis", &url]);
    let r = bench(&args);
    assert_eq!(r["broker"], "redis", "{r}");
    check(&r);
    positive(&r, &["redis_bytes_per_key"]);
}
