//! `Idempotency-Key` for writes a client may retry (attempts, questions, votes).
//!
//! The first response for (user, key) is stored in Postgres, in the same
//! transaction as the write it guards (`migrations/0003_idempotency_keys.sql`):
//! - a retry with the same key and the same request gets the stored response
//!   verbatim, with `Idempotent-Replayed: true`, and writes nothing;
//! - the same key with a different request is a 422;
//! - a concurrent duplicate waits on the key's row lock until the first request
//!   finishes, then replays its response; if it waited longer than
//!   [`IN_FLIGHT_WAIT`] it gets a 409 — never a second write. That bound holds
//!   for the key claim only, not for the write it guards.
//!
//! Failed requests store nothing (their transaction rolled back), so a client
//! may retry them with the same key. Keys are kept 24 hours.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_KEY_LEN: usize = 255;
/// How long a duplicate waits for the in-flight original before a 409.
pub const IN_FLIGHT_WAIT: &str = "5s";
/// How long a key is remembered.
pub const RETENTION: &str = "24 hours";

/// A validated `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &HeaderValue) -> AppResult<Self> {
        let value = raw
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| {
                !v.is_empty() && v.len() <= MAX_KEY_LEN && v.bytes().all(|b| b.is_ascii_graphic())
            })
            .ok_or_else(|| {
                AppError::validation(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters (a UUID is a good choice)",
                )
            })?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> AppResult<Option<Self>> {
        let mut values = parts.headers.get_all(HEADER).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AppError::validation(
                "Idempotency-Key",
                "must be sent at most once",
            ));
        }
        IdempotencyKey::parse(first).map(Some)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> AppResult<Self> {
        <Self as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| AppError::validation("Idempotency-Key", "this header is required"))
    }
}

/// What identifies "the same request": the method, the path (with its ids)
/// and the canonical (re-serialized) body — so whitespace or key order in the
/// client's JSON does not matter.
pub fn fingerprint<B: Serialize>(method: &str, path: &str, body: &B) -> AppResult<[u8; 32]> {
    let body = serde_json::to_vec(body).map_err(|e| AppError::Internal(e.into()))?;
    let mut hasher = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), &body] {
        hasher.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        hasher.update(part);
    }
    Ok(hasher.finalize().into())
}

/// Who the key belongs to and what it guards.
pub struct Guard<'a> {
    pub user_id: Uuid,
    pub key: &'a IdempotencyKey,
    pub fingerprint: [u8; 32],
}

/// The result of a guarded write.
pub enum Outcome<T> {
    /// The write ran and committed; `response` is what was stored.
    Done { value: T, response: Response },
    /// An earlier request with this key already did it; this is its response.
    Replayed(Response),
}

impl<T> Outcome<T> {
    pub fn into_response(self) -> Response {
        match self {
            Outcome::Done { response, .. } | Outcome::Replayed(response) => response,
        }
    }
}

/// Runs `write` in one transaction on `pool` (the primary) and answers
/// `status` with the JSON of its result. With a `guard`, the response is stored
/// under the key in the same transaction, and an earlier response for the key
/// is replayed instead of running `write` again.
pub async fn transaction<T, F>(
    pool: &PgPool,
    guard: Option<Guard<'_>>,
    status: StatusCode,
    write: F,
) -> AppResult<Outcome<T>>
where
    T: Serialize,
    F: AsyncFnOnce(&mut PgConnection) -> AppResult<T>,
{
    let mut tx = pool.begin().await?;
    if let Some(guard) = &guard
        && let Some(replay) = claim(&mut tx, guard).await?
    {
        // Nothing was written; ending the transaction releases the snapshot.
        tx.rollback().await?;
        return Ok(Outcome::Replayed(replay));
    }
    let value = write(&mut tx).await?;
    let body = Bytes::from(serde_json::to_vec(&value).map_err(|e| AppError::Internal(e.into()))?);
    if let Some(guard) = &guard {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = $4
              WHERE user_id = $1 AND key = $2",
        )
        .bind(guard.user_id)
        .bind(guard.key.as_str())
        .bind(i16::try_from(status.as_u16()).unwrap_or(200))
        .bind(body.as_ref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Outcome::Done {
        value,
        response: json_response(status, body, false),
    })
}

/// Takes the key for this transaction, or returns the response to replay.
///
/// Only the claim's wait is bounded by [`IN_FLIGHT_WAIT`]: the lock timeout is
/// set for the claim's statement and put back right after it, so the guarded
/// write itself may wait on a busy row as long as any other write (its
/// statement timeout), instead of failing with `lock_not_available`.
async fn claim(tx: &mut PgConnection, guard: &Guard<'_>) -> AppResult<Option<Response>> {
    // Waiting on a duplicate's row lock is bounded; see the 409 below.
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(IN_FLIGHT_WAIT)
        .execute(&mut *tx)
        .await?;
    if !insert_key(tx, guard).await? {
        // A replay: the transaction ends without writing anything.
        return replay_claimed(tx, guard).await.map(Some);
    }
    // Back to the session's own setting (the server's, the database's or the
    // role's: the pools never SET it per session) for the guarded write.
    sqlx::query("SET LOCAL lock_timeout TO DEFAULT")
        .execute(&mut *tx)
        .await?;
    Ok(None)
}

/// Inserts the key, or re-takes one that expired: true when claimed. False
/// means a live key exists (committed: the INSERT waited for its transaction).
async fn insert_key(tx: &mut PgConnection, guard: &Guard<'_>) -> AppResult<bool> {
    let claimed = sqlx::query_scalar::<_, bool>(
        "INSERT INTO idempotency_keys (user_id, key, request_hash)
         VALUES ($1, $2, $3)
         ON CONFLICT (user_id, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, status = NULL, body = NULL,
                created_at = now()
          WHERE idempotency_keys.created_at < now() - $4::interval
         RETURNING true",
    )
    .bind(guard.user_id)
    .bind(guard.key.as_str())
    .bind(guard.fingerprint.as_slice())
    .bind(RETENTION)
    .fetch_optional(&mut *tx)
    .await
    .map_err(in_flight_conflict)?
    .is_some();
    Ok(claimed)
}

/// The stored response for a key that was already used (a 422 if it was used
/// for a different request), read in the claiming transaction.
async fn replay_claimed(tx: &mut PgConnection, guard: &Guard<'_>) -> AppResult<Response> {
    let stored = sqlx::query_as::<_, Stored>(
        "SELECT request_hash, status, body FROM idempotency_keys
          WHERE user_id = $1 AND key = $2",
    )
    .bind(guard.user_id)
    .bind(guard.key.as_str())
    .fetch_one(&mut *tx)
    .await?;
    stored_response(guard, stored)
}

/// A key's row: the request's fingerprint and the stored response.
type Stored = (Vec<u8>, Option<i16>, Option<Vec<u8>>);

/// The response to replay from a committed key, or a 422 when the key was
/// used for another request.
fn stored_response(guard: &Guard<'_>, stored: Stored) -> AppResult<Response> {
    let (request_hash, status, body) = stored;
    if request_hash != guard.fingerprint {
        return Err(AppError::validation(
            "Idempotency-Key",
            "was already used for a different request; use a new key for a new request",
        ));
    }
    let (Some(status), Some(body)) = (status, body) else {
        return Err(AppError::Internal(anyhow::anyhow!(
            "idempotency key committed without a response"
        )));
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    Ok(json_response(status, Bytes::from(body), true))
}

/// `lock_timeout` (55P03) while waiting for a duplicate: it is still running.
fn in_flight_conflict(error: sqlx::Error) -> AppError {
    let lock_timeout = error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "55P03");
    if lock_timeout {
        AppError::Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly.".into(),
        )
    } else {
        AppError::Database(error)
    }
}

fn json_response(status: StatusCode, body: Bytes, replayed: bool) -> Response {
    let mut response = (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        body,
    )
        .into_response();
    if replayed {
        response.headers_mut().insert(
            HeaderName::from_static(REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// The stored response of an earlier request with this key, if one committed
/// (a 422 if it was a different request). A handler calls it before checks
/// that the earlier request's own write would now fail, such as a rate limit
/// or a duplicate check, so that a retry is answered as the first request was.
/// A request still in flight is not visible here; [`transaction`] waits for it.
pub async fn replay(pool: &PgPool, guard: &Guard<'_>) -> AppResult<Option<Response>> {
    let stored = sqlx::query_as::<_, Stored>(
        "SELECT request_hash, status, body FROM idempotency_keys
          WHERE user_id = $1 AND key = $2 AND created_at >= now() - $3::interval",
    )
    .bind(guard.user_id)
    .bind(guard.key.as_str())
    .bind(RETENTION)
    .fetch_optional(pool)
    .await?;
    stored
        .map(|stored| stored_response(guard, stored))
        .transpose()
}

/// Deletes keys past their retention; returns how many.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval")
        .bind(RETENTION)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_short_visible_ascii() {
        let ok = IdempotencyKey::parse(&HeaderValue::from_static("0f8fad5b-d9cb-469f-a165"));
        assert_eq!(ok.expect("valid").as_str(), "0f8fad5b-d9cb-469f-a165");
        for bad in ["", "   ", "with space"] {
            assert!(
                IdempotencyKey::parse(&HeaderValue::from_static(bad)).is_err(),
                "{bad:?}"
            );
        }
        let long = HeaderValue::from_str(&"k".repeat(256)).expect("header");
        assert!(IdempotencyKey::parse(&long).is_err());
    }

    #[test]
    fn the_fingerprint_ignores_json_formatting_but_not_content() {
        let a: serde_json::Value = serde_json::from_str(r#"{"value": 1}"#).expect("json");
        let b: serde_json::Value = serde_json::from_str(r#"{ "value":1 }"#).expect("json");
        let c: serde_json::Value = serde_json::from_str(r#"{"value": -1}"#).expect("json");
        let fa = fingerprint("PUT", "/q/1/vote", &a).expect("hash");
        assert_eq!(fa, fingerprint("PUT", "/q/1/vote", &b).expect("hash"));
        assert_ne!(fa, fingerprint("PUT", "/q/1/vote", &c).expect("hash"));
        assert_ne!(fa, fingerprint("PUT", "/q/2/vote", &a).expect("hash"));
    }
}
