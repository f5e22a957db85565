//! Answer checking with feedback a learner can act on (pure, no I/O).
//!
//! [`check`] needs only what an exercise row stores ([`Expected`]): the
//! verb, person and tense the blank tests, the accepted answers and, for
//! multiple-choice exercises, the options. A free-text answer that is not
//! accepted is diagnosed against the verb's own table: another person,
//! the indicative, another tense, a missed stem or spelling change, a
//! regularized irregular verb, or a one-letter typo.
//!
//! Order of the verdicts: an exact accepted form is correct; an answer that
//! is exactly *another* real form of the verb is diagnosed as that form even
//! when it differs only by an accent (*hablé* for *hable* is the preterite,
//! not a missing accent); otherwise an answer equal to an accepted form up to
//! accents is an [`Outcome::AccentMismatch`] (*ñ* vs *n* and *ü* vs *u* are
//! spelling mistakes, not accents).

use serde::{Deserialize, Serialize};

use super::triggers::TriggerCategory;
use super::{Conjugation, HABER_IMPERFECT_SE, Person, StemChange, Tense, VerbProfile};

/// What an exercise expects, as stored in its database row.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    /// `false` for `mood_choice` and `trigger_category` (the answer is one of `choices`).
    pub free_text: bool,
    pub infinitive: &'a str,
    pub person: Person,
    /// The tense of the correct answer (indicative for some `mood_choice` items).
    pub tense: Tense,
    pub trigger: Option<TriggerCategory>,
    /// Every accepted answer, canonical first.
    pub accepted: &'a [String],
    /// The options shown; empty for free text.
    pub choices: &'a [String],
}

/// How accent-only mistakes are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccentPolicy {
    /// Accepted, with a warning naming the accent.
    #[default]
    Warn,
    /// Counted as incorrect.
    Strict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Correct,
    /// Right but for a written accent.
    AccentMismatch,
    Incorrect,
}

/// The diagnosed kind of mistake of an incorrect answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCategory {
    /// The same tense for another person (*tengas* for *tenga*).
    WrongPerson,
    /// Another tense of the same mood family (*tuviera* for *tenga*).
    WrongTense,
    /// The indicative where the trigger needs the subjunctive (*tengo* for *tenga*).
    IndicativeInsteadOfSubjunctive,
    /// The subjunctive where nothing triggers it (*venga* for *viene*).
    SubjunctiveInsteadOfIndicative,
    /// The stem kept unchanged (*pense* for *piense*, *dormamos* for *durmamos*).
    MissedStemChange,
    /// The letters not adjusted to keep the sound (*busce*, *coga*, *construa*).
    MissedSpellingChange,
    /// An irregular verb conjugated as if regular (*tena*, *haciera*, *haya hacido*).
    RegularizedIrregular,
    /// One letter away from an accepted answer.
    Typo,
    /// A multiple-choice answer that is not the right option.
    WrongChoice,
    /// Nothing recognisable (or no answer at all).
    Unrecognized,
}

impl ErrorCategory {
    pub const ALL: [ErrorCategory; 10] = [
        ErrorCategory::WrongPerson,
        ErrorCategory::WrongTense,
        ErrorCategory::IndicativeInsteadOfSubjunctive,
        ErrorCategory::SubjunctiveInsteadOfIndicative,
        ErrorCategory::MissedStemChange,
        ErrorCategory::MissedSpellingChange,
        ErrorCategory::RegularizedIrregular,
        ErrorCategory::Typo,
        ErrorCategory::WrongChoice,
        ErrorCategory::Unrecognized,
    ];

    /// The wire key (same as serde's).
    pub const fn key(self) -> &'static str {
        match self {
            ErrorCategory::WrongPerson => "wrong_person",
            ErrorCategory::WrongTense => "wrong_tense",
            ErrorCategory::IndicativeInsteadOfSubjunctive => "indicative_instead_of_subjunctive",
            ErrorCategory::SubjunctiveInsteadOfIndicative => "subjunctive_instead_of_indicative",
            ErrorCategory::MissedStemChange => "missed_stem_change",
            ErrorCategory::MissedSpellingChange => "missed_spelling_change",
            ErrorCategory::RegularizedIrregular => "regularized_irregular",
            ErrorCategory::Typo => "typo",
            ErrorCategory::WrongChoice => "wrong_choice",
            ErrorCategory::Unrecognized => "unrecognized",
        }
    }

    pub fn from_key(key: &str) -> Option<ErrorCategory> {
        ErrorCategory::ALL.into_iter().find(|c| c.key() == key)
    }
}

/// The result of checking one answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub outcome: Outcome,
    /// Whether the attempt scores as correct (an accent mismatch does under
    /// [`AccentPolicy::Warn`]).
    pub counts_as_correct: bool,
    /// `None` when correct or an accent mismatch.
    pub error: Option<ErrorCategory>,
    /// One or two English sentences for the learner.
    pub explanation: String,
    /// Every accepted answer, canonical first.
    pub accepted: Vec<String>,
}

/// Checks `answer` against what the exercise expects.
pub fn check(expected: &Expected<'_>, answer: &str, policy: AccentPolicy) -> Verdict {
    let answer = normalize(answer);
    // The table is needed up front only to complete a -ra/-se pair;
    // otherwise only to diagnose a wrong typed answer.
    let conjugation = if is_ra_se(expected.tense) {
        super::conjugate(expected.infinitive).ok()
    } else {
        None
    };
    let accepted = accepted_forms(expected, conjugation.as_ref());
    if answer.is_empty() {
        return incorrect(
            ErrorCategory::Unrecognized,
            format!("No answer was given; the answer is «{}».", first(&accepted)),
            accepted,
        );
    }
    if expected.free_text {
        check_free_text(expected, conjugation, &answer, accepted, policy)
    } else {
        check_choice(expected, &answer, accepted)
    }
}

/// Trims, collapses inner whitespace, lower-cases, composes decomposed
/// Spanish accents (*e* + U+0301 → *é*) and strips surrounding punctuation
/// (`.`, `¡!`, `¿?`, quotes, brackets…).
pub fn normalize(answer: &str) -> String {
    const PUNCTUATION: &[char] = &[
        '.', ',', ';', ':', '!', '¡', '?', '¿', '"', '\'', '«', '»', '“', '”', '‘', '’', '(', ')',
        '[', ']', '…', '-', '—', '–', '*', '_',
    ];
    let lowered = answer.to_lowercase();
    let composed = super::compose(&lowered);
    let trimmed = composed.trim_matches(|c: char| c.is_whitespace() || PUNCTUATION.contains(&c));
    let mut out = String::with_capacity(trimmed.len());
    for word in trimmed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Removes written accents (*á* → *a*) but keeps *ñ* and *ü*: a missing
/// tilde or diaeresis changes the sound (*ano*, *averigue*), so it is a
/// spelling mistake, not an accent one.
pub fn fold_accents(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

fn fold_char(c: char) -> char {
    match c {
        'á' => 'a',
        'é' => 'e',
        'í' => 'i',
        'ó' => 'o',
        'ú' => 'u',
        other => other,
    }
}

/// The accepted answers, with the -ra/-se alternation always included for
/// the imperfect and pluperfect subjunctive.
fn accepted_forms(expected: &Expected<'_>, conjugation: Option<&Conjugation>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(expected.accepted.len() + 2);
    for form in expected.accepted {
        let form = normalize(form);
        if !form.is_empty() && !out.contains(&form) {
            out.push(form);
        }
    }
    if let Some(c) = conjugation {
        let engine = c.accepted(expected.tense, expected.person);
        // Only complete a pair the row already contains (a row may expect a
        // custom answer; then it is not second-guessed).
        if engine.iter().any(|f| out.contains(f)) {
            for form in engine {
                if !out.contains(&form) {
                    out.push(form);
                }
            }
        }
    }
    out
}

fn first(accepted: &[String]) -> &str {
    accepted.first().map(String::as_str).unwrap_or_default()
}

fn correct(explanation: String, accepted: Vec<String>) -> Verdict {
    Verdict {
        outcome: Outcome::Correct,
        counts_as_correct: true,
        error: None,
        explanation,
        accepted,
    }
}

fn incorrect(error: ErrorCategory, explanation: String, accepted: Vec<String>) -> Verdict {
    Verdict {
        outcome: Outcome::Incorrect,
        counts_as_correct: false,
        error: Some(error),
        explanation,
        accepted,
    }
}

// ---------------------------------------------------------------------------
// Free text

fn check_free_text(
    expected: &Expected<'_>,
    conjugation: Option<Conjugation>,
    answer: &str,
    accepted: Vec<String>,
    policy: AccentPolicy,
) -> Verdict {
    if accepted.iter().any(|a| a == answer) {
        let explanation = if accepted.len() > 1 && is_ra_se(expected.tense) {
            format!(
                "Correct: the -ra and -se forms are both right ({}).",
                quoted_list(&accepted)
            )
        } else {
            "Correct.".to_owned()
        };
        return correct(explanation, accepted);
    }
    let conjugation = conjugation.or_else(|| super::conjugate(expected.infinitive).ok());
    let table = conjugation.as_ref().map(FormTable::new);
    if let Some(table) = &table
        && let Some((error, explanation)) =
            diagnose_real_form(expected, table, answer, first(&accepted), false)
    {
        return incorrect(error, explanation, accepted);
    }
    let folded = fold_accents(answer);
    if let Some(right) = accepted.iter().find(|a| fold_accents(a) == folded) {
        let explanation = accent_explanation(answer, right, policy);
        return Verdict {
            outcome: Outcome::AccentMismatch,
            counts_as_correct: policy == AccentPolicy::Warn,
            error: None,
            explanation,
            accepted,
        };
    }
    if let Some(table) = &table {
        // A textbook mistake (pense for piense) before an accent-less real
        // form (pense as pensé): the first is far more likely.
        let found = diagnose_model_form(expected, table, answer, &accepted, false)
            .or_else(|| diagnose_real_form(expected, table, answer, first(&accepted), true))
            .or_else(|| diagnose_model_form(expected, table, answer, &accepted, true));
        if let Some((error, explanation)) = found {
            return incorrect(error, explanation, accepted);
        }
    }
    if let Some(right) = accepted
        .iter()
        .find(|a| within_one_edit(&fold_accents(a), &folded))
    {
        let explanation = format!("Almost: check the spelling, the answer is «{right}».");
        return incorrect(ErrorCategory::Typo, explanation, accepted);
    }
    let explanation = format!(
        "«{answer}» is not a form of {} that fits here; the {} ({}) is «{}».",
        expected.infinitive,
        tense_label(expected.tense),
        person_label(expected.person),
        first(&accepted)
    );
    incorrect(ErrorCategory::Unrecognized, explanation, accepted)
}

const fn is_ra_se(tense: Tense) -> bool {
    matches!(
        tense,
        Tense::ImperfectSubjunctiveRa
            | Tense::ImperfectSubjunctiveSe
            | Tense::PluperfectSubjunctive
    )
}

fn quoted_list(forms: &[String]) -> String {
    let quoted: Vec<String> = forms.iter().map(|f| format!("«{f}»")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

/// Tenses of the full table the checker recognises, beyond [`Tense`]: the
/// -se pluperfect and the two compound indicatives learners reach for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FormTense {
    Simple(Tense),
    PluperfectSubjunctiveSe,
    PresentPerfectIndicative,
    PluperfectIndicative,
}

impl FormTense {
    const ALL: [FormTense; 11] = [
        FormTense::Simple(Tense::PresentIndicative),
        FormTense::Simple(Tense::PreteriteIndicative),
        FormTense::Simple(Tense::ImperfectIndicative),
        FormTense::Simple(Tense::PresentSubjunctive),
        FormTense::Simple(Tense::ImperfectSubjunctiveRa),
        FormTense::Simple(Tense::ImperfectSubjunctiveSe),
        FormTense::Simple(Tense::PresentPerfectSubjunctive),
        FormTense::Simple(Tense::PluperfectSubjunctive),
        FormTense::PluperfectSubjunctiveSe,
        FormTense::PresentPerfectIndicative,
        FormTense::PluperfectIndicative,
    ];

    fn is_subjunctive(self) -> bool {
        match self {
            FormTense::Simple(t) => t.is_subjunctive(),
            FormTense::PluperfectSubjunctiveSe => true,
            FormTense::PresentPerfectIndicative | FormTense::PluperfectIndicative => false,
        }
    }

    /// Same tense for the learner: -ra and -se are one tense.
    fn same_as(self, tense: Tense) -> bool {
        match (self, tense) {
            (FormTense::Simple(a), b) if a == b => true,
            (
                FormTense::Simple(Tense::ImperfectSubjunctiveRa | Tense::ImperfectSubjunctiveSe),
                Tense::ImperfectSubjunctiveRa | Tense::ImperfectSubjunctiveSe,
            ) => true,
            (FormTense::PluperfectSubjunctiveSe, Tense::PluperfectSubjunctive) => true,
            _ => false,
        }
    }

    /// The indicative tenses a learner uses for the same time as `tense`.
    fn indicative_counterpart_of(self, tense: Tense) -> bool {
        match tense {
            Tense::PresentSubjunctive => self == FormTense::Simple(Tense::PresentIndicative),
            Tense::ImperfectSubjunctiveRa | Tense::ImperfectSubjunctiveSe => matches!(
                self,
                FormTense::Simple(Tense::ImperfectIndicative | Tense::PreteriteIndicative)
            ),
            Tense::PresentPerfectSubjunctive => self == FormTense::PresentPerfectIndicative,
            Tense::PluperfectSubjunctive => self == FormTense::PluperfectIndicative,
            _ => false,
        }
    }

    fn label(self) -> &'static str {
        match self {
            FormTense::Simple(t) => tense_label(t),
            FormTense::PluperfectSubjunctiveSe => "pluperfect subjunctive",
            FormTense::PresentPerfectIndicative => "present perfect indicative",
            FormTense::PluperfectIndicative => "pluperfect indicative",
        }
    }
}

/// Learner-facing tense names.
pub const fn tense_label(tense: Tense) -> &'static str {
    match tense {
        Tense::PresentIndicative => "present indicative",
        Tense::PreteriteIndicative => "preterite indicative",
        Tense::ImperfectIndicative => "imperfect indicative",
        Tense::PresentSubjunctive => "present subjunctive",
        Tense::ImperfectSubjunctiveRa | Tense::ImperfectSubjunctiveSe => "imperfect subjunctive",
        Tense::PresentPerfectSubjunctive => "present perfect subjunctive",
        Tense::PluperfectSubjunctive => "pluperfect subjunctive",
    }
}

/// Learner-facing person names.
pub const fn person_label(person: Person) -> &'static str {
    match person {
        Person::Yo => "yo",
        Person::Tu => "tú",
        Person::El => "él/ella/usted",
        Person::Nosotros => "nosotros",
        Person::Vosotros => "vosotros",
        Person::Ellos => "ellos/ellas/ustedes",
    }
}

const HABER_PRESENT_INDICATIVE: [&str; 6] = ["he", "has", "ha", "hemos", "habéis", "han"];
const HABER_IMPERFECT_INDICATIVE: [&str; 6] =
    ["había", "habías", "había", "habíamos", "habíais", "habían"];

/// Every recognised form of one verb, in [`FormTense::ALL`] × [`Person::ALL`] order.
struct FormTable<'c> {
    conjugation: &'c Conjugation,
    extra: [[String; 6]; 3],
}

impl<'c> FormTable<'c> {
    fn new(conjugation: &'c Conjugation) -> Self {
        let part = &conjugation.participle;
        let compound = |aux: [&str; 6]| aux.map(|a| format!("{a} {part}"));
        FormTable {
            conjugation,
            extra: [
                compound(HABER_IMPERFECT_SE),
                compound(HABER_PRESENT_INDICATIVE),
                compound(HABER_IMPERFECT_INDICATIVE),
            ],
        }
    }

    fn get(&self, tense: FormTense, person: Person) -> &str {
        let i = person as usize;
        match tense {
            FormTense::Simple(t) => self.conjugation.form(t, person),
            FormTense::PluperfectSubjunctiveSe => &self.extra[0][i],
            FormTense::PresentPerfectIndicative => &self.extra[1][i],
            FormTense::PluperfectIndicative => &self.extra[2][i],
        }
    }

    /// Every (tense, person) whose form equals `answer` (up to accents when `folded`).
    fn matches(&self, answer: &str, folded: bool) -> Vec<(FormTense, Person)> {
        let mut out = Vec::new();
        for tense in FormTense::ALL {
            for person in Person::ALL {
                let form = self.get(tense, person);
                let hit = if folded {
                    fold_accents(form) == answer
                } else {
                    form == answer
                };
                if hit {
                    out.push((tense, person));
                }
            }
        }
        out
    }
}

/// The answer is a real form of the verb, just not the one asked for.
fn diagnose_real_form(
    expected: &Expected<'_>,
    table: &FormTable<'_>,
    answer: &str,
    right: &str,
    folded: bool,
) -> Option<(ErrorCategory, String)> {
    let probe = if folded {
        fold_accents(answer)
    } else {
        answer.to_owned()
    };
    let mut hits = table.matches(&probe, folded);
    // The asked-for cell itself (a row whose accepted answers differ from
    // the engine's) is not a mistake of tense or person.
    hits.retain(|(t, p)| !(*p == expected.person && t.same_as(expected.tense)));
    if hits.is_empty() {
        return None;
    }
    let want_subjunctive = expected.tense.is_subjunctive();
    let same_person = |&&(_, p): &&(FormTense, Person)| p == expected.person;
    let trigger = trigger_clause(expected.trigger);

    // Another person of the same tense.
    if let Some(&(tense, person)) = hits
        .iter()
        .find(|(t, p)| *p != expected.person && t.same_as(expected.tense))
    {
        return Some((
            ErrorCategory::WrongPerson,
            format!(
                "«{answer}» is the {} form for {}; the subject here is {}, so the answer is «{right}».",
                tense.label(),
                person_label(person),
                person_label(expected.person)
            ),
        ));
    }
    let indicative_for_subjunctive = |tense: FormTense| {
        want_subjunctive
            && !tense.is_subjunctive()
            && tense.indicative_counterpart_of(expected.tense)
    };
    let subjunctive_for_indicative = |tense: FormTense| !want_subjunctive && tense.is_subjunctive();
    // Same person first, then any person.
    for restrict in [true, false] {
        let candidates: Vec<&(FormTense, Person)> = if restrict {
            hits.iter().filter(same_person).collect()
        } else {
            hits.iter().collect()
        };
        let whose = |person: Person| {
            if person == expected.person {
                String::new()
            } else {
                format!(" ({} form)", person_label(person))
            }
        };
        if let Some(&&(tense, person)) = candidates
            .iter()
            .find(|(t, _)| indicative_for_subjunctive(*t))
        {
            return Some((
                ErrorCategory::IndicativeInsteadOfSubjunctive,
                format!(
                    "«{answer}» is the {}{}; {trigger} the verb must be in the subjunctive: «{right}».",
                    tense.label(),
                    whose(person)
                ),
            ));
        }
        if let Some(&&(tense, person)) = candidates
            .iter()
            .find(|(t, _)| subjunctive_for_indicative(*t))
        {
            return Some((
                ErrorCategory::SubjunctiveInsteadOfIndicative,
                format!(
                    "«{answer}» is the {}{}, but nothing here triggers the subjunctive (the sentence states a fact, a belief or a habit), so the {} «{right}» is right.",
                    tense.label(),
                    whose(person),
                    tense_label(expected.tense)
                ),
            ));
        }
        if let Some(&&(tense, person)) = candidates.first() {
            let needed = if want_subjunctive {
                format!("{trigger} the {} is needed", tense_label(expected.tense))
            } else {
                format!("the {} is needed", tense_label(expected.tense))
            };
            return Some((
                ErrorCategory::WrongTense,
                format!(
                    "«{answer}» is the {}{}; {needed}: «{right}».",
                    tense.label(),
                    whose(person)
                ),
            ));
        }
    }
    None
}

fn trigger_clause(trigger: Option<TriggerCategory>) -> String {
    match trigger {
        Some(t) => format!("after a trigger of {}", t.label()),
        None => "here".to_owned(),
    }
}

/// The answer follows the verb's model too literally: a missed stem change,
/// a missed spelling change or a regularized irregular form.
fn diagnose_model_form(
    expected: &Expected<'_>,
    table: &FormTable<'_>,
    answer: &str,
    accepted: &[String],
    folded: bool,
) -> Option<(ErrorCategory, String)> {
    let infinitive = &table.conjugation.infinitive;
    let profile = super::profile(infinitive).ok()?;
    let probe = if folded {
        fold_accents(answer)
    } else {
        answer.to_owned()
    };
    let same = |form: &str| {
        if folded {
            fold_accents(form) == probe
        } else {
            form == probe
        }
    };
    let right = first(accepted);
    let is_accepted = |f: &str| accepted.iter().any(|a| fold_accents(a) == fold_accents(f));
    let hit = |c: &Conjugation| {
        model_forms(c, expected.tense, expected.person)
            .into_iter()
            .any(|f| same(&f) && !is_accepted(&f))
    };
    let regularized = super::conjugate_regularized(infinitive).ok();
    let naive_plain = super::conjugate_naive(infinitive, false).ok();
    let regularized_hit =
        regularized.as_ref().is_some_and(hit) || naive_plain.as_ref().is_some_and(hit);
    let regularized_irregular = |what: String| {
        Some((
            ErrorCategory::RegularizedIrregular,
            format!(
                "{infinitive} does not follow the regular pattern here, {what}: the answer is «{right}», not «{answer}»."
            ),
        ))
    };
    // haya volvido, hubiera ponido: the participle is the irregular part.
    let participle_regularized = expected.tense.is_compound()
        && naive_plain
            .as_ref()
            .is_some_and(|n| n.participle != table.conjugation.participle);
    if participle_regularized && regularized_hit {
        return regularized_irregular(format!(
            "its participle is irregular ({})",
            table.conjugation.participle
        ));
    }
    if profile.stem_change != StemChange::None && !profile.irregular && regularized_hit {
        return Some((
            ErrorCategory::MissedStemChange,
            format!(
                "{infinitive} changes its stem ({}): the answer is «{right}», not «{answer}».",
                stem_change_label(&profile, infinitive)
            ),
        ));
    }
    let naive_stem = super::conjugate_naive(infinitive, true).ok();
    if profile.spelling_change && !profile.irregular && naive_stem.as_ref().is_some_and(hit) {
        return Some((
            ErrorCategory::MissedSpellingChange,
            format!(
                "{infinitive} changes its spelling to keep its sound ({}): write «{right}», not «{answer}».",
                spelling_rule(infinitive)
            ),
        ));
    }
    let infinitive_based = infinitive_based_forms(infinitive, expected.tense, expected.person)
        .iter()
        .any(|f| same(f));
    if profile.irregular && (regularized_hit || infinitive_based) {
        return regularized_irregular("it is irregular".to_owned());
    }
    None
}

/// The forms of `tense` (both -ra and -se for the past subjunctive) for `person`.
fn model_forms(c: &Conjugation, tense: Tense, person: Person) -> Vec<String> {
    c.accepted(tense, person)
}

/// Past subjunctive built on the infinitive (*hacer* → *hacera*, *tener* →
/// *tenera*), a common over-regularization of irregular preterite stems.
fn infinitive_based_forms(infinitive: &str, tense: Tense, person: Person) -> Vec<String> {
    if !matches!(
        tense,
        Tense::ImperfectSubjunctiveRa | Tense::ImperfectSubjunctiveSe
    ) {
        return Vec::new();
    }
    let Some(base) = infinitive.strip_suffix('r') else {
        return Vec::new();
    };
    let ra = ["ra", "ras", "ra", "ramos", "rais", "ran"];
    let se = ["se", "ses", "se", "semos", "seis", "sen"];
    let i = person as usize;
    vec![format!("{base}{}", ra[i]), format!("{base}{}", se[i])]
}

/// "e → ie" etc., for feedback.
pub fn stem_change_label(profile: &VerbProfile, infinitive: &str) -> &'static str {
    let stem = infinitive
        .get(..infinitive.len().saturating_sub(2))
        .unwrap_or_default();
    match profile.stem_change {
        StemChange::None => "none",
        StemChange::Ie if !stem.contains('e') => "i → ie",
        StemChange::Ie => "e → ie",
        StemChange::Ue if !stem.contains('o') => "u → ue",
        StemChange::Ue => "o → ue",
        StemChange::I => "e → i",
    }
}

/// The spelling rule a verb's ending follows, for feedback.
pub fn spelling_rule(infinitive: &str) -> &'static str {
    let ends = |s: &str| infinitive.ends_with(s);
    let after_vowel_c = |len: usize| {
        infinitive
            .get(..infinitive.len().saturating_sub(len))
            .and_then(|s| s.chars().last())
            .is_some_and(|c| "aeiouáéíóú".contains(c))
    };
    if ends("guar") {
        "gu → gü before e"
    } else if ends("car") {
        "c → qu before e"
    } else if ends("gar") {
        "g → gu before e"
    } else if ends("zar") {
        "z → c before e"
    } else if ends("guir") {
        "gu → g before a and o"
    } else if ends("ger") || ends("gir") {
        "g → j before a and o"
    } else if (ends("cer") || ends("cir")) && after_vowel_c(3) {
        "c → zc before a and o"
    } else if ends("cer") || ends("cir") {
        "c → z before a and o"
    } else if ends("uir") {
        "y added before a, e and o"
    } else if ends("iar") || ends("uar") || ends("unir") || ends("ohibir") {
        "written accent on the stressed í or ú"
    } else if ends("eer") || ends("aer") || ends("oer") || ends("oír") {
        "unstressed i between vowels becomes y"
    } else {
        "letters change to keep the sound"
    }
}

fn accent_explanation(answer: &str, right: &str, policy: AccentPolicy) -> String {
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    for (a, r) in answer.chars().zip(right.chars()) {
        if a != r {
            if r != fold_char(r) {
                missing.push(r);
            } else {
                extra.push(a);
            }
        }
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        let letters: Vec<String> = missing.iter().map(|c| format!("«{c}»")).collect();
        parts.push(format!("it is written with {}", letters.join(" and ")));
    }
    if !extra.is_empty() {
        let letters: Vec<String> = extra
            .iter()
            .map(|c| format!("«{}»", fold_char(*c)))
            .collect();
        parts.push(format!("{} takes no written accent", letters.join(" and ")));
    }
    let lead = match policy {
        AccentPolicy::Warn => "Right form, but mind the accent",
        AccentPolicy::Strict => "Accents count: the answer is",
    };
    format!("{lead}: «{right}» ({}).", parts.join("; "))
}

/// At most one insertion, deletion or substitution apart.
fn within_one_edit(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short
        .iter()
        .zip(long.iter())
        .take_while(|(x, y)| x == y)
        .count();
    if short.len() == long.len() {
        prefix == short.len() || short[prefix + 1..] == long[prefix + 1..]
    } else {
        short[prefix..] == long[prefix + 1..]
    }
}

// ---------------------------------------------------------------------------
// Multiple choice

/// Compares choices leniently: case, accents, and `_`/`-`/space alike.
fn choice_key(text: &str) -> String {
    fold_accents(&normalize(text))
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

fn check_choice(expected: &Expected<'_>, answer: &str, accepted: Vec<String>) -> Verdict {
    let key = category_alias(answer).unwrap_or_else(|| choice_key(answer));
    let exact_accepted = accepted.iter().any(|a| normalize(a) == answer);
    let lenient_accepted = accepted.iter().any(|a| choice_key(a) == key);
    // A lenient match must not be another option written the same way
    // up to accents (it never is in the bank, but rows may differ).
    let clashes = expected
        .choices
        .iter()
        .any(|c| choice_key(c) == key && !accepted.iter().any(|a| choice_key(a) == choice_key(c)));
    let reason = choice_reason(expected, &accepted);
    if exact_accepted || (lenient_accepted && !clashes) {
        return correct(format!("Correct. {reason}"), accepted);
    }
    let chosen = expected
        .choices
        .iter()
        .find(|c| normalize(c) == answer)
        .or_else(|| expected.choices.iter().find(|c| choice_key(c) == key));
    let explanation = match chosen {
        Some(choice) => format!("«{choice}» is not right here. {reason}"),
        None => format!("«{answer}» is not one of the options. {reason}"),
    };
    incorrect(ErrorCategory::WrongChoice, explanation, accepted)
}

/// A trigger category given by its English label instead of its key.
fn category_alias(answer: &str) -> Option<String> {
    let key = choice_key(answer);
    TriggerCategory::ALL
        .into_iter()
        .find(|c| choice_key(c.label()) == key || c.key() == key)
        .map(|c| c.key().to_owned())
}

/// Why the right option is right.
fn choice_reason(expected: &Expected<'_>, accepted: &[String]) -> String {
    let right = first(accepted);
    if let Some(category) = TriggerCategory::from_key(right) {
        return format!(
            "The subjunctive here is triggered by {} ({right}): the main clause {}.",
            category.label(),
            category.reason()
        );
    }
    if expected.tense.is_subjunctive() {
        let cause = match expected.trigger {
            Some(t) => format!("the main clause {} ({})", t.reason(), t.label()),
            None => "the context requires it".to_owned(),
        };
        format!(
            "The subjunctive «{right}» is needed because {cause}; {} → {} {}.",
            expected.infinitive,
            tense_label(expected.tense),
            quoted_list(accepted)
        )
    } else {
        format!(
            "Nothing here triggers the subjunctive (the sentence states a fact, a belief or a habit), so the {} «{right}» is right.",
            tense_label(expected.tense)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spanish::conjugate;

    /// The accepted answers the bank would store for this cell.
    fn accepted(infinitive: &str, person: Person, tense: Tense) -> Vec<String> {
        match conjugate(infinitive) {
            Ok(c) => c.accepted(tense, person),
            Err(e) => panic!("{e}"),
        }
    }

    fn check_free(
        infinitive: &str,
        person: Person,
        tense: Tense,
        trigger: Option<TriggerCategory>,
        answer: &str,
        policy: AccentPolicy,
    ) -> Verdict {
        let accepted = accepted(infinitive, person, tense);
        let expected = Expected {
            free_text: true,
            infinitive,
            person,
            tense,
            trigger,
            accepted: &accepted,
            choices: &[],
        };
        check(&expected, answer, policy)
    }

    fn present(infinitive: &str, person: Person, answer: &str) -> Verdict {
        check_free(
            infinitive,
            person,
            Tense::PresentSubjunctive,
            Some(TriggerCategory::Wish),
            answer,
            AccentPolicy::Warn,
        )
    }

    fn error_of(verdict: &Verdict) -> Option<ErrorCategory> {
        assert!(
            !verdict.explanation.is_empty(),
            "every verdict explains itself"
        );
        verdict.error
    }

    #[test]
    fn the_accepted_form_is_correct() {
        let v = present("tener", Person::Yo, "tenga");
        assert_eq!(v.outcome, Outcome::Correct);
        assert!(v.counts_as_correct);
        assert_eq!(v.error, None);
        assert_eq!(v.accepted, vec!["tenga".to_owned()]);
    }

    #[test]
    fn case_spacing_and_punctuation_do_not_matter() {
        for answer in ["  Tenga ", "TENGA.", "¡tenga!", "«tenga»", "\ttenga\n"] {
            assert_eq!(
                present("tener", Person::Yo, answer).outcome,
                Outcome::Correct,
                "{answer:?}"
            );
        }
        let v = check_free(
            "venir",
            Person::Tu,
            Tense::PresentPerfectSubjunctive,
            None,
            "  Hayas    venido ",
            AccentPolicy::Strict,
        );
        assert_eq!(v.outcome, Outcome::Correct);
    }

    #[test]
    fn decomposed_unicode_input_equals_the_precomposed_form() {
        // e + U+0301, u + U+0301, and an upper-case decomposed Í.
        for answer in ["envi\u{301}e", "ENVI\u{301}E", "envi\u{301}e."] {
            let v = present("enviar", Person::Yo, answer);
            assert_eq!(v.outcome, Outcome::Correct, "{answer:?}");
        }
        assert_eq!(
            present("averiguar", Person::Yo, "averigu\u{308}e").outcome,
            Outcome::Correct
        );
        assert_eq!(
            present("tener", Person::Vosotros, "tenga\u{301}is").outcome,
            Outcome::Correct
        );
    }

    #[test]
    fn a_missing_accent_is_accepted_with_a_warning_under_the_warn_policy() {
        let v = present("enviar", Person::Yo, "envie");
        assert_eq!(v.outcome, Outcome::AccentMismatch);
        assert!(v.counts_as_correct);
        assert_eq!(v.error, None);
        assert!(v.explanation.contains("«í»"), "{}", v.explanation);
    }

    #[test]
    fn a_missing_accent_counts_as_incorrect_under_the_strict_policy() {
        let v = check_free(
            "tener",
            Person::Vosotros,
            Tense::PresentSubjunctive,
            None,
            "tengais",
            AccentPolicy::Strict,
        );
        assert_eq!(v.outcome, Outcome::AccentMismatch);
        assert!(!v.counts_as_correct);
        assert!(v.explanation.contains("«á»"), "{}", v.explanation);
    }

    #[test]
    fn an_extra_accent_is_named_too() {
        let v = present("tener", Person::Yo, "ténga");
        assert_eq!(v.outcome, Outcome::AccentMismatch);
        assert!(
            v.explanation.contains("no written accent"),
            "{}",
            v.explanation
        );
    }

    #[test]
    fn an_accent_that_makes_another_real_form_is_diagnosed_as_that_form() {
        // hablé is the preterite, not a misspelt hable.
        let v = present("hablar", Person::Yo, "hablé");
        assert_eq!(v.outcome, Outcome::Incorrect);
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongTense));
    }

    #[test]
    fn another_persons_form_is_a_wrong_person_and_names_that_person() {
        let v = present("tener", Person::Yo, "tengas");
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongPerson));
        assert!(v.explanation.contains("tú"), "{}", v.explanation);
        assert!(v.explanation.contains("«tenga»"), "{}", v.explanation);
        let v = check_free(
            "ser",
            Person::Nosotros,
            Tense::ImperfectSubjunctiveRa,
            None,
            "fuesen",
            AccentPolicy::Warn,
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongPerson));
        assert!(v.explanation.contains("ellos"), "{}", v.explanation);
    }

    #[test]
    fn the_indicative_after_a_trigger_is_diagnosed_and_the_trigger_named() {
        let v = present("tener", Person::Tu, "tienes");
        assert_eq!(
            error_of(&v),
            Some(ErrorCategory::IndicativeInsteadOfSubjunctive)
        );
        assert!(
            v.explanation.contains("wishes and desires"),
            "{}",
            v.explanation
        );
        for answer in ["tenías", "tuviste"] {
            let v = check_free(
                "tener",
                Person::Tu,
                Tense::ImperfectSubjunctiveRa,
                Some(TriggerCategory::Emotion),
                answer,
                AccentPolicy::Warn,
            );
            assert_eq!(
                error_of(&v),
                Some(ErrorCategory::IndicativeInsteadOfSubjunctive),
                "{answer}"
            );
        }
        let v = check_free(
            "venir",
            Person::El,
            Tense::PresentPerfectSubjunctive,
            None,
            "ha venido",
            AccentPolicy::Warn,
        );
        assert_eq!(
            error_of(&v),
            Some(ErrorCategory::IndicativeInsteadOfSubjunctive)
        );
    }

    #[test]
    fn the_subjunctive_where_nothing_triggers_it_is_diagnosed() {
        let v = check_free(
            "venir",
            Person::El,
            Tense::PresentIndicative,
            None,
            "venga",
            AccentPolicy::Warn,
        );
        assert_eq!(
            error_of(&v),
            Some(ErrorCategory::SubjunctiveInsteadOfIndicative)
        );
        assert!(v.explanation.contains("«viene»"), "{}", v.explanation);
    }

    #[test]
    fn another_tense_of_the_same_person_is_a_wrong_tense() {
        let v = present("tener", Person::Yo, "tuviera");
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongTense));
        assert!(
            v.explanation.contains("imperfect subjunctive"),
            "{}",
            v.explanation
        );
        let v = check_free(
            "hacer",
            Person::Tu,
            Tense::ImperfectSubjunctiveRa,
            None,
            "hagas",
            AccentPolicy::Warn,
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongTense));
    }

    #[test]
    fn a_stem_left_unchanged_is_a_missed_stem_change() {
        for (infinitive, person, answer) in [
            ("pensar", Person::Yo, "pense"),
            ("volver", Person::Ellos, "volvan"),
            ("dormir", Person::Nosotros, "dormamos"),
            ("sentir", Person::Nosotros, "sentamos"),
            ("pedir", Person::Tu, "pedas"),
            ("jugar", Person::El, "jugue"),
            ("empezar", Person::Yo, "empece"),
        ] {
            let v = present(infinitive, person, answer);
            assert_eq!(
                error_of(&v),
                Some(ErrorCategory::MissedStemChange),
                "{infinitive} {answer}: {}",
                v.explanation
            );
        }
        let v = check_free(
            "sentir",
            Person::Yo,
            Tense::ImperfectSubjunctiveRa,
            None,
            "sentiera",
            AccentPolicy::Warn,
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::MissedStemChange));
    }

    #[test]
    fn a_spelling_left_unchanged_is_a_missed_spelling_change() {
        for (infinitive, person, answer, rule) in [
            ("buscar", Person::Yo, "busce", "qu"),
            ("llegar", Person::Ellos, "llegen", "gu"),
            ("empezar", Person::Yo, "empieze", "z → c"),
            ("coger", Person::Yo, "coga", "g → j"),
            ("distinguir", Person::Tu, "distinguas", "gu → g"),
            ("averiguar", Person::Yo, "averigue", "gü"),
            ("construir", Person::Yo, "construa", "y"),
            ("conocer", Person::Yo, "conoca", "zc"),
            ("jugar", Person::Yo, "juege", "gu"),
        ] {
            let v = present(infinitive, person, answer);
            assert_eq!(
                error_of(&v),
                Some(ErrorCategory::MissedSpellingChange),
                "{infinitive} {answer}: {}",
                v.explanation
            );
            assert!(v.explanation.contains(rule), "{}", v.explanation);
        }
        let v = check_free(
            "leer",
            Person::Yo,
            Tense::ImperfectSubjunctiveRa,
            None,
            "leiera",
            AccentPolicy::Warn,
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::MissedSpellingChange));
    }

    #[test]
    fn a_regular_form_of_an_irregular_verb_is_a_regularized_irregular() {
        for (infinitive, tense, answer) in [
            ("tener", Tense::PresentSubjunctive, "tena"),
            ("decir", Tense::PresentSubjunctive, "deca"),
            ("poner", Tense::PresentSubjunctive, "pona"),
            ("conducir", Tense::PresentSubjunctive, "conduca"),
            ("hacer", Tense::ImperfectSubjunctiveRa, "haciera"),
            ("hacer", Tense::ImperfectSubjunctiveRa, "hacera"),
            ("conducir", Tense::ImperfectSubjunctiveRa, "conduciera"),
            ("poner", Tense::PresentPerfectSubjunctive, "haya ponido"),
            (
                "escribir",
                Tense::PresentPerfectSubjunctive,
                "haya escribido",
            ),
            ("volver", Tense::PluperfectSubjunctive, "hubiera volvido"),
        ] {
            let v = check_free(
                infinitive,
                Person::Yo,
                tense,
                None,
                answer,
                AccentPolicy::Warn,
            );
            assert_eq!(
                error_of(&v),
                Some(ErrorCategory::RegularizedIrregular),
                "{infinitive} {answer}: {}",
                v.explanation
            );
        }
    }

    #[test]
    fn one_wrong_letter_is_a_typo() {
        for answer in ["tebga", "tengaa", "tnga", "tenfa"] {
            let v = present("tener", Person::Yo, answer);
            assert_eq!(error_of(&v), Some(ErrorCategory::Typo), "{answer}");
            assert!(v.explanation.contains("«tenga»"));
        }
        // ñ vs n is a letter, not an accent.
        let v = present("tañer", Person::Yo, "tana");
        assert_eq!(v.outcome, Outcome::Incorrect);
    }

    #[test]
    fn anything_else_is_unrecognized() {
        let v = present("tener", Person::Yo, "perro");
        assert_eq!(error_of(&v), Some(ErrorCategory::Unrecognized));
        assert!(v.explanation.contains("«tenga»"));
        let v = present("tener", Person::Yo, "   ");
        assert_eq!(error_of(&v), Some(ErrorCategory::Unrecognized));
    }

    #[test]
    fn the_se_form_is_accepted_wherever_the_ra_form_is_asked() {
        // A row that stored only the -ra form still accepts -se.
        let only_ra = vec!["tuviera".to_owned()];
        let expected = Expected {
            free_text: true,
            infinitive: "tener",
            person: Person::Yo,
            tense: Tense::ImperfectSubjunctiveRa,
            trigger: None,
            accepted: &only_ra,
            choices: &[],
        };
        let v = check(&expected, "tuviese", AccentPolicy::Strict);
        assert_eq!(v.outcome, Outcome::Correct);
        assert!(v.accepted.contains(&"tuviese".to_owned()));
        let v = check_free(
            "venir",
            Person::Nosotros,
            Tense::PluperfectSubjunctive,
            None,
            "hubiésemos venido",
            AccentPolicy::Strict,
        );
        assert_eq!(v.outcome, Outcome::Correct);
    }

    #[test]
    fn tricky_forms_are_accepted() {
        use Person::*;
        use Tense::*;
        let cases: &[(&str, Person, Tense, &str)] = &[
            ("ser", Yo, PresentSubjunctive, "sea"),
            ("ir", Tu, PresentSubjunctive, "vayas"),
            ("ir", El, PresentSubjunctive, "vaya"),
            ("haber", El, PresentSubjunctive, "haya"),
            ("saber", Yo, PresentSubjunctive, "sepa"),
            ("caber", Yo, PresentSubjunctive, "quepa"),
            ("dar", El, PresentSubjunctive, "dé"),
            ("estar", Yo, PresentSubjunctive, "esté"),
            ("pensar", El, PresentSubjunctive, "piense"),
            ("sentir", Nosotros, PresentSubjunctive, "sintamos"),
            ("dormir", Nosotros, PresentSubjunctive, "durmamos"),
            ("pedir", Nosotros, PresentSubjunctive, "pidamos"),
            ("jugar", Yo, PresentSubjunctive, "juegue"),
            ("buscar", Yo, PresentSubjunctive, "busque"),
            ("llegar", El, PresentSubjunctive, "llegue"),
            ("empezar", Yo, PresentSubjunctive, "empiece"),
            ("coger", Yo, PresentSubjunctive, "coja"),
            ("distinguir", El, PresentSubjunctive, "distinga"),
            ("averiguar", Yo, PresentSubjunctive, "averigüe"),
            ("construir", El, PresentSubjunctive, "construya"),
            ("conocer", Yo, PresentSubjunctive, "conozca"),
            ("conducir", El, PresentSubjunctive, "conduzca"),
            ("oír", Yo, PresentSubjunctive, "oiga"),
            ("caer", El, PresentSubjunctive, "caiga"),
            ("valer", El, PresentSubjunctive, "valga"),
            ("enviar", Yo, PresentSubjunctive, "envíe"),
            ("actuar", El, PresentSubjunctive, "actúe"),
            ("reunir", Yo, PresentSubjunctive, "reúna"),
            ("tener", Yo, ImperfectSubjunctiveRa, "tuviera"),
            ("tener", Yo, ImperfectSubjunctiveRa, "tuviese"),
            ("ser", El, ImperfectSubjunctiveRa, "fuera"),
            ("ser", El, ImperfectSubjunctiveSe, "fuese"),
            ("ir", El, ImperfectSubjunctiveRa, "fuese"),
            ("hacer", Yo, ImperfectSubjunctiveRa, "hiciera"),
            ("decir", Yo, ImperfectSubjunctiveRa, "dijera"),
            ("traer", El, ImperfectSubjunctiveRa, "trajera"),
            ("conducir", Yo, ImperfectSubjunctiveRa, "condujera"),
            ("oír", El, ImperfectSubjunctiveRa, "oyera"),
            ("leer", Yo, ImperfectSubjunctiveRa, "leyera"),
            ("caber", Yo, ImperfectSubjunctiveRa, "cupiera"),
            ("reír", El, ImperfectSubjunctiveRa, "riera"),
            ("poner", Nosotros, ImperfectSubjunctiveSe, "pusiésemos"),
            ("hacer", Tu, PresentPerfectSubjunctive, "hayas hecho"),
            ("decir", Ellos, PluperfectSubjunctive, "hubiesen dicho"),
        ];
        for &(infinitive, person, tense, answer) in cases {
            let v = check_free(
                infinitive,
                person,
                tense,
                None,
                answer,
                AccentPolicy::Strict,
            );
            assert_eq!(
                v.outcome,
                Outcome::Correct,
                "{infinitive} {person:?} {tense:?} {answer}: {}",
                v.explanation
            );
        }
    }

    fn choice(
        tense: Tense,
        trigger: Option<TriggerCategory>,
        accepted: &[String],
        choices: &[String],
        answer: &str,
    ) -> Verdict {
        let expected = Expected {
            free_text: false,
            infinitive: "venir",
            person: Person::El,
            tense,
            trigger,
            accepted,
            choices,
        };
        check(&expected, answer, AccentPolicy::Strict)
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_mood_choice_is_checked_leniently_against_the_options() {
        let choices = strings(&["viene", "venga"]);
        let accepted = strings(&["venga"]);
        let wish = Some(TriggerCategory::Wish);
        for answer in ["venga", "VENGA", " venga. "] {
            let v = choice(Tense::PresentSubjunctive, wish, &accepted, &choices, answer);
            assert_eq!(v.outcome, Outcome::Correct, "{answer}");
        }
        let v = choice(
            Tense::PresentSubjunctive,
            wish,
            &accepted,
            &choices,
            "viene",
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongChoice));
        assert!(v.explanation.contains("«venga»"), "{}", v.explanation);
        assert!(
            v.explanation.contains("wishes and desires"),
            "{}",
            v.explanation
        );
    }

    #[test]
    fn an_indicative_mood_choice_explains_why_no_subjunctive_is_needed() {
        let choices = strings(&["venga", "viene"]);
        let accepted = strings(&["viene"]);
        let v = choice(Tense::PresentIndicative, None, &accepted, &choices, "venga");
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongChoice));
        assert!(v.explanation.contains("indicative"), "{}", v.explanation);
        let v = choice(Tense::PresentIndicative, None, &accepted, &choices, "Viene");
        assert_eq!(v.outcome, Outcome::Correct);
    }

    #[test]
    fn a_past_mood_choice_accepts_the_se_form_too() {
        let choices = strings(&["venía", "viniera"]);
        let accepted = strings(&["viniera", "viniese"]);
        let v = choice(
            Tense::ImperfectSubjunctiveRa,
            Some(TriggerCategory::Wish),
            &accepted,
            &choices,
            "viniese",
        );
        assert_eq!(v.outcome, Outcome::Correct);
        let v = choice(
            Tense::ImperfectSubjunctiveRa,
            Some(TriggerCategory::Wish),
            &accepted,
            &choices,
            "venia",
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongChoice));
    }

    #[test]
    fn a_trigger_category_is_accepted_by_key_or_label() {
        let choices = strings(&["wish", "doubt_denial", "emotion", "ojala"]);
        let accepted = strings(&["doubt_denial"]);
        let doubt = Some(TriggerCategory::DoubtDenial);
        for answer in [
            "doubt_denial",
            "Doubt denial",
            "doubt-denial",
            "doubt and denial",
        ] {
            let v = choice(
                Tense::PresentSubjunctive,
                doubt,
                &accepted,
                &choices,
                answer,
            );
            assert_eq!(v.outcome, Outcome::Correct, "{answer}");
        }
        let v = choice(
            Tense::PresentSubjunctive,
            doubt,
            &accepted,
            &choices,
            "emotion",
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongChoice));
        assert!(
            v.explanation.contains("doubt and denial"),
            "{}",
            v.explanation
        );
        let v = choice(
            Tense::PresentSubjunctive,
            doubt,
            &accepted,
            &choices,
            "banana",
        );
        assert_eq!(error_of(&v), Some(ErrorCategory::WrongChoice));
        assert!(v.explanation.contains("not one of the options"));
    }

    #[test]
    fn normalize_trims_collapses_lowercases_composes_and_strips_punctuation() {
        assert_eq!(normalize("  Hayas \t  VENIDO.  "), "hayas venido");
        assert_eq!(normalize("¡Ojala\u{301}!"), "ojalá");
        assert_eq!(normalize("¿Niño?"), "niño");
        assert_eq!(normalize("n\u{303}u\u{308}"), "ñü");
        assert_eq!(normalize("«dé»"), "dé");
        assert_eq!(normalize("..."), "");
    }

    #[test]
    fn one_edit_means_one_insertion_deletion_or_substitution() {
        assert!(within_one_edit("tenga", "tenga"));
        assert!(within_one_edit("tenga", "tebga"));
        assert!(within_one_edit("tenga", "tengas"));
        assert!(within_one_edit("tenga", "tnga"));
        assert!(!within_one_edit("tenga", "tegna"));
        assert!(!within_one_edit("tenga", "tengass"));
        assert!(within_one_edit("", "a"));
    }

    #[test]
    fn verdicts_serialize_with_snake_case_keys() {
        let v = present("tener", Person::Yo, "tengas");
        let json = serde_json::to_value(&v).expect("serializes");
        assert_eq!(json["outcome"], "incorrect");
        assert_eq!(json["error"], "wrong_person");
        assert_eq!(json["counts_as_correct"], false);
        for category in ErrorCategory::ALL {
            let key = serde_json::to_value(category).expect("serializes");
            assert_eq!(key, category.key());
            assert_eq!(ErrorCategory::from_key(category.key()), Some(category));
        }
        let policy: AccentPolicy = serde_json::from_str("\"strict\"").expect("parses");
        assert_eq!(policy, AccentPolicy::Strict);
        assert_eq!(AccentPolicy::default(), AccentPolicy::Warn);
    }
}

#[cfg(test)]
mod class_tests {
    use crate::spanish::{VerbClass, conjugate_naive, conjugate_regularized, profile};

    fn class(infinitive: &str) -> VerbClass {
        profile(infinitive).expect("a verb").class()
    }

    #[test]
    fn verbs_fall_into_their_teaching_class() {
        for verb in ["hablar", "comer", "vivir", "aprender"] {
            assert_eq!(class(verb), VerbClass::Regular, "{verb}");
        }
        for verb in [
            "buscar",
            "llegar",
            "coger",
            "averiguar",
            "construir",
            "conocer",
            "enviar",
            "actuar",
            "reunir",
            "distinguir",
            "leer",
            "vencer",
        ] {
            assert_eq!(class(verb), VerbClass::SpellingChange, "{verb}");
        }
        for verb in [
            "pensar", "volver", "dormir", "sentir", "pedir", "jugar", "empezar",
        ] {
            assert_eq!(class(verb), VerbClass::StemChange, "{verb}");
        }
        for verb in [
            "ser", "ir", "haber", "estar", "dar", "saber", "tener", "venir", "poner", "salir",
            "hacer", "decir", "traer", "oír", "conducir", "caber", "valer", "caer", "contener",
        ] {
            assert_eq!(class(verb), VerbClass::Irregular, "{verb}");
        }
        let empezar = profile("empezar").expect("a verb");
        assert_eq!(
            empezar.classes(),
            [VerbClass::SpellingChange, VerbClass::StemChange]
        );
    }

    #[test]
    fn regularized_and_naive_tables_show_the_textbook_mistakes() {
        use crate::spanish::{Person, Tense};
        let form = |c: crate::spanish::Conjugation, t, p| c.form(t, p).to_owned();
        let ps = Tense::PresentSubjunctive;
        let reg = |v| conjugate_regularized(v).expect("a verb");
        let naive = |v, keep| conjugate_naive(v, keep).expect("a verb");
        assert_eq!(form(reg("tener"), ps, Person::Yo), "tena");
        assert_eq!(form(reg("pensar"), ps, Person::Yo), "pense");
        assert_eq!(form(reg("dormir"), ps, Person::Nosotros), "dormamos");
        assert_eq!(form(reg("buscar"), ps, Person::Yo), "busque");
        assert_eq!(form(naive("buscar", false), ps, Person::Yo), "busce");
        assert_eq!(form(naive("empezar", true), ps, Person::Yo), "empieze");
        assert_eq!(form(naive("construir", true), ps, Person::Yo), "construa");
        assert_eq!(
            form(
                naive("conducir", false),
                Tense::ImperfectSubjunctiveRa,
                Person::Yo
            ),
            "conduciera"
        );
    }
}
