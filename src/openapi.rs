//! The OpenAPI document's fixed parts; paths and schemas are collected from the
//! handlers' annotations by `utoipa-axum` as routes are registered.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "refbackend API",
        description = "Subjunctive practice and CivicQ from one Rust backend. Errors are \
            application/problem+json (RFC 9457); lists use keyset pagination (`limit`, `cursor`).",
        license(name = "MIT", identifier = "MIT"),
    ),
    tags(
        (name = "operations", description = "Liveness, readiness, metrics"),
        (name = "auth", description = "Accounts: register, login, rotating refresh tokens, logout"),
        (name = "users", description = "The caller's own profile"),
        (name = "admin", description = "Administration (role admin)"),
        (name = "verbs", description = "Spanish verbs and their conjugations"),
        (name = "exercises", description = "The subjunctive exercise bank (answers are never included)"),
        (name = "practice", description = "Attempts, spaced-repetition review and progress (per user)"),
        (name = "civic", description = "CivicQ: cities, questions, votes, answers"),
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem, crate::error::FieldError))
)]
struct BaseDoc;

/// Declares the `bearer` security scheme (JWT access tokens) that protected
/// operations reference.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub fn base() -> utoipa::openapi::OpenApi {
    BaseDoc::openapi()
}

/// Request bodies that are serde enums tagged by a field (`#[serde(tag = ...,
/// deny_unknown_fields)]`): utoipa renders each variant as an object in a
/// `oneOf` but does not carry `deny_unknown_fields` over, so the document
/// would allow extra fields the server refuses.
const CLOSED_TAGGED_UNIONS: &[&str] = &["ModerationRequest", "NewContest"];

/// Marks the variants of [`CLOSED_TAGGED_UNIONS`] `additionalProperties:
/// false`, as the server treats them. Run on the finished document (the
/// schemas come from the routes, after [`base`]).
pub fn close_tagged_unions(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Schema};

    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for name in CLOSED_TAGGED_UNIONS {
        if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(*name) {
            for item in &mut one_of.items {
                if let RefOr::T(Schema::Object(object)) = item {
                    object.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}
