//! Test harness: a diagnostic upstream standing in for 3CX, a gateway started in-process on an
//! ephemeral port (or the real binary), a PostgreSQL database per test, and HTTP clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path as UrlPath, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use pbxgate::app::App;
use pbxgate::clock::ManualClock;
use pbxgate::config::Config;
use pbxgate::http::Gateway;
use pbxgate::session::NewSession;
use pbxgate_sandbox::pki::{Leaf, TestPki};
use pbxgate_sandbox::{self as sandbox, Running};
use tokio::net::TcpListener;

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const COOKIE: &str = "__Host-pbxgate";
/// The web password of the sandbox's service extension, as `config_text` configures it.
pub const SERVICE_PASSWORD: &str = "service-secret-value";

pub fn init() {
    pbxgate::tls::provider();
}

// === the diagnostic upstream ===

/// A stand-in for 3CX that reports what reached it.
pub struct Upstream {
    pub running: Running,
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with_tls(None).await
    }

    pub async fn start_with_tls(leaf: Option<&Leaf>) -> Self {
        init();
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .route("/download/{bytes}", get(download))
            .route("/upload", post(upload))
            .route("/slow/{ms}", get(slow))
            .route("/ws/echo", get(websocket))
            .route("/socket/echo", get(websocket))
            .fallback(echo)
            .with_state(hits.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = leaf.map(|l| {
            let dir = tempfile::tempdir().unwrap();
            let (cert, key) = l.write(dir.path(), "upstream").unwrap();
            tokio_rustls::TlsAcceptor::from(pbxgate::tls::server_config(&cert, &key).unwrap())
        });
        let running = sandbox::spawn(listener, router, tls).unwrap();
        Self { running, hits }
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Answers with what it received: method, path, query and headers (all values per name).
async fn echo(State(hits): State<Arc<AtomicUsize>>, req: Request) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(v.to_str().unwrap_or("<binary>").to_string());
    }
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    });
    (
        [
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "must not reach the browser"),
            ("x-upstream-plain", "kept"),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// Streams `bytes` bytes (a repeating pattern) in 64 KiB chunks, never holding more.
async fn download(State(hits): State<Arc<AtomicUsize>>, UrlPath(bytes): UrlPath<u64>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let chunk = pattern_chunk();
    let size = chunk.len() as u64;
    let stream = futures_util::stream::unfold(bytes, move |left| {
        let chunk = chunk.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(size);
                (Ok::<_, std::io::Error>(chunk.slice(..n as usize)), left - n)
            })
        }
    });
    (
        [("content-length", bytes.to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Answers `ms` milliseconds after the request arrived (counted on arrival): a request that
/// is in flight for a known time, e.g. across a shutdown.
async fn slow(State(hits): State<Arc<AtomicUsize>>, UrlPath(ms): UrlPath<u64>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n").into_response()
}

/// Counts and checks a streamed upload without keeping it.
async fn upload(State(hits): State<Arc<AtomicUsize>>, body: Body) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    let mut intact = true;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return (http::StatusCode::BAD_REQUEST, "broken upload").into_response();
        };
        intact &= matches_pattern(total, &chunk);
        total += chunk.len() as u64;
    }
    axum::Json(serde_json::json!({ "bytes": total, "intact": intact })).into_response()
}

async fn websocket(State(hits): State<Arc<AtomicUsize>>, ws: WebSocketUpgrade) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    ws.on_upgrade(sandbox::pbx::echo)
}

pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern_byte).collect()
}

/// 251 × 256 bytes of pattern: whole periods, so consecutive chunks continue the pattern.
pub fn pattern_chunk() -> Bytes {
    static CHUNK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    CHUNK
        .get_or_init(|| Bytes::from(pattern(251 * 256)))
        .clone()
}

/// Whether `data`, found at stream offset `offset`, continues the pattern (memcmp-fast).
pub fn matches_pattern(offset: u64, data: &[u8]) -> bool {
    let chunk = pattern_chunk();
    let mut start = (offset % 251) as usize;
    data.chunks(chunk.len() - 251).all(|piece| {
        let ok = piece == &chunk[start..start + piece.len()];
        start = (start + piece.len()) % 251;
        ok
    })
}

// === configuration ===

/// A valid config for a gateway in front of `upstream`, with the store in `dir`.
pub fn config_text(upstream: &str, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://pbx.example.com"

[entra]
tenant_id = "{TENANT}"
client_id = "app-client-id"
client_secret = "entra-secret-value"
# Nothing listens there: tests never reach a real Microsoft endpoint.
authority = "http://127.0.0.1:9"
graph_url = "http://127.0.0.1:9"

[pbx]
url = "{upstream}"
client_id = "pbxgate"
client_secret = "xapi-secret-value"
service_extension = "{service}"
service_password = "{SERVICE_PASSWORD}"
connect_timeout = "2s"
response_timeout = "5s"

[store]
url = "sqlite://{db}"
{extra}
"#,
        db = dir.join("pbxgate.db").display(),
        service = sandbox::DEMO_SERVICE_EXTENSION,
    )
}

/// Parses config text, then lets the test adjust the typed config.
pub fn config(upstream: &str, dir: &Path, edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::parse(&config_text(upstream, dir, ""), "test.toml", []).unwrap();
    edit(&mut c);
    c
}

// === the sandbox (simulated Entra ID, Graph and 3CX) ===

/// The gateway's public URL in sandbox tests; callbacks are rewritten to the real address.
pub const PUBLIC: &str = "https://pbx.example.com";

/// The app registration that `config_text` signs in with.
pub fn registration() -> pbxgate_sandbox::Registration {
    pbxgate_sandbox::Registration {
        client_id: "app-client-id".into(),
        client_secret: Some("entra-secret-value".into()),
        certificate: None,
        public_url: PUBLIC.into(),
    }
}

/// The simulators, with the 3CX API client that `config_text` uses, on `clock`.
pub async fn sandbox(
    registration: &pbxgate_sandbox::Registration,
    clock: &ManualClock,
) -> pbxgate_sandbox::Sandbox {
    let sandbox = pbxgate_sandbox::Sandbox::start(
        registration,
        ("pbxgate", "xapi-secret-value"),
        "prov-secret",
        None,
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    sandbox
        .pbx
        .edit_extension(sandbox::DEMO_SERVICE_EXTENSION, |e| {
            e.access_password = Some(SERVICE_PASSWORD.into())
        });
    sandbox
}

// === an in-process gateway ===

pub struct TestGateway {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub clock: ManualClock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

pub const START: i64 = 1_800_000_000;

impl TestGateway {
    /// A gateway in front of `upstream` with a fresh SQLite store.
    pub async fn start(upstream: &str, edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = config(upstream, dir.path(), edit);
        let mut g = Self::start_with(config).await;
        g._dir = Some(dir);
        g
    }

    pub async fn start_with(config: Config) -> Self {
        Self::start_with_clock(config, ManualClock::new(START)).await
    }

    pub async fn start_with_clock(config: Config, clock: ManualClock) -> Self {
        init();
        let gateway = Gateway::bind(config, Arc::new(clock.clone()))
            .await
            .expect("gateway starts");
        let addr = gateway.local_addr();
        let app = gateway.app.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(gateway.run(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            app,
            clock,
            stop: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// The gateway's `/metrics` text (from loopback, which the default allow list admits).
    pub async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.app.config.server.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Signs a user in directly through the session module; returns the cookie value.
    pub async fn session_for(&self, user: &str) -> String {
        self.app
            .sessions
            .create(NewSession {
                user_key: format!("{TENANT}:{user}"),
                upn: format!("{user}@contoso.com"),
                extension: "101".into(),
                idp_sid: Some(format!("sid-{user}")),
                login_hint: None,
            })
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn cookie(id: &str) -> String {
    format!("{COOKIE}={id}")
}

/// A client that follows no redirects and keeps no cookies: tests see every answer as is.
pub fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

pub fn client_trusting(ca_pem: &str) -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

pub async fn echoed(res: reqwest::Response) -> serde_json::Value {
    assert_eq!(res.status(), 200, "upstream echo expected");
    res.json().await.unwrap()
}

/// The values of header `name` as the upstream saw them.
pub fn seen<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

pub fn pki() -> TestPki {
    TestPki::generate("pbxgate test CA").unwrap()
}

// === PostgreSQL ===

/// A database of its own for one test, dropped afterwards (also when the test fails).
/// PostgreSQL is a hard requirement: when it is unreachable the test fails, it is not skipped.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

pub fn pg_admin_url() -> String {
    std::env::var("PBXGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl PgDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin_url = pg_admin_url();
        let name = format!("pbxgate_test_{}_{}", std::process::id(), rand_suffix());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for this test ({admin_url}): {e}. \
                 Start it (scripts/test.sh does) or set PBXGATE_TEST_POSTGRES_URL."
                )
            });
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("PBXGATE_TEST_POSTGRES_URL must end in /DATABASE"),
        };
        Self {
            url,
            admin_url,
            name,
        }
    }
}

fn rand_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 6];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context guarantees; use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(&sql).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}

/// Sends `GET {path}` byte for byte (HTTP clients normalise dot segments) and returns the
/// status code.
pub async fn raw_get_status(addr: SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap()
}

// === the real binary ===

/// `pbxgate` started as a separate process, with its log captured.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pbxgate")
}

impl Process {
    /// Runs `pbxgate serve --config FILE` and waits for its "listening" log line.
    pub fn serve(config: &Path, log: &Path) -> Self {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--config"]).arg(config);
        Self::serve_command(cmd, log)
    }

    /// Like `serve`, run by `sh` after `setup` (e.g. `ulimit -Sn 512`); the shell execs
    /// pbxgate, so the child is pbxgate itself.
    pub fn serve_after(setup: &str, config: &Path, log: &Path) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{setup} && exec \"$0\" serve --config \"$1\""))
            .arg(binary())
            .arg(config);
        Self::serve_command(cmd, log)
    }

    fn serve_command(mut cmd: Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let addr = wait_for_listen(log);
        Self {
            child,
            addr,
            log: log.to_path_buf(),
        }
    }

    /// Like `serve`, for a config with `[log] format = "json"`.
    pub fn serve_json(config: &Path, log: &Path) -> Self {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        let addr = wait_for(log, |l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "listening" || v["message"] == "listening").then(|| {
                v["addr"]
                    .as_str()
                    .or(v["fields"]["addr"].as_str())?
                    .parse()
                    .ok()
            })?
        });
        Self {
            child,
            addr,
            log: log.to_path_buf(),
        }
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// SIGTERM, as systemd sends; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = wait_exit(&mut self.child, Duration::from_secs(15));
        std::mem::forget(self);
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_listen(log: &Path) -> SocketAddr {
    wait_for(log, |l| {
        l.contains("listening").then(|| {
            l.split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })?
    })
}

/// Waits until a line of the log yields a value.
fn wait_for<T>(log: &Path, find: impl Fn(&str) -> Option<T>) -> T {
    for _ in 0..400 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(v) = text.lines().find_map(&find) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "pbxgate did not start; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

// === a browser ===

/// A browser: follows nothing by itself, keeps the gateway's cookies.
#[derive(Default, Clone)]
pub struct Browser {
    pub cookies: std::collections::HashMap<String, String>,
}

impl Browser {
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn keep(&mut self, res: &reqwest::Response) {
        for c in res.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k.trim());
            } else {
                self.cookies.insert(k.trim().into(), v.trim().into());
            }
        }
    }

    /// A GET to the gateway (path or full public URL) with the cookies.
    pub async fn get(&mut self, gw: &TestGateway, target: &str) -> reqwest::Response {
        let path = target.strip_prefix(PUBLIC).unwrap_or(target);
        let res = client()
            .get(gw.url(path))
            .header("cookie", self.cookie_header())
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }

    pub async fn post_form(
        &mut self,
        gw: &TestGateway,
        path: &str,
        form: &str,
    ) -> reqwest::Response {
        let res = client()
            .post(gw.url(path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_string())
            .send()
            .await
            .unwrap();
        self.keep(&res);
        res
    }

    /// Starts a sign-in and walks to the callback URL Entra sends the browser back to.
    pub async fn walk_to_callback(
        &mut self,
        gw: &TestGateway,
        hint: &str,
        return_to: &str,
    ) -> String {
        let login = format!(
            "/auth/login?return_to={}&login_hint={}",
            urlencode(return_to),
            urlencode(hint)
        );
        let res = self.get(gw, &login).await;
        assert_eq!(res.status(), 303, "{:?}", res.text().await);
        let authorize = location(&res);
        let res = client().get(&authorize).send().await.unwrap();
        assert_eq!(res.status(), 303, "Entra: {:?}", res.text().await);
        let back = location(&res);
        assert!(
            back.starts_with(&format!("{PUBLIC}/auth/callback?")),
            "{back}"
        );
        back
    }

    pub async fn sign_in(&mut self, gw: &TestGateway, hint: &str) -> reqwest::Response {
        let back = self.walk_to_callback(gw, hint, "/webclient/").await;
        self.get(gw, &back).await
    }

    /// What the sandbox webclient page does: a token from /connect/token, then MyUser.
    pub async fn webclient_extension(&mut self, gw: &TestGateway) -> Result<String, u16> {
        let res = self
            .post_form(
                gw,
                "/connect/token",
                "client_id=Webclient&grant_type=refresh_token",
            )
            .await;
        if !res.status().is_success() {
            return Err(res.status().as_u16());
        }
        let token: serde_json::Value = res.json().await.unwrap();
        let me = client()
            .get(gw.url("/xapi/v1/MyUser"))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        if !me.status().is_success() {
            return Err(me.status().as_u16());
        }
        let me: serde_json::Value = me.json().await.unwrap();
        Ok(me["Number"].as_str().unwrap().to_string())
    }

    pub fn has_session(&self) -> bool {
        self.cookies.contains_key(COOKIE)
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

// === a gateway in front of the whole sandbox ===

/// The sandbox (simulated Entra ID, Graph and 3CX) and a gateway in front of it, sharing one
/// clock.
pub struct SandboxEnv {
    pub sandbox: sandbox::Sandbox,
    pub gw: TestGateway,
    _dir: tempfile::TempDir,
}

/// A [`SandboxEnv`] with the demo registration; `edit` adjusts the gateway's config.
pub async fn sandbox_env(edit: impl FnOnce(&mut Config)) -> SandboxEnv {
    init();
    let clock = ManualClock::new(pbxgate::clock::Clock::now(&pbxgate::clock::SystemClock));
    let sandbox = sandbox(&registration(), &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = sandbox::DEMO_TENANT.into();
        c.entra.graph_url = sandbox.graph_server.url().parse().unwrap();
        // Tests sign in many times a minute from one address.
        c.server.login_rate_limit = 10_000;
    });
    edit(&mut config);
    let gw = TestGateway::start_with_clock(config, clock).await;
    SandboxEnv {
        sandbox,
        gw,
        _dir: dir,
    }
}

// === fault injection: a store that can be cut ===

/// A TCP forwarder in front of PostgreSQL that a test can cut without stopping the server
/// (other tests share it). [`StoreLink::down`] is what a stopped PostgreSQL looks like: every
/// open connection dropped, new ones refused (nothing listens on the port);
/// [`StoreLink::up`] listens on the same port again. Point the gateway at
/// [`StoreLink::url_for`].
pub struct StoreLink {
    pub addr: SocketAddr,
    target: String,
    /// Bumped on every cut: open connections watch it and end.
    cuts: tokio::sync::watch::Sender<u64>,
    listening: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StoreLink {
    /// Forwards to the PostgreSQL of [`pg_admin_url`].
    pub async fn start() -> Self {
        let admin = url::Url::parse(&pg_admin_url()).unwrap();
        let target = format!(
            "{}:{}",
            admin.host_str().unwrap(),
            admin.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let link = Self {
            addr: listener.local_addr().unwrap(),
            target,
            cuts: tokio::sync::watch::channel(0).0,
            listening: std::sync::Mutex::new(None),
        };
        link.listen(listener);
        link
    }

    fn listen(&self, listener: TcpListener) {
        let (target, cuts) = (self.target.clone(), self.cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        *self.listening.lock().unwrap() = Some(task);
    }

    /// `url` (a PostgreSQL URL on the real server) redirected through this link.
    pub fn url_for(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.addr.port())).unwrap();
        u.to_string()
    }

    /// PostgreSQL "stops": the port closes (connections are refused) and open connections
    /// are dropped.
    pub async fn down(&self) {
        let task = self.listening.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.cuts.send_modify(|n| *n += 1);
    }

    /// PostgreSQL "starts" again, on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.listen(listener);
    }
}

impl Drop for StoreLink {
    fn drop(&mut self) {
        if let Some(task) = self.listening.lock().unwrap().take() {
            task.abort();
        }
        self.cuts.send_modify(|n| *n += 1);
    }
}

// === listeners and HTTP versions (issue 16) ===

/// A gateway certificate for `localhost` and `127.0.0.1` from a fresh test CA, written to a
/// temporary directory (kept as long as the returned value).
pub struct GatewayCert {
    pub pki: TestPki,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayCert {
    pub fn new() -> Self {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pki
            .leaf(&["localhost", "127.0.0.1"])
            .unwrap()
            .write(dir.path(), "gateway")
            .unwrap();
        Self {
            pki,
            cert,
            key,
            _dir: dir,
        }
    }

    /// Sets `[server] tls_cert`/`tls_key` to this certificate.
    pub fn configure(&self, c: &mut Config) {
        c.server.tls_cert = Some(self.cert.clone());
        c.server.tls_key = Some(self.key.clone());
    }
}

/// One `[server] listen` entry on a free loopback port.
pub fn listener(
    tls: Option<bool>,
    h2c: bool,
    passthrough_only: bool,
) -> pbxgate::config::ListenerConfig {
    pbxgate::config::ListenerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls,
        h2c,
        passthrough_only,
    }
}

impl TestGateway {
    /// A gateway with a fresh SQLite store and every listener's address, in `[server]
    /// listen` order (`addr` is the first).
    pub async fn start_listening(
        upstream: &str,
        edit: impl FnOnce(&mut Config),
    ) -> (Self, Vec<SocketAddr>) {
        init();
        let dir = tempfile::tempdir().unwrap();
        let config = config(upstream, dir.path(), edit);
        let clock = ManualClock::new(START);
        let gateway = Gateway::bind(config, Arc::new(clock.clone()))
            .await
            .expect("gateway starts");
        let addrs = gateway.local_addrs();
        let app = gateway.app.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(gateway.run(async {
            let _ = rx.await;
        }));
        let g = Self {
            addr: addrs[0],
            app,
            clock,
            stop: Some(tx),
            task: Some(task),
            _dir: Some(dir),
        };
        (g, addrs)
    }
}

/// A client of a TLS listener trusting `ca_pem`: HTTP/2 by ALPN, or HTTP/1.1 only.
pub fn tls_client(ca_pem: &str, http2: bool) -> reqwest::Client {
    init();
    let b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()]);
    let b = if http2 { b } else { b.http1_only() };
    b.build().unwrap()
}

/// A plain-HTTP client that speaks HTTP/2 with prior knowledge (h2c).
pub fn h2c_client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}
