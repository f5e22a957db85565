//! `GET /api/v1/exercises`: the seeded bank, filters, keyset pagination, 304s,
//! and that no response ever gives an answer away.

use std::collections::HashSet;

use crate::support::TestApp;

async fn app() -> TestApp {
    TestApp::builder()
        .without_replica()
        .unseeded()
        .start()
        .await
}

/// Walks every page of `query` (limit 100) and returns all items.
async fn all_items(app: &TestApp, query: &str) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if query.is_empty() { "" } else { "&" };
        let path = match &cursor {
            Some(c) => format!("/api/v1/exercises?limit=100{sep}{query}&cursor={c}"),
            None => format!("/api/v1/exercises?limit=100{sep}{query}"),
        };
        let (status, body) = app.get_json(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        items.extend(body["items"].as_array().expect("items").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn the_seed_loads_over_2000_exercises_of_all_four_types_and_reseeding_adds_nothing() {
    let app = app().await;
    let pool = app.state.db.write();
    let per_type: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, count(*) FROM exercises GROUP BY kind ORDER BY kind")
            .fetch_all(pool)
            .await
            .expect("counts");
    let total: i64 = per_type.iter().map(|(_, n)| n).sum();
    assert!(total >= 2000, "{per_type:?}");
    assert_eq!(per_type.len(), 4, "{per_type:?}");
    assert!(per_type.iter().all(|(_, n)| *n >= 250), "{per_type:?}");

    let ids_before: Vec<i64> = sqlx::query_scalar("SELECT id FROM exercises ORDER BY slug")
        .fetch_all(pool)
        .await
        .expect("ids");
    let mut conn = pool.acquire().await.expect("conn");
    let (size, changed) = refbackend::seed::exercises(&mut conn)
        .await
        .expect("reseed");
    drop(conn);
    assert_eq!(i64::try_from(size).expect("fits"), total);
    assert_eq!(changed, 0, "re-seeding rewrites nothing");
    let ids_after: Vec<i64> = sqlx::query_scalar("SELECT id FROM exercises ORDER BY slug")
        .fetch_all(pool)
        .await
        .expect("ids");
    assert_eq!(ids_before, ids_after, "ids are stable");
    app.stop().await;
}

#[tokio::test]
async fn filters_combine_and_pages_cover_every_match_exactly_once() {
    let app = app().await;
    let items = all_items(&app, "type=conjugation&tense=present_subjunctive").await;
    let expected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM exercises WHERE kind = 'conjugation' AND tense = 'present_subjunctive'",
    )
    .fetch_one(app.state.db.write())
    .await
    .expect("count");
    assert!(expected > 100, "enough to span pages");
    assert_eq!(i64::try_from(items.len()).expect("fits"), expected);
    let ids: Vec<i64> = items
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ordered by id, no repeats"
    );
    for item in &items {
        assert_eq!(item["type"], "conjugation");
        assert_eq!(item["tense"], "present_subjunctive");
    }

    for (query, field, value) in [
        ("difficulty=3", "difficulty", serde_json::json!(3)),
        ("verb=tener", "verb", serde_json::json!("tener")),
        (
            "type=sequence_of_tenses&trigger=wish",
            "trigger",
            serde_json::json!("wish"),
        ),
    ] {
        let items = all_items(&app, query).await;
        assert!(!items.is_empty(), "{query}");
        assert!(items.iter().all(|i| i[field] == value), "{query}");
    }
    app.stop().await;
}

#[tokio::test]
async fn no_exercise_response_gives_the_answer_away() {
    let app = app().await;
    let items = all_items(&app, "").await;
    let answers: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, kind, answer FROM exercises ORDER BY id")
            .fetch_all(app.state.db.write())
            .await
            .expect("answers");
    assert_eq!(items.len(), answers.len(), "the whole bank was listed");
    let mut kinds = HashSet::new();
    for (item, (id, kind, answer)) in items.iter().zip(&answers) {
        assert_eq!(item["id"].as_i64(), Some(*id));
        let object = item.as_object().expect("object");
        for secret in ["answer", "accepted", "explanation"] {
            assert!(!object.contains_key(secret), "{id} has {secret}");
        }
        let shown = format!("{} {}", item["prompt"], item["instructions"]).to_lowercase();
        if kind == "conjugation" || kind == "sequence_of_tenses" {
            // Whole words: «sea» may hide inside «desean».
            let words: HashSet<&str> = shown
                .split(|c: char| !c.is_alphabetic())
                .filter(|w| !w.is_empty())
                .collect();
            let answer = answer.to_lowercase();
            let answer_words: Vec<&str> = answer.split_whitespace().collect();
            assert!(
                !answer_words.iter().all(|w| words.contains(w)),
                "exercise {id} shows its answer {answer}: {shown}"
            );
        } else {
            assert!(
                item["tense"].is_null() && item["trigger"].is_null(),
                "{item}"
            );
            let tags = item["tags"].to_string();
            for revealing in ["tense:", "trigger:", "mood:", "context:"] {
                assert!(!tags.contains(revealing), "{item}");
            }
        }
        kinds.insert(kind.clone());
    }
    assert_eq!(kinds.len(), 4);

    let one = &items[0];
    let path = format!("/api/v1/exercises/{}", one["id"]);
    let (status, single) = app.get_json(&path).await;
    assert_eq!(status, 200);
    assert_eq!(&single, one, "the single view equals the list view");
    app.stop().await;
}

#[tokio::test]
async fn exercise_pages_answer_304_to_a_matching_if_none_match() {
    let app = app().await;
    let first = app.get("/api/v1/exercises?type=mood_choice&limit=10").await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].clone();
    let response = app
        .client
        .get(app.url("/api/v1/exercises?type=mood_choice&limit=10"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], etag);
    app.stop().await;
}

#[tokio::test]
async fn invalid_filters_are_a_422_naming_every_bad_field() {
    let app = app().await;
    let response = app
        .get("/api/v1/exercises?type=essay&tense=future&trigger=hope&difficulty=9&verb=xyz&limit=0")
        .await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = response.json().await.expect("json");
    let fields: HashSet<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        HashSet::from(["type", "tense", "trigger", "difficulty", "verb", "limit"])
    );
    let unknown = app.get("/api/v1/exercises?answer=1").await;
    assert_eq!(unknown.status(), 400, "unknown parameters are refused");
    assert_eq!(app.get("/api/v1/exercises/99999999").await.status(), 404);
    assert_eq!(app.get("/api/v1/exercises/abc").await.status(), 400);
    app.stop().await;
}

/// Whether an item shows what a filter asks for.
type Shows = Box<dyn Fn(&serde_json::Value) -> bool>;

/// The ids of `items`, in order.
fn ids(items: &[serde_json::Value]) -> Vec<i64> {
    items
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect()
}

/// A mood choice's tense and a trigger question's trigger *are* the answer, so
/// the list hides them; a filter on them would select exactly the items whose
/// answer it names. Combined with a choice type such a filter is refused.
#[tokio::test]
async fn a_tense_or_trigger_filter_on_a_choice_type_is_refused_because_it_would_reveal_answers() {
    let app = app().await;
    for (query, field) in [
        ("type=trigger_category&trigger=wish", "trigger"),
        ("type=mood_choice&tense=present_indicative", "tense"),
        ("type=mood_choice&tense=present_subjunctive", "tense"),
        ("type=mood_choice&trigger=doubt_denial", "trigger"),
        ("type=trigger_category&tense=present_subjunctive", "tense"),
    ] {
        let path = format!("/api/v1/exercises?{query}");
        let response = app.get(&path).await;
        assert_eq!(response.status(), 422, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: serde_json::Value = response.json().await.expect("json");
        let errors = body["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{path}: {body}");
        assert_eq!(errors[0]["field"], field, "{path}: {body}");
        let message = errors[0]["message"].as_str().expect("message");
        assert!(message.contains("answer"), "{path}: says why: {message}");
    }
    app.stop().await;
}

/// Without a type, `tense` and `trigger` match what the items show: the
/// choice types show neither, so they never match (before, `?tense=present_indicative`
/// listed exactly the mood choices whose answer is the indicative).
#[tokio::test]
async fn tense_and_trigger_filters_match_only_exercises_that_show_them() {
    let app = app().await;
    for (field, value) in [
        ("tense", "present_indicative"),
        ("tense", "present_subjunctive"),
        ("tense", "imperfect_subjunctive_ra"),
        ("trigger", "wish"),
        ("trigger", "doubt_denial"),
    ] {
        let items = all_items(&app, &format!("{field}={value}")).await;
        for item in &items {
            assert!(
                item["type"] == "conjugation" || item["type"] == "sequence_of_tenses",
                "{field}={value} listed a choice exercise: {item}"
            );
            assert_eq!(item[field], value, "{item}");
        }
        let shown: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM exercises
              WHERE {field} = $1 AND kind IN ('conjugation', 'sequence_of_tenses')"
        )))
        .bind(value)
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
        assert_eq!(
            i64::try_from(items.len()).expect("fits"),
            shown,
            "{field}={value}"
        );
    }
    app.stop().await;
}

/// For the choice types, every filter that is accepted selects by what the
/// items show (so it tells nothing the unfiltered list does not), through
/// every page of the cursor; and the single view shows no more than the list.
#[tokio::test]
async fn every_filter_accepted_on_a_choice_type_selects_only_by_what_the_items_show() {
    let app = app().await;
    for kind in ["mood_choice", "trigger_category"] {
        let all = all_items(&app, &format!("type={kind}")).await;
        assert!(all.len() >= 250, "{kind}: {}", all.len());
        let mut verbs: Vec<&str> = all.iter().filter_map(|i| i["verb"].as_str()).collect();
        verbs.sort_unstable();
        verbs.dedup();
        let mut queries: Vec<(String, Shows)> = Vec::new();
        for difficulty in 1..=5 {
            queries.push((
                format!("difficulty={difficulty}"),
                Box::new(move |i| i["difficulty"] == difficulty),
            ));
        }
        for verb in verbs.iter().take(3) {
            let verb = (*verb).to_owned();
            queries.push((format!("verb={verb}"), Box::new(move |i| i["verb"] == verb)));
        }
        for (filter, shows) in &queries {
            let got = all_items(&app, &format!("type={kind}&{filter}")).await;
            let expected: Vec<serde_json::Value> =
                all.iter().filter(|i| shows(i)).cloned().collect();
            assert_eq!(ids(&got), ids(&expected), "type={kind}&{filter}");
        }
        for item in all.iter().take(5) {
            let (status, single) = app
                .get_json(&format!("/api/v1/exercises/{}", item["id"]))
                .await;
            assert_eq!(status, 200);
            assert_eq!(&single, item, "the single view equals the list view");
        }
    }
    app.stop().await;
}
