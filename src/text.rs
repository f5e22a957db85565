//! The one rule for text that clients send: which characters a value may hold.
//!
//! Postgres cannot store U+0000 in `text` (SQLSTATE 22021) or `\u0000` in
//! `jsonb` (22P05), and other control characters in names, e-mails, time zones
//! or cursors are never meaningful. Every text input goes through one of these
//! two checks before it reaches SQL; the JSON, query and path extractors apply
//! [`has_nul`]/[`is_single_line`] to everything as a second net, and
//! `error.rs` maps the two SQLSTATEs to a 400 as the last one.

/// True when `value` has no control character at all (Unicode category Cc:
/// U+0000–U+001F, U+007F–U+009F). For names, e-mails, tags, zones, ids.
pub fn is_single_line(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

/// True when `value`'s only control characters are tab, line feed and
/// carriage return. For free text: question and answer bodies, reasons.
pub fn is_multi_line(value: &str) -> bool {
    !value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

/// True when a raw JSON document contains the escape `\u0000` (in any case
/// of hex digits) outside of an escaped backslash. JSON text cannot carry a
/// raw control character (the parser refuses it), so this escape is the only
/// way a NUL reaches a decoded string.
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            let next = json.get(i + 1).copied();
            if next == Some(b'u') && json.get(i + 2..i + 6) == Some(b"0000".as_slice()) {
                return true;
            }
            // Skip the escaped character, so `\\u0000` (a backslash, then
            // the text "u0000") is not mistaken for an escape.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_text_refuses_every_control_character() {
        assert!(is_single_line("Ana López, 東京"));
        for bad in [
            "a\u{0}b",
            "tab\there",
            "line\nbreak",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert!(!is_single_line(bad), "{bad:?}");
        }
    }

    #[test]
    fn multi_line_text_keeps_tabs_and_line_breaks_only() {
        assert!(is_multi_line("one\r\ntwo\tthree"));
        for bad in [
            "nul\u{0}",
            "bell\u{7}",
            "vt\u{b}",
            "esc\u{1b}[0m",
            "c1\u{9f}",
        ] {
            assert!(!is_multi_line(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_nul_escape_is_found_in_raw_json_but_an_escaped_backslash_is_not_one() {
        assert!(has_nul_escape(br#"{"email":"a\u0000@b.co"}"#));
        assert!(has_nul_escape(br#"{"x":"\u0000"}"#));
        assert!(!has_nul_escape(br#"{"x":"\\u0000"}"#));
        assert!(has_nul_escape(br#"{"x":"\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"x":"\u00e9"}"#));
        assert!(!has_nul_escape(br#"{"x":"trailing\"#));
    }
}
