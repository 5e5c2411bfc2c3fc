//! `prometheus.native_histograms` against Debian's Prometheus (issue 32): a real Prometheus
//! with native histograms on scrapes a node, negotiates the protobuf format, and stores the
//! API's latency histogram as a native histogram; a text scrape keeps the classic buckets.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{api, free_port, http, temp_dir, Node, API_KEY, LIMIT};
use serde_json::{json, Value};

/// A `prometheus` scraping `target` every second, with native histograms on, its data in a
/// temporary folder; ended by its PID when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    async fn start(dir: &std::path::Path, target: u16) -> Prometheus {
        let bin = "prometheus";
        let port = free_port();
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: wshub\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(bin)
            .args([
                &format!("--config.file={}", conf.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--enable-feature=native-histograms",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus could not start ({e}): install it with `apt-get install prometheus`"));
        let p = Prometheus { child, port, log };
        let deadline = Instant::now() + LIMIT;
        while !matches!(http(port, "GET", "/-/ready", "", "").await, Ok((200, _))) {
            assert!(Instant::now() < deadline, "prometheus not ready: {}", p.output());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The result vector of an instant query.
    async fn query(&self, q: &str) -> Vec<Value> {
        let encoded = percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC);
        let (status, body) = http(self.port, "GET", &format!("/api/v1/query?query={encoded}"), "", "")
            .await
            .unwrap();
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        wshub_testkit::end(&mut self.child);
    }
}

#[tokio::test]
async fn native_histograms_reach_a_real_prometheus() {
    let dir = temp_dir("prometheus");
    let port = free_port();
    let config = json!({
        "http_api": {"key": API_KEY},
        "prometheus": {"enabled": true, "native_histograms": true},
    });
    let _node = Node::start(&dir, &config, port).await;
    const CALLS: usize = 20;
    for _ in 0..CALLS {
        let (status, _) = api(port, "publish", &json!({"channel": "news", "data": {}})).await.unwrap();
        assert_eq!(status, 200);
    }
    // A text scrape is unchanged: classic buckets.
    let (_, text) = http(port, "GET", "/metrics", "", "").await.unwrap();
    assert!(
        text.contains("centrifugo_api_command_duration_seconds_histogram_bucket{"),
        "classic buckets in the text format"
    );

    let prom = Prometheus::start(&dir, port).await;
    let series = "centrifugo_api_command_duration_seconds_histogram{job=\"wshub\",protocol=\"http\",method=\"publish\"}";
    let deadline = Instant::now() + LIMIT;
    let native = loop {
        let r = prom.query(series).await;
        // A native histogram comes back as `histogram` ([time, {count, sum, buckets}]), a
        // classic one would be `_bucket` series with a `value` each.
        if let Some(h) = r.first().and_then(|s| s.get("histogram")) {
            break h.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no native histogram for {series}: {r:?}; {}",
            prom.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let count: f64 = native[1]["count"].as_str().unwrap().parse().unwrap();
    assert_eq!(count as usize, CALLS, "{native}");
    assert!(!native[1]["buckets"].as_array().unwrap().is_empty(), "{native}");
    // The rest of the protobuf scrape was read too: a counter and a gauge.
    let published = prom.query("centrifugo_node_messages_sent_count{type=\"publication\"}").await;
    assert_eq!(published.len(), 1, "{published:?}");
    let up = prom.query("up{job=\"wshub\"}").await;
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    let quantile = prom
        .query("histogram_quantile(0.5, centrifugo_api_command_duration_seconds_histogram{method=\"publish\"})")
        .await;
    let q: f64 = quantile[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        q > 0.0 && q < 1.0,
        "a median API latency under a second from the native buckets: {q}"
    );
}
