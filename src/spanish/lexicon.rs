//! The verb lexicon: about 1,400 common verbs with an English gloss and the
//! class facts that spelling cannot predict.
//!
//! Data lives in `verbs.txt`, one verb a line: `infinitive|class|gloss`, where
//! class is `-` (by rule; irregulars are recognised by derivation anyway) or
//! `+`-joined tags: `ie`, `ue`, `i` (stem changes), `ie!` (e>ie without the
//! -ir e>i: *discernir*), `acc` (stressed í/ú: *enviar*, *reunir*), `noz`
//! (-cer with plain z: *mecer*, *cocer*), `irr` (documentation only). It is
//! parsed once into a sorted table (binary search) on first use.

use std::sync::LazyLock;

use super::engine::{Flags, StemChange};

/// One lexicon verb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub infinitive: &'static str,
    pub english: &'static str,
    pub flags: Flags,
    /// The class column as written (`-`, `ie`, `ue+noz`, `irr`…).
    pub class: &'static str,
}

const DATA: &str = include_str!("verbs.txt");

static ENTRIES: LazyLock<Vec<Entry>> = LazyLock::new(|| {
    let mut entries: Vec<Entry> = DATA
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect();
    entries.sort_unstable_by(|a, b| a.infinitive.cmp(b.infinitive));
    entries.dedup_by(|a, b| a.infinitive == b.infinitive);
    entries
});

fn parse_line(line: &'static str) -> Option<Entry> {
    let mut parts = line.splitn(3, '|');
    let infinitive = parts.next()?.trim();
    let class = parts.next()?.trim();
    let english = parts.next()?.trim();
    Some(Entry {
        infinitive,
        english,
        flags: parse_class(class),
        class,
    })
}

fn parse_class(class: &str) -> Flags {
    let mut flags = Flags::default();
    for tag in class.split('+') {
        match tag {
            "ie" => flags.stem_change = StemChange::Ie,
            "ie!" => {
                flags.stem_change = StemChange::Ie;
                flags.no_raise = true;
            }
            "ue" => flags.stem_change = StemChange::Ue,
            "i" => flags.stem_change = StemChange::I,
            "acc" => flags.accent = true,
            "noz" => flags.no_zc = true,
            _ => {}
        }
    }
    flags
}

/// All lexicon verbs, sorted by infinitive.
pub fn entries() -> &'static [Entry] {
    &ENTRIES
}

/// The lexicon entry of a normalized infinitive.
pub fn lookup(infinitive: &str) -> Option<&'static Entry> {
    let entries = entries();
    entries
        .binary_search_by(|e| e.infinitive.cmp(infinitive))
        .ok()
        .map(|i| &entries[i])
}

/// One page of lexicon verbs for `GET /verbs?search=&limit=&cursor=`:
/// verbs whose infinitive starts with `search` or whose gloss contains it
/// (case-insensitive; empty matches all), in infinitive order, strictly after
/// the `after` cursor (the last infinitive of the previous page).
pub fn page(search: &str, after: Option<&str>, limit: usize) -> Vec<&'static Entry> {
    let needle = search.trim().to_lowercase();
    let entries = entries();
    let start = match after {
        Some(cursor) => entries.partition_point(|e| e.infinitive <= cursor),
        None => 0,
    };
    entries[start..]
        .iter()
        .filter(|e| {
            needle.is_empty()
                || e.infinitive.starts_with(&needle)
                || e.english.to_lowercase().contains(&needle)
        })
        .take(limit)
        .collect()
}

/// Prefixes under which an unknown verb inherits the class of a known one
/// (*desconcertar* from *concertar*, *reconvertir* from *convertir*,
/// *trasvolar* from *volar*).
const PREFIXES: [&str; 23] = [
    "re", "des", "pre", "con", "com", "sobre", "entre", "contra", "dis", "in", "im", "sub",
    "trans", "tras", "circun", "ex", "de", "a", "en", "em", "inter", "super", "co",
];

/// Endings whose verbs (nearly) all share a stem change, for unknown verbs
/// that no prefix links to a known one. Known exceptions (*agredir*,
/// *pretender*…) are in the lexicon, which is consulted first.
const SUFFIX_CLASSES: [(&str, StemChange); 19] = [
    ("mendar", StemChange::Ie),
    ("quirir", StemChange::Ie),
    ("quebrar", StemChange::Ie),
    ("verter", StemChange::Ie),
    ("ertir", StemChange::Ie),
    ("entir", StemChange::Ie),
    ("erir", StemChange::Ie),
    ("edir", StemChange::I),
    ("etir", StemChange::I),
    ("estir", StemChange::I),
    ("eguir", StemChange::I),
    ("egir", StemChange::I),
    ("eñir", StemChange::I),
    ("olver", StemChange::Ue),
    ("ormir", StemChange::Ue),
    ("order", StemChange::Ue),
    ("orcer", StemChange::Ue),
    ("tender", StemChange::Ie),
    ("cender", StemChange::Ie),
];

/// Class of an unknown verb: that of a known verb it derives from by a
/// common prefix, else the class its ending nearly always has, else plain rules.
pub fn inferred_flags(infinitive: &str) -> Flags {
    let inherited = PREFIXES
        .iter()
        .filter_map(|p| infinitive.strip_prefix(p))
        .filter(|base| base.len() >= 4)
        .find_map(lookup);
    if let Some(e) = inherited {
        return e.flags;
    }
    let mut flags = Flags::default();
    if let Some(&(_, change)) = SUFFIX_CLASSES.iter().find(|(s, _)| infinitive.ends_with(s)) {
        flags.stem_change = change;
    }
    // -uar verbs stress the u (actúo, sitúo) except after g (averiguo); after c
    // RAE admits both (evacuo/evacúo) and the accented form is taken.
    let uar = infinitive.ends_with("uar") && !infinitive.ends_with("guar");
    // -iar endings whose verbs all stress the i (fotografío, confío, enfrío).
    // Not -trofiar (atrofio, from atrofia) nor pifiar (pifio, from pifia).
    let iar = [
        "grafiar", "fiar", "friar", "guiar", "criar", "rriar", "triar", "variar",
    ]
    .iter()
    .any(|s| infinitive.ends_with(s))
        && !infinitive.ends_with("trofiar")
        && !infinitive.ends_with("pifiar");
    flags.accent = uar || iar || weak_vowel_in_hiatus(infinitive);
    flags
}

/// A stem whose last vowel is i/u in hiatus with an open vowel, which the
/// stress then falls on: across a silent h (*prohíbo*, *ahúmo*, *rehúso*)
/// or before a final z (*enraízo*, *europeízo*). Plain *ai*/*au* stay
/// unmarked: *causo* and *aíslo* differ and only the lexicon can tell.
fn weak_vowel_in_hiatus(infinitive: &str) -> bool {
    let stem = infinitive
        .get(..infinitive.len().saturating_sub(2))
        .unwrap_or_default()
        .as_bytes();
    let Some(last) = stem.iter().rposition(|b| b"aeiou".contains(b)) else {
        return false;
    };
    let weak = matches!(stem[last], b'i' | b'u');
    let open = |i: usize| matches!(stem.get(i), Some(b'a' | b'e' | b'o'));
    let across_h = last >= 2 && stem[last - 1] == b'h' && open(last - 2);
    let before_z =
        last >= 1 && open(last - 1) && stem[last] == b'i' && stem.get(last + 1..) == Some(b"z");
    weak && (across_h || before_z)
}
