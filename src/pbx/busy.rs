//! A busy 3CX: an XAPI call answered 429, or 503 with `Retry-After`, is sent again after the
//! wait 3CX asks for (capped). 3CX publishes no rate or concurrency limit, so how a real PBX
//! answers too many calls at once is not known; these are the answers HTTP has for it. A 503
//! without `Retry-After` is an outage and is not retried here.

use std::time::Duration;

use super::{Caller, PbxClient, PbxError};
use crate::graph::{RetryPolicy, retry_after};

/// How often and how long a busy answer is waited out.
const BUSY_RETRY: RetryPolicy = RetryPolicy {
    attempts: 8,
    base: Duration::from_millis(250),
    cap: Duration::from_secs(30),
};

impl PbxClient {
    /// One XAPI call as `caller`, busy answers waited out (the last one is returned).
    pub(super) async fn send_busy(
        &self,
        caller: Caller<'_>,
        method: reqwest::Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PbxError> {
        let mut attempt = 0;
        loop {
            let res = self
                .send_xapi_raw(caller, method.clone(), path, &build)
                .await?;
            let status = res.status().as_u16();
            let wait = busy(status, retry_after(res.headers()));
            attempt += 1;
            match wait {
                Some(after) if attempt < BUSY_RETRY.attempts => {
                    let wait = BUSY_RETRY.delay(attempt - 1, after);
                    tracing::debug!(status, ?wait, path, "3CX busy; retrying");
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(res),
            }
        }
    }
}

/// Whether an answer says "busy, come back", and the wait asked for (seconds).
fn busy(status: u16, after: Option<f64>) -> Option<Option<f64>> {
    match status {
        429 => Some(after),
        503 => after.map(Some),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_429_and_a_503_with_retry_after_are_busy() {
        assert_eq!(busy(429, None), Some(None));
        assert_eq!(busy(429, Some(2.0)), Some(Some(2.0)));
        assert_eq!(busy(503, Some(1.0)), Some(Some(1.0)));
        assert_eq!(
            busy(503, None),
            None,
            "a 503 without Retry-After is an outage"
        );
        assert_eq!(busy(500, Some(1.0)), None);
    }
}
