//! What a goose user does: one function per transaction.
//!
//! Every request is named after its route (`/api/v1/exercises/{id}`; goose adds
//! the method), so
//! the reports and the summary group requests by route, not by id. A user
//! registers once, in an on-start transaction, and keeps its token for the
//! whole run; the login transaction logs that same account in again.

use goose::prelude::*;
use serde_json::{Value, json};

/// Number of seeded cities the civic flows spread over (ids 1..=CITIES).
const CITIES: u64 = 5;
const PASSWORD: &str = "load test passphrase";

/// A goose user's account, kept in its session data.
#[derive(Clone)]
pub struct Account {
    email: String,
    token: String,
}

fn account(user: &GooseUser) -> Result<Account, Box<TransactionError>> {
    user.get_session_data::<Account>()
        .cloned()
        .ok_or_else(|| Box::new(TransactionError::Custom("not registered".into())))
}

/// A cheap pseudo-random number, enough to pick ids and branches.
fn random(below: u64) -> u64 {
    let n = uuid::Uuid::new_v4().as_u128();
    (n % u128::from(below.max(1))) as u64
}

/// Sends `method path` named `name`, with the user's token and an optional JSON
/// body and idempotency key; returns the parsed body of a successful response.
async fn send(
    user: &mut GooseUser,
    method: GooseMethod,
    path: &str,
    name: &str,
    token: Option<&str>,
    body: Option<Value>,
    idempotency_key: bool,
) -> Result<Option<Value>, Box<TransactionError>> {
    let mut builder = user.get_request_builder(&method, path)?;
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if idempotency_key {
        builder = builder.header("idempotency-key", uuid::Uuid::new_v4().to_string());
    }
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let request = GooseRequest::builder()
        .method(method)
        .path(path)
        .name(name)
        .set_request_builder(builder)
        .build();
    let goose = user.request(request).await?;
    match goose.response {
        Ok(response) if response.status().is_success() => Ok(response.json::<Value>().await.ok()),
        // Goose has already counted the failure (status or transport error).
        _ => Ok(None),
    }
}

/// The ids of a page's items (question ids are UUIDs).
fn ids(body: &Option<Value>) -> Vec<String> {
    body.as_ref()
        .and_then(|b| b.get("items"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| match item.get("id")? {
                    Value::String(id) => Some(id.clone()),
                    Value::Number(id) => Some(id.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /health`.
pub async fn health(user: &mut GooseUser) -> TransactionResult {
    send(
        user,
        GooseMethod::Get,
        "/health",
        "/health",
        None,
        None,
        false,
    )
    .await?;
    Ok(())
}

/// How often a shed or rate-limited registration is tried again.
const REGISTER_TRIES: u32 = 10;

/// On start: registers a new, unique account and keeps its access token. A
/// 503 or 429 (the server shedding sign-ups under load) is retried after its
/// `Retry-After`, as a real client would; every try is still counted, so the
/// refusals stay in the report. Without this, one shed sign-up would turn all
/// of that user's later requests into 401s and measure the test, not the server.
pub async fn register(user: &mut GooseUser) -> TransactionResult {
    let email = format!("lt-{}@loadtest.example.com", uuid::Uuid::new_v4().simple());
    let body = json!({"email": email, "password": PASSWORD, "display_name": "Load Test"});
    let mut token = String::new();
    for _ in 0..REGISTER_TRIES {
        let builder = user
            .get_request_builder(&GooseMethod::Post, "/api/v1/auth/register")?
            .json(&body);
        let request = GooseRequest::builder()
            .method(GooseMethod::Post)
            .path("/api/v1/auth/register")
            .name("/api/v1/auth/register")
            .set_request_builder(builder)
            .build();
        let goose = user.request(request).await?;
        let Ok(response) = goose.response else {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            let created = response.json::<Value>().await.ok();
            token = created
                .as_ref()
                .and_then(|b| b.get("access_token"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            break;
        }
        if status != 503 && status != 429 {
            break;
        }
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 10);
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    }
    user.set_session_data(Account { email, token });
    Ok(())
}

/// `POST /api/v1/auth/login` with the user's account; refreshes its token.
pub async fn login(user: &mut GooseUser) -> TransactionResult {
    let mut me = account(user)?;
    let body = json!({"email": me.email, "password": PASSWORD});
    let response = send(
        user,
        GooseMethod::Post,
        "/api/v1/auth/login",
        "/api/v1/auth/login",
        None,
        Some(body),
        false,
    )
    .await?;
    if let Some(token) = response
        .as_ref()
        .and_then(|b| b.get("access_token"))
        .and_then(Value::as_str)
    {
        me.token = token.to_string();
        user.set_session_data(me);
    }
    Ok(())
}

/// A practice session: browse exercises, get items, answer one, read progress.
pub async fn learner(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let token = Some(me.token.as_str());
    let page = send(
        user,
        GooseMethod::Get,
        "/api/v1/exercises?limit=20",
        "/api/v1/exercises",
        None,
        None,
        false,
    )
    .await?;
    let next = send(
        user,
        GooseMethod::Get,
        "/api/v1/practice/next?limit=5",
        "/api/v1/practice/next",
        token,
        None,
        false,
    )
    .await?;
    // Answer a practice item, else an exercise from the page.
    let item = next
        .as_ref()
        .and_then(|b| b.get("items"))
        .and_then(Value::as_array)
        .and_then(|items| items.first())
        .and_then(|item| item.get("exercise"))
        .cloned()
        .or_else(|| {
            let list = page.as_ref()?.get("items")?.as_array()?;
            list.get(random(list.len() as u64) as usize).cloned()
        });
    if let Some(exercise) = item
        && let Some(id) = exercise.get("id").and_then(Value::as_i64)
    {
        // A choice when there are choices; otherwise a plausible (often wrong) form.
        let answer = exercise
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.get(random(c.len() as u64) as usize))
            .and_then(Value::as_str)
            .unwrap_or(["tenga", "tengo", "haga", "sea"][random(4) as usize])
            .to_string();
        let body = json!({"answer": answer, "duration_ms": 3000 + random(5000)});
        send(
            user,
            GooseMethod::Post,
            &format!("/api/v1/exercises/{id}/attempts"),
            "/api/v1/exercises/{id}/attempts",
            token,
            Some(body),
            true,
        )
        .await?;
    }
    send(
        user,
        GooseMethod::Get,
        "/api/v1/users/me/progress",
        "/api/v1/users/me/progress",
        token,
        None,
        false,
    )
    .await?;
    send(
        user,
        GooseMethod::Get,
        "/api/v1/users/me/dashboard",
        "/api/v1/users/me/dashboard",
        token,
        None,
        false,
    )
    .await?;
    Ok(())
}

/// A resident: read a city's hot questions, vote on one, sometimes ask one.
pub async fn civic(user: &mut GooseUser) -> TransactionResult {
    let me = account(user)?;
    let token = Some(me.token.as_str());
    let city = 1 + random(CITIES);
    let list = send(
        user,
        GooseMethod::Get,
        &format!("/api/v1/cities/{city}/questions?sort=hot&limit=20"),
        "/api/v1/cities/{id}/questions",
        None,
        None,
        false,
    )
    .await?;
    let questions = ids(&list);
    if let Some(id) = questions.get(random(questions.len() as u64) as usize) {
        let value = if random(4) == 0 { -1 } else { 1 };
        send(
            user,
            GooseMethod::Put,
            &format!("/api/v1/questions/{id}/vote"),
            "/api/v1/questions/{id}/vote",
            token,
            Some(json!({"value": value})),
            false,
        )
        .await?;
    }
    // One visit in ten asks a question (always, while the city has few).
    if questions.len() < 5 || random(10) == 0 {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let body = json!({
            "body": format!("Load test {tag}: when will the city publish its plan for district {}?", random(1000)),
            "tags": ["loadtest"],
        });
        send(
            user,
            GooseMethod::Post,
            &format!("/api/v1/cities/{city}/questions"),
            "/api/v1/cities/{id}/questions",
            token,
            Some(body),
            true,
        )
        .await?;
    }
    Ok(())
}
