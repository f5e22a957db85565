//! The machine-readable summary of a run, and the thresholds judged on it.

use std::collections::BTreeMap;

use goose::metrics::{GooseMetrics, GooseRequestMetricTimingData};
use serde::Serialize;

/// Pass/fail limits of a run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Limits {
    /// Highest allowed p95 of any request name, in milliseconds.
    pub max_p95_ms: f64,
    /// Highest allowed share of failed requests, 0..=1.
    pub max_error_rate: f64,
}

/// One request name's figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RequestStats {
    pub count: usize,
    pub failures: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// What `--summary-file` holds.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub duration_s: usize,
    pub max_users: usize,
    pub total: RequestStats,
    pub error_rate: f64,
    pub requests: BTreeMap<String, RequestStats>,
    pub limits: Limits,
    pub passed: bool,
    pub failures: Vec<String>,
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 100.0).round() / 100.0
}

fn stats(timing: &GooseRequestMetricTimingData, failures: usize, duration: f64) -> RequestStats {
    RequestStats {
        count: timing.counter,
        failures,
        rps: ((timing.counter as f64 / duration) * 100.0).round() / 100.0,
        p50_ms: ms(timing.percentile_us(0.50)),
        p95_ms: ms(timing.percentile_us(0.95)),
        p99_ms: ms(timing.percentile_us(0.99)),
    }
}

impl Summary {
    /// Figures per request name from goose's metrics, judged against `limits`;
    /// `goose_failed` are goose `--threshold` rules that already failed.
    pub fn from_metrics(
        metrics: &GooseMetrics,
        limits: &Limits,
        goose_failed: Vec<String>,
    ) -> Self {
        let duration = metrics.duration.max(1) as f64;
        let mut all = GooseRequestMetricTimingData::default();
        let mut buckets: BTreeMap<u64, usize> = BTreeMap::new();
        let mut all_failures = 0;
        let mut requests = BTreeMap::new();
        for (name, aggregate) in &metrics.requests {
            let timing = &aggregate.raw_data;
            for (&bucket_us, &count) in timing.times_us.iter() {
                *buckets.entry(bucket_us).or_default() += count;
            }
            if timing.counter > 0 {
                if all.counter == 0 || timing.minimum_time_us < all.minimum_time_us {
                    all.minimum_time_us = timing.minimum_time_us;
                }
                all.maximum_time_us = all.maximum_time_us.max(timing.maximum_time_us);
            }
            all.counter += timing.counter;
            all.total_time_us += timing.total_time_us;
            all_failures += aggregate.fail_count;
            requests.insert(name.clone(), stats(timing, aggregate.fail_count, duration));
        }
        // Sorted, fastest first, as goose keeps a run's buckets.
        for (bucket_us, count) in buckets {
            all.times_us.insert(bucket_us, count);
        }
        let total = stats(&all, all_failures, duration);
        Self::judge(
            metrics.duration,
            metrics.maximum_users,
            total,
            requests,
            *limits,
            goose_failed,
        )
    }

    fn judge(
        duration_s: usize,
        max_users: usize,
        total: RequestStats,
        requests: BTreeMap<String, RequestStats>,
        limits: Limits,
        goose_failed: Vec<String>,
    ) -> Self {
        let error_rate = if total.count == 0 {
            0.0
        } else {
            total.failures as f64 / total.count as f64
        };
        let mut failures: Vec<String> = goose_failed
            .into_iter()
            .map(|rule| format!("goose --threshold {rule}"))
            .collect();
        if total.count == 0 {
            failures.push("no requests were made".into());
        }
        for (name, s) in &requests {
            if s.p95_ms > limits.max_p95_ms {
                failures.push(format!(
                    "p95 of {name} is {} ms > {} ms",
                    s.p95_ms, limits.max_p95_ms
                ));
            }
        }
        if error_rate > limits.max_error_rate {
            failures.push(format!(
                "error rate {:.4} ({} of {}) > {}",
                error_rate, total.failures, total.count, limits.max_error_rate
            ));
        }
        Summary {
            duration_s,
            max_users,
            total,
            error_rate,
            requests,
            limits,
            passed: failures.is_empty(),
            failures,
        }
    }

    /// A markdown table of the figures, for the console and docs.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| request | count | failures | req/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|---|---|\n",
        );
        let rows = self
            .requests
            .iter()
            .map(|(name, s)| (name.as_str(), s))
            .chain(std::iter::once(("all", &self.total)));
        for (name, s) in rows {
            out += &format!(
                "| {name} | {} | {} | {} | {} | {} | {} |\n",
                s.count, s.failures, s.rps, s.p50_ms, s.p95_ms, s.p99_ms
            );
        }
        out += &format!(
            "error rate {:.4} over {} s, up to {} users",
            self.error_rate, self.duration_s, self.max_users
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(count: usize, failures: usize, p95_ms: f64) -> RequestStats {
        RequestStats {
            count,
            failures,
            rps: 1.0,
            p50_ms: 1.0,
            p95_ms,
            p99_ms: p95_ms,
        }
    }

    const LIMITS: Limits = Limits {
        max_p95_ms: 500.0,
        max_error_rate: 0.01,
    };

    #[test]
    fn a_run_within_limits_passes() {
        let requests = BTreeMap::from([("GET /health".to_string(), row(1000, 5, 20.0))]);
        let s = Summary::judge(60, 10, row(1000, 5, 20.0), requests, LIMITS, vec![]);
        assert!(s.passed, "{:?}", s.failures);
        assert_eq!(s.error_rate, 0.005);
    }

    #[test]
    fn one_slow_request_name_fails_the_run_even_when_the_total_is_fast() {
        let requests = BTreeMap::from([
            ("GET /health".to_string(), row(10_000, 0, 2.0)),
            ("POST /api/v1/auth/login".to_string(), row(100, 0, 900.0)),
        ]);
        let s = Summary::judge(60, 10, row(10_100, 0, 3.0), requests, LIMITS, vec![]);
        assert!(!s.passed);
        assert!(s.failures[0].contains("POST /api/v1/auth/login"));
    }

    #[test]
    fn too_many_errors_or_no_requests_or_a_goose_rule_fail_the_run() {
        let s = Summary::judge(60, 10, row(100, 2, 1.0), BTreeMap::new(), LIMITS, vec![]);
        assert!(!s.passed);
        let s = Summary::judge(60, 10, row(0, 0, 0.0), BTreeMap::new(), LIMITS, vec![]);
        assert!(!s.passed);
        let s = Summary::judge(
            60,
            10,
            row(9, 0, 1.0),
            BTreeMap::new(),
            LIMITS,
            vec!["p95<1ms".into()],
        );
        assert!(!s.passed);
    }
}
