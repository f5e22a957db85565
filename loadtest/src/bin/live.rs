//! Live-update load run (benches/live.sh): opens CONNECTIONS WebSockets to
//! one instance, all following `city:<id>`, then creates EVENTS questions
//! there through the API (each one event fanned out to every connection) and
//! reports how many arrived and how long each took from its publication (the
//! `at` the server stamps right after the commit) to its arrival here.
//!
//!   live --url http://127.0.0.1:8080 --token $TOKEN --connections 10000 --events 30

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// The instance's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An access token of a member (creates the questions).
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    #[arg(long, default_value_t = 30)]
    events: usize,
    /// Events per second.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    #[arg(long, default_value_t = 1)]
    city: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow_free::Result<()> {
    let args = Args::parse();
    let ws_url = format!(
        "{}/api/v1/live?topics=city:{}",
        args.url.replacen("http", "ws", 1),
        args.city
    );
    let received = Arc::new(AtomicU64::new(0));
    // Latency histogram: one bucket per millisecond up to 10 s (the last: more).
    let latencies: Arc<Vec<AtomicU64>> =
        Arc::new((0..=10_000).map(|_| AtomicU64::new(0)).collect());
    let closed = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        // ~2,000 handshakes a second.
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = ws_url.clone();
        let (received, latencies, closed, connected) = (
            received.clone(),
            latencies.clone(),
            closed.clone(),
            connected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut socket = None;
            for _ in 0..5 {
                match tokio_tungstenite::connect_async(url.as_str()).await {
                    Ok((s, _)) => {
                        socket = Some(s);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            let Some(mut socket) = socket else { return };
            connected.fetch_add(1, Ordering::Relaxed);
            while let Some(message) = socket.next().await {
                match message {
                    Ok(Message::Text(text)) => {
                        let at = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| v["at"].as_i64());
                        if let Some(at) = at {
                            let ms = (now_ms() - at).clamp(0, 10_000) as usize;
                            latencies[ms].fetch_add(1, Ordering::Relaxed);
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < args.connections as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open = connected.load(Ordering::Relaxed);
    println!(
        "connected {open}/{} in {:.1} s",
        args.connections,
        started.elapsed().as_secs_f64()
    );
    println!("ready");
    // Let the caller read the server's RSS with every connection open.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let client = reqwest::Client::new();
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let mut created = 0;
    for n in 0..args.events {
        let body = format!(
            "Load run question number {n} about route {} and stop {}?",
            n * 7 + 3,
            n * 13 + 5
        );
        let response = client
            .post(format!(
                "{}/api/v1/cities/{}/questions",
                args.url, args.city
            ))
            .bearer_auth(&args.token)
            .json(&serde_json::json!({ "body": body }))
            .send()
            .await;
        match response {
            Ok(r) if r.status().as_u16() == 201 => created += 1,
            Ok(r) => eprintln!("question {n}: {}", r.status()),
            Err(e) => eprintln!("question {n}: {e}"),
        }
        tokio::time::sleep(gap).await;
    }
    // Give the last event time to arrive everywhere.
    let expected = open * created;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received.load(Ordering::Relaxed);
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    let counts: Vec<u64> = latencies
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let samples: u64 = counts.iter().sum();
    let pct = |p: f64| -> usize {
        let target = ((samples as f64) * p).ceil() as u64;
        let mut seen = 0;
        for (ms, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= target.max(1) {
                return ms;
            }
        }
        counts.len() - 1
    };
    let max = counts.iter().rposition(|c| *c > 0).unwrap_or(0);
    println!(
        "events created {created}, deliveries expected {expected}, received {got}, lost {}",
        expected.saturating_sub(got)
    );
    println!(
        "connections closed early by the server: {}",
        closed.load(Ordering::Relaxed)
    );
    println!(
        "fan-out latency (publication to arrival) over {samples} samples: p50 {} ms, p99 {} ms, max {max} ms",
        pct(0.50),
        pct(0.99),
    );
    Ok(())
}

mod anyhow_free {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
}
