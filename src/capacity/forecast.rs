//! The capacity forecast: from users to requests, to API instances, database
//! nodes, storage and cost, month by month. Pure arithmetic, no I/O: the
//! measured inputs (load-test throughput, a database snapshot) are read by
//! `capacity::inputs` and arrive here as [`Assumed`] values that carry where
//! they came from, so a plan always shows what it rests on.
//!
//! The model, per month `m` (docs/operations.md, "Capacity planning"):
//! - users `u = u0 · (1 + growth)^m`; daily active `a = u · active_share`;
//! - peak request rate `p = a · requests_per_active_user / 86 400 · peak_factor`;
//! - API instances `⌈p / (instance_rps · target_utilization)⌉`, at least
//!   `min_instances`;
//! - writes `w = p · write_share` go to a primary: shards (primaries)
//!   `⌈w / (db_write_rps · u_t)⌉`, or more when one node would hold more than
//!   `max_node_gb`;
//! - reads `p − w` stay on the primaries while they have room next to the
//!   writes, else go to replicas: `⌈(p − w) / (db_read_rps · u_t)⌉` of them,
//!   spread over the shards;
//! - storage grows by the new users' rows and every write's rows; each
//!   replica holds a full copy of its shard;
//! - cost is instances, database nodes, storage on every node and Redis.

use serde::{Deserialize, Serialize};

/// Seconds in a day, and days in an average month.
const DAY_SECONDS: f64 = 86_400.0;
const MONTH_DAYS: f64 = 30.44;
const GB: f64 = 1e9;

/// An input value and where it came from ("given", "default", or a
/// measurement with its figures).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assumed {
    pub value: f64,
    pub source: String,
}

impl Assumed {
    pub fn new(value: f64, source: impl Into<String>) -> Self {
        Self {
            value,
            source: source.into(),
        }
    }
}

/// Monthly unit costs, in one currency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitCosts {
    /// One API instance (the k8s overlay's 1 CPU / 512 MiB limit).
    pub instance: f64,
    /// One Postgres node (primary or replica), compute only.
    pub db_node: f64,
    /// One GB of database storage on one node.
    pub storage_gb: f64,
    /// The Redis service, whatever the size (its load is small: see the docs).
    pub redis: f64,
}

/// Everything a forecast is computed from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// Registered users now.
    pub users: Assumed,
    /// Growth of registered users per month (0.2 = +20 %).
    pub monthly_growth: Assumed,
    pub months: u32,
    /// Share of registered users active on a given day.
    pub active_share: Assumed,
    /// Requests one active user makes per day.
    pub requests_per_active_user: Assumed,
    /// The peak hour's request rate over the day's average.
    pub peak_factor: Assumed,
    /// Share of requests that write to the primary.
    pub write_share: Assumed,
    /// Requests per second one API instance serves at 100 % of its CPU.
    pub instance_rps: Assumed,
    /// Planned utilization of every node at the peak (the HPA's 70 %).
    pub target_utilization: Assumed,
    pub min_instances: u32,
    pub min_replicas: u32,
    /// Reads per second one Postgres node serves at 100 %.
    pub db_read_rps: Assumed,
    /// Write requests per second one primary absorbs at 100 %.
    pub db_write_rps: Assumed,
    /// Database size now, in bytes.
    pub base_bytes: Assumed,
    /// Bytes each registered user adds (account, progress, review cards…).
    pub bytes_per_user: Assumed,
    /// Bytes each write request adds (an attempt, a vote, a question…).
    pub bytes_per_write: Assumed,
    /// Largest database a single node should hold before sharding, in GB.
    pub max_node_gb: Assumed,
    pub costs: UnitCosts,
}

/// One month of the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Month {
    pub month: u32,
    pub users: u64,
    pub daily_active: u64,
    /// Requests per second in the peak hour.
    pub peak_rps: f64,
    /// The scaling stage (DESIGN.md) this month's plan belongs to.
    pub stage: u8,
    pub api_instances: u32,
    /// Primaries: 1 until per-user sharding is needed.
    pub db_shards: u32,
    pub replicas_per_shard: u32,
    /// Logical database size (one copy), in GB.
    pub storage_gb: f64,
    pub cost_per_month: f64,
}

/// A plan: the inputs as used, and one row per month from now (month 0).
#[derive(Clone, Debug, Serialize)]
pub struct Forecast {
    pub inputs: Inputs,
    pub months: Vec<Month>,
}

/// The longest horizon accepted: compounding past ten years says nothing.
pub const MAX_MONTHS: u32 = 120;

impl Inputs {
    /// Every input that cannot make a meaningful plan, with the reason.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |name: &str, ok: bool, rule: &str| {
            if !ok {
                problems.push(format!("{name} {rule}"));
            }
        };
        let finite_at_least = |a: &Assumed, min: f64| a.value.is_finite() && a.value >= min;
        let share = |a: &Assumed| a.value.is_finite() && (0.0..=1.0).contains(&a.value);
        let positive = |a: &Assumed| a.value.is_finite() && a.value > 0.0;
        check("users", finite_at_least(&self.users, 0.0), "must be ≥ 0");
        check(
            "monthly growth",
            self.monthly_growth.value.is_finite()
                && self.monthly_growth.value > -1.0
                && self.monthly_growth.value <= 10.0,
            "must be in (-1, 10]",
        );
        check(
            "months",
            self.months <= MAX_MONTHS,
            &format!("must be at most {MAX_MONTHS}"),
        );
        check(
            "active share",
            share(&self.active_share),
            "must be in [0, 1]",
        );
        check("write share", share(&self.write_share), "must be in [0, 1]");
        check(
            "requests per active user",
            finite_at_least(&self.requests_per_active_user, 0.0),
            "must be ≥ 0",
        );
        check(
            "peak factor",
            finite_at_least(&self.peak_factor, 1.0),
            "must be ≥ 1",
        );
        check(
            "target utilization",
            self.target_utilization.value.is_finite()
                && self.target_utilization.value > 0.0
                && self.target_utilization.value <= 1.0,
            "must be in (0, 1]",
        );
        check(
            "instance req/s",
            positive(&self.instance_rps),
            "must be > 0",
        );
        check(
            "database reads/s",
            positive(&self.db_read_rps),
            "must be > 0",
        );
        check(
            "database writes/s",
            positive(&self.db_write_rps),
            "must be > 0",
        );
        check(
            "max GB per node",
            positive(&self.max_node_gb),
            "must be > 0",
        );
        for (name, value) in [
            ("base bytes", &self.base_bytes),
            ("bytes per user", &self.bytes_per_user),
            ("bytes per write", &self.bytes_per_write),
        ] {
            check(name, finite_at_least(value, 0.0), "must be ≥ 0");
        }
        let c = &self.costs;
        for (name, value) in [
            ("instance cost", c.instance),
            ("database node cost", c.db_node),
            ("storage cost", c.storage_gb),
            ("Redis cost", c.redis),
        ] {
            check(name, value.is_finite() && value >= 0.0, "must be ≥ 0");
        }
        problems
    }
}

/// `⌈x⌉` as a count, for non-negative finite `x` (saturating).
fn count(x: f64) -> u32 {
    let up = x.ceil();
    if up <= 0.0 {
        0
    } else if up >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        up as u32
    }
}

/// The scaling stage (DESIGN.md's table) this month's plan deploys: what it
/// needs, not the user count the table names, which assumes a typical load
/// per user (a light service can serve 100k users at stage 2).
fn stage(instances: u32, shards: u32, replicas: u32) -> u8 {
    if shards > 1 {
        4
    } else if replicas > 0 {
        3
    } else if instances > 1 {
        2
    } else {
        1
    }
}

/// Computes the plan. Call [`Inputs::problems`] first: invalid inputs give a
/// meaningless (though finite) plan, never a panic.
pub fn forecast(inputs: &Inputs) -> Forecast {
    let i = inputs;
    let utilization = i.target_utilization.value;
    let mut cumulative_writes = 0.0;
    let mut months = Vec::with_capacity(i.months as usize + 1);
    for m in 0..=i.months {
        let users = i.users.value * (1.0 + i.monthly_growth.value).powi(m as i32);
        let active = users * i.active_share.value;
        let daily_requests = active * i.requests_per_active_user.value;
        let daily_writes = daily_requests * i.write_share.value;
        // Month 0 is today's database; each later month adds a month of writes.
        if m > 0 {
            cumulative_writes += daily_writes * MONTH_DAYS;
        }
        let peak = daily_requests / DAY_SECONDS * i.peak_factor.value;
        let peak_writes = peak * i.write_share.value;
        let peak_reads = peak - peak_writes;

        let instances =
            count(peak / (i.instance_rps.value * utilization)).max(i.min_instances.max(1));

        let storage_bytes = i.base_bytes.value
            + (users - i.users.value).max(0.0) * i.bytes_per_user.value
            + cumulative_writes * i.bytes_per_write.value;
        let storage_gb = storage_bytes / GB;
        let shards = count(peak_writes / (i.db_write_rps.value * utilization))
            .max(count(storage_gb / i.max_node_gb.value))
            .max(1);

        // The primaries' room for reads next to their writes, in reads/s.
        let write_load = peak_writes / (f64::from(shards) * i.db_write_rps.value);
        let primary_read_room =
            f64::from(shards) * i.db_read_rps.value * (utilization - write_load).max(0.0);
        let replicas_total = if peak_reads <= primary_read_room {
            0
        } else {
            count(peak_reads / (i.db_read_rps.value * utilization))
        };
        let replicas_per_shard = replicas_total.div_ceil(shards).max(i.min_replicas);

        let copies = 1.0 + f64::from(replicas_per_shard);
        let db_nodes = f64::from(shards) * copies;
        let c = &i.costs;
        let cost = f64::from(instances) * c.instance
            + db_nodes * c.db_node
            + storage_gb * copies * c.storage_gb
            + c.redis;

        months.push(Month {
            month: m,
            users: users.round() as u64,
            daily_active: active.round() as u64,
            peak_rps: round2(peak),
            stage: stage(instances, shards, replicas_per_shard),
            api_instances: instances,
            db_shards: shards,
            replicas_per_shard,
            storage_gb: round2(storage_gb),
            cost_per_month: round2(cost),
        });
    }
    Forecast {
        inputs: inputs.clone(),
        months,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(value: f64) -> Assumed {
        Assumed::new(value, "given")
    }

    /// Round numbers that make the arithmetic checkable by hand.
    fn inputs() -> Inputs {
        Inputs {
            users: given(100_000.0),
            monthly_growth: given(0.0),
            months: 0,
            active_share: given(0.2),
            requests_per_active_user: given(432.0),
            peak_factor: given(2.0),
            write_share: given(0.25),
            instance_rps: given(100.0),
            target_utilization: given(0.5),
            min_instances: 2,
            min_replicas: 0,
            db_read_rps: given(1_000.0),
            db_write_rps: given(1_000.0),
            base_bytes: given(10e9),
            bytes_per_user: given(10_000.0),
            bytes_per_write: given(500.0),
            max_node_gb: given(1_000.0),
            costs: UnitCosts {
                instance: 10.0,
                db_node: 100.0,
                storage_gb: 1.0,
                redis: 50.0,
            },
        }
    }

    #[test]
    fn peak_rate_and_instances_follow_from_users_by_hand() {
        // 100k users × 20 % = 20k active × 432 req = 8.64 M req/day = 100 req/s,
        // × 2 at the peak = 200 req/s; at 50 of 100 req/s per instance: 4.
        let plan = forecast(&inputs());
        let now = &plan.months[0];
        assert_eq!(now.daily_active, 20_000);
        assert_eq!(now.peak_rps, 200.0);
        assert_eq!(now.api_instances, 4);
        // 50 writes/s use 5 % of one primary, which keeps room for the 150
        // reads/s: no replica needed.
        assert_eq!(now.db_shards, 1);
        assert_eq!(now.replicas_per_shard, 0);
        assert_eq!(now.storage_gb, 10.0);
        // 4 × 10 + 1 node × 100 + 10 GB × 1 + 50.
        assert_eq!(now.cost_per_month, 200.0);
        assert_eq!(
            now.stage, 2,
            "the plan's needs set the stage, not the user count"
        );
    }

    #[test]
    fn a_small_service_gets_the_minimum_instances_and_no_replica() {
        let mut i = inputs();
        i.users = given(500.0);
        i.min_instances = 1;
        let now = &forecast(&i).months[0];
        assert_eq!(now.api_instances, 1);
        assert_eq!(now.replicas_per_shard, 0);
        assert_eq!(now.stage, 1);
    }

    #[test]
    fn reads_beyond_the_primarys_room_go_to_replicas_with_their_own_storage() {
        let mut i = inputs();
        i.db_read_rps = given(200.0);
        // Peak reads 150/s; the primary has 200 × (0.5 − 0.05) = 90 reads/s of
        // room, so replicas take them all: ⌈150 / 100⌉ = 2.
        let now = &forecast(&i).months[0];
        assert_eq!(now.replicas_per_shard, 2);
        // Three nodes, each with the 10 GB: 4 × 10 + 3 × 100 + 30 + 50.
        assert_eq!(now.cost_per_month, 420.0);
        assert!(now.stage >= 3);
    }

    #[test]
    fn writes_past_one_primary_split_the_users_into_shards() {
        let mut i = inputs();
        i.db_write_rps = given(40.0);
        // 50 writes/s at 20 per primary (40 × 0.5): 3 shards.
        let now = &forecast(&i).months[0];
        assert_eq!(now.db_shards, 3);
        assert_eq!(now.stage, 4);
    }

    #[test]
    fn a_database_past_the_node_size_is_sharded_too() {
        let mut i = inputs();
        i.max_node_gb = given(4.0);
        assert_eq!(forecast(&i).months[0].db_shards, 3, "10 GB over 4 GB nodes");
    }

    #[test]
    fn growth_compounds_monthly_and_storage_accumulates_the_writes() {
        let mut i = inputs();
        i.monthly_growth = given(0.5);
        i.months = 2;
        let plan = forecast(&i);
        let users: Vec<u64> = plan.months.iter().map(|m| m.users).collect();
        assert_eq!(users, vec![100_000, 150_000, 225_000]);
        // Month 1: 50k new users × 10 kB = 0.5 GB, plus a month of writes:
        // 30k active × 432 × 0.25 × 30.44 days × 500 B = 49.31 GB.
        let expected = 10.0 + 0.5 + 30_000.0 * 432.0 * 0.25 * 30.44 * 500.0 / 1e9;
        assert!((plan.months[1].storage_gb - expected).abs() < 0.01);
        assert!(plan.months[2].storage_gb > plan.months[1].storage_gb);
        assert!(plan.months[2].api_instances > plan.months[0].api_instances);
    }

    #[test]
    fn the_minimum_replicas_are_kept_even_when_the_primary_could_serve_every_read() {
        let mut i = inputs();
        i.min_replicas = 1;
        assert_eq!(forecast(&i).months[0].replicas_per_shard, 1);
    }

    #[test]
    fn nonsense_inputs_are_each_named() {
        let mut i = inputs();
        i.active_share = given(1.5);
        i.instance_rps = given(0.0);
        i.monthly_growth = given(-1.0);
        i.months = 1_000;
        i.costs.redis = f64::NAN;
        let problems = i.problems();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("active share")));
        assert!(inputs().problems().is_empty());
    }

    #[test]
    fn zero_users_plan_one_instance_and_cost_the_fixed_part() {
        let mut i = inputs();
        i.users = given(0.0);
        i.base_bytes = given(0.0);
        i.min_instances = 0;
        let now = &forecast(&i).months[0];
        assert_eq!((now.api_instances, now.db_shards), (1, 1));
        assert_eq!(now.cost_per_month, 160.0);
    }
}
