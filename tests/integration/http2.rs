//! HTTP/2 to clients (issue 16): ALPN `h2` on TLS listeners, h2c with prior knowledge on
//! plain ones that enable it. The session check, header hygiene, passthrough, the limits
//! and the first-request deadline are the same as over HTTP/1.1: each test runs against
//! every version. 3CX is always reached over HTTP/1.1.

use std::time::{Duration, Instant};

use http::Version;
use pbxgate::config::{HumanDuration, Listeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// How the test client reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// TLS, HTTP/1.1 only (the baseline).
    H1Tls,
    /// TLS, HTTP/2 by ALPN.
    H2Tls,
    /// Plain TCP, HTTP/2 with prior knowledge, on a listener with `h2c = true`.
    H2c,
}

const MODES: [Mode; 3] = [Mode::H1Tls, Mode::H2Tls, Mode::H2c];

/// A gateway for `mode`, its client and the scheme to reach it with.
struct Setup {
    gw: TestGateway,
    client: reqwest::Client,
    version: Version,
    _cert: GatewayCert,
}

impl Setup {
    async fn start(
        mode: Mode,
        up: &Upstream,
        edit: impl FnOnce(&mut pbxgate::config::Config),
    ) -> Self {
        let cert = GatewayCert::new();
        let gw = TestGateway::start(&up.url(), |c| {
            match mode {
                Mode::H1Tls | Mode::H2Tls => cert.configure(c),
                Mode::H2c => c.server.listen = Listeners(vec![listener(None, true, false)]),
            }
            edit(c);
        })
        .await;
        let (client, version) = match mode {
            Mode::H1Tls => (tls_client(&cert.pki.ca_pem, false), Version::HTTP_11),
            Mode::H2Tls => (tls_client(&cert.pki.ca_pem, true), Version::HTTP_2),
            Mode::H2c => (h2c_client(), Version::HTTP_2),
        };
        Self {
            gw,
            client,
            version,
            _cert: cert,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(self.gw.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.version(), self.version, "{path}");
        res
    }
}

#[tokio::test]
async fn the_session_check_is_the_same_for_every_version() {
    for mode in MODES {
        let up = Upstream::start().await;
        let s = Setup::start(mode, &up, |_| {}).await;
        let res = s
            .get("/webclient/app?tab=calls", &[("accept", "text/html")])
            .await;
        assert_eq!(
            res.status(),
            303,
            "{mode:?}: a navigation is sent to sign in"
        );
        assert_eq!(
            res.headers()["location"],
            "/auth/login?return_to=%2Fwebclient%2Fapp%3Ftab%3Dcalls",
            "{mode:?}"
        );
        let res = s
            .get("/xapi-ish/data", &[("accept", "application/json")])
            .await;
        assert_eq!(res.status(), 401, "{mode:?}: an XHR gets 401");
        assert_eq!(
            up.hits(),
            0,
            "{mode:?}: nothing reaches 3CX without a session"
        );

        // With a session: proxied, and pbxgate's cookie never reaches 3CX. HTTP/2 clients
        // may split cookies over several headers; 3CX gets them as one (HTTP/1.1).
        let id = s.gw.session_for("alice").await;
        let res = s
            .get(
                "/webclient/api/thing",
                &[
                    ("cookie", &format!("a=1; {}", cookie(&id))),
                    ("cookie", "c=3"),
                ],
            )
            .await;
        let echo = echoed(res).await;
        assert_eq!(seen(&echo, "cookie"), vec!["a=1; c=3"], "{mode:?}");
        assert!(
            !echo.to_string().contains(&id),
            "{mode:?}: session id leaked"
        );
        s.gw.stop().await;
    }
}

#[tokio::test]
async fn passthrough_and_header_hygiene_are_the_same_for_every_version() {
    for mode in MODES {
        let up = Upstream::start().await;
        let s = Setup::start(mode, &up, |_| {}).await;
        let res = s
            .get(
                "/provisioning/s3cret/0015650a1b2c.cfg?x=1",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-host", "evil.example"),
                    ("x-real-ip", "6.6.6.6"),
                    ("forwarded", "for=6.6.6.6"),
                    ("te", "trailers"),
                    ("x-request-id", "trace-me-42"),
                ],
            )
            .await;
        let hsts = res.headers().get("strict-transport-security").cloned();
        assert_eq!(
            hsts.is_some(),
            mode != Mode::H2c,
            "{mode:?}: HSTS on TLS listeners only"
        );
        assert_eq!(res.headers()["x-request-id"], "trace-me-42", "{mode:?}");
        assert_eq!(res.headers()["x-upstream-plain"], "kept", "{mode:?}");
        assert!(!res.headers().contains_key("x-upstream-hop"), "{mode:?}");
        let echo = echoed(res).await;
        assert_eq!(echo["path"], "/provisioning/s3cret/0015650a1b2c.cfg");
        assert_eq!(echo["query"], "x=1");
        assert_eq!(
            seen(&echo, "x-forwarded-for"),
            vec!["127.0.0.1"],
            "{mode:?}"
        );
        assert_eq!(seen(&echo, "x-real-ip"), vec!["127.0.0.1"], "{mode:?}");
        assert_eq!(
            seen(&echo, "x-forwarded-host"),
            vec!["pbx.example.com"],
            "{mode:?}"
        );
        let proto = if mode == Mode::H2c { "http" } else { "https" };
        assert_eq!(seen(&echo, "x-forwarded-proto"), vec![proto], "{mode:?}");
        assert!(seen(&echo, "forwarded").is_empty(), "{mode:?}");
        assert!(seen(&echo, "te").is_empty(), "{mode:?}");
        assert_eq!(seen(&echo, "x-request-id"), vec!["trace-me-42"], "{mode:?}");
        // An HTTP/1.1 request with the origin's Host, whatever the client's authority.
        assert_eq!(
            seen(&echo, "host"),
            vec![up.running.addr.to_string().as_str()],
            "{mode:?}"
        );
        s.gw.stop().await;
    }
}

#[tokio::test]
async fn request_bodies_and_large_answers_stream_over_every_version() {
    for mode in MODES {
        let up = Upstream::start().await;
        let s = Setup::start(mode, &up, |_| {}).await;
        let id = s.gw.session_for("alice").await;
        // A body of unknown length (HTTP/2 DATA frames) reaches 3CX whole, chunked.
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter((0..4).map(|i| {
            Ok::<_, std::io::Error>(pattern(300_000)[i * 75_000..(i + 1) * 75_000].to_vec())
        })));
        let res = s
            .client
            .post(s.gw.url("/upload"))
            .header("cookie", cookie(&id))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.version(), s.version);
        let got: serde_json::Value = res.json().await.unwrap();
        assert_eq!(got["bytes"], 300_000, "{mode:?}");
        assert_eq!(got["intact"], true, "{mode:?}");
        let res = s
            .get("/download/3000000", &[("cookie", &cookie(&id))])
            .await;
        let bytes = res.bytes().await.unwrap();
        assert_eq!(bytes.len(), 3_000_000, "{mode:?}");
        assert!(matches_pattern(0, &bytes), "{mode:?}");
        s.gw.stop().await;
    }
}

#[tokio::test]
async fn oversized_request_heads_are_refused_over_every_version() {
    for mode in MODES {
        let up = Upstream::start().await;
        let s = Setup::start(mode, &up, |_| {}).await;
        let big = |n: usize| "a".repeat(n);
        let res = s.get("/healthz", &[("x-big", &big(60 * 1024))]).await;
        assert_eq!(res.status(), 200, "{mode:?}: 60 KB of headers is fine");
        // HTTP/2 announces the limit (SETTINGS_MAX_HEADER_LIST_SIZE) and answers 431 too.
        let res = s.get("/healthz", &[("x-big", &big(70 * 1024))]).await;
        assert_eq!(res.status(), 431, "{mode:?}");
        assert_eq!(up.hits(), 0);
        s.gw.stop().await;
    }
}

/// 60 parallel requests, as the webclient makes loading a page, over one connection.
#[tokio::test]
async fn a_page_of_parallel_requests_shares_one_connection() {
    for mode in [Mode::H2Tls, Mode::H2c] {
        let up = Upstream::start().await;
        let s = Setup::start(mode, &up, |_| {}).await;
        // One request first: before ALPN has said h2, a client opens a connection per request.
        assert_eq!(s.get("/healthz", &[]).await.status(), 200);
        let paths: Vec<String> = (0..60).map(|i| format!("/provisioning/p/{i}")).collect();
        let answers = futures_util::future::join_all(paths.iter().map(|p| s.get(p, &[]))).await;
        assert!(answers.iter().all(|r| r.status() == 200), "{mode:?}");
        assert_eq!(up.hits(), 60);
        s.gw.stop().await;
    }
}

/// Each open HTTP/2 stream may hold a connection to 3CX, as an HTTP/1.1 connection does:
/// streams count under the same per-client cap as connections, so one connection cannot
/// open more to 3CX than that many connections could.
#[tokio::test]
async fn http2_streams_count_under_the_connection_caps() {
    for mode in [Mode::H2Tls, Mode::H2c] {
        let up = Upstream::start().await;
        let s = Setup::start(mode, &up, |c| c.server.max_connections_per_client = 11).await;
        let id = s.gw.session_for("alice").await;
        let c = cookie(&id);
        let with_session = [("cookie", c.as_str())];
        assert_eq!(s.get("/healthz", &[]).await.status(), 200);
        // The connection holds one place; ten streams fit beside it, the rest wait for none.
        let slow: Vec<_> = (0..30).map(|_| s.get("/slow/400", &with_session)).collect();
        let answers = futures_util::future::join_all(slow).await;
        let count = |status: u16| answers.iter().filter(|r| r.status() == status).count();
        assert_eq!((count(200), count(503)), (10, 20), "{mode:?}");
        assert!(
            answers
                .iter()
                .filter(|r| r.status() == 503)
                .all(|r| r.headers().contains_key("retry-after"))
        );
        assert_eq!(
            up.hits(),
            10,
            "{mode:?}: the refused streams never reached 3CX"
        );
        // The places come back when the answers end.
        let again: Vec<_> = (0..10).map(|_| s.get("/slow/10", &with_session)).collect();
        let answers = futures_util::future::join_all(again).await;
        assert!(answers.iter().all(|r| r.status() == 200), "{mode:?}");
        s.gw.stop().await;
    }
}

/// Reads until the server closes the connection; how long that took (panics after 4 s).
async fn until_closed(s: &mut TcpStream) -> Duration {
    let began = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(4), s.read(&mut buf))
            .await
            .expect("connection still open after 4 s");
        if matches!(read, Ok(0) | Err(_)) {
            return began.elapsed();
        }
    }
}

#[tokio::test]
async fn the_first_request_deadline_holds_for_h2c() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.server.listen = Listeners(vec![listener(None, true, false)]);
        c.server.header_read_timeout = HumanDuration::secs(1);
    })
    .await;
    // The preface and SETTINGS, then no request: closed at the deadline (counted from
    // accept), not at the 60 s idle timeout.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let took = until_closed(&mut s).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");
    // Half a preface: the same.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    until_closed(&mut s).await;
    // An h2c listener still speaks HTTP/1.1, with its own head deadline.
    let res = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (res.version(), res.status().as_u16()),
        (Version::HTTP_11, 200)
    );
}

#[tokio::test]
async fn idle_http2_connections_are_closed_after_the_idle_timeout() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.server.listen = Listeners(vec![listener(None, true, false)]);
        c.server.idle_timeout = HumanDuration::secs(1);
    })
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    // Preface, empty SETTINGS, then HEADERS (END_STREAM | END_HEADERS) for `GET /healthz`
    // on stream 1, HPACK-coded: :method GET, :scheme http, :path and :authority literals.
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, 9]);
    block.extend_from_slice(b"localhost");
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec();
    bytes.extend_from_slice(&[0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    s.write_all(&bytes).await.unwrap();
    let mut answered = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer's HEADERS frame on stream 1 (type 1), then nothing: closed when idle.
    while !answered
        .windows(5)
        .any(|w| w == [1, 4, 0, 0, 0] || w == [1, 5, 0, 0, 0])
    {
        let n = tokio::time::timeout(Duration::from_secs(4), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before answering");
        answered.extend_from_slice(&buf[..n]);
    }
    let took = until_closed(&mut s).await;
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[tokio::test]
async fn plain_listeners_speak_no_h2c_unless_enabled() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    assert!(h2c_client().get(gw.url("/healthz")).send().await.is_err());
    let res = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn websockets_keep_working_over_http1_on_a_tls_listener_offering_h2() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let up = Upstream::start().await;
    let cert = GatewayCert::new();
    let gw = TestGateway::start(&up.url(), |c| cert.configure(c)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert.pki.ca_pem).unwrap();
    let mut tls = pbxgate::tls::client_config(Some(&ca)).unwrap();
    // As a browser opening a WebSocket: HTTP/1.1 only, since pbxgate offers no RFC 8441.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let req = format!("wss://localhost:{}/ws/echo", gw.addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, res) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(res.status(), 101);
    ws.send(Message::text("hello 3CX")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("hello 3CX")
    );
    ws.close(None).await.unwrap();
}
