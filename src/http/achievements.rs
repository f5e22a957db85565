//! `GET /users/me/achievements`: every achievement, earned or not, with the
//! learner's progress toward it (src/practice/achievements.rs defines them).

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppResult, Problem};
use crate::http::practice::{
    award_achievements, private_json, remember_user_write, user_freshness,
};
use crate::practice::achievements::{self, Skill, Totals};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_achievements))
}

/// One achievement and where the learner stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct AchievementView {
    pub id: String,
    pub title: String,
    pub description: String,
    /// What `progress` counts: `attempts`, `correct`, `xp`, `streak_days`
    /// (the longest streak), `tense_correct` or `triggers_mastered`.
    pub metric: String,
    pub goal: i64,
    /// The learner's count, capped at `goal`.
    pub progress: i64,
    /// When it was earned; null while it is not.
    pub earned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Achievements {
    /// Every achievement, in a fixed order.
    pub items: Vec<AchievementView>,
    pub earned: usize,
    pub total: usize,
    /// The unearned achievements closest to their goal (by share of the goal
    /// reached), at most three: what to aim for next.
    pub next: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct ProgressRow {
    attempts: Option<i32>,
    correct: Option<i32>,
    xp: Option<i64>,
    longest_streak: Option<i32>,
}

/// The caller's achievements with progress.
#[utoipa::path(get, path = "/users/me/achievements", tag = "practice",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every achievement, earned or not", body = Achievements),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_achievements(
    State(state): State<AppState>,
    user: AuthUser,
) -> AppResult<Response> {
    let shard = state.db.user(user.id)?;
    let freshness = user_freshness(&state, &shard, user.id).await;
    let user_id = user.id;
    let (progress, skills, mut recorded) = shard
        .read_consistent(freshness, |pool| async move {
            let progress = sqlx::query_as::<_, ProgressRow>(
                "SELECT p.attempts, p.correct, p.xp, p.longest_streak
                   FROM (SELECT $1::uuid AS user_id) me
                   LEFT JOIN user_progress p ON p.user_id = me.user_id",
            )
            .bind(user_id)
            .fetch_one(&pool)
            .await?;
            let skills = sqlx::query_as::<_, Skill>(
                "SELECT dimension, key, attempts, correct FROM user_skill_stats WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_all(&pool)
            .await?;
            let recorded: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT achievement, earned_at FROM user_achievements WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_all(&pool)
            .await?;
            Ok((progress, skills, recorded))
        })
        .await?;
    let totals = Totals {
        attempts: i64::from(progress.attempts.unwrap_or(0)),
        correct: i64::from(progress.correct.unwrap_or(0)),
        xp: progress.xp.unwrap_or(0),
        longest_streak: i64::from(progress.longest_streak.unwrap_or(0)),
        skills,
    };
    // Goals met but not recorded: an achievement defined after the learner
    // passed its goal. Recorded now, once (the insert skips existing rows).
    let missing: Vec<_> = totals
        .met()
        .filter(|a| !recorded.iter().any(|(id, _)| id == a.id))
        .collect();
    if !missing.is_empty() {
        let now = Utc::now();
        let mut tx = shard.write().begin().await?;
        shard.enter(&mut tx, user.id).await?;
        let earned = award_achievements(&mut tx, user.id, &missing, now).await?;
        let stored: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT achievement, earned_at FROM user_achievements WHERE user_id = $1",
        )
        .bind(user.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if !earned.is_empty() {
            remember_user_write(&state, &shard, user.id).await;
        }
        recorded = stored;
    }
    let items: Vec<AchievementView> = achievements::ALL
        .iter()
        .map(|a| AchievementView {
            id: a.id.to_owned(),
            title: a.title.to_owned(),
            description: a.description.to_owned(),
            metric: a.metric.key().to_owned(),
            goal: a.goal,
            progress: totals.value(a.metric).min(a.goal),
            earned_at: recorded
                .iter()
                .find(|(id, _)| id == a.id)
                .map(|(_, at)| *at),
        })
        .collect();
    let mut open: Vec<&AchievementView> = items.iter().filter(|i| i.earned_at.is_none()).collect();
    // Share reached, compared without floats: p1/g1 > p2/g2 <=> p1*g2 > p2*g1.
    open.sort_by(|a, b| (b.progress * a.goal).cmp(&(a.progress * b.goal)));
    let next = open.iter().take(3).map(|i| i.id.clone()).collect();
    let earned = items.iter().filter(|i| i.earned_at.is_some()).count();
    private_json(&Achievements {
        total: items.len(),
        earned,
        next,
        items,
    })
}
