//! Who speaks for whom on a city's ballot: the rules that decide which
//! candidate may answer a question ([`ensure_may_answer`]) and rebut another
//! candidate's answer ([`rebuttal_profile`]), plus the checks of the text and
//! links of a candidate profile.
//!
//! Unlike the rest of `civic/`, the two rules read the database: they are the
//! one place every kind of answer (text here, video elsewhere) asks, so they
//! take the caller's connection — the transaction that writes the answer —
//! and lock the profile they return (`FOR SHARE`), so an administrator
//! re-linking it waits until that answer is written.
//!
//! The rules:
//! - A candidate may answer a question of a city only while an account with
//!   role `candidate`, linked (`candidate_profiles.user_id`) to a profile in
//!   a contest of an election of that city; if the question targets a
//!   contest, only to a profile in that contest. Administrators and
//!   moderators are not candidates and do not bypass this.
//! - A candidate may rebut (once, see `rebuttals_one_per_candidate`) another
//!   candidate's answer when both hold profiles in the same contest: the
//!   question's contest when it targets one, else any contest of the
//!   question's city they share. The rebuttal is recorded under the
//!   rebutter's profile in that contest (of several shared ones, the one of
//!   the latest election, then the lowest contest id).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::{AuthUser, Role};
use crate::error::{AppError, AppResult};

/// The candidate profile id (a UUIDv7, `candidate_profiles.id`) under which
/// `user` may answer a question of city `question_city_id` that targets
/// `question_contest_id` (if any), or a 403 problem saying why not.
///
/// Call it inside the transaction that writes the answer (after locking the
/// question): the returned profile row is share-locked until that
/// transaction ends. When the user holds several qualifying profiles (a
/// question without a contest, a candidate running in two contests of the
/// city), the one of the latest election is returned, then the lowest
/// contest id.
pub async fn ensure_may_answer(
    conn: &mut PgConnection,
    question_city_id: i64,
    question_contest_id: Option<i64>,
    user: &AuthUser,
) -> AppResult<Uuid> {
    if user.role != Role::Candidate {
        return Err(AppError::Forbidden(
            "Only candidates answer questions (this requires the role candidate and a \
             candidate profile on the city's ballot)."
                .into(),
        ));
    }
    // The contest filter is a separate statement rather than `$3 IS NULL OR`,
    // so each has a plan that uses its index (profiles by user).
    let profile: Option<Uuid> = match question_contest_id {
        Some(contest) => {
            sqlx::query_scalar(
                "SELECT p.id
                   FROM candidate_profiles p
                   JOIN contests c ON c.id = p.contest_id
                   JOIN elections e ON e.id = c.election_id
                  WHERE p.user_id = $1 AND p.contest_id = $2 AND e.city_id = $3
                    FOR SHARE OF p",
            )
            .bind(user.id)
            .bind(contest)
            .bind(question_city_id)
            .fetch_optional(&mut *conn)
            .await?
        }
        None => {
            sqlx::query_scalar(
                "SELECT p.id
                   FROM candidate_profiles p
                   JOIN contests c ON c.id = p.contest_id
                   JOIN elections e ON e.id = c.election_id
                  WHERE p.user_id = $1 AND e.city_id = $2
                  ORDER BY e.election_date DESC, c.id
                  LIMIT 1
                    FOR SHARE OF p",
            )
            .bind(user.id)
            .bind(question_city_id)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    profile.ok_or_else(|| {
        AppError::Forbidden(match question_contest_id {
            Some(contest) => format!(
                "This question is addressed to the candidates of contest {contest}, and you \
                 hold no candidate profile in it."
            ),
            None => "You hold no candidate profile in a contest of this question's city, so \
                     you cannot answer its questions."
                .into(),
        })
    })
}

/// The profile under which `rebutter` may rebut the answer of
/// `answer_author` to a question of `question_city_id` targeting
/// `question_contest_id`, or a 403 problem saying why not (module docs).
/// Share-locks the returned profile, like [`ensure_may_answer`].
pub async fn rebuttal_profile(
    conn: &mut PgConnection,
    question_city_id: i64,
    question_contest_id: Option<i64>,
    answer_author: Uuid,
    rebutter: &AuthUser,
) -> AppResult<Uuid> {
    if rebutter.role != Role::Candidate {
        return Err(AppError::Forbidden(
            "Only candidates rebut answers (this requires the role candidate).".into(),
        ));
    }
    if rebutter.id == answer_author {
        return Err(AppError::Forbidden(
            "You cannot rebut your own answer; edit it instead.".into(),
        ));
    }
    // Both accounts hold a profile in one contest: the question's, or (no
    // contest) any of the question's city.
    let profile: Option<Uuid> = sqlx::query_scalar(
        "SELECT mine.id
           FROM candidate_profiles mine
           JOIN candidate_profiles theirs
             ON theirs.contest_id = mine.contest_id AND theirs.user_id = $2
           JOIN contests c ON c.id = mine.contest_id
           JOIN elections e ON e.id = c.election_id
          WHERE mine.user_id = $1 AND e.city_id = $3
            AND ($4::int8 IS NULL OR mine.contest_id = $4)
          ORDER BY e.election_date DESC, c.id
          LIMIT 1
            FOR SHARE OF mine",
    )
    .bind(rebutter.id)
    .bind(answer_author)
    .bind(question_city_id)
    .bind(question_contest_id)
    .fetch_optional(&mut *conn)
    .await?;
    profile.ok_or_else(|| {
        AppError::Forbidden(match question_contest_id {
            Some(_) => "Only candidates of this question's contest rebut each other's answers, \
                        and you and the answer's author are not both in it."
                .into(),
            None => "Only candidates running in the same contest rebut each other's answers, \
                     and you share no contest of this city with the answer's author."
                .into(),
        })
    })
}

/// The most links a profile lists.
pub const MAX_LINKS: usize = 5;
/// The longest link.
pub const MAX_LINK_LEN: usize = 300;

/// The JSON Schema pattern of a link, which [`is_https_link`] implements:
/// `https://`, a host name (labels of letters, digits and `-`, separated by
/// single dots), an optional port, then optionally a path, query or
/// fragment of printable ASCII (other characters percent-encoded).
pub const LINK_PATTERN: &str =
    r"^https://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:[0-9]{1,5})?([/?#][!-~]*)?$";

/// Whether `link` matches [`LINK_PATTERN`] (and is at most
/// [`MAX_LINK_LEN`] characters).
pub fn is_https_link(link: &str) -> bool {
    if link.len() > MAX_LINK_LEN {
        return false;
    }
    let Some(rest) = link.strip_prefix("https://") else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    // The tail starts with one of / ? # (where the authority ended).
    let tail_ok = tail.bytes().all(|b| (b'!'..=b'~').contains(&b));
    host_ok && port_ok && tail_ok
}

/// Checks a list of links, taken exactly as sent (a URL with a space is not
/// a URL): at most [`MAX_LINKS`], each [`is_https_link`]; duplicates are
/// dropped, order kept.
pub fn normalize_links(links: &[String]) -> Result<Vec<String>, String> {
    if links.len() > MAX_LINKS {
        return Err(format!("must be at most {MAX_LINKS} links"));
    }
    let mut out: Vec<String> = Vec::with_capacity(links.len());
    for link in links {
        if !is_https_link(link) {
            return Err(format!(
                "each must be an https URL of at most {MAX_LINK_LEN} characters \
                 (https://host[:port][/path]; non-ASCII characters percent-encoded)"
            ));
        }
        if !out.contains(link) {
            out.push(link.clone());
        }
    }
    Ok(out)
}

/// A trimmed one-line name of 1 to `max` characters.
pub fn one_line(raw: &str, max: usize) -> Result<String, String> {
    let value = raw.trim();
    let n = value.chars().count();
    if n == 0 || n > max || !crate::text::is_single_line(value) {
        return Err(format!("must be 1 to {max} characters of text on one line"));
    }
    Ok(value.to_owned())
}

/// Trimmed free text (line breaks allowed) of at most `max` characters; may
/// be empty.
pub fn free_text(raw: &str, max: usize) -> Result<String, String> {
    let value = raw.trim();
    if value.chars().count() > max || !crate::text::is_multi_line(value) {
        return Err(format!("must be at most {max} characters of text"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_be_https_urls_with_a_plain_host() {
        for good in [
            "https://example.com",
            "https://vote.example.org/about?lang=en#bio",
            "https://localhost:8443/",
            "https://x-y.example.com/%C3%A9",
        ] {
            assert!(is_https_link(good), "{good}");
        }
        for bad in [
            "http://example.com",
            "https://",
            "https://exa mple.com",
            "https://example..com",
            "https://.example.com",
            "https://example.com:/",
            "https://example.com:123456",
            "https://user@example.com",
            "https://example.com/a b",
            "https://example.com/é",
            "javascript:alert(1)",
        ] {
            assert!(!is_https_link(bad), "{bad}");
        }
        assert!(!is_https_link(&format!(
            "https://e.com/{}",
            "a".repeat(300)
        )));
    }

    #[test]
    fn the_documented_link_pattern_agrees_with_the_check() {
        let pattern = regex::Regex::new(LINK_PATTERN).expect("pattern");
        for link in [
            "https://example.com",
            "https://a.b:1/x?y#z",
            "https://a..b",
            "https://a.b:/",
            "https://a_b.com",
            "http://a.b",
            "https://a.b/ x",
            "https://a.b/\u{e9}",
            "https://a.b?q",
            "https://a.b#",
        ] {
            assert_eq!(pattern.is_match(link), is_https_link(link), "{link}");
        }
    }

    #[test]
    fn links_are_at_most_five_and_deduplicated() {
        let link = |n: usize| format!("https://example.com/{n}");
        let five: Vec<String> = (0..5).map(link).collect();
        assert_eq!(normalize_links(&five).as_deref(), Ok(five.as_slice()));
        let six: Vec<String> = (0..6).map(link).collect();
        assert!(normalize_links(&six).is_err());
        assert_eq!(normalize_links(&[link(1), link(1)]), Ok(vec![link(1)]));
    }

    #[test]
    fn names_are_one_trimmed_line_and_bios_may_be_empty() {
        assert_eq!(one_line("  Ana López ", 120).as_deref(), Ok("Ana López"));
        assert!(one_line("   ", 120).is_err());
        assert!(one_line("a\nb", 120).is_err());
        assert!(one_line(&"a".repeat(121), 120).is_err());
        assert_eq!(free_text("  ", 2000).as_deref(), Ok(""));
        assert_eq!(free_text("a\nb", 2000).as_deref(), Ok("a\nb"));
        assert!(free_text("a\u{0}b", 2000).is_err());
    }
}
