//! The Microsoft Graph client (app-only): a cached token from the client-credentials grant,
//! paging (`@odata.nextLink`), delta (`@odata.deltaLink`, `@removed`, resync on 410),
//! JSON `$batch` (≤ 20 requests, per-request status), retries on 429/503/504 honouring
//! `Retry-After` (fractional seconds too) with capped, jittered backoff, at most four
//! concurrent requests per mailbox (Outlook's limit), and typed errors.
//!
//! Wire formats: `shared/notes/graph-entra.md` §2–3.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use crate::clock::{Clock, UnixTime};
use crate::oidc::{OidcError, Provider};
use pbxgate_wire::graph::ErrorBody;

/// Outlook allows four concurrent requests per mailbox and app.
const PER_MAILBOX: usize = 4;
/// JSON batching takes at most 20 requests.
pub const BATCH_MAX: usize = 20;
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("{0} has no Exchange Online mailbox (MailboxNotEnabledForRESTAPI)")]
    MailboxNotEnabled(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("access denied (an application access policy?): {0}")]
    AccessDenied(String),
    #[error("still throttled after {0} attempts")]
    Throttled(u32),
    #[error("the delta token is no longer valid; a full resync is needed")]
    SyncReset,
    #[error("Graph answered {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("Graph is unreachable: {0}")]
    Unreachable(String),
    #[error("no Graph token: {0}")]
    Token(#[from] OidcError),
    #[error("unexpected Graph answer: {0}")]
    Decode(String),
}

/// Retry behaviour for throttling and transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

/// For calls a signing-in user waits on: one retry, short waits.
const INTERACTIVE: RetryPolicy = RetryPolicy {
    attempts: 2,
    base: Duration::from_millis(200),
    cap: Duration::from_secs(2),
};

impl RetryPolicy {
    /// `Retry-After` when given (plus up to 10% jitter), else capped exponential backoff
    /// with full jitter.
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<f64>) -> Duration {
        let jitter = jitter_fraction();
        match retry_after {
            Some(s) => {
                let s = s.clamp(0.0, self.cap.as_secs_f64());
                Duration::from_secs_f64(s * (1.0 + 0.1 * jitter))
            }
            None => {
                let exp = self.base.saturating_mul(1u32 << attempt.min(16));
                exp.min(self.cap).mul_f64(jitter.max(0.1))
            }
        }
    }
}

fn jitter_fraction() -> f64 {
    crate::ids::random::<8>()
        .map(|b| (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64)
        .unwrap_or(0.5)
}

/// `Retry-After` in seconds; Graph sends integers, some services fractions.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<f64> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 503 | 504)
}

/// Maps Graph's error body to a typed error.
fn classify(status: u16, body: &[u8], what: &str) -> GraphError {
    let (code, message) = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| (b.error.code, b.error.message))
        .unwrap_or_else(|_| {
            (
                String::new(),
                String::from_utf8_lossy(body).chars().take(200).collect(),
            )
        });
    match (status, code.as_str()) {
        (_, "MailboxNotEnabledForRESTAPI") => GraphError::MailboxNotEnabled(what.to_string()),
        (_, "syncStateNotFound") | (410, _) => GraphError::SyncReset,
        (404, _) => GraphError::NotFound(what.to_string()),
        (403, "ErrorAccessDenied") => GraphError::AccessDenied(message),
        _ => GraphError::Api {
            status,
            code,
            message,
        },
    }
}

/// One page of a collection.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta: Option<String>,
}

/// The outcome of a delta round: changed objects, removed ones, and the link for next time.
#[derive(Debug)]
pub struct Delta<T> {
    pub changed: Vec<T>,
    pub removed: Vec<Removed>,
    pub delta_link: String,
}

/// An object delta reports as removed: `reason` is `changed` (soft-deleted, restorable) or
/// `deleted` (gone for good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub id: String,
    pub reason: String,
}

/// One request inside a `$batch`.
#[derive(Debug, Clone, Serialize)]
pub struct BatchRequest {
    pub id: String,
    pub method: String,
    /// Relative to the version root, e.g. `/users/{id}/photo/$value`.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::HashMap<String, String>>,
}

/// One answer inside a `$batch`.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchResponse {
    pub id: String,
    pub status: u16,
    #[serde(default)]
    pub headers: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub body: Value,
}

impl BatchResponse {
    /// The body of a binary answer (base64 in the batch envelope).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        self.body.as_str().and_then(|s| STANDARD.decode(s).ok())
    }

    /// The error this answer stands for, if any.
    pub fn error(&self, what: &str) -> Option<GraphError> {
        (self.status >= 400).then(|| classify(self.status, self.body.to_string().as_bytes(), what))
    }
}

pub struct GraphClient {
    http: reqwest::Client,
    root: String,
    scope: String,
    provider: Arc<Provider>,
    clock: Arc<dyn Clock>,
    token: Mutex<Option<(SecretString, UnixTime)>>,
    mailboxes: moka::sync::Cache<String, Arc<Semaphore>>,
    retry: RetryPolicy,
}

impl GraphClient {
    pub fn new(
        graph_url: &url::Url,
        provider: Arc<Provider>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GraphError> {
        crate::tls::provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("pbxgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Unreachable(e.to_string()))?;
        let base = graph_url.as_str().trim_end_matches('/');
        Ok(Self {
            http,
            root: format!("{base}/v1.0"),
            scope: format!("{base}/.default"),
            provider,
            clock,
            token: Mutex::new(None),
            mailboxes: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// An absolute URL for a path under `/v1.0` (links from Graph are absolute already).
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.root, path_or_url)
        }
    }

    /// The app-only token, renewed five minutes before it expires, one renewal at a time.
    async fn token(&self) -> Result<SecretString, GraphError> {
        let mut slot = self.token.lock().await;
        let now = self.clock.now();
        if let Some((t, exp)) = slot.as_ref()
            && *exp - now > TOKEN_MARGIN
        {
            return Ok(t.clone());
        }
        let (t, lifetime) = self.provider.client_credentials(&self.scope).await?;
        *slot = Some((t.clone(), now + lifetime));
        Ok(t)
    }

    async fn drop_token(&self) {
        *self.token.lock().await = None;
    }

    /// Sends a request with retries; `mailbox` names the mailbox the call touches, for the
    /// per-mailbox concurrency limit. Returns the status, headers and body.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        mailbox: Option<&str>,
    ) -> Result<(u16, http::HeaderMap, bytes::Bytes), GraphError> {
        self.send_with(&self.retry, method, url, body, mailbox)
            .await
    }

    async fn send_with(
        &self,
        retry: &RetryPolicy,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        mailbox: Option<&str>,
    ) -> Result<(u16, http::HeaderMap, bytes::Bytes), GraphError> {
        let _permit = match mailbox {
            Some(m) => {
                let sem = self
                    .mailboxes
                    .get_with(m.to_lowercase(), || Arc::new(Semaphore::new(PER_MAILBOX)));
                Some(
                    sem.acquire_owned()
                        .await
                        .map_err(|e| GraphError::Decode(e.to_string()))?,
                )
            }
            None => None,
        };
        let mut renewed = false;
        for attempt in 0..retry.attempts {
            let token = self.token().await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose_secret());
            if let Some(b) = body {
                req = req.json(b);
            }
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt + 1 < retry.attempts && (e.is_connect() || e.is_timeout()) => {
                    tokio::time::sleep(retry.delay(attempt, None)).await;
                    continue;
                }
                Err(e) => return Err(GraphError::Unreachable(crate::errors::error_chain(&e))),
            };
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            if status == StatusCode::UNAUTHORIZED.as_u16() && !renewed {
                renewed = true;
                self.drop_token().await;
                continue;
            }
            if retryable(status) && attempt + 1 < retry.attempts {
                let wait = retry.delay(attempt, retry_after(&headers));
                tracing::debug!(status, ?wait, url, "Graph throttled or busy; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            let bytes = res
                .bytes()
                .await
                .map_err(|e| GraphError::Unreachable(e.to_string()))?;
            if retryable(status) {
                return Err(GraphError::Throttled(retry.attempts));
            }
            return Ok((status, headers, bytes));
        }
        Err(GraphError::Throttled(retry.attempts))
    }

    /// GET a JSON resource.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        mailbox: Option<&str>,
    ) -> Result<T, GraphError> {
        let url = self.url(path);
        let (status, _, body) = self.send(reqwest::Method::GET, &url, None, mailbox).await?;
        if status >= 400 {
            return Err(classify(status, &body, path));
        }
        serde_json::from_slice(&body).map_err(|e| GraphError::Decode(format!("{path}: {e}")))
    }

    /// [`Self::get`] for a user waiting on the answer (sign-in): one retry, short waits.
    pub async fn get_interactive<T: DeserializeOwned>(&self, path: &str) -> Result<T, GraphError> {
        let url = self.url(path);
        let (status, _, body) = self
            .send_with(&INTERACTIVE, reqwest::Method::GET, &url, None, None)
            .await?;
        if status >= 400 {
            return Err(classify(status, &body, path));
        }
        serde_json::from_slice(&body).map_err(|e| GraphError::Decode(format!("{path}: {e}")))
    }

    /// Which of `group_ids` the user is a (transitive) member of (`checkMemberGroups`, 20 ids
    /// a call); for `allowed_groups` when the ID token only signals group overage.
    pub async fn member_groups(
        &self,
        user_id: &str,
        group_ids: &[String],
    ) -> Result<Vec<String>, GraphError> {
        #[derive(Deserialize)]
        struct Ids {
            value: Vec<String>,
        }
        let path = format!("/users/{user_id}/checkMemberGroups");
        let mut found = Vec::new();
        for chunk in group_ids.chunks(20) {
            let body = serde_json::json!({ "groupIds": chunk });
            let url = self.url(&path);
            let (status, _, bytes) = self
                .send_with(&INTERACTIVE, reqwest::Method::POST, &url, Some(&body), None)
                .await?;
            if status >= 400 {
                return Err(classify(status, &bytes, &path));
            }
            let ids: Ids = serde_json::from_slice(&bytes)
                .map_err(|e| GraphError::Decode(format!("{path}: {e}")))?;
            found.extend(ids.value);
        }
        Ok(found)
    }

    /// GET binary content (a photo); `None` when Graph says there is none (404).
    pub async fn get_bytes(
        &self,
        path: &str,
        mailbox: Option<&str>,
    ) -> Result<Option<Vec<u8>>, GraphError> {
        let url = self.url(path);
        let (status, _, body) = self.send(reqwest::Method::GET, &url, None, mailbox).await?;
        match status {
            200..=299 => Ok(Some(body.to_vec())),
            404 => Ok(None),
            _ => Err(classify(status, &body, path)),
        }
    }

    /// Every item of a collection, following `@odata.nextLink`.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        mailbox: Option<&str>,
    ) -> Result<Vec<T>, GraphError> {
        let mut items = Vec::new();
        let mut next = Some(self.url(path));
        while let Some(url) = next {
            let page: Page<T> = self.get(&url, mailbox).await?;
            items.extend(page.value);
            next = page.next;
        }
        Ok(items)
    }

    /// One delta round from `start` (the first query, or the last round's delta link),
    /// following next links to the new delta link. `GraphError::SyncReset` means: start over
    /// with the first query.
    pub async fn delta<T: DeserializeOwned>(
        &self,
        start: &str,
        mailbox: Option<&str>,
    ) -> Result<Delta<T>, GraphError> {
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        let mut next = self.url(start);
        loop {
            let page: Page<Value> = self.get(&next, mailbox).await?;
            for item in page.value {
                match item.get("@removed") {
                    Some(r) => removed.push(Removed {
                        id: item["id"].as_str().unwrap_or_default().to_string(),
                        reason: r["reason"].as_str().unwrap_or("deleted").to_string(),
                    }),
                    None => changed.push(
                        serde_json::from_value(item)
                            .map_err(|e| GraphError::Decode(format!("delta item: {e}")))?,
                    ),
                }
            }
            match (page.next, page.delta) {
                (Some(n), _) => next = n,
                (None, Some(delta_link)) => {
                    return Ok(Delta {
                        changed,
                        removed,
                        delta_link,
                    });
                }
                (None, None) => {
                    return Err(GraphError::Decode(
                        "a delta page without next or delta link".into(),
                    ));
                }
            }
        }
    }

    /// Runs requests through `$batch`, 20 at a time; sub-requests answered 429/503/504 are
    /// sent again (in a later batch, after their `Retry-After`). Answers come back in the
    /// order of `requests`.
    pub async fn batch(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<BatchResponse>, GraphError> {
        let mut done: std::collections::HashMap<String, BatchResponse> = Default::default();
        let order: Vec<String> = requests.iter().map(|r| r.id.clone()).collect();
        let mut pending = requests;
        for attempt in 0..self.retry.attempts {
            let mut again = Vec::new();
            let mut wait: Option<f64> = None;
            for chunk in pending.chunks(BATCH_MAX) {
                let body = serde_json::json!({ "requests": chunk });
                let url = self.url("/$batch");
                let (status, _, bytes) = self
                    .send(reqwest::Method::POST, &url, Some(&body), None)
                    .await?;
                if status >= 400 {
                    return Err(classify(status, &bytes, "$batch"));
                }
                #[derive(Deserialize)]
                struct Envelope {
                    responses: Vec<BatchResponse>,
                }
                let env: Envelope = serde_json::from_slice(&bytes)
                    .map_err(|e| GraphError::Decode(format!("$batch: {e}")))?;
                for r in env.responses {
                    if retryable(r.status) && attempt + 1 < self.retry.attempts {
                        let ra = r
                            .headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                            .and_then(|(_, v)| v.trim().parse::<f64>().ok());
                        wait = Some(wait.unwrap_or(0.0).max(ra.unwrap_or(0.0)));
                        if let Some(req) = chunk.iter().find(|q| q.id == r.id) {
                            again.push(req.clone());
                        }
                    } else {
                        done.insert(r.id.clone(), r);
                    }
                }
            }
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(self.retry.delay(attempt, wait)).await;
            pending = again;
        }
        order
            .into_iter()
            .map(|id| {
                done.remove(&id).ok_or_else(|| {
                    GraphError::Decode(format!("$batch: no answer for request {id}"))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_with_fractions() {
        let p = RetryPolicy::default();
        let d = p.delay(0, Some(0.25));
        assert!(
            d >= Duration::from_millis(250) && d <= Duration::from_millis(275),
            "{d:?}"
        );
        let d = p.delay(3, None);
        assert!(d <= Duration::from_secs(4), "{d:?}");
        assert!(p.delay(30, None) <= p.cap);
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "1.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(1.5));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn errors_are_typed() {
        let body = br#"{"error":{"code":"MailboxNotEnabledForRESTAPI","message":"The mailbox is either inactive, soft-deleted, or is hosted on-premise."}}"#;
        assert!(matches!(
            classify(404, body, "u"),
            GraphError::MailboxNotEnabled(_)
        ));
        let body =
            br#"{"error":{"code":"ErrorAccessDenied","message":"Access to OData is disabled."}}"#;
        assert!(matches!(
            classify(403, body, "u"),
            GraphError::AccessDenied(_)
        ));
        let body = br#"{"error":{"code":"syncStateNotFound","message":"gone"}}"#;
        assert!(matches!(classify(410, body, "u"), GraphError::SyncReset));
        assert!(matches!(classify(404, b"{}", "u"), GraphError::NotFound(_)));
    }
}
