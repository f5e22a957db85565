//! Spanish grammar: the pure conjugation engine (no I/O).
//!
//! [`conjugate`] turns any well-formed infinitive into the eight tenses the
//! subjunctive-practice product drills, plus participle and gerund. Verbs are
//! conjugated by rule: the lexicon ([`lexicon`]) only supplies what spelling
//! cannot predict (stem changes, stressed í/ú, glosses); irregular verbs are
//! listed once in `irregular.rs` and their compounds are found by derivation
//! (*contener* = *con* + *tener*). Spelling follows the RAE 2010 rules
//! (*rio*, *fie*, *huis* without accent; *dé*, *sé* keep the diacritic).

pub mod checker;
mod engine;
mod irregular;
pub mod lexicon;
mod orthography;
#[cfg(test)]
mod tests;
pub mod triggers;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::{Deserialize, Serialize as DeriveSerialize};

pub use engine::{Flags, StemChange};
pub use triggers::TriggerCategory;

/// The tenses served by `GET /verbs/{infinitive}/conjugations`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, DeriveSerialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Tense {
    PresentIndicative,
    PreteriteIndicative,
    ImperfectIndicative,
    PresentSubjunctive,
    ImperfectSubjunctiveRa,
    ImperfectSubjunctiveSe,
    PresentPerfectSubjunctive,
    /// Built with the -ra auxiliary (*hubiera*); see
    /// [`Conjugation::pluperfect_subjunctive_se`] for *hubiese*. The key follows
    /// the DESIGN.md contract (`pluperfect_subjunctive_ra`); the bare
    /// `pluperfect_subjunctive` is accepted on input.
    #[serde(rename = "pluperfect_subjunctive_ra", alias = "pluperfect_subjunctive")]
    PluperfectSubjunctive,
}

impl Tense {
    pub const ALL: [Tense; 8] = [
        Tense::PresentIndicative,
        Tense::PreteriteIndicative,
        Tense::ImperfectIndicative,
        Tense::PresentSubjunctive,
        Tense::ImperfectSubjunctiveRa,
        Tense::ImperfectSubjunctiveSe,
        Tense::PresentPerfectSubjunctive,
        Tense::PluperfectSubjunctive,
    ];

    /// The wire key (same as serde's).
    pub const fn key(self) -> &'static str {
        match self {
            Tense::PresentIndicative => "present_indicative",
            Tense::PreteriteIndicative => "preterite_indicative",
            Tense::ImperfectIndicative => "imperfect_indicative",
            Tense::PresentSubjunctive => "present_subjunctive",
            Tense::ImperfectSubjunctiveRa => "imperfect_subjunctive_ra",
            Tense::ImperfectSubjunctiveSe => "imperfect_subjunctive_se",
            Tense::PresentPerfectSubjunctive => "present_perfect_subjunctive",
            Tense::PluperfectSubjunctive => "pluperfect_subjunctive_ra",
        }
    }

    /// Parses a wire key (also the bare `pluperfect_subjunctive`).
    pub fn from_key(key: &str) -> Option<Tense> {
        if key == "pluperfect_subjunctive" {
            return Some(Tense::PluperfectSubjunctive);
        }
        Tense::ALL.into_iter().find(|t| t.key() == key)
    }

    pub const fn is_subjunctive(self) -> bool {
        !matches!(
            self,
            Tense::PresentIndicative | Tense::PreteriteIndicative | Tense::ImperfectIndicative
        )
    }

    /// Built with *haber* + participle.
    pub const fn is_compound(self) -> bool {
        matches!(
            self,
            Tense::PresentPerfectSubjunctive | Tense::PluperfectSubjunctive
        )
    }
}

/// Grammatical persons; `el` covers él/ella/usted, `ellos` covers ustedes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, DeriveSerialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Person {
    Yo,
    Tu,
    El,
    Nosotros,
    Vosotros,
    Ellos,
}

impl Person {
    pub const ALL: [Person; 6] = [
        Person::Yo,
        Person::Tu,
        Person::El,
        Person::Nosotros,
        Person::Vosotros,
        Person::Ellos,
    ];

    pub const fn key(self) -> &'static str {
        match self {
            Person::Yo => "yo",
            Person::Tu => "tu",
            Person::El => "el",
            Person::Nosotros => "nosotros",
            Person::Vosotros => "vosotros",
            Person::Ellos => "ellos",
        }
    }

    pub fn from_key(key: &str) -> Option<Person> {
        Person::ALL.into_iter().find(|p| p.key() == key)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// *haber* in the present subjunctive (present perfect subjunctive).
pub const HABER_PRESENT_SUBJUNCTIVE: [&str; 6] =
    ["haya", "hayas", "haya", "hayamos", "hayáis", "hayan"];
/// *haber* in the -ra imperfect subjunctive (pluperfect subjunctive).
pub const HABER_IMPERFECT_RA: [&str; 6] = [
    "hubiera",
    "hubieras",
    "hubiera",
    "hubiéramos",
    "hubierais",
    "hubieran",
];
/// *haber* in the -se imperfect subjunctive (pluperfect subjunctive, -se variant).
pub const HABER_IMPERFECT_SE: [&str; 6] = [
    "hubiese",
    "hubieses",
    "hubiese",
    "hubiésemos",
    "hubieseis",
    "hubiesen",
];

/// Eight tenses × six persons; serializes as `{tense_key: {person_key: form}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenses([[String; 6]; 8]);

impl Tenses {
    pub fn get(&self, tense: Tense, person: Person) -> &str {
        &self.0[tense as usize][person.index()]
    }

    pub fn tense(&self, tense: Tense) -> &[String; 6] {
        &self.0[tense as usize]
    }
}

struct PersonRow<'a>(&'a [String; 6]);

impl Serialize for PersonRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(6))?;
        for person in Person::ALL {
            map.serialize_entry(person.key(), &self.0[person.index()])?;
        }
        map.end()
    }
}

impl Serialize for Tenses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(8))?;
        for tense in Tense::ALL {
            map.serialize_entry(tense.key(), &PersonRow(self.tense(tense)))?;
        }
        map.end()
    }
}

/// A verb's full conjugation, shaped like the API response.
#[derive(Clone, Debug, PartialEq, Eq, DeriveSerialize)]
pub struct Conjugation {
    pub infinitive: String,
    /// In the lexicon (otherwise conjugated purely by rule).
    pub known: bool,
    pub english: Option<&'static str>,
    /// No change of sound from its model (spelling-only changes such as
    /// *busqué* and stressed í/ú such as *envío* count as regular).
    pub regular: bool,
    pub participle: String,
    /// An accepted alternative participle (*imprimido*, *freído*, *proveído*).
    #[serde(skip)]
    pub participle_alt: Option<String>,
    pub gerund: String,
    pub tenses: Tenses,
}

impl Conjugation {
    pub fn form(&self, tense: Tense, person: Person) -> &str {
        self.tenses.get(tense, person)
    }

    /// Every (tense, person, form) of the table, tense by tense.
    pub fn forms(&self) -> impl Iterator<Item = (Tense, Person, &str)> {
        Tense::ALL.into_iter().flat_map(move |t| {
            Person::ALL
                .into_iter()
                .map(move |p| (t, p, self.form(t, p)))
        })
    }

    /// The pluperfect subjunctive with the -se auxiliary (*hubiese hablado*).
    pub fn pluperfect_subjunctive_se(&self) -> [String; 6] {
        HABER_IMPERFECT_SE.map(|aux| compound_form(aux, &self.participle))
    }

    /// Every accepted spelling of a form: the -ra/-se alternation of the
    /// imperfect and pluperfect subjunctive, and alternative participles.
    pub fn accepted(&self, tense: Tense, person: Person) -> Vec<String> {
        let mut out = vec![self.form(tense, person).to_owned()];
        let i = person.index();
        match tense {
            Tense::ImperfectSubjunctiveRa => {
                out.push(self.form(Tense::ImperfectSubjunctiveSe, person).to_owned())
            }
            Tense::ImperfectSubjunctiveSe => {
                out.push(self.form(Tense::ImperfectSubjunctiveRa, person).to_owned())
            }
            Tense::PluperfectSubjunctive => {
                out.push(compound_form(HABER_IMPERFECT_SE[i], &self.participle))
            }
            _ => {}
        }
        if tense.is_compound()
            && let Some(alt) = &self.participle_alt
        {
            let auxes: &[&str] = if tense == Tense::PresentPerfectSubjunctive {
                &[HABER_PRESENT_SUBJUNCTIVE[i]]
            } else {
                &[HABER_IMPERFECT_RA[i], HABER_IMPERFECT_SE[i]]
            };
            out.extend(auxes.iter().map(|aux| compound_form(aux, alt)));
        }
        out
    }
}

fn compound_form(aux: &str, participle: &str) -> String {
    let mut s = String::with_capacity(aux.len() + 1 + participle.len());
    s.push_str(aux);
    s.push(' ');
    s.push_str(participle);
    s
}

/// The input is not a Spanish infinitive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidInfinitive {
    pub input: String,
    pub reason: &'static str,
}

impl std::fmt::Display for InvalidInfinitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not a Spanish infinitive: {}",
            self.input, self.reason
        )
    }
}

impl std::error::Error for InvalidInfinitive {}

/// Longest accepted infinitive, in letters (the longest real ones are ~20).
pub const MAX_INFINITIVE_CHARS: usize = 30;

/// Normalizes (trim, lower-case) and checks that `input` is shaped like a
/// Spanish infinitive: Spanish letters only, at least 3 of them (or *ir*),
/// ending in -ar/-er/-ir (or -ír after e/o: *reír*, *oír*), with a vowel
/// in the stem.
pub fn validate_infinitive(input: &str) -> Result<String, InvalidInfinitive> {
    let fail = |reason| InvalidInfinitive {
        input: input.to_owned(),
        reason,
    };
    // Cheap bound before any allocation: a letter is at most 2 bytes in NFC,
    // 3 when decomposed.
    if input.len() > 3 * MAX_INFINITIVE_CHARS + 16 {
        return Err(fail("too long"));
    }
    let word = compose(&input.trim().to_lowercase());
    if word.is_empty() {
        return Err(fail("empty"));
    }
    if let Some(c) = word
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || "áéíóúüñ".contains(c)))
    {
        return Err(fail(if c.is_ascii_digit() {
            "contains a digit"
        } else {
            "contains a character that is not a Spanish letter"
        }));
    }
    // The only infinitives without a vowel in the stem (or under 3 letters).
    if matches!(word.as_str(), "ir" | "ser" | "ver" | "dar") {
        return Ok(word);
    }
    let letters = word.chars().count();
    if letters < 3 {
        return Err(fail("too short"));
    }
    if letters > MAX_INFINITIVE_CHARS {
        return Err(fail("too long"));
    }
    let stem = if let Some(stem) = word.strip_suffix("ír") {
        if !(stem.ends_with('e') || stem.ends_with('o')) {
            return Err(fail("-ír only follows e or o (reír, oír)"));
        }
        stem
    } else if word.ends_with("ar") || word.ends_with("er") || word.ends_with("ir") {
        &word[..word.len() - 2]
    } else {
        return Err(fail("does not end in -ar, -er or -ir"));
    };
    if !stem.chars().any(orthography::is_vowel) {
        return Err(fail("no vowel before the ending"));
    }
    // The stem keeps its stress unmarked in an infinitive: *cantár* is not a word.
    if stem.contains(['á', 'é', 'ó']) {
        return Err(fail("misplaced accent"));
    }
    Ok(word)
}

/// Composes the decomposed accents Spanish uses (NFD input such as
/// `e` + U+0301 from some keyboards and URL encoders) into single letters.
pub(crate) fn compose(word: &str) -> String {
    if !word
        .chars()
        .any(|c| matches!(c, '\u{301}' | '\u{303}' | '\u{308}'))
    {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        let combined = match (out.chars().last(), c) {
            (Some(base @ ('a' | 'e' | 'i' | 'o' | 'u')), '\u{301}') => orthography::accented(base),
            (Some('n'), '\u{303}') => 'ñ',
            (Some('u'), '\u{308}') => 'ü',
            _ => {
                out.push(c);
                continue;
            }
        };
        out.pop();
        out.push(combined);
    }
    out
}

/// Conjugates any well-formed infinitive (lexicon verbs with their class,
/// others by rule with `known: false`).
pub fn conjugate(infinitive: &str) -> Result<Conjugation, InvalidInfinitive> {
    let word = validate_infinitive(infinitive)?;
    let entry = lexicon::lookup(&word);
    let flags = match entry {
        Some(e) => e.flags,
        None => lexicon::inferred_flags(&word),
    };
    let simple = engine::simple(&word, flags);
    Ok(assemble(word, entry, simple))
}

/// Conjugates `infinitive` as if it followed its model exactly: no
/// irregular stems and no stem change, with the spelling the endings force
/// (*tener* → *tena*, *pensar* → *pense*, *dormir* → *dormamos*). The table a
/// learner produces by over-applying the regular pattern.
pub fn conjugate_regularized(infinitive: &str) -> Result<Conjugation, InvalidInfinitive> {
    let word = validate_infinitive(infinitive)?;
    let simple = engine::regularized(&word);
    Ok(assemble(word, None, simple))
}

/// Conjugates `infinitive` by bare stem + ending, keeping the lexicon's stem
/// change when `keep_stem_change`, but with none of the spelling
/// adjustments at the joint (*busce*, *coga*, *construa*, *averigue*,
/// *empieze*). The table of a learner who misses a spelling change.
pub fn conjugate_naive(
    infinitive: &str,
    keep_stem_change: bool,
) -> Result<Conjugation, InvalidInfinitive> {
    let word = validate_infinitive(infinitive)?;
    let flags = if keep_stem_change {
        flags_of(&word)
    } else {
        Flags::default()
    };
    let simple = engine::naive(&word, flags);
    Ok(assemble(word, None, simple))
}

fn flags_of(word: &str) -> Flags {
    match lexicon::lookup(word) {
        Some(e) => e.flags,
        None => lexicon::inferred_flags(word),
    }
}

/// The teaching class of a verb, from easiest to hardest.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, DeriveSerialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum VerbClass {
    Regular,
    /// Only the letters change to keep the sound: *busque*, *coja*,
    /// *averigüe*, *conozca*, *construya*, *envíe*.
    SpellingChange,
    /// *piense*, *vuelva*, *pida*, *sintamos*, *juegue*.
    StemChange,
    /// Irregular stems: *tenga*, *sea*, *vaya*, *condujera*.
    Irregular,
}

impl VerbClass {
    pub const ALL: [VerbClass; 4] = [
        VerbClass::Regular,
        VerbClass::SpellingChange,
        VerbClass::StemChange,
        VerbClass::Irregular,
    ];

    pub const fn key(self) -> &'static str {
        match self {
            VerbClass::Regular => "regular",
            VerbClass::SpellingChange => "spelling_change",
            VerbClass::StemChange => "stem_change",
            VerbClass::Irregular => "irregular",
        }
    }
}

/// What makes a verb hard to conjugate: a verb can both change its stem and
/// its spelling (*empezar* → *empiece*, *jugar* → *juegue*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerbProfile {
    /// In the irregular table (or a compound of one), or a -ducir verb.
    pub irregular: bool,
    pub stem_change: StemChange,
    /// Some simple form differs from bare stem + ending (with the stem change).
    pub spelling_change: bool,
}

impl VerbProfile {
    /// The hardest class that applies.
    pub fn class(&self) -> VerbClass {
        if self.irregular {
            VerbClass::Irregular
        } else if self.stem_change != StemChange::None {
            VerbClass::StemChange
        } else if self.spelling_change {
            VerbClass::SpellingChange
        } else {
            VerbClass::Regular
        }
    }

    /// Every class that applies, easiest first (`[Regular]` for a regular verb).
    pub fn classes(&self) -> Vec<VerbClass> {
        let mut out = Vec::with_capacity(2);
        if self.spelling_change {
            out.push(VerbClass::SpellingChange);
        }
        if self.stem_change != StemChange::None {
            out.push(VerbClass::StemChange);
        }
        if self.irregular {
            out.push(VerbClass::Irregular);
        }
        if out.is_empty() {
            out.push(VerbClass::Regular);
        }
        out
    }
}

/// Classifies a verb for teaching: irregular, stem change, spelling change.
pub fn profile(infinitive: &str) -> Result<VerbProfile, InvalidInfinitive> {
    let word = validate_infinitive(infinitive)?;
    let irregular = irregular::find(&word).is_some() || word.ends_with("ducir");
    let flags = flags_of(&word);
    let spelling_change = !irregular && {
        let real = engine::simple(&word, flags);
        let naive = engine::naive(&word, flags);
        real.present != naive.present
            || real.subjunctive != naive.subjunctive
            || real.preterite != naive.preterite
    };
    Ok(VerbProfile {
        irregular,
        stem_change: flags.stem_change,
        spelling_change,
    })
}

fn assemble(
    infinitive: String,
    entry: Option<&'static lexicon::Entry>,
    s: engine::Simple,
) -> Conjugation {
    // The -ra/-se stems come from the 3rd plural preterite minus -ron:
    // dijeron → dije-ra, dijé-ramos; this carries every preterite irregularity.
    let base = s.preterite[5]
        .strip_suffix("ron")
        .unwrap_or(&s.preterite[5]);
    let imperfect_ra = past_subjunctive(base, ["ra", "ras", "ra", "ramos", "rais", "ran"]);
    let imperfect_se = past_subjunctive(base, ["se", "ses", "se", "semos", "seis", "sen"]);
    let perfect = HABER_PRESENT_SUBJUNCTIVE.map(|aux| compound_form(aux, &s.participle));
    let pluperfect = HABER_IMPERFECT_RA.map(|aux| compound_form(aux, &s.participle));
    Conjugation {
        infinitive,
        known: entry.is_some(),
        english: entry.map(|e| e.english),
        regular: s.regular,
        tenses: Tenses([
            s.present,
            s.preterite,
            s.imperfect,
            s.subjunctive,
            imperfect_ra,
            imperfect_se,
            perfect,
            pluperfect,
        ]),
        participle: s.participle,
        participle_alt: s.participle_alt,
        gerund: s.gerund,
    }
}

fn past_subjunctive(base: &str, endings: [&str; 6]) -> [String; 6] {
    std::array::from_fn(|p| {
        let mut s = String::with_capacity(base.len() + endings[p].len() + 1);
        if p == 3 {
            orthography::push_accenting_last(base, &mut s);
        } else {
            s.push_str(base);
        }
        s.push_str(endings[p]);
        s
    })
}
