//! A learner's practice settings: `GET` and `PUT /users/me/settings`.
//!
//! Stored on main with the account (`user_settings`) and read with it, so
//! attempts and `/practice/next` get them from the account cache; a change
//! drops the cached account on every instance, like a time-zone change.

use std::collections::HashSet;

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, FieldError, Problem};
use crate::http::extract::AppJson;
use crate::http::practice::private_json;
use crate::practice::settings::{MAX_DAILY_NEW_LIMIT, PracticeSettings, RETENTION_RANGE};
use crate::spanish::Tense;
use crate::spanish::checker::AccentPolicy;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_settings, put_settings))
}

fn tenses_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(Tense::ALL.map(Tense::key))),
        )
        .min_items(Some(1))
        .max_items(Some(8))
        .unique_items(true)
        .description(Some(
            "Tenses to practise (wire keys); null or absent: all. Applies to the exercise \
             types that show their tense; choice types are kept whole (selecting them by \
             the tense of their answer would give it away).",
        ))
        .build()
}

/// The learner's practice settings (all fields, as `PUT` takes them).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// New items a day (in the learner's time zone); 0 = reviews only.
    #[schema(minimum = 0, maximum = 500)]
    #[serde(deserialize_with = "crate::http::extract::integer")]
    pub daily_new_limit: i64,
    /// FSRS target retention: the probability of recalling an item when it
    /// comes due; higher means shorter intervals.
    #[schema(minimum = 0.7, maximum = 0.97)]
    pub desired_retention: f64,
    #[schema(schema_with = tenses_schema)]
    #[serde(default)]
    pub tenses: Option<Vec<String>>,
    /// `warn` (an accent-only slip counts, with a warning) or `strict` (it is
    /// wrong); null or absent: the server's default.
    #[schema(nullable, pattern = "^(warn|strict)$")]
    #[serde(default)]
    pub accent_policy: Option<String>,
}

impl From<&PracticeSettings> for Settings {
    fn from(s: &PracticeSettings) -> Self {
        Self {
            daily_new_limit: i64::from(s.daily_new_limit),
            desired_retention: s.desired_retention,
            tenses: s
                .tense_keys()
                .map(|keys| keys.into_iter().map(str::to_owned).collect()),
            accent_policy: s.accent_policy.map(|p| match p {
                AccentPolicy::Warn => "warn".to_owned(),
                AccentPolicy::Strict => "strict".to_owned(),
            }),
        }
    }
}

/// Checks every field, reporting all problems at once.
fn validate(update: &Settings) -> Result<PracticeSettings, AppError> {
    let mut errors = Vec::new();
    let daily_new_limit = i32::try_from(update.daily_new_limit)
        .ok()
        .filter(|n| (0..=MAX_DAILY_NEW_LIMIT).contains(n));
    if daily_new_limit.is_none() {
        errors.push(FieldError::new(
            "daily_new_limit",
            "must be an integer from 0 to 500",
        ));
    }
    if !update.desired_retention.is_finite() || !RETENTION_RANGE.contains(&update.desired_retention)
    {
        errors.push(FieldError::new(
            "desired_retention",
            "must be from 0.7 to 0.97",
        ));
    }
    let tenses = match &update.tenses {
        None => Some(None),
        Some(keys) => {
            let parsed: Option<Vec<Tense>> = keys.iter().map(|k| Tense::from_key(k)).collect();
            let unique = parsed
                .as_ref()
                .is_some_and(|t| t.iter().collect::<HashSet<_>>().len() == t.len());
            match parsed {
                Some(tenses) if !tenses.is_empty() && unique => Some(Some(tenses)),
                _ => {
                    errors.push(FieldError::new(
                        "tenses",
                        "must be null or a non-empty list of distinct tense keys",
                    ));
                    None
                }
            }
        }
    };
    let accent_policy = match update.accent_policy.as_deref() {
        None => Some(None),
        Some("warn") => Some(Some(AccentPolicy::Warn)),
        Some("strict") => Some(Some(AccentPolicy::Strict)),
        Some(_) => {
            errors.push(FieldError::new(
                "accent_policy",
                "must be warn, strict or null",
            ));
            None
        }
    };
    match (daily_new_limit, tenses, accent_policy) {
        (Some(daily_new_limit), Some(tenses), Some(accent_policy)) if errors.is_empty() => {
            Ok(PracticeSettings {
                daily_new_limit,
                desired_retention: update.desired_retention,
                tenses,
                accent_policy,
            })
        }
        _ => Err(AppError::Validation(errors)),
    }
}

/// The caller's practice settings (the defaults until they change any).
#[utoipa::path(get, path = "/users/me/settings", tag = "practice",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's settings", body = Settings),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_settings(user: AuthUser) -> AppResult<Response> {
    private_json(&Settings::from(user.settings.as_ref()))
}

/// Replaces the caller's practice settings; they apply from the next request
/// on every instance.
#[utoipa::path(put, path = "/users/me/settings", tag = "practice",
    security(("bearer" = [])),
    request_body = Settings,
    responses(
        (status = 200, description = "The settings as stored", body = Settings),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field out of range; `errors` names each", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_settings(
    State(state): State<AppState>,
    user: AuthUser,
    AppJson(update): AppJson<Settings>,
) -> AppResult<Response> {
    let settings = validate(&update)?;
    let tenses = settings.tense_keys();
    let accent = update.accent_policy.as_deref();
    sqlx::query(
        "INSERT INTO user_settings (user_id, daily_new_limit, desired_retention, tenses, accent_policy)
         SELECT $1, $2, $3, $4, $5 FROM users WHERE id = $1 AND is_active
         ON CONFLICT (user_id) DO UPDATE
            SET daily_new_limit = EXCLUDED.daily_new_limit,
                desired_retention = EXCLUDED.desired_retention,
                tenses = EXCLUDED.tenses, accent_policy = EXCLUDED.accent_policy,
                updated_at = now()",
    )
    .bind(user.id)
    .bind(settings.daily_new_limit)
    .bind(settings.desired_retention)
    .bind(&tenses)
    .bind(accent)
    .execute(state.db.write())
    .await?;
    // The account cache carries the settings: drop it here and everywhere.
    state.auth.accounts.forget(user.id).await;
    state.cache.announce_account_change(user.id).await;
    private_json(&Settings::from(&settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(
        limit: i64,
        retention: f64,
        tenses: Option<&[&str]>,
        accent: Option<&str>,
    ) -> Settings {
        Settings {
            daily_new_limit: limit,
            desired_retention: retention,
            tenses: tenses.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
            accent_policy: accent.map(str::to_owned),
        }
    }

    #[test]
    fn settings_in_range_are_accepted_and_tenses_parse_to_the_engines() {
        let parsed = validate(&update(
            5,
            0.85,
            Some(&["present_subjunctive"]),
            Some("strict"),
        ))
        .expect("valid");
        assert_eq!(parsed.tenses, Some(vec![Tense::PresentSubjunctive]));
        assert_eq!(parsed.accent_policy, Some(AccentPolicy::Strict));
        assert!(validate(&update(0, 0.7, None, None)).is_ok());
        assert!(validate(&update(500, 0.97, None, Some("warn"))).is_ok());
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let Err(AppError::Validation(errors)) = validate(&update(
            501,
            0.99,
            Some(&["present_subjunctive", "present_subjunctive"]),
            Some("lenient"),
        )) else {
            panic!("refused");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "daily_new_limit",
                "desired_retention",
                "tenses",
                "accent_policy"
            ]
        );
        assert!(validate(&update(5, f64::NAN, None, None)).is_err());
        assert!(validate(&update(-1, 0.9, None, None)).is_err());
        assert!(validate(&update(5, 0.9, Some(&[]), None)).is_err());
        assert!(validate(&update(5, 0.9, Some(&["future"]), None)).is_err());
    }
}
