//! Reference program for benchmarks (docs/benchmarks.md): the bare minimum axum
//! server returning a fixed body. The API's cached public GETs are compared
//! against this ceiling.
//!
//! - `GET /`: a ~200-byte JSON body (DESIGN.md's reference).
//! - `GET /sized`: a body of `SIZED_BYTES` bytes (default 6000), built once at
//!   start. `benches/http.sh` sets it to the size of a cached page as it goes
//!   on the wire, so the ratio against it separates the stack's cost from the
//!   cost of moving a bigger body.
//!
//! `BIND_ADDR=127.0.0.1:8090 cargo run --release --example bare_axum`

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;

const BODY: &str = r#"{"items":[{"id":1,"slug":"austin-tx","name":"Austin","region":"Texas","country":"US","timezone":"America/Chicago","population":961855}],"next_cursor":"WyJBdXN0aW4iLDExXQ","note":"two hundred bytes of json"}"#;

/// A JSON string of exactly `len` bytes (at least `""`).
fn sized_body(len: usize) -> Bytes {
    let mut body = Vec::with_capacity(len.max(2));
    body.push(b'"');
    body.resize(len.max(2) - 1, b'x');
    body.push(b'"');
    Bytes::from(body)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());
    let sized_bytes = match std::env::var("SIZED_BYTES") {
        Ok(raw) => raw.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("SIZED_BYTES={raw:?} is not a byte count"),
            )
        })?,
        Err(_) => 6000,
    };
    let sized = sized_body(sized_bytes);
    let app = Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
        )
        .route(
            "/sized",
            get(move || {
                let body = sized.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("bare_axum listening on {bind}");
    axum::serve(listener, app).await
}
