//! The API client's token (client credentials), shared by the replicas through the store.
//!
//! 3CX keeps one live token per API client: a fetch invalidates the token fetched before.
//! Replicas share one `[pbx] client_id`, so each holding its own token would keep killing the
//! others' (every switch of replica a refused call and a new token; concurrent calls failing
//! with 401). Instead the token lives in the store (`pbx_api_token`), sealed under a key
//! derived from the client secret and id (a copy of the store opens nothing; a changed secret
//! just means a fresh fetch), with its expiry and a version. Each replica keeps a copy in
//! memory and uses it while it is fresh. To renew it (expired, or refused with 401) a replica
//! first reads the store: a newer version there is the live token. Only when the store holds
//! nothing newer does it fetch, and then only under the row's fetch lease, taken with a
//! conditional write on the version it read: one replica at a time asks 3CX, the others wait
//! briefly and read its token from the store.
//!
//! When the store cannot be reached, a replica fetches a token for itself (and says so once)
//! rather than failing every XAPI call: the store is down for all replicas at once, so this
//! is the behaviour from before the token was shared — each replica alone works, several
//! replicas take turns killing each other's token and a refused call is repeated once with a
//! new one, so most calls still succeed until the store is back. Failing instead would stop
//! the user sync and sign-in checks for the whole outage.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{AccessToken, PbxClient, PbxError};
use crate::clock::UnixTime;
use crate::config::PbxConfig;
use crate::ids;
use crate::seal::{SealError, SealedBox};
use crate::store::{ApiTokenRow, Store, StoreError};

/// The HKDF salt of the key that seals the token: what the key is for.
const PURPOSE: &str = "pbxgate pbx_api_token v1";
/// After a store failure, how long (seconds) a replica keeps to tokens of its own before it
/// tries the store again: every try waits for the store's connection timeout.
const STORE_RETRY_SECS: i64 = 30;
/// Waits between reads of the store while another replica fetches: short at first (a fetch
/// takes milliseconds), growing to this.
const POLL_MAX: Duration = Duration::from_millis(500);
const POLL_FIRST: Duration = Duration::from_millis(10);

pub(super) struct ApiTokens {
    /// The API client id: the row's key, and bound into the seal.
    id: String,
    sealer: SealedBox,
    store: Store,
    /// This replica's name in the lease (random: replicas may share a host and a pid).
    holder: String,
    /// How long a lease lasts: longer than a fetch can take.
    lease_secs: i64,
    held: tokio::sync::Mutex<Option<Held>>,
    /// Until when the store is left alone after it failed (0: the store works).
    store_down_until: AtomicI64,
}

/// This replica's copy of the token.
struct Held {
    token: AccessToken,
    /// The stored version of `token` (`None`: fetched without the store).
    version: Option<i64>,
    /// 3CX refused `token` with 401.
    refused: bool,
}

impl Held {
    /// Marks the token refused if it is `failed`: a 401 that comes back after another call
    /// already replaced the token must not send the new one after it.
    fn refuse(&mut self, failed: &SecretString) {
        if ids::secrets_equal(self.token.token.expose_secret(), failed.expose_secret()) {
            self.refused = true;
        }
    }
}

impl ApiTokens {
    pub(super) fn new(config: &PbxConfig, store: Store) -> Result<Self, PbxError> {
        let fetch = config.connect_timeout.get() + config.response_timeout.get();
        let holder = ids::hex(&ids::random::<12>().map_err(SealError::from)?);
        Ok(Self {
            id: config.client_id.clone(),
            sealer: SealedBox::derive(PURPOSE, &config.client_secret, &config.client_id),
            store,
            holder,
            lease_secs: fetch.as_secs() as i64 + 5,
            held: tokio::sync::Mutex::new(None),
            store_down_until: AtomicI64::new(0),
        })
    }

    /// The stored token if it opens, is fresh by `fresh`, and is newer than `failed` (the
    /// version 3CX just refused).
    fn adoptable(
        &self,
        row: &ApiTokenRow,
        failed: Option<i64>,
        fresh: impl Fn(&AccessToken) -> bool,
    ) -> Option<Held> {
        if failed.is_some_and(|f| row.version <= f) {
            return None;
        }
        let token = match self.sealer.open(row.sealed.as_deref()?, self.id.as_bytes()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "the stored 3CX API token does not open (was pbx.client_secret changed?); fetching a new one");
                return None;
            }
        };
        let token = AccessToken {
            token,
            expires_at: row.expires_at,
        };
        fresh(&token).then_some(Held {
            token,
            version: Some(row.version),
            refused: false,
        })
    }

    fn store_usable(&self, now: UnixTime) -> bool {
        self.store_down_until.load(Ordering::Relaxed) <= now
    }

    fn store_failed(&self, e: &StoreError, now: UnixTime) {
        if self
            .store_down_until
            .swap(now + STORE_RETRY_SECS, Ordering::Relaxed)
            == 0
        {
            tracing::warn!(error = %e, "the store is unreachable: this replica uses a 3CX API token of its own until it is back (other replicas' tokens stop working when it fetches one)");
        }
    }

    fn store_worked(&self) {
        if self.store_down_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!("the store is back: the 3CX API token is shared again");
        }
    }
}

impl PbxClient {
    /// The API client's bearer token: this replica's copy while it is fresh and not refused,
    /// else the live one from the store, else a new one (see the module doc).
    pub async fn api_token(&self) -> Result<SecretString, PbxError> {
        let mut held = self.api.held.lock().await;
        if let Some(h) = held.as_ref().filter(|h| !h.refused && self.fresh(&h.token)) {
            return Ok(h.token.token.clone());
        }
        let failed = held.as_ref().filter(|h| h.refused).and_then(|h| h.version);
        let renewed = self.renew_api_token(failed).await?;
        let token = renewed.token.token.clone();
        *held = Some(renewed);
        Ok(token)
    }

    /// A token in place of the held one (`failed`: the stored version 3CX refused): through
    /// the store while it works, else one of this replica's own.
    async fn renew_api_token(&self, failed: Option<i64>) -> Result<Held, PbxError> {
        if self.api.store_usable(self.clock.now()) {
            match self.shared_token(failed).await {
                Err(PbxError::Store(e)) => self.api.store_failed(&e, self.clock.now()),
                other => return other,
            }
        }
        Ok(Held {
            token: self.fetch_api_token().await?,
            version: None,
            refused: false,
        })
    }

    /// Marks `failed` refused (3CX answered 401 to it), unless this replica already holds
    /// another token: the next [`PbxClient::api_token`] looks for a newer one.
    pub(super) async fn drop_api_token(&self, failed: &SecretString) {
        if let Some(h) = self.api.held.lock().await.as_mut() {
            h.refuse(failed);
        }
    }

    /// The live token through the store: one stored after `failed`, or one this replica
    /// fetches under the lease, or one another replica fetches meanwhile.
    async fn shared_token(&self, failed: Option<i64>) -> Result<Held, PbxError> {
        let api = &self.api;
        let (mut waited, mut poll) = (Duration::ZERO, POLL_FIRST);
        loop {
            let row = api.store.api_token(&api.id).await?;
            api.store_worked();
            if let Some(h) = row
                .as_ref()
                .and_then(|r| api.adoptable(r, failed, |t| self.fresh(t)))
            {
                return Ok(h);
            }
            let seen = row.map(|r| r.version);
            let now = self.clock.now();
            let until = now + api.lease_secs;
            if api
                .store
                .take_api_token_lease(&api.id, seen, &api.holder, now, until)
                .await?
            {
                return self.fetch_under_lease(seen.unwrap_or(0)).await;
            }
            if waited >= Duration::from_secs(api.lease_secs as u64) {
                return Err(PbxError::TokenLeaseBusy(api.lease_secs));
            }
            tokio::time::sleep(poll).await;
            waited += poll;
            poll = (poll * 2).min(POLL_MAX);
        }
    }

    /// Fetches a token while holding the lease taken at version `leased`, and stores it (which
    /// releases the lease). A token that cannot be stored is still used, by this replica.
    async fn fetch_under_lease(&self, leased: i64) -> Result<Held, PbxError> {
        let api = &self.api;
        let token = match self.fetch_api_token().await {
            Ok(t) => t,
            Err(e) => {
                if let Err(re) = api
                    .store
                    .release_api_token_lease(&api.id, &api.holder)
                    .await
                {
                    tracing::debug!(error = %re, "cannot release the 3CX API token lease; it runs out");
                }
                return Err(e);
            }
        };
        let stored = match api
            .sealer
            .seal(token.token.expose_secret(), api.id.as_bytes())
        {
            Ok(sealed) => {
                let now = self.clock.now();
                let stored = api
                    .store
                    .store_api_token(&api.id, leased, &api.holder, &sealed, token.expires_at, now)
                    .await;
                match stored {
                    Ok(None) => {
                        tracing::debug!(
                            "the 3CX API token lease ran out before the token was stored"
                        );
                        None
                    }
                    Ok(v) => v,
                    Err(e) => {
                        api.store_failed(&e, now);
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal the 3CX API token; this replica keeps it to itself");
                None
            }
        };
        Ok(Held {
            token,
            version: stored,
            refused: false,
        })
    }

    /// `/connect/token` with the client credentials: a new token, which ends the previous one.
    async fn fetch_api_token(&self) -> Result<AccessToken, PbxError> {
        let res = self
            .http
            .post(self.url("/connect/token"))
            .form(&[
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose_secret()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .map_err(super::unreachable)?;
        let status = res.status();
        if !status.is_success() {
            let body: Option<super::OAuthError> = res.json().await.ok();
            let why = body
                .map(|b| b.error_description.unwrap_or(b.error))
                .unwrap_or_else(|| status.to_string());
            return Err(PbxError::Credentials(why));
        }
        tracing::debug!("fetched a new 3CX API token");
        self.read_token(res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_that_failed_is_marked_refused() {
        let token = |t: &str| SecretString::from(t.to_string());
        let mut held = Held {
            token: AccessToken {
                token: token("new"),
                expires_at: 0,
            },
            version: Some(2),
            refused: false,
        };
        held.refuse(&token("old"));
        assert!(!held.refused, "a late 401 of the token replaced meanwhile");
        held.refuse(&token("new"));
        assert!(held.refused);
    }
}
