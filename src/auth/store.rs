//! Account and refresh-token persistence. Every function here touches the
//! primary: authentication decisions must never act on stale replica data.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::Role;
use super::refresh::TokenHash;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub role: String,
    pub timezone: String,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    /// The stored role; an unknown value (impossible under the CHECK constraint)
    /// degrades to the least privileged role.
    pub fn role(&self) -> Role {
        self.role.parse().unwrap_or(Role::Member)
    }
}

const USER_COLUMNS: &str =
    "id, email, password_hash, display_name, role, timezone, is_active, created_at";

pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub display_name: &'a str,
    pub role: Role,
}

/// Creates a user; a duplicate email (even one inserted a microsecond earlier
/// by a racing request) is a 409, decided by the unique constraint.
pub async fn insert_user(
    tx: &mut Transaction<'_, Postgres>,
    user: &NewUser<'_>,
) -> AppResult<UserRow> {
    let sql = format!(
        "INSERT INTO users (id, email, password_hash, display_name, role)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING {USER_COLUMNS}"
    );
    sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(user.id)
        .bind(user.email)
        .bind(user.password_hash)
        .bind(user.display_name)
        .bind(user.role.as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(
            |e| match e.as_database_error().and_then(|d| d.constraint()) {
                Some("users_email_key") => {
                    AppError::Conflict("An account with this email already exists.".into())
                }
                _ => AppError::Database(e),
            },
        )
}

pub async fn find_by_email(pool: &PgPool, email: &str) -> AppResult<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
    Ok(sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(email)
        .fetch_optional(pool)
        .await?)
}

pub async fn find_by_id(pool: &PgPool, id: Uuid) -> AppResult<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    Ok(sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// Starts a new token family (a login) with its first token.
pub async fn start_family(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    token_hash: &TokenHash,
    ttl: std::time::Duration,
) -> AppResult<()> {
    let family = Uuid::now_v7();
    sqlx::query("INSERT INTO refresh_families (user_id, id) VALUES ($1, $2)")
        .bind(user_id)
        .bind(family)
        .execute(&mut **tx)
        .await?;
    insert_token(tx, user_id, family, token_hash, ttl).await
}

async fn insert_token(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    family: Uuid,
    token_hash: &TokenHash,
    ttl: std::time::Duration,
) -> AppResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (user_id, token_hash, family_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(user_id)
    .bind(&token_hash[..])
    .bind(family)
    .bind(ttl.as_secs_f64())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What presenting a refresh token led to.
pub enum Rotation {
    /// Valid: it is now used and `new_hash` is the family's current token.
    Rotated(UserRow),
    /// Already used before: the family has been revoked (token theft detection).
    Reused,
    /// Unknown, expired, revoked, or the user is deactivated.
    Rejected,
}

/// Rotates a refresh token in one transaction, serialized per family.
pub async fn rotate(
    pool: &PgPool,
    user_id: Uuid,
    presented: &TokenHash,
    new_hash: &TokenHash,
    ttl: std::time::Duration,
) -> AppResult<Rotation> {
    let mut tx = pool.begin().await?;
    let family: Option<Uuid> = sqlx::query_scalar(
        "SELECT family_id FROM refresh_tokens WHERE user_id = $1 AND token_hash = $2",
    )
    .bind(user_id)
    .bind(&presented[..])
    .fetch_optional(&mut *tx)
    .await?;
    let Some(family) = family else {
        return Ok(Rotation::Rejected);
    };
    // Lock the family first: rotations and revocations of one family run one
    // at a time, and everything read below is current.
    let revoked: bool = sqlx::query_scalar(
        "SELECT revoked_at IS NOT NULL FROM refresh_families WHERE user_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(user_id)
    .bind(family)
    .fetch_one(&mut *tx)
    .await?;
    if revoked {
        return Ok(Rotation::Rejected);
    }
    let (used, expired): (bool, bool) = sqlx::query_as(
        "SELECT used_at IS NOT NULL, expires_at <= now()
           FROM refresh_tokens WHERE user_id = $1 AND token_hash = $2",
    )
    .bind(user_id)
    .bind(&presented[..])
    .fetch_one(&mut *tx)
    .await?;
    if used {
        revoke_family_in(&mut tx, user_id, family).await?;
        tx.commit().await?;
        return Ok(Rotation::Reused);
    }
    if expired {
        return Ok(Rotation::Rejected);
    }
    let user = find_by_id_in(&mut tx, user_id).await?;
    let Some(user) = user.filter(|u| u.is_active) else {
        revoke_family_in(&mut tx, user_id, family).await?;
        tx.commit().await?;
        return Ok(Rotation::Rejected);
    };
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE user_id = $1 AND token_hash = $2")
        .bind(user_id)
        .bind(&presented[..])
        .execute(&mut *tx)
        .await?;
    insert_token(&mut tx, user_id, family, new_hash, ttl).await?;
    tx.commit().await?;
    Ok(Rotation::Rotated(user))
}

async fn find_by_id_in(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> AppResult<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    Ok(sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?)
}

async fn revoke_family_in(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    family: Uuid,
) -> AppResult<()> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = now()
          WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(family)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes the family of a presented token (logout). False when the token is unknown.
pub async fn revoke_family_of(
    pool: &PgPool,
    user_id: Uuid,
    presented: &TokenHash,
) -> AppResult<bool> {
    let result = sqlx::query(
        "UPDATE refresh_families f SET revoked_at = now()
           FROM refresh_tokens t
          WHERE t.user_id = $1 AND t.token_hash = $2
            AND f.user_id = t.user_id AND f.id = t.family_id
            AND f.revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(&presented[..])
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Activates or deactivates a user; deactivation also revokes every refresh
/// family, so the user cannot get new access tokens. False if no such user.
///
/// `actor` is the admin making the change (None: an operator's command): the
/// change is made only if they are still an active admin when it commits.
pub async fn set_active(
    pool: &PgPool,
    actor: Option<Uuid>,
    user_id: Uuid,
    active: bool,
) -> AppResult<bool> {
    let mut tx = pool.begin().await?;
    lock_for_admin_change(&mut tx, actor, user_id).await?;
    // An account being deleted stays inactive.
    let updated = sqlx::query(
        "UPDATE users SET is_active = $2, updated_at = now()
          WHERE id = $1 AND (deleting_since IS NULL OR NOT $2)",
    )
    .bind(user_id)
    .bind(active)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated > 0 && !active {
        sqlx::query("UPDATE refresh_families SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(updated > 0)
}

/// Changes a user's role; takes effect in access tokens issued from now on.
/// `actor` as for [`set_active`].
pub async fn set_role(
    pool: &PgPool,
    actor: Option<Uuid>,
    user_id: Uuid,
    role: Role,
) -> AppResult<Option<UserRow>> {
    let mut tx = pool.begin().await?;
    lock_for_admin_change(&mut tx, actor, user_id).await?;
    let sql = format!(
        "UPDATE users SET role = $2, updated_at = now() WHERE id = $1 RETURNING {USER_COLUMNS}"
    );
    let row = sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(role.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// Locks the acting admin's row and the target's (in id order, so two admins
/// acting on each other wait instead of deadlocking) and checks, under the
/// lock, that the actor is still an active admin. Without it two admins
/// demoting or deactivating each other at once could both succeed, leaving
/// no admin.
async fn lock_for_admin_change(
    tx: &mut sqlx::PgConnection,
    actor: Option<Uuid>,
    target: Uuid,
) -> AppResult<()> {
    let Some(actor) = actor else {
        return Ok(());
    };
    let rows: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT id, role, is_active FROM users WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind([actor, target])
    .fetch_all(&mut *tx)
    .await?;
    let still_admin = rows
        .iter()
        .any(|(id, role, active)| *id == actor && *active && role == Role::Admin.as_str());
    if still_admin {
        Ok(())
    } else {
        Err(AppError::Forbidden("This requires the role admin.".into()))
    }
}

/// Updates the caller's own profile fields (None keeps the current value).
/// A deactivated account changes nothing and gets `None`.
pub async fn update_profile(
    pool: &PgPool,
    user_id: Uuid,
    display_name: Option<&str>,
    timezone: Option<&str>,
) -> AppResult<Option<UserRow>> {
    let sql = format!(
        "UPDATE users
            SET display_name = COALESCE($2, display_name),
                timezone = COALESCE($3, timezone),
                updated_at = now()
          WHERE id = $1 AND is_active
      RETURNING {USER_COLUMNS}"
    );
    Ok(sqlx::query_as::<_, UserRow>(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(display_name)
        .bind(timezone)
        .fetch_optional(pool)
        .await?)
}
