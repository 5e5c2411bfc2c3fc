//! Centrifugo's command-line flags (`centrifugo --help`, its `DefineFlags`): each sets the
//! configuration key it is named after. wshub's own `--port`, `--address` and `--set` stay.
//! A flag for a key wshub does not have (`--grpc_api.enabled`) sets it all the same, so
//! that the start reports it like an unknown key in a file, or refuses it (a key on the
//! refused list).

use clap::{Arg, ArgAction, ArgMatches};
use serde_json::Value;

/// How a flag's value is read.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Number,
    /// `--x` is true, `--x=false` false (Go's pflag: no space-separated value).
    Switch,
}

/// Centrifugo v6's flags: (key, short, kind, help).
const FLAGS: &[(&str, Option<char>, Kind, &str)] = &[
    ("pid_file", None, Kind::Text, "optional path to create PID file"),
    ("http_server.address", Some('a'), Kind::Text, "interface address to listen on"),
    ("http_server.port", Some('p'), Kind::Number, "port to bind HTTP server to"),
    (
        "http_server.internal_address",
        None,
        Kind::Text,
        "custom interface address to listen on for internal endpoints",
    ),
    (
        "http_server.internal_port",
        None,
        Kind::Number,
        "custom port for internal endpoints",
    ),
    ("engine.type", None, Kind::Text, "engine to use: memory or redis"),
    ("broker.enabled", None, Kind::Switch, "enable broker"),
    ("broker.type", None, Kind::Text, "broker to use"),
    ("presence_manager.enabled", None, Kind::Switch, "enable presence manager"),
    ("presence_manager.type", None, Kind::Text, "presence manager to use"),
    ("map_broker.type", None, Kind::Text, "map broker to use"),
    (
        "log.level",
        None,
        Kind::Text,
        "log level: trace, debug, info, warn, error, fatal or none",
    ),
    ("log.file", None, Kind::Text, "optional log file"),
    ("debug.enabled", None, Kind::Switch, "enable debug endpoints"),
    ("admin.enabled", None, Kind::Switch, "enable admin web interface"),
    ("admin.external", None, Kind::Switch, "expose admin web interface on external port"),
    ("admin.insecure", None, Kind::Switch, "insecure admin mode: no login"),
    ("prometheus.enabled", None, Kind::Switch, "enable Prometheus metrics endpoint"),
    ("swagger.enabled", None, Kind::Switch, "enable Swagger UI endpoint"),
    ("health.enabled", None, Kind::Switch, "enable health check endpoint"),
    (
        "uni_websocket.enabled",
        None,
        Kind::Switch,
        "enable unidirectional websocket endpoint",
    ),
    ("uni_sse.enabled", None, Kind::Switch, "enable unidirectional SSE endpoint"),
    (
        "uni_http_stream.enabled",
        None,
        Kind::Switch,
        "enable unidirectional HTTP-streaming endpoint",
    ),
    ("sse.enabled", None, Kind::Switch, "enable bidirectional SSE endpoint"),
    (
        "http_stream.enabled",
        None,
        Kind::Switch,
        "enable bidirectional HTTP-streaming endpoint",
    ),
    ("init.enabled", None, Kind::Switch, "enable connection init endpoint"),
    ("client.insecure", None, Kind::Switch, "start in insecure client mode"),
    ("http_api.insecure", None, Kind::Switch, "use insecure API mode"),
    ("http_api.external", None, Kind::Switch, "expose API handler on external port"),
    ("grpc_api.enabled", None, Kind::Switch, "enable GRPC API server"),
    ("grpc_api.port", None, Kind::Number, "port to bind GRPC API server to"),
    ("uni_grpc.enabled", None, Kind::Switch, "enable unidirectional GRPC endpoint"),
    ("uni_grpc.port", None, Kind::Number, "port to bind unidirectional GRPC server to"),
];

/// The flags as clap arguments, for the root command and `serve`.
pub fn args() -> Vec<Arg> {
    FLAGS
        .iter()
        .map(|&(key, short, kind, help)| {
            let a = Arg::new(key).long(key).help(help);
            let a = match short {
                Some(c) => a.short(c),
                None => a,
            };
            match kind {
                Kind::Switch => a
                    .action(ArgAction::Set)
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_parser(clap::value_parser!(bool)),
                Kind::Number => a.action(ArgAction::Set).value_parser(clap::value_parser!(i64)),
                Kind::Text => a.action(ArgAction::Set),
            }
        })
        .collect()
}

/// The (key, value) overrides of the flags given.
pub fn overrides(m: &ArgMatches) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for &(key, _, kind, _) in FLAGS {
        if m.value_source(key) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        let v = match kind {
            Kind::Switch => m.get_one::<bool>(key).map(|b| Value::Bool(*b)),
            Kind::Number => m.get_one::<i64>(key).map(|n| Value::from(*n)),
            Kind::Text => m.get_one::<String>(key).map(|s| Value::String(s.clone())),
        };
        if let Some(v) = v {
            out.push((key.to_string(), v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Vec<(String, Value)>, clap::Error> {
        let cmd = clap::Command::new("t").args(args());
        cmd.try_get_matches_from(argv).map(|m| overrides(&m))
    }

    #[test]
    fn centrifugo_flags_set_their_keys() {
        let o = parse(&[
            "t",
            "-p",
            "9000",
            "--admin.enabled",
            "--client.insecure=false",
            "--log.level",
            "debug",
        ])
        .unwrap();
        assert_eq!(
            o,
            vec![
                ("http_server.port".to_string(), Value::from(9000)),
                ("log.level".to_string(), Value::from("debug")),
                ("admin.enabled".to_string(), Value::Bool(true)),
                ("client.insecure".to_string(), Value::Bool(false)),
            ]
        );
        assert!(parse(&["t", "--http_server.port", "eighty"]).is_err());
        assert!(parse(&["t"]).unwrap().is_empty());
    }
}
