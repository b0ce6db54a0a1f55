//! The reverse proxy to 3CX: streamed HTTP/1.1 bodies over pooled keep-alive connections,
//! WebSocket upgrades relayed byte for byte, and header hygiene in both directions.
//!
//! Hygiene rules: hop-by-hop headers never cross; `X-Forwarded-*` from a peer outside
//! `trusted_proxies` are replaced, never believed; pbxgate's own cookie never reaches 3CX.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use crate::config::Config;
use crate::metrics::{Metrics, UpstreamErrorKind};
use crate::tls::TlsError;
use pbxgate_wire::cookie::split_pairs;

mod paths;
mod pool;
pub use paths::{passthrough_prefix, path_is_safe};
use pool::Pool;
pub use pool::PooledBody;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot connect to 3CX: {0}")]
    Connect(String),
    #[error("3CX did not answer within {0:?}")]
    Timeout(Duration),
    #[error("3CX answered badly: {0}")]
    Protocol(String),
}

impl ProxyError {
    fn kind(&self) -> UpstreamErrorKind {
        match self {
            Self::Connect(_) => UpstreamErrorKind::Connect,
            Self::Timeout(_) => UpstreamErrorKind::Timeout,
            Self::Protocol(_) => UpstreamErrorKind::Protocol,
        }
    }
}

// Header names as constants: parsed once at compile time, not on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const X_REQUESTED_WITH: HeaderName = HeaderName::from_static("x-requested-with");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus old aliases.
/// Matched as strings: a length check rules most names out at once.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Client-identity headers that only pbxgate may set on what goes to 3CX, and the other
/// names proxies use for the same (a server may believe any of them).
fn is_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "x-forwarded-port"
            | "x-forwarded-server"
            | "x-forwarded-scheme"
            | "x-forwarded-ssl"
            | "x-real-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "true-client-ip"
            | "x-host"
            | "x-original-host"
            | "x-url-scheme"
            | "front-end-https"
    )
}

/// Headers with which frameworks let a request name another URL or method than its own
/// (ASP.NET/IIS rewrite, Symfony/Laravel, Rails, Express): 3CX must see what pbxgate checked.
fn is_override(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-original-url"
            | "x-original-uri"
            | "x-rewrite-url"
            | "x-override-url"
            | "x-forwarded-prefix"
            | "x-forwarded-path"
            | "x-forwarded-uri"
            | "x-envoy-original-path"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-method"
    )
}

/// The TCP peer of a connection and whether it came over TLS; the accept loop puts it on
/// every request.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Peer {
    /// The connection's peer, as the accept loop recorded it on the request.
    pub fn of(req: &http::request::Parts) -> Self {
        req.extensions.get::<Peer>().copied().unwrap_or(Peer {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
        })
    }
}

/// Who is really asking, as far as pbxgate can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address, for rate limits and logs. Allow lists ask [`ClientInfo::is_within`]
    /// instead: after a broken chain this is a trusted proxy's address, which must not pass.
    pub ip: IpAddr,
    /// `http` or `https`, as the browser sees it.
    pub proto: &'static str,
    /// How `ip` was found.
    pub source: ClientSource,
    /// The `X-Forwarded-For` chain to send upstream: the client and the hops after it.
    forwarded_for: HeaderValue,
    /// `ip` as a header value (`X-Real-IP`).
    ip_value: HeaderValue,
}

/// Where a request's client address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// The TCP peer: not a trusted proxy, or one that named nobody.
    Peer,
    /// A trusted proxy's `X-Forwarded-For`: the first entry from the right that is not a
    /// trusted proxy (the leftmost when all are).
    Chain,
    /// The entry where the client should be is not an address; the client is taken to be
    /// the last trusted hop (so rate limits still count someone), which no allow list admits.
    Broken,
}

/// An address as a header value (`X-Real-IP`, `X-Forwarded-For`).
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_canonical().to_string()))
        .expect("an IP address is a valid header value")
}

impl ClientInfo {
    /// The client of a request that came through the accept loop.
    pub fn of(req: &http::request::Parts, trusted: &[IpNet]) -> Self {
        let peer = Peer::of(req);
        Self::resolve(peer.addr, peer.tls, &req.headers, trusted)
    }

    /// Believes `X-Forwarded-*` only when the peer itself is a trusted proxy.
    pub fn resolve(peer: SocketAddr, tls: bool, headers: &HeaderMap, trusted: &[IpNet]) -> Self {
        Self::resolve_for(peer, &ip_header_value(peer.ip()), tls, headers, trusted)
    }

    /// [`ClientInfo::resolve`] with the peer's address already made into a header value
    /// (once per connection, not per request).
    pub fn resolve_for(
        peer: SocketAddr,
        peer_value: &HeaderValue,
        tls: bool,
        headers: &HeaderMap,
        trusted: &[IpNet],
    ) -> Self {
        let peer_ip = peer.ip().to_canonical();
        let own_proto = if tls { "https" } else { "http" };
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
        if !is_trusted(&peer_ip) {
            return Self {
                ip: peer_ip,
                proto: own_proto,
                source: ClientSource::Peer,
                forwarded_for: peer_value.clone(),
                ip_value: peer_value.clone(),
            };
        }
        let walk = walk_chain(headers, peer_ip, is_trusted);
        let proto = match first_value(headers, X_FORWARDED_PROTO) {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            Some(p) if p.eq_ignore_ascii_case("http") => "http",
            _ => own_proto,
        };
        let mut forwarded_for: Vec<String> =
            walk.kept.iter().rev().map(IpAddr::to_string).collect();
        forwarded_for.push(peer_ip.to_string());
        Self {
            ip: walk.client,
            proto,
            source: walk.source,
            forwarded_for: HeaderValue::from_str(&forwarded_for.join(", "))
                .expect("addresses are valid header values"),
            ip_value: ip_header_value(walk.client),
        }
    }

    /// Whether the client is in one of `nets`: never after a broken chain, whose address
    /// is only a stand-in.
    pub fn is_within(&self, nets: &[IpNet]) -> bool {
        self.source != ClientSource::Broken && nets.iter().any(|n| n.contains(&self.ip))
    }
}

/// A trusted peer's `X-Forwarded-For`, walked from the right.
struct Walk {
    client: IpAddr,
    source: ClientSource,
    /// The entries walked, right to left, ending with the client when the chain named one.
    kept: Vec<IpAddr>,
}

/// Walks `X-Forwarded-For` from the right: trusted hops are skipped, the first other entry
/// is the client. Only the hops we trust vouch for what stands left of them, so nothing
/// left of the client is believed, and an entry that is not an address stops the walk
/// at the last trusted hop instead of being skipped.
fn walk_chain(headers: &HeaderMap, peer: IpAddr, is_trusted: impl Fn(&IpAddr) -> bool) -> Walk {
    let mut entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        // A value that is not visible ASCII is one entry that is not an address.
        .flat_map(|v| v.to_str().unwrap_or("<not ASCII>").split(','))
        .collect();
    let named_any = !entries.is_empty();
    entries.reverse();
    let mut kept = Vec::new();
    for raw in entries {
        match parse_node(raw) {
            Some(ip) if is_trusted(&ip) => kept.push(ip),
            Some(ip) => {
                kept.push(ip);
                return Walk {
                    client: ip,
                    source: ClientSource::Chain,
                    kept,
                };
            }
            None => {
                let client = kept.last().copied().unwrap_or(peer);
                log_broken_chain(raw, peer);
                return Walk {
                    client,
                    source: ClientSource::Broken,
                    kept,
                };
            }
        }
    }
    let client = kept.last().copied().unwrap_or(peer);
    let source = if named_any {
        ClientSource::Chain
    } else {
        ClientSource::Peer
    };
    Walk {
        client,
        source,
        kept,
    }
}

/// One `X-Forwarded-For` entry: an address, also with a port as some load balancers write
/// it (`203.0.113.9:4711`, `[2001:db8::1]:4711`). Anything else is not an address.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim_matches([' ', '\t']);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let is_port = |p: &str| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok();
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        let ip: std::net::Ipv6Addr = ip.parse().ok().filter(|_| port_ok)?;
        return Some(IpAddr::V6(ip).to_canonical());
    }
    let (ip, port) = s.split_once(':')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok().filter(|_| is_port(port))?;
    Some(IpAddr::V4(ip))
}

/// Logs a broken chain, escaped and shortened, at most once every ten seconds (with how
/// many went unlogged): a client can send one with every request.
fn log_broken_chain(entry: &str, peer: IpAddr) {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    static UNLOGGED: AtomicU64 = AtomicU64::new(0);
    // Only this throttle reads the wall clock here; no decision depends on it.
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    let last = LAST.load(Ordering::Relaxed);
    let due = now.saturating_sub(last) >= 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if !due {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let shown: String = entry.chars().take(64).collect();
    tracing::warn!(
        %peer,
        entry = ?shown,
        unlogged = UNLOGGED.swap(0, Ordering::Relaxed),
        "X-Forwarded-For names no address where the client should be; taking the last trusted proxy as the client (no allow list admits it)"
    );
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn first_value(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    header_str(headers, name)
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// True for a WebSocket handshake (`Connection: upgrade` + `Upgrade: websocket`).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        && header_str(headers, header::UPGRADE).is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// A top-level browser navigation, which may be redirected to sign-in. Anything else
/// (XHR/fetch, WebSocket) gets a 401: a redirect would surface only as a CORS error.
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    if !(method == Method::GET || method == Method::HEAD) || is_websocket_upgrade(headers) {
        return false;
    }
    if let Some(mode) = header_str(headers, SEC_FETCH_MODE) {
        return mode.eq_ignore_ascii_case("navigate");
    }
    if headers.contains_key(X_REQUESTED_WITH) {
        return false;
    }
    header_str(headers, header::ACCEPT).is_some_and(|a| a.contains("text/html"))
}

/// What goes to 3CX: the client's body as hyper reads it (streamed, not boxed), or one
/// pbxgate made (a token request it read and hands on, the readiness probe).
pub type UpstreamBody = Either<Incoming, Body>;

/// Pooled keep-alive connections to the 3CX origin.
pub struct Upstream {
    pool: Pool,
    /// `X-Forwarded-Host`: `server.public_url`'s host (and port), never the client's `Host`.
    forwarded_host: HeaderValue,
    response_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// What the proxy needs to know about the request besides the request itself.
pub struct Forward<'a> {
    pub client: &'a ClientInfo,
    pub request_id: &'a HeaderValue,
    /// pbxgate's session cookie; it and the login-attempt cookie named after it are removed
    /// before the request leaves.
    pub cookie_name: &'a str,
}

impl Upstream {
    /// Takes the whole config: the origin is `[pbx]`'s, and what 3CX is told about the
    /// browser's view of the site comes from `[server]`.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, TlsError> {
        let forwarded_host = public_host(&config.server.public_url)?;
        let config = &config.pbx;
        Ok(Self {
            pool: Pool::to_pbx(config)?,
            forwarded_host,
            response_timeout: config.response_timeout.get(),
            metrics,
        })
    }

    /// Sends `req` to 3CX and returns its answer with a streamed body. A WebSocket handshake
    /// that 3CX accepts (101) is relayed in a background task until either side closes.
    /// (Not an `async fn`, for the reason given at `Pool::send`.)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub fn forward<'a>(
        &'a self,
        mut req: Request<UpstreamBody>,
        fwd: Forward<'a>,
    ) -> impl Future<Output = Result<Response<PooledBody>, ProxyError>> + 'a {
        async move {
            let websocket = is_websocket_upgrade(req.headers());
            let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
            *req.uri_mut() = origin_form(req.uri());
            *req.version_mut() = http::Version::HTTP_11;
            prepare_request_headers(req.headers_mut(), &fwd, &self.forwarded_host, websocket);

            let sent = tokio::time::timeout(self.response_timeout, self.pool.send(req)).await;
            let mut res = sent
                .unwrap_or(Err(ProxyError::Timeout(self.response_timeout)))
                .inspect_err(|e| self.metrics.upstream_error(e.kind()))?;

            let switching = res.status() == http::StatusCode::SWITCHING_PROTOCOLS;
            match client_upgrade {
                Some(client_upgrade) if switching => {
                    let upstream_upgrade = hyper::upgrade::on(&mut res);
                    let guard = self.metrics.websocket_opened();
                    let request_id = fwd.request_id.to_str().unwrap_or("-").to_string();
                    tokio::spawn(async move {
                        let _guard = guard;
                        relay(client_upgrade, upstream_upgrade, &request_id).await;
                    });
                }
                _ => strip_hop_by_hop(res.headers_mut()),
            }
            Ok(res)
        }
    }

    /// Whether 3CX answers at all (any status below 500), for `/readyz`.
    pub async fn probe(&self, timeout: Duration) -> Result<u16, ProxyError> {
        let req = Request::get("/")
            .header(header::USER_AGENT, "pbxgate-readyz")
            .body(Either::Right(Body::empty()))
            .map_err(|e| ProxyError::Protocol(e.to_string()))?;
        let res = tokio::time::timeout(timeout, self.pool.send(req))
            .await
            .map_err(|_| ProxyError::Timeout(timeout))??;
        let status = res.status().as_u16();
        if status >= 500 {
            return Err(ProxyError::Protocol(format!("status {status}")));
        }
        Ok(status)
    }
}

/// The host (and port, when not the scheme's default) of the URL users type.
fn public_host(url: &url::Url) -> Result<HeaderValue, TlsError> {
    HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort]).map_err(|_| {
        TlsError::Pem {
            path: "server.public_url".into(),
            message: "host is not valid".into(),
        }
    })
}

/// The request target as HTTP/1.1 sends it to an origin server: path and query only.
/// A clone of the request's own bytes: no parsing, no copy.
fn origin_form(uri: &Uri) -> Uri {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(pq)
}

async fn relay(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, id: &str) {
    match tokio::try_join!(client, upstream) {
        Ok((c, u)) => {
            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
            match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                Ok((up, down)) => {
                    tracing::debug!(request_id = id, up, down, "websocket closed")
                }
                Err(e) => tracing::debug!(request_id = id, error = %e, "websocket ended"),
            }
        }
        Err(e) => tracing::warn!(request_id = id, error = %e, "websocket upgrade failed"),
    }
}

/// Removes hop-by-hop headers, including any that `Connection` names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip_hop_by_hop_and(h, |_| false);
}

/// [`strip_hop_by_hop`], and the headers `also` matches, in the same pass over the headers.
fn strip_hop_by_hop_and(h: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    // `close` names no header; `keep-alive` and `upgrade` name hop-by-hop headers that go
    // anyway: the usual `Connection` values allocate nothing here.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|t| {
            !["close", "keep-alive", "upgrade"]
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    remove_matching(h, |n| is_hop_by_hop(n) || also(n));
}

/// Removes the headers whose names match: a pass over the (few) headers a message has
/// instead of a hash lookup for every name, and no allocation.
fn remove_matching(h: &mut HeaderMap, matching: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = h.keys().find(|k| matching(k)).cloned() {
        h.remove(name);
    }
}

fn prepare_request_headers(
    h: &mut HeaderMap,
    fwd: &Forward<'_>,
    forwarded_host: &HeaderValue,
    websocket: bool,
) {
    // The client sets Host from the upstream URI, as nginx's default `proxy_set_header`.
    strip_hop_by_hop_and(h, |n| {
        is_forwarding(n) || is_override(n) || n == header::HOST
    });
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    // Room for the five below at once (a request may have come with only `Host`).
    h.reserve(5);
    let c = fwd.client;
    h.insert(X_FORWARDED_FOR, c.forwarded_for.clone());
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(c.proto));
    h.insert(X_FORWARDED_HOST, forwarded_host.clone());
    h.insert(X_REAL_IP, c.ip_value.clone());
    h.insert(X_REQUEST_ID, fwd.request_id.clone());
    strip_cookie(h, fwd.cookie_name);
}

/// The login-attempt cookie is named after the session cookie: `{session}-login`.
pub const LOGIN_COOKIE_SUFFIX: &str = "-login";

/// pbxgate's own cookies, which 3CX never sees: the session cookie and the login-attempt
/// cookie named after it.
fn is_own_cookie(name: &[u8], session_cookie: &str) -> bool {
    name.strip_prefix(session_cookie.as_bytes())
        .is_some_and(|rest| rest.is_empty() || rest == LOGIN_COOKIE_SUFFIX.as_bytes())
}

/// Rewrites `Cookie` without pbxgate's own cookies (and as one header, as HTTP/1.1 wants).
/// Works on bytes, so 3CX's cookies reach it as the browser sent them, UTF-8 or not.
/// One `Cookie` header without pbxgate's cookies (3CX's own, on passthrough paths) goes on
/// as it came, without being rebuilt.
fn strip_cookie(h: &mut HeaderMap, session_cookie: &str) {
    let header::Entry::Occupied(mut cookies) = h.entry(header::COOKIE) else {
        return;
    };
    let mut values = cookies.iter();
    if let (Some(only), None) = (values.next(), values.next())
        && !split_pairs(only.as_bytes()).any(|(k, _)| is_own_cookie(k, session_cookie))
    {
        return;
    }
    let mut kept = Vec::new();
    for value in cookies.iter() {
        for (k, v) in
            split_pairs(value.as_bytes()).filter(|(k, _)| !is_own_cookie(k, session_cookie))
        {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            if !k.is_empty() {
                kept.extend_from_slice(k);
                kept.push(b'=');
            }
            kept.extend_from_slice(v);
        }
    }
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
        Ok(v) if !v.is_empty() => {
            cookies.insert(v);
        }
        _ => {
            cookies.remove_entry_mult();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let h = headers(&[
            ("host", "pbx.example.com"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let c = ClientInfo::resolve(peer("203.0.113.9"), true, &h, &[]);
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(c.proto, "https");
        assert_eq!(c.forwarded_for, "203.0.113.9");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn trusted_proxy_chain_is_walked_from_the_right() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.5"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "pbx.example.com"),
        ]);
        let c = ClientInfo::resolve(peer("10.0.0.1"), false, &h, &trusted);
        assert_eq!(c.ip, ip("198.51.100.7"));
        assert_eq!(c.source, ClientSource::Chain);
        assert_eq!(c.proto, "https");
        // What the client wrote left of itself is not passed on as if it were known.
        assert_eq!(c.forwarded_for, "198.51.100.7, 10.0.0.5, 10.0.0.1");
    }

    /// Issue 15: `x, 203.0.113.9` made the load balancer the client, which passed the
    /// `/metrics` allow list.
    #[test]
    fn garbage_left_of_the_client_is_never_reached() {
        let trusted = nets(&["127.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "x, 203.0.113.9")]);
        let c = ClientInfo::resolve(peer("127.0.0.1"), false, &h, &trusted);
        assert_eq!(c.ip, ip("203.0.113.9"));
        assert_eq!(c.source, ClientSource::Chain);
        assert!(!c.is_within(&nets(&["127.0.0.0/8"])));
        assert_eq!(c.forwarded_for, "203.0.113.9, 127.0.0.1");
    }

    #[test]
    fn garbage_where_the_client_should_be_breaks_the_chain() {
        let trusted = nets(&["127.0.0.0/8", "10.0.0.0/8"]);
        let allow = nets(&["127.0.0.0/8", "10.0.0.0/8", "203.0.113.0/24"]);
        for (chain, client) in [
            ("203.0.113.9, x", "127.0.0.1"),
            ("203.0.113.9, , 10.0.0.5", "10.0.0.5"),
            ("203.0.113.9, unknown, 10.0.0.5, 10.0.0.6", "10.0.0.5"),
            ("203.0.113.9, 10.0.0.5:99999", "127.0.0.1"),
        ] {
            let h = headers(&[("x-forwarded-for", chain)]);
            let c = ClientInfo::resolve(peer("127.0.0.1"), false, &h, &trusted);
            assert_eq!(
                (c.ip, c.source),
                (ip(client), ClientSource::Broken),
                "{chain}"
            );
            assert!(!c.is_within(&allow), "{chain}");
        }
        // A value that is not ASCII is not skipped either.
        let mut h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xfe").unwrap());
        let c = ClientInfo::resolve(peer("127.0.0.1"), false, &h, &trusted);
        assert_eq!((c.ip, c.source), (ip("127.0.0.1"), ClientSource::Broken));
        assert_eq!(c.forwarded_for, "127.0.0.1");
    }

    #[test]
    fn chain_entries_may_carry_ports_and_all_trusted_means_the_leftmost() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:443, 198.51.100.7:8080")]);
        let c = ClientInfo::resolve(peer("10.0.0.1"), false, &h, &trusted);
        assert_eq!(c.ip, ip("198.51.100.7"));
        let h = headers(&[("x-forwarded-for", "9.9.9.9, [2001:db8::1]:443")]);
        let c = ClientInfo::resolve(peer("10.0.0.1"), false, &h, &trusted);
        assert_eq!(c.ip, ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "10.0.0.7, ::ffff:10.0.0.5")]);
        let c = ClientInfo::resolve(peer("10.0.0.1"), false, &h, &trusted);
        assert_eq!((c.ip, c.source), (ip("10.0.0.7"), ClientSource::Chain));
        assert!(c.is_within(&trusted));
        for bad in [
            "1.2.3.4:+80",
            "1.2.3.4:",
            "[::1",
            "[::1]x",
            "::1:80x",
            "fe80::1%eth0",
            "",
        ] {
            assert_eq!(parse_node(bad), None, "{bad}");
        }
        assert_eq!(parse_node(" [::1] "), Some(ip("::1")));
    }

    #[test]
    fn a_trusted_peer_without_a_chain_is_the_client() {
        let trusted = nets(&["127.0.0.0/8"]);
        let c = ClientInfo::resolve(peer("127.0.0.1"), false, &HeaderMap::new(), &trusted);
        assert_eq!((c.ip, c.source), (ip("127.0.0.1"), ClientSource::Peer));
        assert!(c.is_within(&trusted));
    }

    #[test]
    fn hop_by_hop_and_named_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("connection", "x-other-hop"),
            ("x-secret-hop", "1"),
            ("x-other-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn own_cookie_is_removed_and_others_kept() {
        let mut h = headers(&[("cookie", "a=1; __Host-pbxgate=SECRET"), ("cookie", "b=2")]);
        strip_cookie(&mut h, "__Host-pbxgate");
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
        // The login-attempt cookie is ours too; look-alikes are not, nor is a cookie that
        // is not UTF-8 or has no name, which pass as they came.
        let mut h = headers(&[(
            "cookie",
            "__Host-pbxgate-login=STATE; __Host-pbxgate-loginx=1; x__Host-pbxgate=2; flag",
        )]);
        h.append(header::COOKIE, HeaderValue::from_bytes(b"n=\xe9").unwrap());
        strip_cookie(&mut h, "__Host-pbxgate");
        assert_eq!(
            h.get("cookie").unwrap().as_bytes(),
            b"__Host-pbxgate-loginx=1; x__Host-pbxgate=2; flag; n=\xe9"
        );
        let mut h = headers(&[("cookie", "__Host-pbxgate=SECRET")]);
        strip_cookie(&mut h, "__Host-pbxgate");
        assert!(!h.contains_key("cookie"));
        // One header without ours goes on byte for byte; two are joined into one.
        let mut h = headers(&[("cookie", " a=1 ;; b=2")]);
        strip_cookie(&mut h, "__Host-pbxgate");
        assert_eq!(h.get("cookie").unwrap(), " a=1 ;; b=2");
        let mut h = headers(&[("cookie", "a=1"), ("cookie", "b=2")]);
        strip_cookie(&mut h, "__Host-pbxgate");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
    }

    #[test]
    fn navigation_detection() {
        let nav = |pairs: &[(&str, &str)], m: Method| is_navigation(&m, &headers(pairs));
        assert!(nav(&[("accept", "text/html,*/*")], Method::GET));
        assert!(nav(&[("sec-fetch-mode", "navigate")], Method::GET));
        assert!(!nav(
            &[("sec-fetch-mode", "cors"), ("accept", "text/html")],
            Method::GET
        ));
        assert!(!nav(&[("accept", "application/json")], Method::GET));
        assert!(!nav(&[("accept", "text/html")], Method::POST));
        assert!(!nav(
            &[
                ("accept", "text/html"),
                ("x-requested-with", "XMLHttpRequest")
            ],
            Method::GET
        ));
        assert!(!nav(
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("accept", "text/html")
            ],
            Method::GET
        ));
    }

    /// Property tests: the forwarding chain and cookie stripping (the path check's are in
    /// `paths`).
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn trusted() -> Vec<IpNet> {
            nets(&["10.0.0.0/8", "fd00::/8"])
        }

        fn trusted_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![
                any::<u32>().prop_map(|n| IpAddr::from([
                    10,
                    (n >> 16) as u8,
                    (n >> 8) as u8,
                    n as u8
                ])),
                any::<u128>().prop_map(|n| IpAddr::V6(std::net::Ipv6Addr::from(
                    (0xfd_u128 << 120) | (n >> 8)
                ))),
            ]
        }

        fn outside_ip() -> impl Strategy<Value = IpAddr> {
            prop_oneof![any::<IpAddr>(), trusted_ip()].prop_filter("not trusted", |ip| {
                !trusted().iter().any(|n| n.contains(&ip.to_canonical()))
            })
        }

        /// An address as a proxy may write it (with a port, with spaces), or anything else.
        fn entry() -> impl Strategy<Value = String> {
            let written = (
                prop_oneof![trusted_ip(), outside_ip()],
                any::<Option<u16>>(),
                " {0,2}",
            )
                .prop_map(|(ip, port, pad)| match (ip, port) {
                    (IpAddr::V6(v6), Some(p)) => format!("{pad}[{v6}]:{p}"),
                    (ip, Some(p)) => format!("{pad}{ip}:{p}{pad}"),
                    (ip, None) => format!("{pad}{ip}{pad}"),
                });
            prop_oneof![3 => written, 1 => "[ -+\\--~]{0,12}"]
        }

        fn chain_headers(entries: &[String]) -> HeaderMap {
            let mut h = HeaderMap::new();
            if !entries.is_empty() {
                h.insert(
                    X_FORWARDED_FOR,
                    HeaderValue::from_str(&entries.join(",")).unwrap(),
                );
            }
            h
        }

        proptest! {
            /// Whatever a client writes into the chain, the hop that first saw it names it.
            #[test]
            fn what_the_client_writes_does_not_change_who_it_is(
                written in prop::collection::vec(entry(), 0..6),
                client in outside_ip(),
                hops in prop::collection::vec(trusted_ip(), 0..3),
                peer in trusted_ip(),
            ) {
                let mut entries = written;
                entries.push(client.to_string());
                entries.extend(hops.iter().map(IpAddr::to_string));
                let c = ClientInfo::resolve(SocketAddr::new(peer, 1), false, &chain_headers(&entries), &trusted());
                prop_assert_eq!((c.ip, c.source), (client.to_canonical(), ClientSource::Chain));
            }

            /// The client is a trusted proxy only when the whole chain says so (or the peer
            /// named nobody); an untrusted peer is always the client.
            #[test]
            fn a_trusted_address_is_the_client_only_when_the_chain_says_so(
                entries in prop::collection::vec(entry(), 0..8),
                peer in prop_oneof![trusted_ip(), outside_ip()],
            ) {
                let h = chain_headers(&entries);
                let c = ClientInfo::resolve(SocketAddr::new(peer, 1), false, &h, &trusted());
                let peer = peer.to_canonical();
                if !trusted().iter().any(|n| n.contains(&peer)) {
                    prop_assert_eq!((c.ip, c.source), (peer, ClientSource::Peer));
                } else if c.is_within(&trusted()) && c.ip != peer {
                    let all_trusted = entries.iter().all(|e| {
                        parse_node(e).is_some_and(|ip| trusted().iter().any(|n| n.contains(&ip)))
                    });
                    prop_assert!(all_trusted, "{entries:?} made {} the client", c.ip);
                }
                if c.source == ClientSource::Broken {
                    prop_assert!(!c.is_within(&nets(&["0.0.0.0/0", "::/0"])));
                }
            }

            /// Neither of pbxgate's cookies reaches 3CX; every other pair does, in order.
            #[test]
            fn only_pbxgate_cookies_are_stripped(
                pairs in prop::collection::vec(
                    (
                        prop_oneof![
                            prop::sample::select(vec![
                                "__Host-pbxgate", "__Host-pbxgate-login", "__Host-pbxgate-loginx",
                                "__host-pbxgate", "x__Host-pbxgate", "",
                            ]).prop_map(str::to_string),
                            "[a-zA-Z0-9_-]{1,8}",
                        ],
                        "[!#-+--:<-\\[\\]-~]{0,12}",
                    ),
                    0..8,
                ),
            ) {
                // A nameless cookie is sent as its value alone, which then holds no `=`.
                let pairs: Vec<(String, String)> = pairs
                    .into_iter()
                    .map(|(k, v)| if k.is_empty() { (k, v.replace('=', "")) } else { (k, v) })
                    .collect();
                let joined: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| if k.is_empty() { v.clone() } else { format!("{k}={v}") })
                    .collect();
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&joined.join("; ")) {
                    h.insert(header::COOKIE, v);
                }
                strip_cookie(&mut h, "__Host-pbxgate");
                let kept: Vec<(Vec<u8>, Vec<u8>)> = h
                    .get_all(header::COOKIE)
                    .iter()
                    .flat_map(|v| split_pairs(v.as_bytes()))
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                let expected: Vec<(Vec<u8>, Vec<u8>)> = pairs
                    .iter()
                    .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
                    .filter(|(k, _)| k != "__Host-pbxgate" && k != "__Host-pbxgate-login")
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect();
                prop_assert_eq!(kept, expected);
            }

            #[test]
            fn any_forwarded_for_bytes_resolve_without_panic(
                values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..4),
            ) {
                let mut h = HeaderMap::new();
                for v in values.iter().filter_map(|v| HeaderValue::from_bytes(v).ok()) {
                    h.append(X_FORWARDED_FOR, v);
                }
                let c = ClientInfo::resolve(peer("10.0.0.1"), false, &h, &trusted());
                prop_assert!(c.forwarded_for.to_str().is_ok());
            }
        }
    }
}
