//! Password hashing with argon2id, kept off the async runtime and bounded.
//!
//! Argon2id is deliberately slow and memory-hungry (about 19 MiB and tens of
//! milliseconds per hash with the OWASP parameters). Running it on a runtime
//! worker would stall every other request on that worker, so each hash or
//! verification runs on [`tokio::task::spawn_blocking`]. A semaphore bounds how
//! many run at once: without it a login flood would fill the blocking pool (512
//! threads by default) and allocate 19 MiB per thread, starving everything else
//! that needs a blocking thread and blowing the memory budget.
//!
//! Unknown emails are verified against a dummy hash with the same parameters, so
//! "no such user" and "wrong password" cost the same time and cannot be told
//! apart from the outside.

use std::fmt;
use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use argon2::{ARGON2ID_IDENT, Algorithm, Argon2, Version};
use tokio::sync::Semaphore;

/// Cost parameters for argon2id.
///
/// Fields are private so that every value in circulation has been validated by
/// argon2 itself; this lets [`Passwords::new`] stay infallible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

impl Params {
    /// The OWASP Password Storage Cheat Sheet recommendation for argon2id:
    /// m = 19456 KiB (19 MiB), t = 2 iterations, p = 1 lane.
    pub const fn owasp() -> Self {
        Self {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }

    /// Tiny parameters that make a hash take microseconds.
    ///
    /// They exist so unit and integration tests can hash many passwords
    /// quickly. They offer no protection at all: never use them in production.
    pub const fn insecure_fast_for_tests() -> Self {
        Self {
            m_cost_kib: argon2::Params::MIN_M_COST,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Custom parameters, validated by argon2 (for example, memory must be at
    /// least 8 KiB per lane).
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, PasswordError> {
        let params = Self {
            m_cost_kib,
            t_cost,
            p_cost,
        };
        params.to_argon2()?;
        Ok(params)
    }

    /// Memory cost in KiB.
    pub const fn m_cost_kib(&self) -> u32 {
        self.m_cost_kib
    }

    /// Number of passes over memory.
    pub const fn t_cost(&self) -> u32 {
        self.t_cost
    }

    /// Degree of parallelism (lanes).
    pub const fn p_cost(&self) -> u32 {
        self.p_cost
    }

    fn to_argon2(self) -> Result<argon2::Params, PasswordError> {
        // `None` keeps argon2's default 32-byte output, which `needs_rehash`
        // relies on when it compares stored hashes with the current settings.
        argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, None)
            .map_err(PasswordError::InvalidParams)
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::owasp()
    }
}

/// Why hashing or verifying failed. A wrong password is not an error: it is
/// `Ok(false)` from [`Passwords::verify`].
///
/// No variant carries the password or the stored hash, so these errors are
/// safe to log.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The cost parameters were rejected by argon2.
    #[error("invalid argon2 parameters: {0}")]
    InvalidParams(argon2::Error),
    /// The stored hash is not a usable argon2 PHC string (corrupt row, another
    /// algorithm, missing salt or output...).
    #[error("stored password hash is malformed: {0}")]
    MalformedHash(password_hash::Error),
    /// Hashing itself failed (random number generator, memory allocation).
    #[error("password hashing failed: {0}")]
    Hash(password_hash::Error),
    /// The blocking task panicked or was cancelled because the runtime is
    /// shutting down.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Every permit stayed taken for the whole queue timeout: the instance is
    /// saturated with hashes, and the caller should be told to retry rather
    /// than wait until its request times out.
    #[error("password hashing is saturated (waited {0:?} for a permit)")]
    Busy(std::time::Duration),
}

/// Hashes and verifies passwords; cheap to clone (all state sits behind one
/// `Arc`), so it can live in the application state.
#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// How long a caller may wait for a permit (None: as long as it takes).
    queue_timeout: Option<std::time::Duration>,
    /// Verified against when the account does not exist, so that path does the
    /// same amount of work as a wrong password.
    dummy_hash: PasswordHash,
    /// Every argon2 run (hash, verify, dummy verify): lets integration tests
    /// prove that an unknown email costs the same work as a wrong password.
    runs: std::sync::atomic::AtomicU64,
    /// Lets tests observe how many hashes run at the same time.
    #[cfg(test)]
    probe: tests::ConcurrencyProbe,
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords")
            .field("params", &self.inner.params)
            .field("available_permits", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// Fixed salt for the dummy hash. The dummy hash protects no secret (its
/// "password" is never accepted), so a constant salt is harmless, and it keeps
/// `Passwords::new` free of a random-number-generator failure path.
const DUMMY_SALT: &[u8; 16] = b"refbackend-dummy";
const DUMMY_PASSWORD: &[u8] = b"refbackend: no account has this password";

impl Passwords {
    /// Builds the hasher and computes the dummy hash once (this costs one full
    /// hash, so call it at start-up, not per request).
    ///
    /// `max_concurrent` bounds how many hashes and verifications run at once;
    /// callers beyond that wait their turn without occupying a thread.
    ///
    /// # Panics
    ///
    /// If `max_concurrent` is zero, which would make every login wait forever.
    pub fn new(params: Params, max_concurrent: usize) -> Self {
        assert!(
            max_concurrent > 0,
            "Passwords::new: max_concurrent must be at least 1"
        );
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            params
                .to_argon2()
                .expect("Params are validated when they are constructed"),
        );
        let dummy_hash = argon2
            .hash_password_with_salt(DUMMY_PASSWORD, DUMMY_SALT)
            .expect("hashing with valid params and a fixed 16-byte salt cannot fail");
        Self {
            inner: Arc::new(Inner {
                params,
                argon2,
                permits: Arc::new(Semaphore::new(max_concurrent.min(Semaphore::MAX_PERMITS))),
                queue_timeout: None,
                dummy_hash,
                runs: std::sync::atomic::AtomicU64::new(0),
                #[cfg(test)]
                probe: tests::ConcurrencyProbe::default(),
            }),
        }
    }

    /// Bounds how long a hash or verification waits for a permit; past it the
    /// call fails with [`PasswordError::Busy`] (a 503 with `Retry-After`).
    /// Under a login flood, callers then get a quick answer instead of queueing
    /// until their request times out, and the queue cannot grow without bound.
    /// Call it right after [`Passwords::new`], before the value is cloned.
    pub fn with_queue_timeout(mut self, timeout: std::time::Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.queue_timeout = Some(timeout);
        }
        self
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> Params {
        self.inner.params
    }

    /// Hashes `password` with a fresh random salt and returns the PHC string
    /// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), ready to store.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = SecretBytes::from(password);
        self.run_blocking(move |inner| {
            inner
                .argon2
                .hash_password(&password.0)
                .map(|hash| hash.to_string())
                .map_err(PasswordError::Hash)
        })
        .await?
    }

    /// Checks `password` against the stored PHC string.
    ///
    /// Pass `None` when no account matches the login: a dummy hash is verified
    /// instead and the answer is `false`, so an unknown email takes as long as
    /// a wrong password. A stored hash that cannot be parsed or used is an
    /// error (it points at corrupt data), not a `false`.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<bool, PasswordError> {
        let password = SecretBytes::from(password);
        // Parse before taking a permit: a corrupt row should not wait in line,
        // and the parsed form is what the blocking task needs anyway.
        let stored = stored.map(parse_stored).transpose()?;
        self.run_blocking(move |inner| match stored {
            Some(hash) => match inner.argon2.verify_password(&password.0, &hash) {
                Ok(()) => Ok(true),
                Err(password_hash::Error::PasswordInvalid) => Ok(false),
                Err(err) => Err(classify_verify_error(err)),
            },
            None => {
                // The outcome is irrelevant (the dummy password is not the
                // user's); only the time spent matters.
                let _ = inner.argon2.verify_password(&password.0, &inner.dummy_hash);
                Ok(false)
            }
        })
        .await?
    }

    /// True when `stored` was not made with the current algorithm, version and
    /// parameters, so the caller should re-hash the password (it has it in
    /// clear right after a successful login) and store the new hash.
    ///
    /// An unparseable hash also answers true: replacing it can only help.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else {
            return true;
        };
        if hash.algorithm != ARGON2ID_IDENT || hash.version != Some(Version::V0x13.into()) {
            return true;
        }
        let Ok(stored_params) = argon2::Params::try_from(&hash) else {
            return true;
        };
        let current = self.inner.params;
        stored_params.m_cost() != current.m_cost_kib
            || stored_params.t_cost() != current.t_cost
            || stored_params.p_cost() != current.p_cost
            || !stored_params.keyid().is_empty()
            || !stored_params.data().is_empty()
            || stored_params.output_len() != Some(argon2::Params::DEFAULT_OUTPUT_LEN)
    }

    /// How many argon2 operations this instance has run.
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `work` on the blocking pool once a permit is free (within the
    /// queue timeout, if one is set).
    ///
    /// The permit moves into the blocking closure rather than staying in this
    /// future: if the caller is cancelled (client gone, request timeout) the
    /// hash keeps running on its thread, and it must keep counting against the
    /// bound until it actually finishes.
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, PasswordError>
    where
        F: FnOnce(&Inner) -> T + Send + 'static,
        T: Send + 'static,
    {
        let acquire = Arc::clone(&self.inner.permits).acquire_owned();
        let permit = match self.inner.queue_timeout {
            Some(limit) => tokio::time::timeout(limit, acquire)
                .await
                .map_err(|_| PasswordError::Busy(limit))?,
            None => acquire.await,
        }
        .expect("the password semaphore is never closed");
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || {
            inner
                .runs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let output = {
                // The probe must stop counting before the permit is released,
                // or the next hash could start while this one still counts.
                #[cfg(test)]
                let _running = inner.probe.enter();
                work(&inner)
            };
            drop(permit);
            output
        })
        .await?;
        Ok(result)
    }
}

fn parse_stored(stored: &str) -> Result<PasswordHash, PasswordError> {
    let hash = PasswordHash::new(stored)
        .map_err(|err| PasswordError::MalformedHash(password_hash::Error::from(err)))?;
    // Without a salt or an output the verifier silently answers "invalid
    // password"; such a row is corrupt, and saying so beats locking the user
    // out with no trace.
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(PasswordError::MalformedHash(
            password_hash::Error::EncodingInvalid,
        ));
    }
    Ok(hash)
}

/// Separates "this stored hash is unusable" from "hashing failed for a reason
/// unrelated to the stored data".
fn classify_verify_error(err: password_hash::Error) -> PasswordError {
    match err {
        password_hash::Error::OutOfMemory
        | password_hash::Error::RngFailure
        | password_hash::Error::Crypto
        | password_hash::Error::Internal => PasswordError::Hash(err),
        _ => PasswordError::MalformedHash(err),
    }
}

/// A copy of a password that is overwritten with zeros when dropped.
///
/// The `zeroize` crate is not a direct dependency, so this is best effort:
/// `black_box` discourages the compiler from removing the writes, but nothing
/// guarantees it, and the caller's own copy of the password is out of reach.
struct SecretBytes(Vec<u8>);

impl From<&str> for SecretBytes {
    fn from(value: &str) -> Self {
        Self(value.as_bytes().to_vec())
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts hashes in flight and remembers the highest count seen.
    #[derive(Default)]
    pub(super) struct ConcurrencyProbe {
        current: AtomicUsize,
        max_seen: AtomicUsize,
    }

    pub(super) struct Running<'a>(&'a ConcurrencyProbe);

    impl ConcurrencyProbe {
        pub(super) fn enter(&self) -> Running<'_> {
            let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_seen.fetch_max(now, Ordering::SeqCst);
            Running(self)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.current.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn fast() -> Passwords {
        Passwords::new(Params::insecure_fast_for_tests(), 4)
    }

    /// Heavy enough (a few milliseconds per hash) that unbounded verifications
    /// would overlap on the blocking pool, light enough to keep tests quick.
    fn slow_params() -> Params {
        Params::new(4 * 1024, 1, 1).expect("valid params")
    }

    #[test]
    fn owasp_parameters_are_19_mib_two_passes_one_lane() {
        let params = Params::owasp();
        assert_eq!(
            (params.m_cost_kib(), params.t_cost(), params.p_cost()),
            (19456, 2, 1)
        );
        assert_eq!(Params::default(), params);
    }

    #[test]
    fn params_argon2_rejects_are_errors() {
        assert!(matches!(
            Params::new(4, 1, 1),
            Err(PasswordError::InvalidParams(_))
        ));
        assert!(matches!(
            Params::new(64, 0, 1),
            Err(PasswordError::InvalidParams(_))
        ));
    }

    #[tokio::test]
    async fn a_hashed_password_verifies() {
        let passwords = fast();
        let stored = passwords.hash("correct horse").await.expect("hash");
        assert!(
            passwords
                .verify("correct horse", Some(&stored))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_wrong_password_is_false() {
        let passwords = fast();
        let stored = passwords.hash("correct horse").await.expect("hash");
        assert!(
            !passwords
                .verify("battery staple", Some(&stored))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn an_unknown_user_is_false_even_with_the_dummy_password() {
        let passwords = fast();
        assert!(!passwords.verify("anything", None).await.expect("verify"));
        let dummy = std::str::from_utf8(DUMMY_PASSWORD).expect("utf-8");
        assert!(!passwords.verify(dummy, None).await.expect("verify"));
    }

    #[test]
    fn the_dummy_hash_uses_the_configured_params() {
        let passwords = Passwords::new(slow_params(), 1);
        let dummy = passwords.inner.dummy_hash.to_string();
        assert!(!passwords.needs_rehash(&dummy), "{dummy}");
    }

    #[tokio::test]
    async fn a_hash_is_argon2id_with_the_configured_params_and_a_unique_salt() {
        let params = Params::new(64, 3, 2).expect("valid params");
        let passwords = Passwords::new(params, 2);
        let first = passwords.hash("same password").await.expect("hash");
        let second = passwords.hash("same password").await.expect("hash");

        assert!(
            first.starts_with("$argon2id$v=19$m=64,t=3,p=2$"),
            "unexpected PHC string {first}"
        );
        let first = PasswordHash::new(&first).expect("parses");
        let second = PasswordHash::new(&second).expect("parses");
        assert_eq!(first.algorithm, ARGON2ID_IDENT);
        assert_eq!(first.params.get_decimal("m"), Some(64));
        assert_eq!(first.params.get_decimal("t"), Some(3));
        assert_eq!(first.params.get_decimal("p"), Some(2));
        let salt = first.salt.expect("salt");
        assert_eq!(salt.len(), 16, "16-byte salt as OWASP recommends");
        assert_ne!(Some(salt), second.salt, "salts must differ");
        assert_ne!(first.hash, second.hash);
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_is_an_error() {
        let passwords = fast();
        let valid = passwords.hash("pw").await.expect("hash");
        let truncated = &valid[..valid.len() - 10];
        let without_output = valid.rsplit_once('$').expect("has $").0;
        let cases = [
            "",
            "not a hash",
            "$argon2id$v=19$m=8,t=1,p=1",
            without_output,
            truncated,
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "$argon2id$v=19$m=8,t=1,p=1,x=5$c29tZXNhbHQ$aGFzaGhhc2hoYXNo",
            "$scrypt$ln=4,r=8,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ];
        for stored in cases {
            let result = passwords.verify("pw", Some(stored)).await;
            assert!(
                matches!(result, Err(PasswordError::MalformedHash(_))),
                "{stored:?} gave {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn needs_rehash_detects_old_params() {
        let old = fast();
        let current = Passwords::new(Params::new(64, 2, 1).expect("valid"), 1);
        let old_hash = old.hash("pw").await.expect("hash");
        let current_hash = current.hash("pw").await.expect("hash");

        assert!(current.needs_rehash(&old_hash));
        assert!(!current.needs_rehash(&current_hash));
        assert!(!old.needs_rehash(&old_hash));
        assert!(current.needs_rehash("garbage"));

        // Same costs but argon2i instead of argon2id must be upgraded too.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            argon2::Params::new(64, 2, 1, None).expect("valid"),
        )
        .hash_password(b"pw")
        .expect("hash")
        .to_string();
        assert!(current.needs_rehash(&argon2i));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_concurrency_bound_is_respected() {
        let passwords = Passwords::new(slow_params(), 1);
        let stored = passwords.hash("pw").await.expect("hash");

        let verifications = (0..6).map(|i| {
            let passwords = passwords.clone();
            let stored = stored.clone();
            tokio::spawn(async move {
                let stored = (i % 2 == 0).then_some(stored.as_str());
                passwords.verify("pw", stored).await
            })
        });
        for handle in futures_util::future::join_all(verifications).await {
            handle.expect("task").expect("verify");
        }

        let probe = &passwords.inner.probe;
        assert_eq!(probe.current.load(Ordering::SeqCst), 0);
        assert_eq!(probe.max_seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_caller_that_cannot_get_a_permit_in_time_is_told_the_hasher_is_busy() {
        let passwords = Passwords::new(Params::insecure_fast_for_tests(), 1)
            .with_queue_timeout(std::time::Duration::from_millis(50));
        let stored = passwords.hash("pw").await.expect("hash");
        // Every permit taken, as by a flood of slow hashes.
        let held = Arc::clone(&passwords.inner.permits)
            .acquire_owned()
            .await
            .expect("permit");
        let refused = passwords.verify("pw", Some(&stored)).await;
        assert!(
            matches!(refused, Err(PasswordError::Busy(_))),
            "{refused:?}"
        );
        assert!(matches!(
            passwords.hash("x").await,
            Err(PasswordError::Busy(_))
        ));
        drop(held);
        assert!(passwords.verify("pw", Some(&stored)).await.expect("verify"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_verification_keeps_its_permit_until_the_hash_finishes() {
        let passwords = Passwords::new(Params::new(16 * 1024, 2, 1).expect("valid"), 1);

        let first = {
            let passwords = passwords.clone();
            tokio::spawn(async move { passwords.verify("pw", None).await })
        };
        // Wait until the first hash is running on the blocking pool, then
        // cancel the request that started it.
        let probe = &passwords.inner.probe;
        while probe.current.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        first.abort();

        passwords.verify("pw", None).await.expect("verify");
        assert_eq!(probe.max_seen.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn debug_output_shows_no_password() {
        let secret = SecretBytes::from("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{:?}", fast()).contains("$argon2"));
    }
}
