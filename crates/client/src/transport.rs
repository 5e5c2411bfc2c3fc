//! The socket under a client: the `ws://` or `wss://` URL parsed, TCP (and TLS) opened, the
//! WebSocket upgrade made, and the frames the sans-IO connection queues written out.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wshub_protocol::Format;
use wshub_websocket::{handshake, Config, Connection, Role};

/// Why a client could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL: {0}")]
    Url(String),
    #[error("TLS: {0}")]
    Tls(String),
}

pub(crate) struct Target {
    pub(crate) tls: bool,
    /// `host:port` to resolve (at every connect, so that DNS changes are followed).
    pub(crate) authority: String,
    /// The name the TLS certificate must carry.
    pub(crate) host: String,
    pub(crate) path: String,
}

pub(crate) fn parse(url: &str) -> Result<Target, ClientError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else {
        return Err(ClientError::Url(format!("{url}: the scheme must be ws:// or wss://")));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // `[v6]:port`, `[v6]`, `host:port`, `host`.
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| ClientError::Url(format!("{url}: unclosed [")))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(ClientError::Url(format!("{url}: no host")));
    }
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| ClientError::Url(format!("{url}: bad port {p:?}")))?,
        None if tls => 443,
        None => 80,
    };
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Target {
        tls,
        authority,
        host: host.to_string(),
        path: path.to_string(),
    })
}

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Transport {
    pub(crate) stream: Box<dyn Io>,
    pub(crate) conn: Connection,
}

pub(crate) fn tls_config(extra: &[rustls_pki_types::CertificateDer<'static>]) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra {
        roots.add(c.clone()).map_err(|e| ClientError::Tls(e.to_string()))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Most time for each step of opening: the TCP connect, the TLS handshake, each read of
/// the upgrade's answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn open(t: &Target, tls: Option<&Arc<rustls::ClientConfig>>, format: Format) -> std::io::Result<Transport> {
    let tcp = tokio::time::timeout(OPEN_TIMEOUT, TcpStream::connect(t.authority.as_str())).await??;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Io> = match tls {
        Some(cfg) if t.tls => {
            let name = rustls_pki_types::ServerName::try_from(t.host.clone()).map_err(std::io::Error::other)?;
            let connector = tokio_rustls::TlsConnector::from(cfg.clone());
            Box::new(tokio::time::timeout(OPEN_TIMEOUT, connector.connect(name, tcp)).await??)
        }
        _ => Box::new(tcp),
    };
    let protocols: &[&str] = if format == Format::Protobuf {
        &["centrifuge-protobuf"]
    } else {
        &[]
    };
    let req = handshake::client_request(&t.authority, &t.path, protocols, None, rand::random());
    stream.write_all(&req.bytes).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = tokio::time::timeout(OPEN_TIMEOUT, stream.read(&mut chunk)).await??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, accepted)) = handshake::read_response(&buf, &req, None).map_err(std::io::Error::other)? {
            let mut conn = Connection::new(Config {
                role: Role::Client,
                max_message_size: 64 << 20,
                deflate: accepted.deflate,
            });
            conn.handle_read(&buf[head..]);
            return Ok(Transport { stream, conn });
        }
    }
}

pub(crate) async fn write_all(t: &mut Transport) -> std::io::Result<()> {
    t.stream.write_all(&t.conn.take_transmit()).await?;
    t.stream.flush().await
}
