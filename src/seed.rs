//! Reference data every environment needs: real cities for CivicQ.
//! Idempotent: running it again updates the rows in place.

use sqlx::PgPool;

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
pub async fn run(pool: &PgPool) -> Result<usize, sqlx::Error> {
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
    let mut tx = pool.begin().await?;
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
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CITIES.len())
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
