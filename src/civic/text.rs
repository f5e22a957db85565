//! Question text and tags: normalization and validation.

pub const BODY_MIN_CHARS: usize = 10;
pub const BODY_MAX_CHARS: usize = 500;
pub const MAX_TAGS: usize = 5;
pub const TAG_MAX_CHARS: usize = 30;

/// Trims the body and collapses runs of whitespace (so near-identical
/// submissions compare equal); `Err` says what is wrong.
pub fn normalize_body(raw: &str) -> Result<String, &'static str> {
    if !crate::text::is_multi_line(raw) {
        return Err("must not contain control characters");
    }
    let body = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars = body.chars().count();
    if !(BODY_MIN_CHARS..=BODY_MAX_CHARS).contains(&chars) {
        return Err("must be 10 to 500 characters");
    }
    Ok(body)
}

/// Lower-cases, trims and de-duplicates tags (order kept); at most 5, each
/// 1–30 letters, digits, `_` or `-`.
pub fn normalize_tags(raw: &[String]) -> Result<Vec<String>, &'static str> {
    // Counted as sent, before de-duplication: the documented limit is on the list.
    if raw.len() > MAX_TAGS {
        return Err("at most 5 tags");
    }
    let mut tags: Vec<String> = Vec::new();
    for tag in raw {
        let tag = tag.trim().to_lowercase();
        let valid = !tag.is_empty()
            && tag.chars().count() <= TAG_MAX_CHARS
            && tag
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err("each tag must be 1 to 30 letters, digits, _ or -");
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err("at most 5 tags");
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_trimmed_collapsed_and_bounded() {
        assert_eq!(
            normalize_body("  Will you   fix\nthe potholes?  ").as_deref(),
            Ok("Will you fix the potholes?")
        );
        assert!(normalize_body("too short").is_err());
        assert!(normalize_body(&"a".repeat(501)).is_err());
        assert!(normalize_body("bad \u{0} character here").is_err());
    }

    #[test]
    fn tags_are_normalized_deduplicated_and_limited() {
        let tags = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            normalize_tags(&tags(&[" Roads", "roads", "parks"])),
            Ok(tags(&["roads", "parks"]))
        );
        assert!(normalize_tags(&tags(&["a", "b", "c", "d", "e", "f"])).is_err());
        assert!(normalize_tags(&tags(&["a", "a", "a", "a", "a", "a"])).is_err());
        assert!(normalize_tags(&tags(&["no spaces"])).is_err());
        assert!(normalize_tags(&tags(&[""])).is_err());
    }
}
