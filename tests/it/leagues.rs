//! Weekly leagues on the real services: joining with XP, standings of one
//! cohort, and the weekly reset's promotions, demotions and new cohorts.

use chrono::{Datelike, Duration, NaiveDate, Utc};
use serde_json::{Value, json};

use refbackend::leagues::{self, COHORT_SIZE};

use crate::support::{TestApp, send};

async fn app() -> TestApp {
    TestApp::builder()
        .without_replica()
        .unseeded()
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .start()
        .await
}

async fn league(app: &TestApp, token: &str) -> Value {
    let (status, body) = send(
        app,
        reqwest::Method::GET,
        "/api/v1/leaderboard?period=league",
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn this_monday() -> NaiveDate {
    let today = Utc::now().date_naive();
    today - Duration::days(i64::from(today.weekday().num_days_from_monday()))
}

async fn earn(app: &TestApp, token: &str, n: i64) {
    let exercises: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT $1",
    )
    .bind(n)
    .fetch_all(app.state.db.write())
    .await
    .expect("exercises");
    for (id, answer) in exercises {
        let (status, body) = send(
            app,
            reqwest::Method::POST,
            &format!("/api/v1/exercises/{id}/attempts"),
            token,
            Some(json!({"answer": answer})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
}

#[tokio::test]
async fn a_learner_joins_a_league_by_earning_xp_and_sees_their_cohort_ranked() {
    let app = app().await;
    let (_, idle) = app.register_member("idle@example.com").await;
    let (ana_id, ana) = app.register_member("ana@example.com").await;
    let (ben_id, ben) = app.register_member("ben@example.com").await;
    earn(&app, &ana, 3).await;
    earn(&app, &ben, 1).await;

    // Without XP this week there is no league yet.
    let none = league(&app, &idle).await;
    assert_eq!(none["period"], "league");
    assert!(none["league"].is_null() && none["me"].is_null(), "{none}");
    assert_eq!(none["items"], json!([]));

    // Ben joins first (alone in his cohort), then Ana joins it.
    let alone = league(&app, &ben).await;
    assert_eq!(alone["items"].as_array().map(Vec::len), Some(1), "{alone}");
    let ana_view = league(&app, &ana).await;
    let ben_view = league(&app, &ben).await;
    assert_eq!(ana_view["league"]["tier"], "bronze");
    assert_eq!(ana_view["league"]["week"], this_monday().to_string());
    assert_eq!(
        ana_view["league"]["cohort"], ben_view["league"]["cohort"],
        "one cohort while it has room"
    );
    let items = ana_view["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["user_id"], ana_id);
    assert_eq!(items[1]["user_id"], ben_id);
    assert!(items[0]["xp"].as_i64() > items[1]["xp"].as_i64());
    assert_eq!(ana_view["me"]["rank"], 1);
    assert_eq!(ben_view["me"]["rank"], 2);
    // Two members: too few for anyone to move.
    assert_eq!(ana_view["league"]["moving"], 0);
    assert!(items.iter().all(|m| m["zone"] == "stayed"));
    // The idle learner still has no league.
    assert!(league(&app, &idle).await["league"].is_null());
    app.stop().await;
}

#[tokio::test]
async fn the_weekly_reset_promotes_the_best_demotes_the_last_and_forms_cohorts_by_level() {
    let app = app().await;
    let db = &app.state.db;
    let week = this_monday();
    let previous = week - Duration::days(7);
    // Last week: one silver cohort of 10 (two learners earned nothing), and
    // 65 learners outside any league who earned XP.
    let silver = app.users_with_role(10, "member").await;
    let newcomers = app.users_with_role(65, "member").await;
    sqlx::query("INSERT INTO league_weeks (week) VALUES ($1)")
        .bind(previous)
        .execute(db.write())
        .await
        .expect("week");
    let silver_ids: Vec<uuid::Uuid> = silver.iter().map(|(id, _)| *id).collect();
    sqlx::query(
        "INSERT INTO league_members (week, user_id, tier, cohort)
         SELECT $1, id, 1, 0 FROM UNNEST($2::uuid[]) AS id",
    )
    .bind(previous)
    .bind(&silver_ids)
    .execute(db.write())
    .await
    .expect("members");
    // Silver learner i earned 100 * i XP (i = 1..10), the first two none.
    let mut weekly: Vec<(uuid::Uuid, i64)> = silver_ids
        .iter()
        .zip(1..)
        .map(|(id, i)| (*id, if i <= 2 { 0 } else { 100 * i }))
        .collect();
    // Newcomers: all earned XP; their levels (total XP) differ.
    weekly.extend(newcomers.iter().zip(1..).map(|((id, _), i)| (*id, i)));
    let (ids, xps): (Vec<uuid::Uuid>, Vec<i64>) = weekly.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO user_weekly_xp (user_id, week, xp)
         SELECT id, $1, xp FROM UNNEST($2::uuid[], $3::int8[]) AS x(id, xp) WHERE xp > 0",
    )
    .bind(previous)
    .bind(&ids)
    .bind(&xps)
    .execute(db.write())
    .await
    .expect("weekly xp");
    sqlx::query(
        "INSERT INTO user_progress (user_id, xp)
         SELECT id, 1000 * xp FROM UNNEST($1::uuid[], $2::int8[]) AS x(id, xp)",
    )
    .bind(&ids)
    .bind(&xps)
    .execute(db.write())
    .await
    .expect("levels");

    // The service's start-up maintenance round formed this week's leagues
    // from an empty last week: undo that, as if the reset were now.
    sqlx::query("DELETE FROM league_members WHERE week = $1")
        .bind(week)
        .execute(db.write())
        .await
        .expect("undo members");
    sqlx::query("DELETE FROM league_weeks WHERE week = $1")
        .bind(week)
        .execute(db.write())
        .await
        .expect("undo week");
    // Within the first minute nothing is formed; after it, once.
    let reset = week.and_hms_opt(0, 0, 30).expect("time").and_utc();
    assert!(!leagues::roll(db, reset).await.expect("roll"));
    let now = Utc::now().max(reset + Duration::minutes(1));
    assert!(leagues::roll(db, now).await.expect("roll"));
    assert!(
        !leagues::roll(db, now).await.expect("roll again"),
        "once per week"
    );

    let results: Vec<(uuid::Uuid, i32, String)> = sqlx::query_as(
        "SELECT user_id, final_rank, outcome FROM league_members WHERE week = $1 ORDER BY final_rank",
    )
    .bind(previous)
    .fetch_all(db.write())
    .await
    .expect("results");
    let outcomes: Vec<&str> = results.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "promoted", "promoted", "stayed", "stayed", "stayed", "stayed", "stayed", "stayed",
            "demoted", "demoted"
        ]
    );
    assert_eq!(results[0].0, silver_ids[9], "most XP ranks first");

    let placed: Vec<(uuid::Uuid, i16, i32)> =
        sqlx::query_as("SELECT user_id, tier, cohort FROM league_members WHERE week = $1")
            .bind(week)
            .fetch_all(db.write())
            .await
            .expect("placed");
    let tier_of = |id: uuid::Uuid| placed.iter().find(|p| p.0 == id).map(|p| p.1);
    assert_eq!(tier_of(silver_ids[9]), Some(2), "promoted to gold");
    assert_eq!(tier_of(silver_ids[5]), Some(1), "stayed in silver");
    assert_eq!(
        tier_of(silver_ids[0]),
        None,
        "no XP last week: not placed this week"
    );
    // 65 newcomers in bronze: three cohorts of 21-22, by level.
    let mut sizes = std::collections::BTreeMap::new();
    for (_, tier, cohort) in &placed {
        if *tier == 0 {
            *sizes.entry(*cohort).or_insert(0usize) += 1;
        }
    }
    assert_eq!(sizes.values().copied().collect::<Vec<_>>(), [21, 22, 22]);
    assert!(sizes.values().all(|n| *n <= COHORT_SIZE));
    let best = newcomers[64].0;
    let worst = newcomers[0].0;
    let cohort_of = |id: uuid::Uuid| placed.iter().find(|p| p.0 == id).map(|p| p.2);
    assert_eq!(cohort_of(best), Some(0), "the highest levels together");
    assert_eq!(cohort_of(worst), Some(2));

    // A demoted learner sees last week's result and this week's league.
    let demoted = results[8].0;
    let token = &silver
        .iter()
        .find(|(id, _)| *id == demoted)
        .expect("token")
        .1;
    earn(&app, token, 1).await;
    let view = league(&app, token).await;
    assert_eq!(view["last_week"]["outcome"], "demoted", "{view}");
    assert_eq!(view["last_week"]["tier"], "silver");
    assert_eq!(view["league"]["tier"], "bronze", "{view}");
    app.stop().await;
}
