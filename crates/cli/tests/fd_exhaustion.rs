//! Out of file descriptors: the accept loop backs off instead of spinning or crashing, the
//! connections already open keep being served, and new ones are accepted again once fds
//! are free.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshub_websocket::{Config, Connection, Event, MessageKind, Role};

const LIMIT: Duration = Duration::from_secs(30);

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

async fn ws(port: u16) -> (TcpStream, Connection) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = wshub_websocket::handshake::client_request(&format!("127.0.0.1:{port}"), "/connection/websocket", &[], None, [1; 16]);
    s.write_all(&req.bytes).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(LIMIT, s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head, _)) = wshub_websocket::handshake::read_response(&buf, &req, None).unwrap() {
            let mut c = Connection::new(Config {
                role: Role::Client,
                max_message_size: 1 << 20,
                deflate: None,
            });
            c.handle_read(&buf[head..]);
            return (s, c);
        }
    }
}

async fn roundtrip(s: &mut TcpStream, c: &mut Connection, cmd: &str) -> String {
    c.send(MessageKind::Text, cmd.to_string().into());
    s.write_all(&c.take_transmit()).await.unwrap();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(Event::Message { data, .. }) = c.poll_event() {
            return String::from_utf8(data.to_vec()).unwrap();
        }
        let n = tokio::time::timeout(LIMIT, s.read(&mut chunk))
            .await
            .expect("answer in time")
            .unwrap();
        assert!(n > 0, "closed");
        c.handle_read(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backs_off_when_out_of_fds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = std::env::temp_dir().join(format!("wshub-fd-{}.json", std::process::id()));
    std::fs::write(
        &cfg,
        r#"{"client": {"allow_anonymous_connect_without_token": true}, "log": {"level": "error"}}"#,
    )
    .unwrap();
    // A hard limit of 48 descriptors (the process raises its soft limit to it).
    let script = format!(
        "ulimit -n 48 && exec {} serve -c {} --port {port} --address 127.0.0.1",
        env!("CARGO_BIN_EXE_wshub"),
        cfg.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut s, mut c) = ws(port).await;
    assert!(roundtrip(&mut s, &mut c, r#"{"id":1,"connect":{}}"#).await.contains("\"connect\""));
    // Exhaust the server's descriptors with idle TCP connections.
    let mut hogs = Vec::new();
    for _ in 0..80 {
        hogs.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let t0 = cpu_ticks(pid);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await; // measuring CPU over time is the point
    }
    let used = cpu_ticks(pid) - t0; // clock ticks, 100 per second
    assert!(used < 50, "the accept loop spins: {used} ticks in 2 s");
    // The open connection is still served.
    assert!(roundtrip(&mut s, &mut c, r#"{"id":2,"presence_stats":{"channel":"x"}}"#)
        .await
        .contains("\"id\":2"));
    assert!(child.try_wait().unwrap().is_none(), "the server is alive");
    // Free the descriptors: new connections are accepted again.
    drop(hogs);
    let (mut s2, mut c2) = tokio::time::timeout(LIMIT, ws(port)).await.expect("accepted again");
    assert!(roundtrip(&mut s2, &mut c2, r#"{"id":1,"connect":{}}"#)
        .await
        .contains("\"connect\""));
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    let _ = child.wait();
    let _ = std::fs::remove_file(cfg);
}
