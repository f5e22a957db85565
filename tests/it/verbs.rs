//! `/api/v1/verbs`: the conjugation engine through HTTP, with ETags.

use std::collections::HashSet;

use crate::support::TestApp;

fn app_builder() -> crate::support::TestAppBuilder {
    TestApp::builder().without_replica().unseeded()
}

#[tokio::test]
async fn a_verbs_conjugation_has_the_contract_shape_and_right_forms() {
    let app = app_builder().start().await;
    let (status, body) = app.get_json("/api/v1/verbs/tener/conjugations").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["infinitive"], "tener");
    assert_eq!(body["known"], true);
    assert_eq!(body["regular"], false);
    assert_eq!(body["participle"], "tenido");
    assert_eq!(body["gerund"], "teniendo");
    assert!(
        body["english"].as_str().is_some_and(|e| e.contains("have")),
        "{}",
        body["english"]
    );
    let tenses = body["tenses"].as_object().expect("tenses");
    let keys: HashSet<&str> = tenses.keys().map(String::as_str).collect();
    let expected: HashSet<&str> = [
        "present_indicative",
        "preterite_indicative",
        "imperfect_indicative",
        "present_subjunctive",
        "imperfect_subjunctive_ra",
        "imperfect_subjunctive_se",
        "present_perfect_subjunctive",
        "pluperfect_subjunctive_ra",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    for table in tenses.values() {
        let persons: Vec<&str> = table
            .as_object()
            .expect("persons")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(persons.len(), 6);
        for p in ["yo", "tu", "el", "nosotros", "vosotros", "ellos"] {
            assert!(persons.contains(&p), "{p}");
        }
    }
    let ps = &body["tenses"]["present_subjunctive"];
    assert_eq!(ps["yo"], "tenga");
    assert_eq!(ps["vosotros"], "tengáis");
    assert_eq!(body["tenses"]["imperfect_subjunctive_ra"]["el"], "tuviera");
    assert_eq!(body["tenses"]["imperfect_subjunctive_se"]["el"], "tuviese");
    assert_eq!(
        body["tenses"]["present_perfect_subjunctive"]["nosotros"],
        "hayamos tenido"
    );
    assert_eq!(
        body["tenses"]["pluperfect_subjunctive_ra"]["ellos"],
        "hubieran tenido"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_but_well_formed_infinitive_is_conjugated_by_rule() {
    let app = app_builder().start().await;
    let (status, body) = app.get_json("/api/v1/verbs/bloguear/conjugations").await;
    assert_eq!(status, 200);
    assert_eq!(body["known"], false);
    assert_eq!(body["tenses"]["present_subjunctive"]["yo"], "bloguee");
    // Upper case and surrounding spaces are normalized.
    let (status, body) = app.get_json("/api/v1/verbs/Hablar/conjugations").await;
    assert_eq!(status, 200);
    assert_eq!(body["infinitive"], "hablar");
    app.stop().await;
}

#[tokio::test]
async fn anything_that_is_not_an_infinitive_is_a_422_problem() {
    let app = app_builder().start().await;
    for bad in ["hello", "123", "comer!", "xyz", "%C3%B1"] {
        let response = app.get(&format!("/api/v1/verbs/{bad}/conjugations")).await;
        assert_eq!(response.status(), 422, "{bad}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["field"], "infinitive", "{bad}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_request_with_the_etag_gets_304_and_no_body() {
    let app = app_builder().start().await;
    let first = app.get("/api/v1/verbs/ser/conjugations").await;
    assert_eq!(first.status(), 200);
    assert!(
        first.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .starts_with("public")
    );
    let etag = first.headers()["etag"].to_str().expect("ascii").to_owned();
    let again = app
        .client
        .get(app.url("/api/v1/verbs/ser/conjugations"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.expect("body").is_empty());
    // A different verb is a different representation.
    let other = app
        .client
        .get(app.url("/api/v1/verbs/ir/conjugations"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn the_lexicon_pages_through_every_verb_once_in_order() {
    let app = app_builder().start().await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/verbs?limit=100&cursor={c}"),
            None => "/api/v1/verbs?limit=100".to_owned(),
        };
        let (status, body) = app.get_json(&path).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().expect("items");
        seen.extend(
            items
                .iter()
                .map(|v| v["infinitive"].as_str().unwrap_or_default().to_owned()),
        );
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), refbackend::spanish::lexicon::entries().len());
    assert!(seen.len() >= 1000);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "no repeats"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order");

    let (_, found) = app.get_json("/api/v1/verbs?search=ten&limit=100").await;
    assert!(
        found["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|v| v["infinitive"] == "tener")
    );
    let (_, by_gloss) = app
        .get_json("/api/v1/verbs?search=to%20have&limit=100")
        .await;
    assert!(
        by_gloss["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|v| v["infinitive"] == "tener")
    );
    let (status, _) = app.get_json("/api/v1/verbs?verb=tener").await;
    assert_eq!(status, 400, "unknown parameters are refused");
    app.stop().await;
}

/// The `pattern` the OpenAPI document gives a parameter of one operation.
fn published_pattern(doc: &serde_json::Value, path: &str, name: &str) -> regex::Regex {
    let parameters = doc["paths"][path]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{path} has parameters"));
    let schema = &parameters
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{path} has {name}"))["schema"];
    regex::Regex::new(schema["pattern"].as_str().expect("a pattern")).expect("a valid pattern")
}

#[test]
fn every_infinitive_the_documents_pattern_admits_is_accepted_and_every_lexicon_verb_is_admitted() {
    use refbackend::spanish::{lexicon, validate_infinitive};

    let (_, doc) = refbackend::app::api_router().split_for_parts();
    let doc = serde_json::to_value(&doc).expect("document");
    let patterns = [
        published_pattern(
            &doc,
            "/api/v1/verbs/{infinitive}/conjugations",
            "infinitive",
        ),
        published_pattern(&doc, "/api/v1/exercises", "verb"),
    ];
    // Every word of up to 5 letters over an alphabet with the endings, the
    // accents and the letters the rules single out: whatever the pattern
    // admits (within the 30-letter bound), the server must accept as it is.
    let alphabet: Vec<char> = "aeioíáóúürdsvñ".chars().collect();
    let mut words = vec![String::new()];
    let mut admitted = 0;
    for _ in 0..5 {
        words = words
            .iter()
            .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
            .collect();
        for word in &words {
            for pattern in &patterns {
                if pattern.is_match(word) {
                    admitted += 1;
                    assert_eq!(
                        validate_infinitive(word).as_deref(),
                        Ok(word.as_str()),
                        "{word} matches {pattern} but the server refuses it"
                    );
                }
            }
        }
    }
    assert!(admitted > 1_000, "{admitted}");
    // And the pattern is not so strict that real verbs are out of the schema.
    for entry in lexicon::entries() {
        for pattern in &patterns {
            assert!(
                pattern.is_match(entry.infinitive),
                "{} is refused by {pattern}",
                entry.infinitive
            );
        }
    }
}
