//! Answer-checking throughput and exercise-bank build time
//! (docs/benchmarks.md), on one core.
//!
//! `taskset -c 0 cargo bench --bench checker`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use refbackend::practice::bank::{self, Exercise};
use refbackend::spanish::checker::{AccentPolicy, check};

/// Every 7th exercise: a mix of all four types, verbs and tenses.
fn sample(bank: &[Exercise]) -> Vec<&Exercise> {
    bank.iter().step_by(7).collect()
}

fn checks(c: &mut Criterion) {
    let bank = bank::bank();
    let sample = sample(&bank);
    let correct: Vec<(&Exercise, &str)> = sample.iter().map(|e| (*e, e.answer.as_str())).collect();
    // A plausible mistake: the other option, or for typed answers another
    // person's form (diagnosed early) and a non-word (every diagnosis tried).
    let near: Vec<(&Exercise, String)> = sample
        .iter()
        .map(|e| {
            let wrong = match e.choices.iter().find(|c| **c != e.answer) {
                Some(other) => other.clone(),
                None => format!("{}s", e.answer),
            };
            (*e, wrong)
        })
        .collect();
    let garbage: Vec<(&Exercise, &str)> = sample
        .iter()
        .filter(|e| e.kind.is_free_text())
        .map(|e| (*e, "zzzzqa"))
        .collect();

    let mut group = c.benchmark_group("check");
    group.throughput(Throughput::Elements(correct.len() as u64));
    group.bench_function("correct answers", |b| {
        b.iter(|| {
            for (e, answer) in &correct {
                black_box(check(&e.expected(), black_box(answer), AccentPolicy::Warn));
            }
        });
    });
    group.throughput(Throughput::Elements(near.len() as u64));
    group.bench_function("incorrect answers (wrong choice or person)", |b| {
        b.iter(|| {
            for (e, answer) in &near {
                black_box(check(&e.expected(), black_box(answer), AccentPolicy::Warn));
            }
        });
    });
    group.throughput(Throughput::Elements(garbage.len() as u64));
    group.bench_function("incorrect answers (unrecognized, worst case)", |b| {
        b.iter(|| {
            for (e, answer) in &garbage {
                black_box(check(&e.expected(), black_box(answer), AccentPolicy::Warn));
            }
        });
    });
    group.finish();
}

fn build_bank(c: &mut Criterion) {
    let mut group = c.benchmark_group("bank");
    group.sample_size(10);
    group.bench_function("build the whole bank", |b| {
        b.iter(|| black_box(bank::bank()))
    });
    group.finish();
}

criterion_group!(benches, checks, build_bank);
criterion_main!(benches);
