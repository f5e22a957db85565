//! `capacity forecast`'s options, and the measurements they can be read from:
//! a load-test output folder (`scripts/loadtest`: summary.json, resources.json,
//! snapshot.json) and a production snapshot (`capacity snapshot --format json`).
//! An option given on the command line always wins over a measurement, and a
//! measurement over a default; every value keeps its source.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use super::forecast::{Assumed, Inputs, UnitCosts};
use super::snapshot::{EVENT_TABLES, PER_USER_TABLES, Snapshot};

/// How a plan or snapshot is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Options of `refbackend capacity forecast`.
#[derive(Clone, Debug, clap::Args)]
pub struct ForecastArgs {
    /// Registered users now (default: the snapshot's).
    #[arg(long)]
    pub users: Option<f64>,
    /// Growth of registered users per month (0.2 = +20 % a month).
    #[arg(long, default_value_t = 0.2)]
    pub growth: f64,
    /// Months to plan ahead.
    #[arg(long, default_value_t = 12)]
    pub months: u32,
    /// A load-test output folder (scripts/loadtest's OUT): its summary.json
    /// gives the throughput and the share of writes, resources.json the API's
    /// CPU use during the run, snapshot.json the bytes per user and per write.
    #[arg(long, value_name = "DIR")]
    pub loadtest: Option<PathBuf>,
    /// A production snapshot (`capacity snapshot --format json`): users now,
    /// the share active today, today's database size.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Requests per second one API instance serves at 100 % of its CPU
    /// (instead of the load test's).
    #[arg(long)]
    pub instance_rps: Option<f64>,
    /// CPUs of one API instance (the k8s limit is 1).
    #[arg(long, default_value_t = 1.0)]
    pub instance_cpus: f64,
    /// Share of registered users active on a day [default: the snapshot's, else 0.2].
    #[arg(long)]
    pub active_share: Option<f64>,
    /// Requests one active user makes a day.
    #[arg(long, default_value_t = DEFAULT_REQUESTS_PER_ACTIVE_USER)]
    pub requests_per_active_user: f64,
    /// The peak hour's request rate over the daily average.
    #[arg(long, default_value_t = 3.0)]
    pub peak_factor: f64,
    /// Share of requests that write [default: the load test's, else 0.25].
    #[arg(long)]
    pub write_share: Option<f64>,
    /// Planned utilization of every node at the peak (the HPA targets 70 %).
    #[arg(long, default_value_t = 0.7)]
    pub target_utilization: f64,
    #[arg(long, default_value_t = 2)]
    pub min_instances: u32,
    #[arg(long, default_value_t = 0)]
    pub min_replicas: u32,
    /// Reads per second one Postgres node serves at 100 % of a core.
    #[arg(long, default_value_t = DEFAULT_DB_READ_RPS)]
    pub db_read_rps: f64,
    /// Write requests per second one primary absorbs at 100 % of a core.
    #[arg(long, default_value_t = DEFAULT_DB_WRITE_RPS)]
    pub db_write_rps: f64,
    /// Bytes each registered user adds [default: measured, else 8192].
    #[arg(long)]
    pub bytes_per_user: Option<f64>,
    /// Bytes each write adds [default: measured, else 400].
    #[arg(long)]
    pub bytes_per_write: Option<f64>,
    /// Largest database one node should hold, in GB, before sharding.
    #[arg(long, default_value_t = 500.0)]
    pub max_node_gb: f64,
    /// Monthly cost of one API instance (1 CPU, 512 MiB).
    #[arg(long, default_value_t = 25.0)]
    pub cost_instance: f64,
    /// Monthly cost of one Postgres node (2 vCPU, 8 GiB), compute only.
    #[arg(long, default_value_t = 150.0)]
    pub cost_db_node: f64,
    /// Monthly cost of one GB of database storage on one node.
    #[arg(long, default_value_t = 0.12)]
    pub cost_storage_gb: f64,
    /// Monthly cost of Redis.
    #[arg(long, default_value_t = 40.0)]
    pub cost_redis: f64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A learner's session of ~10 minutes: an answer every ~15 s, each one the
/// practice journey's five requests (next item, attempt, progress…).
pub const DEFAULT_REQUESTS_PER_ACTIVE_USER: f64 = 200.0;
/// docs/benchmarks.md: bare axum + sqlx primary-key SELECTs reached 4.7k–12k/s
/// with Postgres sharing one core with the server; the lower end, rounded down.
pub const DEFAULT_DB_READ_RPS: f64 = 4_000.0;
/// docs/benchmarks.md: attempts (the heaviest common write: five statements
/// in one transaction) on one core shared by the server and Postgres.
pub const DEFAULT_DB_WRITE_RPS: f64 = 500.0;

/// What `summary.json` holds that the forecast reads.
#[derive(Deserialize)]
struct Summary {
    total: RequestStats,
    requests: std::collections::BTreeMap<String, RequestStats>,
}

#[derive(Deserialize)]
struct RequestStats {
    count: f64,
    rps: f64,
}

#[derive(Deserialize)]
struct Resources {
    cpu_percent_avg: f64,
}

/// Measurements from a load test's output folder.
struct LoadTest {
    dir: PathBuf,
    rps: f64,
    /// CPU of all API instances together, in cores (None: not sampled).
    cores: Option<f64>,
    write_share: f64,
    writes: f64,
    requests: f64,
    snapshot: Option<Snapshot>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn is_write(name: &str) -> bool {
    ["POST ", "PUT ", "PATCH ", "DELETE "]
        .iter()
        .any(|m| name.starts_with(m))
}

impl LoadTest {
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let summary: Summary = read_json(&dir.join("summary.json"))?;
        let resources = dir.join("resources.json");
        let cores = if resources.exists() {
            let rows: Vec<Resources> = read_json(&resources)?;
            Some(rows.iter().map(|r| r.cpu_percent_avg).sum::<f64>() / 100.0)
        } else {
            None
        };
        let snapshot_file = dir.join("snapshot.json");
        let snapshot = if snapshot_file.exists() {
            Some(read_json(&snapshot_file)?)
        } else {
            None
        };
        let writes: f64 = summary
            .requests
            .iter()
            .filter(|(name, _)| is_write(name))
            .map(|(_, s)| s.count)
            .sum();
        let requests = summary.total.count;
        if requests <= 0.0 || summary.total.rps <= 0.0 {
            bail!("{}: the load test made no requests", dir.display());
        }
        Ok(Self {
            dir: dir.to_owned(),
            rps: summary.total.rps,
            cores: cores.filter(|c| *c > 0.0),
            write_share: writes / requests,
            writes,
            requests,
            snapshot,
        })
    }
}

/// Bytes per user and per write measured in a snapshot, when it holds enough
/// of both to mean something.
fn storage_ratios(snapshot: &Snapshot) -> Option<(f64, f64)> {
    let events = snapshot.event_rows();
    let (user_bytes, event_bytes) = (
        snapshot.bytes_of(PER_USER_TABLES),
        snapshot.bytes_of(EVENT_TABLES),
    );
    if snapshot.users < 10 || events < 100 || user_bytes <= 0 || event_bytes <= 0 {
        return None;
    }
    Some((
        user_bytes as f64 / snapshot.users as f64,
        event_bytes as f64 / events as f64,
    ))
}

fn pick(given: Option<f64>, measured: Option<Assumed>, default: f64) -> Assumed {
    match (given, measured) {
        (Some(v), _) => Assumed::new(v, "given"),
        (None, Some(m)) => m,
        (None, None) => Assumed::new(default, "default"),
    }
}

impl ForecastArgs {
    /// The forecast's inputs: options, then measurements, then defaults.
    pub fn inputs(&self) -> anyhow::Result<Inputs> {
        let load = self.loadtest.as_deref().map(LoadTest::read).transpose()?;
        let production: Option<Snapshot> = self.snapshot.as_deref().map(read_json).transpose()?;
        let snapshot_name = || {
            self.snapshot
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };

        let users = match (self.users, &production) {
            (Some(u), _) => Assumed::new(u, "given"),
            (None, Some(s)) => {
                Assumed::new(s.users as f64, format!("snapshot {}", snapshot_name()))
            }
            (None, None) => bail!("give --users N, or --snapshot FILE to start from its users"),
        };
        let active = production
            .as_ref()
            .filter(|s| s.users > 0 && s.active_today > 0)
            .map(|s| {
                Assumed::new(
                    s.active_today as f64 / s.users as f64,
                    format!(
                        "snapshot {}: {} of {} users active today",
                        snapshot_name(),
                        s.active_today,
                        s.users
                    ),
                )
            });

        let instance_rps = match (self.instance_rps, &load) {
            (Some(v), _) => Assumed::new(v, "given"),
            (None, Some(l)) => match l.cores {
                Some(cores) => Assumed::new(
                    l.rps / cores * self.instance_cpus,
                    format!(
                        "load test {}: {:.1} req/s at {:.1} % of one core, × {} CPU per instance",
                        l.dir.display(),
                        l.rps,
                        cores * 100.0,
                        self.instance_cpus
                    ),
                ),
                // A remote run without CPU figures: its throughput is a floor.
                None => Assumed::new(
                    l.rps,
                    format!(
                        "load test {}: {:.1} req/s (no CPU figures: taken as one instance's capacity, a lower bound)",
                        l.dir.display(),
                        l.rps
                    ),
                ),
            },
            (None, None) => {
                bail!("give --loadtest DIR (a scripts/loadtest output folder) or --instance-rps N")
            }
        };
        let write_share = pick(
            self.write_share,
            load.as_ref().map(|l| {
                Assumed::new(
                    l.write_share,
                    format!(
                        "load test {}: {} of {} requests wrote",
                        l.dir.display(),
                        l.writes,
                        l.requests
                    ),
                )
            }),
            0.25,
        );

        // Storage ratios: the production snapshot's when it has data, else the
        // load test's database.
        let measured_storage = production
            .as_ref()
            .and_then(|s| storage_ratios(s).map(|r| (r, format!("snapshot {}", snapshot_name()))))
            .or_else(|| {
                let l = load.as_ref()?;
                let ratios = storage_ratios(l.snapshot.as_ref()?)?;
                Some((ratios, format!("load test {} database", l.dir.display())))
            });
        let (per_user, per_write) = match measured_storage {
            Some(((u, w), source)) => (
                Some(Assumed::new(u.round(), source.clone())),
                Some(Assumed::new(w.round(), source)),
            ),
            None => (None, None),
        };
        let bytes_per_user = pick(self.bytes_per_user, per_user, 8_192.0);
        let base_bytes = match &production {
            Some(s) => Assumed::new(
                s.database_bytes as f64,
                format!("snapshot {}", snapshot_name()),
            ),
            // Without one, today's size is the reference data (exercises,
            // cities, the catalog: what the load test's database held besides
            // its users and their writes) plus today's users.
            None => {
                let reference = load.as_ref().and_then(|l| l.snapshot.as_ref()).map(|s| {
                    (s.database_bytes - s.bytes_of(PER_USER_TABLES) - s.bytes_of(EVENT_TABLES))
                        .max(0) as f64
                });
                match reference {
                    Some(bytes) => Assumed::new(
                        bytes + users.value * bytes_per_user.value,
                        format!(
                            "load test database: {:.1} MB of reference data + users × bytes per user",
                            bytes / 1e6
                        ),
                    ),
                    None => Assumed::new(
                        users.value * bytes_per_user.value,
                        "users × bytes per user (no snapshot)",
                    ),
                }
            }
        };

        Ok(Inputs {
            users,
            monthly_growth: Assumed::new(self.growth, "given"),
            months: self.months,
            active_share: pick(self.active_share, active, 0.2),
            requests_per_active_user: Assumed::new(
                self.requests_per_active_user,
                source_of(
                    self.requests_per_active_user,
                    DEFAULT_REQUESTS_PER_ACTIVE_USER,
                ),
            ),
            peak_factor: Assumed::new(self.peak_factor, source_of(self.peak_factor, 3.0)),
            write_share,
            instance_rps,
            target_utilization: Assumed::new(
                self.target_utilization,
                source_of(self.target_utilization, 0.7),
            ),
            min_instances: self.min_instances,
            min_replicas: self.min_replicas,
            db_read_rps: Assumed::new(
                self.db_read_rps,
                if self.db_read_rps == DEFAULT_DB_READ_RPS {
                    "docs/benchmarks.md (bare axum + sqlx, one shared core)"
                } else {
                    "given"
                },
            ),
            db_write_rps: Assumed::new(
                self.db_write_rps,
                if self.db_write_rps == DEFAULT_DB_WRITE_RPS {
                    "docs/benchmarks.md (attempts, one shared core)"
                } else {
                    "given"
                },
            ),
            base_bytes,
            bytes_per_user,
            bytes_per_write: pick(self.bytes_per_write, per_write, 400.0),
            max_node_gb: Assumed::new(self.max_node_gb, source_of(self.max_node_gb, 500.0)),
            costs: UnitCosts {
                instance: self.cost_instance,
                db_node: self.cost_db_node,
                storage_gb: self.cost_storage_gb,
                redis: self.cost_redis,
            },
        })
    }
}

/// "default" when an option kept its default value, else "given".
fn source_of(value: f64, default: f64) -> &'static str {
    if value == default { "default" } else { "given" }
}
