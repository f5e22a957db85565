//! `refbackend`: serve the API, migrate the schema, or load reference data.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use refbackend::app::App;
use refbackend::auth::admin;
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
    /// Apply pending database migrations to the primary, then exit.
    Migrate,
    /// Load reference data (cities) into the primary, then exit. Idempotent.
    Seed,
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
    telemetry::init(&config.log);
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
        Command::Migrate => {
            let pool = admin_pool(&config)?;
            db::migrate::run(&pool)
                .await
                .context("running migrations")?;
            tracing::info!("migrations applied");
            pool.close().await;
            Ok(())
        }
        Command::Admin {
            email,
            display_name,
        } => {
            let pool = admin_pool(&config)?;
            let outcome = admin::create_or_promote(&pool, &email, &display_name).await;
            pool.close().await;
            let message = outcome?;
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
            let pool = admin_pool(&config)?;
            let snapshot = capacity::snapshot::take(&pool).await;
            pool.close().await;
            let snapshot = snapshot.context("taking a snapshot")?;
            print!("{}", capacity::render_snapshot(&snapshot, format)?);
            Ok(())
        }
        Command::Partitions { action } => {
            let pool = admin_pool(&config)?;
            let result = partitions_command(&pool, action).await;
            pool.close().await;
            result
        }
        Command::Seed => {
            let pool = admin_pool(&config)?;
            let seeded = seed::run(&pool).await.context("seeding reference data")?;
            tracing::info!(
                cities = seeded.cities,
                exercises = seeded.exercises,
                exercises_changed = seeded.exercises_changed,
                "reference data loaded"
            );
            pool.close().await;
            Ok(())
        }
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
    )?)
}
