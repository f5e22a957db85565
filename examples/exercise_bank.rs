//! Prints the exercise bank's counts per type and difficulty, and with `--all`
//! every exercise, one a line (`slug | prompt | instructions | choices |
//! accepted | difficulty | explanation`): for reviewing the bank by eye.
//!
//! `cargo run --example exercise_bank -- --all | less`

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use refbackend::practice::bank;

fn main() -> std::io::Result<()> {
    let exercises = bank::build().map_err(std::io::Error::other)?;
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_level: BTreeMap<u8, usize> = BTreeMap::new();
    for e in &exercises {
        *per_kind.entry(e.kind.key()).or_default() += 1;
        *per_level.entry(e.difficulty).or_default() += 1;
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{} exercises {per_kind:?} difficulty {per_level:?}",
        exercises.len()
    )?;
    if std::env::args().any(|a| a == "--all") {
        for e in &exercises {
            writeln!(
                out,
                "{} | {} | {} | {:?} | {:?} | d{} | {}",
                e.slug,
                e.prompt,
                e.instructions,
                e.choices,
                e.accepted,
                e.difficulty,
                e.explanation
            )?;
        }
    }
    out.flush()
}
