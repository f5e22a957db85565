//! Time-partitioned tables: attempts by quarter, questions by month.
//!
//! Partitions are created ahead of time — at start-up, by the periodic
//! maintenance task and by `refbackend partitions ensure` — under an advisory
//! lock, so several instances starting together create each partition once.
//! Rows that no partition covers land in the table's DEFAULT partition; that
//! is reported (log, `partitions list`, `db_partition_default_rows`) and when
//! the missing partition is created its rows are moved out of the default in
//! the same transaction.

use chrono::{Datelike, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool};

/// Key of the advisory lock that serializes partition maintenance.
pub(crate) const LOCK_KEY: i64 = 0x7061_7274_6974_696f; // "partitio"

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Quarter,
}

/// A table partitioned by range on a timestamptz column.
#[derive(Clone, Copy, Debug)]
pub struct PartitionedTable {
    pub table: &'static str,
    pub column: &'static str,
    pub period: Period,
}

/// Every partitioned table the service maintains.
pub const TABLES: &[PartitionedTable] = &[
    PartitionedTable {
        table: "attempts",
        column: "created_at",
        period: Period::Quarter,
    },
    PartitionedTable {
        table: "questions",
        column: "created_at",
        period: Period::Month,
    },
];

/// How many periods after the current one to keep created.
pub const DEFAULT_AHEAD: u32 = 2;

impl Period {
    /// The first day of the period containing `day`.
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        let month = match self {
            Period::Month => day.month(),
            Period::Quarter => (day.month() - 1) / 3 * 3 + 1,
        };
        NaiveDate::from_ymd_opt(day.year(), month, 1).unwrap_or(day)
    }

    /// The first day of the next period.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        let months = match self {
            Period::Month => 1,
            Period::Quarter => 3,
        };
        start
            .checked_add_months(chrono::Months::new(months))
            .unwrap_or(start)
    }

    /// `2026q4` or `2026m11`: sorts in time order, and is a valid identifier part.
    pub fn suffix(self, start: NaiveDate) -> String {
        match self {
            Period::Month => format!("{}m{:02}", start.year(), start.month()),
            Period::Quarter => format!("{}q{}", start.year(), (start.month() - 1) / 3 + 1),
        }
    }
}

impl PartitionedTable {
    /// (name, from, to) of the current period and `ahead` periods after it.
    pub fn wanted(&self, today: NaiveDate, ahead: u32) -> Vec<(String, NaiveDate, NaiveDate)> {
        let mut start = self.period.start_of(today);
        let mut out = Vec::new();
        for _ in 0..=ahead {
            let end = self.period.next(start);
            out.push((
                format!("{}_{}", self.table, self.period.suffix(start)),
                start,
                end,
            ));
            start = end;
        }
        out
    }

    fn default_partition(&self) -> String {
        format!("{}_default", self.table)
    }
}

/// One existing partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionInfo {
    pub table: String,
    pub partition: String,
    /// `FOR VALUES FROM (...) TO (...)`, or `DEFAULT`.
    pub bounds: String,
    /// Planner estimate (cheap); exact for the default partition.
    pub rows: i64,
}

/// The maintained tables this database has: all of them on main, `attempts`
/// on a shard (it holds no CivicQ data).
pub async fn present(pool: &PgPool) -> Result<Vec<PartitionedTable>, sqlx::Error> {
    let names: Vec<&str> = TABLES.iter().map(|t| t.table).collect();
    let here: Vec<String> = sqlx::query_scalar(
        "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
    )
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok(TABLES
        .iter()
        .filter(|t| here.iter().any(|h| h == t.table))
        .copied()
        .collect())
}

/// Creates the missing partitions of every table for the current period and
/// `ahead` more; returns the names it created.
pub async fn ensure(pool: &PgPool, ahead: u32) -> Result<Vec<String>, sqlx::Error> {
    let today = Utc::now().date_naive();
    let tables = present(pool).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let mut created = Vec::new();
    for spec in &tables {
        for (name, from, to) in spec.wanted(today, ahead) {
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await?;
            if exists {
                continue;
            }
            // Names and dates come from the constants above and chrono, never
            // from input; identifiers are still quoted.
            let default = spec.default_partition();
            let strays: bool = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM \"{default}\" WHERE \"{col}\" >= $1 AND \"{col}\" < $2)",
                col = spec.column
            )))
            .bind(from)
            .bind(to)
            .fetch_one(&mut *tx)
            .await?;
            if strays {
                // Move the default partition's rows of this range into the
                // new partition, then attach it: nothing is lost or doubled.
                // Generated columns are recomputed, so they are not copied.
                let columns: String = sqlx::query_scalar(
                    "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
                       FROM pg_attribute
                      WHERE attrelid = $1::regclass AND attnum > 0
                        AND NOT attisdropped AND attgenerated = ''",
                )
                .bind(spec.table)
                .fetch_one(&mut *tx)
                .await?;
                for statement in [
                    format!(
                        "CREATE TABLE \"{name}\" (LIKE \"{table}\" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)",
                        table = spec.table
                    ),
                    format!(
                        "WITH moved AS (DELETE FROM \"{default}\" WHERE \"{col}\" >= '{from}' AND \"{col}\" < '{to}' RETURNING *)
                         INSERT INTO \"{name}\" ({columns}) SELECT {columns} FROM moved",
                        col = spec.column
                    ),
                    format!(
                        "ALTER TABLE \"{table}\" ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{from}') TO ('{to}')",
                        table = spec.table
                    ),
                ] {
                    sqlx::query(AssertSqlSafe(statement))
                        .execute(&mut *tx)
                        .await?;
                }
                tracing::warn!(partition = %name, "created a partition and moved its rows out of the default partition");
            } else {
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TABLE \"{name}\" PARTITION OF \"{table}\" FOR VALUES FROM ('{from}') TO ('{to}')",
                    table = spec.table
                )))
                .execute(&mut *tx)
                .await?;
            }
            created.push(name);
        }
    }
    tx.commit().await?;
    Ok(created)
}

/// Every partition of every maintained table, in time order.
pub async fn list(pool: &PgPool) -> Result<Vec<PartitionInfo>, sqlx::Error> {
    let mut out = Vec::new();
    for spec in &present(pool).await? {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid),
                    greatest(c.reltuples, 0)::int8
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = $1::regclass
              ORDER BY c.relname",
        )
        .bind(spec.table)
        .fetch_all(pool)
        .await?;
        for (partition, bounds, estimate) in rows {
            let rows = if bounds == "DEFAULT" {
                default_rows(pool, spec).await?
            } else {
                estimate
            };
            out.push(PartitionInfo {
                table: spec.table.to_owned(),
                partition,
                bounds,
                rows,
            });
        }
    }
    Ok(out)
}

/// Rows in `spec`'s default partition (should be 0).
pub async fn default_rows(pool: &PgPool, spec: &PartitionedTable) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{}\"",
        spec.default_partition()
    )))
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    #[test]
    fn quarters_start_in_january_april_july_and_october() {
        assert_eq!(
            Period::Quarter.start_of(day(2026, 11, 22)),
            day(2026, 10, 1)
        );
        assert_eq!(Period::Quarter.start_of(day(2026, 3, 31)), day(2026, 1, 1));
        assert_eq!(Period::Quarter.next(day(2026, 10, 1)), day(2027, 1, 1));
        assert_eq!(Period::Quarter.suffix(day(2026, 10, 1)), "2026q4");
        assert_eq!(Period::Month.suffix(day(2026, 2, 1)), "2026m02");
    }

    #[test]
    fn wanted_partitions_are_contiguous_from_the_current_period() {
        let spec = PartitionedTable {
            table: "attempts",
            column: "created_at",
            period: Period::Quarter,
        };
        let wanted = spec.wanted(day(2026, 11, 22), 2);
        let names: Vec<&str> = wanted.iter().map(|w| w.0.as_str()).collect();
        assert_eq!(
            names,
            ["attempts_2026q4", "attempts_2027q1", "attempts_2027q2"]
        );
        assert!(wanted.windows(2).all(|w| w[0].2 == w[1].1), "no gaps");
        let months = PartitionedTable {
            table: "questions",
            column: "created_at",
            period: Period::Month,
        };
        let wanted = months.wanted(day(2026, 12, 31), 1);
        assert_eq!(wanted[1].0, "questions_2027m01");
        assert_eq!(wanted[1].1, day(2027, 1, 1));
    }
}
