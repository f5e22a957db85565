//! Real services for the integration tests: a PostgreSQL primary, a streaming replica
//! and a Redis, started once per test process and shared by every test in it.
//!
//! Why this shape:
//! - Starting Postgres takes about a second; a fresh *database* takes milliseconds. So the
//!   servers are shared and each test gets its own database, copied from a template that
//!   was migrated once (`CREATE DATABASE ... TEMPLATE it_template`).
//! - The servers come from the machine's binaries via `scripts/pg-node` (the same script
//!   `scripts/dev` uses), so there is one place that knows how to run Postgres here,
//!   including as root.
//! - `cargo test` has no global teardown and statics are never dropped, so a detached
//!   reaper process waits for this test process to exit and then stops everything it
//!   started and deletes the temporary directory, even after a panic or Ctrl-C.
//! - Tests run on many threads, each `#[tokio::test]` on its own runtime: nothing here keeps
//!   a connection pool across calls (a pool is tied to the runtime that created it).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::HashSet;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, PgConnection};

/// Name of the migrated database every test database is copied from.
const TEMPLATE_DB: &str = "it_template";
/// How long to wait for a replica to replay up to a given point. Generous: the
/// shared replica replays every database the suite creates on its primary (each
/// a whole template copy in the WAL) on a loaded 2-core CI box. What tests
/// assert is that a replica catches up, not how fast.
pub const REPLICA_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// The shared services, started on first use (blocking) and kept until the process exits.
///
/// Panics with a clear message if they cannot be started (e.g. Postgres or Redis is not
/// installed: `scripts/test` installs them); every later call panics with the same message.
pub fn services() -> &'static Services {
    static SERVICES: OnceLock<Result<Services, String>> = OnceLock::new();
    SERVICES
        .get_or_init(|| Services::start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .unwrap_or_else(|e| panic!("integration-test services could not start: {e}"))
}

/// Everything the harness started for this test process.
#[derive(Debug)]
pub struct Services {
    pub primary: PgNode,
    pub replica: PgNode,
    pub redis_port: u16,
    /// Temporary directory holding the data directories, logs and the Redis pidfile.
    pub root: PathBuf,
    /// Serializes `CREATE DATABASE`: copies of one template cannot run while anything else
    /// is connected to it. A tokio mutex works across the tests' separate runtimes.
    create_lock: tokio::sync::Mutex<()>,
}

/// A database of its own for one test, on the shared primary and (replicated) replica.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub primary_url: String,
    pub replica_url: String,
}

/// A primary and a replica of one test's own, from [`Services::replicated_pair`].
/// Both are stopped and deleted when dropped (the replica first).
#[derive(Debug)]
pub struct ReplicatedPair {
    pub replica: PgNode,
    pub primary: PgNode,
    pub db: TestDatabase,
}

/// One Postgres server managed through `scripts/pg-node`.
#[derive(Debug)]
pub struct PgNode {
    port: u16,
    dir: PathBuf,
    /// Dedicated nodes belong to one test: stopped and deleted on drop.
    remove_on_drop: bool,
}

impl PgNode {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for database `db` on this node (trust auth, user postgres, TCP only).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server (fast shutdown: open connections are cut). Blocking: inside a
    /// multi-thread runtime wrap it in `tokio::task::block_in_place`.
    pub fn stop(&self) {
        pg_node(["stop".as_ref(), self.dir.as_os_str(), "fast".as_ref()])
            .unwrap_or_else(|e| panic!("stopping the node on port {}: {e:#}", self.port));
    }

    /// Stops the server the way a crash or power cut would (no shutdown checkpoint).
    pub fn kill(&self) {
        pg_node(["stop".as_ref(), self.dir.as_os_str(), "immediate".as_ref()])
            .unwrap_or_else(|e| panic!("killing the node on port {}: {e:#}", self.port));
    }

    /// Starts the server again and waits until it accepts connections. Blocking.
    pub fn start(&self) {
        pg_node(["start".as_ref(), self.dir.as_os_str()])
            .unwrap_or_else(|e| panic!("starting the node on port {}: {e:#}", self.port));
    }
}

impl Drop for PgNode {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        // Best effort: a failure here must not turn a passing test into a panic during
        // unwinding; the reaper cleans up whatever is left.
        if let Err(e) = pg_node(["stop".as_ref(), self.dir.as_os_str(), "immediate".as_ref()]) {
            eprintln!(
                "warning: could not stop the dedicated node on port {}: {e:#}",
                self.port
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(log_path(&self.dir));
        release_port(self.port);
    }
}

impl Services {
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// A fresh, migrated database for one test: a copy of the migrated template on the
    /// primary. Returns once the shared replica has replayed past the primary's current WAL
    /// position, so the database exists there too.
    pub async fn create_database(&self) -> TestDatabase {
        self.create_database_from(TEMPLATE_DB).await
    }

    /// A fresh database with no migrations applied (a copy of `template0`), for tests of
    /// the migration machinery itself.
    pub async fn create_empty_database(&self) -> TestDatabase {
        self.create_database_from("template0").await
    }

    async fn create_database_from(&self, template: &str) -> TestDatabase {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let lsn = {
            let _guard = self.create_lock.lock().await;
            let mut conn = PgConnection::connect(&self.primary.url("postgres"))
                .await
                .expect("connect to the test primary");
            let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
            let mut attempt = 0;
            loop {
                attempt += 1;
                match sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut conn)
                    .await
                {
                    Ok(_) => break,
                    // 55006 object_in_use: "source database is being accessed by other users".
                    // Backends of a just-closed connection can linger for a moment.
                    Err(sqlx::Error::Database(e))
                        if e.code().as_deref() == Some("55006") && attempt < 50 =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("{sql}: {e}"),
                }
            }
            let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
                .fetch_one(&mut conn)
                .await
                .expect("read the primary's WAL position");
            let _ = conn.close().await;
            lsn
        };
        wait_for_replay(&self.replica, &lsn).await;
        TestDatabase {
            primary_url: self.primary.url(&name),
            replica_url: self.replica.url(&name),
            name,
        }
    }

    /// A primary and a streaming replica of their own for one test (for tests that
    /// stop, kill or pause the replica), holding one migrated database with the
    /// exercise bank seeded, like [`Self::create_database`]. `db.replica_url` points
    /// at the replica, which has replayed the database when this returns.
    ///
    /// Not a replica of the shared primary: that one carries every database the
    /// suite creates (each a whole template copy in the WAL), so a clone of it
    /// copies them all, and after a stop or kill it must replay everything the
    /// other tests wrote meanwhile. On a loaded 2-core CI box that took longer
    /// than two minutes. A pair of its own replays only this test's writes.
    pub async fn replicated_pair(&self) -> ReplicatedPair {
        let primary = self.dedicated_primary().await;
        let db = self.create_database_on(&primary).await;
        let mut conn = PgConnection::connect(&db.primary_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name));
        refbackend::seed::exercises(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("seeding the exercise bank in {}: {e}", db.name));
        let _ = conn.close().await;
        let replica = self.dedicated_replica_of(&primary).await;
        let db = TestDatabase {
            replica_url: replica.url(&db.name),
            ..db
        };
        ReplicatedPair {
            replica,
            primary,
            db,
        }
    }

    /// A primary of its own for one test (for tests that kill and restart it: the
    /// shared one must stay up for everybody else). Empty: add a database with
    /// [`Self::create_database_on`], then replicas with [`Self::dedicated_replica_of`].
    /// Stopped and deleted when dropped.
    pub async fn dedicated_primary(&self) -> PgNode {
        self.dedicated_node("primary", None).await
    }

    /// A fresh database on `node` (a dedicated primary), migrated; the exercise
    /// bank is not seeded. `replica_url` is empty: point it at a replica of `node`.
    pub async fn create_database_on(&self, node: &PgNode) -> TestDatabase {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&node.url("postgres"))
            .await
            .unwrap_or_else(|e| panic!("connect to the node on port {}: {e}", node.port));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        let mut conn = PgConnection::connect(&node.url(&name))
            .await
            .unwrap_or_else(|e| panic!("connect to {name}: {e}"));
        sqlx::migrate!("./migrations")
            .run(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("migrating {name}: {e}"));
        let _ = conn.close().await;
        TestDatabase {
            primary_url: node.url(&name),
            replica_url: String::new(),
            name,
        }
    }

    /// A streaming replica of `primary` for one test only. Stopped and deleted
    /// when dropped.
    pub async fn dedicated_replica_of(&self, primary: &PgNode) -> PgNode {
        self.dedicated_node("replica", Some(primary.port)).await
    }

    /// `scripts/pg-node init-primary|init-replica` on a free port. The port
    /// is free when chosen, but any process on the machine (an outgoing
    /// connection's ephemeral port included) can take it before the server
    /// binds it: then the node is tried again on another port.
    async fn dedicated_node(&self, kind: &'static str, primary_port: Option<u16>) -> PgNode {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = reserve_port();
            let dir = self.root.join(format!("{kind}-{port}"));
            let dir_for_init = dir.clone();
            let started = tokio::task::spawn_blocking(move || {
                let port = port.to_string();
                match primary_port {
                    None => pg_node([
                        "init-primary".as_ref(),
                        dir_for_init.as_os_str(),
                        port.as_ref(),
                    ]),
                    Some(primary) => pg_node([
                        "init-replica".as_ref(),
                        dir_for_init.as_os_str(),
                        port.as_ref(),
                        primary.to_string().as_ref(),
                    ]),
                }
            })
            .await
            .expect("dedicated node task");
            match started {
                Ok(_) => {
                    return PgNode {
                        port,
                        dir,
                        remove_on_drop: true,
                    };
                }
                Err(e) => {
                    last_error = format!("{e:#}");
                    if !last_error.contains("Address already in use") {
                        break;
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        panic!("starting a dedicated {kind}: {last_error}");
    }

    /// A Redis of its own for one test (for tests that kill and restart it; the
    /// shared one must stay up for everybody else). Killed when dropped.
    pub fn dedicated_redis(&self) -> RedisNode {
        let redis_server = find_on_path("redis-server").expect("redis-server on PATH");
        let node = RedisNode {
            port: reserve_port(),
            root: self.root.clone(),
            redis_server,
            child: Mutex::new(None),
        };
        node.start();
        node
    }

    /// Starts everything; called once, from `services()`.
    fn start() -> anyhow::Result<Services> {
        let script = pg_node_script();
        if !script.is_file() {
            bail!("{} is missing", script.display());
        }
        pg_node(["bindir"]).context(
            "PostgreSQL server binaries not found; run scripts/test (it installs them), \
             or install postgresql + postgresql-contrib, or set PG_BIN",
        )?;
        let redis_server = find_on_path("redis-server").context(
            "redis-server not found on PATH; run scripts/test (it installs it), or install redis-server",
        )?;

        let root = std::env::temp_dir().join(format!("refbackend-it-{}", std::process::id()));
        if root.exists() {
            // Left by an earlier process with the same pid whose reaper never ran.
            clean_up_root(&root);
        }
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        // Before starting anything, so even a half-finished start-up is cleaned up.
        spawn_reaper(&root)?;

        let primary = PgNode {
            port: reserve_port(),
            dir: root.join("primary"),
            remove_on_drop: false,
        };
        let replica = PgNode {
            port: reserve_port(),
            dir: root.join("replica"),
            remove_on_drop: false,
        };
        let redis_port = reserve_port();

        pg_node([
            "init-primary".as_ref(),
            primary.dir.as_os_str(),
            primary.port.to_string().as_ref(),
        ])
        .context("starting the test primary")?;
        pg_node([
            "init-replica".as_ref(),
            replica.dir.as_os_str(),
            replica.port.to_string().as_ref(),
            primary.port.to_string().as_ref(),
        ])
        .context("starting the test replica")?;
        start_redis(&redis_server, &root, redis_port)?;
        create_template(&primary)?;

        Ok(Services {
            primary,
            replica,
            redis_port,
            root,
            create_lock: tokio::sync::Mutex::new(()),
        })
    }
}

/// Creates and migrates the template database. On a thread of its own with its own
/// runtime: this runs inside `OnceLock` initialisation, possibly within a test's runtime,
/// where blocking on another future would panic.
fn create_template(primary: &PgNode) -> anyhow::Result<()> {
    let admin_url = primary.url("postgres");
    let template_url = primary.url(TEMPLATE_DB);
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime for the migrations")?;
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&admin_url)
                .await
                .context("connecting to the test primary")?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {TEMPLATE_DB}"
            )))
            .execute(&mut admin)
            .await
            .context("creating the template database")?;
            admin.close().await.ok();

            let mut conn = PgConnection::connect(&template_url)
                .await
                .context("connecting to the template")?;
            sqlx::migrate!("./migrations")
                .run(&mut conn)
                .await
                .context("running the migrations in the template database")?;
            refbackend::seed::exercises(&mut conn)
                .await
                .context("seeding the exercise bank in the template database")?;
            // CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template.
            conn.close()
                .await
                .context("closing the template connection")?;
            Ok(())
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the template thread panicked"))?
}

/// Waits until `node` has replayed the WAL up to `lsn` (a primary position).
async fn wait_for_replay(node: &PgNode, lsn: &str) {
    let deadline = Instant::now() + REPLICA_CATCH_UP_TIMEOUT;
    let mut conn = PgConnection::connect(&node.url("postgres"))
        .await
        .unwrap_or_else(|e| panic!("connect to the replica on port {}: {e}", node.port));
    loop {
        let replayed: Option<bool> =
            sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
                .bind(lsn)
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "read the replay position of the replica on port {}: {e}",
                        node.port
                    )
                });
        if replayed == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica on port {} did not replay up to {lsn} within {REPLICA_CATCH_UP_TIMEOUT:?}",
            node.port
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = conn.close().await;
}

fn start_redis(redis_server: &Path, root: &Path, port: u16) -> anyhow::Result<()> {
    let dir = root.join("redis");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = root.join("redis.log");
    let status = Command::new(redis_server)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
        .arg("--dir")
        .arg(&dir)
        .arg("--pidfile")
        .arg(root.join("redis.pid"))
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", redis_server.display()))?;
    if !status.success() {
        bail!("redis-server exited with {status}");
    }
    // --daemonize returns at once; a failure to bind only shows in the log.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("redis-server did not listen on {addr} within 10s; its log:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts a detached `sh` that polls this process and, once it is gone, stops every node
/// under `root` (the dedicated nodes a panicking test never dropped too), stops Redis
/// and deletes `root`. In its own process group, so Ctrl-C on `cargo test` spares it.
fn spawn_reaper(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    const SCRIPT: &str = r#"
        pid=$1 root=$2 pgnode=$3
        while kill -0 "$pid" 2>/dev/null; do sleep 1; done
        for d in "$root"/*/; do
            [ -f "$d/PG_VERSION" ] && "$pgnode" stop "$d" immediate
        done
        [ -f "$root/redis.pid" ] && kill "$(cat "$root/redis.pid")"
        for f in "$root"/redis-*.pid; do [ -f "$f" ] && kill "$(cat "$f")"; done
        sleep 0.2
        rm -rf "$root"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("refbackend-it-reaper")
        .arg(std::process::id().to_string())
        .arg(root)
        .arg(pg_node_script())
        .env("PG_NODE_NO_INSTALL", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning the clean-up process")?;
    Ok(())
}

/// What the reaper does, for a directory left by a dead process.
fn clean_up_root(root: &Path) {
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let dir = entry.path();
            if dir.join("PG_VERSION").is_file() {
                let _ = pg_node(["stop".as_ref(), dir.as_os_str(), "immediate".as_ref()]);
            }
        }
    }
    if let Ok(pid) = std::fs::read_to_string(root.join("redis.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    // Dedicated Redis servers (`Services::dedicated_redis`) leave `redis-<port>.pid`.
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("redis-")
                && name.ends_with(".pid")
                && let Ok(pid) = std::fs::read_to_string(entry.path())
            {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
    let _ = std::fs::remove_dir_all(root);
}

fn pg_node_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-node")
}

fn log_path(dir: &Path) -> PathBuf {
    let mut log = dir.as_os_str().to_owned();
    log.push(".log");
    PathBuf::from(log)
}

/// Runs `scripts/pg-node` with test settings (durability off, never install packages).
/// Its output is captured and returned in the error when it fails.
fn pg_node<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new(pg_node_script())
        .args(&args)
        .env("PG_FAST", "1")
        .env("PG_NODE_NO_INSTALL", "1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", pg_node_script().display()))?;
    if !output.status.success() {
        bail!(
            "scripts/pg-node {} failed ({}):\n{}{}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Ports handed out by this process and not yet released: the OS may give the same
/// ephemeral port to two `bind(:0)` calls once the first listener is closed.
fn reserved_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port that is free on 127.0.0.1 now (the OS picks it) and not handed out before.
pub fn reserve_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if reserved_ports()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

fn release_port(port: u16) {
    reserved_ports()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&port);
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A `redis-server` child process owned by one test (see
/// [`Services::dedicated_redis`]): empty, no persistence, on a port of its own.
/// It writes `redis-<port>.pid` under the harness directory so the reaper kills it
/// even if the test process dies without dropping it.
#[derive(Debug)]
pub struct RedisNode {
    port: u16,
    root: PathBuf,
    redis_server: PathBuf,
    child: Mutex<Option<std::process::Child>>,
}

impl RedisNode {
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pidfile(&self) -> PathBuf {
        self.root.join(format!("redis-{}.pid", self.port))
    }

    /// Starts the server (again, after [`Self::kill`]) on the same port and waits
    /// until it accepts connections. Blocking (about 10-50 ms).
    pub fn start(&self) {
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            slot.is_none(),
            "redis on port {} is already running",
            self.port
        );
        let log = self.root.join(format!("redis-{}.log", self.port));
        let child = Command::new(&self.redis_server)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.root)
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning redis-server on port {}: {e}", self.port));
        *slot = Some(child);
        drop(slot);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("redis-server did not listen on {addr} within 10s; its log:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server with SIGKILL (no shutdown, connections just vanish) and
    /// waits for the process to be gone. Blocking.
    pub fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.pidfile());
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
        release_port(self.port);
    }
}
