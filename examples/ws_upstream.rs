//! The WebSocket upstream for bench/ws.sh: accepts a WebSocket on any path (RFC 6455
//! handshake by tokio-tungstenite) and echoes what it gets until the peer closes. It stands
//! in for 3CX's webclient socket, so that nginx and pbxgate relay to the same server.
//!
//!   ws_upstream LISTEN        (default 127.0.0.1:18090)

use futures_util::{SinkExt, StreamExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors: say so and wait, as a server would.
                eprintln!("ws_upstream: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
}
