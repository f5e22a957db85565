//! `/api/v1/users/me`: the caller's own profile. There is deliberately no
//! endpoint that reads another user's private data by id.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::erase::Outcome;
use crate::auth::store::{self, UserRow};
use crate::auth::{AuthUser, Role, validate};
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::AppJson;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_me, update_me, delete_me))
}

/// A user's own view of their account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserProfile {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// IANA time zone used for daily streaks.
    pub timezone: String,
    pub created_at: DateTime<Utc>,
}

impl From<UserRow> for UserProfile {
    fn from(row: UserRow) -> Self {
        Self {
            role: row.role(),
            id: row.id,
            email: row.email,
            display_name: row.display_name,
            timezone: row.timezone,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    #[schema(
        min_length = 1,
        max_length = 60,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub display_name: Option<String>,
    /// IANA time zone name, e.g. `America/Chicago`.
    #[schema(
        max_length = 64,
        pattern = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$",
        example = "America/Chicago"
    )]
    pub timezone: Option<String>,
}

/// A deletion that completes in the background.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionPending {
    /// `pending`
    pub status: String,
    pub detail: String,
}

/// Confirms a deletion.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccount {
    /// The account's current password: a stolen access token alone cannot
    /// delete an account. Any character but U+0000.
    #[schema(min_length = 1, max_length = 1024, pattern = r"^[^\x00]*$")]
    pub password: String,
}

fn private(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}

/// A deactivated or deleted account's tokens stop working here at once.
fn gone() -> AppError {
    AppError::unauthenticated("This account no longer exists or is deactivated.", true)
}

/// The caller's profile. Read from the primary: right after a change the
/// caller must see it.
#[utoipa::path(get, path = "/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = UserProfile),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_me(State(state): State<AppState>, user: AuthUser) -> AppResult<Response> {
    let row = store::find_by_id(state.db.read_fresh(), user.id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(gone)?;
    Ok(private(AppJson(UserProfile::from(row)).into_response()))
}

/// Updates the caller's display name and/or time zone.
#[utoipa::path(patch, path = "/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = ProfileUpdate,
    responses(
        (status = 200, description = "The updated profile", body = UserProfile),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(update): AppJson<ProfileUpdate>,
) -> AppResult<Response> {
    let mut errors: Vec<FieldError> = Vec::new();
    let display_name = match update.display_name.as_deref().map(validate::display_name) {
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        None => None,
    };
    let pool = state.db.write();
    if let Some(zone) = update.timezone.as_deref() {
        if !is_zone_name(zone) {
            return Err(AppError::Validation(
                errors
                    .into_iter()
                    .chain([FieldError::new(
                        "timezone",
                        "must be an IANA time zone such as America/Chicago",
                    )])
                    .collect(),
            ));
        }
        // Postgres knows the IANA database; an unknown zone is a field error.
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
                .bind(zone)
                .fetch_one(pool)
                .await?;
        if !known {
            errors.push(FieldError::new(
                "timezone",
                "must be an IANA time zone such as America/Chicago",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let row = store::update_profile(
        pool,
        user.id,
        display_name.as_deref(),
        update.timezone.as_deref(),
    )
    .await?
    .ok_or_else(gone)?;
    if update.timezone.is_some() {
        // The account cache carries the zone that days (streaks) are counted in.
        state.auth.accounts.forget(user.id).await;
        state.cache.announce_account_change(user.id).await;
    }
    if display_name.is_some() {
        // Question lists and pages show authors' names: invalidate them, with
        // the lists' consistency token, so no loader re-caches the old name
        // from a replica that has not replayed the change.
        super::questions::after_write(&state, user.id).await;
    }
    Ok(private(AppJson(UserProfile::from(row)).into_response()))
}

/// Deletes the caller's account and every row of it: progress, history,
/// cards, achievements, settings, sessions, votes and flags (taken off the
/// questions' counts) and a candidate's answers. Questions the caller asked
/// stay, shown as asked by "Deleted user". Requires the current password
/// (attempts count against the sign-in limits). Cannot be undone; export
/// first (`GET /users/me/export`).
#[utoipa::path(delete, path = "/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = DeleteAccount,
    responses(
        (status = 204, description = "Deleted; every token of the account stops working"),
        (status = 202, description = "Deactivated at once; the deletion of its data failed midway and completes in the background", body = DeletionPending),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong password", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong passwords", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the account's data is moving; retry", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_me(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(request): AppJson<DeleteAccount>,
) -> AppResult<Response> {
    if request.password.is_empty() || request.password.chars().count() > 1024 {
        return Err(AppError::validation(
            "password",
            "must be the account's password",
        ));
    }
    let row = store::find_by_id(state.db.write(), user.id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(gone)?;
    let auth = &state.auth;
    super::auth::enforce(
        auth.limiter
            .check(
                "login-account",
                &super::auth::account_key(&row.email),
                auth.settings.login_per_account,
            )
            .await,
    )?;
    let valid = auth
        .passwords
        .verify(&request.password, Some(&row.password_hash))
        .await
        .map_err(|e| super::auth::password_error(&state, e))?;
    if !valid {
        return Err(AppError::Forbidden(
            "The password does not match; the account was not deleted.".into(),
        ));
    }
    let erased = match crate::auth::erase::erase(&state, user.id).await? {
        Outcome::NoAccount => return Err(gone()),
        Outcome::Pending => {
            return Ok(private(
                (
                    StatusCode::ACCEPTED,
                    AppJson(serde_json::json!({
                        "status": "pending",
                        "detail": "The account is deactivated; the deletion of its data could not finish now and completes in the background."
                    })),
                )
                    .into_response(),
            ));
        }
        Outcome::Done(erased) => erased,
    };
    tracing::info!(
        user = %user.id,
        votes = erased.votes,
        flags = erased.flags,
        questions = erased.questions,
        answers = erased.answers,
        rebuttals = erased.rebuttals,
        profiles_unlinked = erased.profiles_unlinked,
        "account deleted"
    );
    state
        .metrics
        .auth_events_total
        .with_label_values(&["account_deleted"])
        .inc();
    Ok(private(StatusCode::NO_CONTENT.into_response()))
}

/// The shape of an IANA zone name (the schema's pattern), checked before the
/// name is looked up so that no arbitrary text reaches the query.
fn is_zone_name(zone: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
    };
    zone.len() <= 64
        && zone.starts_with(|c: char| c.is_ascii_alphabetic())
        && zone.split('/').all(part_ok)
}

#[cfg(test)]
mod tests {
    use super::is_zone_name;

    #[test]
    fn zone_names_are_checked_for_shape_before_any_lookup() {
        for good in [
            "UTC",
            "America/Chicago",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
        ] {
            assert!(is_zone_name(good), "{good}");
        }
        for bad in [
            "",
            "/UTC",
            "America/",
            "Euro\u{0}pe/Paris",
            "Europe//Paris",
            "1UTC",
            "a b",
        ] {
            assert!(!is_zone_name(bad), "{bad}");
        }
        assert!(!is_zone_name(&"A".repeat(65)));
    }
}
