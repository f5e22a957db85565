//! Request extractors for authentication: the bearer-token user and the client IP.

use std::net::{IpAddr, Ipv4Addr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::Role;
use super::client_ip::client_ip;
use crate::app::AppState;
use crate::error::{AppError, AppResult};
use crate::server::PeerAddr;

/// The caller, proven by a valid access token (`Authorization: Bearer …`).
/// Rejections are 401 problems with `WWW-Authenticate`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub role: Role,
    /// The account's IANA time zone (as of the account cache).
    pub timezone: std::sync::Arc<str>,
    /// The learner's practice settings (as of the account cache).
    pub settings: std::sync::Arc<crate::practice::settings::PracticeSettings>,
    /// The token's id, for logs.
    pub jti: Uuid,
}

impl AuthUser {
    /// Allows the request only for the listed roles (403 otherwise).
    pub fn require(&self, allowed: &[Role]) -> AppResult<()> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "This requires the role {}.",
                allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(AppError::unauthenticated(
                "This requires a bearer access token.",
                false,
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                AppError::unauthenticated(
                    "The Authorization header must be `Bearer <token>`.",
                    true,
                )
            })?;
        let claims = state.auth.jwt.verify(token).map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            AppError::unauthenticated("The access token is invalid or expired.", true)
        })?;
        // The token proves who the caller is; what they may do is the
        // account's current state (a deactivation or a demotion applies at
        // once, not when the token expires).
        let account = state
            .auth
            .accounts
            .get(&state.db, claims.sub)
            .await?
            .filter(|a| a.active)
            .ok_or_else(|| {
                AppError::unauthenticated("This account no longer exists or is deactivated.", true)
            })?;
        Ok(Self {
            id: claims.sub,
            role: account.role,
            timezone: account.timezone,
            settings: account.settings,
            jti: claims.jti,
        })
    }
}

/// The client's IP: the TCP peer, or the forwarded address when the peer is a
/// trusted proxy (see [`super::client_ip`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Routers served without connect info (some tests) count as one local peer.
        let peer = parts
            .extensions
            .get::<ConnectInfo<PeerAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.0.ip());
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            &state.config.http.trusted_proxies,
        )))
    }
}

/// For endpoints that are public but say more to a signed-in caller: no
/// `Authorization` header is `None`; a header with a bad token is still a 401
/// (a client that meant to sign in should know it did not).
impl axum::extract::OptionalFromRequestParts<AppState> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(None);
        }
        <AuthUser as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}
