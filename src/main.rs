//! `refbackend`: serve the API, migrate the schema, or load reference data.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use refbackend::app::App;
use refbackend::auth::admin;
use refbackend::cache::Namespace;
use refbackend::capacity::{self, forecast, inputs};
use refbackend::config::Config;
use refbackend::db::{self, pool};
use refbackend::{seed, server, telemetry};

/// mimalloc instead of glibc malloc: argon2id allocates ~19 MiB per hash, and
/// glibc's arenas kept those blocks (RSS past 900 MB under a login flood, see
/// docs/benchmarks.md); mimalloc reuses them, so RSS stays near
/// `PASSWORD_HASH_CONCURRENCY` × 19 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "refbackend",
    version,
    about = "Reference web backend: subjunctive practice and CivicQ"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (configuration from the environment; see .env.example).
    Serve,
    /// Run background jobs (video transcodes) from the queue until SIGTERM
    /// (docs/video.md); serves /metrics and /health on WORKER_METRICS_ADDR.
    Worker,
    /// Apply pending database migrations to main and every shard, then exit.
    Migrate,
    /// Load reference data (cities, exercises) into main and copy exercises to
    /// every shard, then exit. Idempotent.
    Seed,
    /// Stage 4 sharding (docs/sharding.md): `list` shows each shard's buckets,
    /// users and size; `move` moves one bucket online (resumable);
    /// `rebalance` plans (and with --apply, runs) moves that even users out.
    Shards {
        #[command(subcommand)]
        action: ShardsAction,
    },
    /// Time-partitioned tables: `list` shows every partition (and rows stuck
    /// in default partitions); `ensure` creates the current and next ones.
    Partitions {
        #[command(subcommand)]
        action: PartitionsAction,
    },
    /// Capacity planning: `snapshot` reads what the database holds now;
    /// `forecast` turns users, growth and measured throughput into instances,
    /// database nodes, storage and cost per month (docs/operations.md).
    Capacity {
        #[command(subcommand)]
        action: CapacityAction,
    },
    /// Create an admin account, or promote an existing account to admin.
    /// The password of a new account is read from ADMIN_PASSWORD, else from the
    /// first line of standard input.
    Admin {
        #[arg(long)]
        email: String,
        /// Display name for a new account.
        #[arg(long, default_value = "Administrator")]
        display_name: String,
    },
}

#[derive(Subcommand)]
enum ShardsAction {
    /// Buckets, users and bytes per shard, and moves in progress.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Moves a bucket's users to another shard while the service runs.
    /// Rerun the same command to resume a move that was interrupted.
    Move {
        #[arg(long)]
        bucket: u16,
        /// The destination: a name from SHARD_URLS, or `main`.
        #[arg(long)]
        to: String,
        /// How long to keep the old copy after the flip, so every instance
        /// has reloaded the map first.
        #[arg(long, default_value = "15s", value_parser = humantime_duration)]
        grace: std::time::Duration,
    },
    /// Plans moves that even out users across shards.
    Rebalance {
        /// Only print the plan (the default is to print it and stop too;
        /// --apply runs it).
        #[arg(long)]
        dry_run: bool,
        /// Run the planned moves one after another.
        #[arg(long, conflicts_with = "dry_run")]
        apply: bool,
        #[arg(long, default_value = "15s", value_parser = humantime_duration)]
        grace: std::time::Duration,
    },
}

fn humantime_duration(raw: &str) -> Result<std::time::Duration, String> {
    refbackend::config::parse_duration(raw)
}

#[derive(Subcommand, Clone, Copy)]
enum PartitionsAction {
    /// List partitions with their bounds and (estimated) rows.
    List,
    /// Create missing partitions for the current period and `--ahead` more.
    Ensure {
        #[arg(long, default_value_t = refbackend::db::partitions::DEFAULT_AHEAD)]
        ahead: u32,
    },
}

#[derive(Subcommand)]
enum CapacityAction {
    /// Users, active today, exercises, attempts, questions, votes, and the size
    /// of the database and of each table, from the primary.
    Snapshot {
        #[arg(long, value_enum, default_value_t = inputs::Format::Table)]
        format: inputs::Format,
    },
    /// A month-by-month plan; needs no database.
    Forecast(Box<inputs::ForecastArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A forecast is arithmetic on its options and files: no settings needed.
    if let Command::Capacity {
        action: CapacityAction::Forecast(args),
    } = &cli.command
    {
        return forecast_command(args);
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // Held to the end: dropping it writes out the log lines still queued.
    let _log_writer = telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the async runtime")?;
    runtime.block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let bind = config.http.bind_addr;
            let app = App::build(config).await?;
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("binding {bind}"))?;
            tracing::info!(addr = %listener.local_addr()?, "listening");
            server::serve(app, listener, server::shutdown_signal()).await
        }
        Command::Worker => refbackend::worker::run(config).await,
        Command::Migrate => {
            let db = admin_db(&config)?;
            let result = db::migrate::run_all(&db).await;
            db.close().await;
            result.context("running migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Shards { action } => {
            let db = admin_db(&config)?;
            let result = shards_command(&config, &db, action).await;
            db.close().await;
            result
        }
        Command::Admin {
            email,
            display_name,
        } => {
            let pool = admin_pool(&config)?;
            let outcome = admin::create_or_promote(&pool, &email, &display_name).await;
            pool.close().await;
            let outcome = outcome?;
            if let admin::Outcome::Promoted { id, .. } = &outcome {
                announce(&config, &[], &[*id]).await;
            }
            let message = outcome.message();
            tracing::info!(%email, "{message}");
            println!("{message}");
            Ok(())
        }
        Command::Capacity {
            action: CapacityAction::Forecast(args),
        } => forecast_command(&args),
        Command::Capacity {
            action: CapacityAction::Snapshot { format },
        } => {
            let db = admin_db(&config)?;
            let snapshot = capacity::snapshot::take_all(&db).await;
            db.close().await;
            let snapshot = snapshot.context("taking a snapshot")?;
            print!("{}", capacity::render_snapshot(&snapshot, format)?);
            Ok(())
        }
        Command::Partitions { action } => {
            let db = admin_db(&config)?;
            let mut result = Ok(());
            for shard in db.per_user_dbs() {
                if db.shards().is_some() {
                    println!("== {}", shard.name());
                }
                result = partitions_command(shard.write(), action).await;
                if result.is_err() {
                    break;
                }
            }
            db.close().await;
            result
        }
        Command::Seed => {
            let db = admin_db(&config)?;
            let pool = db.write();
            let seeded = seed::run(pool).await.context("seeding reference data")?;
            for shard in db.per_user_dbs().iter().skip(1) {
                db::shards::sync_reference(pool, shard.write())
                    .await
                    .with_context(|| format!("copying exercises to shard {}", shard.name()))?;
            }
            // Running instances must not keep serving the old lists.
            announce(&config, &[Namespace::Cities, Namespace::Exercises], &[]).await;
            tracing::info!(
                cities = seeded.cities,
                exercises = seeded.exercises,
                exercises_changed = seeded.exercises_changed,
                "reference data loaded"
            );
            db.close().await;
            Ok(())
        }
    }
}

/// Tells running instances about a change made by this command (cache
/// generations, account state). Redis being down is not fatal: the change is
/// in the database, and caches expire within their TTLs.
async fn announce(config: &Config, namespaces: &[Namespace], accounts: &[uuid::Uuid]) {
    let announced = refbackend::cache::layered::announce_from_outside(
        config.redis.url.expose(),
        &config.redis.key_prefix,
        namespaces,
        accounts,
    );
    match tokio::time::timeout(std::time::Duration::from_secs(5), announced).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            error = %e,
            "could not tell running instances through Redis; their caches expire within their TTLs"
        ),
        Err(_) => tracing::warn!(
            "Redis did not answer; running instances' caches expire within their TTLs"
        ),
    }
}

fn forecast_command(args: &inputs::ForecastArgs) -> anyhow::Result<()> {
    // Unreadable files and nonsense options are usage errors (exit 2), with
    // every problem named at once.
    let inputs = match args.inputs() {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let problems = inputs.problems();
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        std::process::exit(2);
    }
    let plan = forecast::forecast(&inputs);
    print!("{}", capacity::render_forecast(&plan, args.format)?);
    Ok(())
}

async fn partitions_command(pool: &sqlx::PgPool, action: PartitionsAction) -> anyhow::Result<()> {
    use refbackend::db::partitions;
    if let PartitionsAction::Ensure { ahead } = action {
        let created = partitions::ensure(pool, ahead)
            .await
            .context("creating partitions")?;
        for name in &created {
            println!("created {name}");
        }
        if created.is_empty() {
            println!("all partitions exist ({ahead} periods ahead)");
        }
    }
    println!("{:<12} {:<24} {:>10}  bounds", "table", "partition", "rows");
    let mut strays = 0;
    for p in partitions::list(pool).await.context("listing partitions")? {
        println!(
            "{:<12} {:<24} {:>10}  {}",
            p.table, p.partition, p.rows, p.bounds
        );
        if p.bounds == "DEFAULT" {
            strays += p.rows;
        }
    }
    if strays > 0 {
        eprintln!(
            "warning: {strays} row(s) in default partitions; `partitions ensure --ahead N` moves them"
        );
    }
    Ok(())
}

/// Main and every shard, primaries only, with small pools and long statement
/// timeouts, for one-shot commands.
fn admin_db(config: &Config) -> anyhow::Result<db::Db> {
    if config.database.behind_pgbouncer {
        anyhow::bail!(
            "this command holds session advisory locks (migrations, bucket moves), which PgBouncer in \
             transaction mode cannot keep: point DATABASE_URL and SHARD_URLS at the databases themselves \
             and set DB_BEHIND_PGBOUNCER=false for it"
        );
    }
    let mut database = config.database.clone();
    database.replica_urls.clear();
    for shard in &mut database.shards {
        shard.replica_urls.clear();
    }
    database.primary_pool.max_connections = 4;
    database.primary_pool.min_idle = 0;
    // DDL, copies and bulk loads may legitimately run longer than a request.
    database.primary_pool.statement_timeout = std::time::Duration::from_secs(600);
    Ok(db::Db::new(&database, refbackend::metrics::Metrics::new())?)
}

async fn shards_command(config: &Config, db: &db::Db, action: ShardsAction) -> anyhow::Result<()> {
    use db::shards::mover;
    let announce = Some((
        config.redis.url.expose().to_owned(),
        config.redis.key_prefix.clone(),
    ));
    match action {
        ShardsAction::List { json } => {
            let (usage, moves) = mover::usage(db).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "shards": usage,
                        "moves": moves.iter().map(|(b, s, t, p)| serde_json::json!({
                            "bucket": b, "source": s, "target": t, "phase": p,
                        })).collect::<Vec<_>>(),
                    }))?
                );
                return Ok(());
            }
            println!(
                "{:<16} {:>8} {:>10} {:>14}",
                "shard", "buckets", "users", "bytes"
            );
            for u in &usage {
                println!(
                    "{:<16} {:>8} {:>10} {:>14}",
                    u.shard, u.buckets, u.users, u.bytes
                );
            }
            for (bucket, source, target, phase) in &moves {
                println!("move in progress: bucket {bucket} {source} -> {target} ({phase})");
            }
            Ok(())
        }
        ShardsAction::Move { bucket, to, grace } => {
            let report =
                mover::move_bucket(db, bucket, &to, &mover::MoveOptions { grace, announce })
                    .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        ShardsAction::Rebalance {
            dry_run: _,
            apply,
            grace,
        } => {
            let plan = mover::rebalance_plan(db).await?;
            for (bucket, from, to) in &plan {
                println!("move bucket {bucket}: {from} -> {to}");
            }
            if plan.is_empty() {
                println!("balanced: nothing to move");
            }
            if apply {
                let options = mover::MoveOptions { grace, announce };
                for (bucket, _, to) in &plan {
                    let report = mover::move_bucket(db, *bucket, to, &options).await?;
                    println!(
                        "moved bucket {bucket} to {to}: {} users, {} rows, write pause {} ms",
                        report.users, report.rows_copied, report.write_pause_ms
                    );
                }
            }
            Ok(())
        }
    }
}

/// A small pool on the primary for one-shot commands.
fn admin_pool(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let mut pool_config = config.database.primary_pool.clone();
    pool_config.max_connections = 2;
    pool_config.min_idle = 0;
    // DDL and bulk loads may legitimately run longer than a request.
    pool_config.statement_timeout = std::time::Duration::from_secs(600);
    Ok(pool::lazy_pool(
        &config.database.primary_url,
        &pool_config,
        pool::Access::ReadWrite,
        &config.database,
    )?)
}
