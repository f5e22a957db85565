//! The exercise bank: every exercise the product serves, generated
//! deterministically from the sentence frames (`frames.txt`) and the
//! conjugation engine.
//!
//! Each frame × subject × verb phrase is one sentence. A present-subjunctive
//! frame yields a `conjugation` exercise, and for some sentences (picked by a
//! fixed hash, so the bank is the same on every build) a `mood_choice` and a
//! `trigger_category` one; a past or compound frame yields a
//! `sequence_of_tenses` exercise and, for some sentences, the other three;
//! an indicative frame (*Creo que…*, habitual *cuando*) yields the
//! indicative side of `mood_choice`. Slugs are built from the frame id, the
//! verb and the subject, so they survive re-seeding and reordering.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::frames::{self, Context, Frame, FrameTense, Subject, VerbPhrase, fnv1a, slugify};
use crate::spanish::checker::{person_label, spelling_rule, stem_change_label, tense_label};
use crate::spanish::{
    self, Conjugation, Person, StemChange, Tense, TriggerCategory, VerbClass, VerbProfile,
};

/// The four kinds of exercise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExerciseType {
    /// Fill the blank with a given verb, person and tense.
    Conjugation,
    /// Pick the indicative or the subjunctive form.
    MoodChoice,
    /// Name what triggers the (already filled) subjunctive.
    TriggerCategory,
    /// Find the subjunctive tense the main clause requires.
    SequenceOfTenses,
}

impl ExerciseType {
    pub const ALL: [ExerciseType; 4] = [
        ExerciseType::Conjugation,
        ExerciseType::MoodChoice,
        ExerciseType::TriggerCategory,
        ExerciseType::SequenceOfTenses,
    ];

    /// The wire key (same as serde's).
    pub const fn key(self) -> &'static str {
        match self {
            ExerciseType::Conjugation => "conjugation",
            ExerciseType::MoodChoice => "mood_choice",
            ExerciseType::TriggerCategory => "trigger_category",
            ExerciseType::SequenceOfTenses => "sequence_of_tenses",
        }
    }

    pub fn from_key(key: &str) -> Option<ExerciseType> {
        ExerciseType::ALL.into_iter().find(|t| t.key() == key)
    }

    /// Whether the answer is typed (otherwise it is one of `choices`).
    pub const fn is_free_text(self) -> bool {
        matches!(
            self,
            ExerciseType::Conjugation | ExerciseType::SequenceOfTenses
        )
    }

    const fn slug_prefix(self) -> &'static str {
        match self {
            ExerciseType::Conjugation => "conj",
            ExerciseType::MoodChoice => "mood",
            ExerciseType::TriggerCategory => "trig",
            ExerciseType::SequenceOfTenses => "seq",
        }
    }
}

/// Longest slug (a database column bound).
pub const MAX_SLUG_LEN: usize = 120;
/// Bounds of the generated text, for database columns (checked by the tests).
pub const MAX_PROMPT_LEN: usize = 200;
pub const MAX_INSTRUCTIONS_LEN: usize = 160;
pub const MAX_EXPLANATION_LEN: usize = 400;

/// One exercise, as seeded into the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exercise {
    /// Stable across builds and re-seeding, unique, `[a-z0-9-]`, at most
    /// [`MAX_SLUG_LEN`] characters.
    pub slug: String,
    pub kind: ExerciseType,
    /// The Spanish sentence with exactly one blank `___`.
    pub prompt: String,
    /// A short English instruction.
    pub instructions: String,
    /// The verb the blank tests.
    pub infinitive: String,
    pub person: Person,
    /// The tense of the correct answer (indicative for some mood choices).
    pub tense: Tense,
    pub trigger: Option<TriggerCategory>,
    /// 1..=5, from the verb class, the tense and the exercise type.
    pub difficulty: u8,
    /// `tense:…`, `trigger:…` or `context:indicative`, `class:…`, `mood:…`,
    /// `person:…`, `frame:…`.
    pub tags: Vec<String>,
    /// Options for `mood_choice` and `trigger_category`; empty otherwise.
    pub choices: Vec<String>,
    /// The canonical answer (a form, or a trigger category key).
    pub answer: String,
    /// Every accepted answer, `answer` first (-ra and -se for the past subjunctive).
    pub accepted: Vec<String>,
    /// One or two English sentences naming the trigger and the rule.
    pub explanation: String,
}

impl Exercise {
    /// What [`crate::spanish::checker::check`] needs, borrowed from this exercise.
    pub fn expected(&self) -> spanish::checker::Expected<'_> {
        spanish::checker::Expected {
            free_text: self.kind.is_free_text(),
            infinitive: &self.infinitive,
            person: self.person,
            tense: self.tense,
            trigger: self.trigger,
            accepted: &self.accepted,
            choices: &self.choices,
        }
    }
}

/// The whole bank, in a fixed order (frame by frame, as in `frames.txt`).
pub fn bank() -> Vec<Exercise> {
    build().expect("frames.txt and the conjugation engine are verified by the bank tests")
}

/// The bank, or the first data error found in `frames.txt`.
pub fn build() -> Result<Vec<Exercise>, String> {
    let frames = frames::frames()?;
    let mut verbs: BTreeMap<String, Verb> = BTreeMap::new();
    let mut out = Vec::with_capacity(2_600);
    for frame in &frames {
        for subject in &frame.subjects {
            for phrase in &frame.phrases {
                if !verbs.contains_key(&phrase.verb) {
                    verbs.insert(phrase.verb.clone(), Verb::new(&phrase.verb)?);
                }
                let verb = &verbs[&phrase.verb];
                let item = Item::new(frame, subject, phrase, verb);
                let start = out.len();
                item.push_exercises(&mut out);
                // "Era obvio que ella ___ (ser) de aquí" would show the answer.
                let mut i = start;
                while i < out.len() {
                    if leaks_answer(&out[i]) {
                        out.remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Whether the prompt or instructions show an accepted answer as a word.
pub(crate) fn leaks_answer(e: &Exercise) -> bool {
    if e.kind == ExerciseType::TriggerCategory {
        return false;
    }
    let words = |text: &str| -> String {
        let spaced: String = text
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect();
        format!(" {} ", spanish::checker::normalize(&spaced))
    };
    [&e.prompt, &e.instructions].into_iter().any(|text| {
        let hay = words(text);
        e.accepted
            .iter()
            .any(|a| hay.contains(&format!(" {} ", spanish::checker::normalize(a))))
    })
}

/// A verb's table and class, computed once per build.
struct Verb {
    conjugation: Conjugation,
    /// Bare stem + ending (with the stem change): shows where spelling changed.
    naive: Conjugation,
    /// No stem change: shows where the stem changed.
    regularized: Conjugation,
    profile: VerbProfile,
}

impl Verb {
    fn new(infinitive: &str) -> Result<Verb, String> {
        let err = |e: spanish::InvalidInfinitive| e.to_string();
        Ok(Verb {
            conjugation: spanish::conjugate(infinitive).map_err(err)?,
            naive: spanish::conjugate_naive(infinitive, true).map_err(err)?,
            regularized: spanish::conjugate_regularized(infinitive).map_err(err)?,
            profile: spanish::profile(infinitive).map_err(err)?,
        })
    }
}

const HABER_PRESENT_INDICATIVE: [&str; 6] = ["he", "has", "ha", "hemos", "habéis", "han"];
const HABER_IMPERFECT_INDICATIVE: [&str; 6] =
    ["había", "habías", "había", "habíamos", "habíais", "habían"];

/// One sentence: a frame with its subject and verb phrase.
struct Item<'a> {
    frame: &'a Frame,
    subject: &'a Subject,
    phrase: &'a VerbPhrase,
    verb: &'a Verb,
    person: Person,
    /// The sentence with the blank.
    sentence: String,
    hash: u64,
}

impl<'a> Item<'a> {
    fn new(frame: &'a Frame, subject: &'a Subject, phrase: &'a VerbPhrase, verb: &'a Verb) -> Self {
        let key = format!("{}|{}|{}", frame.id, phrase.verb, subject.slug);
        Item {
            frame,
            subject,
            phrase,
            verb,
            person: subject.person,
            sentence: frame.render(subject, phrase),
            hash: fnv1a(key.as_bytes()),
        }
    }

    /// Which exercises this sentence yields (see the module docs).
    fn push_exercises(&self, out: &mut Vec<Exercise>) {
        let h = self.hash;
        let mood = self.frame.mood_choice;
        match (self.frame.context, self.frame.tense) {
            (Context::Indicative, _) => {
                if mood {
                    out.push(self.mood_choice());
                }
            }
            (Context::Trigger(category), FrameTense::PresentSubjunctive) => {
                out.push(self.conjugation());
                if mood && h.is_multiple_of(3) {
                    out.push(self.mood_choice());
                }
                if (h >> 8).is_multiple_of(2) {
                    out.push(self.trigger_category(category));
                }
            }
            (Context::Trigger(category), _) => {
                out.push(self.sequence());
                if (h >> 16).is_multiple_of(3) {
                    out.push(self.conjugation());
                }
                if mood && (h >> 4).is_multiple_of(3) {
                    out.push(self.mood_choice());
                }
                if (h >> 8).is_multiple_of(3) {
                    out.push(self.trigger_category(category));
                }
            }
        }
    }

    fn tense(&self) -> Tense {
        self.frame.tense.tense()
    }

    fn trigger(&self) -> Option<TriggerCategory> {
        match self.frame.context {
            Context::Trigger(c) => Some(c),
            Context::Indicative => None,
        }
    }

    fn slug(&self, kind: ExerciseType) -> String {
        format!(
            "{}-{}-{}-{}",
            kind.slug_prefix(),
            self.frame.id,
            slugify(&self.phrase.display),
            self.subject.slug
        )
    }

    /// The sentence with the infinitive hint after the blank: `___ (venir)`.
    fn prompt_with_hint(&self) -> String {
        self.sentence
            .replacen("___", &format!("___ ({})", self.phrase.display), 1)
    }

    fn accepted(&self) -> Vec<String> {
        self.verb.conjugation.accepted(self.tense(), self.person)
    }

    fn form(&self, tense: Tense) -> String {
        self.verb.conjugation.form(tense, self.person).to_owned()
    }

    /// The other mood's form of the same time (the mood-choice distractor).
    fn other_mood_form(&self) -> String {
        let i = self.person as usize;
        let participle = &self.verb.conjugation.participle;
        match self.frame.tense {
            FrameTense::PresentSubjunctive => self.form(Tense::PresentIndicative),
            FrameTense::PresentPerfectSubjunctive => {
                format!("{} {participle}", HABER_PRESENT_INDICATIVE[i])
            }
            FrameTense::ImperfectSubjunctive => self.form(Tense::ImperfectIndicative),
            FrameTense::PluperfectSubjunctive => {
                format!("{} {participle}", HABER_IMPERFECT_INDICATIVE[i])
            }
            FrameTense::PresentIndicative => self.form(Tense::PresentSubjunctive),
            FrameTense::ImperfectIndicative | FrameTense::PreteriteIndicative => {
                self.form(Tense::ImperfectSubjunctiveRa)
            }
        }
    }

    fn base(&self, kind: ExerciseType) -> Exercise {
        let accepted = self.accepted();
        Exercise {
            slug: self.slug(kind),
            kind,
            prompt: String::new(),
            instructions: String::new(),
            infinitive: self.phrase.verb.clone(),
            person: self.person,
            tense: self.tense(),
            trigger: self.trigger(),
            difficulty: self.difficulty(kind),
            tags: self.tags(),
            choices: Vec::new(),
            answer: accepted[0].clone(),
            explanation: self.form_explanation(&accepted),
            accepted,
        }
    }

    fn conjugation(&self) -> Exercise {
        let mut tense = tense_label(self.tense()).to_owned();
        if is_ra_se(self.tense()) {
            tense.push_str(" (-ra or -se)");
        }
        Exercise {
            prompt: self.prompt_with_hint(),
            instructions: format!(
                "Conjugate {} ({}) in the {tense}.",
                self.phrase.display,
                person_label(self.person)
            ),
            ..self.base(ExerciseType::Conjugation)
        }
    }

    fn sequence(&self) -> Exercise {
        let hint = match self.frame.tense {
            FrameTense::PresentPerfectSubjunctive => "the action is already completed",
            FrameTense::PluperfectSubjunctive => "the action happened before the main verb",
            _ => "let the main verb decide the tense",
        };
        Exercise {
            prompt: self.prompt_with_hint(),
            instructions: format!(
                "Complete with the subjunctive of {} ({}): {hint}.",
                self.phrase.display,
                person_label(self.person)
            ),
            ..self.base(ExerciseType::SequenceOfTenses)
        }
    }

    fn mood_choice(&self) -> Exercise {
        let base = self.base(ExerciseType::MoodChoice);
        let other = self.other_mood_form();
        let choices = if (self.hash >> 24).is_multiple_of(2) {
            vec![base.answer.clone(), other]
        } else {
            vec![other, base.answer.clone()]
        };
        Exercise {
            prompt: self.prompt_with_hint(),
            instructions: format!(
                "Indicative or subjunctive? Choose the form of {} that fits.",
                self.phrase.display
            ),
            choices,
            ..base
        }
    }

    fn trigger_category(&self, category: TriggerCategory) -> Exercise {
        let base = self.base(ExerciseType::TriggerCategory);
        let form = base.answer.clone();
        let slug = base.slug.clone();
        let rank =
            |c: &TriggerCategory, salt: &str| fnv1a(format!("{slug}{salt}{}", c.key()).as_bytes());
        let mut distractors = distractors(category, |c| rank(c, "#"));
        distractors.push(category);
        distractors.sort_by_key(|c| rank(c, "@"));
        let marked = self.sentence.replacen("___", &format!("[{form}]"), 1);
        Exercise {
            prompt: format!("{marked} → ___"),
            instructions: format!("What makes [{form}] subjunctive here? Choose the trigger."),
            choices: distractors.iter().map(|c| c.key().to_owned()).collect(),
            answer: category.key().to_owned(),
            accepted: vec![category.key().to_owned()],
            explanation: format!(
                "«{}» {} ({}), which is why «{form}» is in the {}.",
                self.trigger_words(),
                self.why(),
                category.label(),
                tense_label(self.tense())
            ),
            difficulty: trigger_difficulty(self.frame.tense),
            ..base
        }
    }

    fn trigger_words(&self) -> &str {
        self.frame.trigger_words.trim_start_matches(['¿', '¡'])
    }

    fn why(&self) -> String {
        if let Some(why) = &self.frame.why {
            return why.clone();
        }
        match self.frame.context {
            Context::Trigger(c) if self.frame.tense.is_past() => {
                format!("{}, with the main verb in the past", c.reason())
            }
            Context::Trigger(c) => c.reason().to_owned(),
            // Indicative frames always say why (checked by the tests).
            Context::Indicative => "states a fact".to_owned(),
        }
    }

    /// The explanation of a form answer (conjugation, sequence, mood choice).
    fn form_explanation(&self, accepted: &[String]) -> String {
        let display = &self.phrase.display;
        let forms = accepted
            .iter()
            .map(|f| format!("«{f}»"))
            .collect::<Vec<_>>()
            .join(" or ");
        if self.frame.context == Context::Indicative {
            return format!(
                "«{}» {}, so the verb stays in the indicative: {display} → {forms} (not the subjunctive «{}»).",
                self.trigger_words(),
                self.why(),
                self.other_mood_form()
            );
        }
        let rule = match self.frame.tense {
            FrameTense::PresentPerfectSubjunctive => {
                "a completed action goes in the present perfect subjunctive"
            }
            FrameTense::ImperfectSubjunctive => "the verb goes in the imperfect subjunctive",
            FrameTense::PluperfectSubjunctive => {
                "an earlier action goes in the pluperfect subjunctive"
            }
            _ => "the verb goes in the present subjunctive",
        };
        format!(
            "«{}» {}, so {rule}: {display} → {forms}{}.",
            self.trigger_words(),
            self.why(),
            self.form_note()
        )
    }

    /// Why the form looks the way it does, for the subjunctive answers.
    fn form_note(&self) -> String {
        let c = &self.verb.conjugation;
        let p = self.person;
        match self.frame.tense {
            FrameTense::PresentSubjunctive => self.present_subjunctive_note(),
            FrameTense::ImperfectSubjunctive => format!(
                " (built on the preterite «{}»)",
                c.form(Tense::PreteriteIndicative, Person::Ellos)
            ),
            FrameTense::PresentPerfectSubjunctive | FrameTense::PluperfectSubjunctive => {
                let aux = if self.frame.tense == FrameTense::PresentPerfectSubjunctive {
                    spanish::HABER_PRESENT_SUBJUNCTIVE[p as usize]
                } else {
                    spanish::HABER_IMPERFECT_RA[p as usize]
                };
                let regular = ["ado", "ido", "ído"]
                    .iter()
                    .any(|end| c.participle.ends_with(end));
                let irregular = if !regular {
                    "irregular participle"
                } else {
                    "participle"
                };
                format!(" ({aux} + {irregular} «{}»)", c.participle)
            }
            _ => String::new(),
        }
    }

    fn present_subjunctive_note(&self) -> String {
        let c = &self.verb.conjugation;
        let p = self.person;
        let form = c.form(Tense::PresentSubjunctive, p);
        let profile = &self.verb.profile;
        let infinitive = &c.infinitive;
        if profile.irregular {
            let yo = c.form(Tense::PresentIndicative, Person::Yo);
            let stem = yo
                .strip_suffix('o')
                .filter(|s| form.starts_with(s) && !infinitive.starts_with(s));
            let as_regular = self.verb.regularized.form(Tense::PresentSubjunctive, p);
            return match stem {
                Some(stem) => format!(" (irregular: yo {yo} → {stem}-)"),
                // poder → podamos: the irregular stem is only in some persons.
                None if as_regular == form => String::new(),
                None => " (irregular subjunctive)".to_owned(),
            };
        }
        let respelled = self.verb.naive.form(Tense::PresentSubjunctive, p) != form;
        let mut notes = Vec::new();
        if profile.stem_change != StemChange::None {
            let changed = self.verb.regularized.form(Tense::PresentSubjunctive, p) != form;
            let label = stem_change_label(profile, infinitive);
            if matches!(p, Person::Nosotros | Person::Vosotros) {
                if changed && infinitive.ends_with("ir") {
                    let raised = if label.starts_with('o') {
                        "o → u"
                    } else {
                        "e → i"
                    };
                    notes.push(format!(
                        "-ir stem change {raised} also in nosotros/vosotros"
                    ));
                } else {
                    notes.push(format!("no {label} change in nosotros/vosotros"));
                }
            } else {
                notes.push(format!("stem change {label}"));
            }
        }
        if respelled {
            notes.push(format!("spelling {}", spelling_rule(infinitive)));
        }
        if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        }
    }

    fn difficulty(&self, kind: ExerciseType) -> u8 {
        let class: u8 = match self.verb.profile.class() {
            VerbClass::Regular => 0,
            VerbClass::SpellingChange | VerbClass::StemChange => 1,
            VerbClass::Irregular => 2,
        };
        let tense: u8 = match self.frame.tense {
            FrameTense::PresentSubjunctive | FrameTense::PresentIndicative => 0,
            FrameTense::PluperfectSubjunctive => 2,
            _ => 1,
        };
        let score = match kind {
            ExerciseType::Conjugation => 1 + class + tense,
            ExerciseType::SequenceOfTenses => 2 + class + tense,
            // Only what the learner sees, whichever mood is right: the time
            // of the two forms offered (the same for both) and whether the
            // verb is irregular (its class tags are shown). Every mood choice
            // is a contrast, hence the 2. Grading indicative contexts harder
            // would tell which items have an indicative answer.
            ExerciseType::MoodChoice => 2 + tense + u8::from(class == 2),
            ExerciseType::TriggerCategory => 1,
        };
        score.clamp(1, 5)
    }

    fn tags(&self) -> Vec<String> {
        let mut tags = vec![format!("tense:{}", self.tense().key())];
        match self.frame.context {
            Context::Trigger(c) => tags.push(format!("trigger:{}", c.key())),
            Context::Indicative => tags.push("context:indicative".to_owned()),
        }
        for class in self.verb.profile.classes() {
            tags.push(format!("class:{}", class.key()));
        }
        let mood = if self.tense().is_subjunctive() {
            "subjunctive"
        } else {
            "indicative"
        };
        tags.push(format!("mood:{mood}"));
        tags.push(format!("person:{}", self.person.key()));
        tags.push(format!("frame:{}", self.frame.id));
        tags
    }
}

const fn is_ra_se(tense: Tense) -> bool {
    matches!(
        tense,
        Tense::ImperfectSubjunctiveRa
            | Tense::ImperfectSubjunctiveSe
            | Tense::PluperfectSubjunctive
    )
}

/// Categories too close to offer as a distractor for each other (*ojalá*
/// is a wish; *es una lástima* is an emotion put impersonally…).
fn confusable(a: TriggerCategory, b: TriggerCategory) -> bool {
    use TriggerCategory::*;
    let pair = |x, y| (a == x && b == y) || (a == y && b == x);
    pair(Wish, Recommendation)
        || pair(Wish, Ojala)
        || pair(Impersonal, Emotion)
        || pair(Impersonal, DoubtDenial)
}

/// Three distractors for `answer`, the first by `rank` among the sets in
/// which no two categories (the answer included) are confusable. Distractors
/// are never confusable with the answer, so if two of them could be confusable
/// with each other, a learner could rule out both and narrow the choice
/// without reading the sentence.
fn distractors(
    answer: TriggerCategory,
    rank: impl Fn(&TriggerCategory) -> u64,
) -> Vec<TriggerCategory> {
    let fits = |c: TriggerCategory| c != answer && !confusable(answer, c);
    let candidates: Vec<TriggerCategory> = TriggerCategory::ALL
        .into_iter()
        .filter(|&c| fits(c))
        .collect();
    let mut best: Option<(u64, Vec<TriggerCategory>)> = None;
    for (i, &a) in candidates.iter().enumerate() {
        for (j, &b) in candidates.iter().enumerate().skip(i + 1) {
            for &c in candidates.iter().skip(j + 1) {
                if confusable(a, b) || confusable(a, c) || confusable(b, c) {
                    continue;
                }
                let score = rank(&a).wrapping_add(rank(&b)).wrapping_add(rank(&c));
                if best.as_ref().is_none_or(|(s, _)| score < *s) {
                    best = Some((score, vec![a, b, c]));
                }
            }
        }
    }
    // Every category has such a set (checked by the tests); the fallback
    // only keeps the function total.
    best.map_or_else(|| candidates.into_iter().take(3).collect(), |(_, set)| set)
}

/// The difficulty of naming a trigger: from the time of the (shown)
/// subjunctive form only. Grading the categories themselves (wish easy, doubt
/// hard) would make the shown difficulty name the answer.
fn trigger_difficulty(tense: FrameTense) -> u8 {
    (2 + u8::from(tense.is_past())
        + u8::from(matches!(
            tense,
            FrameTense::PresentPerfectSubjunctive | FrameTense::PluperfectSubjunctive
        )))
    .min(5)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};
    use std::sync::LazyLock;

    use super::*;
    use crate::spanish::checker::{AccentPolicy, Outcome, check, normalize};

    static BANK: LazyLock<Vec<Exercise>> = LazyLock::new(|| match build() {
        Ok(bank) => bank,
        Err(e) => panic!("{e}"),
    });

    fn of_kind(kind: ExerciseType) -> impl Iterator<Item = &'static Exercise> {
        BANK.iter().filter(move |e| e.kind == kind)
    }

    #[test]
    fn the_bank_has_at_least_2000_exercises_and_250_of_each_type() {
        assert!(BANK.len() >= 2_000, "{} exercises", BANK.len());
        for kind in ExerciseType::ALL {
            let n = of_kind(kind).count();
            assert!(n >= 250, "{}: {n}", kind.key());
        }
    }

    #[test]
    fn slugs_are_unique_well_formed_and_short() {
        let mut seen = HashSet::new();
        for e in BANK.iter() {
            assert!(seen.insert(e.slug.as_str()), "duplicate slug {}", e.slug);
            assert!(e.slug.len() <= MAX_SLUG_LEN, "{}", e.slug);
            assert!(
                e.slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{}",
                e.slug
            );
            assert!(!e.slug.starts_with('-') && !e.slug.ends_with('-') && !e.slug.contains("--"));
        }
    }

    #[test]
    fn slugs_are_stable_for_known_sentences() {
        let find = |slug: &str| BANK.iter().find(|e| e.slug == slug);
        let e = find("conj-te-llamare-cuando-llegar-yo").expect("pinned slug exists");
        assert_eq!(e.prompt, "Te llamaré cuando ___ (llegar) a casa.");
        assert_eq!(e.answer, "llegue");
        let e = find("seq-habla-como-si-tener-el").expect("pinned slug exists");
        assert_eq!(e.accepted, ["tuviera", "tuviese"]);
    }

    #[test]
    fn kind_and_prompt_pairs_are_unique() {
        let mut seen = HashSet::new();
        for e in BANK.iter() {
            assert!(
                seen.insert((e.kind, e.prompt.as_str())),
                "duplicate {} prompt {}",
                e.kind.key(),
                e.prompt
            );
        }
    }

    #[test]
    fn every_prompt_has_exactly_one_blank() {
        for e in BANK.iter() {
            assert_eq!(e.prompt.matches("___").count(), 1, "{}", e.prompt);
            assert!(
                !e.prompt.contains('{') && !e.prompt.contains('}'),
                "{}",
                e.prompt
            );
            assert!(!e.prompt.contains("  "), "{}", e.prompt);
        }
    }

    #[test]
    fn the_answer_is_the_first_accepted_form() {
        for e in BANK.iter() {
            assert_eq!(e.accepted.first(), Some(&e.answer), "{}", e.slug);
            let unique: HashSet<_> = e.accepted.iter().collect();
            assert_eq!(unique.len(), e.accepted.len(), "{}", e.slug);
        }
    }

    #[test]
    fn accepted_answers_are_the_engines_forms() {
        for e in BANK
            .iter()
            .filter(|e| e.kind != ExerciseType::TriggerCategory)
        {
            let c = spanish::conjugate(&e.infinitive).expect("bank verbs conjugate");
            assert_eq!(e.accepted, c.accepted(e.tense, e.person), "{}", e.slug);
            if matches!(
                e.tense,
                Tense::ImperfectSubjunctiveRa | Tense::PluperfectSubjunctive
            ) {
                assert!(e.accepted.len() >= 2, "-ra and -se in {}", e.slug);
                assert!(e.accepted.iter().any(|a| a.contains("se")), "{}", e.slug);
            }
        }
    }

    #[test]
    fn free_text_types_are_subjunctive_and_have_no_choices() {
        for e in BANK.iter().filter(|e| e.kind.is_free_text()) {
            assert!(e.choices.is_empty(), "{}", e.slug);
            assert!(e.tense.is_subjunctive(), "{}", e.slug);
            assert!(e.trigger.is_some(), "{}", e.slug);
        }
        for e in of_kind(ExerciseType::SequenceOfTenses) {
            assert_ne!(e.tense, Tense::PresentSubjunctive, "{}", e.slug);
        }
    }

    #[test]
    fn choices_contain_the_answer_once_and_are_distinct() {
        for e in BANK.iter().filter(|e| !e.kind.is_free_text()) {
            let n = e.choices.iter().filter(|c| **c == e.answer).count();
            assert_eq!(n, 1, "{}", e.slug);
            let folded: HashSet<String> = e
                .choices
                .iter()
                .map(|c| spanish::checker::fold_accents(c))
                .collect();
            assert_eq!(folded.len(), e.choices.len(), "{}", e.slug);
        }
        for e in of_kind(ExerciseType::MoodChoice) {
            assert_eq!(e.choices.len(), 2, "{}", e.slug);
        }
        for e in of_kind(ExerciseType::TriggerCategory) {
            assert_eq!(e.choices.len(), 4, "{}", e.slug);
            assert!(
                e.choices
                    .iter()
                    .all(|c| TriggerCategory::from_key(c).is_some())
            );
            assert_eq!(e.trigger.map(|t| t.key()), Some(e.answer.as_str()));
            assert!(e.tense.is_subjunctive());
        }
    }

    #[test]
    fn mood_choices_are_about_a_third_indicative_and_not_always_in_one_order() {
        let moods: Vec<&Exercise> = of_kind(ExerciseType::MoodChoice).collect();
        let indicative = moods.iter().filter(|e| !e.tense.is_subjunctive()).count();
        let share = indicative as f64 / moods.len() as f64;
        assert!(
            (0.25..=0.45).contains(&share),
            "{indicative}/{}",
            moods.len()
        );
        let answer_first = moods.iter().filter(|e| e.choices[0] == e.answer).count();
        let share = answer_first as f64 / moods.len() as f64;
        assert!((0.35..=0.65).contains(&share), "answer first {share}");
        for e in moods.iter().filter(|e| !e.tense.is_subjunctive()) {
            assert_eq!(e.trigger, None, "{}", e.slug);
        }
    }

    #[test]
    fn difficulty_is_1_to_5_and_every_level_is_used() {
        let mut levels: BTreeMap<u8, usize> = BTreeMap::new();
        for e in BANK.iter() {
            assert!((1..=5).contains(&e.difficulty), "{}", e.slug);
            *levels.entry(e.difficulty).or_default() += 1;
        }
        assert_eq!(levels.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        for (&level, &n) in &levels {
            assert!(n >= 50, "level {level}: {n}");
        }
    }

    /// What a learner can tell about the time of a choice exercise's forms
    /// without knowing the answer: both options of a mood choice share it, and
    /// a trigger question shows its (subjunctive) form.
    fn visible_time(tense: Tense) -> u8 {
        match tense {
            Tense::PresentSubjunctive | Tense::PresentIndicative => 0,
            Tense::PluperfectSubjunctive => 2,
            _ => 1,
        }
    }

    /// Difficulty is shown with every exercise and is a filter, so for the
    /// choice types it must not depend on which choice is right: a function of
    /// what the learner sees (the verb's class tags, the time of the forms
    /// offered). It used to add a point for indicative contexts (mood choice)
    /// and grade trigger categories (wish 1 … doubt 3), which singled out the
    /// answer of many items.
    #[test]
    fn a_choice_exercises_difficulty_does_not_depend_on_its_answer() {
        // (type, irregular verb, time of the forms) -> (difficulties, answers)
        type Seen<'a> = (BTreeSet<u8>, BTreeSet<&'a str>);
        let mut by_visible: BTreeMap<(&str, bool, u8), Seen> = BTreeMap::new();
        for e in BANK.iter().filter(|e| !e.kind.is_free_text()) {
            let irregular = e.tags.iter().any(|t| t == "class:irregular");
            let time = visible_time(e.tense);
            let (levels, answers) = by_visible
                .entry((e.kind.key(), irregular, time))
                .or_default();
            levels.insert(e.difficulty);
            let answer_class = match e.kind {
                ExerciseType::MoodChoice if e.tense.is_subjunctive() => "subjunctive",
                ExerciseType::MoodChoice => "indicative",
                _ => e.answer.as_str(),
            };
            answers.insert(answer_class);
        }
        let mut mixed = 0;
        for (visible, (levels, answers)) in &by_visible {
            assert_eq!(
                levels.len(),
                1,
                "{visible:?}: difficulties {levels:?} for answers {answers:?}"
            );
            if answers.len() > 1 {
                mixed += 1;
            }
        }
        assert!(mixed >= 4, "the check is not vacuous: {by_visible:?}");
    }

    /// Two confusable categories are never offered together: distractors are
    /// not confusable with the answer, so if they could be confusable with each
    /// other, a learner could rule out both members of such a pair and narrow
    /// the choice without reading the sentence.
    #[test]
    fn trigger_choices_never_offer_two_confusable_categories() {
        for e in of_kind(ExerciseType::TriggerCategory) {
            let offered: Vec<TriggerCategory> = e
                .choices
                .iter()
                .filter_map(|c| TriggerCategory::from_key(c))
                .collect();
            for (i, a) in offered.iter().enumerate() {
                for b in &offered[i + 1..] {
                    assert!(
                        !confusable(*a, *b),
                        "{}: {} and {} offered together",
                        e.slug,
                        a.key(),
                        b.key()
                    );
                }
            }
        }
    }

    #[test]
    fn every_category_has_three_distractors_none_confusable() {
        for answer in TriggerCategory::ALL {
            let set = distractors(answer, |c| fnv1a(c.key().as_bytes()));
            assert_eq!(set.len(), 3, "{}", answer.key());
            let offered: Vec<TriggerCategory> = set.iter().copied().chain([answer]).collect();
            for (i, a) in offered.iter().enumerate() {
                for b in &offered[i + 1..] {
                    assert!(a != b && !confusable(*a, *b), "{} {}", a.key(), b.key());
                }
            }
        }
    }

    #[test]
    fn at_least_150_frames_are_used() {
        let frames: BTreeSet<&str> = BANK
            .iter()
            .flat_map(|e| e.tags.iter())
            .filter_map(|t| t.strip_prefix("frame:"))
            .collect();
        assert!(frames.len() >= 150, "{} frames", frames.len());
        let all = frames::frames().expect("parses");
        assert_eq!(frames.len(), all.len(), "every frame yields exercises");
        for frame in all.iter().filter(|f| f.context == Context::Indicative) {
            assert!(
                frame.why.is_some(),
                "indicative frame {} says why",
                frame.id
            );
        }
    }

    #[test]
    fn every_trigger_category_and_verb_class_is_represented() {
        for category in TriggerCategory::ALL {
            let n = BANK.iter().filter(|e| e.trigger == Some(category)).count();
            assert!(n >= 100, "{}: {n}", category.key());
        }
        for class in VerbClass::ALL {
            let tag = format!("class:{}", class.key());
            let n = BANK.iter().filter(|e| e.tags.contains(&tag)).count();
            assert!(n >= 200, "{tag}: {n}");
        }
        let verbs: HashSet<&str> = BANK.iter().map(|e| e.infinitive.as_str()).collect();
        for verb in [
            "ser",
            "ir",
            "haber",
            "estar",
            "dar",
            "saber",
            "tener",
            "venir",
            "poner",
            "salir",
            "hacer",
            "decir",
            "traer",
            "oír",
            "conducir",
            "caber",
            "valer",
            "caer",
            "pensar",
            "volver",
            "dormir",
            "sentir",
            "pedir",
            "jugar",
            "buscar",
            "llegar",
            "empezar",
            "coger",
            "averiguar",
            "construir",
            "conocer",
            "enviar",
            "actuar",
            "reunir",
            "distinguir",
            "leer",
            "reír",
        ] {
            assert!(verbs.contains(verb), "{verb} is drilled");
        }
    }

    #[test]
    fn the_bank_is_deterministic() {
        assert_eq!(build().expect("builds"), *BANK);
    }

    #[test]
    fn the_checker_accepts_every_answer_and_every_accepted_form() {
        for e in BANK.iter() {
            for answer in std::iter::once(&e.answer).chain(&e.accepted).chain(
                // The choice text of the right option too.
                e.choices.iter().filter(|c| **c == e.answer),
            ) {
                let v = check(&e.expected(), answer, AccentPolicy::Strict);
                assert_eq!(v.outcome, Outcome::Correct, "{} {answer}", e.slug);
            }
        }
    }

    #[test]
    fn the_checker_rejects_the_other_option_of_every_choice() {
        for e in BANK.iter().filter(|e| !e.kind.is_free_text()) {
            for wrong in e.choices.iter().filter(|c| **c != e.answer) {
                let v = check(&e.expected(), wrong, AccentPolicy::Warn);
                assert_eq!(v.outcome, Outcome::Incorrect, "{} {wrong}", e.slug);
            }
        }
    }

    #[test]
    fn no_prompt_or_instructions_leak_the_answer() {
        let words = |text: &str| -> String {
            format!(
                " {} ",
                normalize(&text.replace(['.', ',', '?', '!', '¿', '¡', '[', ']', '(', ')'], " "))
            )
        };
        for e in BANK.iter() {
            let needles: Vec<String> = match e.kind {
                ExerciseType::TriggerCategory => vec![e.answer.clone()],
                _ => e.accepted.iter().map(|a| format!(" {a} ")).collect(),
            };
            for text in [&e.prompt, &e.instructions] {
                let hay = words(text);
                for needle in &needles {
                    assert!(
                        !hay.contains(needle.as_str()),
                        "{}: {needle:?} in {text}",
                        e.slug
                    );
                }
            }
        }
    }

    #[test]
    fn text_fits_the_database_columns_and_explanations_name_the_answer() {
        for e in BANK.iter() {
            assert!(e.prompt.chars().count() <= MAX_PROMPT_LEN, "{}", e.prompt);
            assert!(
                e.instructions.chars().count() <= MAX_INSTRUCTIONS_LEN,
                "{}",
                e.instructions
            );
            assert!(
                e.explanation.chars().count() <= MAX_EXPLANATION_LEN,
                "{}",
                e.explanation
            );
            assert!(e.explanation.contains('«'), "{}", e.explanation);
            if e.kind != ExerciseType::TriggerCategory {
                assert!(
                    e.explanation.contains(&format!("«{}»", e.answer)),
                    "{}",
                    e.slug
                );
            }
            assert!(e.tags.contains(&format!("tense:{}", e.tense.key())));
        }
    }
}
