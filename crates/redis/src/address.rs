//! Redis addresses as Centrifugo (centrifuge's `RedisShardConfig`) reads them, and the
//! connection settings that go with them.
//!
//! One address is one shard:
//! - `host:port`;
//! - `redis://[[user]:password@]host:port[/db][?options]` (`tcp://` alike), `rediss://` with TLS;
//! - `unix://[[user]:password@]/path/to.sock[?options]`;
//! - `redis+sentinel://[[user]:password@]host:port[/db]?sentinel_master_name=m[&addr=host2:port2…]`
//!   (`rediss+sentinel://` with TLS): the sentinels, asked for the master;
//! - `redis+cluster://[[user]:password@]host:port[?addr=host2:port2…]`: seeds of a Redis Cluster.
//!
//! Options: `connect_timeout`, `io_timeout` (Go durations), `tls_enabled`, `force_resp2`,
//! `sentinel_master_name`, `sentinel_user`, `sentinel_password`, `sentinel_tls_enabled`,
//! `addr` (repeated: more seeds). A URL's own credentials, database and options win over
//! the section's keys. A single Redis that answers as a Cluster node is used as a Cluster
//! (Centrifugo asks the server the same way).

use std::time::Duration;

/// How to talk to a shard's Redis: Centrifugo's `engine.redis.*` connection keys, possibly
/// overridden by an address's own.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub user: String,
    pub password: String,
    pub db: i64,
    /// Bound of establishing a connection (`connect_timeout`, 1 s by default).
    pub connect_timeout: Duration,
    /// Bound of each command (`io_timeout`, 4 s by default).
    pub io_timeout: Duration,
    /// RESP2 on command connections. wshub's command and single-Redis pub/sub connections
    /// speak RESP2 anyway; a Cluster's sharded pub/sub needs RESP3, which every Redis that
    /// has sharded pub/sub (7.0+) speaks.
    pub force_resp2: bool,
    /// TLS to Redis (`engine.redis.tls.*`, or a `rediss://` address); `None`: plain TCP.
    pub tls: Option<Tls>,
    /// TLS to the sentinels (`engine.redis.sentinel_tls.*`, `sentinel_tls_enabled`).
    pub sentinel_tls: Option<Tls>,
    /// `CLIENT SETNAME` of wshub's connections (`client_name`; empty: none), so that
    /// `CLIENT LIST` tells them apart.
    pub client_name: String,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            user: String::new(),
            password: String::new(),
            db: 0,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
            force_resp2: false,
            tls: None,
            sentinel_tls: None,
            client_name: String::new(),
        }
    }
}

/// TLS settings, PEM bytes already read (empty: none).
#[derive(Clone, Default, PartialEq)]
pub struct Tls {
    /// A client certificate and its key, for a Redis that asks for one (`tls-auth-clients`).
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The CA that signed the server's certificate; empty: the system's roots.
    pub server_ca_pem: Vec<u8>,
    /// No check of the server's certificate at all (for tests only, as in Centrifugo).
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client_cert", &!self.cert_pem.is_empty())
            .field("server_ca", &!self.server_ca_pem.is_empty())
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// Where a shard's Redis is.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// One Redis at `host:port` (or a Unix socket), which may turn out to be a Cluster node.
    Tcp(String, u16),
    Unix(String),
    /// The sentinels of a group, and the name of the master they watch.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master_name: String,
        user: String,
        password: String,
    },
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<(String, u16)>),
}

/// One shard: where, and how to connect.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    pub location: Location,
    pub connection: Connection,
}

impl Shard {
    /// The shard as logs and metrics name it (no credentials).
    pub fn name(&self) -> String {
        let hp = |(h, p): &(String, u16)| format!("{h}:{p}");
        match &self.location {
            Location::Tcp(h, p) if self.connection.db > 0 => format!("{h}:{p}/{}", self.connection.db),
            Location::Tcp(h, p) => format!("{h}:{p}"),
            Location::Unix(path) => path.clone(),
            Location::Sentinel { master_name, .. } => format!("sentinel {master_name}"),
            Location::Cluster(seeds) => format!("cluster {}", seeds.first().map(hp).unwrap_or_default()),
        }
    }
}

/// `host:port` (an IPv6 host in brackets).
pub fn host_port(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not host:port"))?;
    let port = p.parse::<u16>().map_err(|_| format!("{s:?}: {p:?} is not a port"))?;
    let host = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok((host.to_string(), port))
}

/// A seed of `cluster_address` or `sentinel_address`: `host:port`, or a URL naming one.
pub fn seed(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    host_port(rest.split(['/', '?']).next().unwrap_or(rest))
}

const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "tcp",
    "unix",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "redis+unix",
];

/// The shard of one address of `engine.redis.address`, with `base` for what it does not say.
pub fn parse(address: &str, base: &Connection) -> Result<Shard, String> {
    let address = address.trim();
    let mut connection = base.clone();
    let Some((scheme, rest)) = address.split_once("://") else {
        let (h, p) = host_port(address).map_err(|e| format!("{e}: must be a Redis URL or host:port"))?;
        return Ok(Shard {
            location: Location::Tcp(h, p),
            connection,
        });
    };
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "{scheme}:// is not a Redis address (redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// or host:port)"
        ));
    }
    let (rest, query) = rest.split_once('?').map_or((rest, ""), |(r, q)| (r, q));
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    };
    if let Some(u) = userinfo {
        let (user, password) = u.split_once(':').map_or((u, None), |(u, p)| (u, Some(p)));
        if !user.is_empty() {
            connection.user = decode(user)?;
        }
        if let Some(p) = password {
            connection.password = decode(p)?;
        }
    }
    let mut master_name = String::new();
    let mut sentinel_user = String::new();
    let mut sentinel_password = String::new();
    let mut more = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = decode(v)?;
        let flag = |v: &str| parse_bool(v).ok_or_else(|| format!("{k}={v:?} is not a boolean"));
        match k {
            "sentinel_master_name" => master_name = v,
            "sentinel_user" => sentinel_user = v,
            "sentinel_password" => sentinel_password = v,
            "addr" => more.push(host_port(&v)?),
            "connect_timeout" => connection.connect_timeout = go_duration(&v).ok_or_else(|| format!("invalid connect timeout: {v:?}"))?,
            "io_timeout" => connection.io_timeout = go_duration(&v).ok_or_else(|| format!("invalid io timeout: {v:?}"))?,
            "force_resp2" => connection.force_resp2 = flag(&v)?,
            "tls_enabled" => {
                if flag(&v)? && connection.tls.is_none() {
                    connection.tls = Some(Tls::default());
                }
            }
            "sentinel_tls_enabled" => {
                if flag(&v)? && connection.sentinel_tls.is_none() {
                    connection.sentinel_tls = Some(Tls::default());
                }
            }
            "replica_client_enabled" => return Err("replica_client_enabled: reading from replicas is not supported".into()),
            _ => return Err(format!("unknown option {k:?}")),
        }
    }
    if scheme.starts_with("rediss") && connection.tls.is_none() {
        connection.tls = Some(Tls::default());
    }
    if scheme == "rediss+sentinel" && connection.sentinel_tls.is_none() {
        connection.sentinel_tls = connection.tls.clone();
    }
    if matches!(scheme, "unix" | "redis+unix") {
        if rest.is_empty() {
            return Err("unix:// needs a socket path".into());
        }
        return Ok(Shard {
            location: Location::Unix(decode(rest)?),
            connection,
        });
    }
    let (hp, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
    if !path.is_empty() {
        connection.db = path
            .parse()
            .map_err(|_| format!("can't parse Redis DB number from connection address: /{path} is not a number"))?;
    }
    let first = host_port(hp)?;
    let sentinel = scheme.ends_with("+sentinel") || !master_name.is_empty();
    let location = if sentinel {
        if master_name.is_empty() {
            return Err("sentinel master name must be configured for Redis Sentinel setup (sentinel_master_name=…)".into());
        }
        Location::Sentinel {
            sentinels: std::iter::once(first).chain(more).collect(),
            master_name,
            user: sentinel_user,
            password: sentinel_password,
        }
    } else if scheme == "redis+cluster" || !more.is_empty() {
        Location::Cluster(std::iter::once(first).chain(more).collect())
    } else {
        Location::Tcp(first.0, first.1)
    };
    Ok(Shard { location, connection })
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A Go duration of one unit (`500ms`, `1s`, `2m`), as Centrifugo's options take them.
fn go_duration(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Percent-decoding of a URL part.
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(hex.ok_or_else(|| format!("bad percent-encoding in {s:?}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tcp(h: &str, p: u16) -> (String, u16) {
        (h.into(), p)
    }

    #[test]
    fn centrifugo_address_forms() {
        let base = Connection {
            user: "app".into(),
            password: "pw".into(),
            db: 2,
            ..Default::default()
        };
        let s = parse("localhost:6379", &base).unwrap();
        assert_eq!(s.location, Location::Tcp("localhost".into(), 6379));
        assert_eq!((s.connection.user.as_str(), s.connection.db), ("app", 2));

        let s = parse("redis://u:p%40ss@h:1/5?connect_timeout=500ms&io_timeout=2s&force_resp2=true", &base).unwrap();
        assert_eq!(s.location, Location::Tcp("h".into(), 1));
        let c = &s.connection;
        assert_eq!((c.user.as_str(), c.password.as_str(), c.db), ("u", "p@ss", 5), "the URL's own win");
        assert_eq!(
            (c.connect_timeout, c.io_timeout, c.force_resp2),
            (Duration::from_millis(500), Duration::from_secs(2), true)
        );
        assert!(c.tls.is_none());

        assert!(parse("rediss://h:1", &base).unwrap().connection.tls.is_some());
        assert!(parse("redis://h:1?tls_enabled=true", &base).unwrap().connection.tls.is_some());
        assert_eq!(
            parse("unix:///run/redis.sock", &base).unwrap().location,
            Location::Unix("/run/redis.sock".into())
        );

        let s = parse(
            "redis+sentinel://:spw@s1:26379?sentinel_master_name=mymaster&addr=s2:26380&sentinel_user=su",
            &base,
        )
        .unwrap();
        assert_eq!(
            s.location,
            Location::Sentinel {
                sentinels: vec![tcp("s1", 26379), tcp("s2", 26380)],
                master_name: "mymaster".into(),
                user: "su".into(),
                password: String::new(),
            }
        );
        assert_eq!(s.connection.password, "spw", "the userinfo is the master's, as in centrifuge");
        assert!(parse("redis+sentinel://s1:26379", &base).unwrap_err().contains("master name"));
        assert!(parse("rediss+sentinel://s1:1?sentinel_master_name=m", &base)
            .unwrap()
            .connection
            .sentinel_tls
            .is_some());

        let s = parse("redis+cluster://c1:7000?addr=c2:7001", &base).unwrap();
        assert_eq!(s.location, Location::Cluster(vec![tcp("c1", 7000), tcp("c2", 7001)]));

        for bad in [
            "http://h:1",
            "h",
            "redis://h:1/x",
            "redis://h:1?bogus=1",
            "redis://h:1?io_timeout=soon",
            "redis://h:1?replica_client_enabled=true",
        ] {
            assert!(parse(bad, &base).is_err(), "{bad}");
        }
        assert_eq!(seed("redis://a:b@h:7/0").unwrap(), tcp("h", 7));
        assert_eq!(seed("[::1]:7").unwrap(), tcp("::1", 7));
    }
}
