//! The client for bench/ws.sh: opens N WebSockets to one URL and holds them idle, so that
//! the proxy in between can be weighed with N open. Light on purpose: one task opens them
//! (a bounded number in flight), the handshake is written by hand and only its status line
//! read, and an open socket is a bare `TcpStream` in a vector, with no task or buffer.
//!
//!   ws_hold ADDR PATH N [COOKIE]
//!
//! Prints `open N` once all are open (exit status 1 if one fails), then holds them until
//! its standard input closes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Handshakes in flight at once.
const IN_FLIGHT: usize = 64;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(path), Some(n)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: ws_hold ADDR PATH N [COOKIE]");
    };
    let n: usize = n.parse()?;
    let cookie = args
        .next()
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{cookie}\r\n"
    );
    let mut held = Vec::with_capacity(n);
    let mut opening = JoinSet::new();
    for i in 0..n {
        if opening.len() >= IN_FLIGHT {
            held.push(opening.join_next().await.expect("one in flight")??);
        }
        let (addr, request) = (addr.clone(), request.clone());
        opening.spawn(async move { open(&addr, &request, i).await });
    }
    while let Some(done) = opening.join_next().await {
        held.push(done??);
    }
    println!("open {}", held.len());
    // Held until told to let go. Blocking this thread is fine: nothing else runs on it,
    // and the held sockets need no polling.
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())?;
    drop(held);
    Ok(())
}

/// Opens one WebSocket: the upgrade request, then the answer head, which must be `101`.
async fn open(addr: &str, request: &str, i: usize) -> anyhow::Result<TcpStream> {
    let mut tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("socket {i}: connect timed out"))??;
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    // Byte by byte, so as not to read past the head (nothing follows it here anyway).
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await;
        match read {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => anyhow::bail!("socket {i}: no complete answer"),
        }
    }
    let status = String::from_utf8_lossy(&head);
    anyhow::ensure!(
        status.starts_with("HTTP/1.1 101"),
        "socket {i}: {}",
        status.lines().next().unwrap_or("")
    );
    Ok(tcp)
}
