//! Stage 2 for real: three instances of the binary behind the project's own
//! nginx configuration (deploy/nginx/nginx.conf), one of them killed and
//! restarted under load.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::services::services;
use crate::support::{BinaryServer, free_port, metric_value};

/// nginx running `deploy/nginx/nginx.conf` with a generated upstream list.
struct Nginx {
    child: tokio::process::Child,
    port: u16,
    _prefix: TempDir,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect(
            "nginx is not installed: run scripts/test, which installs it (apt-get install nginx)",
        )
}

impl Nginx {
    async fn start(upstream_ports: &[u16]) -> Nginx {
        let prefix = std::env::temp_dir().join(format!(
            "refbackend-nginx-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(prefix.join("cache")).expect("prefix");
        // Workers run as an unprivileged user when nginx starts as root.
        for (dir, mode) in [(prefix.clone(), 0o755), (prefix.join("cache"), 0o777)] {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("chmod");
        }
        let port = free_port();
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/nginx/nginx.conf"
        ))
        .expect("deploy/nginx/nginx.conf");
        assert!(shipped.contains("listen 8080;"));
        std::fs::write(
            prefix.join("nginx.conf"),
            shipped
                .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
                // Two cores: one worker leaves the other to the instances.
                .replace("worker_processes auto;", "worker_processes 1;"),
        )
        .expect("write conf");
        let servers: String = upstream_ports
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} weight=1 max_fails=1 fail_timeout=2s;\n"))
            .collect();
        std::fs::write(
            prefix.join("upstream.conf"),
            format!(
                "upstream refbackend {{\n    least_conn;\n{servers}    keepalive 16;\n}}\n\
                 upstream refbackend_live {{\n    least_conn;\n{servers}}}\n"
            ),
        )
        .expect("write upstream");
        let conf = prefix.join("nginx.conf");
        let child = tokio::process::Command::new(nginx_binary())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx");
        let nginx = Nginx {
            child,
            port,
            _prefix: TempDir(prefix),
        };
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(nginx.url("/nginx-health")).send().await.is_ok() {
                return nginx;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nginx did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Asks the master to stop (SIGTERM: it stops its workers too) and waits.
    async fn stop(mut self) {
        self.terminate();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Nginx {
    /// SIGKILL (kill_on_drop) would leave the workers running as orphans;
    /// SIGTERM makes the master take them down with it.
    fn drop(&mut self) {
        self.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behind_nginx_fail_no_get_while_one_is_killed_and_restarted() {
    let db = services().create_database().await;
    let pool = sqlx::PgPool::connect(&db.primary_url)
        .await
        .expect("connect");
    refbackend::seed::run(&pool).await.expect("seed");
    pool.close().await;

    let ports = [free_port(), free_port(), free_port()];
    // Two writers submit far more than a learner's per-minute allowance.
    let settings = [
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("DB_POOL_MAX_CONNECTIONS", "5"),
        ("RATE_LIMIT_ATTEMPTS_USER", "1000000/1m"),
    ];
    let mut instances = Vec::new();
    for port in ports {
        instances.push(BinaryServer::start(&db, port, &settings).await);
    }
    let nginx = Nginx::start(&ports).await;
    let client = reqwest::Client::builder()
        .no_gzip()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // A repeated public GET is served from nginx's cache.
    let first = client
        .get(nginx.url("/api/v1/cities?limit=3"))
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache-status"], "MISS");
    let second = client
        .get(nginx.url("/api/v1/cities?limit=3"))
        .send()
        .await
        .expect("sent");
    assert_eq!(second.headers()["x-cache-status"], "HIT");
    // Per-user data never is.
    let private = client.get(nginx.url("/health")).send().await.expect("sent");
    assert_ne!(private.headers()["x-cache-status"], "HIT");

    // Load through nginx: uncacheable /health and per-id city reads (cacheable
    // once each), from 8 clients, for a bounded time.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut workers = Vec::new();
    for w in 0..8_u64 {
        let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
        let base = nginx.url("");
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while tokio::time::Instant::now() < deadline {
                let path = if i % 2 == 0 {
                    "/health".to_owned()
                } else {
                    format!("/api/v1/cities/{}", 1 + i % 30)
                };
                match client.get(format!("{base}{path}")).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                i += 8;
            }
        }));
    }

    // Writes through the same window: each attempt carries its own
    // Idempotency-Key, and a client that gets no answer (or a 502/503 from
    // the dying instance) retries with the same key.
    let register = client
        .post(nginx.url("/api/v1/auth/register"))
        .json(&serde_json::json!({
            "email": "balanced@example.com",
            "password": "correct horse battery",
            "display_name": "Balanced",
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(register.status(), 201);
    let token = register.json::<serde_json::Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let post_retries = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..2_u64 {
        let (client, token, retries) = (client.clone(), token.clone(), post_retries.clone());
        let base = nginx.url("");
        writers.push(tokio::spawn(async move {
            let mut done: Vec<(String, String)> = Vec::new();
            let mut n = 0_u64;
            while tokio::time::Instant::now() < deadline {
                n += 1;
                let key = format!("writer-{w}-{n}");
                let url = format!("{base}/api/v1/exercises/{}/attempts", 1 + (n % 50));
                let mut answered = None;
                for _ in 0..40 {
                    let sent = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("idempotency-key", &key)
                        .json(&serde_json::json!({"answer": "tenga"}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 201 => {
                            let body: serde_json::Value = r.json().await.expect("json");
                            answered = body["attempt_id"].as_str().map(str::to_owned);
                            break;
                        }
                        Ok(r) if r.status().is_client_error() => {
                            panic!("attempt refused: {} {:?}", r.status(), r.text().await)
                        }
                        _ => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                done.push((
                    key,
                    answered.expect("an attempt never succeeded after 40 tries"),
                ));
            }
            done
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_port = instances[0].port;
    instances[0].child.start_kill().expect("kill");
    let _ = instances[0].child.wait().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    instances[0] = BinaryServer::start(&db, killed_port, &settings).await;

    for worker in workers {
        worker.await.expect("worker");
    }
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    let pool = sqlx::PgPool::connect(&db.primary_url)
        .await
        .expect("connect");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts a JOIN users u ON u.id = a.user_id
          WHERE u.email = 'balanced@example.com'",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    pool.close().await;
    let distinct: std::collections::HashSet<&str> =
        written.iter().map(|(_, id)| id.as_str()).collect();
    println!(
        "balancer: {} POSTs with Idempotency-Key ({} client retries), {stored} attempts stored",
        written.len(),
        post_retries.load(Ordering::Relaxed)
    );
    assert!(written.len() > 20, "enough writes: {}", written.len());
    assert_eq!(distinct.len(), written.len(), "one attempt per key");
    assert_eq!(
        usize::try_from(stored).expect("fits"),
        written.len(),
        "retries created nothing twice"
    );
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "balancer: {ok} GETs succeeded, {failed} failed, across a kill and restart of one of 3 instances"
    );
    assert!(ok > 500, "enough load to mean something: {ok}");
    assert_eq!(failed, 0, "no GET may fail while an instance dies");

    // The restarted instance takes traffic again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for _ in 0..20 {
            let _ = client.get(nginx.url("/health")).send().await;
        }
        let text = client
            .get(instances[0].url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metric_value(&text, "api_requests_total", &[("endpoint", "/health")]) > 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted instance got no traffic"
        );
    }
    nginx.stop().await;
}

#[tokio::test]
async fn nginx_forwards_the_request_id_and_answers_its_own_refusals_with_problem_documents() {
    let db = services().create_database().await;
    let port = free_port();
    // The app's own login quota is out of the way: every 429 here is nginx's.
    let settings = [
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("RATE_LIMIT_LOGIN_IP", "100000/1m"),
        ("RATE_LIMIT_LOGIN_ACCOUNT", "100000/1m"),
    ];
    let instance = BinaryServer::start(&db, port, &settings).await;
    let nginx = Nginx::start(&[port]).await;
    let client = reqwest::Client::builder()
        .no_gzip()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    // The client's request id reaches the instance and comes back.
    let echoed = client
        .get(nginx.url("/health"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .expect("sent");
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-123");

    // A flood from one address meets the edge brake (10 r/s, burst 20). The
    // requests go out together and are cheap to refuse (a made-up refresh
    // token, no password hash), so the brake, not the app's pace, decides.
    let flood = (0..60).map(|_| {
        let client = client.clone();
        let url = nginx.url("/api/v1/auth/refresh");
        async move {
            let r = client
                .post(url)
                .json(&serde_json::json!({"refresh_token": "made-up.token"}))
                .send()
                .await
                .expect("sent");
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            (status, headers, r.text().await.expect("body"))
        }
    });
    let answers = futures_util::future::join_all(flood).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert!(
        statuses.iter().any(|s| (400..429).contains(s)),
        "the first ones reach the app: {statuses:?}"
    );
    let refusal = answers
        .into_iter()
        .find(|(s, _, _)| *s == 429)
        .map(|(_, headers, body)| (headers, body));
    let (headers, body) = refusal.expect("nginx refused part of the flood");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers.contains_key("retry-after"));
    let problem: serde_json::Value = serde_json::from_str(&body).expect("problem JSON");
    assert_eq!(problem["status"], 429);

    // With no instance left, nginx's 503 is a problem document too.
    drop(instance);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let down = client
        .get(nginx.url("/api/v1/cities"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .expect("sent");
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()["content-type"], "application/problem+json");
    assert!(down.headers().contains_key("retry-after"));
    let problem: serde_json::Value = down.json().await.expect("problem JSON");
    assert_eq!(problem["status"], 503);
    nginx.stop().await;
}

#[tokio::test]
async fn behind_nginx_per_ip_limits_count_each_client_address_not_nginxs() {
    let db = services().create_database().await;
    let port = free_port();
    // nginx connects from 127.0.0.1 (as compose's nginx from its fixed
    // address): the instance trusts its X-Forwarded-For and nobody else's.
    let settings = [
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("RATE_LIMIT_LOGIN_IP", "3/1h"),
        ("RATE_LIMIT_LOGIN_ACCOUNT", "100000/1m"),
    ];
    let _instance = BinaryServer::start(&db, port, &settings).await;
    let nginx = Nginx::start(&[port]).await;
    // Two clients on two loopback addresses (all of 127/8 is local on Linux).
    let client_from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    };
    let (first, second) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    let login = |client: &reqwest::Client, n: usize, forwarded: Option<&str>| {
        let mut request = client
            .post(nginx.url("/api/v1/auth/login"))
            .json(&serde_json::json!({
                "email": format!("nobody-{n}@example.com"),
                "password": "not the password",
            }));
        if let Some(claimed) = forwarded {
            request = request.header("x-forwarded-for", claimed);
        }
        async move { request.send().await.expect("sent").status().as_u16() }
    };
    // The first client spends its address's three logins...
    for n in 0..3 {
        assert_eq!(login(&first, n, None).await, 401);
    }
    assert_eq!(login(&first, 3, None).await, 429, "its own bucket is empty");
    // ...and cannot start over by claiming another address: nginx appends the
    // real one, and only what nginx saw is believed.
    assert_eq!(login(&first, 4, Some("198.51.100.7")).await, 429);
    // The second client has a bucket of its own.
    assert_eq!(
        login(&second, 5, None).await,
        401,
        "another address, another bucket"
    );
    nginx.stop().await;
}

/// Live updates through the real nginx: a WebSocket subscriber lands on one
/// instance; a vote sent straight to the *other* instance reaches it (Redis
/// fan-out); an SSE stream comes through unbuffered too.
#[tokio::test]
async fn behind_nginx_a_vote_on_one_instance_reaches_a_websocket_subscriber_on_the_other() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    use crate::support::{TestApp, send};

    let a = TestApp::builder().without_replica().start().await;
    let b = TestApp::builder()
        .without_replica()
        .unseeded()
        .start_on(a.db.clone())
        .await;
    let nginx = Nginx::start(&[a.addr.port(), b.addr.port()]).await;
    let (_, author) = a.users_with_role(1, "member").await.remove(0);
    let (_, voter) = a.users_with_role(1, "member").await.remove(0);
    let (status, created) = send(
        &a,
        reqwest::Method::POST,
        "/api/v1/cities/1/questions",
        &author,
        Some(serde_json::json!({"body": "Will the new tram line reach the university?"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let question = created["question"]["id"].as_str().expect("id").to_owned();

    let url = format!(
        "ws://127.0.0.1:{}/api/v1/live?topics=question:{question}",
        nginx.port
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("websocket through nginx");
    assert_eq!(response.status(), 101);
    // Which instance holds it?
    let on_a = a.metric("ws_connections", &[("transport", "ws")]).await == 1.0;
    let on_b = b.metric("ws_connections", &[("transport", "ws")]).await == 1.0;
    assert!(on_a != on_b, "exactly one instance holds the socket");
    let other = if on_a { &b } else { &a };

    let (status, body) = send(
        other,
        reqwest::Method::PUT,
        &format!("/api/v1/questions/{question}/vote"),
        &voter,
        Some(serde_json::json!({"value": 1})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let event: serde_json::Value = serde_json::from_str(&text).expect("json frame");
                    if event["event"] == "question.votes" {
                        return event;
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the vote arrives within 10 s");
    assert_eq!(frame["topic"], format!("question:{question}"));
    assert_eq!(frame["data"]["upvotes"], 1);
    let _ = socket.close(None).await;

    // A bad handshake is a problem document, not a hung connection.
    let plain = reqwest::Client::new()
        .get(nginx.url("/api/v1/live?topics=city:1"))
        .send()
        .await
        .expect("request");
    assert!(plain.status().is_client_error(), "{}", plain.status());
    assert_eq!(plain.headers()["content-type"], "application/problem+json");

    // SSE through nginx: the keep-alive and events are not buffered away.
    let mut sse = reqwest::Client::new()
        .get(nginx.url(&format!("/api/v1/live/sse?topics=question:{question}")))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    let (status, _) = send(
        other,
        reqwest::Method::DELETE,
        &format!("/api/v1/questions/{question}/vote"),
        &voter,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !text.contains("question.votes") {
            let chunk = sse.chunk().await.expect("chunk").expect("open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("an SSE event through nginx within 10 s");
    drop(sse);
    nginx.stop().await;
    b.stop().await;
    a.stop().await;
}
