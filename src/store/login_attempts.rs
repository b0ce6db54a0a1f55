//! Sign-ins in progress (`login_attempts`): the state, nonce and PKCE verifier that
//! `/auth/callback` must find, whichever replica started the sign-in.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError};
use crate::clock::UnixTime;

/// A sign-in in progress: what `/auth/callback` must find to accept Entra's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAttempt {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub created_at: UnixTime,
}

/// The columns of `login_attempts`, in the order [`LoginAttempt::from_row`] reads them.
const LOGIN_ATTEMPT_COLUMNS: &str = "state, nonce, pkce_verifier, return_to, created_at";

impl FromRow<'_, AnyRow> for LoginAttempt {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            state: r.try_get(0)?,
            nonce: r.try_get(1)?,
            pkce_verifier: r.try_get(2)?,
            return_to: r.try_get(3)?,
            created_at: r.try_get(4)?,
        })
    }
}

impl Store {
    pub async fn insert_login_attempt(&self, a: &LoginAttempt) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO login_attempts ({LOGIN_ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        );
        sqlx::query(&sql)
            .bind(&a.state)
            .bind(&a.nonce)
            .bind(&a.pkce_verifier)
            .bind(&a.return_to)
            .bind(a.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes and returns the attempt for `state`: a state works once, on every replica.
    pub async fn take_login_attempt(
        &self,
        state: &str,
    ) -> Result<Option<LoginAttempt>, StoreError> {
        let sql = format!(
            "DELETE FROM login_attempts WHERE state = $1 RETURNING {LOGIN_ATTEMPT_COLUMNS}"
        );
        let row = sqlx::query_as(&sql)
            .bind(state)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row)
    }

    /// Deletes attempts started before `cutoff` (abandoned sign-ins).
    pub async fn purge_login_attempts(&self, cutoff: UnixTime) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM login_attempts WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
