//! CivicQ video answers end to end: chunked uploads through the API, the
//! real `refbackend worker` binary running ffmpeg, HLS read back by
//! ffprobe, through a local directory and through a real S3-compatible
//! server (moto, from PyPI: `scripts/test` installs it); bad uploads; and a
//! worker SIGKILLed in the middle of a transcode.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use refbackend::config::{MediaConfig, S3Settings};
use refbackend::media::MediaStore;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::services::{TestDatabase, services};
use crate::support::{TestApp, free_port, send};

/// Chunks of 64 KiB (the smallest allowed), so a short clip has several.
const CHUNK: usize = 65_536;

/// A clip made by ffmpeg's test source: `height`p, `seconds` long, with a
/// tone, H.264 + AAC in MP4.
async fn make_clip(dir: &Path, name: &str, width: u32, height: u32, seconds: u32) -> Vec<u8> {
    let path = dir.join(name);
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "testsrc=size={width}x{height}:rate=25:duration={seconds}"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-shortest"])
        .arg(&path)
        .status()
        .await
        .expect("ffmpeg runs (scripts/test installs it)");
    assert!(status.success(), "ffmpeg made no clip");
    tokio::fs::read(&path).await.expect("clip")
}

fn scratch(name: &str) -> PathBuf {
    let dir = services().root.join("video-scratch").join(name);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A candidate and a question to answer.
async fn candidate_and_question(app: &TestApp) -> (Uuid, String, String) {
    let (_, member) = app.users_with_role(1, "member").await.remove(0);
    let (status, created) = send(
        app,
        Method::POST,
        "/api/v1/cities/1/questions",
        &member,
        Some(json!({"body": "What will you do about the bus lanes on Main Street?"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let question = created["question"]["id"].as_str().expect("id").to_owned();
    let (candidate, token) = app.candidates_in(1, 1).await.remove(0);
    (candidate, token, question)
}

async fn create_upload(app: &TestApp, token: &str, question: &str, size: usize) -> (u16, Value) {
    send(
        app,
        Method::POST,
        &format!("/api/v1/questions/{question}/video-answers"),
        token,
        Some(json!({"size_bytes": size})),
    )
    .await
}

async fn put_chunk(
    app: &TestApp,
    token: &str,
    id: &str,
    index: usize,
    bytes: &[u8],
) -> (u16, Value) {
    let response = app
        .client
        .put(app.url(&format!("/api/v1/video-answers/{id}/chunks/{index}")))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("chunk request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Uploads a file in reverse chunk order, sending one chunk twice, and
/// completes it. Returns the video answer's id.
async fn upload(app: &TestApp, token: &str, question: &str, file: &[u8]) -> String {
    let (status, created) = create_upload(app, token, question, file.len()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "uploading");
    assert_eq!(created["chunk_bytes"], CHUNK);
    let id = created["id"].as_str().expect("id").to_owned();
    let chunks: Vec<&[u8]> = file.chunks(CHUNK).collect();
    assert_eq!(created["chunk_count"], chunks.len());
    for (index, chunk) in chunks.iter().enumerate().rev() {
        let (status, receipt) = put_chunk(app, token, &id, index, chunk).await;
        assert_eq!(status, 200, "chunk {index}: {receipt}");
    }
    // A repeated chunk (a client retry) replaces the first copy.
    let (status, receipt) = put_chunk(app, token, &id, 0, chunks[0]).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["received"], chunks.len());
    let (status, completed) = send(
        app,
        Method::POST,
        &format!("/api/v1/video-answers/{id}/complete"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 202, "{completed}");
    assert_eq!(completed["status"], "uploaded");
    assert_eq!(completed["container"], "mp4");
    id
}

/// `refbackend worker` as a child process (killed when dropped).
struct Worker {
    child: tokio::process::Child,
}

impl Worker {
    async fn start(db: &TestDatabase, media_env: &[(String, String)], lease: &str) -> Worker {
        let metrics_port = free_port();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_refbackend"));
        command
            .arg("worker")
            .env("APP_ENV", "test")
            .env("DATABASE_URL", &db.primary_url)
            .env("JWT_SECRET", crate::support::TEST_SECRET)
            .env("WORKER_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env(
                "WORKER_SCRATCH_DIR",
                scratch(&format!("worker-{}", Uuid::now_v7())),
            )
            .env("WORKER_POLL_INTERVAL", "200ms")
            .env("JOB_LEASE", lease)
            .env("VIDEO_CHUNK_BYTES", CHUNK.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in media_env {
            command.env(k, v);
        }
        let mut worker = Worker {
            child: command.spawn().expect("spawn worker"),
        };
        // Up when its health endpoint answers (and not if it exited).
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!("the worker exited at start: {status}");
            }
            let health = client
                .get(format!("http://127.0.0.1:{metrics_port}/health"))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == 200) {
                return worker;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no clean-up, no lease hand-back.
    async fn kill(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }
}

async fn video(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, body) = send(
        app,
        Method::GET,
        &format!("/api/v1/video-answers/{id}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls until the answer reaches `status` (or fails the test on `failed`
/// when waiting for `ready`).
async fn wait_for_status(
    app: &TestApp,
    token: &str,
    id: &str,
    status: &str,
    within: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let body = video(app, token, id).await;
        if body["status"] == status {
            return body;
        }
        assert!(
            !(status == "ready" && body["status"] == "failed"),
            "the video failed: {body}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {} after {within:?}: {body}",
            body["status"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ffprobe's view of a playlist URL: (stream kind, height) per stream.
async fn ffprobe_streams(url: &str) -> Vec<(String, Option<u64>)> {
    let output = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams", url])
        .output()
        .await
        .expect("ffprobe runs");
    assert!(
        output.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).expect("ffprobe json");
    parsed["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_owned(),
                s["height"].as_u64(),
            )
        })
        .collect()
}

fn media_store(url: &str, s3: S3Settings) -> MediaStore {
    MediaStore::open(&MediaConfig {
        store_url: url.to_owned(),
        public_url: "/media".into(),
        max_bytes: 1 << 30,
        max_duration: Duration::from_secs(300),
        chunk_bytes: CHUNK as u32,
        upload_ttl: Duration::from_secs(3600),
        s3,
    })
    .expect("store")
}

/// Waits until the storage garbage list is empty: the worker deletes media
/// just after committing the state change the test has already seen.
async fn wait_for_gc(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_gc")
            .fetch_one(app.state.db.write())
            .await
            .expect("gc");
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} prefixes never deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a ready answer: its renditions through the API's `/media`, read
/// by ffprobe; the stored keys (exactly what the playlists name, no source
/// chunks left); the job finished once.
async fn check_ready(app: &TestApp, store: &MediaStore, ready: &Value, expect: &[(&str, u64)]) {
    let id = ready["id"].as_str().expect("id");
    let names: Vec<&str> = expect.iter().map(|(n, _)| *n).collect();
    assert_eq!(ready["renditions"], json!(names));
    let playlist = ready["playlist_url"].as_str().expect("playlist url");
    assert_eq!(playlist, format!("/media/videos/{id}/hls/master.m3u8"));
    let master = app
        .client
        .get(app.url(playlist))
        .send()
        .await
        .expect("master");
    assert_eq!(master.status(), 200);
    assert_eq!(
        master.headers()["content-type"],
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(
        master.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let master = master.text().await.expect("master text");
    for (name, height) in expect {
        assert!(master.contains(&format!("{name}/index.m3u8")), "{master}");
        let streams =
            ffprobe_streams(&app.url(&format!("/media/videos/{id}/hls/{name}/index.m3u8"))).await;
        assert!(
            streams.contains(&("video".to_owned(), Some(*height))),
            "{name}: {streams:?}"
        );
        assert!(
            streams.iter().any(|(kind, _)| kind == "audio"),
            "{name}: {streams:?}"
        );
    }
    // The master playlist itself lists every rendition to a player.
    let variants = ffprobe_streams(&app.url(playlist)).await;
    for (_, height) in expect {
        assert!(
            variants.contains(&("video".to_owned(), Some(*height))),
            "{variants:?}"
        );
    }
    let poster = app
        .client
        .get(app.url(ready["poster_url"].as_str().expect("poster")))
        .send()
        .await
        .expect("poster");
    assert_eq!(poster.status(), 200);
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    assert!(ready["duration_seconds"].as_f64().expect("duration") > 1.5);

    // Storage: every segment a playlist names exists, nothing else does.
    wait_for_gc(app).await;
    let keys: Vec<String> = store
        .list(&format!("videos/{id}/"))
        .await
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut expected = vec![
        format!("videos/{id}/hls/master.m3u8"),
        format!("videos/{id}/poster.jpg"),
    ];
    for (name, _) in expect {
        let key = format!("videos/{id}/hls/{name}/index.m3u8");
        let text =
            String::from_utf8(store.get(&key).await.expect("playlist").to_vec()).expect("utf8");
        expected.push(key);
        for segment in text.lines().filter(|l| l.ends_with(".ts")) {
            expected.push(format!("videos/{id}/hls/{name}/{segment}"));
        }
    }
    expected.sort();
    assert_eq!(
        keys, expected,
        "stored media is exactly what the playlists name"
    );
    assert!(
        store
            .list(&format!("uploads/{id}/"))
            .await
            .expect("list")
            .is_empty(),
        "source chunks remain"
    );
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM jobs WHERE payload ->> 'video_id' = $1")
            .bind(id)
            .fetch_one(app.state.db.write())
            .await
            .expect("one job");
    assert_eq!(status, "done");
    assert!(attempts >= 1);
}

#[tokio::test]
async fn a_clip_uploaded_in_chunks_becomes_hls_renditions_up_to_its_own_height() {
    let media_dir = services()
        .root
        .join("media-local")
        .join(Uuid::now_v7().to_string());
    let media_url = format!("file://{}", media_dir.display());
    let app = TestApp::builder()
        .env("MEDIA_STORE_URL", &media_url)
        .env("VIDEO_CHUNK_BYTES", &CHUNK.to_string())
        .start()
        .await;
    let (_, token, question) = candidate_and_question(&app).await;
    let clip = make_clip(&scratch("local"), "clip480.mp4", 854, 480, 6).await;
    assert!(clip.len() > 2 * CHUNK, "the clip spans several chunks");
    let id = upload(&app, &token, &question, &clip).await;

    // Not ready yet: the public does not see it.
    let (status, _) = app.get_json(&format!("/api/v1/video-answers/{id}")).await;
    assert_eq!(status, 404);

    let _worker = Worker::start(
        &app.db,
        &[("MEDIA_STORE_URL".into(), media_url.clone())],
        "30s",
    )
    .await;
    let ready = wait_for_status(&app, &token, &id, "ready", Duration::from_secs(180)).await;
    let store = media_store(&media_url, S3Settings::default());
    check_ready(&app, &store, &ready, &[("480p", 480), ("360p", 360)]).await;

    // Now public, and listed with the question.
    let (status, public) = app
        .get_json(&format!("/api/v1/questions/{question}/video-answers"))
        .await;
    assert_eq!(status, 200, "{public}");
    assert_eq!(public["items"][0]["id"], json!(id));
    assert_eq!(public["items"][0]["status"], "ready");

    // Deleting the answer deletes its media.
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/video-answers/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(
        store
            .list(&format!("videos/{id}/"))
            .await
            .expect("list")
            .is_empty()
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM storage_gc")
        .fetch_one(app.state.db.write())
        .await
        .expect("gc");
    assert_eq!(pending, 0);
    app.stop().await;
}

/// moto's S3 server on a free port, with one bucket (killed when dropped).
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    async fn start(bucket: &str) -> S3Server {
        let port = free_port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs (scripts/test installs it: pip install 'moto[server]')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // moto takes unsigned requests: create the bucket directly.
            if let Ok(r) = client.put(format!("{endpoint}/{bucket}")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        S3Server { child, endpoint }
    }

    fn env(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("MEDIA_STORE_URL", format!("s3://{bucket}/media")),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some(refbackend::config::Secret::new("testing")),
            allow_http: true,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_same_pipeline_runs_through_an_s3_compatible_store() {
    let s3 = S3Server::start("videos").await;
    let env = s3.env("videos");
    let mut builder = TestApp::builder().env("VIDEO_CHUNK_BYTES", &CHUNK.to_string());
    for (k, v) in &env {
        builder = builder.env(k, v);
    }
    let app = builder.start().await;
    let (_, token, question) = candidate_and_question(&app).await;
    let clip = make_clip(&scratch("s3"), "clip360.mp4", 640, 360, 3).await;
    let id = upload(&app, &token, &question, &clip).await;
    let store = media_store("s3://videos/media", s3.settings());
    assert!(
        !store
            .list(&format!("uploads/{id}/"))
            .await
            .expect("list")
            .is_empty(),
        "chunks went to S3"
    );
    let _worker = Worker::start(&app.db, &env, "30s").await;
    let ready = wait_for_status(&app, &token, &id, "ready", Duration::from_secs(180)).await;
    check_ready(&app, &store, &ready, &[("360p", 360)]).await;
    app.stop().await;
}

/// Nothing of an upload is left in storage (or in the database).
async fn assert_gone(app: &TestApp, id: &str) {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM video_answers WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
    assert_eq!(rows, 0, "the refused answer is deleted");
    for prefix in [format!("uploads/{id}/"), format!("videos/{id}/")] {
        assert!(
            app.state
                .media
                .list(&prefix)
                .await
                .expect("list")
                .is_empty(),
            "{prefix} orphaned"
        );
    }
}

#[tokio::test]
async fn bad_uploads_get_a_clear_4xx_and_leave_nothing_behind() {
    let app = TestApp::builder()
        .env("VIDEO_CHUNK_BYTES", &CHUNK.to_string())
        .env("VIDEO_MAX_BYTES", "1000000")
        .env("VIDEO_MAX_SECONDS", "2")
        .start()
        .await;
    let (_, token, question) = candidate_and_question(&app).await;
    let (_, member) = app.users_with_role(1, "member").await.remove(0);

    // Only candidates answer; sizes are checked up front.
    let (status, body) = create_upload(&app, &member, &question, 10).await;
    assert_eq!(status, 403, "{body}");
    let (_, elsewhere) = app.candidates_in(1, 2).await.remove(0);
    let (status, body) = create_upload(&app, &elsewhere, &question, 10).await;
    assert_eq!(status, 403, "a candidate of another city: {body}");
    let (status, body) = create_upload(&app, &token, &question, 1_000_001).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["type"]
            .as_str()
            .map(|t| t.ends_with("payload-too-large")),
        Some(true),
        "{body}"
    );
    let (status, body) = create_upload(&app, &token, &question, 0).await;
    assert_eq!(status, 422, "{body}");
    // JSON Schema's integer: 3000.0 is one (the fuzzer sends it); 2.5 is not.
    for (size, expected) in [(json!(3000.0), 201), (json!(2.5), 422)] {
        let (status, body) = send(
            &app,
            Method::POST,
            &format!("/api/v1/questions/{question}/video-answers"),
            &token,
            Some(json!({ "size_bytes": size })),
        )
        .await;
        assert_eq!(status, expected, "{body}");
        if status == 201 {
            let id = body["id"].as_str().expect("id");
            let (status, _) = send(
                &app,
                Method::DELETE,
                &format!("/api/v1/video-answers/{id}"),
                &token,
                None,
            )
            .await;
            assert_eq!(status, 204);
        }
    }

    // A PNG is not a video: refused at its first chunk, upload deleted.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.resize(3000, 7);
    let (_, created) = create_upload(&app, &token, &question, png.len()).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, body) = put_chunk(&app, &token, &id, 0, &png).await;
    assert_eq!(status, 415, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("not a video"),
        "{body}"
    );
    assert_gone(&app, &id).await;

    // Chunks out of range, of the wrong length, or not raw bytes.
    let clip = make_clip(&scratch("bad"), "clip.mp4", 320, 240, 1).await;
    let (_, created) = create_upload(&app, &token, &question, clip.len()).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let count = created["chunk_count"].as_u64().expect("count") as usize;
    let (status, body) = put_chunk(&app, &token, &id, count, b"x").await;
    assert_eq!(status, 416, "{body}");
    let (status, body) = put_chunk(&app, &token, &id, 0, &clip[..100]).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = put_chunk(&app, &token, &id, 0, &vec![0u8; CHUNK + 1]).await;
    assert_eq!(status, 413, "{body}");
    let response = app
        .client
        .put(app.url(&format!("/api/v1/video-answers/{id}/chunks/0")))
        .bearer_auth(&token)
        .json(&json!({"not": "bytes"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 415);
    // Completing with chunks missing names them, and the upload stays.
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/v1/video-answers/{id}/complete"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().expect("detail").contains("missing"),
        "{body}"
    );
    // Someone else cannot send its chunks.
    let (_, other) = app.users_with_role(1, "candidate").await.remove(0);
    let (status, _) = put_chunk(&app, &other, &id, 0, &clip[..CHUNK.min(clip.len())]).await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/api/v1/video-answers/{id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_gone(&app, &id).await;

    // A truncated file: every declared byte arrives, but the MP4 is cut.
    let cut = &clip[..clip.len() * 2 / 3];
    let (_, created) = create_upload(&app, &token, &question, cut.len()).await;
    let id = created["id"].as_str().expect("id").to_owned();
    for (index, chunk) in cut.chunks(CHUNK).enumerate() {
        let (status, body) = put_chunk(&app, &token, &id, index, chunk).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/v1/video-answers/{id}/complete"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("truncated"), "{body}");
    assert_gone(&app, &id).await;

    // Longer than VIDEO_MAX_SECONDS (2 s here), read from the file's index.
    let long = make_clip(&scratch("bad"), "long.mp4", 160, 120, 4).await;
    let (_, created) = create_upload(&app, &token, &question, long.len()).await;
    let id = created["id"].as_str().expect("id").to_owned();
    for (index, chunk) in long.chunks(CHUNK).enumerate() {
        put_chunk(&app, &token, &id, index, chunk).await;
    }
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/v1/video-answers/{id}/complete"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("limit is 2 s"), "{body}");
    assert_gone(&app, &id).await;

    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(app.state.db.write())
        .await
        .expect("jobs");
    assert_eq!(jobs, 0, "no bad upload was queued");
    app.stop().await;
}

#[tokio::test]
async fn a_file_the_worker_cannot_read_as_video_fails_with_its_reason_and_is_deleted() {
    let app = TestApp::builder()
        .env("VIDEO_CHUNK_BYTES", &CHUNK.to_string())
        .start()
        .await;
    let (_, token, question) = candidate_and_question(&app).await;
    // An MP4 with sound only: it passes the container checks, not the probe.
    let dir = scratch("audio-only");
    let path = dir.join("tone.mp4");
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-c:a",
            "aac",
        ])
        .arg(&path)
        .status()
        .await
        .expect("ffmpeg");
    assert!(status.success());
    let tone = tokio::fs::read(&path).await.expect("tone");
    let (_, created) = create_upload(&app, &token, &question, tone.len()).await;
    let id = created["id"].as_str().expect("id").to_owned();
    for (index, chunk) in tone.chunks(CHUNK).enumerate() {
        put_chunk(&app, &token, &id, index, chunk).await;
    }
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/v1/video-answers/{id}/complete"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let media_url = app.state.config.media.store_url.clone();
    let _worker = Worker::start(&app.db, &[("MEDIA_STORE_URL".into(), media_url)], "30s").await;
    let failed = wait_for_status(&app, &token, &id, "failed", Duration::from_secs(60)).await;
    assert_eq!(
        failed["failure"], "the file has no video stream",
        "{failed}"
    );
    let (status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM jobs")
        .fetch_one(app.state.db.write())
        .await
        .expect("job");
    assert_eq!(
        (status.as_str(), attempts),
        ("dead", 1),
        "a permanent error is not retried"
    );
    wait_for_gc(&app).await;
    assert!(
        app.state
            .media
            .list(&format!("uploads/{id}/"))
            .await
            .expect("list")
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_transcode_leaves_the_job_to_another_which_finishes_it_once() {
    let app = TestApp::builder()
        .env("VIDEO_CHUNK_BYTES", &CHUNK.to_string())
        .start()
        .await;
    let (_, token, question) = candidate_and_question(&app).await;
    // Long enough to be caught in the middle: 720p, three renditions.
    let clip = make_clip(&scratch("chaos"), "clip720.mp4", 1280, 720, 12).await;
    let id = upload(&app, &token, &question, &clip).await;
    let media = vec![(
        "MEDIA_STORE_URL".to_owned(),
        app.state.config.media.store_url.clone(),
    )];
    let mut first = Worker::start(&app.db, &media, "2s").await;
    wait_for_status(&app, &token, &id, "processing", Duration::from_secs(60)).await;
    // Let ffmpeg get going, then SIGKILL: no hand-back, the lease just stops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill().await;
    let (job_status, attempts): (String, i32) = sqlx::query_as("SELECT status, attempts FROM jobs")
        .fetch_one(app.state.db.write())
        .await
        .expect("job");
    assert_eq!(
        (job_status.as_str(), attempts),
        ("running", 1),
        "killed in the middle of the job"
    );
    assert_eq!(video(&app, &token, &id).await["status"], "processing");

    let _second = Worker::start(&app.db, &media, "2s").await;
    let ready = wait_for_status(&app, &token, &id, "ready", Duration::from_secs(240)).await;
    check_ready(
        &app,
        &app.state.media,
        &ready,
        &[("720p", 720), ("480p", 480), ("360p", 360)],
    )
    .await;
    let (job_status, attempts, jobs): (String, i32, i64) =
        sqlx::query_as("SELECT min(status), min(attempts), count(*) FROM jobs")
            .fetch_one(app.state.db.write())
            .await
            .expect("job");
    assert_eq!(
        (job_status.as_str(), attempts, jobs),
        ("done", 2, 1),
        "one job, finished by its second attempt"
    );
    app.stop().await;
}

#[tokio::test]
async fn only_the_holder_of_a_jobs_current_lease_can_finish_it() {
    let app = TestApp::builder()
        .unseeded()
        .without_replica()
        .start()
        .await;
    let db = app.state.db.write();
    let mut tx = db.begin().await.expect("tx");
    let payload = json!({"video_id": Uuid::now_v7().to_string()});
    let id = refbackend::jobs::enqueue(&mut tx, "video_transcode", &payload, 3)
        .await
        .expect("enqueue");
    // The same subject twice: one live job.
    let again = refbackend::jobs::enqueue(&mut tx, "video_transcode", &payload, 3)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    assert!(id.is_some());
    assert_eq!(again, None);

    let first = refbackend::jobs::claim(db, "a", Duration::from_millis(300))
        .await
        .expect("claim")
        .expect("a job");
    assert!(
        refbackend::jobs::claim(db, "b", Duration::from_secs(30))
            .await
            .expect("claim")
            .is_none(),
        "leased"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = refbackend::jobs::claim(db, "b", Duration::from_secs(30))
        .await
        .expect("claim")
        .expect("expired lease");
    assert_eq!((second.id, second.attempts), (first.id, 2));
    assert!(
        !refbackend::jobs::renew(db, &first, Duration::from_secs(30))
            .await
            .expect("renew")
    );
    let mut tx = db.begin().await.expect("tx");
    assert!(
        !refbackend::jobs::finish(&mut tx, &first)
            .await
            .expect("finish"),
        "the old lease is fenced off"
    );
    assert!(
        refbackend::jobs::finish(&mut tx, &second)
            .await
            .expect("finish")
    );
    tx.commit().await.expect("commit");
    let mut tx = db.begin().await.expect("tx");
    assert_eq!(
        refbackend::jobs::fail(&mut tx, &second, "late", false)
            .await
            .expect("fail"),
        refbackend::jobs::Failed::LeaseLost,
        "a finished job cannot fail afterwards"
    );
    tx.commit().await.expect("commit");
    app.stop().await;
}
