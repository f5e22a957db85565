//! Account input rules. Emails are normalized (trimmed, lower-cased) so one
//! address is one account; passwords follow NIST SP 800-63B (length only, no
//! composition rules); display names are trimmed and bounded.

use crate::error::FieldError;

pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const DISPLAY_NAME_MAX_CHARS: usize = 60;
const EMAIL_MAX_BYTES: usize = 254;

/// The normalized email, or why it is not one.
pub fn email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim().to_lowercase();
    let invalid = || FieldError::new("email", "must be an email address like name@example.com");
    if email.len() > EMAIL_MAX_BYTES {
        return Err(FieldError::new("email", "must be at most 254 characters"));
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.contains('@')
        && !local.chars().any(char::is_whitespace)
        && crate::text::is_single_line(local);
    if local_ok && domain_ok {
        Ok(email)
    } else {
        Err(invalid())
    }
}

pub fn password(raw: &str) -> Result<(), FieldError> {
    let chars = raw.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        Err(FieldError::new("password", "must be at least 8 characters"))
    } else if chars > PASSWORD_MAX_CHARS {
        Err(FieldError::new(
            "password",
            "must be at most 128 characters",
        ))
    } else {
        Ok(())
    }
}

pub fn display_name(raw: &str) -> Result<String, FieldError> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 {
        Err(FieldError::new("display_name", "must not be empty"))
    } else if chars > DISPLAY_NAME_MAX_CHARS {
        Err(FieldError::new(
            "display_name",
            "must be at most 60 characters",
        ))
    } else if !crate::text::is_single_line(name) {
        Err(FieldError::new(
            "display_name",
            "must not contain control characters",
        ))
    } else {
        Ok(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            email("  Ana.Lopez@Example.COM "),
            Ok("ana.lopez@example.com".to_owned())
        );
    }

    #[test]
    fn things_that_are_not_emails_are_rejected() {
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "ana @example.com",
            "ana@exa mple.com",
            "ana@.com",
            "a@b..com",
        ] {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords_need_8_to_128_characters_and_nothing_else() {
        assert!(password("short").is_err());
        assert!(password("all lowercase words").is_ok());
        assert!(
            password("ñandúñandú").is_ok(),
            "counted in characters, not bytes"
        );
        assert!(password(&"x".repeat(128)).is_ok());
        assert!(password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(display_name("  Ana  "), Ok("Ana".to_owned()));
        assert!(display_name("   ").is_err());
        assert!(display_name(&"n".repeat(61)).is_err());
        assert!(display_name("bad\u{0007}name").is_err());
    }
}
