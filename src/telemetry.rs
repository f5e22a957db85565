//! The tracing subscriber, built once at start-up: JSON lines in production
//! (each carrying the request span's id, method and route), human-readable
//! output in development.
//!
//! Lines are formatted on the thread that logs them and written to stdout by a
//! writer thread, in batches (one `write` per batch, flushed whenever the
//! queue runs empty). Writing each line on the request's own thread — one
//! locked, line-buffered `write` per access-log line — cost a quarter of a
//! cached page's throughput at `info` (docs/benchmarks.md). If stdout cannot
//! keep up, lines beyond the queue's bound are dropped rather than stalling
//! requests, and counted in `log_lines_dropped_total`.

use std::io::BufWriter;
use std::sync::{Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines the writer queue may hold before new ones are dropped.
const QUEUED_LINES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the subscriber. Keep the guard until the process ends: dropping it
/// writes out what is still queued. None when a subscriber was already set
/// (tests building several apps keep the first).
pub fn init(config: &LogConfig) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::new(std::io::stdout()));
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    result.ok()?;
    let _ = DROPPED.set(dropped);
    Some(guard)
}

/// Brings `counter` up to the log lines dropped so far because the writer
/// queue was full. Serialized, so two concurrent scrapes cannot both add the
/// same drops.
pub fn count_dropped_lines(counter: &prometheus::IntCounter) {
    static SYNC: Mutex<()> = Mutex::new(());
    let Some(dropped) = DROPPED.get().map(|c| c.dropped_lines() as u64) else {
        return;
    };
    let _serialized = SYNC
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let counted = counter.get();
    if dropped > counted {
        counter.inc_by(dropped - counted);
    }
}
