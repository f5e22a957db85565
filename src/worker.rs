//! `refbackend worker`: runs jobs from the queue (src/jobs.rs) until SIGTERM.
//!
//! - `WORKER_CONCURRENCY` loops, each claiming one job at a time; idle loops
//!   wake on `NOTIFY jobs` or every `WORKER_POLL_INTERVAL`.
//! - While a job runs its lease is renewed every third of `JOB_LEASE`; if a
//!   renewal finds the lease gone (the worker was cut off long enough for
//!   another to take over), the attempt is dropped at once (ffmpeg with it).
//! - Before claiming, a loop buries jobs whose last attempt's worker died.
//! - On SIGTERM/SIGINT: no new claims; a running job may finish within
//!   `WORKER_DRAIN_TIMEOUT`, else it is handed back (due now, the attempt not
//!   counted) so another worker starts it at once.
//! - `WORKER_METRICS_ADDR` serves `/metrics` (the queue's gauges, sampled on
//!   scrape, and this worker's outcomes) and `/health` (200 when the database
//!   answers).
//!
//! The worker connects to the primary directly: LISTEN does not work through
//! PgBouncer's transaction pooling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::jobs::{self, Job, JobMetrics};
use crate::media::MediaStore;
use crate::video::{self, Done, WorkContext};

struct Shared {
    ctx: WorkContext,
    metrics: JobMetrics,
    registry: Registry,
    lease: Duration,
    drain_timeout: Duration,
    poll_interval: Duration,
    wake: Notify,
    name: String,
}

/// Runs the worker until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        tracing::info!("shutdown signal: no new jobs; draining");
        let _ = stop_tx.send(true);
    });
    run_until(config, stop_rx).await
}

/// Runs the worker until `stop` turns true.
pub async fn run_until(config: Config, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let worker = &config.worker;
    let db = PgPoolOptions::new()
        // DB_POOL_MAX_CONNECTIONS, but at least one per loop plus two (lease
        // renewals, the sweeper, /health). The LISTEN connection is detached
        // from the pool: one more on the server.
        .max_connections(
            config
                .database
                .primary_pool
                .max_connections
                .max(u32::try_from(worker.concurrency + 2).unwrap_or(u32::MAX)),
        )
        .acquire_timeout(Duration::from_secs(10))
        .connect(config.database.primary_url.expose())
        .await
        .context("connecting to the database")?;
    let store = MediaStore::open(&config.media).context("opening media storage")?;
    let scratch = worker.scratch_dir.clone();
    tokio::fs::create_dir_all(&scratch)
        .await
        .with_context(|| format!("creating {}", scratch.display()))?;
    remove_stale_scratch(&scratch).await;
    // Readiness reaches live subscribers through Redis when it is there;
    // without it the worker still works (clients poll).
    let live = match crate::cache::redis::Redis::new(
        &config.redis,
        prometheus::IntCounter::new("worker_redis_errors", "unregistered").context("metric")?,
        prometheus::IntGauge::new("worker_redis_circuit", "unregistered").context("metric")?,
    ) {
        Ok(redis) => Some(crate::live::Live::new(
            redis,
            &config.redis.key_prefix,
            config.live.replay_events,
            0,
            crate::live::LiveMetrics::new(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "no Redis: live subscribers will not hear of finished videos");
            None
        }
    };
    let registry = Registry::new();
    let metrics = JobMetrics::new();
    metrics.register(&registry).context("registering metrics")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let shared = Arc::new(Shared {
        ctx: WorkContext {
            db: db.clone(),
            store,
            scratch,
            ffmpeg: worker.ffmpeg.clone(),
            ffprobe: worker.ffprobe.clone(),
            max_duration: config.media.max_duration,
            live,
        },
        metrics,
        registry,
        lease: worker.lease,
        drain_timeout: worker.drain_timeout,
        poll_interval: worker.poll_interval,
        wake: Notify::new(),
        name: format!("{host}:{}", std::process::id()),
    });

    let listener = tokio::net::TcpListener::bind(worker.metrics_addr)
        .await
        .with_context(|| format!("binding {}", worker.metrics_addr))?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health))
        .with_state(shared.clone());
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    let listen = tokio::spawn(listen_for_jobs(shared.clone(), stop.clone()));
    tracing::info!(
        worker = %shared.name,
        concurrency = worker.concurrency,
        lease_seconds = worker.lease.as_secs_f64(),
        "worker started"
    );
    let sweeper = tokio::spawn(sweep_loop(
        shared.clone(),
        config.media.upload_ttl,
        stop.clone(),
    ));
    let loops: Vec<_> = (0..worker.concurrency)
        .map(|_| tokio::spawn(work_loop(shared.clone(), stop.clone())))
        .collect();
    for handle in loops {
        let _ = handle.await;
    }
    listen.abort();
    sweeper.abort();
    let _ = server.await;
    db.close().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Wakes idle loops when a job is enqueued; reconnects after errors.
async fn listen_for_jobs(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        match PgListener::connect_with(&shared.ctx.db).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(jobs::CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; polling only");
                } else {
                    loop {
                        tokio::select! {
                            n = listener.recv() => match n {
                                Ok(_) => shared.wake.notify_waiters(),
                                Err(e) => {
                                    tracing::warn!(error = %e, "job notifications lost; reconnecting");
                                    break;
                                }
                            },
                            _ = stop.wait_for(|s| *s) => return,
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for jobs; polling only"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Scratch directories of attempts whose worker was killed (a graceful end
/// removes its own): anything untouched for six hours. Segments are written
/// continuously while an attempt runs, so a live one is never that old.
async fn remove_stale_scratch(scratch: &std::path::Path) {
    let Ok(mut entries) = tokio::fs::read_dir(scratch).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(6 * 3600));
        if stale
            && entry
                .file_name()
                .to_string_lossy()
                .starts_with("refbackend-job-")
        {
            let path = entry.path();
            match tokio::fs::remove_dir_all(&path).await {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed a killed attempt's scratch directory")
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "removing stale scratch failed")
                }
            }
        }
    }
}

/// Storage housekeeping every five minutes (src/video/mod.rs `sweep`).
async fn sweep_loop(shared: Arc<Shared>, ttl: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = video::sweep(&shared.ctx, ttl).await {
            tracing::warn!(error = %e, "media sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn work_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(e) = video::reap(&shared.ctx).await {
            tracing::warn!(error = %e, "burying expired jobs failed");
        }
        let claimed = jobs::claim(&shared.ctx.db, &shared.name, shared.lease).await;
        match claimed {
            Ok(Some(job)) => run_job(&shared, job, stop.clone()).await,
            Ok(None) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(shared.poll_interval) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed");
                tokio::select! {
                    _ = tokio::time::sleep(shared.poll_interval) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        }
    }
}

enum Ended {
    Finished(Result<Done, video::JobError>),
    LeaseLost,
    Drained,
}

async fn run_job(shared: &Shared, job: Job, mut stop: watch::Receiver<bool>) {
    let started = Instant::now();
    tracing::info!(job = job.id, kind = %job.kind, attempt = job.attempts, "job claimed");
    let work = async {
        if job.kind == video::TRANSCODE_JOB {
            video::process(&shared.ctx, &job).await
        } else {
            Err(video::JobError::Permanent(format!(
                "unknown job kind {:?}",
                job.kind
            )))
        }
    };
    let heartbeat = keep_lease(shared, &job);
    let drain = async {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(shared.drain_timeout).await;
    };
    let ended = tokio::select! {
        result = work => Ended::Finished(result),
        () = heartbeat => Ended::LeaseLost,
        () = drain => Ended::Drained,
    };
    let outcome = match ended {
        Ended::Finished(Ok(Done::Ready | Done::Skipped)) => "done",
        Ended::Finished(Ok(Done::LeaseLost)) | Ended::LeaseLost => {
            tracing::warn!(job = job.id, "lost the job's lease; another worker has it");
            "lease_lost"
        }
        Ended::Finished(Err(error)) => {
            match video::fail(&shared.ctx, &job, &error).await {
                Ok(failed) => {
                    tracing::warn!(job = job.id, attempt = job.attempts, outcome = failed.outcome(), error = %error, "job attempt failed");
                    failed.outcome()
                }
                Err(e) => {
                    // The lease runs out and the job is retried.
                    tracing::error!(job = job.id, error = %e, "recording a failed attempt failed");
                    "retry"
                }
            }
        }
        Ended::Drained => {
            match video::release(&shared.ctx.db, &job).await {
                Ok(_) => tracing::info!(job = job.id, "drain timeout: job handed back"),
                Err(e) => {
                    tracing::warn!(job = job.id, error = %e, "handing the job back failed; its lease will run out")
                }
            }
            "released"
        }
    };
    shared
        .metrics
        .finished_total
        .with_label_values(&[&job.kind, outcome])
        .inc();
    shared
        .metrics
        .duration_seconds
        .with_label_values(&[&job.kind, outcome])
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(
        job = job.id,
        outcome,
        seconds = started.elapsed().as_secs_f64(),
        "job ended"
    );
}

/// Renews the lease every third of its length; returns when it is lost (or
/// could not be renewed before it ran out).
async fn keep_lease(shared: &Shared, job: &Job) {
    let mut valid_until = Instant::now() + shared.lease;
    loop {
        tokio::time::sleep(shared.lease / 3).await;
        match jobs::renew(&shared.ctx.db, job, shared.lease).await {
            Ok(true) => valid_until = Instant::now() + shared.lease,
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(job = job.id, error = %e, "renewing the lease failed");
                if Instant::now() >= valid_until {
                    return;
                }
            }
        }
    }
}

async fn metrics_page(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let sample = shared.metrics.sample(&shared.ctx.db);
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_millis(500), sample).await {
        tracing::debug!(error = %e, "sampling the job queue failed");
    }
    let mut buffer = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&shared.registry.gather(), &mut buffer) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        buffer,
    )
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let check = sqlx::query("SELECT 1").execute(&shared.ctx.db);
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}
