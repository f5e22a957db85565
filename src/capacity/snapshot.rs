//! What the database holds now: the figures capacity planning starts from
//! (`refbackend capacity snapshot`) and the admin statistics
//! (`GET /api/v1/admin/stats`).
//!
//! Every count comes from a bounded query: users and exercises are counted,
//! attempts and votes are summed from the aggregates kept in the same
//! transaction as each write (`user_progress.attempts`, the questions'
//! up/down counters), so a snapshot never scans the event history. Per-table
//! row figures are the planner's estimates (`reltuples`), `null` for a table
//! never analyzed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::db::Db;

/// One table (all its partitions together) with its indexes and TOAST.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct TableSize {
    pub name: String,
    /// Partitions (0 for a plain table).
    pub partitions: i64,
    /// The planner's row estimate; null until the table is first analyzed.
    pub rows_estimate: Option<i64>,
    pub bytes: i64,
}

/// The database's contents at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    /// Registered accounts (active or not).
    pub users: i64,
    /// Accounts that signed in or refreshed a session since 00:00 UTC. Access
    /// tokens live minutes, so anyone using the service renews one.
    pub active_today: i64,
    pub exercises: i64,
    pub attempts: i64,
    pub questions: i64,
    pub votes: i64,
    pub answers: i64,
    pub database_bytes: i64,
    /// Largest first.
    pub tables: Vec<TableSize>,
}

/// Per-user tables: their size grows with registered users.
pub const PER_USER_TABLES: &[&str] = &[
    "users",
    "user_progress",
    "user_skill_stats",
    "review_cards",
    "user_weekly_xp",
    "refresh_families",
    "refresh_tokens",
];

/// Event tables: their size grows with every write request.
pub const EVENT_TABLES: &[&str] = &["attempts", "questions", "question_votes"];

impl Snapshot {
    /// Bytes of the named tables together.
    pub fn bytes_of(&self, names: &[&str]) -> i64 {
        self.tables
            .iter()
            .filter(|t| names.contains(&t.name.as_str()))
            .map(|t| t.bytes)
            .sum()
    }

    /// Rows the event tables hold (attempts, questions and votes).
    pub fn event_rows(&self) -> i64 {
        self.attempts + self.questions + self.votes
    }
}

#[derive(sqlx::FromRow)]
struct Counts {
    taken_at: DateTime<Utc>,
    users: i64,
    active_today: i64,
    exercises: i64,
    attempts: i64,
    questions: i64,
    votes: i64,
    answers: i64,
    database_bytes: i64,
}

/// Takes a snapshot on `pool` (a replica will do: the figures may be seconds
/// old). Two queries.
pub async fn take(pool: &PgPool) -> Result<Snapshot, sqlx::Error> {
    let counts: Counts = sqlx::query_as(
        "SELECT now() AS taken_at,
                (SELECT count(*) FROM users WHERE id <> '00000000-0000-0000-0000-000000000000') AS users,
                -- refresh_tokens_issued_idx: a range scan of today's tokens.
                (SELECT count(DISTINCT user_id) FROM refresh_tokens
                  WHERE issued_at >= date_trunc('day', now(), 'UTC')) AS active_today,
                (SELECT count(*) FROM exercises) AS exercises,
                (SELECT coalesce(sum(attempts), 0)::bigint FROM user_progress) AS attempts,
                (SELECT count(*) FROM questions) AS questions,
                -- Merged questions hand their votes over and keep zero.
                (SELECT coalesce(sum(upvotes + downvotes), 0)::bigint FROM questions) AS votes,
                (SELECT count(*) FROM answers) AS answers,
                pg_database_size(current_database()) AS database_bytes",
    )
    .fetch_one(pool)
    .await?;
    let tables = table_sizes(pool).await?;
    Ok(Snapshot {
        taken_at: counts.taken_at,
        users: counts.users,
        active_today: counts.active_today,
        exercises: counts.exercises,
        attempts: counts.attempts,
        questions: counts.questions,
        votes: counts.votes,
        answers: counts.answers,
        database_bytes: counts.database_bytes,
        tables,
    })
}

/// A snapshot of the whole deployment: main's, plus each shard's attempts,
/// bytes and tables (tables of the same name added up). Each database is
/// read through `Db::read` (a replica will do).
pub async fn take_all(db: &Db) -> Result<Snapshot, sqlx::Error> {
    let mut snapshot = db.read(|pool| async move { take(&pool).await }).await?;
    for shard in db.per_user_dbs().iter().skip(1) {
        let (attempts, bytes, tables) = shard
            .read(|pool| async move {
                let (attempts, bytes): (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT coalesce(sum(attempts), 0)::bigint FROM user_progress),
                            pg_database_size(current_database())",
                )
                .fetch_one(&pool)
                .await?;
                Ok((attempts, bytes, table_sizes(&pool).await?))
            })
            .await?;
        snapshot.attempts += attempts;
        snapshot.database_bytes += bytes;
        for table in tables {
            match snapshot.tables.iter_mut().find(|t| t.name == table.name) {
                Some(t) => {
                    t.partitions += table.partitions;
                    t.rows_estimate = t.rows_estimate.zip(table.rows_estimate).map(|(a, b)| a + b);
                    t.bytes += table.bytes;
                }
                None => snapshot.tables.push(table),
            }
        }
    }
    snapshot
        .tables
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    Ok(snapshot)
}

/// Top-level tables of the schema, each with its leaves: the partitions of
/// a partitioned table, or the plain table itself (pg_partition_tree gives
/// nothing for a plain table on some versions, the table on others).
async fn table_sizes(pool: &PgPool) -> Result<Vec<TableSize>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.relname::text AS name,
                count(*) FILTER (WHERE l.oid <> c.oid) AS partitions,
                CASE WHEN bool_or(l.reltuples < 0) THEN NULL
                     ELSE sum(l.reltuples)::bigint END AS rows_estimate,
                sum(pg_total_relation_size(l.oid))::bigint AS bytes
           FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           CROSS JOIN LATERAL (
                 SELECT t.relid FROM pg_partition_tree(c.oid) t
                  WHERE c.relkind = 'p' AND t.isleaf
                 UNION ALL
                 SELECT c.oid WHERE c.relkind = 'r'
           ) AS leaves (oid)
           JOIN pg_class l ON l.oid = leaves.oid
          WHERE n.nspname = current_schema()
            AND c.relkind IN ('r', 'p')
            AND NOT c.relispartition
          GROUP BY c.oid, c.relname
          ORDER BY bytes DESC, name",
    )
    .fetch_all(pool)
    .await
}
