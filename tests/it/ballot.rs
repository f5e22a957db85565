//! CivicQ ballots on real Postgres and Redis: elections, contests and
//! candidate profiles (admin writes, public cached reads), questions
//! addressed to a contest, who may answer, and rebuttals.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, send};

use reqwest::Method;

async fn app() -> TestApp {
    TestApp::builder()
        .without_replica()
        .env("RATE_LIMIT_QUESTIONS_USER", "100000/1d")
        .start()
        .await
}

async fn one(app: &TestApp, role: &str) -> (Uuid, String) {
    app.users_with_role(1, role).await.pop().expect("one user")
}

/// `method path` must answer `status`; returns the body.
async fn expect(
    app: &TestApp,
    status: u16,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let (got, response) = send(app, method.clone(), path, token, body).await;
    assert_eq!(got, status, "{method} {path}: {response}");
    response
}

async fn ask(app: &TestApp, token: &str, city: i64, contest: Option<i64>, body: &str) -> String {
    let created = expect(
        app,
        201,
        Method::POST,
        &format!("/api/v1/cities/{city}/questions"),
        token,
        Some(json!({"body": body, "contest_id": contest})),
    )
    .await;
    assert_eq!(created["question"]["contest_id"], json!(contest));
    created["question"]["id"].as_str().expect("id").to_owned()
}

async fn answer(app: &TestApp, token: &str, question: &str, body: &str) -> (u16, Value) {
    send(
        app,
        Method::POST,
        &format!("/api/v1/questions/{question}/answers"),
        token,
        Some(json!({"body": body})),
    )
    .await
}

async fn rebut(app: &TestApp, token: &str, answer: &str, body: &str) -> (u16, Value) {
    send(
        app,
        Method::POST,
        &format!("/api/v1/answers/{answer}/rebuttals"),
        token,
        Some(json!({"body": body})),
    )
    .await
}

#[tokio::test]
async fn admins_build_a_ballot_that_everyone_reads_and_every_edit_shows_at_once() {
    let app = app().await;
    let (_, admin) = one(&app, "admin").await;
    let (_, member) = one(&app, "member").await;
    let (candidate, _) = one(&app, "candidate").await;

    // Only admins write; bad input is a 4xx naming the field.
    let new_election = json!({"name": "  General election ", "election_date": "2031-11-04"});
    expect(
        &app,
        401,
        Method::POST,
        "/api/v1/cities/3/elections",
        "",
        Some(new_election.clone()),
    )
    .await;
    expect(
        &app,
        403,
        Method::POST,
        "/api/v1/cities/3/elections",
        &member,
        Some(new_election.clone()),
    )
    .await;
    expect(
        &app,
        404,
        Method::POST,
        "/api/v1/cities/999999/elections",
        &admin,
        Some(new_election.clone()),
    )
    .await;
    let problem = expect(
        &app,
        422,
        Method::POST,
        "/api/v1/cities/3/elections",
        &admin,
        Some(json!({"name": "  ", "election_date": "2031-11-04"})),
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
    expect(
        &app,
        422,
        Method::POST,
        "/api/v1/cities/3/elections",
        &admin,
        Some(json!({"name": "X", "election_date": "2031-13-04"})),
    )
    .await;
    let election = expect(
        &app,
        201,
        Method::POST,
        "/api/v1/cities/3/elections",
        &admin,
        Some(new_election.clone()),
    )
    .await;
    assert_eq!(election["name"], "General election");
    assert_eq!(election["city_id"], 3);
    expect(
        &app,
        409,
        Method::POST,
        "/api/v1/cities/3/elections",
        &admin,
        Some(new_election),
    )
    .await;
    let election_id = election["id"].as_i64().expect("id");

    // Contests: an office has 1 to 1000 seats, a measure none.
    let contests = format!("/api/v1/elections/{election_id}/contests");
    for bad in [
        json!({"kind": "office", "title": "Mayor", "seats": 0}),
        json!({"kind": "office", "title": "Mayor"}),
        json!({"kind": "measure", "title": "Prop A", "seats": 1}),
        json!({"kind": "senate", "title": "Mayor", "seats": 1}),
        json!({"kind": "office", "title": "Mayor", "seats": 1.5}),
    ] {
        let (status, problem) =
            send(&app, Method::POST, &contests, &admin, Some(bad.clone())).await;
        assert!(status == 422 || status == 400, "{bad}: {status} {problem}");
    }
    expect(
        &app,
        404,
        Method::POST,
        "/api/v1/elections/999999/contests",
        &admin,
        Some(json!({"kind": "measure", "title": "Prop A"})),
    )
    .await;
    let mayor = expect(
        &app,
        201,
        Method::POST,
        &contests,
        &admin,
        Some(json!({"kind": "office", "title": "Mayor", "seats": 1, "description": "Four years."})),
    )
    .await;
    assert_eq!(mayor["seats"], 1);
    assert_eq!(mayor["candidate_count"], 0);
    let prop = expect(
        &app,
        201,
        Method::POST,
        &contests,
        &admin,
        Some(json!({"kind": "measure", "title": "Prop A"})),
    )
    .await;
    assert_eq!(prop["seats"], Value::Null);
    assert_eq!(prop["description"], "");
    expect(
        &app,
        409,
        Method::POST,
        &contests,
        &admin,
        Some(json!({"kind": "measure", "title": "Prop A"})),
    )
    .await;
    let mayor_id = mayor["id"].as_i64().expect("id");
    let prop_id = prop["id"].as_i64().expect("id");
    expect(
        &app,
        422,
        Method::PATCH,
        &format!("/api/v1/contests/{prop_id}"),
        &admin,
        Some(json!({"seats": 2})),
    )
    .await;
    expect(
        &app,
        409,
        Method::PATCH,
        &format!("/api/v1/contests/{prop_id}"),
        &admin,
        Some(json!({"title": "Mayor"})),
    )
    .await;

    // Candidate profiles, linked to a candidate account or not.
    let candidates = format!("/api/v1/contests/{mayor_id}/candidates");
    let (status, problem) = send(
        &app,
        Method::POST,
        &candidates,
        &admin,
        Some(json!({"display_name": "Ana", "links": ["http://ana.example.com"]})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "links");
    let (member_id, _) = one(&app, "member").await;
    expect(
        &app,
        409,
        Method::POST,
        &candidates,
        &admin,
        Some(json!({"display_name": "Ana", "user_id": member_id})),
    )
    .await;
    expect(
        &app,
        404,
        Method::POST,
        &candidates,
        &admin,
        Some(json!({"display_name": "Ana", "user_id": Uuid::now_v7()})),
    )
    .await;
    let ana = expect(
        &app,
        201,
        Method::POST,
        &candidates,
        &admin,
        Some(json!({
            "display_name": "Ana Ruiz", "bio": "Teacher.", "user_id": candidate,
            "links": ["https://ana.example.com", "https://ana.example.com"],
        })),
    )
    .await;
    assert_eq!(ana["links"], json!(["https://ana.example.com"]));
    assert_eq!(ana["verified"], false);
    assert_eq!(ana["user_id"], candidate.to_string());
    expect(
        &app,
        409,
        Method::POST,
        &candidates,
        &admin,
        Some(json!({"display_name": "Ana again", "user_id": candidate})),
    )
    .await;
    expect(
        &app,
        201,
        Method::POST,
        &candidates,
        &admin,
        Some(json!({"display_name": "Ben Ode"})),
    )
    .await;

    // Everyone reads the ballot (cached); the edits show at once.
    let ballot_path = "/api/v1/cities/3/ballot";
    let response = app.get(ballot_path).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .expect("ascii")
            .starts_with("public")
    );
    let ballot: Value = response.json().await.expect("json");
    let listed = &ballot["elections"][0];
    assert_eq!(listed["name"], "General election", "{ballot}");
    assert_eq!(listed["upcoming"], true);
    assert_eq!(listed["contests"][0]["title"], "Mayor");
    assert_eq!(listed["contests"][0]["candidate_count"], 2);
    assert_eq!(listed["contests"][1]["kind"], "measure");
    expect(
        &app,
        200,
        Method::PATCH,
        &format!("/api/v1/elections/{election_id}"),
        &admin,
        Some(json!({"name": "General municipal election"})),
    )
    .await;
    let (_, ballot) = app.get_json(ballot_path).await;
    assert_eq!(ballot["elections"][0]["name"], "General municipal election");
    expect(
        &app,
        200,
        Method::PATCH,
        &format!("/api/v1/contests/{mayor_id}"),
        &admin,
        Some(json!({"seats": 2})),
    )
    .await;
    let (_, ballot) = app.get_json(ballot_path).await;
    assert_eq!(ballot["elections"][0]["contests"][0]["seats"], 2);

    // Recent elections stay on the ballot (not upcoming); older ones drop off.
    sqlx::query(
        "INSERT INTO elections (city_id, name, election_date)
         VALUES (3, 'Primary', current_date - 100), (3, 'Old', current_date - 400)",
    )
    .execute(app.state.db.write())
    .await
    .expect("elections");
    expect(
        &app,
        200,
        Method::PATCH,
        &format!("/api/v1/elections/{election_id}"),
        &admin,
        Some(json!({"election_date": "2031-11-05"})),
    )
    .await;
    let (_, ballot) = app.get_json(ballot_path).await;
    let names: Vec<(&str, bool)> = ballot["elections"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name"),
                e["upcoming"].as_bool().expect("bool"),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("Primary", false), ("General municipal election", true)]
    );
    assert_eq!(ballot["elections"][1]["election_date"], "2031-11-05");

    expect(
        &app,
        404,
        Method::GET,
        "/api/v1/cities/999999/ballot",
        "",
        None,
    )
    .await;
    // Each path takes only its own methods.
    expect(
        &app,
        405,
        Method::GET,
        "/api/v1/cities/3/elections",
        "",
        None,
    )
    .await;
    expect(
        &app,
        405,
        Method::POST,
        "/api/v1/cities/3/ballot",
        &admin,
        Some(json!({})),
    )
    .await;
    let (status, empty) = app.get_json("/api/v1/cities/4/ballot").await;
    assert_eq!((status.as_u16(), &empty["elections"]), (200, &json!([])));
    app.stop().await;
}

#[tokio::test]
async fn a_candidate_edits_only_the_bio_and_links_of_their_own_profile_and_admins_verify() {
    let app = app().await;
    let (_, admin) = one(&app, "admin").await;
    let candidates = app.users_with_role(2, "candidate").await;
    let contest = app.contest_in(5).await;
    let mine = app.profile_for(candidates[0].0, contest).await;
    let theirs = app.profile_for(candidates[1].0, contest).await;
    let token = &candidates[0].1;
    let path = format!("/api/v1/candidates/{mine}");

    let edited = expect(&app, 200, Method::PATCH, &path, token,
        Some(json!({"bio": "Nurse, 20 years.\nMother of two.", "links": ["https://me.example.org/a?b=c"]}))).await;
    assert_eq!(edited["bio"], "Nurse, 20 years.\nMother of two.");
    for forbidden in [
        json!({"display_name": "Me"}),
        json!({"verified": true}),
        json!({"user_id": null}),
    ] {
        expect(&app, 403, Method::PATCH, &path, token, Some(forbidden)).await;
    }
    expect(
        &app,
        403,
        Method::PATCH,
        &format!("/api/v1/candidates/{theirs}"),
        token,
        Some(json!({"bio": "Not mine."})),
    )
    .await;
    let (_, member) = one(&app, "member").await;
    expect(
        &app,
        403,
        Method::PATCH,
        &path,
        &member,
        Some(json!({"bio": "x"})),
    )
    .await;
    expect(
        &app,
        404,
        Method::PATCH,
        &format!("/api/v1/candidates/{}", Uuid::now_v7()),
        &admin,
        Some(json!({"bio": "x"})),
    )
    .await;
    let problem = expect(
        &app,
        422,
        Method::PATCH,
        &path,
        token,
        Some(json!({"links": vec!["https://a.example.com"; 6]})),
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "links");

    // The profile is public (cached) and shows the admin's verification at once.
    let (status, profile) = app.get_json(&path).await;
    assert_eq!(status, 200);
    assert_eq!(profile["verified"], false);
    expect(
        &app,
        200,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"verified": true})),
    )
    .await;
    let (_, profile) = app.get_json(&path).await;
    assert_eq!(profile["verified"], true);
    assert_eq!(profile["links"], json!(["https://me.example.org/a?b=c"]));

    // Admins move the account link: to an account that already has a
    // profile in the contest is a 409; null unlinks.
    expect(
        &app,
        409,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"user_id": candidates[1].0})),
    )
    .await;
    let unlinked = expect(
        &app,
        200,
        Method::PATCH,
        &path,
        &admin,
        Some(json!({"user_id": null})),
    )
    .await;
    assert_eq!(unlinked["user_id"], Value::Null);
    expect(
        &app,
        403,
        Method::PATCH,
        &path,
        token,
        Some(json!({"bio": "Mine?"})),
    )
    .await;

    // The contest's candidates, by name, one page at a time.
    let mut names = Vec::new();
    let mut next = format!("/api/v1/contests/{contest}/candidates?limit=1");
    loop {
        let (status, page) = app.get_json(&next).await;
        assert_eq!(status, 200, "{page}");
        names.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|c| c["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                next = format!("/api/v1/contests/{contest}/candidates?limit=1&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(names.len(), 2);
    expect(
        &app,
        404,
        Method::GET,
        "/api/v1/contests/999999/candidates",
        "",
        None,
    )
    .await;
    expect(
        &app,
        422,
        Method::GET,
        &format!("/api/v1/contests/{contest}/candidates?cursor=abc"),
        "",
        None,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn questions_may_target_a_contest_of_their_own_city_and_lists_filter_by_it() {
    let app = app().await;
    let (_, member) = one(&app, "member").await;
    let here = app.contest_in(6).await;
    let elsewhere = app.contest_in(7).await;

    let targeted = ask(
        &app,
        &member,
        6,
        Some(here),
        "Will the mayor fund more bus routes?",
    )
    .await;
    let open = ask(
        &app,
        &member,
        6,
        None,
        "What will the city do about potholes downtown?",
    )
    .await;
    for contest in [json!(elsewhere), json!(999_999), json!(0), json!(-3)] {
        let problem = expect(
            &app,
            422,
            Method::POST,
            "/api/v1/cities/6/questions",
            &member,
            Some(json!({"body": "Is this a question for another contest?", "contest_id": contest})),
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "contest_id", "{problem}");
    }
    let (_, detail) = app.get_json(&format!("/api/v1/questions/{targeted}")).await;
    assert_eq!(detail["contest_id"], here);

    for sort in ["new", "top", "hot"] {
        let (status, all) = app
            .get_json(&format!("/api/v1/cities/6/questions?sort={sort}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(all["items"].as_array().expect("items").len(), 2);
        let (status, only) = app
            .get_json(&format!(
                "/api/v1/cities/6/questions?sort={sort}&contest_id={here}"
            ))
            .await;
        assert_eq!(status, 200, "{only}");
        let ids: Vec<&str> = only["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|q| q["id"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, [targeted.as_str()]);
    }
    assert_ne!(targeted, open);
    // A new question in the contest shows in its (cached) list at once.
    let second = ask(
        &app,
        &member,
        6,
        Some(here),
        "Will the mayor keep the night buses running?",
    )
    .await;
    let (_, only) = app
        .get_json(&format!(
            "/api/v1/cities/6/questions?sort=new&contest_id={here}"
        ))
        .await;
    assert_eq!(only["items"][0]["id"], second.as_str());
    expect(
        &app,
        404,
        Method::GET,
        &format!("/api/v1/cities/6/questions?contest_id={elsewhere}"),
        "",
        None,
    )
    .await;
    expect(
        &app,
        422,
        Method::GET,
        "/api/v1/cities/6/questions?contest_id=x",
        "",
        None,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn only_candidates_on_the_questions_ballot_answer_it_and_staff_do_not_bypass_it() {
    let app = app().await;
    let (_, member) = one(&app, "member").await;
    let mayor = app.contest_in(8).await;
    let council = app.contest_in(8).await;
    let far = app.contest_in(2).await;
    let candidates = app.users_with_role(4, "candidate").await;
    let (in_mayor, in_council, in_far, without) = (
        &candidates[0],
        &candidates[1],
        &candidates[2],
        &candidates[3],
    );
    let mayor_profile = app.profile_for(in_mayor.0, mayor).await;
    let council_profile = app.profile_for(in_council.0, council).await;
    app.profile_for(in_far.0, far).await;
    let (admin_id, admin) = one(&app, "admin").await;
    let (moderator_id, moderator) = one(&app, "moderator").await;
    // Even with a profile, staff are not candidates.
    app.profile_for(admin_id, mayor).await;
    app.profile_for(moderator_id, mayor).await;

    let targeted = ask(
        &app,
        &member,
        8,
        Some(mayor),
        "How will the mayor cut commute times?",
    )
    .await;
    let open = ask(
        &app,
        &member,
        8,
        None,
        "How will you keep parks clean this summer?",
    )
    .await;

    for (token, why) in [
        (&without.1, "no profile"),
        (&in_far.1, "a profile in another city"),
        (&in_council.1, "a profile in another contest of the city"),
        (&admin, "an admin"),
        (&moderator, "a moderator"),
        (&member, "a member"),
    ] {
        let (status, problem) = answer(&app, token, &targeted, "I will.").await;
        assert_eq!(status, 403, "{why}: {problem}");
        assert_eq!(problem["type"], "/problems/forbidden");
    }
    let (status, answered) = answer(&app, &in_mayor.1, &targeted, "Express lanes.").await;
    assert_eq!(status, 201, "{answered}");
    assert_eq!(answered["profile_id"], mayor_profile.to_string());
    assert_eq!(answered["rebuttal_count"], 0);

    // A question without a contest: every candidate of the city.
    let (status, answered) = answer(&app, &in_council.1, &open, "More bins.").await;
    assert_eq!(status, 201, "{answered}");
    assert_eq!(answered["profile_id"], council_profile.to_string());
    for token in [&in_far.1, &without.1, &admin] {
        let (status, _) = answer(&app, token, &open, "Me too.").await;
        assert_eq!(status, 403);
    }

    // Unlinked from the profile, a candidate no longer answers or edits.
    sqlx::query("UPDATE candidate_profiles SET user_id = NULL WHERE id = $1")
        .bind(council_profile)
        .execute(app.state.db.write())
        .await
        .expect("unlink");
    let (status, _) = send(
        &app,
        Method::PUT,
        &format!("/api/v1/questions/{open}/answers/mine"),
        &in_council.1,
        Some(json!({"body": "Even more bins."})),
    )
    .await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn candidates_of_one_contest_rebut_each_others_answers_once_and_no_one_else_does() {
    let app = app().await;
    let (_, member) = one(&app, "member").await;
    let mayor = app.contest_in(10).await;
    let council = app.contest_in(10).await;
    let candidates = app.users_with_role(4, "candidate").await;
    let (ana, ben, cleo, dan) = (
        &candidates[0],
        &candidates[1],
        &candidates[2],
        &candidates[3],
    );
    for who in [ana, ben] {
        app.profile_for(who.0, mayor).await;
    }
    // Cleo runs for council only; Dan for both.
    app.profile_for(cleo.0, council).await;
    app.profile_for(dan.0, council).await;
    let dan_in_mayor = app.profile_for(dan.0, mayor).await;

    let targeted = ask(
        &app,
        &member,
        10,
        Some(mayor),
        "What would you do first as mayor?",
    )
    .await;
    let (_, answered) = answer(&app, &ana.1, &targeted, "Fix the roads.").await;
    let anas = answered["id"].as_str().expect("id").to_owned();

    let (status, rebuttal) = rebut(
        &app,
        &ben.1,
        &anas,
        "  The roads are fine; fix the buses.  ",
    )
    .await;
    assert_eq!(status, 201, "{rebuttal}");
    assert_eq!(rebuttal["body"], "The roads are fine; fix the buses.");
    assert_eq!(rebuttal["candidate_id"], ben.0.to_string());
    let (status, _) = rebut(&app, &ben.1, &anas, "And another thing.").await;
    assert_eq!(status, 409, "one rebuttal per candidate per answer");
    let (status, problem) = rebut(&app, &ana.1, &anas, "I agree with myself.").await;
    assert_eq!(status, 403, "{problem}");
    for (token, why) in [
        (&cleo.1, "not in the question's contest"),
        (&member, "a member"),
    ] {
        let (status, _) = rebut(&app, token, &anas, "Objection.").await;
        assert_eq!(status, 403, "{why}");
    }
    let (status, dans) = rebut(&app, &dan.1, &anas, "Both matter.").await;
    assert_eq!(status, 201);
    assert_eq!(
        dans["profile_id"],
        dan_in_mayor.to_string(),
        "the question's contest"
    );
    expect(
        &app,
        422,
        Method::POST,
        &format!("/api/v1/answers/{anas}/rebuttals"),
        &cleo.1,
        Some(json!({"body": " \n "})),
    )
    .await;
    expect(
        &app,
        404,
        Method::POST,
        &format!("/api/v1/answers/{}/rebuttals", Uuid::now_v7()),
        &ben.1,
        Some(json!({"body": "Who?"})),
    )
    .await;

    // Listed with the answer (a count) and in full, oldest first, by pages.
    let (_, answers) = app
        .get_json(&format!("/api/v1/questions/{targeted}/answers"))
        .await;
    assert_eq!(answers["items"][0]["rebuttal_count"], 2, "{answers}");
    let (status, page) = app
        .get_json(&format!("/api/v1/answers/{anas}/rebuttals?limit=1"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["candidate_id"], ben.0.to_string());
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, page) = app
        .get_json(&format!(
            "/api/v1/answers/{anas}/rebuttals?limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(page["items"][0]["candidate_id"], dan.0.to_string());
    assert_eq!(page["next_cursor"], Value::Null);

    // Without a contest, a shared contest of the city is enough: Cleo and
    // Dan share council; Cleo and Ana share none.
    let open = ask(
        &app,
        &member,
        10,
        None,
        "How would you pay for new sidewalks?",
    )
    .await;
    let (_, answered) = answer(&app, &cleo.1, &open, "A bond.").await;
    let cleos = answered["id"].as_str().expect("id").to_owned();
    let (status, _) = rebut(&app, &ana.1, &cleos, "Bonds cost too much.").await;
    assert_eq!(status, 403);
    let (status, _) = rebut(&app, &dan.1, &cleos, "Use the surplus.").await;
    assert_eq!(status, 201);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_rebuttals_by_one_candidate_make_one_row_and_409_for_the_others() {
    let app = app().await;
    let (_, member) = one(&app, "member").await;
    let contest = app.contest_in(11).await;
    let candidates = app.users_with_role(2, "candidate").await;
    for (id, _) in &candidates {
        app.profile_for(*id, contest).await;
    }
    let question = ask(
        &app,
        &member,
        11,
        Some(contest),
        "Should the city build a new stadium?",
    )
    .await;
    let (_, answered) = answer(&app, &candidates[0].1, &question, "No.").await;
    let answer_id = answered["id"].as_str().expect("id").to_owned();

    let posts = (0..8).map(|n| {
        let (app, token, answer_id) = (&app, &candidates[1].1, &answer_id);
        async move {
            rebut(app, token, answer_id, &format!("Yes, reason {n}."))
                .await
                .0
        }
    });
    let mut statuses = futures_util::future::join_all(posts).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM rebuttals WHERE answer_id = $1::uuid")
        .bind(&answer_id)
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
    assert_eq!(rows, 1);
    app.stop().await;
}

#[tokio::test]
async fn rebuttals_follow_the_moderation_of_their_question() {
    let app = app().await;
    let (_, member) = one(&app, "member").await;
    let (_, moderator) = one(&app, "moderator").await;
    let contest = app.contest_in(12).await;
    let candidates = app.users_with_role(2, "candidate").await;
    for (id, _) in &candidates {
        app.profile_for(*id, contest).await;
    }
    let question = ask(
        &app,
        &member,
        12,
        Some(contest),
        "Will you raise the sales tax next year?",
    )
    .await;
    let (_, answered) = answer(&app, &candidates[0].1, &question, "No.").await;
    let answer_id = answered["id"].as_str().expect("id").to_owned();
    let (status, _) = rebut(&app, &candidates[1].1, &answer_id, "They will.").await;
    assert_eq!(status, 201);
    let list = format!("/api/v1/answers/{answer_id}/rebuttals");

    expect(
        &app,
        200,
        Method::POST,
        &format!("/api/v1/questions/{question}/moderation"),
        &moderator,
        Some(json!({"action": "remove", "reason": "test"})),
    )
    .await;
    let (status, _) = app.get_json(&list).await;
    assert_eq!(status, 404, "a removed question's rebuttals are hidden");
    let (status, page) = send(&app, Method::GET, &list, &moderator, None).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    // A candidate of the contest who has not rebutted yet is told nothing
    // exists, as for the question itself.
    let newcomer = app
        .users_with_role(1, "candidate")
        .await
        .pop()
        .expect("one");
    app.profile_for(newcomer.0, contest).await;
    let (status, _) = rebut(&app, &newcomer.1, &answer_id, "Hm.").await;
    assert_eq!(status, 404);
    let (_, answers) = send(
        &app,
        Method::GET,
        &format!("/api/v1/questions/{question}/answers"),
        &moderator,
        None,
    )
    .await;
    assert_eq!(answers["items"][0]["rebuttal_count"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_question_merges_only_into_one_of_the_same_contest_or_of_none() {
    let app = app().await;
    let (_, member) = one(&app, "member").await;
    let (_, moderator) = one(&app, "moderator").await;
    let mayor = app.contest_in(19).await;
    let council = app.contest_in(19).await;
    let for_mayor = ask(
        &app,
        &member,
        19,
        Some(mayor),
        "Will the mayor add bike lanes downtown?",
    )
    .await;
    let for_council = ask(
        &app,
        &member,
        19,
        Some(council),
        "Will the council add bike lanes on Elm?",
    )
    .await;
    let for_all = ask(
        &app,
        &member,
        19,
        None,
        "Who will add bike lanes near the schools?",
    )
    .await;
    let merge = |source: &str, target: &str| {
        (
            format!("/api/v1/questions/{source}/moderation"),
            json!({"action": "merge", "target_id": target}),
        )
    };
    let (path, body) = merge(&for_mayor, &for_council);
    expect(&app, 409, Method::POST, &path, &moderator, Some(body)).await;
    let (path, body) = merge(&for_all, &for_mayor);
    expect(&app, 409, Method::POST, &path, &moderator, Some(body)).await;
    let (path, body) = merge(&for_mayor, &for_all);
    expect(&app, 200, Method::POST, &path, &moderator, Some(body)).await;
    app.stop().await;
}
