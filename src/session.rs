//! Server-side sessions: a random 256-bit id in the cookie, the record in the store, a short-lived
//! moka cache in front so that a request costs no database round trip.
//!
//! The cache TTL bounds how long another replica may keep honouring a session revoked
//! elsewhere; a revocation on this replica takes effect at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use moka::sync::Cache;
use ring::digest::{SHA256, digest};

use crate::clock::{Clock, UnixTime};
use crate::config::Config;
use crate::store::{LiveSession, SessionMeta, SessionRow, Store, StoreError};
pub use pbxgate_wire::cookie::{cookie_pairs, pairs_of};

/// How long a looked-up session (or a miss) is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// `last_seen_at` is written at most this often per session (bounded by idle_timeout / 10).
const MAX_TOUCH_INTERVAL: i64 = 60;
/// Ended sessions stay this long in the store (for the audit trail), then are purged.
const KEEP_ENDED: i64 = 7 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the system random number generator failed")]
    Random,
}

/// Who a new session is for.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_key: String,
    pub upn: String,
    pub extension: String,
    pub idp_sid: Option<String>,
    pub login_hint: Option<String>,
}

/// A live, validated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_key: String,
    pub upn: String,
    pub extension: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub login_hint: Option<String>,
}

/// Why a presented session id does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Unknown,
    Revoked,
    Expired,
    Idle,
}

pub struct Sessions {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Keyed by the SHA-256 of the id (the store keeps its hex).
    cache: Cache<[u8; 32], Option<Arc<SessionRow>>>,
    cookie_name: String,
    lifetime: i64,
    idle: i64,
    /// Revocations on this replica so far: a change makes every [`Recent`] stale.
    revocations: AtomicU64,
}

/// A connection's last accepted session. A browser sends the same cookie with every request
/// of a keep-alive connection, and hashing it and looking it up again each time was most of
/// what a session check cost (`bench/callgrind.sh`). Trusted for the rest of the second it
/// was checked in (by the session clock), never past the session's own end, and not at all
/// once any session was revoked on this replica since.
#[derive(Default)]
pub struct Recent(Mutex<Option<RecentEntry>>);

struct RecentEntry {
    id: String,
    until: UnixTime,
    revocations: u64,
}

impl Recent {
    fn holds(&self, id: &str, now: UnixTime, revocations: u64) -> bool {
        let entry = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entry.as_ref().is_some_and(|e| {
            e.revocations == revocations && now < e.until && crate::ids::secrets_equal(&e.id, id)
        })
    }

    fn remember(&self, id: &str, until: UnixTime, revocations: u64) {
        let mut entry = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = entry.get_or_insert_with(|| RecentEntry {
            id: String::new(),
            until,
            revocations,
        });
        e.id.clear();
        e.id.push_str(id);
        e.until = until;
        e.revocations = revocations;
    }
}

impl Sessions {
    pub fn new(store: Store, clock: Arc<dyn Clock>, config: &Config) -> Self {
        let cache = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(CACHE_TTL)
            .support_invalidation_closures()
            .build();
        Self {
            store,
            clock,
            cache,
            cookie_name: cookie_name(config),
            lifetime: config.session.lifetime.get().as_secs() as i64,
            idle: config.session.idle_timeout.get().as_secs() as i64,
            revocations: AtomicU64::new(0),
        }
    }

    /// The cookie's name: `__Host-` prefixed when browsers reach us over https.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Starts a session; returns the id to put in the cookie (never stored as such).
    pub async fn create(&self, new: NewSession) -> Result<String, SessionError> {
        self.create_with(new, SessionMeta::default()).await
    }

    /// [`Self::create`], keeping the admin decision and the browser's address and user agent.
    pub async fn create_with(
        &self,
        new: NewSession,
        meta: SessionMeta,
    ) -> Result<String, SessionError> {
        let raw = crate::ids::random::<32>().map_err(|_| SessionError::Random)?;
        let id = URL_SAFE_NO_PAD.encode(raw);
        let now = self.clock.now();
        let row = SessionRow {
            id_hash: hash_id(&id),
            user_key: new.user_key,
            upn: new.upn,
            extension: new.extension,
            idp_sid: new.idp_sid,
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.lifetime,
            revoked_at: None,
            login_hint: new.login_hint,
        };
        self.store.insert_session_with(&row, &meta).await?;
        self.cache.insert(digest_id(&id), Some(Arc::new(row)));
        Ok(id)
    }

    /// Validates a session id from a cookie and records the activity.
    pub async fn validate(&self, id: &str) -> Result<Result<Session, Rejection>, SessionError> {
        let row = match self.live(id).await? {
            Ok(row) => row,
            Err(why) => return Ok(Err(why)),
        };
        Ok(Ok(Session {
            user_key: row.user_key.clone(),
            upn: row.upn.clone(),
            extension: row.extension.clone(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            login_hint: row.login_hint.clone(),
        }))
    }

    /// [`Sessions::validate`] for the proxy, which needs only the verdict.
    pub async fn check(&self, id: &str) -> Result<Result<(), Rejection>, SessionError> {
        Ok(self.live(id).await?.map(drop))
    }

    /// [`Sessions::check`], answered from `recent` (the connection's last accepted session)
    /// while that still holds.
    pub async fn check_on(
        &self,
        id: &str,
        recent: &Recent,
    ) -> Result<Result<(), Rejection>, SessionError> {
        // Read before the check: a revocation while it runs leaves what it remembers stale.
        let revocations = self.revocations.load(Ordering::Acquire);
        let now = self.clock.now();
        if recent.holds(id, now, revocations) {
            return Ok(Ok(()));
        }
        let row = match self.live(id).await? {
            Ok(row) => row,
            Err(why) => return Ok(Err(why)),
        };
        let until = (now + 1)
            .min(row.expires_at)
            .min(row.last_seen_at + self.idle);
        recent.remember(id, until, revocations);
        Ok(Ok(()))
    }

    /// Revocations on this replica so far; each invalidated the session cache.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    fn revoked(&self) {
        self.revocations.fetch_add(1, Ordering::AcqRel);
    }

    /// The record of a live session, its activity recorded.
    async fn live(&self, id: &str) -> Result<Result<Arc<SessionRow>, Rejection>, SessionError> {
        if !looks_like_id(id) {
            return Ok(Err(Rejection::Unknown));
        }
        let key = digest_id(id);
        let row = match self.cache.get(&key) {
            Some(cached) => cached,
            None => {
                // Boxed: store futures are large, and a future is copied whole each time
                // it moves, on every request.
                let fresh = Box::pin(self.store.session(&crate::ids::hex(&key)))
                    .await?
                    .map(Arc::new);
                self.cache.insert(key, fresh.clone());
                fresh
            }
        };
        let Some(row) = row else {
            return Ok(Err(Rejection::Unknown));
        };
        let now = self.clock.now();
        if let Some(why) = self.ended(&row, now) {
            return Ok(Err(why));
        }
        if now - row.last_seen_at >= self.touch_interval() {
            self.touch_in_background(&key, now);
            let mut touched = (*row).clone();
            touched.last_seen_at = now;
            let touched = Arc::new(touched);
            self.cache.insert(key, Some(touched.clone()));
            return Ok(Ok(touched));
        }
        Ok(Ok(row))
    }

    /// Records a session's activity without holding up its request: the row, not the write,
    /// is what lets the request in, so a slow or stopped store leaves a cached session
    /// working. The caller remembers the session as touched either way, so a failing store
    /// is asked once per interval, not on every request (the next interval writes again).
    fn touch_in_background(&self, key: &[u8; 32], now: UnixTime) {
        let (store, id_hash) = (self.store.clone(), crate::ids::hex(key));
        tokio::spawn(async move {
            if let Err(e) = store.touch_session(&id_hash, now).await {
                tracing::warn!(error = %e, "session activity not recorded");
            }
        });
    }

    fn ended(&self, row: &SessionRow, now: UnixTime) -> Option<Rejection> {
        if row.revoked_at.is_some() {
            Some(Rejection::Revoked)
        } else if now >= row.expires_at {
            Some(Rejection::Expired)
        } else if now - row.last_seen_at >= self.idle {
            Some(Rejection::Idle)
        } else {
            None
        }
    }

    fn touch_interval(&self) -> i64 {
        (self.idle / 10).clamp(1, MAX_TOUCH_INTERVAL)
    }

    /// Ends one session (sign-out).
    ///
    /// The session leaves this replica's cache at once, also when the store write fails: a
    /// cached session must not outlive its sign-out during an outage (the same holds for
    /// the per-user revocations below).
    pub async fn revoke(&self, id: &str) -> Result<bool, SessionError> {
        let key = digest_id(id);
        let found = self
            .store
            .revoke_session(&crate::ids::hex(&key), self.clock.now())
            .await;
        self.cache.invalidate(&key);
        self.revoked();
        Ok(found?)
    }

    /// What the sign-in recorded beside session `id` (the admin decision, the browser).
    pub async fn meta(&self, id: &str) -> Result<Option<SessionMeta>, SessionError> {
        if !looks_like_id(id) {
            return Ok(None);
        }
        Ok(self.store.session_meta(&hash_id(id)).await?)
    }

    /// Ends the session stored under `id_hash` (the admin console names sessions by it);
    /// returns whether a live one was found.
    pub async fn revoke_hash(&self, id_hash: &str) -> Result<bool, SessionError> {
        let found = self.store.revoke_session(id_hash, self.clock.now()).await;
        let owned = id_hash.to_string();
        let _ = self
            .cache
            .invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|r| r.id_hash == owned));
        self.revoked();
        Ok(found?)
    }

    /// The live sessions with their [`SessionMeta`], for the admin console.
    pub async fn listed(
        &self,
        limit: i64,
    ) -> Result<Vec<crate::store::AdminSessionRow>, SessionError> {
        let now = self.clock.now();
        Ok(self
            .store
            .admin_sessions(now, now - self.idle, limit)
            .await?)
    }

    /// Ends every session of a user (disabled in Entra, or an admin's decision).
    pub async fn revoke_user(&self, user_key: &str) -> Result<u64, SessionError> {
        let n = self
            .store
            .revoke_user_sessions(user_key, self.clock.now())
            .await;
        let user_key = user_key.to_string();
        let _ = self
            .cache
            .invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|r| r.user_key == user_key));
        self.revoked();
        Ok(n?)
    }

    /// Ends the sessions of a user that started before `before`: Entra's "revoke sessions"
    /// (`signInSessionsValidFromDateTime`: what was issued before it is invalid).
    pub async fn revoke_user_before(
        &self,
        user_key: &str,
        before: UnixTime,
    ) -> Result<u64, SessionError> {
        let n = self
            .store
            .revoke_user_sessions_before(user_key, before, self.clock.now())
            .await;
        let user_key = user_key.to_string();
        let _ = self.cache.invalidate_entries_if(move |_, v| {
            v.as_ref()
                .is_some_and(|r| r.user_key == user_key && r.created_at < before)
        });
        self.revoked();
        Ok(n?)
    }

    /// The sessions that are live now, for the recheck against Entra.
    pub async fn live_sessions(&self) -> Result<Vec<LiveSession>, SessionError> {
        let now = self.clock.now();
        Ok(self.store.live_sessions(now, now - self.idle).await?)
    }

    /// Ends every session started in Entra session `sid` (front-channel sign-out).
    pub async fn revoke_idp_session(&self, sid: &str) -> Result<u64, SessionError> {
        let n = self.store.revoke_idp_sessions(sid, self.clock.now()).await;
        // Even when the write failed: this replica stops honouring them at once.
        let owned = sid.to_string();
        let _ = self.cache.invalidate_entries_if(move |_, v| {
            v.as_ref()
                .is_some_and(|r| r.idp_sid.as_deref() == Some(owned.as_str()))
        });
        self.revoked();
        Ok(n?)
    }

    /// Deletes sessions that ended more than a week ago.
    pub async fn purge(&self) -> Result<u64, SessionError> {
        Ok(self
            .store
            .purge_sessions(self.clock.now() - KEEP_ENDED, self.idle)
            .await?)
    }

    /// [`Self::purge`] every hour, for as long as the gateway serves.
    pub async fn purge_hourly(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            match self.purge().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "purged ended sessions"),
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
        }
    }

    /// The session id in a request's cookies, if any.
    pub fn id_from_headers<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        cookie_value(headers, &self.cookie_name)
    }

    /// `Set-Cookie` value that stores `id` in the browser.
    pub fn set_cookie(&self, id: &str) -> String {
        format!(
            "{}={id}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
            self.cookie_name, self.lifetime
        )
    }

    /// `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax",
            self.cookie_name
        )
    }
}

fn cookie_name(config: &Config) -> String {
    if config.secure_origin() {
        format!("__Host-{}", config.session.cookie_name)
    } else {
        config.session.cookie_name.clone()
    }
}

/// The SHA-256 of a session id (the cache key).
fn digest_id(id: &str) -> [u8; 32] {
    digest(&SHA256, id.as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The store key of a session id: its SHA-256, hex.
fn hash_id(id: &str) -> String {
    crate::ids::hex(&digest_id(id))
}

/// 32 bytes in unpadded base64url are 43 characters; anything else is not ours.
fn looks_like_id(id: &str) -> bool {
    id.len() == 43
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    pbxgate_wire::cookie::find(headers, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn ids_are_recognised_by_shape() {
        assert!(looks_like_id(&URL_SAFE_NO_PAD.encode([7u8; 32])));
        assert!(!looks_like_id("short"));
        assert!(!looks_like_id(&"a".repeat(42)));
        assert!(!looks_like_id(&format!("{}=", "a".repeat(42))));
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash_id("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cookie_value_finds_exact_name_across_headers() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; pbxgate_x=2"),
        );
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("pbxgate=three"),
        );
        assert_eq!(cookie_value(&h, "pbxgate"), Some("three"));
        assert_eq!(cookie_value(&h, "a"), Some("1"));
        assert_eq!(cookie_value(&h, "b"), None);
    }
}
