//! Account deletion (`DELETE /users/me`): every row of the account goes, on
//! main, on its shard, and in Redis.
//!
//! 0. The account is deactivated and marked `deleting_since` on main (its
//!    sessions revoked, the account cache dropped on every instance): from
//!    here no new request of it passes the account check, and if anything
//!    below fails, a background retry and then the maintenance round finish
//!    the deletion (`finish_pending`).
//! 1. With sharding, on the account's shard (main included), one transaction
//!    passes the write fence (a bucket being moved records the user, so the
//!    move copies the deletion) and commits a marker (`erased_users`, the id
//!    alone) that the fence reports as `erased`; a second takes the bucket's
//!    fence lock exclusively, which waits out any write of the bucket that
//!    passed the fence before the marker, and deletes the per-user rows. No
//!    write can bring them back.
//! 2. On main, one transaction deletes the per-user rows there (without
//!    sharding; this waits out an attempt in flight before the account row
//!    is locked, the order attempts take), locks the account row, then every
//!    question the account voted on, flagged or answered (in id order),
//!    takes its votes, flags and answers off the counters, deletes those,
//!    hands its questions and moderation entries to the "Deleted user"
//!    account, and deletes the account row (the rest cascades). Questions
//!    stay: others voted on and answered them. Answers go: a statement
//!    without its candidate means nothing on a ballot (and a question holds
//!    one answer per author); so do the account's rebuttals, and other
//!    candidates' rebuttals of its answers (with the answers). Its candidate
//!    profiles stay on the ballot (administrators' data: the name, the
//!    contest) but are unlinked from the account, so no one answers as them
//!    until an administrator links another account.
//! 3. Leaderboards, cached question pages and ballots follow. A leaderboard
//!    removal Redis cannot take now is kept by the instance and made once
//!    Redis answers again (`Leaderboard::remove`).
//!
//! Every step is idempotent. A deadlock with a write that was already in
//! flight (the account is inactive, so only one started before step 0) makes
//! the step fail and the retry finish it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::AppState;
use crate::civic::ranking;
use crate::db::Db;
use crate::db::shards::mover::PER_USER_TABLES;
use crate::db::shards::{FENCE_LOCK_CLASS, UserDb};
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
    /// The account's own rebuttals (rebuttals of its answers go with them).
    pub rebuttals: u64,
    /// Candidate profiles unlinked from the account.
    pub profiles_unlinked: u64,
}

/// How a deletion request ended.
#[derive(Debug)]
pub enum Outcome {
    /// No such (active) account.
    NoAccount,
    Done(Erased),
    /// Deactivated; the rest failed for now and is being retried.
    Pending,
}

/// How many times a failed deletion is retried in the background before it
/// is left to the maintenance round.
const BACKGROUND_TRIES: u32 = 5;

/// Deletes `user` everywhere (module docs).
pub async fn erase(state: &AppState, user: Uuid) -> AppResult<Outcome> {
    if !mark_deleting(state.db.write(), user).await? {
        return Ok(Outcome::NoAccount);
    }
    state.auth.accounts.forget(user).await;
    state.cache.announce_account_change(user).await;
    match finish(state, user).await {
        Ok(erased) => Ok(Outcome::Done(erased)),
        Err(e) => {
            tracing::warn!(%user, error = %e, "account deletion failed midway; retrying in the background");
            let state = state.clone();
            tokio::spawn(async move {
                let mut wait = std::time::Duration::from_secs(1);
                for _ in 0..BACKGROUND_TRIES {
                    tokio::time::sleep(wait).await;
                    match finish(&state, user).await {
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(%user, error = %e, "account deletion retry failed")
                        }
                    }
                    wait *= 2;
                }
            });
            Ok(Outcome::Pending)
        }
    }
}

/// Step 0: deactivated, sessions revoked, marked. False if there is no such
/// account (or it is the "Deleted user").
async fn mark_deleting(pool: &sqlx::PgPool, user: Uuid) -> AppResult<bool> {
    let mut tx = pool.begin().await?;
    let marked = sqlx::query(
        "UPDATE users SET is_active = false, deleting_since = coalesce(deleting_since, now()),
                updated_at = now()
          WHERE id = $1 AND id <> $2",
    )
    .bind(user)
    .bind(DELETED_USER)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(marked)
}

/// Steps 1-3 for an account marked `deleting_since`.
async fn finish(state: &AppState, user: Uuid) -> AppResult<Erased> {
    let erased = erase_rows(&state.db, user).await?;
    state.leaderboard.remove(user).await;
    crate::http::questions::after_write(state, user).await;
    // Profiles show whether an account speaks for them.
    if erased.profiles_unlinked > 0 {
        crate::http::ballot::ballot_changed(state).await;
    }
    Ok(erased)
}

/// Steps 1 and 2: the database part.
async fn erase_rows(db: &Db, user: Uuid) -> AppResult<Erased> {
    let shard = db.user(user)?;
    let sharded = shard.fence_bucket().is_some();
    if sharded {
        erase_per_user_rows(&shard, user).await?;
    }
    let mut tx = db.write().begin().await?;
    let erased = erase_on_main(&mut tx, user, !sharded).await?;
    tx.commit().await?;
    Ok(erased.unwrap_or_default())
}

/// Deletions a request started and did not finish (its instance died, or
/// every retry failed), older than a minute: finished here. Returns how many.
pub async fn finish_pending(state: &AppState) -> AppResult<usize> {
    let pending: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM users
          WHERE deleting_since IS NOT NULL AND deleting_since < now() - interval '1 minute'
          ORDER BY deleting_since LIMIT 100",
    )
    .fetch_all(state.db.write())
    .await?;
    for &user in &pending {
        // All of step 3 too: a deletion finished here must leave the
        // leaderboards, cached question pages and ballots as the request
        // would have. In a task of its own, so that a round abandoned midway
        // (start-up bounds its first one) cannot cut a deletion between its
        // commit and step 3, which nothing would retry.
        let state = state.clone();
        tokio::spawn(async move { finish(&state, user).await })
            .await
            .map_err(|e| anyhow::anyhow!("finishing the deletion of {user}: {e}"))??;
        tracing::info!(%user, "finished an interrupted account deletion");
    }
    Ok(pending.len())
}

/// The account's rows on its shard, and the marker that keeps them deleted.
async fn erase_per_user_rows(shard: &UserDb, user: Uuid) -> AppResult<()> {
    let Some(bucket) = shard.fence_bucket() else {
        return Ok(());
    };
    // Through the fence: a bucket that moved away has the rows elsewhere (a
    // 503, retried against the new map); one being moved records the user so
    // that the move copies the deletion too. The marker commits first.
    let mut tx = shard.write().begin().await?;
    let fence: String = sqlx::query_scalar("SELECT shard_write_guard($1, $2)")
        .bind(bucket)
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
    if fence != "erased" {
        shard.check_fence(&fence)?;
    }
    sqlx::query("INSERT INTO erased_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // Every write that passed the fence before the marker holds the bucket's
    // lock in shared mode until it ends: the exclusive lock waits them out,
    // and every later one sees the marker.
    let mut tx = shard.write().begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(FENCE_LOCK_CLASS)
        .bind(bucket)
        .execute(&mut *tx)
        .await?;
    delete_per_user_rows(&mut tx, user).await?;
    tx.commit().await?;
    Ok(())
}

async fn delete_per_user_rows(tx: &mut PgConnection, user: Uuid) -> AppResult<()> {
    for table in PER_USER_TABLES.iter().filter(|t| **t != "erased_users") {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE user_id = $1"
        )))
        .bind(user)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Counted {
    created_at: DateTime<Utc>,
    id: Uuid,
    upvotes: i32,
    downvotes: i32,
}

async fn erase_on_main(
    tx: &mut PgConnection,
    user: Uuid,
    per_user_here: bool,
) -> AppResult<Option<Erased>> {
    if per_user_here {
        // Before the account row: an attempt in flight holds its progress
        // row and then needs the account row; this waits for it instead of
        // deadlocking with it.
        delete_per_user_rows(&mut *tx, user).await?;
    }
    let exists: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND id <> $2 FOR UPDATE")
            .bind(user)
            .bind(DELETED_USER)
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Ok(None);
    }
    // The questions to lock: every one voted on, flagged, answered or asked
    // (the last so that two deletions lock in one order). New
    // votes, flags and answers wait for the account row; changes to existing
    // ones take the question's lock first, so after locking, the counts below
    // are exact.
    let mut touched: Vec<Uuid> = sqlx::query_scalar(
        "SELECT question_id FROM question_votes WHERE user_id = $1
         UNION
         SELECT question_id FROM question_flags WHERE user_id = $1
         UNION
         SELECT question_id FROM answers WHERE candidate_id = $1
         UNION
         SELECT id FROM questions WHERE author_id = $1",
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
    // Counted nowhere (answer pages count them when read): no lock needed.
    let rebuttals = sqlx::query("DELETE FROM rebuttals WHERE author_id = $1")
        .bind(user)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let profiles_unlinked = sqlx::query(
        "UPDATE candidate_profiles SET user_id = NULL, updated_at = now() WHERE user_id = $1",
    )
    .bind(user)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let answered: Vec<Uuid> =
        sqlx::query_scalar("DELETE FROM answers WHERE candidate_id = $1 RETURNING question_id")
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
    // Video answers go with their media: the prefixes are listed for the
    // worker's storage sweep in this transaction (docs/video.md).
    let videos: Vec<Uuid> =
        sqlx::query_scalar("DELETE FROM video_answers WHERE candidate_id = $1 RETURNING id")
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
    let garbage: Vec<String> = videos
        .iter()
        .flat_map(|v| crate::media::prefixes(*v))
        .collect();
    crate::video::add_garbage(tx, &garbage).await?;
    let mut times = Vec::with_capacity(locked.len());
    let mut ids = Vec::with_capacity(locked.len());
    let (mut ups, mut downs, mut flag_counts, mut answer_counts, mut hots) =
        (vec![], vec![], vec![], vec![], vec![]);
    let votes: HashMap<Uuid, i16> = votes.into_iter().collect();
    let flags: HashSet<Uuid> = flags.into_iter().collect();
    let answered: HashSet<Uuid> = answered.into_iter().collect();
    for q in &locked {
        let vote = votes.get(&q.id).copied();
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
        rebuttals,
        profiles_unlinked,
    }))
}
