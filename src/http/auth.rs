//! `/api/v1/auth/*`: register, login, refresh, logout.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::client_ip::rate_limit_key;
use crate::auth::password::PasswordError;
use crate::auth::store::{self, NewUser, Rotation};
use crate::auth::{ClientIp, Role, refresh, validate};
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::AppJson;
use crate::http::users::UserProfile;
use crate::ratelimit::{Decision, set_headers};

/// A hashing failure as the client sees it: a saturated hasher is a 503 with
/// `Retry-After` (load shedding, counted as `auth_events_total{event="hash_shed"}`);
/// anything else is a bug or corrupt data.
pub(crate) fn password_error(state: &AppState, error: PasswordError) -> AppError {
    match error {
        PasswordError::Busy(_) => {
            state
                .metrics
                .auth_events_total
                .with_label_values(&["hash_shed"])
                .inc();
            AppError::Unavailable(
                "Too many sign-ins are being checked right now; retry in a moment.".into(),
            )
        }
        other => AppError::Internal(other.into()),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh_tokens))
        .routes(routes!(logout))
}

/// Longest password accepted at login (registration allows 128 characters;
/// this only stops absurd inputs from reaching argon2).
const LOGIN_PASSWORD_MAX_CHARS: usize = 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(
        format = "email",
        max_length = 254,
        example = "ana@example.com",
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub email: String,
    /// 8 to 128 characters; no composition rules (NIST SP 800-63B); any
    /// character but U+0000.
    #[schema(min_length = 8, max_length = 128, pattern = r"^[^\x00]*$")]
    pub password: String,
    /// Trimmed; 1 to 60 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 60,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub display_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// No control characters.
    #[schema(max_length = 254, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub email: String,
    /// Any character but U+0000.
    #[schema(max_length = 1024, pattern = r"^[^\x00]*$")]
    pub password: String,
}

/// Longest refresh token accepted (ours are 76 characters).
const REFRESH_TOKEN_MAX_CHARS: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(max_length = 200, pattern = r"^[^\x00]*$")]
    pub refresh_token: String,
}

impl RefreshRequest {
    /// The token's user and hash when it is well formed; a value longer than
    /// the documented maximum is a 422, anything else simply matches nothing.
    fn parse(&self) -> AppResult<Option<(Uuid, refresh::TokenHash)>> {
        if self.refresh_token.chars().count() > REFRESH_TOKEN_MAX_CHARS {
            return Err(AppError::validation("refresh_token", "is too long"));
        }
        Ok(refresh::parse(&self.refresh_token))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// JWT access token: send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Opaque; exchange at `/auth/refresh` (each use rotates it).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    pub user: UserProfile,
    #[serde(flatten)]
    pub tokens: TokenPair,
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Refuses with 429 when `decision` is a refusal.
pub(crate) fn enforce(decision: Decision) -> AppResult<Decision> {
    if decision.allowed {
        Ok(decision)
    } else {
        Err(AppError::RateLimited(decision))
    }
}

/// Issues an access token and a refresh token that starts a new family.
async fn new_session(
    state: &AppState,
    user_id: Uuid,
    role: Role,
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> AppResult<TokenPair> {
    let (refresh_token, refresh_hash) = refresh::generate(user_id);
    store::start_family(
        tx,
        user_id,
        &refresh_hash,
        state.auth.settings.refresh_token_ttl,
    )
    .await?;
    let access = state
        .auth
        .jwt
        .issue(user_id, role.as_str())
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok(TokenPair {
        access_token: access.token,
        refresh_token,
        token_type: "Bearer",
        expires_in: access.expires_in,
    })
}

/// Creates an account (role `member`) and signs it in.
#[utoipa::path(post, path = "/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created; tokens for it", body = RegisterResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this address", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Password hashing saturated or database unavailable; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(req): AppJson<RegisterRequest>,
) -> AppResult<Response> {
    let mut errors: Vec<FieldError> = Vec::new();
    let email = validate::email(&req.email).map_err(|e| errors.push(e)).ok();
    let _ = validate::password(&req.password).map_err(|e| errors.push(e));
    let display_name = validate::display_name(&req.display_name)
        .map_err(|e| errors.push(e))
        .ok();
    let (Some(email), Some(display_name), true) = (email, display_name, errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    let limit = enforce(
        state
            .auth
            .limiter
            .check(
                "register-ip",
                &rate_limit_key(ip),
                state.auth.settings.register_per_ip,
            )
            .await,
    )?;

    let password_hash = state
        .auth
        .passwords
        .hash(&req.password)
        .await
        .map_err(|e| password_error(&state, e))?;
    let id = Uuid::now_v7();
    let mut tx = state.db.write().begin().await?;
    let user = store::insert_user(
        &mut tx,
        &NewUser {
            id,
            email: &email,
            password_hash: &password_hash,
            display_name: &display_name,
            role: Role::Member,
        },
    )
    .await?;
    let tokens = new_session(&state, id, Role::Member, &mut tx).await?;
    tx.commit().await?;
    // The new account's first reads (progress, dashboard) may hit a replica
    // that has not replayed it yet: route them by this write's position.
    crate::http::practice::remember_write(&state, id).await;
    state
        .metrics
        .auth_events_total
        .with_label_values(&["register"])
        .inc();

    let body = RegisterResponse {
        user: UserProfile::from(user),
        tokens,
    };
    let mut response = no_store((StatusCode::CREATED, AppJson(body)).into_response());
    set_headers(response.headers_mut(), &limit);
    Ok(response)
}

/// The rate-limit key for an account: a hash, so emails never sit in Redis.
pub(crate) fn account_key(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs in with email and password. Unknown email and wrong password get the
/// same answer after the same work (a dummy hash is verified).
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Invalid email or password", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts for this account or address", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Password hashing saturated or database unavailable; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    AppJson(req): AppJson<LoginRequest>,
) -> AppResult<Response> {
    if req.email.chars().count() > 254 {
        return Err(AppError::validation("email", "is too long"));
    }
    if !crate::text::is_single_line(&req.email) {
        return Err(AppError::validation(
            "email",
            "must not contain control characters",
        ));
    }
    if req.password.chars().count() > LOGIN_PASSWORD_MAX_CHARS {
        return Err(AppError::validation("password", "is too long"));
    }
    let settings = &state.auth.settings;
    let limiter = &state.auth.limiter;
    let (ip_key, account) = (rate_limit_key(ip), account_key(&req.email));
    let (by_ip, by_account) = tokio::join!(
        limiter.check("login-ip", &ip_key, settings.login_per_ip),
        limiter.check("login-account", &account, settings.login_per_account),
    );
    enforce(by_ip)?;
    let limit = enforce(by_account)?;

    let email = req.email.trim().to_lowercase();
    let user = store::find_by_email(state.db.read_fresh(), &email).await?;
    let valid = state
        .auth
        .passwords
        .verify(
            &req.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await
        .map_err(|e| password_error(&state, e))?;
    let Some(user) = user.filter(|u| valid && u.is_active) else {
        state
            .metrics
            .auth_events_total
            .with_label_values(&["login_failed"])
            .inc();
        return Err(AppError::unauthenticated(
            "Invalid email or password.",
            false,
        ));
    };

    let mut tx = state.db.write().begin().await?;
    let tokens = new_session(&state, user.id, user.role(), &mut tx).await?;
    tx.commit().await?;
    state
        .metrics
        .auth_events_total
        .with_label_values(&["login_ok"])
        .inc();
    let mut response = no_store(AppJson(tokens).into_response());
    set_headers(response.headers_mut(), &limit);
    Ok(response)
}

/// Exchanges a refresh token for a new pair. Every use rotates the refresh
/// token; presenting one that was already used revokes its whole family.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New token pair", body = TokenPair),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh_tokens(
    State(state): State<AppState>,
    AppJson(req): AppJson<RefreshRequest>,
) -> AppResult<Response> {
    let refused =
        || AppError::unauthenticated("The refresh token is invalid, expired or revoked.", false);
    let (user_id, presented) = req.parse()?.ok_or_else(refused)?;
    let (refresh_token, new_hash) = refresh::generate(user_id);
    let ttl = state.auth.settings.refresh_token_ttl;
    match store::rotate(state.db.write(), user_id, &presented, &new_hash, ttl).await? {
        Rotation::Rotated(user) => {
            let access = state
                .auth
                .jwt
                .issue(user.id, user.role().as_str())
                .map_err(|e| AppError::Internal(e.into()))?;
            state
                .metrics
                .auth_events_total
                .with_label_values(&["refresh"])
                .inc();
            Ok(no_store(
                AppJson(TokenPair {
                    access_token: access.token,
                    refresh_token,
                    token_type: "Bearer",
                    expires_in: access.expires_in,
                })
                .into_response(),
            ))
        }
        Rotation::Reused => {
            tracing::warn!(%user_id, "refresh token reused: family revoked");
            state
                .metrics
                .auth_events_total
                .with_label_values(&["refresh_reuse_detected"])
                .inc();
            Err(AppError::unauthenticated(
                "This refresh token was already used; the session has been revoked. Sign in again.",
                false,
            ))
        }
        Rotation::Rejected => Err(refused()),
    }
}

/// Signs out: revokes the refresh token's family. Always 204, so it reveals
/// nothing about the token.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Signed out (or nothing to do)"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    AppJson(req): AppJson<RefreshRequest>,
) -> AppResult<StatusCode> {
    if let Some((user_id, presented)) = req.parse()?
        && store::revoke_family_of(state.db.write(), user_id, &presented).await?
    {
        state
            .metrics
            .auth_events_total
            .with_label_values(&["logout"])
            .inc();
    }
    Ok(StatusCode::NO_CONTENT)
}
