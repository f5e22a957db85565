//! The current role and active state of accounts, for every authenticated
//! request.
//!
//! An access token says who the caller is; it does not get to say, for its
//! whole lifetime, what they may do. A deactivated user must stop writing and
//! a demoted moderator must stop moderating at once, not when their token
//! expires. So [`crate::auth::AuthUser`] looks the account up here and uses
//! the role and state it finds, not the token's claims.
//!
//! Lookups are cached in process for `ACCOUNT_CACHE_TTL` (default 5 s): a hit
//! is a hash-map read, a miss one primary-key query on the primary. A change
//! (role, activation) drops the entry here at once and is announced on the
//! cache invalidation channel, so every other instance drops it too; the TTL
//! bounds the staleness only while Redis pub/sub is down. Should the primary
//! be unreachable, the lookup falls back to a replica (its lag is far below
//! the TTL's bound).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::Role;
use crate::db::Db;
use crate::error::{AppError, AppResult, is_unavailable};
use crate::practice::settings::PracticeSettings;
use crate::spanish::Tense;
use crate::spanish::checker::AccentPolicy;

/// What an account may do now, and the time zone its days are counted in
/// (streaks; per-user rows may be on a shard, away from `users`).
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub role: Role,
    pub active: bool,
    pub timezone: Arc<str>,
    /// Practice settings (`user_settings`; the defaults without a row).
    pub settings: Arc<PracticeSettings>,
}

/// The in-process account cache. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    /// `None` caches "no such user" too (a deleted account's tokens). Each
    /// entry carries the [`Accounts::epoch`] its load started in.
    cache: Option<moka::future::Cache<Uuid, (u64, Option<Account>)>>,
    /// Bumped by every forget. A load that started before a forget may have
    /// read the row before the change committed, and moka stores a load's
    /// result even when the key was invalidated while it ran; an entry from
    /// an older epoch is therefore never trusted.
    epoch: Arc<AtomicU64>,
}

/// Entries kept at most; an entry is ~50 bytes, so this bounds memory at a
/// few MiB however many users sign in.
const MAX_ENTRIES: u64 = 100_000;

impl Accounts {
    /// A zero `ttl` disables caching: every request reads the account.
    pub fn new(ttl: Duration) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        Self {
            cache,
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The account's current state; `None` if it does not exist.
    pub async fn get(&self, db: &Db, id: Uuid) -> AppResult<Option<Account>> {
        self.get_or_load(id, || load(db, id)).await
    }

    async fn get_or_load<F, Fut>(&self, id: Uuid, load: F) -> AppResult<Option<Account>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = AppResult<Option<Account>>>,
    {
        let Some(cache) = &self.cache else {
            return load().await;
        };
        // A forget after this load began makes its entry stale: drop it and
        // load again (twice at most; then read past the cache).
        for _ in 0..2 {
            let epoch = self.epoch.clone();
            let fetch = load();
            let loaded = cache.try_get_with(id, async move {
                let started = epoch.load(Ordering::Acquire);
                fetch.await.map(|account| (started, account))
            });
            let (started, account) =
                loaded
                    .await
                    .map_err(|shared: Arc<AppError>| match Arc::try_unwrap(shared) {
                        Ok(error) => error,
                        Err(_) => AppError::Unavailable(
                            "The account could not be checked; retry shortly.".into(),
                        ),
                    })?;
            if started == self.epoch.load(Ordering::Acquire) {
                return Ok(account);
            }
            cache.invalidate(&id).await;
        }
        load().await
    }

    /// Drops one account's entry (after its role or state changed).
    pub async fn forget(&self, id: Uuid) {
        if let Some(cache) = &self.cache {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            cache.invalidate(&id).await;
        }
    }

    /// Drops every entry (after missed invalidation messages).
    pub fn forget_all(&self) {
        if let Some(cache) = &self.cache {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            cache.invalidate_all();
        }
    }
}

async fn load(db: &Db, id: Uuid) -> AppResult<Option<Account>> {
    let primary = query(db.write().clone(), id).await;
    let row = match primary {
        Err(e) if is_unavailable(&e) => db.read(|pool| query(pool, id)).await?,
        other => other?,
    };
    row.map(|row| {
        let role = row
            .role
            .parse()
            .map_err(|e: String| AppError::Internal(anyhow::anyhow!("users.role: {e}")))?;
        let defaults = PracticeSettings::default();
        let settings = PracticeSettings {
            daily_new_limit: row.daily_new_limit.unwrap_or(defaults.daily_new_limit),
            desired_retention: row.desired_retention.unwrap_or(defaults.desired_retention),
            // Keys the code no longer knows are dropped, never fatal.
            tenses: row
                .tenses
                .map(|keys| keys.iter().filter_map(|k| Tense::from_key(k)).collect()),
            accent_policy: match row.accent_policy.as_deref() {
                Some("strict") => Some(AccentPolicy::Strict),
                Some("warn") => Some(AccentPolicy::Warn),
                _ => None,
            },
        };
        Ok(Account {
            role,
            active: row.is_active,
            timezone: Arc::from(row.timezone),
            settings: Arc::new(settings),
        })
    })
    .transpose()
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    role: String,
    is_active: bool,
    timezone: String,
    daily_new_limit: Option<i32>,
    desired_retention: Option<f64>,
    tenses: Option<Vec<String>>,
    accent_policy: Option<String>,
}

async fn query(pool: PgPool, id: Uuid) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.role, u.is_active, u.timezone, s.daily_new_limit, s.desired_retention,
                s.tenses, s.accent_policy
           FROM users u LEFT JOIN user_settings s ON s.user_id = u.id
          WHERE u.id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(active: bool) -> Account {
        Account {
            role: Role::Member,
            active,
            timezone: Arc::from("UTC"),
            settings: Arc::default(),
        }
    }

    #[tokio::test]
    async fn a_load_that_raced_a_forget_is_not_served_from_the_cache_afterwards() {
        let accounts = Accounts::new(Duration::from_secs(60));
        let id = Uuid::nil();
        // The row as a load saw it before the change committed...
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let held = std::sync::Mutex::new(Some(held));
        let stale_load = accounts.get_or_load(id, || {
            let held = held.lock().expect("lock").take();
            async move {
                if let Some(held) = held {
                    let _ = held.await;
                    Ok(Some(account(true)))
                } else {
                    Ok(Some(account(false)))
                }
            }
        });
        // ...while the change commits and is announced.
        let change = async {
            tokio::task::yield_now().await;
            accounts.forget(id).await;
            let _ = release.send(());
        };
        let (seen, ()) = tokio::join!(stale_load, change);
        assert_eq!(
            seen.expect("loaded"),
            Some(account(false)),
            "reloaded after the forget"
        );
        let next = accounts
            .get_or_load(id, || async { Ok(Some(account(true))) })
            .await
            .expect("cached");
        assert_eq!(
            next,
            Some(account(false)),
            "the cache holds the state after the change"
        );
    }
}
