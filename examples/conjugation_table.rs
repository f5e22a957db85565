//! Prints the engine's six simple tenses for the lexicon and for every
//! infinitive read from standard input (one a line), as TSV:
//! `infinitive, known (0/1), tense key, person index, form`. Used by
//! `scripts/check-conjugations` to compare the engine with an independent
//! reference; a line the engine rejects prints `infinitive, ERR, reason`.

use std::io::{BufRead, BufWriter, Write};

use refbackend::spanish::{Tense, conjugate, lexicon};

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut verbs: Vec<String> = lexicon::entries()
        .iter()
        .map(|e| e.infinitive.to_owned())
        .collect();
    for line in stdin.lock().lines() {
        let line = line?;
        let verb = line.trim();
        if !verb.is_empty() {
            verbs.push(verb.to_owned());
        }
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    for verb in verbs {
        match conjugate(&verb) {
            Ok(c) => {
                for tense in &Tense::ALL[..6] {
                    for (person, form) in c.tenses.tense(*tense).iter().enumerate() {
                        let known = u8::from(c.known);
                        writeln!(out, "{verb}\t{known}\t{}\t{person}\t{form}", tense.key())?;
                    }
                }
            }
            Err(e) => writeln!(out, "{verb}\tERR\t{e}")?,
        }
    }
    out.flush()
}
