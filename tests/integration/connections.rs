//! Client connections against hostile or broken clients: request-head deadlines and size,
//! connection caps, HSTS, `/readyz` pacing, and SIGTERM under load.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pbxgate::config::HumanDuration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Connects from `source` (any 127/8 address is this machine, so tests can be several
/// clients).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends `GET /healthz` (keep-alive) and reads one whole answer: its status, or `None` when
/// the connection closes first (a refused connection).
async fn healthz(s: &mut TcpStream) -> Option<u16> {
    let req = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if s.write_all(req).await.is_err() {
        return None;
    }
    read_answer(s).await
}

/// Reads one answer with a `Content-Length` body; `None` on close or error before its end.
async fn read_answer(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("an answer or a close within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..end];
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return head.split_whitespace().nth(1)?.parse().ok();
        }
    }
}

/// Writes `start`, then one byte every 200 ms, until the server closes the connection;
/// returns how long that took (panics after `limit`).
async fn trickle_until_closed(s: TcpStream, start: &[u8], limit: Duration) -> Duration {
    let began = Instant::now();
    let (mut r, mut w) = s.into_split();
    let _ = w.write_all(start).await;
    let trickle = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if w.write_all(b"a").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = trickle => unreachable!(),
        _ = closed => {},
        _ = tokio::time::sleep(limit) => panic!("connection still open after {limit:?}"),
    }
    began.elapsed()
}

fn header_timeout(c: &mut pbxgate::config::Config) {
    c.server.header_read_timeout = HumanDuration::secs(1);
}

#[tokio::test]
async fn slow_request_heads_are_cut_off_at_the_header_deadline() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), header_timeout).await;
    let limit = Duration::from_secs(4);

    // Unfinished headers, then a byte every 200 ms: closed ~1 s after accept (the idle
    // watchdog, at 60 s, never sees the connection idle).
    let s = TcpStream::connect(gw.addr).await.unwrap();
    let took =
        trickle_until_closed(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", limit).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");

    // Nothing at all: the deadline runs from accept, not from the first byte.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let began = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(limit, s.read(&mut buf))
        .await
        .expect("a silent connection is closed by the deadline");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(began.elapsed() < Duration::from_secs(3));

    // The next request on a kept-alive connection has the same deadline.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(healthz(&mut s).await, Some(200));
    trickle_until_closed(s, b"GET /healthz HTTP/1.1\r\nX-Slow: ", limit).await;
}

#[tokio::test]
async fn the_header_deadline_covers_the_tls_handshake() {
    let up = Upstream::start().await;
    let cert = GatewayCert::new();
    let gw = TestGateway::start(&up.url(), |c| {
        header_timeout(c);
        cert.configure(c);
    })
    .await;
    // A ClientHello record header announcing 16 KB, then a byte every 200 ms.
    let s = TcpStream::connect(gw.addr).await.unwrap();
    trickle_until_closed(s, &[0x16, 0x03, 0x01, 0x40, 0x00], Duration::from_secs(4)).await;
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let send = |size: usize| async move {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        let req = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(size)
        );
        s.write_all(req.as_bytes()).await.unwrap();
        read_answer(&mut s).await
    };
    assert_eq!(send(60 * 1024).await, Some(200), "60 KB of headers is fine");
    assert_eq!(send(70 * 1024).await, Some(431));
}

#[tokio::test]
async fn connections_per_client_are_capped() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| c.server.max_connections_per_client = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", gw.addr).await;
        assert_eq!(healthz(&mut s).await, Some(200));
        held.push(s);
    }
    let mut over = connect_from("127.0.0.1", gw.addr).await;
    assert_eq!(
        healthz(&mut over).await,
        None,
        "the 4th connection is closed"
    );
    let mut other = connect_from("127.0.0.2", gw.addr).await;
    assert_eq!(
        healthz(&mut other).await,
        Some(200),
        "another client is not"
    );

    // A place given back is usable again.
    drop(held.pop());
    assert!(eventually_answered("127.0.0.1", gw.addr).await);

    // At least the 4th; the first tries after the drop may have come before the server saw it.
    let refused = r#"pbxgate_connections_refused_total{reason="max_connections_per_client"}"#;
    assert!(metric(&gw, refused) >= 1, "{}", gw.app.metrics.render());
}

/// A sample's value in the gateway's metrics (0 when absent).
fn metric(gw: &TestGateway, series: &str) -> u64 {
    gw.app
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn trusted_proxies_are_not_held_to_the_per_client_cap() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| {
        c.server.max_connections_per_client = 1;
        c.server.trusted_proxies = vec!["127.0.0.3/32".parse().unwrap()];
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.3", gw.addr).await;
        assert_eq!(healthz(&mut s).await, Some(200));
        held.push(s);
    }
}

#[tokio::test]
async fn connections_overall_are_capped() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |c| c.server.max_connections = Some(3)).await;
    let mut held = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let mut s = connect_from(source, gw.addr).await;
        assert_eq!(healthz(&mut s).await, Some(200));
        held.push(s);
    }
    assert_eq!(metric(&gw, "pbxgate_connections_open"), 3);
    let mut over = connect_from("127.0.0.4", gw.addr).await;
    assert_eq!(
        healthz(&mut over).await,
        None,
        "the 4th connection is closed"
    );

    drop(held.remove(0));
    assert!(eventually_answered("127.0.0.4", gw.addr).await);
    let refused = r#"pbxgate_connections_refused_total{reason="max_connections"}"#;
    assert!(metric(&gw, refused) >= 1, "{}", gw.app.metrics.render());
}

/// Whether a new connection from `source` is answered within 2 s (a closed connection's
/// place comes back once the server has seen it close).
async fn eventually_answered(source: &str, addr: SocketAddr) -> bool {
    for _ in 0..20 {
        let mut s = connect_from(source, addr).await;
        if healthz(&mut s).await == Some(200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// === Strict-Transport-Security ===

async fn hsts_of(client: &reqwest::Client, gw: &TestGateway) -> [Option<String>; 2] {
    let mut seen = [None, None];
    for (i, path) in ["/healthz", "/provisioning/a/b"].iter().enumerate() {
        let res = client.get(gw.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        seen[i] = res
            .headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_string());
    }
    seen
}

#[tokio::test]
async fn hsts_is_sent_on_every_answer_when_pbxgate_terminates_tls() {
    let up = Upstream::start().await;
    let cert = GatewayCert::new();
    let tls = |max_age: Option<u64>| {
        let cert = &cert;
        move |c: &mut pbxgate::config::Config| {
            cert.configure(c);
            if let Some(secs) = max_age {
                c.server.hsts_max_age = HumanDuration::secs(secs);
            }
        }
    };
    let client = client_trusting(&cert.pki.ca_pem);
    let gw = TestGateway::start(&up.url(), tls(None)).await;
    let year = Some("max-age=31536000".to_string());
    assert_eq!(
        hsts_of(&client, &gw).await,
        [year.clone(), year],
        "pbxgate's own answer and a proxied one"
    );
    let gw = TestGateway::start(&up.url(), tls(Some(600))).await;
    let ten = Some("max-age=600".to_string());
    assert_eq!(hsts_of(&client, &gw).await, [ten.clone(), ten]);
    let gw = TestGateway::start(&up.url(), tls(Some(0))).await;
    assert_eq!(hsts_of(&client, &gw).await, [None, None], "0 turns it off");
}

#[tokio::test]
async fn hsts_is_not_sent_over_plain_http() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    assert_eq!(hsts_of(&client(), &gw).await, [None, None]);
}

// === /readyz ===

#[tokio::test]
async fn readyz_cannot_be_used_to_flood_3cx() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let before = up.hits();
    let url = gw.url("/readyz");
    let calls = (0..25).map(|_| async { client().get(&url).send().await.unwrap().status() });
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200);
    }
    for _ in 0..25 {
        assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    }
    let probes = up.hits() - before;
    assert!(probes <= 2, "50 calls to /readyz probed 3CX {probes} times");

    // A cache, not a freeze: a second later 3CX is asked again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let probed = up.hits();
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    assert_eq!(up.hits(), probed + 1);
}

// === SIGTERM under load (the real binary) ===

/// What became of one request sent on a connection of its own.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A whole answer with this status.
    Answered(u16),
    /// Refused at connect, or closed without a byte of answer: the client may retry.
    Refused,
    /// Part of an answer, then the connection ended: never acceptable.
    Broken(String),
}

async fn one_request(addr: SocketAddr, path: &str, cookie: &str) -> Outcome {
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => return Outcome::Refused,
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("an answer or a close within 20 s");
    if buf.is_empty() {
        return Outcome::Refused;
    }
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Outcome::Broken(format!("no whole head: {text:?}"));
    };
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok());
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    let whole = match (header("content-length"), header("transfer-encoding")) {
        (Some(len), _) => len.parse() == Ok(body.len()),
        (None, Some(te)) if te == "chunked" => body.ends_with("0\r\n\r\n"),
        _ => read.is_ok(),
    };
    match (status, whole) {
        (Some(status), true) => Outcome::Answered(status),
        _ => Outcome::Broken(format!("{read:?}: {text:?}")),
    }
}

fn soft_open_files(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request_and_refuses_new_ones() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbxgate.toml");
    std::fs::write(&path, config_text(&up.url(), dir.path(), "")).unwrap();
    // Started with a low soft open-file limit, which pbxgate raises to the hard one.
    let hard: u64 = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(4096);
    let mut gw = Process::serve_after("ulimit -Sn 256", &path, &dir.path().join("serve.log"));
    let pid = gw.child.id();
    assert_eq!(soft_open_files(pid), hard, "the soft limit is raised");

    let id = {
        let config = pbxgate::config::Config::load(&path).unwrap();
        let store = pbxgate::store::Store::open(&config.store.url)
            .await
            .unwrap();
        let sessions = pbxgate::session::Sessions::new(
            store.clone(),
            std::sync::Arc::new(pbxgate::clock::SystemClock),
            &config,
        );
        let id = sessions
            .create(pbxgate::session::NewSession {
                user_key: format!("{TENANT}:alice"),
                upn: "alice@contoso.com".into(),
                extension: "101".into(),
                idp_sid: None,
                login_hint: None,
            })
            .await
            .unwrap();
        store.close().await;
        id
    };
    let cookie = Arc::new(cookie(&id));
    let addr = gw.addr;

    // Requests in flight across the signal: each answers 2 s after reaching 3CX.
    let before = up.hits();
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let cookie = cookie.clone();
            tokio::spawn(async move { one_request(addr, "/slow/2000", &cookie).await })
        })
        .collect();
    // Load: four clients sending request after request, each noting whether it ended
    // before the signal was sent.
    let (termed, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (cookie, termed, stop) = (cookie.clone(), termed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let outcome = one_request(addr, "/webclient/x", &cookie).await;
                    outcomes.push((outcome, termed.load(Ordering::SeqCst)));
                }
                outcomes
            })
        })
        .collect();
    for _ in 0..100 {
        if up.hits() >= before + 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The load has been answered for a while (and all slow requests reached 3CX).
    tokio::time::sleep(Duration::from_millis(200)).await;

    termed.store(true, Ordering::SeqCst);
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still draining the slow requests, and no longer accepting.
    assert!(gw.child.try_wait().unwrap().is_none(), "exited too early");
    let late = TcpStream::connect(addr)
        .await
        .map(|_| ())
        .map_err(|e| e.kind());
    assert_eq!(
        late,
        Err(std::io::ErrorKind::ConnectionRefused),
        "a connection after SIGTERM is refused"
    );
    stop.store(true, Ordering::SeqCst);

    for s in slow {
        assert_eq!(
            s.await.unwrap(),
            Outcome::Answered(200),
            "in flight at SIGTERM"
        );
    }
    let (mut sent, mut answered, mut refused) = (0, 0, 0);
    for l in load {
        for (outcome, after_term) in l.await.unwrap() {
            sent += 1;
            match outcome {
                Outcome::Answered(200) => answered += 1,
                Outcome::Refused if after_term => refused += 1,
                other => panic!("{other:?} (ended after SIGTERM: {after_term})"),
            }
        }
    }
    assert_eq!(sent, answered + refused);
    assert!(
        answered > 10,
        "under load: {sent} sent, {answered} answered, {refused} refused"
    );
    eprintln!("{sent} sent, {answered} answered, {refused} refused after SIGTERM");

    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..300 {
            if let Some(s) = gw.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pbxgate did not exit within 15 s after SIGTERM");
    })
    .await
    .unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");

    // The store is whole and the session still valid.
    let config = pbxgate::config::Config::load(&path).unwrap();
    let store = pbxgate::store::Store::open(&config.store.url)
        .await
        .unwrap();
    let sessions = pbxgate::session::Sessions::new(
        store.clone(),
        std::sync::Arc::new(pbxgate::clock::SystemClock),
        &config,
    );
    assert!(sessions.validate(&id).await.unwrap().is_ok());
    store.close().await;
}
