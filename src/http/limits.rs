//! Spending one unit of a named rate limit from a handler, per user or per
//! client address (shared by every instance through Redis, `crate::ratelimit`).
//! A refusal is a 429 problem with `Retry-After` and the `RateLimit-*` headers.

use std::net::IpAddr;

use uuid::Uuid;

use crate::app::AppState;
use crate::auth::client_ip::rate_limit_key;
use crate::error::{AppError, AppResult};
use crate::ratelimit::Quota;

/// Takes one unit of a per-user limit. Callers answer idempotent replays
/// before this: a retry is not a new write and must not be refused as one.
pub async fn spend_user_limit(
    state: &AppState,
    user_id: Uuid,
    limiter: &str,
    quota: Quota,
) -> AppResult<()> {
    spend(state, limiter, &user_id.to_string(), quota).await
}

/// Takes one unit of a per-client limit (an IPv6 client counts by its /64).
pub async fn spend_ip_limit(
    state: &AppState,
    ip: IpAddr,
    limiter: &str,
    quota: Quota,
) -> AppResult<()> {
    spend(state, limiter, &rate_limit_key(ip), quota).await
}

async fn spend(state: &AppState, limiter: &str, key: &str, quota: Quota) -> AppResult<()> {
    let decision = state.auth.limiter.check(limiter, key, quota).await;
    if decision.allowed {
        Ok(())
    } else {
        Err(AppError::RateLimited(decision))
    }
}
