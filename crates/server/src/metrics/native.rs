//! `prometheus.native_histograms`: every histogram is also kept as a Prometheus native
//! histogram (sparse exponential buckets, schema 3: each bucket 1.09× the one before, as
//! Centrifugo's bucket factor of 1.1 gives in client_golang), exported beside its classic
//! buckets in the protobuf exposition format, which is the only one Prometheus reads native
//! histograms from. A text scrape stays as it was.
//!
//! The Prometheus exporter writes classic buckets only, so a recorder in front of it ([`Tee`])
//! hands each histogram sample to both; a protobuf scrape reads the exporter's text and turns
//! it into `MetricFamily` messages, adding the native buckets to each histogram.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// The media type Prometheus asks for when it wants protobuf (and native histograms).
pub const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.google.protobuf";
/// The Content-Type of a protobuf answer (length-delimited `MetricFamily` messages).
pub const PROTOBUF_CONTENT_TYPE: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Each bucket is 2^(2^-SCHEMA) = 1.09 times wider than the one before.
const SCHEMA: i32 = 3;
/// client_golang's default zero bucket: samples at or below it (in magnitude) count as zero.
const ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39; // 2^-128

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns native histograms on for the recorder this process installs (before it does).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// One native histogram's state: counts by bucket index (negative values in their own map).
#[derive(Debug, Default)]
struct Buckets {
    count: u64,
    sum: f64,
    zero: u64,
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
}

/// The index of the bucket holding `v` (> 0): bucket `i` covers (base^(i-1), base^i] with
/// base = 2^(2^-SCHEMA), so `i = ceil(log2(v) * 2^SCHEMA)`.
fn bucket_index(v: f64) -> i32 {
    let i = (v.log2() * f64::from(1 << SCHEMA)).ceil();
    // Finite positive doubles give |i| < 1100 * 8: always within i32.
    i.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

impl Buckets {
    fn record(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.count += 1;
        self.sum += v;
        if v.abs() <= ZERO_THRESHOLD {
            self.zero += 1;
        } else if v > 0.0 {
            *self.positive.entry(bucket_index(v)).or_default() += 1;
        } else {
            *self.negative.entry(bucket_index(-v)).or_default() += 1;
        }
    }
}

/// Spans and deltas of one side of a native histogram, as the protobuf wants them.
fn spans_and_deltas(buckets: &BTreeMap<i32, u64>) -> (Vec<pb::BucketSpan>, Vec<i64>) {
    let mut spans: Vec<pb::BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let mut next: Option<i32> = None;
    let mut prev_count = 0i64;
    for (&i, &c) in buckets {
        match next {
            Some(n) if n == i => {
                if let Some(last) = spans.last_mut() {
                    last.length = Some(last.length.unwrap_or(0) + 1);
                }
            }
            Some(n) => spans.push(pb::BucketSpan {
                offset: Some(i - n),
                length: Some(1),
            }),
            None => spans.push(pb::BucketSpan {
                offset: Some(i),
                length: Some(1),
            }),
        }
        let c = i64::try_from(c).unwrap_or(i64::MAX);
        deltas.push(c - prev_count);
        prev_count = c;
        next = Some(i + 1);
    }
    (spans, deltas)
}

/// A histogram handle that records into the exporter's histogram and the native one.
struct TeeHistogram {
    classic: Histogram,
    native: Arc<Mutex<Buckets>>,
}

impl HistogramFn for TeeHistogram {
    fn record(&self, value: f64) {
        self.classic.record(value);
        if let Ok(mut b) = self.native.lock() {
            b.record(value);
        }
    }
}

/// A series: its name and its labels, sorted.
type SeriesKey = (String, Labels);

/// Label names and values.
type Labels = Vec<(String, String)>;

fn series_key(name: &str, mut labels: Labels) -> SeriesKey {
    labels.sort();
    (name.to_string(), labels)
}

/// The native histograms recorded so far.
#[derive(Default)]
struct Natives(Mutex<HashMap<SeriesKey, Arc<Mutex<Buckets>>>>);

fn natives() -> &'static Natives {
    static N: OnceLock<Natives> = OnceLock::new();
    N.get_or_init(Natives::default)
}

/// The recorder installed with native histograms on: the Prometheus exporter's, with every
/// histogram sample also kept natively.
pub struct Tee<R> {
    pub inner: R,
}

impl<R: Recorder> Recorder for Tee<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        let classic = self.inner.register_histogram(key, metadata);
        let labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
        let id = series_key(key.name(), labels);
        let native = match natives().0.lock() {
            Ok(mut m) => m.entry(id).or_default().clone(),
            Err(_) => return classic,
        };
        Histogram::from_arc(Arc::new(TeeHistogram { classic, native }))
    }
}

/// The Prometheus data model in protobuf (`io.prometheus.client`, client_model's
/// metrics.proto, proto2), the messages a scrape answer is made of.
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantile {
        #[prost(double, optional, tag = "1")]
        pub quantile: Option<f64>,
        #[prost(double, optional, tag = "2")]
        pub value: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub quantile: Vec<Quantile>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, optional, tag = "1")]
        pub cumulative_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub upper_bound: Option<f64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, optional, tag = "1")]
        pub offset: Option<i32>,
        #[prost(uint32, optional, tag = "2")]
        pub length: Option<u32>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(sint32, optional, tag = "5")]
        pub schema: Option<i32>,
        #[prost(double, optional, tag = "6")]
        pub zero_threshold: Option<f64>,
        #[prost(uint64, optional, tag = "7")]
        pub zero_count: Option<u64>,
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, packed = "false", tag = "10")]
        pub negative_delta: Vec<i64>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
        #[prost(sint64, repeated, packed = "false", tag = "13")]
        pub positive_delta: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Value>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Value>,
        #[prost(message, optional, tag = "4")]
        pub summary: Option<Summary>,
        #[prost(message, optional, tag = "5")]
        pub untyped: Option<Value>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }

    pub const COUNTER: i32 = 0;
    pub const GAUGE: i32 = 1;
    pub const SUMMARY: i32 = 2;
    pub const UNTYPED: i32 = 3;
    pub const HISTOGRAM: i32 = 4;
}

/// One sample line of the text format: its name, labels and value.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (name_labels, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let Some((name, rest)) = name_labels.split_once('{') else {
        return Some((name_labels, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_string();
        if key.is_empty() || key.starts_with('}') {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut v = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                '"' => break,
                c => v.push(c),
            }
        }
        labels.push((key, v));
    }
    Some((name, labels, value))
}

fn label_pairs(labels: &[(String, String)]) -> Vec<pb::LabelPair> {
    labels
        .iter()
        .map(|(k, v)| pb::LabelPair {
            name: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// A family being read from the text: its metrics by label set, in order of appearance.
struct Family {
    name: String,
    help: Option<String>,
    kind: i32,
    metrics: Vec<(Labels, pb::Metric)>,
}

impl Family {
    fn metric(&mut self, labels: Labels) -> &mut pb::Metric {
        let pos = match self.metrics.iter().position(|(l, _)| *l == labels) {
            Some(p) => p,
            None => {
                let m = pb::Metric {
                    label: label_pairs(&labels),
                    ..Default::default()
                };
                self.metrics.push((labels, m));
                self.metrics.len() - 1
            }
        };
        &mut self.metrics[pos].1
    }

    fn histogram(&mut self, labels: Labels) -> &mut pb::Histogram {
        self.metric(labels).histogram.get_or_insert_with(Default::default)
    }

    fn summary(&mut self, labels: Labels) -> &mut pb::Summary {
        self.metric(labels).summary.get_or_insert_with(Default::default)
    }

    fn add(&mut self, sample: &str, mut labels: Labels, value: f64) {
        let suffix = sample.strip_prefix(self.name.as_str()).unwrap_or("");
        let take = |labels: &mut Labels, key: &str| {
            let i = labels.iter().position(|(k, _)| k == key)?;
            labels.remove(i).1.parse::<f64>().ok().or(Some(f64::INFINITY))
        };
        labels.sort();
        let count = if value.is_finite() && value >= 0.0 { value as u64 } else { 0 };
        match (self.kind, suffix) {
            (pb::HISTOGRAM, "_bucket") => {
                let le = take(&mut labels, "le");
                self.histogram(labels).bucket.push(pb::Bucket {
                    cumulative_count: Some(count),
                    upper_bound: le,
                });
            }
            (pb::HISTOGRAM, "_sum") => self.histogram(labels).sample_sum = Some(value),
            (pb::HISTOGRAM, "_count") => self.histogram(labels).sample_count = Some(count),
            (pb::SUMMARY, "") => {
                let q = take(&mut labels, "quantile");
                self.summary(labels).quantile.push(pb::Quantile {
                    quantile: q,
                    value: Some(value),
                });
            }
            (pb::SUMMARY, "_sum") => self.summary(labels).sample_sum = Some(value),
            (pb::SUMMARY, "_count") => self.summary(labels).sample_count = Some(count),
            (pb::COUNTER, _) => self.metric(labels).counter = Some(pb::Value { value: Some(value) }),
            (pb::GAUGE, _) => self.metric(labels).gauge = Some(pb::Value { value: Some(value) }),
            _ => self.metric(labels).untyped = Some(pb::Value { value: Some(value) }),
        }
    }

    /// The message, with the native buckets of its histograms.
    fn finish(self) -> pb::MetricFamily {
        let natives = natives().0.lock().ok();
        let metric = self
            .metrics
            .into_iter()
            .map(|(labels, mut m)| {
                if let (Some(h), Some(n)) = (m.histogram.as_mut(), natives.as_ref()) {
                    if let Some(b) = n.get(&series_key(&self.name, labels)).and_then(|b| b.lock().ok()) {
                        let (pos_spans, pos_deltas) = spans_and_deltas(&b.positive);
                        let (neg_spans, neg_deltas) = spans_and_deltas(&b.negative);
                        h.schema = Some(SCHEMA);
                        h.zero_threshold = Some(ZERO_THRESHOLD);
                        h.zero_count = Some(b.zero);
                        h.positive_span = pos_spans;
                        h.positive_delta = pos_deltas;
                        h.negative_span = neg_spans;
                        h.negative_delta = neg_deltas;
                        // The classic count and sum come from another store: the native
                        // one's go with its buckets.
                        h.sample_count = Some(b.count);
                        h.sample_sum = Some(b.sum);
                    }
                }
                m
            })
            .collect();
        pb::MetricFamily {
            name: Some(self.name),
            help: self.help,
            r#type: Some(self.kind),
            metric,
        }
    }
}

/// The text exposition `text` as length-delimited protobuf `MetricFamily` messages, each
/// histogram with its native buckets.
pub fn text_to_protobuf(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut family: Option<Family> = None;
    let mut help: Option<(String, String)> = None;
    let flush = |f: Option<Family>, out: &mut Vec<u8>| {
        if let Some(f) = f {
            let _ = prost::Message::encode_length_delimited(&f.finish(), out);
        }
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, h)) = rest.split_once(' ') {
                help = Some((name.to_string(), h.replace("\\n", "\n").replace("\\\\", "\\")));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let Some((name, kind)) = rest.split_once(' ') else { continue };
            flush(family.take(), &mut out);
            let kind = match kind.trim() {
                "counter" => pb::COUNTER,
                "gauge" => pb::GAUGE,
                "summary" => pb::SUMMARY,
                "histogram" => pb::HISTOGRAM,
                _ => pb::UNTYPED,
            };
            family = Some(Family {
                name: name.to_string(),
                help: help.take().filter(|(n, _)| n == name).map(|(_, h)| h),
                kind,
                metrics: Vec::new(),
            });
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else if let Some((sample, labels, value)) = parse_sample(line) {
            match family.as_mut() {
                Some(f) if sample.starts_with(f.name.as_str()) => f.add(sample, labels, value),
                _ => {
                    // A sample without its TYPE line: a family of its own, untyped.
                    flush(family.take(), &mut out);
                    let mut f = Family {
                        name: sample.to_string(),
                        help: None,
                        kind: pb::UNTYPED,
                        metrics: Vec::new(),
                    };
                    f.add(sample, labels, value);
                    family = Some(f);
                }
            }
        }
    }
    flush(family, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost::Message;

    fn decode(mut bytes: &[u8]) -> Vec<pb::MetricFamily> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            out.push(pb::MetricFamily::decode_length_delimited(&mut bytes).unwrap());
        }
        out
    }

    #[test]
    fn bucket_indexes_follow_schema_3() {
        // Bucket i holds (2^((i-1)/8), 2^(i/8)].
        assert_eq!(bucket_index(1.0), 0);
        assert_eq!(bucket_index(1.05), 1);
        assert_eq!(bucket_index(2.0), 8);
        assert_eq!(bucket_index(0.5), -8);
        assert_eq!(bucket_index(0.001), -79);
    }

    #[test]
    fn spans_join_consecutive_buckets_and_deltas_are_differences() {
        // Buckets -2 and -1, then 4: the second span starts four empty buckets (0 to 3) on.
        let b: BTreeMap<i32, u64> = [(-2, 3), (-1, 5), (4, 1)].into_iter().collect();
        let (spans, deltas) = spans_and_deltas(&b);
        assert_eq!(
            spans,
            vec![
                pb::BucketSpan {
                    offset: Some(-2),
                    length: Some(2)
                },
                pb::BucketSpan {
                    offset: Some(4),
                    length: Some(1)
                }
            ]
        );
        assert_eq!(deltas, vec![3, 2, -4]);
    }

    #[test]
    fn text_becomes_families_with_every_kind() {
        let text = "# HELP c_total requests\n# TYPE c_total counter\nc_total{m=\"a\\\"b\"} 3\n\
            # TYPE g gauge\ng 1.5\n\
            # TYPE s summary\ns{quantile=\"0.5\"} 0.1\ns{quantile=\"0.99\"} 0.2\ns_sum 1\ns_count 4\n\
            # TYPE h histogram\nh_bucket{x=\"1\",le=\"0.1\"} 1\nh_bucket{x=\"1\",le=\"+Inf\"} 2\nh_sum{x=\"1\"} 0.3\nh_count{x=\"1\"} 2\n\
            process_open_fds 7\n";
        let f = decode(&text_to_protobuf(text));
        let names: Vec<_> = f.iter().map(|f| f.name.clone().unwrap()).collect();
        assert_eq!(names, ["c_total", "g", "s", "h", "process_open_fds"]);
        assert_eq!(f[0].help.as_deref(), Some("requests"));
        assert_eq!(f[0].metric[0].label[0].value.as_deref(), Some("a\"b"));
        assert_eq!(f[0].metric[0].counter.as_ref().unwrap().value, Some(3.0));
        assert_eq!(f[1].metric[0].gauge.as_ref().unwrap().value, Some(1.5));
        let s = f[2].metric[0].summary.as_ref().unwrap();
        assert_eq!((s.sample_count, s.sample_sum, s.quantile.len()), (Some(4), Some(1.0), 2));
        let h = f[3].metric[0].histogram.as_ref().unwrap();
        assert_eq!(f[3].metric[0].label.len(), 1, "le is not a label of the series");
        assert_eq!(h.bucket.len(), 2);
        assert_eq!(h.bucket[1].upper_bound, Some(f64::INFINITY));
        assert_eq!((h.sample_count, h.schema), (Some(2), None), "no native data recorded for h");
        assert_eq!(f[4].r#type, Some(pb::UNTYPED));
    }

    #[test]
    fn recorded_samples_come_out_as_native_buckets() {
        let tee = Tee {
            inner: metrics::NoopRecorder,
        };
        let key = Key::from_parts("native_test_seconds", vec![metrics::Label::new("k", "v")]);
        let h = tee.register_histogram(&key, &Metadata::new("t", metrics::Level::INFO, None));
        for v in [1.0, 1.0, 2.0, 0.0, -1.0] {
            h.record(v);
        }
        let text = "# TYPE native_test_seconds histogram\nnative_test_seconds_bucket{k=\"v\",le=\"+Inf\"} 5\n\
            native_test_seconds_sum{k=\"v\"} 3\nnative_test_seconds_count{k=\"v\"} 5\n";
        let f = decode(&text_to_protobuf(text));
        let h = f[0].metric[0].histogram.as_ref().unwrap();
        assert_eq!(h.schema, Some(SCHEMA));
        assert_eq!((h.sample_count, h.sample_sum, h.zero_count), (Some(5), Some(3.0), Some(1)));
        // 1.0 twice in bucket 0, 2.0 in bucket 8: two spans.
        assert_eq!(h.positive_span.len(), 2);
        assert_eq!(h.positive_delta, vec![2, -1]);
        assert_eq!(h.negative_delta, vec![1]);
    }
}
