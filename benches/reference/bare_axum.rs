//! Reference program for benchmarks (docs/benchmarks.md): the bare minimum axum
//! server returning a fixed ~200-byte JSON body. The API's cached public GETs
//! are compared against this ceiling.
//!
//! `BIND_ADDR=127.0.0.1:8090 cargo run --release --example bare_axum`

use axum::Router;
use axum::http::header;
use axum::routing::get;

const BODY: &str = r#"{"items":[{"id":1,"slug":"austin-tx","name":"Austin","region":"Texas","country":"US","timezone":"America/Chicago","population":961855}],"next_cursor":"WyJBdXN0aW4iLDExXQ","note":"two hundred bytes of json"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());
    let app = Router::new().route(
        "/",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
    );
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("bare_axum listening on {bind}");
    axum::serve(listener, app).await
}
