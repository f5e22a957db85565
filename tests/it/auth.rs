//! Accounts and authentication against real Postgres and Redis.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{TEST_SECRET, TestApp};

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = app
        .client
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

async fn register(app: &TestApp, email: &str) -> Value {
    let (status, body, _) = post(
        app,
        "/api/v1/auth/register",
        json!({"email": email, "password": "correct horse battery", "display_name": "Ana"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn login(
    app: &TestApp,
    email: &str,
    password: &str,
) -> (u16, Value, reqwest::header::HeaderMap) {
    post(
        app,
        "/api/v1/auth/login",
        json!({"email": email, "password": password}),
    )
    .await
}

async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    let (status, body, _) =
        post(app, "/api/v1/auth/refresh", json!({"refresh_token": token})).await;
    (status, body)
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
}

fn app_builder() -> crate::support::TestAppBuilder {
    TestApp::builder().without_replica().unseeded()
}

#[tokio::test]
async fn registering_returns_the_user_and_a_token_pair_that_works() {
    let app = app_builder().start().await;
    let body = register(&app, "  Ana.Lopez@Example.COM ").await;
    assert_eq!(body["user"]["email"], "ana.lopez@example.com", "normalized");
    assert_eq!(body["user"]["role"], "member");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let access = body["access_token"].as_str().expect("access token");
    let response = me(&app, access).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    let profile: Value = response.json().await.expect("json");
    assert_eq!(profile["id"], body["user"]["id"]);
    // The password never comes back, not even hashed.
    assert!(!body.to_string().contains("argon2"));
    app.stop().await;
}

#[tokio::test]
async fn registration_reports_every_invalid_field() {
    let app = app_builder().start().await;
    let (status, body, _) = post(
        &app,
        "/api/v1/auth/register",
        json!({"email": "not-an-email", "password": "short", "display_name": "   "}),
    )
    .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, vec!["email", "password", "display_name"]);
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_registrations_of_one_email_create_exactly_one_account() {
    // The race is the point, not load shedding: let every sign-up wait for a
    // hashing slot (50 OWASP hashes queued behind each other took over the
    // 10 s request timeout on a loaded CI box: the last one got a 503).
    let app = app_builder()
        .env("RATE_LIMIT_REGISTER_IP", "1000/1h")
        .env("PASSWORD_HASH_QUEUE_TIMEOUT", "60s")
        .env("HTTP_REQUEST_TIMEOUT", "60s")
        .start()
        .await;
    let attempts = (0..50).map(|i| {
        // Same address, different spellings: one account.
        let email = if i % 2 == 0 {
            "Race@Example.com"
        } else {
            "race@example.com"
        };
        post(
            &app,
            "/api/v1/auth/register",
            json!({"email": email, "password": "correct horse battery", "display_name": "R"}),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|(s, _, _)| *s == 201).count();
    let conflicts = results.iter().filter(|(s, _, _)| *s == 409).count();
    assert_eq!(
        (created, conflicts),
        (1, 49),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
    assert_eq!(count, 1);
    app.stop().await;
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer_after_the_same_work() {
    let app = app_builder()
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "100/1h")
        .start()
        .await;
    register(&app, "known@example.com").await;
    let passwords = &app.state.auth.passwords;

    let before = passwords.runs();
    let (s1, b1, h1) = login(&app, "nobody@example.com", "whatever password").await;
    let unknown_runs = passwords.runs() - before;
    let before = passwords.runs();
    let (s2, b2, h2) = login(&app, "known@example.com", "wrong password!").await;
    let wrong_runs = passwords.runs() - before;

    assert_eq!((s1, s2), (401, 401));
    assert_eq!(b1, b2, "identical problem documents");
    assert_eq!(h1.get("www-authenticate"), h2.get("www-authenticate"));
    // The same argon2 work on both paths: an unknown email is verified against
    // a dummy hash with the same parameters, so timing does not tell them apart.
    assert_eq!((unknown_runs, wrong_runs), (1, 1));
    app.stop().await;
}

#[tokio::test]
async fn refreshing_rotates_the_token_and_reusing_an_old_one_revokes_the_family() {
    let app = app_builder().start().await;
    let first = register(&app, "rotate@example.com").await;
    let r1 = first["refresh_token"].as_str().expect("r1").to_owned();
    let (status, second) = refresh(&app, &r1).await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().expect("r2").to_owned();
    assert_ne!(r1, r2, "rotated");
    assert_eq!(
        me(&app, second["access_token"].as_str().expect("access"))
            .await
            .status(),
        200
    );

    // r1 again: theft detected, the family (r2 included) is revoked.
    let (status, body) = refresh(&app, &r1).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("already used"))
    );
    let (status, _) = refresh(&app, &r2).await;
    assert_eq!(status, 401, "the whole family is revoked");
    assert_eq!(
        app.metric("auth_events_total", &[("event", "refresh_reuse_detected")])
            .await,
        1.0
    );

    // Another login is a new family and unaffected.
    let (status, fresh, _) = login(&app, "rotate@example.com", "correct horse battery").await;
    assert_eq!(status, 200);
    let (status, _) = refresh(&app, fresh["refresh_token"].as_str().expect("r")).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn logout_revokes_the_refresh_family_and_garbage_tokens_are_refused() {
    let app = app_builder().start().await;
    let body = register(&app, "bye@example.com").await;
    let r = body["refresh_token"].as_str().expect("r");
    let (status, _, _) = post(&app, "/api/v1/auth/logout", json!({"refresh_token": r})).await;
    assert_eq!(status, 204);
    assert_eq!(refresh(&app, r).await.0, 401);
    // Logging out twice, or with nonsense, reveals nothing.
    assert_eq!(
        post(&app, "/api/v1/auth/logout", json!({"refresh_token": r}))
            .await
            .0,
        204
    );
    assert_eq!(
        post(
            &app,
            "/api/v1/auth/logout",
            json!({"refresh_token": "nonsense"})
        )
        .await
        .0,
        204
    );
    assert_eq!(refresh(&app, "nonsense").await.0, 401);
    app.stop().await;
}

/// Signs `claims` with `secret` under `alg` and `kid`.
fn forge(claims: &Value, alg: Algorithm, kid: &str, secret: &[u8]) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("encode")
}

#[tokio::test]
async fn tampered_tokens_wrong_algorithms_audiences_issuers_and_expired_tokens_get_401() {
    let app = app_builder().start().await;
    let body = register(&app, "tamper@example.com").await;
    let good = body["access_token"].as_str().expect("token").to_owned();
    let sub = body["user"]["id"].as_str().expect("id").to_owned();
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str, iss: &str, exp: i64| {
        json!({"sub": sub, "role": "admin", "iat": now - 10, "exp": exp, "aud": aud, "iss": iss,
               "jti": "7b0d0c1e-8b4e-4c61-9a51-6c0e1b7a2f10"})
    };
    let secret = TEST_SECRET.as_bytes();
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none_token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "test-1"})),
        b64(&claims("refbackend-api", "refbackend", now + 600))
    );
    let mut tampered = good.clone();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        ("alg none", none_token),
        (
            "HS512",
            forge(
                &claims("refbackend-api", "refbackend", now + 600),
                Algorithm::HS512,
                "test-1",
                secret,
            ),
        ),
        (
            "wrong aud",
            forge(
                &claims("someone-else", "refbackend", now + 600),
                Algorithm::HS256,
                "test-1",
                secret,
            ),
        ),
        (
            "wrong iss",
            forge(
                &claims("refbackend-api", "evil", now + 600),
                Algorithm::HS256,
                "test-1",
                secret,
            ),
        ),
        (
            "expired",
            forge(
                &claims("refbackend-api", "refbackend", now - 120),
                Algorithm::HS256,
                "test-1",
                secret,
            ),
        ),
        (
            "unknown kid",
            forge(
                &claims("refbackend-api", "refbackend", now + 600),
                Algorithm::HS256,
                "other",
                secret,
            ),
        ),
        (
            "wrong secret",
            forge(
                &claims("refbackend-api", "refbackend", now + 600),
                Algorithm::HS256,
                "test-1",
                b"another-secret-another-secret-another-secret",
            ),
        ),
        ("tampered signature", tampered),
    ];
    for (what, token) in cases {
        let response = me(&app, &token).await;
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(challenge.contains("invalid_token"), "{what}: {challenge}");
    }
    // A correctly forged token with our secret is, of course, accepted: the
    // checks above fail for the reason they name, not by accident.
    let ok = forge(
        &claims("refbackend-api", "refbackend", now + 600),
        Algorithm::HS256,
        "test-1",
        secret,
    );
    assert_eq!(me(&app, &ok).await.status(), 200);
    let missing = app.get("/api/v1/users/me").await;
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    app.stop().await;
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_existing_tokens_valid_until_the_old_key_is_dropped() {
    let old_secret = "Old0key-1q2w3e4r5t6y7u8i9o0pAaSsDdFfGgHhJjKk";
    let new_secret = "New1key-zXcVbNm0987654321LkJhGfDsAqWeRtYuIoP";
    let before = app_builder()
        .env("JWT_KID", "2026-10")
        .env("JWT_SECRET", old_secret)
        .start()
        .await;
    let token = register(&before, "rotation@example.com").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let db = before.db.clone();
    before.stop().await;

    let during = app_builder()
        .env("JWT_KID", "2026-11")
        .env("JWT_SECRET", new_secret)
        .env("JWT_PREVIOUS_KEYS", &format!("2026-10:{old_secret}"))
        .start_on(db.clone())
        .await;
    assert_eq!(
        me(&during, &token).await.status(),
        200,
        "old tokens still accepted"
    );
    let (_, fresh, _) = login(&during, "rotation@example.com", "correct horse battery").await;
    let new_token = fresh["access_token"].as_str().expect("token").to_owned();
    during.stop().await;

    let after = app_builder()
        .env("JWT_KID", "2026-11")
        .env("JWT_SECRET", new_secret)
        .start_on(db)
        .await;
    assert_eq!(me(&after, &token).await.status(), 401, "old key dropped");
    assert_eq!(
        me(&after, &new_token).await.status(),
        200,
        "new tokens signed with the new key"
    );
    after.stop().await;
}

/// Registers a user and makes them an admin directly in the database.
async fn admin_token(app: &TestApp, email: &str) -> String {
    let body = register(app, email).await;
    let id: uuid::Uuid = body["user"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    refbackend::auth::store::set_role(
        app.state.db.write(),
        None,
        id,
        refbackend::auth::Role::Admin,
    )
    .await
    .expect("promote");
    let (_, tokens, _) = login(app, email, "correct horse battery").await;
    tokens["access_token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn admin_endpoints_check_the_role_on_the_server() {
    let app = app_builder().start().await;
    let member = register(&app, "member@example.com").await;
    let member_token = member["access_token"].as_str().expect("token");
    let victim = register(&app, "victim@example.com").await;
    let victim_id = victim["user"]["id"].as_str().expect("id");

    // A member cannot deactivate or promote anyone — not even themself.
    let url = app.url(&format!("/api/v1/admin/users/{victim_id}/deactivate"));
    let response = app
        .client
        .post(&url)
        .bearer_auth(member_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    let self_promote = app
        .client
        .put(app.url(&format!(
            "/api/v1/admin/users/{}/role",
            member["user"]["id"].as_str().expect("id")
        )))
        .bearer_auth(member_token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(self_promote.status(), 403);

    // An admin can.
    let admin = admin_token(&app, "admin@example.com").await;
    let response = app
        .client
        .post(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    let missing = app
        .client
        .post(app.url("/api/v1/admin/users/0195a3a8-0000-7000-8000-000000000000/deactivate"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let app = app_builder().start().await;
    for round in 0..5 {
        let a_email = format!("admin-a-{round}@example.com");
        let b_email = format!("admin-b-{round}@example.com");
        let a = admin_token(&app, &a_email).await;
        let b = admin_token(&app, &b_email).await;
        let id_of = |token: &str| {
            let claims = token.split('.').nth(1).expect("payload");
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
                    .expect("base64");
            serde_json::from_slice::<Value>(&bytes).expect("json")["sub"]
                .as_str()
                .expect("sub")
                .to_owned()
        };
        let demote = |token: String, target: String| {
            let app = &app;
            async move {
                app.client
                    .put(app.url(&format!("/api/v1/admin/users/{target}/role")))
                    .bearer_auth(token)
                    .json(&json!({"role": "member"}))
                    .send()
                    .await
                    .expect("sent")
                    .status()
                    .as_u16()
            }
        };
        let (a_id, b_id) = (id_of(&a), id_of(&b));
        let (one, two) = tokio::join!(demote(a, b_id.clone()), demote(b, a_id.clone()));
        let admins: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE id::text = ANY($1) AND role = 'admin'",
        )
        .bind([a_id, b_id])
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
        assert_eq!(admins, 1, "round {round}: statuses {one} and {two}");
        let mut statuses = [one, two];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 403], "round {round}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_deactivated_user_can_no_longer_sign_in_refresh_or_use_their_token() {
    let app = app_builder().start().await;
    let user = register(&app, "leaving@example.com").await;
    let access = user["access_token"].as_str().expect("access");
    let refresh_token = user["refresh_token"].as_str().expect("refresh");
    let admin = admin_token(&app, "boss@example.com").await;
    let url = app.url(&format!(
        "/api/v1/admin/users/{}/deactivate",
        user["user"]["id"].as_str().expect("id")
    ));
    assert_eq!(
        app.client
            .post(&url)
            .bearer_auth(&admin)
            .send()
            .await
            .expect("sent")
            .status(),
        204
    );

    assert_eq!(refresh(&app, refresh_token).await.0, 401);
    assert_eq!(
        login(&app, "leaving@example.com", "correct horse battery")
            .await
            .0,
        401
    );
    assert_eq!(me(&app, access).await.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn access_tokens_expire_after_their_lifetime() {
    let app = app_builder().env("ACCESS_TOKEN_TTL", "1s").start().await;
    let user = register(&app, "brief@example.com").await;
    let access = user["access_token"].as_str().expect("access");
    assert_eq!(me(&app, access).await.status(), 200);
    // Lifetime plus the verifier's clock leeway.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(me(&app, access).await.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn a_user_only_ever_reads_and_changes_their_own_profile() {
    let app = app_builder().start().await;
    let ana = register(&app, "ana@example.com").await;
    let ben = register(&app, "ben@example.com").await;
    let ana_token = ana["access_token"].as_str().expect("token");
    let response = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(ana_token)
        .json(&json!({"display_name": "Ana B.", "timezone": "Europe/Madrid"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.expect("json");
    assert_eq!(updated["id"], ana["user"]["id"]);
    assert_eq!(updated["timezone"], "Europe/Madrid");
    let ben_now: Value = me(&app, ben["access_token"].as_str().expect("token"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ben_now["display_name"], "Ana", "Ben's profile is untouched");
    assert_eq!(ben_now["email"], "ben@example.com");
    // There is no route to another user's profile.
    let by_id = app
        .client
        .get(app.url(&format!(
            "/api/v1/users/{}",
            ben["user"]["id"].as_str().expect("id")
        )))
        .bearer_auth(ana_token)
        .send()
        .await
        .expect("sent");
    assert_eq!(by_id.status(), 404);
    // An unknown time zone is a field error.
    let bad = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(ana_token)
        .json(&json!({"timezone": "Mars/Olympus"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn login_attempts_per_account_are_limited_across_instances_sharing_redis() {
    let a = app_builder()
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "3/1h")
        .start()
        .await;
    register(&a, "target@example.com").await;
    let b = app_builder()
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "3/1h")
        .start_on(a.db.clone())
        .await;
    assert_eq!(login(&a, "target@example.com", "guess one").await.0, 401);
    assert_eq!(login(&b, "target@example.com", "guess two").await.0, 401);
    let (status, _, headers) = login(&a, "target@example.com", "correct horse battery").await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-remaining"], "0");
    // The fourth attempt is refused on either instance, even with the right password.
    let (status, body, headers) = login(&b, "TARGET@example.com", "correct horse battery").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        headers["retry-after"]
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .expect("seconds")
            >= 1
    );
    assert_eq!(headers["ratelimit-limit"], "3");
    assert_eq!(body["type"], "/problems/rate-limited");
    assert!(
        b.metric(
            "rate_limit_decisions_total",
            &[("limiter", "login-account"), ("backend", "redis")]
        )
        .await
            >= 2.0
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn forwarded_client_addresses_count_only_behind_a_trusted_proxy() {
    let login_as = |app: &TestApp, forwarded: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": "x@example.com", "password": "whatever password"}))
            .send()
    };
    // Behind a trusted proxy (the test client is 127.0.0.1): limits follow the forwarded client.
    let trusted = app_builder()
        .env("TRUSTED_PROXIES", "127.0.0.1")
        .env("RATE_LIMIT_LOGIN_IP", "2/1h")
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "100/1h")
        .start()
        .await;
    for expected in [401, 401, 429] {
        assert_eq!(
            login_as(&trusted, "203.0.113.1")
                .await
                .expect("sent")
                .status(),
            expected
        );
    }
    assert_eq!(
        login_as(&trusted, "203.0.113.2")
            .await
            .expect("sent")
            .status(),
        401,
        "another client"
    );
    trusted.stop().await;

    // Not trusted: the header is ignored and every request counts against the peer.
    let direct = app_builder()
        .env("RATE_LIMIT_LOGIN_IP", "2/1h")
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "100/1h")
        .start()
        .await;
    assert_eq!(
        login_as(&direct, "203.0.113.1")
            .await
            .expect("sent")
            .status(),
        401
    );
    assert_eq!(
        login_as(&direct, "203.0.113.2")
            .await
            .expect("sent")
            .status(),
        401
    );
    assert_eq!(
        login_as(&direct, "203.0.113.3")
            .await
            .expect("sent")
            .status(),
        429,
        "spoofing does not help"
    );
    direct.stop().await;
}

#[tokio::test]
async fn with_redis_down_login_limits_fall_back_to_the_instance_and_requests_still_succeed() {
    let app = app_builder()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "2/1h")
        .start()
        .await;
    register(&app, "offline@example.com").await;
    assert_eq!(
        login(&app, "offline@example.com", "correct horse battery")
            .await
            .0,
        200
    );
    assert_eq!(
        login(&app, "offline@example.com", "wrong password!")
            .await
            .0,
        401
    );
    assert_eq!(
        login(&app, "offline@example.com", "correct horse battery")
            .await
            .0,
        429
    );
    assert!(
        app.metric(
            "rate_limit_decisions_total",
            &[("limiter", "login-account"), ("backend", "local")]
        )
        .await
            >= 3.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_past_the_hashing_queue_gets_quick_503s_not_timeouts() {
    // One hashing slot and almost no queue: concurrent sign-ins beyond the
    // one being hashed are shed at once.
    let app = app_builder()
        .env("PASSWORD_HASH_CONCURRENCY", "1")
        .env("PASSWORD_HASH_QUEUE_TIMEOUT", "1ms")
        .env("RATE_LIMIT_LOGIN_ACCOUNT", "1000/1m")
        .env("RATE_LIMIT_LOGIN_IP", "1000/1m")
        .start()
        .await;
    register(&app, "flood@example.com").await;
    let flood = (0..16).map(|_| login(&app, "flood@example.com", "correct horse battery"));
    let answers = futures_util::future::join_all(flood).await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let shed: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert_eq!(ok + shed.len(), 16, "only successes and 503s: {answers:?}");
    assert!(ok >= 1, "the slot keeps working");
    let (_, problem, headers) = shed.first().expect("some sign-ins were shed");
    assert_eq!(problem["type"], "/problems/unavailable");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        app.metric("auth_events_total", &[("event", "hash_shed")])
            .await,
        shed.len() as f64
    );
    // Once the flood is over, signing in works again.
    let (status, _, _) = login(&app, "flood@example.com", "correct horse battery").await;
    assert_eq!(status, 200);
    app.stop().await;
}

/// `GET path` with a token: the status.
async fn status_with(app: &TestApp, path: &str, token: &str) -> u16 {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

/// Polls until `check` holds or `deadline` passes; false on timeout.
async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_deactivation_or_demotion_applies_to_live_tokens_on_every_instance_at_once() {
    // A cache TTL of an hour: only the change announcement can make this pass.
    let a = app_builder().env("ACCOUNT_CACHE_TTL", "1h").start().await;
    let b = app_builder()
        .env("ACCOUNT_CACHE_TTL", "1h")
        .start_on(a.db.clone())
        .await;
    let admin = admin_token(&a, "chief@example.com").await;
    let mut people = a.users_with_role(2, "moderator").await;
    let (leaver_id, leaver) = people.remove(0);
    let (moderator_id, moderator) = people.remove(0);
    // Both instances have read (and cached) both accounts.
    for app in [&a, &b] {
        assert_eq!(status_with(app, "/api/v1/users/me", &leaver).await, 200);
        assert_eq!(
            status_with(app, "/api/v1/moderation/questions", &moderator).await,
            200
        );
    }

    let deactivate = a
        .client
        .post(a.url(&format!("/api/v1/admin/users/{leaver_id}/deactivate")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(deactivate.status(), 204);
    let demote = a
        .client
        .put(a.url(&format!("/api/v1/admin/users/{moderator_id}/role")))
        .bearer_auth(&admin)
        .json(&json!({"role": "member"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(demote.status(), 200);

    // On the instance that made the change: at once.
    assert_eq!(status_with(&a, "/api/v1/users/me", &leaver).await, 401);
    assert_eq!(
        status_with(&a, "/api/v1/moderation/questions", &moderator).await,
        403
    );
    // On the other: as soon as the announcement arrives (well within 5 s).
    assert!(
        eventually(Duration::from_secs(5), || async {
            status_with(&b, "/api/v1/users/me", &leaver).await == 401
        })
        .await,
        "instance B still accepts the deactivated user's token"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            status_with(&b, "/api/v1/moderation/questions", &moderator).await == 403
        })
        .await,
        "instance B still lets the demoted moderator moderate"
    );
    // A deactivated user cannot write either (here, a profile change).
    let write = b
        .client
        .patch(b.url("/api/v1/users/me"))
        .bearer_auth(&leaver)
        .json(&json!({"display_name": "Still here"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(write.status(), 401);
    let name: String = sqlx::query_scalar("SELECT display_name FROM users WHERE id = $1")
        .bind(leaver_id)
        .fetch_one(a.state.db.write())
        .await
        .expect("row");
    assert_eq!(name, "Resident", "nothing was written");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_nul_character_in_any_text_input_is_a_4xx_never_a_500() {
    let app = app_builder().start().await;
    let user = register(&app, "nul@example.com").await;
    let token = user["access_token"].as_str().expect("token");

    let (status, body, _) = login(&app, "a\u{0}@example.com", "correct horse battery").await;
    assert_eq!(status, 422, "{body}");
    let (status, body, _) = post(
        &app,
        "/api/v1/auth/register",
        json!({"email": "b@example.com", "password": "pass\u{0}word!!", "display_name": "B"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    for update in [
        json!({"timezone": "Europe/Ma\u{0}drid"}),
        json!({"display_name": "A\u{0}na"}),
    ] {
        let response = app
            .client
            .patch(app.url("/api/v1/users/me"))
            .bearer_auth(token)
            .json(&update)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 422, "{update}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // Query strings, cursors and paths.
    for path in [
        "/api/v1/cities?cursor=WyJBdXNcdTAwMDB0aW4iLDdd",
        "/api/v1/cities?limit=1%00",
        "/api/v1/verbs?search=ha%00blar",
        "/api/v1/verbs/habl%00ar/conjugations",
    ] {
        let response = app.get(path).await;
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_profile_update_by_a_deactivated_account_writes_nothing() {
    // No account cache: the check in the UPDATE itself is what is tested.
    let app = app_builder().env("ACCOUNT_CACHE_TTL", "0s").start().await;
    let (id, _) = app.users_with_role(1, "member").await.remove(0);
    refbackend::auth::store::set_active(app.state.db.write(), None, id, false)
        .await
        .expect("deactivate");
    let row = refbackend::auth::store::update_profile(
        app.state.db.write(),
        id,
        Some("Changed"),
        Some("Europe/Madrid"),
    )
    .await
    .expect("query");
    assert!(row.is_none());
    let (name, zone): (String, String) =
        sqlx::query_as("SELECT display_name, timezone FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(app.state.db.write())
            .await
            .expect("row");
    assert_eq!((name.as_str(), zone.as_str()), ("Resident", "UTC"));
    app.stop().await;
}
