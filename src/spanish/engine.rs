//! The rules: stems, endings and the orthographic adjustments at their joint.
//!
//! A form is `stem + ending`, where the stem is one of three variants:
//! *plain* (infinitive stem), *stressed* (the stem carries the stress:
//! *piens-*, *duerm-*, *pid-*, *envi-* → *enví-*) and *raised* (the -ir
//! verbs' e>i / o>u in unstressed positions: *sint-*, *durm-*, *pid-*).
//! [`join`] then applies the spelling that the joint forces (c/qu, g/gu/j,
//! z/c, i/y/í, dropped i after ñ/ll) and the 2010 monosyllable rule.

use super::irregular::{self, Irregular};
use super::orthography::{accent_after_prefix, accented, fix_monosyllable, is_strong, is_vowel};

/// Lexical class of a verb: the facts that spelling cannot predict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub stem_change: StemChange,
    /// Stressed í/ú in the stem-stressed forms (*envío*, *actúo*, *reúno*).
    pub accent: bool,
    /// -cer/-cir after a vowel takes plain z, not zc (*mecer* → *mezo*, *cocer* → *cuezo*).
    pub no_zc: bool,
    /// An e>ie -ir verb without the e>i of *sentir* (*discernir* → *discernió*).
    pub no_raise: bool,
}

/// Stem vowel changes (all marked in the lexicon: *pensar* changes, *pesar* does not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StemChange {
    #[default]
    None,
    /// e>ie (*pensar*, *sentir*), i>ie when the stem has no e (*adquirir*).
    Ie,
    /// o>ue (*contar*, *dormir*), u>ue when the stem has no o (*jugar*).
    Ue,
    /// e>i (*pedir*).
    I,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Conj {
    Ar,
    Er,
    Ir,
}

/// The six simple forms plus the non-finite forms, as built by the rules.
pub(crate) struct Simple {
    pub present: [String; 6],
    pub preterite: [String; 6],
    pub imperfect: [String; 6],
    pub subjunctive: [String; 6],
    pub participle: String,
    /// Accepted alternative participle (*imprimido*, *freído*, *proveído*).
    pub participle_alt: Option<String>,
    pub gerund: String,
    /// Whether the verb departs from its model in sound (stem change, irregular
    /// stem, zc, y-insertion…); pure spelling and accent changes stay regular.
    pub regular: bool,
}

const PRESENT: [[&str; 6]; 3] = [
    ["o", "as", "a", "amos", "áis", "an"],
    ["o", "es", "e", "emos", "éis", "en"],
    ["o", "es", "e", "imos", "ís", "en"],
];
const PRETERITE: [[&str; 6]; 2] = [
    ["é", "aste", "ó", "amos", "asteis", "aron"],
    ["í", "iste", "ió", "imos", "isteis", "ieron"],
];
const STRONG: [&str; 6] = ["e", "iste", "o", "imos", "isteis", "ieron"];
const IMPERFECT: [[&str; 6]; 2] = [
    ["aba", "abas", "aba", "ábamos", "abais", "aban"],
    ["ía", "ías", "ía", "íamos", "íais", "ían"],
];
const SUBJUNCTIVE: [[&str; 6]; 2] = [
    ["e", "es", "e", "emos", "éis", "en"],
    ["a", "as", "a", "amos", "áis", "an"],
];
/// Persons whose present forms stress the stem: yo, tú, él, ellos.
const STEM_STRESSED: [bool; 6] = [true, true, true, false, false, true];

struct Ctx {
    conj: Conj,
    /// -cer/-cir after a vowel → zc (*conozco*) unless the lexicon says plain z.
    zc: bool,
    /// -uir (not -guir/-quir): y before a, e, o (*construyo*).
    uir: bool,
}

/// Joins stem and ending, applying the spelling forced at the boundary.
fn join(stem: &str, ending: &str, ctx: &Ctx) -> String {
    let mut out = String::with_capacity(stem.len() + ending.len() + 2);
    let mut chars = ending.chars();
    let first = chars.next();
    let front = matches!(first, Some('e' | 'é' | 'i' | 'í'));
    let back = matches!(first, Some('a' | 'á' | 'o' | 'ó'));
    let mut stem = stem;
    let mut ending = ending;

    // Consonant before the ending: keep the sound, change the letter.
    if ctx.conj == Conj::Ar && front {
        if let Some(p) = stem.strip_suffix("gu") {
            out.push_str(p);
            stem = "gü";
        } else if let Some(p) = stem.strip_suffix('c') {
            out.push_str(p);
            stem = "qu";
        } else if let Some(p) = stem.strip_suffix('g') {
            out.push_str(p);
            stem = "gu";
        } else if let Some(p) = stem.strip_suffix('z') {
            out.push_str(p);
            stem = "c";
        }
    } else if ctx.conj != Conj::Ar && back {
        if let Some(p) = stem.strip_suffix("gu") {
            out.push_str(p);
            stem = "g";
        } else if let Some(p) = stem.strip_suffix("qu") {
            out.push_str(p);
            stem = "c";
        } else if let Some(p) = stem.strip_suffix('g') {
            out.push_str(p);
            stem = "j";
        } else if let Some(p) = stem.strip_suffix('c') {
            out.push_str(p);
            let after_vowel = p.chars().last().is_some_and(is_vowel);
            stem = if p.ends_with('s') {
                // -scer (*evanescer*, *fosforescer*): the s already stands
                // where -ecer verbs insert z, so the c stays and reads /k/
                // before a/o (*evanesco*, *fosforesca*), never *evaneszo*.
                "c"
            } else if ctx.zc && after_vowel {
                "zc"
            } else {
                "z"
            };
        }
    }

    let last = stem.chars().last().or_else(|| out.chars().last());
    let before_last = {
        let mut it = out.chars().chain(stem.chars()).rev();
        it.next();
        it.next()
    };
    // The u of gu/qu is a letter of the consonant, not a vowel.
    let vowel_end = last.is_some_and(is_vowel)
        && !(last == Some('u') && matches!(before_last, Some('g' | 'q')));

    if first == Some('i') {
        let next_vowel = chars.next().is_some_and(is_vowel);
        let palatal = stem.ends_with('ñ') || stem.ends_with("ll");
        if next_vowel && (palatal || last == Some('i')) {
            // tiñó, bulló, rio: the palatal (or the stem's own i) absorbs the i.
            ending = &ending[1..];
        } else if next_vowel && vowel_end {
            // leyó, cayendo, construyeron, arguyó.
            push_dropping_diaeresis(stem, &mut out);
            out.push('y');
            out.push_str(&ending[1..]);
            fix_monosyllable(&mut out);
            return out;
        } else if !next_vowel && last.is_some_and(is_strong) {
            // leí, leíste, leído: a stressed i after an open vowel is a hiatus.
            out.push_str(stem);
            out.push('í');
            out.push_str(&ending[1..]);
            return out;
        }
    } else if ctx.uir
        && vowel_end
        && matches!(last, Some('u' | 'ú' | 'ü'))
        && matches!(first, Some('a' | 'á' | 'e' | 'é' | 'o' | 'ó'))
    {
        // construyo, construye, construya (never before i: construimos).
        push_dropping_diaeresis(stem, &mut out);
        out.push('y');
        out.push_str(ending);
        fix_monosyllable(&mut out);
        return out;
    }
    out.push_str(stem);
    out.push_str(ending);
    fix_monosyllable(&mut out);
    out
}

fn push_dropping_diaeresis(stem: &str, out: &mut String) {
    match stem.strip_suffix('ü') {
        Some(p) => {
            out.push_str(p);
            out.push('u');
        }
        None => out.push_str(stem),
    }
}

/// The stressed and (for -ir verbs) raised stems.
fn changed_stems(stem: &str, flags: Flags, conj: Conj, eir: bool) -> (String, Option<String>) {
    let replace = |at: usize, with: &str| {
        let mut s = String::with_capacity(stem.len() + 3);
        s.push_str(&stem[..at]);
        s.push_str(with);
        // Every target vowel is a one-byte ASCII letter.
        s.push_str(&stem[at + 1..]);
        s
    };
    if eir {
        // reír: r-í-o in the stressed forms, ri- where -ir verbs raise.
        return match stem.rfind('e') {
            Some(at) => (replace(at, "í"), Some(replace(at, "i"))),
            None => (stem.to_owned(), None),
        };
    }
    let raise = conj == Conj::Ir && !flags.no_raise;
    let (stressed, raised) = match flags.stem_change {
        StemChange::None => (stem.to_owned(), None),
        // The vowel that diphthongizes is the stem's last e or i: *perquirir*
        // → *perquiero*, not *pierquiro*, though its stem also has an e.
        StemChange::Ie => match stem.rfind(['e', 'i']) {
            Some(at) if stem.as_bytes()[at] == b'e' => {
                let diph = if at == 0 { "ye" } else { "ie" };
                (replace(at, diph), raise.then(|| replace(at, "i")))
            }
            Some(at) => (replace(at, "ie"), None),
            None => (stem.to_owned(), None),
        },
        StemChange::Ue => match stem.rfind('o') {
            Some(at) => {
                let diph = if at == 0 {
                    "hue"
                } else if stem[..at].ends_with('g') {
                    "üe"
                } else {
                    "ue"
                };
                (replace(at, diph), raise.then(|| replace(at, "u")))
            }
            None => match stem.rfind('u') {
                Some(at) => (replace(at, "ue"), None),
                None => (stem.to_owned(), None),
            },
        },
        StemChange::I => match stem.rfind('e') {
            Some(at) => (replace(at, "i"), Some(replace(at, "i"))),
            None => (stem.to_owned(), None),
        },
    };
    if flags.accent {
        let weak = stem
            .char_indices()
            .rev()
            .find(|&(_, c)| matches!(c, 'i' | 'u'));
        if let Some((at, c)) = weak {
            let mut s = String::with_capacity(stem.len() + 1);
            s.push_str(&stem[..at]);
            s.push(accented(c));
            s.push_str(&stem[at + 1..]);
            return (s, raised);
        }
    }
    (stressed, raised)
}

/// Irregular participles shared by whole families (*describir*, *devolver*…);
/// the flag says whether the regular participle is also accepted.
fn irregular_participle(infinitive: &str) -> Option<(String, bool)> {
    const SUFFIXES: [(&str, &str, bool); 10] = [
        ("scribir", "scrito", false),
        ("volver", "vuelto", false),
        ("solver", "suelto", false),
        ("abrir", "abierto", false),
        ("cubrir", "cubierto", false),
        ("imprimir", "impreso", true),
        ("freír", "frito", true),
        ("proveer", "provisto", true),
        // RAE: the infinitive is pudrir (or podrir), the participle only
        // podrido; the same for the compound *repudrir*.
        ("pudrir", "podrido", false),
        ("podrir", "podrido", false),
    ];
    for (suffix, part, alt) in SUFFIXES {
        if let Some(prefix) = infinitive.strip_suffix(suffix) {
            let mut s = String::with_capacity(prefix.len() + part.len());
            s.push_str(prefix);
            s.push_str(part);
            return Some((s, alt));
        }
    }
    match infinitive {
        "romper" => Some(("roto".to_owned(), false)),
        "morir" => Some(("muerto".to_owned(), false)),
        _ => None,
    }
}

/// Conjugates the simple tenses of a validated, lower-case infinitive.
pub(crate) fn simple(infinitive: &str, flags: Flags) -> Simple {
    if let Some((prefix, irr)) = irregular::find(infinitive) {
        return compound(prefix, irr);
    }
    // RAE: podrir is a variant infinitive of pudrir; every form but the
    // participle (podrido, for both) is built on pudr-, compounds included
    // (*repodrir* → *repudro*).
    if let Some(prefix) = infinitive.strip_suffix("podrir") {
        return by_rule(&format!("{prefix}pudrir"), flags);
    }
    by_rule(infinitive, flags)
}

/// The verb conjugated as if it followed its model exactly: no irregular
/// table and no stem change, but the spelling that the joint forces
/// (*tener* → *tena*, *pensar* → *pense*, *buscar* → *busque*). Used to
/// recognise a learner's regularized or stem-change-less answer.
pub(crate) fn regularized(infinitive: &str) -> Simple {
    by_rule(infinitive, Flags::default())
}

/// Bare stem + ending with the stem change of `flags` (but no stressed í/ú)
/// and none of the spelling adjustments at the joint: *buscar* → *busce*,
/// *coger* → *coga*, *construir* → *construa*, *empezar* → *empieze*. Used
/// to recognise a missed spelling change.
pub(crate) fn naive(infinitive: &str, flags: Flags) -> Simple {
    let (stem, conj) = split(infinitive);
    let flags = Flags {
        accent: false,
        ..flags
    };
    let (stressed, raised) = changed_stems(stem, flags, conj, false);
    let raised_or_plain = raised.as_deref().unwrap_or(stem);
    let a = usize::from(conj != Conj::Ar);
    let cat = |s: &str, e: &str| {
        let mut out = String::with_capacity(s.len() + e.len());
        out.push_str(s);
        out.push_str(e);
        out
    };
    let stressed_or = |p: usize, other: &str| -> String {
        if STEM_STRESSED[p] {
            stressed.clone()
        } else {
            other.to_owned()
        }
    };
    Simple {
        present: std::array::from_fn(|p| cat(&stressed_or(p, stem), PRESENT[conj as usize][p])),
        subjunctive: std::array::from_fn(|p| {
            cat(&stressed_or(p, raised_or_plain), SUBJUNCTIVE[a][p])
        }),
        preterite: std::array::from_fn(|p| {
            let s = if p == 2 || p == 5 {
                raised_or_plain
            } else {
                stem
            };
            cat(s, PRETERITE[a][p])
        }),
        imperfect: std::array::from_fn(|p| cat(stem, IMPERFECT[a][p])),
        participle: cat(stem, if conj == Conj::Ar { "ado" } else { "ido" }),
        participle_alt: None,
        gerund: cat(
            raised_or_plain,
            if conj == Conj::Ar { "ando" } else { "iendo" },
        ),
        regular: true,
    }
}

fn split(infinitive: &str) -> (&str, Conj) {
    let n = infinitive.len();
    if let Some(stem) = infinitive.strip_suffix("ír") {
        return (stem, Conj::Ir);
    }
    let conj = match &infinitive[n - 2..] {
        "ar" => Conj::Ar,
        "er" => Conj::Er,
        _ => Conj::Ir,
    };
    (&infinitive[..n - 2], conj)
}

fn by_rule(infinitive: &str, flags: Flags) -> Simple {
    let (stem, conj) = split(infinitive);
    let eir = conj == Conj::Ir && infinitive.ends_with("eír");
    let ducir = infinitive.ends_with("ducir");
    let uir = conj == Conj::Ir
        && infinitive.ends_with("uir")
        && !infinitive.ends_with("guir")
        && !infinitive.ends_with("quir")
        || infinitive.ends_with("güir");
    let cer_cir = conj != Conj::Ar
        && stem.ends_with('c')
        && stem[..stem.len() - 1].chars().last().is_some_and(is_vowel);
    let ctx = Ctx {
        conj,
        zc: !flags.no_zc,
        uir,
    };
    let (stressed, raised) = changed_stems(stem, flags, conj, eir);
    let raised_or_plain = raised.as_deref().unwrap_or(stem);
    let a = usize::from(conj != Conj::Ar);

    let present = std::array::from_fn(|p| {
        let s = if STEM_STRESSED[p] {
            stressed.as_str()
        } else {
            stem
        };
        join(s, PRESENT[conj as usize][p], &ctx)
    });
    let subjunctive = std::array::from_fn(|p| {
        let s = if STEM_STRESSED[p] {
            stressed.as_str()
        } else {
            raised_or_plain
        };
        join(s, SUBJUNCTIVE[a][p], &ctx)
    });
    let preterite = if ducir {
        // conduje, condujo, condujeron (the j absorbs the i of -ieron).
        let strong = format!("{}j", &stem[..stem.len() - 1]);
        std::array::from_fn(|p| {
            let ending = if p == 5 { "eron" } else { STRONG[p] };
            let mut s = String::with_capacity(strong.len() + ending.len());
            s.push_str(&strong);
            s.push_str(ending);
            s
        })
    } else {
        std::array::from_fn(|p| {
            let s = if p == 2 || p == 5 {
                raised_or_plain
            } else {
                stem
            };
            join(s, PRETERITE[a][p], &ctx)
        })
    };
    let imperfect = std::array::from_fn(|p| join(stem, IMPERFECT[a][p], &ctx));
    let gerund = join(
        raised_or_plain,
        if conj == Conj::Ar { "ando" } else { "iendo" },
        &ctx,
    );
    let (participle, participle_alt) = match irregular_participle(infinitive) {
        Some((part, alt)) => (part, alt.then(|| join(stem, "ido", &ctx))),
        None => (
            join(stem, if conj == Conj::Ar { "ado" } else { "ido" }, &ctx),
            None,
        ),
    };
    let irregular_part = !(participle.ends_with("ado")
        || participle.ends_with("ído")
        || participle.ends_with("ido"));
    let sound_change = flags.stem_change != StemChange::None
        || eir
        || ducir
        || uir
        || (cer_cir && ctx.zc)
        || irregular_part;
    let regular = !sound_change;
    Simple {
        present,
        preterite,
        imperfect,
        subjunctive,
        participle,
        participle_alt,
        gerund,
        regular,
    }
}

/// An irregular base (or prefix + base): literal forms where listed, rules
/// elsewhere, then the prefix with any accent it requires.
fn compound(prefix: &str, irr: &Irregular) -> Simple {
    let base = by_rule(irr.base, Flags::default());
    let pick = |listed: Option<[&'static str; 6]>, ruled: [String; 6]| -> [String; 6] {
        match listed {
            Some(forms) => forms.map(|f| prefixed(prefix, f)),
            None => ruled.map(|f| prefixed(prefix, &f)),
        }
    };
    let present = pick(irr.present, base.present);
    let preterite = pick(irr.preterite, base.preterite);
    let imperfect = pick(irr.imperfect, base.imperfect);
    let subjunctive = pick(irr.subjunctive, base.subjunctive);
    // bendecir/maldecir: bendecido (bendito is only an adjective).
    let participle = if irr.base == "decir" && matches!(prefix, "ben" | "mal") {
        format!("{prefix}decido")
    } else {
        prefixed(prefix, irr.participle.unwrap_or(&base.participle))
    };
    let gerund = prefixed(prefix, irr.gerund.unwrap_or(&base.gerund));
    Simple {
        present,
        preterite,
        imperfect,
        subjunctive,
        participle,
        participle_alt: None,
        gerund,
        regular: false,
    }
}

fn prefixed(prefix: &str, form: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + form.len() + 1);
    accent_after_prefix(prefix, form, &mut out);
    out
}
