//! The cost of making a cached page's encoded variants (src/cache/layered.rs,
//! docs/benchmarks.md): gzip at flate2's default level and brotli at quality 5,
//! as the cache makes them, and brotli at quality 11 for comparison, on a page
//! of 20 exercises shaped like the API's. Each variant is made once per cache
//! entry and instance, then every hit copies bytes.
//!
//! `taskset -c 0 cargo bench --bench encodings`

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use refbackend::cache::layered::{Coding, encode};
use refbackend::practice::bank;

/// A page of 20 exercises as `GET /api/v1/exercises` lists them.
fn page() -> Vec<u8> {
    let items: Vec<serde_json::Value> = bank::bank()
        .iter()
        .step_by(37)
        .take(20)
        .enumerate()
        .map(|(i, e)| {
            serde_json::json!({
                "id": i + 1,
                "slug": e.slug,
                "type": e.kind,
                "prompt": e.prompt,
                "instructions": e.instructions,
                "infinitive": e.infinitive,
                "difficulty": e.difficulty,
                "tags": e.tags,
                "choices": e.choices,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"items": items, "next_cursor": "MjA"})).expect("json")
}

fn brotli_at(body: &[u8], quality: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, quality, 22);
        encoder.write_all(body).expect("write");
        encoder.flush().expect("flush");
    }
    out
}

fn encodings(c: &mut Criterion) {
    let body = page();
    let gzip = encode(Coding::Gzip, &body).expect("gzip");
    let br5 = encode(Coding::Brotli, &body).expect("brotli");
    let br11 = brotli_at(&body, 11);
    println!(
        "page of 20 exercises: identity {} B, gzip {} B, brotli q5 {} B, brotli q11 {} B",
        body.len(),
        gzip.len(),
        br5.len(),
        br11.len()
    );
    let mut group = c.benchmark_group("encode a page of 20 exercises");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("gzip (default level, as cached)", |b| {
        b.iter(|| encode(Coding::Gzip, black_box(&body)))
    });
    group.bench_function("brotli q5 (as cached)", |b| {
        b.iter(|| encode(Coding::Brotli, black_box(&body)))
    });
    group.bench_function("brotli q11", |b| b.iter(|| brotli_at(black_box(&body), 11)));
    group.finish();
}

criterion_group!(benches, encodings);
criterion_main!(benches);
