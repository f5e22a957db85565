//! Orthographic helpers: vowels, syllable nuclei and written accents.
//!
//! The 2010 RAE *Ortografía* treats a written word as a monosyllable when its
//! vowels only form diphthongs or triphthongs (any unaccented *i*/*u* next to
//! another vowel), so forms like *rio*, *fie*, *guion*, *huis* carry no accent.
//! The engine builds forms from a stem and an ending that may carry an accent
//! (*rí+ó*), so every built form goes through [`fix_monosyllable`].

/// Any Spanish vowel letter, accented or not (*y* is treated as a consonant).
pub(crate) fn is_vowel(c: char) -> bool {
    matches!(
        c,
        'a' | 'e' | 'i' | 'o' | 'u' | 'á' | 'é' | 'í' | 'ó' | 'ú' | 'ü'
    )
}

/// Open ("strong") vowels: two of them in a row are always a hiatus.
pub(crate) fn is_strong(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'o' | 'á' | 'é' | 'ó')
}

fn is_accented(c: char) -> bool {
    matches!(c, 'á' | 'é' | 'í' | 'ó' | 'ú')
}

/// The accented form of a vowel (other characters are returned unchanged).
pub(crate) fn accented(c: char) -> char {
    match c {
        'a' => 'á',
        'e' => 'é',
        'i' => 'í',
        'o' => 'ó',
        'u' => 'ú',
        other => other,
    }
}

fn unaccented(c: char) -> char {
    match c {
        'á' => 'a',
        'é' => 'e',
        'í' => 'i',
        'ó' => 'o',
        'ú' => 'u',
        other => other,
    }
}

/// Number of syllable nuclei by the orthographic rules (a hiatus is two
/// strong vowels, or a stressed-and-accented *í*/*ú* next to any vowel).
pub(crate) fn nuclei(word: &str) -> usize {
    let mut n = 0;
    let mut prev: Option<char> = None;
    for c in word.chars() {
        if is_vowel(c) {
            match prev {
                Some(p) if is_vowel(p) => {
                    // Two closed vowels (ui, iu) always count as a diphthong
                    // in writing, even with an accent (huí → hui).
                    let hiatus = (is_strong(p) && is_strong(c))
                        || (matches!(c, 'í' | 'ú') && is_strong(p))
                        || (matches!(p, 'í' | 'ú') && is_strong(c));
                    if hiatus {
                        n += 1;
                    }
                }
                _ => n += 1,
            }
        }
        prev = Some(c);
    }
    n
}

/// Removes the written accent from a monosyllable (*rió* → *rio*,
/// *huís* → *huis*), keeping the diacritic accents of *dé* and *sé*.
pub(crate) fn fix_monosyllable(word: &mut String) {
    // Fast path: almost every form is either ASCII or polysyllabic.
    if !word.chars().any(is_accented) || word == "dé" || word == "sé" || nuclei(word) != 1 {
        return;
    }
    *word = word.chars().map(unaccented).collect();
}

/// Adds the accent a monosyllable needs once a prefix makes it an oxytone
/// of several syllables (*ve* → *prevé*, *vio* → *previó*, *veis* → *prevéis*).
/// Returns the base unchanged when no accent is needed.
pub(crate) fn accent_after_prefix(prefix: &str, base: &str, out: &mut String) {
    out.push_str(prefix);
    let ends_ok = matches!(base.chars().last(), Some(c) if is_vowel(c) || c == 'n' || c == 's');
    if prefix.is_empty() || base.chars().any(is_accented) || !ends_ok {
        out.push_str(base);
        return;
    }
    let n = nuclei(base);
    if n == 1 {
        // Accent the strong vowel of the nucleus, or the last of two weak ones.
        let target = base
            .char_indices()
            .rev()
            .find(|&(_, c)| is_strong(c))
            .or_else(|| base.char_indices().rev().find(|&(_, c)| is_vowel(c)));
        push_with_accent_at(base, target.map(|(i, _)| i), out);
        return;
    }
    // *re* + *hice* → *rehíce*: the silent h does not stop the hiatus between
    // the prefix's open vowel and a stressed i/u (RAE: rehízo, rehúso).
    let prefix_strong = prefix.chars().last().is_some_and(is_strong);
    let mut chars = base.chars();
    if n == 2
        && prefix_strong
        && chars.next() == Some('h')
        && matches!(chars.next(), Some('i' | 'u'))
        && !chars.next().is_some_and(is_vowel)
    {
        push_with_accent_at(base, Some(1), out);
        return;
    }
    out.push_str(base);
}

fn push_with_accent_at(base: &str, at: Option<usize>, out: &mut String) {
    for (i, c) in base.char_indices() {
        out.push(if Some(i) == at { accented(c) } else { c });
    }
}

/// Accents the final vowel (used for the *-ramos*/*-semos* stems:
/// *habla* → *hablá*ramos, *fue* → *fué*ramos).
pub(crate) fn push_accenting_last(base: &str, out: &mut String) {
    let last = base.char_indices().rev().find(|&(_, c)| is_vowel(c));
    push_with_accent_at(base, last.map(|(i, _)| i), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monosyllables_lose_their_accent_per_2010_rules() {
        for (built, expected) in [
            ("rió", "rio"),
            ("fié", "fie"),
            ("fió", "fio"),
            ("huís", "huis"),
            ("guió", "guio"),
            ("riáis", "riais"),
            ("dé", "dé"),
            ("sé", "sé"),
            ("reí", "reí"),
            ("oí", "oí"),
            ("río", "río"),
            ("sonrió", "sonrió"),
            ("construí", "construí"),
        ] {
            let mut s = built.to_string();
            fix_monosyllable(&mut s);
            assert_eq!(s, expected, "{built}");
        }
    }

    #[test]
    fn prefixing_a_monosyllable_adds_the_accent_of_an_oxytone() {
        for (prefix, base, expected) in [
            ("pre", "ve", "prevé"),
            ("pre", "ves", "prevés"),
            ("pre", "veis", "prevéis"),
            ("pre", "vio", "previó"),
            ("pre", "vi", "preví"),
            ("pre", "vemos", "prevemos"),
            ("re", "hice", "rehíce"),
            ("re", "hizo", "rehízo"),
            ("re", "hiciste", "rehiciste"),
            ("des", "hice", "deshice"),
            ("con", "tuvo", "contuvo"),
        ] {
            let mut out = String::new();
            accent_after_prefix(prefix, base, &mut out);
            assert_eq!(out, expected);
        }
    }
}
