//! Hand-written sentence frames (`frames.txt`) and their parser.
//!
//! A frame is one natural Spanish sentence around a trigger (*Espero que…*,
//! *para que…*, or an indicative context such as *Creo que…*) with a subject
//! slot and a blank for the verb. Each frame lists the subjects it fits
//! (their person is fixed: *tú*, *mis padres*, or implicit as in *Te
//! recomiendo que ___*) and the verb phrases that make sense in it, inline or
//! drawn from a named pool. The data format is described at the top of
//! `frames.txt`.

use crate::spanish::{Person, Tense, TriggerCategory, validate_infinitive};

const DATA: &str = include_str!("frames.txt");

/// The mood context of a frame: a subjunctive trigger or an indicative one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    Trigger(TriggerCategory),
    /// Belief, certainty, fact or habit: the verb stays indicative.
    Indicative,
}

/// The tense of the blank's correct answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameTense {
    PresentSubjunctive,
    PresentPerfectSubjunctive,
    ImperfectSubjunctive,
    PluperfectSubjunctive,
    PresentIndicative,
    ImperfectIndicative,
    PreteriteIndicative,
}

impl FrameTense {
    fn parse(code: &str) -> Option<FrameTense> {
        Some(match code {
            "ps" => FrameTense::PresentSubjunctive,
            "pps" => FrameTense::PresentPerfectSubjunctive,
            "is" => FrameTense::ImperfectSubjunctive,
            "pls" => FrameTense::PluperfectSubjunctive,
            "pi" => FrameTense::PresentIndicative,
            "ii" => FrameTense::ImperfectIndicative,
            "pret" => FrameTense::PreteriteIndicative,
            _ => return None,
        })
    }

    pub const fn tense(self) -> Tense {
        match self {
            FrameTense::PresentSubjunctive => Tense::PresentSubjunctive,
            FrameTense::PresentPerfectSubjunctive => Tense::PresentPerfectSubjunctive,
            FrameTense::ImperfectSubjunctive => Tense::ImperfectSubjunctiveRa,
            FrameTense::PluperfectSubjunctive => Tense::PluperfectSubjunctive,
            FrameTense::PresentIndicative => Tense::PresentIndicative,
            FrameTense::ImperfectIndicative => Tense::ImperfectIndicative,
            FrameTense::PreteriteIndicative => Tense::PreteriteIndicative,
        }
    }

    /// The main clause is in the past (or conditional): sequence of tenses.
    pub const fn is_past(self) -> bool {
        matches!(
            self,
            FrameTense::ImperfectSubjunctive
                | FrameTense::PluperfectSubjunctive
                | FrameTense::ImperfectIndicative
                | FrameTense::PreteriteIndicative
        )
    }
}

/// One subject a frame fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// As written in the sentence; empty when implicit (*Te pido que ___*).
    pub text: String,
    pub person: Person,
    /// For exercise slugs: the subject text, or the person key when implicit.
    pub slug: String,
}

/// A verb with the words around its blank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerbPhrase {
    /// The infinitive the engine conjugates (*sentir*).
    pub verb: String,
    /// The infinitive shown to learners (*sentirse*).
    pub display: String,
    /// Text containing one `___` and possibly `{se}`, `{su}`, `{pl:a|b}`…
    pub text: String,
}

/// One sentence frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Stable, unique, `[a-z0-9-]`: part of every exercise slug.
    pub id: String,
    pub context: Context,
    pub tense: FrameTense,
    /// The words that decide the mood, quoted in explanations (*Espero que*).
    pub trigger_words: String,
    pub subjects: Vec<Subject>,
    /// With `{S}` (subject) and `{VP}` (verb phrase).
    pub sentence: String,
    pub phrases: Vec<VerbPhrase>,
    /// Why the trigger decides the mood, after the trigger words
    /// ("expresses a wish"); `None` uses the category's reason.
    pub why: Option<String>,
    /// Whether the indicative would be plainly wrong here, so the frame can
    /// serve as a mood choice (*temer que*, *sentir que*, *negar que* also
    /// admit the indicative with another meaning: `+nomood` in the file).
    pub mood_choice: bool,
}

impl Frame {
    /// The sentence for one subject and verb phrase, with the blank `___`.
    pub fn render(&self, subject: &Subject, phrase: &VerbPhrase) -> String {
        let raw = self
            .sentence
            .replace("{S}", &subject.text)
            .replace("{VP}", &phrase.text);
        let filled = fill_placeholders(&raw, subject.person);
        tidy(&filled)
    }
}

/// Every frame, in file order. The data is static and checked by the tests,
/// so a parse error is a bug in `frames.txt`.
pub fn frames() -> Result<Vec<Frame>, String> {
    parse(DATA)
}

fn parse(data: &str) -> Result<Vec<Frame>, String> {
    let mut pools: Vec<(String, Vec<VerbPhrase>)> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut current_pool: Option<usize> = None;
    for (n, raw) in data.lines().enumerate() {
        let line = raw.trim();
        let at = |msg: String| format!("frames.txt line {}: {msg}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix("== pool ") {
            pools.push((name.trim().to_owned(), Vec::new()));
            current_pool = Some(pools.len() - 1);
            continue;
        }
        if line == "== frames" {
            current_pool = None;
            continue;
        }
        if let Some(i) = current_pool {
            let phrase = parse_phrase(line).map_err(at)?;
            pools[i].1.push(phrase);
            continue;
        }
        let frame = parse_frame(line, &pools).map_err(at)?;
        if frames.iter().any(|f| f.id == frame.id) {
            return Err(at(format!("duplicate frame id {}", frame.id)));
        }
        frames.push(frame);
    }
    Ok(frames)
}

fn parse_frame(line: &str, pools: &[(String, Vec<VerbPhrase>)]) -> Result<Frame, String> {
    let fields: Vec<&str> = line.split(" | ").map(str::trim).collect();
    if !(7..=8).contains(&fields.len()) {
        return Err(format!("expected 7 or 8 fields, found {}", fields.len()));
    }
    let id = fields[0].to_owned();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!("bad id {id:?}"));
    }
    let (category, flags) = match fields[1].split_once('+') {
        Some((category, flags)) => (category, flags),
        None => (fields[1], ""),
    };
    let mood_choice = match flags {
        "" => true,
        "nomood" => false,
        other => return Err(format!("unknown flag {other}")),
    };
    let context = match category {
        "ind" => Context::Indicative,
        key => Context::Trigger(
            TriggerCategory::from_key(key).ok_or_else(|| format!("unknown category {key}"))?,
        ),
    };
    let tense = FrameTense::parse(fields[2]).ok_or_else(|| format!("bad tense {}", fields[2]))?;
    let indicative = matches!(
        tense,
        FrameTense::PresentIndicative
            | FrameTense::ImperfectIndicative
            | FrameTense::PreteriteIndicative
    );
    if indicative != (context == Context::Indicative) {
        return Err("indicative tenses go with the ind context only".to_owned());
    }
    let subjects = fields[4]
        .split(',')
        .map(parse_subject)
        .collect::<Result<Vec<_>, _>>()?;
    let sentence = fields[5].to_owned();
    if !sentence.contains("{VP}") {
        return Err("sentence without {VP}".to_owned());
    }
    if subjects.iter().any(|s| !s.text.is_empty()) && !sentence.contains("{S}") {
        return Err("explicit subjects need {S} in the sentence".to_owned());
    }
    let mut phrases: Vec<VerbPhrase> = Vec::new();
    for item in fields[6]
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let picked = match item.strip_prefix('@') {
            Some(reference) => pick_from_pool(reference, &id, pools)?,
            None => vec![parse_phrase(item)?],
        };
        for phrase in picked {
            // One exercise per verb and subject: the first phrase of a verb wins.
            if !phrases.iter().any(|p| p.verb == phrase.verb) {
                phrases.push(phrase);
            }
        }
    }
    if phrases.is_empty() {
        return Err("no verb phrases".to_owned());
    }
    Ok(Frame {
        id,
        context,
        tense,
        trigger_words: fields[3].to_owned(),
        subjects,
        sentence,
        phrases,
        why: fields.get(7).map(|s| (*s).to_owned()),
        mood_choice,
    })
}

/// `@pool` (every phrase) or `@pool*N` (N phrases, picked by a fixed
/// rotation that depends on the frame id, so frames sharing a pool vary).
fn pick_from_pool(
    reference: &str,
    frame_id: &str,
    pools: &[(String, Vec<VerbPhrase>)],
) -> Result<Vec<VerbPhrase>, String> {
    let (name, count) = match reference.split_once('*') {
        Some((name, n)) => (
            name,
            Some(
                n.parse::<usize>()
                    .map_err(|_| format!("bad count in @{reference}"))?,
            ),
        ),
        None => (reference, None),
    };
    let pool = &pools
        .iter()
        .find(|(n, _)| n == name)
        .ok_or_else(|| format!("unknown pool @{name}"))?
        .1;
    let len = pool.len();
    let Some(count) = count else {
        return Ok(pool.clone());
    };
    if count > len || len == 0 {
        return Err(format!("@{name} has only {len} phrases"));
    }
    let h = fnv1a(frame_id.as_bytes());
    let start = (h % len as u64) as usize;
    let mut stride = 1 + ((h >> 16) % (len as u64 - 1).max(1)) as usize;
    while gcd(stride, len) != 1 {
        stride += 1;
    }
    Ok((0..count)
        .map(|i| pool[(start + i * stride) % len].clone())
        .collect())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// FNV-1a: a fixed, platform-independent hash for deterministic choices.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn parse_subject(item: &str) -> Result<Subject, String> {
    let item = item.trim();
    let (text, person) = match item.split_once('=') {
        Some((text, key)) => {
            let person = match key.trim() {
                "tú" => Some(Person::Tu),
                other => Person::from_key(other),
            };
            (
                text.trim(),
                person.ok_or_else(|| format!("bad person in subject {item:?}"))?,
            )
        }
        None => {
            let person = match item {
                "yo" => Person::Yo,
                "tú" => Person::Tu,
                "él" | "ella" | "usted" => Person::El,
                "nosotros" | "nosotras" => Person::Nosotros,
                "vosotros" | "vosotras" => Person::Vosotros,
                "ellos" | "ellas" | "ustedes" => Person::Ellos,
                _ => return Err(format!("subject {item:?} needs =person")),
            };
            (item, person)
        }
    };
    let slug = if text.is_empty() {
        person.key().to_owned()
    } else {
        slugify(text)
    };
    Ok(Subject {
        text: text.to_owned(),
        person,
        slug,
    })
}

fn parse_phrase(item: &str) -> Result<VerbPhrase, String> {
    let (verb, text) = item
        .split_once(':')
        .ok_or_else(|| format!("verb phrase {item:?} needs verb: text"))?;
    let display = verb.trim().to_owned();
    let text = text.trim();
    let text = if text.contains("___") {
        text.to_owned()
    } else if text.is_empty() {
        "___".to_owned()
    } else {
        format!("___ {text}")
    };
    if text.matches("___").count() != 1 {
        return Err(format!("verb phrase {item:?} needs exactly one ___"));
    }
    // Pronominal verbs (sentirse) are conjugated as their base (sentir); the
    // pronoun is written in the sentence as {se}.
    let verb = match display.strip_suffix("se") {
        Some(base) if validate_infinitive(base).is_ok() => base.to_owned(),
        _ => display.clone(),
    };
    validate_infinitive(&verb).map_err(|e| e.to_string())?;
    if (verb != display) != text.contains("{se}") {
        return Err(format!(
            "{display}: pronominal verbs (and only they) need {{se}}"
        ));
    }
    Ok(VerbPhrase {
        verb,
        display,
        text,
    })
}

/// Lower-case ASCII slug: accents dropped, other characters as `-`.
pub fn slugify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.to_lowercase().chars() {
        let c = match c {
            'á' => 'a',
            'é' => 'e',
            'í' => 'i',
            'ó' => 'o',
            'ú' | 'ü' => 'u',
            'ñ' => 'n',
            c if c.is_ascii_alphanumeric() => c,
            _ => '-',
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Person-dependent words: `{se}` (reflexive pronoun), `{su}`/`{sua}`/
/// `{sus}`/`{suas}` (possessive for a masculine/feminine singular/plural
/// noun) and `{pl:singular|plural}`.
fn fill_placeholders(text: &str, person: Person) -> String {
    let i = person as usize;
    let plural = matches!(person, Person::Nosotros | Person::Vosotros | Person::Ellos);
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let tag = &rest[open + 1..open + close];
        let word = match tag {
            "se" => ["me", "te", "se", "nos", "os", "se"][i].to_owned(),
            "su" => ["mi", "tu", "su", "nuestro", "vuestro", "su"][i].to_owned(),
            "sua" => ["mi", "tu", "su", "nuestra", "vuestra", "su"][i].to_owned(),
            "sus" => ["mis", "tus", "sus", "nuestros", "vuestros", "sus"][i].to_owned(),
            "suas" => ["mis", "tus", "sus", "nuestras", "vuestras", "sus"][i].to_owned(),
            _ => match tag.strip_prefix("pl:").and_then(|t| t.split_once('|')) {
                Some((one, many)) => if plural { many } else { one }.to_owned(),
                None => format!("{{{tag}}}"),
            },
        };
        out.push_str(&word);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Collapses the spaces an empty subject leaves and capitalizes the start.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        let glue = matches!(word.chars().next(), Some('.' | ',' | '?' | '!'));
        if !out.is_empty() && !glue {
            out.push(' ');
        }
        out.push_str(word);
    }
    let mut chars = out.chars();
    match chars.next() {
        Some(first) if first.is_lowercase() => first.to_uppercase().chain(chars).collect(),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_file_parses() {
        let frames = frames().expect("frames.txt parses");
        assert!(frames.len() >= 150, "{} frames", frames.len());
    }

    #[test]
    fn placeholders_follow_the_person() {
        assert_eq!(
            fill_placeholders("{se} ___ con {sua} familia", Person::Nosotros),
            "nos ___ con nuestra familia"
        );
        assert_eq!(
            fill_placeholders("ser {pl:feliz|felices} en {sus} sueños", Person::Tu),
            "ser feliz en tus sueños"
        );
        assert_eq!(
            fill_placeholders("{pl:puntual|puntuales}", Person::Ellos),
            "puntuales"
        );
    }

    #[test]
    fn pronominal_verbs_conjugate_their_base() {
        let p = parse_phrase("sentirse: {se} ___ mejor").expect("parses");
        assert_eq!(
            (p.verb.as_str(), p.display.as_str()),
            ("sentir", "sentirse")
        );
        let p = parse_phrase("venir: a la fiesta").expect("parses");
        assert_eq!(p.text, "___ a la fiesta");
        assert!(parse_phrase("sentirse: ___ mejor").is_err());
        assert!(parse_phrase("ser: ___ feliz").is_ok());
    }

    #[test]
    fn implicit_subjects_leave_no_double_space() {
        let frame = parse_frame(
            "x | recommendation | ps | Te pido que | =tu | Te pido que {S} {VP}. | venir: mañana",
            &[],
        )
        .expect("parses");
        let s = frame.render(&frame.subjects[0], &frame.phrases[0]);
        assert_eq!(s, "Te pido que ___ mañana.");
        assert_eq!(frame.subjects[0].slug, "tu");
    }

    #[test]
    fn slugs_are_ascii() {
        assert_eq!(slugify("Tu hermano"), "tu-hermano");
        assert_eq!(slugify("¿Quieres que…"), "quieres-que");
        assert_eq!(slugify("ñandú"), "nandu");
    }
}
