//! The `# HELP` text of each series, given once when the recorder is installed: the series
//! are listed as data (kind, name, text) by [`super`] and [`super::centrifugo`].

/// A series' kind, for its `# TYPE` line.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Gives each series its `# HELP` text.
pub(super) fn describe(series: &[(Kind, &'static str, &'static str)]) {
    for &(kind, name, help) in series {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}
