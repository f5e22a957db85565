//! CivicQ video answers (docs/video.md): a candidate uploads a file in
//! chunks (src/http/videos.rs), the API checks what it is and queues a
//! transcode job, and `refbackend worker` (src/worker.rs) turns it into HLS
//! renditions, a poster and a duration, here.
//!
//! The answer's states: `uploading` → `uploaded` (checked, job queued) →
//! `processing` (a worker has it) → `ready` | `failed`.
//!
//! Every step of [`process`] can run twice (a worker dies, another takes the
//! job over): the scratch copy is per attempt, outputs have fixed keys under
//! `videos/<id>/` (a retry first clears what an earlier attempt left), and
//! the final transaction is fenced by the job's lease.

pub mod sniff;
pub mod transcode;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::jobs::{self, Job};
use crate::media::{self, MediaStore};

/// The job kind that turns an upload into HLS.
pub const TRANSCODE_JOB: &str = "video_transcode";
/// Attempts before a transcode is dead (and the answer failed).
pub const TRANSCODE_ATTEMPTS: i32 = 4;

/// The transcode job's payload.
pub fn transcode_payload(video: Uuid) -> serde_json::Value {
    json!({ "video_id": video.to_string() })
}

/// What a worker needs to run a job.
#[derive(Debug, Clone)]
pub struct WorkContext {
    pub db: PgPool,
    pub store: MediaStore,
    pub scratch: PathBuf,
    pub ffmpeg: String,
    pub ffprobe: String,
    pub max_duration: Duration,
    /// Publishes readiness to live subscribers (src/live.rs).
    pub live: Option<crate::live::Live>,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The input is bad: retrying cannot help (the answer fails now).
    #[error("{0}")]
    Permanent(String),
    /// Storage, database or a crash of ffmpeg: try again later.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(e.into())
    }
}

impl From<object_store::Error> for JobError {
    fn from(e: object_store::Error) -> Self {
        Self::Transient(e.into())
    }
}

/// How a finished attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The answer is ready.
    Ready,
    /// Nothing to do: the answer was deleted, or is ready already.
    Skipped,
    /// The lease was lost before the result could be committed.
    LeaseLost,
}

#[derive(Debug, sqlx::FromRow)]
struct VideoRow {
    status: String,
    question_id: Uuid,
    candidate_id: Uuid,
    size_bytes: i64,
    chunk_count: i32,
}

fn video_id(job: &Job) -> Result<Uuid, JobError> {
    job.payload
        .get("video_id")
        .and_then(|v| v.as_str())
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| JobError::Permanent("the job names no video".into()))
}

/// Runs one transcode attempt.
pub async fn process(ctx: &WorkContext, job: &Job) -> Result<Done, JobError> {
    let id = video_id(job)?;
    let row: Option<VideoRow> = sqlx::query_as(
        "UPDATE video_answers SET status = 'processing', updated_at = now()
          WHERE id = $1 AND status IN ('uploaded', 'processing')
          RETURNING status, question_id, candidate_id, size_bytes, chunk_count",
    )
    .bind(id)
    .fetch_optional(&ctx.db)
    .await?;
    let Some(row) = row else {
        // Deleted (its storage is on the garbage list) or already finished.
        return finish_skipped(ctx, job).await;
    };
    debug_assert_eq!(row.status, "processing");
    let dir = ctx
        .scratch
        .join(format!("refbackend-job-{}-{}", job.id, job.lease_token));
    let _cleanup = ScratchDir::create(&dir).await?;
    let source = dir.join("source");
    fetch_source(&ctx.store, id, row.chunk_count, row.size_bytes, &source).await?;

    let probe = match transcode::probe(&ctx.ffprobe, &source).await? {
        Ok(probe) => probe,
        Err(reason) => return Err(JobError::Permanent(reason)),
    };
    if probe.duration > ctx.max_duration + Duration::from_millis(500) {
        return Err(JobError::Permanent(format!(
            "the video is {:.0} s long; the limit is {} s",
            probe.duration.as_secs_f64(),
            ctx.max_duration.as_secs()
        )));
    }
    let renditions = transcode::ladder(probe.height);
    let out = dir.join("hls");
    tokio::fs::create_dir_all(&out)
        .await
        .context("creating the output directory")?;
    let started = Instant::now();
    transcode::run_ffmpeg(
        &ctx.ffmpeg,
        &transcode::hls_args(&source, &out, &renditions, probe.has_audio),
    )
    .await?;
    let poster = dir.join("poster.jpg");
    transcode::run_ffmpeg(
        &ctx.ffmpeg,
        &transcode::poster_args(&source, &poster, probe.duration, probe.height),
    )
    .await?;
    tracing::info!(video = %id, renditions = renditions.len(), seconds = started.elapsed().as_secs_f64(), "transcoded");

    // A retry replaces whatever an earlier attempt uploaded.
    let prefix = media::video_prefix(id);
    if job.attempts > 1 {
        ctx.store.delete_prefix(&prefix).await?;
    }
    upload_dir(&ctx.store, &out, &format!("{prefix}hls")).await?;
    let poster_key = format!("{prefix}poster.jpg");
    let poster_bytes = tokio::fs::read(&poster)
        .await
        .context("reading the poster")?;
    ctx.store.put(&poster_key, poster_bytes.into()).await?;

    let mut tx = ctx.db.begin().await?;
    if !jobs::finish(&mut tx, job).await? {
        return Ok(Done::LeaseLost);
    }
    let names: Vec<String> = renditions.iter().map(|r| r.name.clone()).collect();
    let updated = sqlx::query(
        "UPDATE video_answers SET status = 'ready', duration_ms = $2, width = $3, height = $4,
                renditions = $5, master_key = $6, poster_key = $7, failure = NULL,
                ready_at = now(), updated_at = now()
          WHERE id = $1 AND status = 'processing'",
    )
    .bind(id)
    .bind(i32::try_from(probe.duration.as_millis()).unwrap_or(i32::MAX))
    .bind(i32::try_from(probe.width).unwrap_or(i32::MAX))
    .bind(i32::try_from(probe.height).unwrap_or(i32::MAX))
    .bind(&names)
    .bind(format!("{prefix}hls/master.m3u8"))
    .bind(&poster_key)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // The source is no longer needed; if the answer went away meanwhile, its
    // renditions go too.
    let mut garbage = vec![media::upload_prefix(id)];
    if updated == 0 {
        garbage.push(prefix);
    }
    add_garbage(&mut tx, &garbage).await?;
    tx.commit().await?;
    collect(ctx, &garbage).await;
    if updated == 1 {
        let data = json!({
            "id": id, "question_id": row.question_id, "candidate_id": row.candidate_id,
            "status": "ready", "renditions": names,
            "playlist_url": ctx.store.public_url(&format!("{}hls/master.m3u8", media::video_prefix(id))),
        });
        publish_status(ctx, row.question_id, row.candidate_id, "video.ready", &data).await;
    }
    Ok(if updated == 1 {
        Done::Ready
    } else {
        Done::Skipped
    })
}

/// Tells live subscribers: the question's followers when ready, and the
/// candidate (`user:me`) either way.
async fn publish_status(
    ctx: &WorkContext,
    question: Uuid,
    candidate: Uuid,
    event: &str,
    data: &serde_json::Value,
) {
    let Some(live) = &ctx.live else { return };
    if event == "video.ready" {
        live.publish(&crate::live::Topic::Question(question), event, data)
            .await;
    }
    live.publish(&crate::live::Topic::User(candidate), "video.status", data)
        .await;
}

async fn finish_skipped(ctx: &WorkContext, job: &Job) -> Result<Done, JobError> {
    let mut tx = ctx.db.begin().await?;
    if !jobs::finish(&mut tx, job).await? {
        return Ok(Done::LeaseLost);
    }
    tx.commit().await?;
    Ok(Done::Skipped)
}

/// Records a failed attempt: a retry (the answer waits as `uploaded`) or,
/// when permanent or out of attempts, the answer `failed` with the reason
/// and its storage on the garbage list — all in one transaction.
pub async fn fail(ctx: &WorkContext, job: &Job, error: &JobError) -> anyhow::Result<jobs::Failed> {
    let message = match error {
        JobError::Permanent(reason) => reason.clone(),
        JobError::Transient(e) => format!("{e:#}"),
    };
    let mut tx = ctx.db.begin().await?;
    let outcome = jobs::fail(
        &mut tx,
        job,
        &message,
        matches!(error, JobError::Permanent(_)),
    )
    .await?;
    let id = video_id(job).ok();
    let mut garbage = Vec::new();
    let mut failed_reason = None;
    match (outcome, id) {
        (jobs::Failed::Dead, Some(id)) => {
            let reason = match error {
                JobError::Permanent(reason) => reason.clone(),
                JobError::Transient(_) => {
                    "processing failed repeatedly; upload the video again".into()
                }
            };
            garbage = mark_failed(&mut tx, id, &reason).await?;
            failed_reason = Some((id, reason));
        }
        (jobs::Failed::Retry(_), Some(id)) => {
            sqlx::query(
                "UPDATE video_answers SET status = 'uploaded', updated_at = now()
                  WHERE id = $1 AND status = 'processing'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        _ => {}
    }
    tx.commit().await?;
    collect(ctx, &garbage).await;
    if let Some((id, reason)) = failed_reason {
        let owner: Option<(Uuid, Uuid)> =
            sqlx::query_as("SELECT question_id, candidate_id FROM video_answers WHERE id = $1")
                .bind(id)
                .fetch_optional(&ctx.db)
                .await
                .unwrap_or(None);
        if let Some((question, candidate)) = owner {
            let data =
                json!({"id": id, "question_id": question, "status": "failed", "failure": reason});
            publish_status(ctx, question, candidate, "video.failed", &data).await;
        }
    }
    Ok(outcome)
}

/// Gives a job back (a worker shutting down): the answer waits as `uploaded`.
pub async fn release(db: &PgPool, job: &Job) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    let released = jobs::release(&mut tx, job).await?;
    if released && let Ok(id) = video_id(job) {
        sqlx::query(
            "UPDATE video_answers SET status = 'uploaded', updated_at = now()
              WHERE id = $1 AND status = 'processing'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(released)
}

/// Buries jobs whose last attempt's worker died, failing their answers.
pub async fn reap(ctx: &WorkContext) -> anyhow::Result<usize> {
    let mut tx = ctx.db.begin().await?;
    let dead = jobs::reap(&mut tx).await?;
    let mut garbage = Vec::new();
    for (job_id, _kind, payload) in &dead {
        let id = payload
            .get("video_id")
            .and_then(|v| v.as_str())
            .and_then(|v| Uuid::parse_str(v).ok());
        if let Some(id) = id {
            tracing::warn!(job = job_id, video = %id, "the last attempt's worker died; the answer failed");
            garbage.extend(
                mark_failed(
                    &mut tx,
                    id,
                    "processing failed repeatedly; upload the video again",
                )
                .await?,
            );
        }
    }
    tx.commit().await?;
    collect(ctx, &garbage).await;
    Ok(dead.len())
}

async fn mark_failed(tx: &mut PgConnection, id: Uuid, reason: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query(
        "UPDATE video_answers SET status = 'failed', failure = $2, updated_at = now()
          WHERE id = $1 AND status IN ('uploaded', 'processing')",
    )
    .bind(id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    let garbage = media::prefixes(id);
    add_garbage(tx, &garbage).await?;
    Ok(garbage)
}

/// Storage housekeeping, run by workers every few minutes: uploads nobody
/// finished within `ttl` are deleted, listed prefixes are cleared, and
/// finished jobs older than a week are pruned.
pub async fn sweep(ctx: &WorkContext, ttl: Duration) -> anyhow::Result<()> {
    let abandoned = sqlx::query(
        "WITH gone AS (
            DELETE FROM video_answers v
             WHERE status = 'uploading' AND created_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM video_chunks c
                                WHERE c.video_id = v.id AND c.received_at >= now() - make_interval(secs => $1))
            RETURNING id)
         INSERT INTO storage_gc (prefix) SELECT 'uploads/' || id || '/' FROM gone ON CONFLICT DO NOTHING",
    )
    .bind(ttl.as_secs_f64())
    .execute(&ctx.db)
    .await?
    .rows_affected();
    if abandoned > 0 {
        tracing::info!(abandoned, "deleted abandoned uploads");
    }
    let cleared = ctx.store.collect_garbage(&ctx.db, None).await?;
    if cleared > 0 {
        tracing::info!(cleared, "deleted media of removed video answers");
    }
    jobs::prune(&ctx.db, Duration::from_secs(7 * 86_400)).await?;
    Ok(())
}

/// Lists prefixes for deletion, in the caller's transaction.
pub async fn add_garbage(conn: &mut PgConnection, prefixes: &[String]) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO storage_gc (prefix) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
        .bind(prefixes)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes listed prefixes now (after commit); the maintenance sweep retries
/// what fails.
async fn collect(ctx: &WorkContext, prefixes: &[String]) {
    if prefixes.is_empty() {
        return;
    }
    if let Err(e) = ctx.store.collect_garbage(&ctx.db, Some(prefixes)).await {
        tracing::warn!(error = %e, "deleting media failed; the maintenance sweep retries");
    }
}

/// Concatenates the chunks into a local scratch file, checking the size.
async fn fetch_source(
    store: &MediaStore,
    id: Uuid,
    chunk_count: i32,
    size: i64,
    path: &Path,
) -> Result<(), JobError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .context("creating the scratch file")?;
    let mut written: u64 = 0;
    for index in 0..u32::try_from(chunk_count).unwrap_or(0) {
        let (_, mut stream) = store.get_stream(&media::chunk_key(id, index)).await?;
        use futures_util::StreamExt;
        while let Some(bytes) = stream.next().await {
            let bytes = bytes?;
            written += bytes.len() as u64;
            file.write_all(&bytes)
                .await
                .context("writing the scratch file")?;
        }
    }
    file.flush().await.context("writing the scratch file")?;
    if i64::try_from(written).ok() != Some(size) {
        return Err(JobError::Transient(anyhow::anyhow!(
            "the stored chunks hold {written} bytes, not {size}"
        )));
    }
    Ok(())
}

/// Uploads every file under `dir` to `prefix/<relative path>`.
async fn upload_dir(store: &MediaStore, dir: &Path, prefix: &str) -> Result<usize, JobError> {
    let mut pending = vec![dir.to_path_buf()];
    let mut count = 0;
    while let Some(current) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&current)
            .await
            .context("reading the output")?;
        while let Some(entry) = entries.next_entry().await.context("reading the output")? {
            let path = entry.path();
            if entry
                .file_type()
                .await
                .context("reading the output")?
                .is_dir()
            {
                pending.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .context("output outside its directory")?
                .to_string_lossy()
                .replace('\\', "/");
            let bytes = tokio::fs::read(&path)
                .await
                .context("reading an output file")?;
            store
                .put(&format!("{prefix}/{relative}"), bytes.into())
                .await?;
            count += 1;
        }
    }
    Ok(count)
}

/// A scratch directory removed when dropped (the attempt ends, however).
struct ScratchDir(PathBuf);

impl ScratchDir {
    async fn create(path: &Path) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "removing the scratch directory failed");
        }
    }
}
