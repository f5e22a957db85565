//! Object storage for video answers, through the `object_store` crate: a local
//! directory (`file:///…`, one box) or S3 and S3-compatible servers
//! (`s3://bucket[/prefix]`, every multi-instance stage). No video bytes go to
//! Postgres, and with S3 none stay on an instance's disk.
//!
//! Keys (docs/video.md):
//! - `uploads/<video id>/<chunk index>`: the chunks of a source file, deleted
//!   once the video is processed or rejected;
//! - `videos/<video id>/…`: the HLS renditions and the poster, immutable, the
//!   only keys `GET /media/…` serves.
//!
//! Deleting is driven by the database (`storage_gc`, see
//! migrations/0022_video_answers.sql): [`MediaStore::collect_garbage`] deletes
//! the listed prefixes and then their rows.

use std::ops::Range;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::MediaConfig;

/// The store plus the base of public URLs.
#[derive(Clone)]
pub struct MediaStore {
    store: Arc<dyn ObjectStore>,
    public_url: String,
    description: String,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaStore")
            .field("store", &self.description)
            .finish()
    }
}

impl MediaStore {
    /// Opens the store `MEDIA_STORE_URL` names (creating a local directory).
    pub fn open(config: &MediaConfig) -> anyhow::Result<Self> {
        let url = config.store_url.as_str();
        let store: Arc<dyn ObjectStore> = if let Some(dir) = url.strip_prefix("file://") {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .with_context(|| format!("opening {dir}"))?,
            )
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("MEDIA_STORE_URL {url:?} names no bucket");
            }
            let settings = &config.s3;
            // What `AmazonS3Builder::from_env` does, minus empty variables
            // (compose passes unset ones as ""; an empty endpoint breaks
            // every request).
            let mut builder = object_store::aws::AmazonS3Builder::new();
            for (key, value) in std::env::vars() {
                if !key.starts_with("AWS_") || value.trim().is_empty() {
                    continue;
                }
                if let Ok(config_key) = key.to_ascii_lowercase().parse() {
                    builder = builder.with_config(config_key, value);
                }
            }
            let mut builder = builder
                .with_bucket_name(bucket)
                .with_allow_http(settings.allow_http);
            if let Some(endpoint) = &settings.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(region) = &settings.region {
                builder = builder.with_region(region);
            }
            if let Some(key) = &settings.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &settings.secret_access_key {
                builder = builder.with_secret_access_key(secret.expose());
            }
            let s3 = builder
                .build()
                .context("configuring S3 (AWS_* variables)")?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else {
            bail!("MEDIA_STORE_URL must start with file:/// or s3://");
        };
        Ok(Self {
            store,
            public_url: config.public_url.clone(),
            description: url.to_owned(),
        })
    }

    /// The public URL of a key.
    pub fn public_url(&self, key: &str) -> String {
        format!("{}/{key}", self.public_url)
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&Path::from(key), PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
    }

    pub async fn get(&self, key: &str) -> object_store::Result<Bytes> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }

    /// The whole object as a stream, with its size.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> object_store::Result<(
        u64,
        futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    )> {
        let result = self.store.get(&Path::from(key)).await?;
        let size = result.meta.size;
        Ok((size, result.into_stream()))
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> object_store::Result<Bytes> {
        self.store.get_range(&Path::from(key), range).await
    }

    /// Every key under a prefix, with its size, sorted.
    pub async fn list(&self, prefix: &str) -> object_store::Result<Vec<(String, u64)>> {
        let mut keys: Vec<(String, u64)> = self
            .store
            .list(Some(&Path::from(prefix)))
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Deletes every object under a prefix (nothing there is fine).
    pub async fn delete_prefix(&self, prefix: &str) -> object_store::Result<usize> {
        let keys = self.list(prefix).await?;
        for (key, _) in &keys {
            match self.store.delete(&Path::from(key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(keys.len())
    }

    /// Deletes the prefixes listed in `storage_gc` (all of them, or `only`),
    /// then their rows. Returns how many prefixes were cleared. A prefix that
    /// fails stays listed for the next sweep.
    pub async fn collect_garbage(
        &self,
        db: &PgPool,
        only: Option<&[String]>,
    ) -> anyhow::Result<usize> {
        let prefixes: Vec<String> = match only {
            Some(only) => {
                sqlx::query_scalar(
                    "SELECT prefix FROM storage_gc WHERE prefix = ANY($1) ORDER BY created_at",
                )
                .bind(only)
                .fetch_all(db)
                .await?
            }
            None => {
                sqlx::query_scalar("SELECT prefix FROM storage_gc ORDER BY created_at LIMIT 1000")
                    .fetch_all(db)
                    .await?
            }
        };
        let mut cleared = 0;
        for prefix in prefixes {
            match self.delete_prefix(&prefix).await {
                Ok(_) => {
                    sqlx::query("DELETE FROM storage_gc WHERE prefix = $1")
                        .bind(&prefix)
                        .execute(db)
                        .await?;
                    cleared += 1;
                }
                Err(e) => {
                    tracing::warn!(prefix, error = %e, "deleting media failed; the next sweep retries")
                }
            }
        }
        Ok(cleared)
    }
}

/// Where a video's source chunks live.
pub fn upload_prefix(video: Uuid) -> String {
    format!("uploads/{video}/")
}

pub fn chunk_key(video: Uuid, index: u32) -> String {
    format!("uploads/{video}/{index:06}")
}

/// Where a video's renditions and poster live.
pub fn video_prefix(video: Uuid) -> String {
    format!("videos/{video}/")
}

/// Every prefix a video answer's objects live under (source and renditions).
pub fn prefixes(video: Uuid) -> Vec<String> {
    vec![upload_prefix(video), video_prefix(video)]
}

/// Whether `GET /media/{key}` may serve a key: processed media only (never a
/// source upload), and nothing that could climb out of the store.
pub fn is_public_key(key: &str) -> bool {
    let mut parts = key.split('/');
    parts.next() == Some("videos")
        && parts.next().is_some_and(|id| Uuid::parse_str(id).is_ok())
        && key.split('/').count() >= 3
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// The content type of a processed media object, by extension.
pub fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processed_media_keys_are_public() {
        let id = Uuid::nil();
        assert!(is_public_key(&format!("videos/{id}/hls/720p/index.m3u8")));
        assert!(is_public_key(&format!("videos/{id}/poster.jpg")));
        assert!(!is_public_key(&format!("uploads/{id}/000000")));
        assert!(!is_public_key(&format!("videos/{id}/../../uploads/x")));
        assert!(!is_public_key(&format!("videos/{id}//poster.jpg")));
        assert!(!is_public_key("videos/not-a-uuid/poster.jpg"));
        assert!(!is_public_key(&format!("videos/{id}")));
    }

    #[test]
    fn chunk_keys_sort_in_chunk_order() {
        let id = Uuid::nil();
        assert!(chunk_key(id, 9) < chunk_key(id, 10));
        assert!(chunk_key(id, 0).starts_with(&upload_prefix(id)));
    }
}
