//! CivicQ video answers over HTTP (docs/video.md): create an upload, send
//! its chunks (resumable: any order, repeats replace), complete it (the
//! content is checked and a transcode queued), read its state, delete it;
//! and `GET /media/…`, which serves the processed renditions.
//!
//! Chunk writes and deletion cannot race into an orphan: a chunk is stored
//! while its transaction holds the answer's row `FOR SHARE`, and deleting
//! (or rejecting) the answer takes the row's exclusive lock first, so it
//! waits for writes in flight; the prefix goes on `storage_gc` in the
//! deleting transaction.

use axum::body::{Body, Bytes};
use axum::extract::{Path as RawPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AuthUser, Role};
use crate::civic::ballot::ensure_may_answer;
use crate::error::{AppError, AppResult, Problem};
use crate::http::answers::{question_ballot, question_status};
use crate::http::extract::{AppJson, AppPath};
use crate::http::moderation::question_key;
use crate::http::practice::{private_json, remember_write};
use crate::http::questions::{gate_read, is_moderator, lock_open_question};
use crate::media::{self, MediaStore};
use crate::video::sniff::{self, Container, Mp4Walk, SNIFF_BYTES, StructureError};
use crate::video::{self, TRANSCODE_ATTEMPTS};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_video_answer, list_video_answers))
        .routes(routes!(get_video_answer, delete_video_answer))
        .routes(routes!(put_chunk))
        .routes(routes!(complete_upload))
        // Bodies are capped by the stack's own limit (src/app.rs), which
        // allows a chunk here; axum's default 2 MB cap would refuse one.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// The path chunk bodies arrive on: the body limit there is the chunk size
/// (src/app.rs), not `HTTP_BODY_LIMIT_BYTES`.
pub fn is_chunk_path(path: &str) -> bool {
    let mut parts = path.trim_end_matches('/').split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some(""),
            Some("api"),
            Some("v1"),
            Some("video-answers"),
            Some(_),
            Some("chunks"),
            Some(_)
        )
    ) && parts.next().is_none()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVideoAnswer {
    /// The file's exact size in bytes: at least 1, at most `VIDEO_MAX_BYTES`
    /// (500 MiB by default; larger is a 413).
    #[schema(minimum = 1)]
    #[serde(deserialize_with = "crate::http::extract::integer")]
    pub size_bytes: u64,
}

/// A video answer and, for its candidate while uploading, what arrived.
#[derive(Debug, Serialize, ToSchema)]
pub struct VideoAnswerView {
    pub id: Uuid,
    pub question_id: Uuid,
    pub candidate_id: Uuid,
    pub candidate_name: String,
    /// The candidate's ballot profile (GET /candidates/{id}).
    pub profile_id: Option<Uuid>,
    /// uploading | uploaded (queued) | processing | ready | failed
    pub status: String,
    pub size_bytes: i64,
    /// Every chunk but the last has exactly this size.
    pub chunk_bytes: i32,
    pub chunk_count: i32,
    /// While uploading, to the candidate: the indexes received so far (to
    /// resume, send the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_chunks: Option<Vec<i32>>,
    /// mp4 | quicktime | webm, from the content (set on completion).
    pub container: Option<String>,
    pub duration_seconds: Option<f64>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    /// Rendition names, highest first (e.g. 720p, 480p, 360p).
    pub renditions: Vec<String>,
    /// The HLS master playlist, when ready.
    pub playlist_url: Option<String>,
    pub poster_url: Option<String>,
    /// Why processing failed.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub ready_at: Option<DateTime<Utc>>,
}

#[derive(Debug, sqlx::FromRow)]
struct VideoRow {
    id: Uuid,
    question_id: Uuid,
    candidate_id: Uuid,
    candidate_name: String,
    profile_id: Option<Uuid>,
    status: String,
    size_bytes: i64,
    chunk_bytes: i32,
    chunk_count: i32,
    container: Option<String>,
    duration_ms: Option<i32>,
    width: Option<i32>,
    height: Option<i32>,
    renditions: Vec<String>,
    master_key: Option<String>,
    poster_key: Option<String>,
    failure: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ready_at: Option<DateTime<Utc>>,
}

const VIDEO_COLUMNS: &str = "v.id, v.question_id, v.candidate_id, u.display_name AS candidate_name, \
     v.profile_id, v.status, v.size_bytes, v.chunk_bytes, v.chunk_count, v.container, v.duration_ms, v.width, \
     v.height, v.renditions, v.master_key, v.poster_key, v.failure, v.created_at, v.updated_at, v.ready_at";

impl VideoRow {
    fn view(self, store: &MediaStore, received: Option<Vec<i32>>) -> VideoAnswerView {
        let ready = self.status == "ready";
        VideoAnswerView {
            id: self.id,
            question_id: self.question_id,
            candidate_id: self.candidate_id,
            candidate_name: self.candidate_name,
            profile_id: self.profile_id,
            status: self.status,
            size_bytes: self.size_bytes,
            chunk_bytes: self.chunk_bytes,
            chunk_count: self.chunk_count,
            received_chunks: received,
            container: self.container,
            duration_seconds: self.duration_ms.map(|ms| f64::from(ms) / 1000.0),
            width: self.width,
            height: self.height,
            renditions: self.renditions,
            playlist_url: self
                .master_key
                .filter(|_| ready)
                .map(|k| store.public_url(&k)),
            poster_url: self
                .poster_key
                .filter(|_| ready)
                .map(|k| store.public_url(&k)),
            failure: self.failure,
            created_at: self.created_at,
            updated_at: self.updated_at,
            ready_at: self.ready_at,
        }
    }
}

async fn load(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<VideoRow>> {
    sqlx::query_as::<_, VideoRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {VIDEO_COLUMNS} FROM video_answers v JOIN users u ON u.id = v.candidate_id WHERE v.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

async fn received_chunks(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar("SELECT idx FROM video_chunks WHERE video_id = $1 ORDER BY idx")
        .bind(id)
        .fetch_all(conn)
        .await
}

fn not_found(id: Uuid) -> AppError {
    AppError::NotFound(format!("No video answer with id {id}"))
}

/// A candidate starts a video answer to a question: the response says how
/// to cut the file (`chunk_bytes`, `chunk_count`). One per candidate per
/// question (delete it to start over).
#[utoipa::path(post, path = "/questions/{id}/video-answers", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Question id")),
    request_body = NewVideoAnswer,
    responses(
        (status = 201, description = "The upload, waiting for its chunks", body = VideoAnswerView),
        (status = 400, description = "Malformed JSON or id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a candidate on this question's ballot (its city, or its contest)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "You already have a video answer here, or the question was merged", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than VIDEO_MAX_BYTES", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid size", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_video_answer(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(question_id): AppPath<Uuid>,
    AppJson(request): AppJson<NewVideoAnswer>,
) -> AppResult<Response> {
    user.require(&[Role::Candidate])?;
    let config = &state.config.media;
    if request.size_bytes == 0 {
        return Err(AppError::validation("size_bytes", "must be at least 1"));
    }
    if request.size_bytes > config.max_bytes {
        return Err(AppError::PayloadTooLarge(format!(
            "A video may be at most {} bytes; this one is {}.",
            config.max_bytes, request.size_bytes
        )));
    }
    let size = i64::try_from(request.size_bytes)
        .map_err(|_| AppError::validation("size_bytes", "is too large"))?;
    let chunk_bytes = i64::from(config.chunk_bytes);
    let chunk_count = (size + chunk_bytes - 1) / chunk_bytes;
    let created_at = question_key(question_id)?;
    let mut tx = state.db.write().begin().await?;
    lock_open_question(&mut tx, question_id, created_at, &user, "answers").await?;
    // The same rule as text answers: a candidate on this question's ballot.
    let (city_id, contest_id) = question_ballot(&mut tx, question_id, created_at).await?;
    let profile_id = ensure_may_answer(&mut tx, city_id, contest_id, &user).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO video_answers (id, question_id, candidate_id, size_bytes, chunk_bytes, chunk_count, profile_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT ON CONSTRAINT video_answers_one_per_candidate DO NOTHING",
    )
    .bind(id)
    .bind(question_id)
    .bind(user.id)
    .bind(size)
    .bind(i32::try_from(chunk_bytes).unwrap_or(i32::MAX))
    .bind(i32::try_from(chunk_count).unwrap_or(i32::MAX))
    .bind(profile_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM video_answers WHERE question_id = $1 AND candidate_id = $2",
        )
        .bind(question_id)
        .bind(user.id)
        .fetch_optional(&mut *tx)
        .await?;
        return Err(AppError::Conflict(format!(
            "You already have a video answer to this question ({}); delete it to upload another.",
            existing.map(|id| id.to_string()).unwrap_or_default()
        )));
    }
    let row = load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
    tx.commit().await?;
    remember_write(&state, user.id).await;
    let mut response = private_json(&row.view(&state.media, Some(Vec::new())))?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// The chunk's answer, locked `FOR SHARE` (see the module docs), checked to
/// be the caller's and still uploading.
#[derive(Debug, sqlx::FromRow)]
struct UploadRow {
    candidate_id: Uuid,
    status: String,
    size_bytes: i64,
    chunk_bytes: i32,
    chunk_count: i32,
}

/// How [`lock_own_upload`] locks the answer's row.
#[derive(Debug, Clone, Copy)]
enum Lock {
    /// Chunk writes: many at once, but none while the row is deleted.
    Share,
    /// Completion: waits for the chunk writes in flight.
    Update,
}

/// The caller's upload `id`, its row locked for the rest of the transaction;
/// a 404 when it is not theirs (or not there).
async fn lock_own_upload(
    tx: &mut PgConnection,
    id: Uuid,
    user: &AuthUser,
    lock: Lock,
) -> AppResult<UploadRow> {
    let query = match lock {
        Lock::Share => {
            "SELECT candidate_id, status, size_bytes, chunk_bytes, chunk_count
               FROM video_answers WHERE id = $1 FOR SHARE"
        }
        Lock::Update => {
            "SELECT candidate_id, status, size_bytes, chunk_bytes, chunk_count
               FROM video_answers WHERE id = $1 FOR UPDATE"
        }
    };
    sqlx::query_as::<_, UploadRow>(query)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .filter(|r| r.candidate_id == user.id)
        .ok_or_else(|| not_found(id))
}

/// After a chunk arrives.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkReceipt {
    pub index: i32,
    pub size_bytes: i32,
    /// Chunks received so far, this one included.
    pub received: i64,
    pub chunk_count: i32,
}

/// Uploads one chunk (raw bytes, `Content-Type: application/octet-stream`).
/// Any order; sending a chunk again replaces it. Chunk `index` holds bytes
/// `index × chunk_bytes` onwards: exactly `chunk_bytes` of them, fewer for the
/// last. The first chunk's content must be a video (MP4, QuickTime or WebM):
/// otherwise the whole upload is deleted and a 415 says why.
#[utoipa::path(put, path = "/video-answers/{id}/chunks/{index}", tag = "civic",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Video answer id"),
        ("index" = u32, Path, description = "Chunk index, from 0 to chunk_count - 1"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The chunk's bytes"),
    responses(
        (status = 200, description = "Stored", body = ChunkReceipt),
        (status = 400, description = "Malformed id or index", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a candidate", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such video answer of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The upload is already complete", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than a chunk", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/octet-stream, or the file is not a video (the upload is deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The index is past the last chunk", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The chunk's length is not what its index needs", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_chunk(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath((id, index)): AppPath<(Uuid, u32)>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> AppResult<Response> {
    user.require(&[Role::Candidate])?;
    let is_octet_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/octet-stream")
        });
    if !is_octet_stream {
        return Err(AppError::UnsupportedMediaType(
            "Send a chunk with Content-Type: application/octet-stream".into(),
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge(format!(
                "A chunk is at most {} bytes.",
                state.config.media.chunk_bytes
            ))
        } else {
            AppError::BadRequest(format!("The chunk could not be read: {rejection}"))
        }
    })?;
    let mut tx = state.db.write().begin().await?;
    let row = lock_own_upload(&mut tx, id, &user, Lock::Share).await?;
    if row.status != "uploading" {
        return Err(AppError::Conflict(format!(
            "This upload is complete (it is {}); it takes no more chunks.",
            row.status
        )));
    }
    let index = i32::try_from(index).unwrap_or(i32::MAX);
    if index >= row.chunk_count {
        return Err(AppError::RangeNotSatisfiable(format!(
            "Chunk {index} is out of range: this upload has chunks 0 to {}.",
            row.chunk_count - 1
        )));
    }
    let start = i64::from(index) * i64::from(row.chunk_bytes);
    let expected = (row.size_bytes - start).min(i64::from(row.chunk_bytes));
    if i64::try_from(body.len()).ok() != Some(expected) {
        return Err(AppError::validation(
            "body",
            format!(
                "chunk {index} must be exactly {expected} bytes; it is {}",
                body.len()
            ),
        ));
    }
    if index == 0 && sniff::sniff(&body[..body.len().min(SNIFF_BYTES)]).is_none() {
        tx.rollback().await?;
        reject(&state, id).await?;
        return Err(AppError::UnsupportedMediaType(
            "The file is not a video this service accepts (MP4, QuickTime or WebM); the upload was deleted.".into(),
        ));
    }
    let size = body.len();
    state
        .media
        .put(&media::chunk_key(id, index as u32), body)
        .await
        .map_err(storage_unavailable)?;
    sqlx::query(
        "INSERT INTO video_chunks (video_id, idx, size_bytes) VALUES ($1, $2, $3)
         ON CONFLICT (video_id, idx) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, received_at = now()",
    )
    .bind(id)
    .bind(index)
    .bind(i32::try_from(size).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM video_chunks WHERE video_id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    private_json(&ChunkReceipt {
        index,
        size_bytes: i32::try_from(size).unwrap_or(i32::MAX),
        received,
        chunk_count: row.chunk_count,
    })
}

fn storage_unavailable(e: object_store::Error) -> AppError {
    tracing::warn!(error = %e, "media storage failed");
    AppError::Unavailable("Media storage is unavailable; retry the request.".into())
}

/// Deletes a video answer and lists its media for deletion in the same
/// transaction, then deletes the media (the worker's sweep retries what
/// fails). `by`: the caller, who must own it or moderate; None for the
/// service itself (a refused upload). False when there was nothing to delete.
async fn remove(state: &AppState, id: Uuid, by: Option<&AuthUser>) -> AppResult<bool> {
    let mut tx = state.db.write().begin().await?;
    let deleted: Option<Uuid> = sqlx::query_scalar(
        "DELETE FROM video_answers WHERE id = $1 AND ($2::uuid IS NULL OR candidate_id = $2 OR $3)
         RETURNING id",
    )
    .bind(id)
    .bind(by.map(|u| u.id))
    .bind(is_moderator(by))
    .fetch_optional(&mut *tx)
    .await?;
    if deleted.is_none() {
        return Ok(false);
    }
    let garbage = media::prefixes(id);
    video::add_garbage(&mut tx, &garbage).await?;
    tx.commit().await?;
    if let Err(e) = state
        .media
        .collect_garbage(state.db.write(), Some(&garbage))
        .await
    {
        tracing::warn!(video = %id, error = %e, "deleting media failed; the sweep retries");
    }
    Ok(true)
}

/// Deletes an answer whose upload was refused, and its chunks.
async fn reject(state: &AppState, id: Uuid) -> AppResult<()> {
    remove(state, id, None).await.map(|_| ())
}

/// Reads `len` bytes at `offset` of an upload from its chunks.
async fn read_at(
    store: &MediaStore,
    id: Uuid,
    chunk_bytes: u64,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, object_store::Error> {
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let index = at / chunk_bytes;
        let within = at % chunk_bytes;
        let take = (chunk_bytes - within).min(end - at);
        let key = media::chunk_key(id, u32::try_from(index).unwrap_or(u32::MAX));
        let bytes = store.get_range(&key, within..within + take).await?;
        if bytes.is_empty() {
            break;
        }
        at += bytes.len() as u64;
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// Why completion refused a file.
enum Refusal {
    NotVideo,
    Structure(StructureError),
    TooLong(f64),
}

/// Checks the uploaded file's content: its type and top-level structure,
/// and (MP4) its duration. Storage errors are a 503 (the upload stays).
async fn inspect(
    state: &AppState,
    id: Uuid,
    size: u64,
    chunk_bytes: u64,
) -> AppResult<Result<(Container, Option<std::time::Duration>), Refusal>> {
    let store = &state.media;
    let head = read_at(store, id, chunk_bytes, 0, size.min(4096))
        .await
        .map_err(storage_unavailable)?;
    let Some(container) = sniff::sniff(&head[..head.len().min(SNIFF_BYTES)]) else {
        return Ok(Err(Refusal::NotVideo));
    };
    let duration = match container {
        Container::WebM => {
            if let Err(e) = sniff::check_webm(&head, size) {
                return Ok(Err(Refusal::Structure(e)));
            }
            None
        }
        Container::Mp4 | Container::QuickTime => {
            let mut walk = Mp4Walk::new(size);
            while let Some(need) = walk.need() {
                let bytes = read_at(store, id, chunk_bytes, need.offset, need.len)
                    .await
                    .map_err(storage_unavailable)?;
                if let Err(e) = walk.feed(&bytes) {
                    return Ok(Err(Refusal::Structure(e)));
                }
            }
            match walk.finish() {
                Ok(summary) => summary.duration,
                Err(e) => return Ok(Err(Refusal::Structure(e))),
            }
        }
    };
    if let Some(d) = duration
        && d > state.config.media.max_duration + std::time::Duration::from_millis(500)
    {
        return Ok(Err(Refusal::TooLong(d.as_secs_f64())));
    }
    Ok(Ok((container, duration)))
}

/// Completes an upload: every chunk must be there; the file's content is
/// checked (a video, complete, not too long) and a transcode queued. A
/// refused file is deleted with its chunks. Completing again is harmless.
#[utoipa::path(post, path = "/video-answers/{id}/complete", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Video answer id")),
    responses(
        (status = 202, description = "Accepted: queued for processing", body = VideoAnswerView),
        (status = 200, description = "Already complete: its current state", body = VideoAnswerView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a candidate", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such video answer of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Chunks are missing (listed), or the answer failed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not a video (the upload is deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Truncated or corrupt, or longer than VIDEO_MAX_SECONDS (the upload is deleted)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn complete_upload(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
) -> AppResult<Response> {
    user.require(&[Role::Candidate])?;
    let mut tx = state.db.write().begin().await?;
    // Waits for chunk writes in flight (they hold the row FOR SHARE).
    let row = lock_own_upload(&mut tx, id, &user, Lock::Update).await?;
    match row.status.as_str() {
        "uploading" => {}
        "failed" => {
            return Err(AppError::Conflict(
                "This video answer failed; delete it and upload the video again.".into(),
            ));
        }
        _ => {
            let current = load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
            tx.commit().await?;
            return private_json(&current.view(&state.media, None));
        }
    }
    let received = received_chunks(&mut tx, id).await?;
    if received.len() != usize::try_from(row.chunk_count).unwrap_or(0) {
        let missing: Vec<String> = (0..row.chunk_count)
            .filter(|i| received.binary_search(i).is_err())
            .take(20)
            .map(|i| i.to_string())
            .collect();
        return Err(AppError::Conflict(format!(
            "The upload is incomplete: {} of {} chunks are missing (first: {}).",
            row.chunk_count as usize - received.len(),
            row.chunk_count,
            missing.join(", ")
        )));
    }
    let size = u64::try_from(row.size_bytes).unwrap_or(0);
    let chunk_bytes = u64::try_from(row.chunk_bytes).unwrap_or(1);
    let (container, duration) = match inspect(&state, id, size, chunk_bytes).await? {
        Ok(found) => found,
        Err(refusal) => {
            tx.rollback().await?;
            reject(&state, id).await?;
            return Err(match refusal {
                Refusal::NotVideo => AppError::UnsupportedMediaType(
                    "The file is not a video this service accepts (MP4, QuickTime or WebM); the upload was deleted.".into(),
                ),
                Refusal::Structure(e) => AppError::validation(
                    "file",
                    format!("{e}; the upload was deleted"),
                ),
                Refusal::TooLong(seconds) => AppError::validation(
                    "file",
                    format!(
                        "the video is {seconds:.0} s long; the limit is {} s; the upload was deleted",
                        state.config.media.max_duration.as_secs()
                    ),
                ),
            });
        }
    };
    sqlx::query(
        "UPDATE video_answers SET status = 'uploaded', container = $2, duration_ms = $3, updated_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .bind(container.as_str())
    .bind(duration.map(|d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX)))
    .execute(&mut *tx)
    .await?;
    crate::jobs::enqueue(
        &mut tx,
        video::TRANSCODE_JOB,
        &video::transcode_payload(id),
        TRANSCODE_ATTEMPTS,
    )
    .await?;
    let current = load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
    tx.commit().await?;
    remember_write(&state, user.id).await;
    let mut response = private_json(&current.view(&state.media, None))?;
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

/// A video answer: anyone may read a ready one (if its question is
/// readable); its candidate and moderators see every state, and the
/// candidate sees the chunks received while uploading.
#[utoipa::path(get, path = "/video-answers/{id}", tag = "civic",
    params(("id" = Uuid, Path, description = "Video answer id")),
    responses(
        (status = 200, description = "The video answer", body = VideoAnswerView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such video answer (or not ready, or its question is hidden)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_video_answer(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    AppPath(id): AppPath<Uuid>,
) -> AppResult<Response> {
    // The primary: an uploader polls this for changes made a moment ago.
    let mut conn = state.db.write().acquire().await?;
    let row = load(&mut conn, id).await?.ok_or_else(|| not_found(id))?;
    let own = user.as_ref().is_some_and(|u| u.id == row.candidate_id);
    if !own && !is_moderator(user.as_ref()) {
        if row.status != "ready" {
            return Err(not_found(id));
        }
        let created_at = question_key(row.question_id)?;
        match question_status(&mut *conn, row.question_id, created_at).await? {
            Some((status, _)) if status == "visible" || status == "merged" => {}
            _ => return Err(not_found(id)),
        }
    }
    let received = if own && row.status == "uploading" {
        Some(received_chunks(&mut conn, id).await?)
    } else {
        None
    };
    private_json(&row.view(&state.media, received))
}

/// Deletes a video answer in any state, with its media (its candidate, or a
/// moderator).
#[utoipa::path(delete, path = "/video-answers/{id}", tag = "civic",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Video answer id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such video answer of yours", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_video_answer(
    State(state): State<AppState>,
    user: AuthUser,
    AppPath(id): AppPath<Uuid>,
) -> AppResult<StatusCode> {
    if !remove(&state, id, Some(&user)).await? {
        return Err(not_found(id));
    }
    remember_write(&state, user.id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VideoAnswerList {
    /// Ready video answers, oldest first (one per candidate, so a few dozen
    /// at most: not paginated).
    pub items: Vec<VideoAnswerView>,
}

/// The ready video answers to a question. Like the question itself: 404
/// when it is hidden or removed, 308 to the target's when merged.
#[utoipa::path(get, path = "/questions/{id}/video-answers", tag = "civic",
    params(("id" = Uuid, Path, description = "Question id")),
    responses(
        (status = 200, description = "The ready video answers", body = VideoAnswerList),
        (status = 308, description = "The question was merged: the target's video answers (see `Location`)",
            headers(("Location" = String, description = "The video answers of the question it was merged into"))),
        (status = 400, description = "Malformed id, or an unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such question (or hidden or removed)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_video_answers(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    AppPath(question_id): AppPath<Uuid>,
) -> AppResult<Response> {
    let created_at = question_key(question_id)?;
    let (question, rows) = state
        .db
        .read_consistent(crate::db::consistency::Freshness::Any, |pool| async move {
            let question = question_status(&pool, question_id, created_at).await?;
            if question.is_none() {
                return Ok((None, Vec::new()));
            }
            let rows = sqlx::query_as::<_, VideoRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {VIDEO_COLUMNS} FROM video_answers v JOIN users u ON u.id = v.candidate_id
                  WHERE v.question_id = $1 AND v.status = 'ready'
                  ORDER BY v.created_at, v.id LIMIT 200"
            )))
            .bind(question_id)
            .fetch_all(&pool)
            .await?;
            Ok((question, rows))
        })
        .await?;
    let (status, merged_into) =
        question.ok_or_else(|| AppError::NotFound(format!("No question with id {question_id}")))?;
    if let Some(pointer) = gate_read(
        question_id,
        &status,
        merged_into,
        user.as_ref(),
        "/video-answers",
        None,
    )? {
        return Ok(pointer);
    }
    let items = rows
        .into_iter()
        .map(|r| r.view(&state.media, None))
        .collect();
    private_json(&VideoAnswerList { items })
}

/// `GET /media/{key}`: a processed rendition, playlist or poster, from the
/// store, cacheable for a year (every key is immutable). Sources are never
/// served.
pub async fn serve_media(State(state): State<AppState>, RawPath(key): RawPath<String>) -> Response {
    if !media::is_public_key(&key) {
        return AppError::NotFound("No such media".into()).into_response();
    }
    match state.media.get_stream(&key).await {
        Ok((size, stream)) => {
            let mut response = Response::new(Body::from_stream(stream));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(media::content_type(&key)),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            response
        }
        Err(object_store::Error::NotFound { .. }) => {
            AppError::NotFound("No such media".into()).into_response()
        }
        Err(e) => storage_unavailable(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chunk_route_gets_the_chunk_body_limit() {
        assert!(is_chunk_path("/api/v1/video-answers/x/chunks/0"));
        assert!(!is_chunk_path("/api/v1/video-answers/x/complete"));
        assert!(!is_chunk_path("/api/v1/video-answers/x/chunks/0/extra"));
        assert!(!is_chunk_path("/api/v1/questions"));
    }
}
