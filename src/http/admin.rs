//! `/api/v1/admin/*`: operations reserved to the `admin` role.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::store;
use crate::auth::{AuthUser, Role};
use crate::capacity::snapshot::{self, Snapshot};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{AppJson, AppPath};
use crate::http::practice::private_json;
use crate::http::users::UserProfile;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .routes(routes!(deactivate_user))
        .routes(routes!(activate_user))
        .routes(routes!(set_user_role))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    pub role: Role,
}

/// Service statistics: users, active today, exercises, attempts, questions,
/// votes, answers, and the size of the database and of each table. The same
/// figures as `refbackend capacity snapshot`, read from a replica (they may be
/// seconds old) with bounded queries: counts come from aggregates, never from
/// a scan of the attempt or vote history.
#[utoipa::path(get, path = "/admin/stats", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The statistics", body = Snapshot),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stats(State(state): State<AppState>, caller: AuthUser) -> AppResult<Response> {
    caller.require(&[Role::Admin])?;
    let snapshot = snapshot::take_all(&state.db).await?;
    private_json(&snapshot)
}

/// Admins cannot deactivate or demote themselves: it would be the easiest way
/// to lock every administrator out.
fn not_self(caller: &AuthUser, id: Uuid) -> AppResult<()> {
    if caller.id == id {
        Err(AppError::Conflict(
            "Administrators cannot deactivate themselves or change their own role.".into(),
        ))
    } else {
        Ok(())
    }
}

fn no_user(id: Uuid) -> AppError {
    AppError::NotFound(format!("No user with id {id}"))
}

/// Deactivates a user: they can no longer sign in or refresh, and every
/// refresh family is revoked; access tokens already issued stop working within
/// one access-token lifetime (at once on `/users/me`).
#[utoipa::path(post, path = "/admin/users/{id}/deactivate", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Deactivated"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot deactivate themself", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn deactivate_user(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<Uuid>,
) -> AppResult<StatusCode> {
    set_active(&state, &caller, id, false).await
}

/// After a committed role or activation change: this instance and every other
/// drop the account's cached state, so the change applies to the user's very
/// next request whatever their token says.
async fn account_changed(state: &AppState, id: Uuid) {
    state.auth.accounts.forget(id).await;
    state.cache.announce_account_change(id).await;
}

/// The shared body of activate and deactivate.
async fn set_active(
    state: &AppState,
    caller: &AuthUser,
    id: Uuid,
    active: bool,
) -> AppResult<StatusCode> {
    caller.require(&[Role::Admin])?;
    not_self(caller, id)?;
    if store::set_active(state.db.write(), Some(caller.id), id, active).await? {
        account_changed(state, id).await;
        tracing::info!(admin = %caller.id, user = %id, active, "user activation changed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_user(id))
    }
}

/// Re-activates a user (they sign in again; old sessions stay revoked).
#[utoipa::path(post, path = "/admin/users/{id}/activate", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 204, description = "Activated"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot change their own activation", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn activate_user(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<Uuid>,
) -> AppResult<StatusCode> {
    set_active(&state, &caller, id, true).await
}

/// Changes a user's role, effective from the user's next request.
#[utoipa::path(put, path = "/admin/users/{id}/role", tag = "admin",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body = RoleChange,
    responses(
        (status = 200, description = "The updated user", body = UserProfile),
        (status = 400, description = "Malformed id or JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot change their own role", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_user_role(
    State(state): State<AppState>,
    caller: AuthUser,
    AppPath(id): AppPath<Uuid>,
    AppJson(change): AppJson<RoleChange>,
) -> AppResult<AppJson<UserProfile>> {
    caller.require(&[Role::Admin])?;
    not_self(&caller, id)?;
    let row = store::set_role(state.db.write(), Some(caller.id), id, change.role)
        .await?
        .ok_or_else(|| no_user(id))?;
    account_changed(&state, id).await;
    tracing::info!(admin = %caller.id, user = %id, role = %change.role, "role changed");
    Ok(AppJson(UserProfile::from(row)))
}
