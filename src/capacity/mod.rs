//! Capacity planning: what the database holds now ([`snapshot`]), and how
//! many instances, database nodes, storage and money the next months need
//! ([`forecast`]), from measured throughput ([`inputs`]). Printed as a
//! table, CSV or JSON (`refbackend capacity snapshot|forecast`).

pub mod forecast;
pub mod inputs;
pub mod snapshot;

use std::fmt::Write as _;

use forecast::{Assumed, Forecast};
use inputs::Format;
use snapshot::Snapshot;

/// Thousands separators, for tables people read.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A forecast in the requested format.
pub fn render_forecast(plan: &Forecast, format: Format) -> anyhow::Result<String> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(plan)? + "\n"),
        Format::Csv => {
            let mut out = String::from(
                "month,users,daily_active,peak_rps,stage,api_instances,db_shards,replicas_per_shard,storage_gb,cost_per_month\n",
            );
            for m in &plan.months {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{}",
                    m.month,
                    m.users,
                    m.daily_active,
                    m.peak_rps,
                    m.stage,
                    m.api_instances,
                    m.db_shards,
                    m.replicas_per_shard,
                    m.storage_gb,
                    m.cost_per_month
                )?;
            }
            Ok(out)
        }
        Format::Table => {
            let mut out = format!(
                "{:>5} {:>12} {:>10} {:>10} {:>5} {:>4} {:>6} {:>8} {:>11} {:>12}\n",
                "month",
                "users",
                "active/day",
                "peak req/s",
                "stage",
                "api",
                "shards",
                "replicas",
                "storage GB",
                "cost/month"
            );
            for m in &plan.months {
                writeln!(
                    out,
                    "{:>5} {:>12} {:>10} {:>10.1} {:>5} {:>4} {:>6} {:>8} {:>11.2} {:>12}",
                    m.month,
                    grouped(m.users),
                    grouped(m.daily_active),
                    m.peak_rps,
                    m.stage,
                    m.api_instances,
                    m.db_shards,
                    m.replicas_per_shard,
                    m.storage_gb,
                    grouped(m.cost_per_month.round() as u64)
                )?;
            }
            out += "\n(replicas: per shard; storage: one copy; cost: per month, in the unit costs' currency)\n\nassumptions:\n";
            let i = &plan.inputs;
            let rows: [(&str, &Assumed, &str); 14] = [
                ("users now", &i.users, ""),
                ("monthly growth", &i.monthly_growth, "× 100 %"),
                ("active share of users a day", &i.active_share, "× 100 %"),
                (
                    "requests per active user a day",
                    &i.requests_per_active_user,
                    "",
                ),
                ("peak hour / daily average", &i.peak_factor, ""),
                ("write share of requests", &i.write_share, "× 100 %"),
                ("req/s per API instance at 100 % CPU", &i.instance_rps, ""),
                ("target utilization", &i.target_utilization, "× 100 %"),
                ("reads/s per database node at 100 %", &i.db_read_rps, ""),
                ("writes/s per primary at 100 %", &i.db_write_rps, ""),
                ("database bytes now", &i.base_bytes, ""),
                ("bytes per user", &i.bytes_per_user, ""),
                ("bytes per write", &i.bytes_per_write, ""),
                ("GB per database node before sharding", &i.max_node_gb, ""),
            ];
            for (name, a, unit) in rows {
                let value = if unit.is_empty() {
                    if a.value >= 10_000.0 {
                        grouped(a.value.round() as u64)
                    } else {
                        format!("{:.1}", a.value)
                    }
                } else {
                    format!("{:.1} %", a.value * 100.0)
                };
                writeln!(out, "  {name:<38} {value:>14}  {}", a.source)?;
            }
            let c = &i.costs;
            writeln!(
                out,
                "  {:<38} {:>14}  instance {} · database node {} · storage GB {} · Redis {}",
                "unit costs per month", "", c.instance, c.db_node, c.storage_gb, c.redis
            )?;
            writeln!(
                out,
                "  {:<38} {:>14}  at least {} API instance(s), {} replica(s) per shard",
                "minimums", "", i.min_instances, i.min_replicas
            )?;
            Ok(out)
        }
    }
}

/// A snapshot in the requested format.
pub fn render_snapshot(s: &Snapshot, format: Format) -> anyhow::Result<String> {
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(s)? + "\n"),
        Format::Csv => {
            let mut out = String::from("table,partitions,rows_estimate,bytes\n");
            for t in &s.tables {
                let rows = t.rows_estimate.map(|r| r.to_string()).unwrap_or_default();
                writeln!(out, "{},{},{rows},{}", t.name, t.partitions, t.bytes)?;
            }
            Ok(out)
        }
        Format::Table => {
            let mut out = format!("snapshot at {}\n", s.taken_at.to_rfc3339());
            let figures: [(&str, i64); 8] = [
                ("users", s.users),
                ("active today (UTC)", s.active_today),
                ("exercises", s.exercises),
                ("attempts", s.attempts),
                ("questions", s.questions),
                ("votes", s.votes),
                ("candidate answers", s.answers),
                ("database bytes", s.database_bytes),
            ];
            for (name, value) in figures {
                writeln!(out, "  {name:<20} {:>15}", grouped(value.max(0) as u64))?;
            }
            writeln!(
                out,
                "\n  {:<24} {:>10} {:>14} {:>12}",
                "table", "partitions", "rows (est.)", "size"
            )?;
            for t in &s.tables {
                let rows = t
                    .rows_estimate
                    .map(|r| grouped(r.max(0) as u64))
                    .unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "  {:<24} {:>10} {:>14} {:>12}",
                    t.name,
                    t.partitions,
                    rows,
                    mb(t.bytes)
                )?;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_numbers_get_thousands_separators() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
