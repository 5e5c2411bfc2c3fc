//! A tiny chat: subscribes to a channel, prints what arrives, publishes each line typed.
//! It survives server restarts (reconnect with backoff and jitter) and recovers what it
//! missed when the server still has it.
//!
//! ```sh
//! wshub genconfig -o config.json   # then allow clients to publish, e.g. in channel.without_namespace:
//!                                  # "allow_publish_for_subscriber": true
//! wshub serve -c config.json &
//! cargo run -p wshub-client --example chat -- ws://127.0.0.1:8000/connection/websocket "$(wshub gentoken -c config.json -u alice)" lobby
//! ```

use tokio::io::{AsyncBufReadExt, BufReader};
use wshub_client::{Client, ClientConfig, ClientEvent, SubscriptionOptions};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: chat WS_URL TOKEN [CHANNEL]");
        std::process::exit(2);
    };
    let channel = args.next().unwrap_or_else(|| "lobby".into());
    let (client, mut events) = match Client::start(
        &url,
        ClientConfig {
            token,
            ..Default::default()
        },
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let opts = SubscriptionOptions {
        recoverable: true,
        ..Default::default()
    };
    let mut room = client.new_subscription(&channel, opts);
    client.connect();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            ev = room.next_event() => match ev {
                Some(ClientEvent::Publication { data, .. }) => println!("> {}", String::from_utf8_lossy(&data)),
                Some(ClientEvent::Subscribed { recovered, was_recovering: true, .. }) if !recovered => {
                    eprintln!("[back, but some messages could not be recovered]")
                }
                Some(ClientEvent::Unsubscribed { code, .. }) => {
                    eprintln!("unsubscribed: {code}");
                    break;
                }
                Some(other) => eprintln!("[{other:?}]"),
                None => break,
            },
            ev = events.recv() => match ev {
                Some(ClientEvent::Disconnected { code, reason }) => {
                    eprintln!("disconnected: {code} {reason}");
                    break;
                }
                Some(other) => eprintln!("[{other:?}]"),
                None => break,
            },
            line = lines.next_line() => match line {
                Ok(Some(text)) => {
                    if let Err(e) = room.publish(serde_json::json!({ "text": text }).to_string()).await {
                        eprintln!("not sent: {e}");
                    }
                }
                _ => break,
            },
        }
    }
}
