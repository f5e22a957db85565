//! `GET /api/v1/cities`: the first public list endpoint and its pagination.

use std::collections::HashSet;

use crate::support::TestApp;

#[tokio::test]
async fn cities_paginate_with_keyset_cursors_without_gaps_or_repeats() {
    let app = TestApp::start().await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/cities?limit=7&cursor={c}"),
            None => "/api/v1/cities?limit=7".to_owned(),
        };
        let (status, body) = app.get_json(&path).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= 7);
        seen.extend(
            items
                .iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_owned()),
        );
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 30_usize.div_ceil(7));
    assert_eq!(seen.len(), 30);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 30, "no repeats");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "alphabetical across pages");
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_limit_or_cursor_is_a_422_naming_the_field() {
    let app = TestApp::start().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("cursor=bogus", "cursor"),
    ] {
        let response = app.get(&format!("/api/v1/cities?{query}")).await;
        assert_eq!(response.status(), 422, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["field"], field, "{query}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_city_list_is_publicly_cacheable() {
    let app = TestApp::start().await;
    let response = app.get("/api/v1/cities").await;
    let cache_control = response.headers()["cache-control"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(cache_control.starts_with("public"), "{cache_control}");
    app.stop().await;
}

#[tokio::test]
async fn a_city_is_found_by_id_and_a_missing_or_malformed_id_is_a_problem() {
    let app = TestApp::start().await;
    let (_, page) = app.get_json("/api/v1/cities?limit=1").await;
    let id = page["items"][0]["id"].as_i64().expect("id");
    let (status, city) = app.get_json(&format!("/api/v1/cities/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(city["id"], id);
    assert_eq!(city["name"], page["items"][0]["name"]);

    let missing = app.get("/api/v1/cities/999999999").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let malformed = app.get("/api/v1/cities/abc").await;
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.headers()["content-type"],
        "application/problem+json"
    );
    app.stop().await;
}

#[tokio::test]
async fn cities_carry_an_etag_and_answer_304_when_unchanged() {
    let app = TestApp::start().await;
    let first = app.get("/api/v1/cities?limit=5").await;
    let etag = first.headers()["etag"].to_str().expect("ascii").to_owned();
    let again = app
        .client
        .get(app.url("/api/v1/cities?limit=5"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 304);
    app.stop().await;
}
