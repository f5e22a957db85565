//! Keyset pagination shared by list endpoints: `?limit=` (1..=100, default 20)
//! and an opaque `cursor` that encodes the sort key of the last item returned.
//! Keyset (not OFFSET) keeps every page as cheap as the first.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::error::{AppError, FieldError};

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
/// A cursor is a small base64 JSON value; anything longer is not ours.
const MAX_CURSOR_LEN: usize = 512;

/// The raw query parameters. Parsed by hand so that a bad value becomes a 422
/// naming the field rather than a generic deserialization error.
#[derive(Debug, Default, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
// An unknown parameter (a typo, `limit[x]=…`) is a 400, not silently ignored.
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    /// Opaque: only a value this list returned is valid.
    #[param(max_length = 512, pattern = r"^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// A validated page request with its decoded cursor of type `C`.
#[derive(Debug)]
pub struct PageRequest<C> {
    pub limit: i64,
    pub after: Option<C>,
}

/// A query-string integer within `range`: digits only (Rust's parser would
/// also take "+6", which is not an integer in the API's JSON Schema sense).
pub fn bounded_int(raw: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|n| raw.bytes().all(|b| b.is_ascii_digit()) && range.contains(n))
}

impl PageQuery {
    pub fn parse<C: DeserializeOwned>(&self) -> Result<PageRequest<C>, AppError> {
        let mut errors = Vec::new();
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => match bounded_int(raw, 1..=MAX_LIMIT) {
                Some(n) => n,
                None => {
                    errors.push(FieldError::new(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    ));
                    DEFAULT_LIMIT
                }
            },
        };
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(raw) => match decode_cursor(raw) {
                Some(c) => Some(c),
                None => {
                    errors.push(FieldError::new(
                        "cursor",
                        "is not a cursor returned by this endpoint",
                    ));
                    None
                }
            },
        };
        if errors.is_empty() {
            Ok(PageRequest { limit, after })
        } else {
            Err(AppError::Validation(errors))
        }
    }
}

pub fn encode_cursor<C: Serialize>(key: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

fn decode_cursor<C: DeserializeOwned>(raw: &str) -> Option<C> {
    if raw.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if !cursor_values_are_storable(&value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Cursors are opaque but come back from clients, so a forged one must not
/// carry what the keyset query cannot hold: a control character (Postgres
/// refuses U+0000) in a text key, or a timestamp outside the years Postgres
/// and the data can have (chrono reads `-5000-01-01T00:00:00Z`; Postgres
/// refuses it with SQLSTATE 22008).
fn cursor_values_are_storable(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            crate::text::is_single_line(s)
                && s.parse::<chrono::DateTime<chrono::Utc>>()
                    .map_or(true, |t| {
                        (1970..=9999).contains(&chrono::Datelike::year(&t))
                    })
        }
        Value::Array(items) => items.iter().all(cursor_values_are_storable),
        Value::Object(fields) => fields.values().all(cursor_values_are_storable),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    }
}

/// Given `limit + 1` fetched rows, keeps `limit` and makes the cursor for the
/// next page from the last kept row (None when this is the last page).
pub fn finish_page<T, C: Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> C,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|last| encode_cursor(&key(last)));
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<&str>, cursor: Option<&str>) -> PageQuery {
        PageQuery {
            limit: limit.map(str::to_owned),
            cursor: cursor.map(str::to_owned),
        }
    }

    #[test]
    fn a_forged_cursor_with_a_timestamp_postgres_cannot_hold_is_refused() {
        let id = uuid::Uuid::nil();
        let ancient = URL_SAFE_NO_PAD.encode(format!(r#"["-5000-01-01T00:00:00Z","{id}"]"#));
        let page =
            query(None, Some(&ancient)).parse::<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>();
        assert!(
            page.is_err(),
            "a year before 1970 is not a key we handed out"
        );
        let fine = encode_cursor(&("2026-12-06T10:00:00Z", id));
        let page = query(None, Some(&fine)).parse::<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>();
        assert!(page.is_ok());
    }

    #[test]
    fn a_forged_cursor_with_a_control_character_in_a_text_key_is_refused() {
        let forged = URL_SAFE_NO_PAD.encode(r#"["Spring\u0001field",3]"#);
        assert!(query(None, Some(&forged)).parse::<(String, i64)>().is_err());
        let nul = URL_SAFE_NO_PAD.encode(r#"["a\u0000",3]"#);
        assert!(query(None, Some(&nul)).parse::<(String, i64)>().is_err());
    }

    #[test]
    fn a_float_key_survives_its_cursor_bit_for_bit() {
        // "hot" keys are f64s like 39 812.345 678 901 234; a cursor that came
        // back one ULP off would repeat or skip the row at a page boundary.
        let mut x = 39_000.0_f64;
        for i in 0..20_000_u32 {
            x += 0.000_123_456_789 * f64::from(i % 97) + 1e-9;
            let key = (x, i64::from(i));
            let back: (f64, i64) = decode_cursor(&encode_cursor(&key)).expect("decodes");
            assert_eq!(back.0.to_bits(), x.to_bits(), "{x} came back as {}", back.0);
        }
    }

    #[test]
    fn limit_defaults_to_twenty() {
        let page: PageRequest<i64> = query(None, None).parse().expect("valid");
        assert_eq!(page.limit, 20);
        assert!(page.after.is_none());
    }

    #[test]
    fn limit_outside_one_to_a_hundred_is_a_field_error() {
        for bad in ["0", "101", "-1", "ten", "1e3", "+6", " 6", ""] {
            let err = query(Some(bad), None).parse::<i64>().expect_err(bad);
            assert!(
                matches!(err, AppError::Validation(ref e) if e[0].field == "limit"),
                "{bad}"
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let cursor = encode_cursor(&("Austin".to_owned(), 7_i64));
        let page: PageRequest<(String, i64)> = query(None, Some(&cursor)).parse().expect("valid");
        assert_eq!(page.after, Some(("Austin".to_owned(), 7)));
        let err = query(None, Some("%%%not-base64"))
            .parse::<(String, i64)>()
            .expect_err("bad");
        assert!(matches!(err, AppError::Validation(ref e) if e[0].field == "cursor"));
    }

    #[test]
    fn a_cursor_carrying_a_nul_is_rejected_before_it_reaches_sql() {
        let forged = URL_SAFE_NO_PAD.encode(br#"["Aus\u0000tin",7]"#);
        let err = query(None, Some(&forged))
            .parse::<(String, i64)>()
            .expect_err("a NUL is not a city name");
        assert!(matches!(err, AppError::Validation(ref e) if e[0].field == "cursor"));
    }

    #[test]
    fn a_full_page_gets_a_next_cursor_and_a_short_one_does_not() {
        let (items, next) = finish_page(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(items, vec![1, 2]);
        assert_eq!(next, Some(encode_cursor(&2)));
        let (items, next) = finish_page(vec![1, 2], 2, |n| *n);
        assert_eq!(items.len(), 2);
        assert!(next.is_none());
    }
}
