//! The gateway in front of a diagnostic upstream: access rules, header hygiene, streaming,
//! WebSockets, failures. Every test talks HTTP to a real listener.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

#[tokio::test]
async fn passthrough_paths_reach_upstream_without_a_session() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let res = client()
        .get(gw.url("/provisioning/s3cret/0015650a1b2c.cfg?x=1"))
        .send()
        .await
        .unwrap();
    let echo = echoed(res).await;
    assert_eq!(echo["path"], "/provisioning/s3cret/0015650a1b2c.cfg");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn navigation_without_session_is_redirected_with_return_to() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let res = client()
        .get(gw.url("/webclient/app?tab=calls&x=1"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(
        res.headers()["location"],
        "/auth/login?return_to=%2Fwebclient%2Fapp%3Ftab%3Dcalls%26x%3D1"
    );
    assert_eq!(up.hits(), 0, "nothing reaches 3CX without a session");
}

#[tokio::test]
async fn xhr_and_websocket_without_session_get_401() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let res = client()
        .get(gw.url("/xapi-ish/data"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");

    let res = client()
        .get(gw.url("/webclient/"))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "fetch() from the SPA is not a navigation"
    );

    let url = format!("ws://{}/socket/echo", gw.addr);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn valid_session_is_proxied_and_its_cookie_never_reaches_upstream() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let id = gw.session_for("alice").await;
    let res = client()
        .get(gw.url("/webclient/api/thing"))
        .header("cookie", format!("a=1; {}; b=2", cookie(&id)))
        .header("cookie", "c=3")
        .send()
        .await
        .unwrap();
    let echo = echoed(res).await;
    assert_eq!(seen(&echo, "cookie"), vec!["a=1; b=2; c=3"]);
    let all = echo.to_string();
    assert!(!all.contains(&id), "session id leaked upstream: {all}");

    // A request with only our cookie arrives with no Cookie header at all.
    let res = client()
        .get(gw.url("/webclient/api/thing"))
        .header("cookie", cookie(&id))
        .send()
        .await
        .unwrap();
    assert!(seen(&echoed(res).await, "cookie").is_empty());
}

async fn status_with(gw: &TestGateway, id: &str) -> reqwest::Response {
    client()
        .get(gw.url("/webclient/api/me"))
        .header("cookie", cookie(id))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn expired_idle_revoked_and_forged_sessions_are_refused() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.session.lifetime = pbxgate::config::HumanDuration::secs(8 * 3600);
        c.session.idle_timeout = pbxgate::config::HumanDuration::secs(1800);
    })
    .await;

    // Forged: right shape, never issued; and garbage.
    let forged = "A".repeat(43);
    assert_eq!(status_with(&gw, &forged).await.status(), 401);
    assert_eq!(status_with(&gw, "garbage").await.status(), 401);

    // Idle: 31 minutes without a request.
    let idle = gw.session_for("idle").await;
    assert_eq!(status_with(&gw, &idle).await.status(), 200);
    gw.clock.advance(31 * 60);
    let res = status_with(&gw, &idle).await;
    assert_eq!(res.status(), 401);
    let cleared = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with(&format!("{COOKIE}=;")) && cleared.contains("Max-Age=0"));

    // Active use keeps a session alive, but never past its absolute lifetime.
    let busy = gw.session_for("busy").await;
    for _ in 0..16 {
        gw.clock.advance(25 * 60);
        assert_eq!(status_with(&gw, &busy).await.status(), 200);
    }
    gw.clock.advance(25 * 60); // 425 min since sign-in... still below 8 h
    assert_eq!(status_with(&gw, &busy).await.status(), 200);
    gw.clock.advance(60 * 60); // past 8 h
    assert_eq!(status_with(&gw, &busy).await.status(), 401);

    // Revoked: one session, then all of a user's sessions.
    let one = gw.session_for("bob").await;
    let two = gw.session_for("bob").await;
    let other = gw.session_for("carol").await;
    assert!(gw.app.sessions.revoke(&one).await.unwrap());
    assert_eq!(status_with(&gw, &one).await.status(), 401);
    assert_eq!(status_with(&gw, &two).await.status(), 200);
    let n = gw
        .app
        .sessions
        .revoke_user(&format!("{TENANT}:bob"))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(status_with(&gw, &two).await.status(), 401);
    assert_eq!(status_with(&gw, &other).await.status(), 200);
}

/// Sends a GET with `id`'s cookie on `tcp` and reads the answer's status (and body).
async fn status_on(tcp: &mut tokio::net::TcpStream, id: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET /webclient/api/me HTTP/1.1\r\nHost: pbx\r\nAccept: application/json\r\nCookie: {}\r\n\r\n",
        cookie(id)
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the gateway closed the connection");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length: usize = text[..end]
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a content-length");
        if got.len() >= end + 4 + length {
            assert_eq!(got.len(), end + 4 + length, "one answer at a time");
            return text[9..12].parse().unwrap();
        }
    }
}

#[tokio::test]
async fn a_connections_remembered_session_ends_with_the_session() {
    // On one keep-alive connection the gateway remembers the session it last accepted;
    // revocation, expiry and a different cookie must still be decided afresh.
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.session.idle_timeout = pbxgate::config::HumanDuration::secs(1800);
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let alice = gw.session_for("alice").await;
    let bob = gw.session_for("bob").await;
    assert_eq!(status_on(&mut tcp, &alice).await, 200);
    assert_eq!(status_on(&mut tcp, &alice).await, 200);
    // A forged id of the same shape, then a real one, on the same connection.
    assert_eq!(status_on(&mut tcp, &"A".repeat(43)).await, 401);
    assert_eq!(status_on(&mut tcp, &bob).await, 200);
    // Revoked on this replica: refused on the very next request.
    assert!(gw.app.sessions.revoke(&bob).await.unwrap());
    assert_eq!(status_on(&mut tcp, &bob).await, 401);
    // Idle past the timeout by the session clock: refused, remembered or not.
    assert_eq!(status_on(&mut tcp, &alice).await, 200);
    gw.clock.advance(31 * 60);
    assert_eq!(status_on(&mut tcp, &alice).await, 401);
}

/// A 3CX stand-in on raw TCP that answers each request on a connection with keep-alive and
/// then, after `close_after`, closes the connection (as 3CX's nginx ends idle keep-alives).
/// Returns its address and a count of the connections it accepted.
async fn closing_upstream(
    close_after: std::time::Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let read = tokio::time::timeout(close_after, tcp.read(&mut chunk)).await;
                    let Ok(Ok(n @ 1..)) = read else { return }; // idle too long, or closed
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let res = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
                        tcp.write_all(res.as_bytes()).await.unwrap();
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_ones_replaced() {
    use std::sync::atomic::Ordering;
    let (addr, accepted) = closing_upstream(std::time::Duration::from_millis(300)).await;
    let gw = TestGateway::start(&format!("http://{addr}"), |_| {}).await;
    let get = || async {
        let res = client()
            .get(gw.url("/provisioning/abc/x.cfg"))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    // Back-to-back requests share keep-alive connections to 3CX: at most one per serving
    // thread (each has its own pool), however many requests.
    for _ in 0..20 {
        assert_eq!(get().await, (200, "ok".to_string()));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        opened <= threads.min(19),
        "{opened} connections for 20 requests"
    );
    // 3CX closed them while idle: the next request gets a new one, not a 502.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(get().await, (200, "ok".to_string()));
    assert_eq!(accepted.load(Ordering::SeqCst), opened + 1);
}

#[tokio::test]
async fn no_request_waits_behind_an_upload_that_3cx_answered_early() {
    // 3CX refuses an upload at its headers (413) while the browser is still sending the
    // body; the connection stays busy until the body is through. Other requests must not
    // queue behind it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut chunk = [0u8; 4096];
                loop {
                    // Requests without a body, one at a time, until the upload.
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let Ok(n @ 1..) = tcp.read(&mut chunk).await else {
                            return;
                        };
                        head.extend_from_slice(&chunk[..n]);
                    }
                    if !head.starts_with(b"POST") {
                        tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                        continue;
                    }
                    let refused = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\
                                   Connection: close\r\n\r\ntoo large";
                    tcp.write_all(refused.as_bytes()).await.unwrap();
                    // The rest of the upload is read and dropped; the connection then closes.
                    while let Ok(1..) = tcp.read(&mut chunk).await {}
                    return;
                }
            });
        }
    });
    let gw = TestGateway::start(&format!("http://{addr}"), |_| {}).await;

    // A body that trickles in over 3 s.
    let trickle = futures_util::stream::unfold(0, |i| async move {
        if i == 30 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(vec![b'x'; 1024]), i + 1))
    });
    let res = client()
        .post(gw.url("/provisioning/abc/upload"))
        .body(reqwest::Body::wrap_stream(trickle))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    // While it still trickles, each request (on a new connection, to either serving
    // thread) is answered at once.
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let res = client()
            .get(gw.url("/provisioning/abc/x.cfg"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "waited {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_untrusted_peers_are_replaced() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let res = client()
        .get(gw.url("/provisioning/x/y"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let echo = echoed(res).await;
    assert_eq!(seen(&echo, "x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen(&echo, "x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), vec!["http"]);
    // From `server.public_url`, never the client's `Host` (issue 15).
    assert_eq!(seen(&echo, "x-forwarded-host"), vec!["pbx.example.com"]);
    assert!(seen(&echo, "forwarded").is_empty());
}

#[tokio::test]
async fn trusted_proxies_are_believed_and_extended() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let res = client()
        .get(gw.url("/provisioning/x/y"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "pbx.example.com")
        .send()
        .await
        .unwrap();
    let echo = echoed(res).await;
    assert_eq!(
        seen(&echo, "x-forwarded-for"),
        vec!["198.51.100.7, 127.0.0.1"]
    );
    assert_eq!(seen(&echo, "x-real-ip"), vec!["198.51.100.7"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), vec!["pbx.example.com"]);
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_cross_and_request_ids_do() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let res = client()
        .get(gw.url("/provisioning/x/y"))
        .header("connection", "x-client-hop")
        .header("x-client-hop", "secret")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-me-42");
    assert_eq!(res.headers()["x-upstream-plain"], "kept");
    assert!(!res.headers().contains_key("x-upstream-hop"));
    let echo = echoed(res).await;
    for h in ["x-client-hop", "te", "proxy-authorization"] {
        assert!(seen(&echo, h).is_empty(), "{h} crossed");
    }
    assert_eq!(seen(&echo, "x-request-id"), vec!["trace-me-42"]);
    assert_eq!(
        seen(&echo, "host"),
        vec![up.running.addr.to_string().as_str()]
    );

    // Without one, a fresh id is made and passed on.
    let res = client()
        .get(gw.url("/provisioning/x/y"))
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(seen(&echoed(res).await, "x-request-id"), vec![id.as_str()]);
}

#[tokio::test]
async fn path_tricks_cannot_stretch_a_passthrough_prefix() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    for path in [
        "/provisioning/../webclient/",
        "/provisioning/%2e%2e/webclient/",
        "/provisioning%2f..%2fwebclient/",
    ] {
        assert_eq!(raw_get_status(gw.addr, path).await, 400, "{path}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn auth_paths_are_never_proxied() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    for (path, status) in [
        ("/auth/nothing-here", 404),
        ("/auth", 404),
        ("/auth/login", 503),
    ] {
        let res = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(res.status(), status, "{path}");
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(
            res.text().await.unwrap().contains(&id),
            "{path}: correlation id shown"
        );
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn websocket_echo_through_the_proxy_closes_cleanly() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let id = gw.session_for("alice").await;

    // A passthrough WebSocket (as /ws/webclient) and a session-checked one.
    for (path, with_cookie) in [("/ws/echo", false), ("/socket/echo", true)] {
        let mut req = format!("ws://{}{path}", gw.addr)
            .into_client_request()
            .unwrap();
        if with_cookie {
            req.headers_mut()
                .insert("cookie", cookie(&id).parse().unwrap());
        }
        let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(res.status(), 101);
        ws.send(Message::text("hello 3CX")).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text("hello 3CX")
        );
        let blob = vec![7u8; 200_000];
        ws.send(Message::binary(blob.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));
        let metrics = client().get(gw.url("/metrics")).send().await.unwrap();
        assert!(
            metrics
                .text()
                .await
                .unwrap()
                .contains("pbxgate_websockets_open 1"),
            "{path}: open WebSocket counted"
        );
        ws.close(None).await.unwrap();
        // The close handshake completes: the server's close frame comes back, then the end.
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => {}
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(e)) => panic!("unclean close: {e}"),
        }
    }
    // Both relays end once the sockets close.
    for _ in 0..50 {
        let text = gw.metrics().await;
        if text.contains("pbxgate_websockets_open 0") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("WebSocket relays still counted as open");
}

#[tokio::test]
async fn upstream_down_gives_a_502_page_and_readyz_503() {
    // Bind and release a port: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = TestGateway::start(&format!("http://{dead}"), |_| {}).await;
    let res = client()
        .get(gw.url("/provisioning/x/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let page = res.text().await.unwrap();
    assert!(
        page.contains("not reachable") && page.contains(&id),
        "{page}"
    );
    assert!(
        !page.contains(&dead.to_string()),
        "no internals on the page"
    );

    let res = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["pbx"]["ok"], false);
    assert_eq!(body["checks"]["store"]["ok"], true);

    let res = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200, "liveness does not depend on 3CX");

    let metrics = gw.metrics().await;
    assert!(metrics.contains("pbxgate_upstream_errors_total{kind=\"connect\"} 1"));
    assert!(metrics.contains("class=\"passthrough\",status=\"502\""));
}

#[tokio::test]
async fn readyz_reports_each_dependency_when_ready() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let res = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["store"]["backend"], "sqlite");
    assert_eq!(body["checks"]["pbx"]["ok"], true);
}

#[tokio::test]
async fn metrics_count_routes_and_are_restricted_by_address() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let id = gw.session_for("alice").await;
    client()
        .get(gw.url("/provisioning/a/b"))
        .send()
        .await
        .unwrap();
    let res = client()
        .get(gw.url("/webclient/x"))
        .header("cookie", cookie(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    client().get(gw.url("/webclient/x")).send().await.unwrap();
    let text = gw.metrics().await;
    for needle in [
        "pbxgate_http_requests_total{class=\"passthrough\",status=\"200\"} 1",
        "pbxgate_http_requests_total{class=\"session\",status=\"200\"} 1",
        "pbxgate_http_requests_total{class=\"unauthenticated\",status=\"401\"} 1",
        "pbxgate_http_request_duration_seconds_count{class=\"session\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    let locked = TestGateway::start(&up.url(), |c| {
        c.server.metrics_allow = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let res = client().get(locked.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let id = gw.session_for("alice").await;
    const SIZE: usize = 64 * 1024 * 1024;

    let res = client()
        .get(gw.url(&format!("/download/{SIZE}")))
        .header("cookie", cookie(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(
            matches_pattern(total as u64, &chunk),
            "download corrupted at {total}"
        );
        total += chunk.len();
    }
    assert_eq!(total, SIZE);

    let piece = pattern_chunk();
    let count = SIZE / piece.len();
    let chunks = (0..count).map(move |_| Ok::<_, std::io::Error>(piece.clone()));
    let res = client()
        .post(gw.url("/upload"))
        .header("cookie", cookie(&id))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["bytes"], (count * pattern_chunk().len()) as u64);
    assert_eq!(body["intact"], true);
}

#[tokio::test]
async fn idle_connections_are_closed_but_websockets_stay() {
    use tokio::io::AsyncReadExt;
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.server.idle_timeout = pbxgate::config::HumanDuration::secs(1);
    })
    .await;
    // A connection that never sends a request is closed after 1-1.5 s.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed by the gateway")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));

    // An upgraded WebSocket is no longer an HTTP connection: quiet for 3 s, still open.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", gw.addr))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    ws.send(Message::text("still there")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still there")
    );
}
