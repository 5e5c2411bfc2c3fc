//! A PostgreSQL cluster for tests: `initdb` in a fresh folder, `postgres` on a free loopback
//! port (trust authentication, user `postgres`, no fsync), stopped by `pg_ctl` and its PID
//! when dropped. The binaries are taken from `PATH` or Debian's `/usr/lib/postgresql/*/bin`;
//! as root (PostgreSQL refuses to run as root) they run as the `postgres` user through
//! `runuser`. A missing program fails the test naming its Debian package.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// The folder of `initdb`, `postgres`, `pg_ctl`, `pg_isready` and `psql`: Debian's newest
/// `/usr/lib/postgresql/*/bin` (where they all are), else the `PATH` folder that has them.
fn bin_dir() -> PathBuf {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_ctl", "pg_isready", "psql"]
            .iter()
            .all(|b| d.join(b).exists())
    };
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    if let Some(d) = debian.into_iter().rev().find(|d| has_all(d)) {
        return d;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_all(d))
        .unwrap_or_else(|| {
            panic!("initdb, postgres, pg_ctl, pg_isready and psql not found: install them with `apt-get install postgresql`")
        })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when we are root.
fn command(program: &Path, args: &[&str]) -> Command {
    match is_root() {
        true => {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program).args(args);
            c
        }
        false => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

impl Postgres {
    pub async fn start() -> Postgres {
        Self::start_with(None).await
    }

    /// Serving TLS with this certificate and key (PEM), and refusing TCP connections
    /// without it (`hostnossl … reject`).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        Self::start_with(Some((cert_pem, key_pem))).await
    }

    async fn start_with(tls: Option<(&str, &str)>) -> Postgres {
        let bin = bin_dir();
        let dir = crate::temp_dir("postgres");
        if is_root() {
            let owned = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status();
            assert!(owned.is_ok_and(|s| s.success()), "chown of {} to postgres failed", dir.display());
        }
        let data = dir.join("data");
        let data_s = data.to_str().unwrap_or_default().to_string();
        let out = command(
            &bin.join("initdb"),
            &["-D", &data_s, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("initdb could not start ({e}): install it with `apt-get install postgresql`"));
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt as _;
            let write = |name: &str, body: &str| std::fs::write(data.join(name), body).unwrap();
            write("server.crt", cert);
            write("server.key", key);
            // PostgreSQL refuses a key others can read.
            let _ = std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600));
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap_or_default();
            conf.push_str("\nssl = on\n");
            write("postgresql.conf", &conf);
            write(
                "pg_hba.conf",
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            );
            if is_root() {
                let owned = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data).status();
                assert!(owned.is_ok_and(|s| s.success()), "chown of {} to postgres failed", data.display());
            }
        }
        for _ in 0..5 {
            let port = crate::redis::free_port();
            let socket_dir = dir.to_str().unwrap_or_default().to_string();
            let mut child = command(
                &bin.join("postgres"),
                &[
                    "-D",
                    &data_s,
                    "-p",
                    &port.to_string(),
                    "-k",
                    &socket_dir,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-F",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("postgres could not start ({e}): install it with `apt-get install postgresql`"));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() && ready(&bin, port) {
                    return Postgres { child, port, dir, bin };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    stop(&bin, &data);
                    crate::end(&mut child);
                    panic!("postgres did not accept connections on {port} within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("postgres ended before listening five times (ports taken?)");
    }

    /// A DSN for `tokio-postgres` and `psql`.
    pub fn dsn(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// Runs SQL through `psql`, stopping at the first error; its output (tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let out = Command::new(&psql)
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql could not start ({e}): install it with `apt-get install postgresql-client`"));
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Whether the server answers queries (it listens a little before it does).
fn ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops the server of `data` (the one this helper started: `runuser` does not pass a kill on).
fn stop(bin: &Path, data: &Path) {
    let _ = command(
        &bin.join("pg_ctl"),
        &["-D", data.to_str().unwrap_or_default(), "stop", "-m", "immediate"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status();
}

impl Drop for Postgres {
    fn drop(&mut self) {
        stop(&self.bin, &self.dir.join("data"));
        crate::end(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
