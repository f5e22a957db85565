//! Account deletion (`DELETE /users/me`): every row of the account goes, on
//! main, on its shard, and in Redis.
//!
//! - Per-user rows (progress, cards, attempts, achievements, idempotency
//!   keys…) are deleted on the account's shard first, in one transaction that
//!   also leaves a marker (`erased_users`, the id alone) which the write fence
//!   checks: a request that passed its account check before the deletion
//!   cannot write them back. Without sharding they live on main and go with
//!   the account row (ON DELETE CASCADE) in the main transaction below.
//! - On main, one transaction locks the account row (a new vote or flag needs
//!   a share lock on it, so none can start), locks every question the account
//!   voted on or flagged (ordered, as every vote takes that lock first),
//!   takes its votes, flags and (a candidate's) answers off the counters,
//!   deletes those, hands its questions and moderation entries to the
//!   "Deleted user" account, and deletes the account row; refresh tokens,
//!   settings and the rest follow by cascade. Questions stay: others voted on
//!   and answered them. Answers go: a statement without its candidate means
//!   nothing on a ballot (and one question can hold only one answer per
//!   author).
//! - After commit: the account cache forgets it on every instance, the
//!   leaderboards drop it, and cached question pages (author names) are
//!   invalidated.
//!
//! A failure between the two transactions leaves the account in place and
//! its per-user rows gone; the same request again finishes the job (every
//! step is idempotent).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::AppState;
use crate::civic::ranking;
use crate::db::shards::mover::PER_USER_TABLES;
use crate::db::shards::{MAIN, UserDb};
use crate::error::AppResult;
use crate::http::questions::created_at_of;

/// Receives what deleted accounts wrote in public; made by the first
/// deletion that needs it.
pub const DELETED_USER: Uuid = Uuid::nil();

/// What a deletion did, for the log.
#[derive(Debug, Default)]
pub struct Erased {
    pub votes: usize,
    pub flags: usize,
    pub questions: u64,
    pub answers: usize,
}

/// Deletes `user` everywhere. False if there was no such account.
pub async fn erase(state: &AppState, user: Uuid) -> AppResult<Option<Erased>> {
    let shard = state.db.user(user)?;
    let on_main = shard.name() == MAIN;
    if !on_main {
        erase_per_user_rows(&shard, user).await?;
    }
    let mut tx = state.db.write().begin().await?;
    let erased = erase_on_main(&mut tx, user).await?;
    tx.commit().await?;
    if erased.is_some() {
        state.auth.accounts.forget(user).await;
        state.cache.announce_account_change(user).await;
        state.leaderboard.remove(user).await;
        crate::http::questions::after_write(state, user).await;
    }
    Ok(erased)
}

/// The account's rows on its shard, and the marker that keeps them deleted.
async fn erase_per_user_rows(shard: &UserDb, user: Uuid) -> AppResult<()> {
    let mut tx = shard.write().begin().await?;
    // Through the fence: a bucket that moved away has the rows elsewhere (a
    // 503, retried against the new map); one being moved records the user so
    // that the move copies the deletion too.
    if let Some(bucket) = shard.fence_bucket() {
        let fence: String = sqlx::query_scalar("SELECT shard_write_guard($1, $2)")
            .bind(bucket)
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        if fence != "erased" {
            shard.check_fence(&fence)?;
        }
    }
    sqlx::query("INSERT INTO erased_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user)
        .execute(&mut *tx)
        .await?;
    for table in PER_USER_TABLES.iter().filter(|t| **t != "erased_users") {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = $1"
        )))
        .bind(user)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Counted {
    created_at: DateTime<Utc>,
    id: Uuid,
    upvotes: i32,
    downvotes: i32,
}

async fn erase_on_main(tx: &mut PgConnection, user: Uuid) -> AppResult<Option<Erased>> {
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND id <> $2 FOR UPDATE")
            .bind(user)
            .bind(DELETED_USER)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Ok(None);
    }
    // The questions to lock: every one voted on, flagged or answered. New
    // votes, flags and answers wait for the account row; changes to existing
    // ones take the question's lock first, so after locking, the counts below
    // are exact.
    let mut touched: Vec<Uuid> = sqlx::query_scalar(
        "SELECT question_id FROM question_votes WHERE user_id = $1
         UNION
         SELECT question_id FROM question_flags WHERE user_id = $1
         UNION
         SELECT question_id FROM answers WHERE candidate_id = $1",
    )
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    touched.sort_unstable();
    let keys: Vec<(DateTime<Utc>, Uuid)> = touched
        .iter()
        .filter_map(|id| Some((created_at_of(*id)?, *id)))
        .collect();
    let (times, ids): (Vec<DateTime<Utc>>, Vec<Uuid>) = keys.into_iter().unzip();
    let locked = sqlx::query_as::<_, Counted>(
        "SELECT q.created_at, q.id, q.upvotes, q.downvotes
           FROM questions q
           JOIN UNNEST($1::timestamptz[], $2::uuid[]) AS k(created_at, id)
             ON q.created_at = k.created_at AND q.id = k.id
          ORDER BY q.id
            FOR UPDATE OF q",
    )
    .bind(&times)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let votes: Vec<(Uuid, i16)> = sqlx::query_as(
        "DELETE FROM question_votes WHERE user_id = $1 RETURNING question_id, value",
    )
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    let flags: Vec<Uuid> =
        sqlx::query_scalar("DELETE FROM question_flags WHERE user_id = $1 RETURNING question_id")
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
    let answered: Vec<Uuid> =
        sqlx::query_scalar("DELETE FROM answers WHERE candidate_id = $1 RETURNING question_id")
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
    let mut times = Vec::with_capacity(locked.len());
    let mut ids = Vec::with_capacity(locked.len());
    let (mut ups, mut downs, mut flag_counts, mut answer_counts, mut hots) =
        (vec![], vec![], vec![], vec![], vec![]);
    for q in &locked {
        let vote = votes.iter().find(|(id, _)| *id == q.id).map(|(_, v)| *v);
        let up = i32::from(vote == Some(1));
        let down = i32::from(vote == Some(-1));
        let flagged = i32::from(flags.contains(&q.id));
        let score = i64::from(q.upvotes - up) - i64::from(q.downvotes - down);
        times.push(q.created_at);
        ids.push(q.id);
        ups.push(up);
        downs.push(down);
        flag_counts.push(flagged);
        answer_counts.push(i32::from(answered.contains(&q.id)));
        hots.push(ranking::hot(score, q.created_at));
    }
    sqlx::query(
        "UPDATE questions q
            SET upvotes = q.upvotes - d.up, downvotes = q.downvotes - d.down,
                flag_count = greatest(q.flag_count - d.flags, 0),
                answer_count = greatest(q.answer_count - d.answers, 0), hot = d.hot
           FROM UNNEST($1::timestamptz[], $2::uuid[], $3::int4[], $4::int4[], $5::int4[],
                       $6::int4[], $7::float8[]) AS d(created_at, id, up, down, flags, answers, hot)
          WHERE q.created_at = d.created_at AND q.id = d.id",
    )
    .bind(&times)
    .bind(&ids)
    .bind(&ups)
    .bind(&downs)
    .bind(&flag_counts)
    .bind(&answer_counts)
    .bind(&hots)
    .execute(&mut *tx)
    .await?;
    // The account that receives what deleted accounts wrote: inactive, and
    // its password hash (a well-formed argon2id string of random bytes)
    // matches no password, so no one can sign in as it. Left out of counts.
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, display_name, role, is_active)
         VALUES ($1, 'deleted-user.invalid',
                 '$argon2id$v=19$m=19456,t=2,p=1$'
                 || rtrim(encode(decode(replace(gen_random_uuid()::text, '-', ''), 'hex'),
                                 'base64'), '=')
                 || '$'
                 || rtrim(encode(decode(replace(gen_random_uuid()::text, '-', '')
                                        || replace(gen_random_uuid()::text, '-', ''), 'hex'),
                                 'base64'), '='),
                 'Deleted user', 'member', false)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(DELETED_USER)
    .execute(&mut *tx)
    .await?;
    let questions = sqlx::query("UPDATE questions SET author_id = $2 WHERE author_id = $1")
        .bind(user)
        .bind(DELETED_USER)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE moderation_log SET moderator_id = $2 WHERE moderator_id = $1")
        .bind(user)
        .bind(DELETED_USER)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user)
        .execute(&mut *tx)
        .await?;
    Ok(Some(Erased {
        votes: votes.len(),
        flags: flags.len(),
        questions,
        answers: answered.len(),
    }))
}
