//! Reference data every environment needs: real cities for CivicQ and the
//! subjunctive-practice exercise bank. Idempotent: running it again updates the
//! rows in place (by slug) and adds nothing twice.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::practice::bank::{self, Exercise};

/// What one seed run loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeded {
    pub cities: usize,
    pub exercises: usize,
    /// Exercise rows inserted or changed by this run (0 when re-seeding).
    pub exercises_changed: u64,
}

/// (slug, name, region, country, IANA time zone, population from the 2020 US census)
const CITIES: &[(&str, &str, &str, &str, &str, i32)] = &[
    (
        "new-york-ny",
        "New York",
        "New York",
        "US",
        "America/New_York",
        8_804_190,
    ),
    (
        "los-angeles-ca",
        "Los Angeles",
        "California",
        "US",
        "America/Los_Angeles",
        3_898_747,
    ),
    (
        "chicago-il",
        "Chicago",
        "Illinois",
        "US",
        "America/Chicago",
        2_746_388,
    ),
    (
        "houston-tx",
        "Houston",
        "Texas",
        "US",
        "America/Chicago",
        2_304_580,
    ),
    (
        "phoenix-az",
        "Phoenix",
        "Arizona",
        "US",
        "America/Phoenix",
        1_608_139,
    ),
    (
        "philadelphia-pa",
        "Philadelphia",
        "Pennsylvania",
        "US",
        "America/New_York",
        1_603_797,
    ),
    (
        "san-antonio-tx",
        "San Antonio",
        "Texas",
        "US",
        "America/Chicago",
        1_434_625,
    ),
    (
        "san-diego-ca",
        "San Diego",
        "California",
        "US",
        "America/Los_Angeles",
        1_386_932,
    ),
    (
        "dallas-tx",
        "Dallas",
        "Texas",
        "US",
        "America/Chicago",
        1_304_379,
    ),
    (
        "san-jose-ca",
        "San Jose",
        "California",
        "US",
        "America/Los_Angeles",
        1_013_240,
    ),
    (
        "austin-tx",
        "Austin",
        "Texas",
        "US",
        "America/Chicago",
        961_855,
    ),
    (
        "jacksonville-fl",
        "Jacksonville",
        "Florida",
        "US",
        "America/New_York",
        949_611,
    ),
    (
        "fort-worth-tx",
        "Fort Worth",
        "Texas",
        "US",
        "America/Chicago",
        918_915,
    ),
    (
        "columbus-oh",
        "Columbus",
        "Ohio",
        "US",
        "America/New_York",
        905_748,
    ),
    (
        "indianapolis-in",
        "Indianapolis",
        "Indiana",
        "US",
        "America/Indiana/Indianapolis",
        887_642,
    ),
    (
        "charlotte-nc",
        "Charlotte",
        "North Carolina",
        "US",
        "America/New_York",
        874_579,
    ),
    (
        "san-francisco-ca",
        "San Francisco",
        "California",
        "US",
        "America/Los_Angeles",
        873_965,
    ),
    (
        "seattle-wa",
        "Seattle",
        "Washington",
        "US",
        "America/Los_Angeles",
        737_015,
    ),
    (
        "denver-co",
        "Denver",
        "Colorado",
        "US",
        "America/Denver",
        715_522,
    ),
    (
        "washington-dc",
        "Washington",
        "District of Columbia",
        "US",
        "America/New_York",
        689_545,
    ),
    (
        "nashville-tn",
        "Nashville",
        "Tennessee",
        "US",
        "America/Chicago",
        689_447,
    ),
    (
        "boston-ma",
        "Boston",
        "Massachusetts",
        "US",
        "America/New_York",
        675_647,
    ),
    (
        "portland-or",
        "Portland",
        "Oregon",
        "US",
        "America/Los_Angeles",
        652_503,
    ),
    (
        "las-vegas-nv",
        "Las Vegas",
        "Nevada",
        "US",
        "America/Los_Angeles",
        641_903,
    ),
    (
        "detroit-mi",
        "Detroit",
        "Michigan",
        "US",
        "America/Detroit",
        639_111,
    ),
    (
        "atlanta-ga",
        "Atlanta",
        "Georgia",
        "US",
        "America/New_York",
        498_715,
    ),
    (
        "oakland-ca",
        "Oakland",
        "California",
        "US",
        "America/Los_Angeles",
        440_646,
    ),
    (
        "minneapolis-mn",
        "Minneapolis",
        "Minnesota",
        "US",
        "America/Chicago",
        429_954,
    ),
    (
        "pittsburgh-pa",
        "Pittsburgh",
        "Pennsylvania",
        "US",
        "America/New_York",
        302_971,
    ),
    (
        "madison-wi",
        "Madison",
        "Wisconsin",
        "US",
        "America/Chicago",
        269_840,
    ),
];

/// Upserts the reference data in one transaction; returns the number of cities.
/// Seeds everything in one transaction.
pub async fn run(pool: &PgPool) -> Result<Seeded, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cities = cities(&mut tx).await?;
    let (exercises, exercises_changed) = exercises(&mut tx).await?;
    tx.commit().await?;
    Ok(Seeded {
        cities,
        exercises,
        exercises_changed,
    })
}

/// Upserts the cities.
pub async fn cities(conn: &mut PgConnection) -> Result<usize, sqlx::Error> {
    let mut slugs = Vec::with_capacity(CITIES.len());
    let mut names = Vec::with_capacity(CITIES.len());
    let mut regions = Vec::with_capacity(CITIES.len());
    let mut countries = Vec::with_capacity(CITIES.len());
    let mut zones = Vec::with_capacity(CITIES.len());
    let mut populations = Vec::with_capacity(CITIES.len());
    for &(slug, name, region, country, zone, population) in CITIES {
        slugs.push(slug);
        names.push(name);
        regions.push(region);
        countries.push(country);
        zones.push(zone);
        populations.push(population);
    }
    sqlx::query(
        "INSERT INTO cities (slug, name, region, country, timezone, population)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[])
         ON CONFLICT (slug) DO UPDATE
            SET name = EXCLUDED.name, region = EXCLUDED.region, country = EXCLUDED.country,
                timezone = EXCLUDED.timezone, population = EXCLUDED.population",
    )
    .bind(&slugs)
    .bind(&names)
    .bind(&regions)
    .bind(&countries)
    .bind(&zones)
    .bind(&populations)
    .execute(&mut *conn)
    .await?;
    Ok(CITIES.len())
}

/// One exercise row as the seed query reads it (JSON, so array columns need
/// no 2-D array binding).
#[derive(Serialize)]
struct ExerciseRow<'a> {
    slug: &'a str,
    kind: &'static str,
    prompt: &'a str,
    instructions: &'a str,
    infinitive: &'a str,
    person: &'static str,
    tense: &'static str,
    trigger: Option<&'static str>,
    difficulty: i16,
    tags: &'a [String],
    choices: &'a [String],
    answer: &'a str,
    accepted: &'a [String],
    explanation: &'a str,
}

impl<'a> From<&'a Exercise> for ExerciseRow<'a> {
    fn from(e: &'a Exercise) -> Self {
        Self {
            slug: &e.slug,
            kind: e.kind.key(),
            prompt: &e.prompt,
            instructions: &e.instructions,
            infinitive: &e.infinitive,
            person: e.person.key(),
            tense: e.tense.key(),
            trigger: e.trigger.map(|t| t.key()),
            difficulty: i16::from(e.difficulty),
            tags: &e.tags,
            choices: &e.choices,
            answer: &e.answer,
            accepted: &e.accepted,
            explanation: &e.explanation,
        }
    }
}

/// Rows per statement: keeps each JSON parameter around a megabyte.
const EXERCISE_BATCH: usize = 1000;

/// Upserts the generated exercise bank by slug. Unchanged rows are not
/// rewritten (no dead tuples, no WAL) — re-seeding is cheap and changes nothing.
/// Returns (bank size, rows inserted or changed).
pub async fn exercises(conn: &mut PgConnection) -> Result<(usize, u64), sqlx::Error> {
    let bank = bank::bank();
    let mut changed = 0;
    for chunk in bank.chunks(EXERCISE_BATCH) {
        let rows: Vec<ExerciseRow<'_>> = chunk.iter().map(ExerciseRow::from).collect();
        let json = serde_json::to_value(&rows).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let done = sqlx::query(
            "INSERT INTO exercises AS e (slug, kind, prompt, instructions, infinitive, person,
                    tense, trigger, difficulty, tags, choices, answer, accepted, explanation)
             SELECT slug, kind, prompt, instructions, infinitive, person,
                    tense, trigger, difficulty, tags, choices, answer, accepted, explanation
               FROM jsonb_to_recordset($1::jsonb) AS x(
                    slug text, kind text, prompt text, instructions text, infinitive text,
                    person text, tense text, trigger text, difficulty smallint, tags text[],
                    choices text[], answer text, accepted text[], explanation text)
             ON CONFLICT (slug) DO UPDATE
                SET kind = EXCLUDED.kind, prompt = EXCLUDED.prompt,
                    instructions = EXCLUDED.instructions, infinitive = EXCLUDED.infinitive,
                    person = EXCLUDED.person, tense = EXCLUDED.tense, trigger = EXCLUDED.trigger,
                    difficulty = EXCLUDED.difficulty, tags = EXCLUDED.tags,
                    choices = EXCLUDED.choices, answer = EXCLUDED.answer,
                    accepted = EXCLUDED.accepted, explanation = EXCLUDED.explanation,
                    updated_at = now()
              WHERE (e.kind, e.prompt, e.instructions, e.infinitive, e.person, e.tense,
                     e.trigger, e.difficulty, e.tags, e.choices, e.answer, e.accepted,
                     e.explanation)
                    IS DISTINCT FROM
                    (EXCLUDED.kind, EXCLUDED.prompt, EXCLUDED.instructions, EXCLUDED.infinitive,
                     EXCLUDED.person, EXCLUDED.tense, EXCLUDED.trigger, EXCLUDED.difficulty,
                     EXCLUDED.tags, EXCLUDED.choices, EXCLUDED.answer, EXCLUDED.accepted,
                     EXCLUDED.explanation)",
        )
        .bind(json)
        .execute(&mut *conn)
        .await?;
        changed += done.rows_affected();
    }
    Ok((bank.len(), changed))
}

#[cfg(test)]
mod tests {
    use super::CITIES;

    #[test]
    fn seed_cities_are_unique_and_well_formed() {
        let mut slugs: Vec<_> = CITIES.iter().map(|c| c.0).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), CITIES.len());
        assert!(CITIES.len() >= 20);
        for c in CITIES {
            assert!(
                c.0.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
            assert_eq!(c.3.len(), 2);
        }
    }
}
