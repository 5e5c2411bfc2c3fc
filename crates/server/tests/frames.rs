//! Frame-level bad input over real sockets: each offender gets its close code, the others
//! keep being served, and no connection is left behind.

mod common;

use common::*;
use wshub_websocket::MessageKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_the_offender() {
    let server = TestServer::echo(1024).await;
    let mut good = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            {
                let mut f = masked_frame(0x81, b"hi");
                f[1] &= 0x7f;
                f.drain(2..6);
                f
            },
            1002,
        ), // unmasked
        (masked_frame(0x83, b""), 1002),                   // reserved opcode
        (masked_frame(0x80, b"x"), 1002),                  // continuation with nothing open
        (masked_frame(0xC1, b"x"), 1002),                  // RSV1 with no deflate agreed
        (masked_frame(0x88, &999u16.to_be_bytes()), 1002), // bad close code
        (masked_frame(0x81, &[0xce, 0xba, 0xff]), 1007),   // invalid UTF-8
        (masked_frame(0x82, &[0u8; 1025]), 1009),          // over the size limit
    ];
    for (wire, expected) in cases {
        let mut bad = Client::connect(server.addr, "/connection/websocket", &[], None).await;
        bad.echo_round_trip("ok first").await;
        bad.send_raw(&wire).await;
        assert_eq!(bad.expect_close().await, expected);
        good.echo_round_trip("unaffected").await;
    }
    server.wait_connections(1).await;
    // A reset in the middle of a frame ends only that connection.
    let mut cut = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    let f = masked_frame(0x82, &[1u8; 500]);
    cut.send_raw(&f[..100]).await;
    drop(cut);
    server.wait_connections(1).await;
    good.send(MessageKind::Binary, &[7u8; 1000]).await;
    assert!(matches!(good.next_event().await, wshub_websocket::Event::Message { .. }));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_handshake_and_ping() {
    let server = TestServer::echo(65536).await;
    let mut c = Client::connect(server.addr, "/connection/websocket", &[], None).await;
    c.conn.send_ping(b"are you there");
    c.flush().await;
    assert_eq!(
        c.next_event().await,
        wshub_websocket::Event::Pong(bytes::Bytes::from_static(b"are you there"))
    );
    c.conn.close(wshub_websocket::CloseCode(4000), "done");
    c.flush().await;
    assert_eq!(c.expect_close().await, 4000);
    server.wait_connections(0).await;
    server.stop().await;
}
