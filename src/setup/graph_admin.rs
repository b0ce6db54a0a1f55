//! Microsoft Graph with the administrator's delegated token: the few calls `setup` makes,
//! Graph's error body (`{"error":{"code","message"}}`, concepts/errors.md) turned into
//! [`SetupError::Graph`], and a count of the writes for the "nothing changed" summary.

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::SetupError;

pub struct AdminGraph {
    http: reqwest::Client,
    /// `{graph_url}/v1.0`
    base: String,
    token: SecretString,
    /// POST and PATCH requests sent.
    pub writes: usize,
}

/// A Graph answer outside 2xx.
pub struct Failure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn into_error(self, what: &str) -> SetupError {
        SetupError::Graph {
            what: what.to_string(),
            status: self.status,
            code: self.code,
            message: self.message,
        }
    }
}

impl AdminGraph {
    pub fn new(http: reqwest::Client, graph_url: &url::Url, token: SecretString) -> Self {
        let base = format!("{}/v1.0", graph_url.as_str().trim_end_matches('/'));
        Self {
            http,
            base,
            token,
            writes: 0,
        }
    }

    /// One request; `Ok` holds the JSON body (or `Null` for 204).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        create_if_missing: bool,
    ) -> Result<Result<Value, Failure>, SetupError> {
        if method != Method::GET {
            self.writes += 1;
        }
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
            .query(query);
        if let Some(b) = body {
            req = req.json(b);
        }
        if create_if_missing {
            req = req.header("Prefer", "create-if-missing");
        }
        let res = req
            .send()
            .await
            .map_err(|e| SetupError::Unreachable(format!("Microsoft Graph: {e}")))?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap_or_default();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(Ok(json));
        }
        Ok(Err(Failure {
            status,
            code: json["error"]["code"].as_str().unwrap_or("").to_string(),
            message: json["error"]["message"].as_str().unwrap_or("").to_string(),
        }))
    }

    /// A GET whose 404 means "not there".
    pub async fn get(
        &mut self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<Option<Value>, SetupError> {
        match self.call(Method::GET, path, query, None, false).await? {
            Ok(v) => Ok(Some(v)),
            Err(f) if f.status == 404 => Ok(None),
            Err(f) => Err(f.into_error(what)),
        }
    }

    /// A write that must succeed.
    pub async fn write(
        &mut self,
        method: Method,
        path: &str,
        body: &Value,
        create_if_missing: bool,
        what: &str,
    ) -> Result<Value, SetupError> {
        self.call(method, path, &[], Some(body), create_if_missing)
            .await?
            .map_err(|f| f.into_error(what))
    }
}
