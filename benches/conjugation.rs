//! Conjugation throughput (docs/benchmarks.md): every form of every lexicon
//! verb, and one irregular verb, on one core.
//!
//! `taskset -c 0 cargo bench --bench conjugation`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use refbackend::spanish::{self, Person, Tense, lexicon};

/// Forms per conjugation: 8 tenses × 6 persons, plus participle and gerund.
const FORMS_PER_VERB: u64 = (Tense::ALL.len() * Person::ALL.len() + 2) as u64;

fn whole_lexicon(c: &mut Criterion) {
    let verbs: Vec<&str> = lexicon::entries().iter().map(|e| e.infinitive).collect();
    let mut group = c.benchmark_group("conjugate");
    group.throughput(Throughput::Elements(verbs.len() as u64 * FORMS_PER_VERB));
    group.bench_function("whole lexicon (forms)", |b| {
        b.iter(|| {
            for verb in &verbs {
                black_box(spanish::conjugate(black_box(verb)).ok());
            }
        });
    });
    group.finish();

    let mut single = c.benchmark_group("conjugate one verb");
    single.throughput(Throughput::Elements(FORMS_PER_VERB));
    for verb in ["hablar", "tener", "conducir", "bloguear"] {
        single.bench_function(verb, |b| {
            b.iter(|| black_box(spanish::conjugate(black_box(verb)).ok()))
        });
    }
    single.finish();
}

criterion_group!(benches, whole_lexicon);
criterion_main!(benches);
