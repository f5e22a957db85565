//! The OpenAPI document's fixed parts; paths and schemas are collected from the
//! handlers' annotations by `utoipa-axum` as routes are registered.

use utoipa::OpenApi;

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
        (name = "civic", description = "CivicQ: cities, questions, votes, answers"),
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError))
)]
struct BaseDoc;

pub fn base() -> utoipa::openapi::OpenApi {
    BaseDoc::openapi()
}
