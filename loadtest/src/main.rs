//! Goose load tests of refbackend.
//!
//! Scenarios (pick with goose's `--scenarios`, list with `--scenarios-list`):
//! `health`, `login`, `learner`, `civic` and `mixed` (all of them, weighted).
//! Everything else is goose's own command line (`--host`, `--users`,
//! `--hatch-rate`, `--run-time`, `--test-plan`, `--report-file`, `--threshold`, …),
//! except three flags this wrapper takes out before goose parses the rest:
//!
//! - `--max-p95-ms N` (default 500): fail when the p95 of any request name is above N;
//! - `--max-error-rate F` (default 0.01): fail when failed / all requests is above F;
//! - `--summary-file PATH`: write a JSON summary (per request name: count,
//!   failures, rps, p50, p95, p99 in ms) and the verdict.
//!
//! The same three can come from `LOADTEST_MAX_P95_MS`, `LOADTEST_MAX_ERROR_RATE`
//! and `LOADTEST_SUMMARY`; a flag wins over its variable. The process exits 1 when a
//! threshold fails (goose's own `--threshold` rules included) and 2 on a usage error.

mod flows;
mod summary;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use goose::config::GooseConfiguration;
use goose::prelude::*;

use flows::{civic, health, learner, login, register};
use summary::{Limits, Summary};

/// Our flags, taken out of the command line; the rest goes to goose.
struct Options {
    limits: Limits,
    summary_file: Option<String>,
    goose_args: Vec<String>,
}

fn parse_options(args: Vec<String>) -> Result<Options, String> {
    let mut limits = Limits {
        max_p95_ms: env_number("LOADTEST_MAX_P95_MS")?.unwrap_or(500.0),
        max_error_rate: env_number("LOADTEST_MAX_ERROR_RATE")?.unwrap_or(0.01),
    };
    let mut summary_file = std::env::var("LOADTEST_SUMMARY")
        .ok()
        .filter(|s| !s.is_empty());
    let mut goose_args = Vec::with_capacity(args.len());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.clone(), None),
        };
        if !matches!(
            flag.as_str(),
            "--max-p95-ms" | "--max-error-rate" | "--summary-file"
        ) {
            goose_args.push(arg);
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "--max-p95-ms" => limits.max_p95_ms = number(&flag, &value)?,
            "--max-error-rate" => limits.max_error_rate = number(&flag, &value)?,
            _ => summary_file = Some(value),
        }
    }
    if limits.max_p95_ms <= 0.0 || !(0.0..=1.0).contains(&limits.max_error_rate) {
        return Err("--max-p95-ms must be > 0 and --max-error-rate within 0..=1".into());
    }
    Ok(Options {
        limits,
        summary_file,
        goose_args,
    })
}

fn number(name: &str, value: &str) -> Result<f64, String> {
    value
        .parse::<f64>()
        .map_err(|_| format!("{name}: `{value}` is not a number"))
}

fn env_number(name: &str) -> Result<Option<f64>, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => number(name, &v).map(Some),
        _ => Ok(None),
    }
}

/// Think time between transactions of the scenarios that model people.
fn think(scenario: Scenario, min_ms: u64, max_ms: u64) -> Result<Scenario, GooseError> {
    scenario.set_wait_time(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
}

fn attack(configuration: GooseConfiguration) -> Result<GooseAttack, GooseError> {
    let health_scenario = think(scenario!("health"), 100, 500)?
        .register_transaction(transaction!(health).set_name("health"));

    let login_scenario = think(scenario!("login"), 500, 1500)?
        .register_transaction(transaction!(register).set_name("register").set_on_start())
        .register_transaction(transaction!(login).set_name("login"));

    let learner_scenario = think(scenario!("learner"), 500, 2000)?
        .register_transaction(transaction!(register).set_name("register").set_on_start())
        .register_transaction(transaction!(learner).set_name("practice"));

    let civic_scenario = think(scenario!("civic"), 500, 2000)?
        .register_transaction(transaction!(register).set_name("register").set_on_start())
        .register_transaction(transaction!(civic).set_name("civic"));

    // A day's traffic, roughly: most requests are learners practising and
    // residents reading and voting; logins are rare but expensive (argon2id);
    // health is the balancer's probe.
    let mixed_scenario = think(scenario!("mixed"), 500, 2000)?
        .register_transaction(transaction!(register).set_name("register").set_on_start())
        .register_transaction(transaction!(learner).set_name("practice").set_weight(6)?)
        .register_transaction(transaction!(civic).set_name("civic").set_weight(3)?)
        .register_transaction(transaction!(login).set_name("login").set_weight(1)?)
        .register_transaction(transaction!(health).set_name("health").set_weight(1)?);

    Ok(GooseAttack::initialize_with_config(configuration)?
        .register_scenario(health_scenario.set_weight(1)?)
        .register_scenario(login_scenario.set_weight(1)?)
        .register_scenario(learner_scenario.set_weight(5)?)
        .register_scenario(civic_scenario.set_weight(3)?)
        .register_scenario(mixed_scenario.set_weight(10)?))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options(std::env::args().collect()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loadtest: {message}");
            return ExitCode::from(2);
        }
    };
    let configuration = match GooseConfiguration::try_parse_from(&options.goose_args) {
        Ok(configuration) => configuration,
        Err(e) => {
            // --help and --version are "errors" that print and exit 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let listing = configuration.scenarios_list;
    let result = match attack(configuration) {
        Ok(attack) => attack.execute().await,
        Err(e) => Err(e),
    };
    let (metrics, goose_failed) = match result {
        Ok(metrics) => (metrics, Vec::new()),
        Err(GooseError::ThresholdsFailed { failed, metrics }) => {
            let rules = failed.into_iter().map(|r| r.rule).collect();
            (*metrics.0, rules)
        }
        Err(e) => {
            eprintln!("loadtest: {e:?}");
            return ExitCode::from(2);
        }
    };
    if listing {
        return ExitCode::SUCCESS;
    }

    let summary = Summary::from_metrics(&metrics, &options.limits, goose_failed);
    if let Some(path) = &options.summary_file {
        match serde_json::to_string_pretty(&summary) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json + "\n") {
                    eprintln!("loadtest: writing {path}: {e}");
                    return ExitCode::from(2);
                }
            }
            Err(e) => {
                eprintln!("loadtest: {e}");
                return ExitCode::from(2);
            }
        }
    }
    println!("{}", summary.table());
    if summary.passed {
        println!("thresholds: PASS");
        ExitCode::SUCCESS
    } else {
        for failure in &summary.failures {
            eprintln!("threshold FAILED: {failure}");
        }
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn our_flags_are_taken_out_and_the_rest_goes_to_goose() {
        let o = parse_options(args(&[
            "loadtest",
            "--host",
            "http://x",
            "--max-p95-ms",
            "250",
            "--max-error-rate=0.05",
            "--summary-file",
            "s.json",
            "--users",
            "3",
        ]))
        .expect("valid");
        assert_eq!(o.limits.max_p95_ms, 250.0);
        assert_eq!(o.limits.max_error_rate, 0.05);
        assert_eq!(o.summary_file.as_deref(), Some("s.json"));
        assert_eq!(
            o.goose_args,
            args(&["loadtest", "--host", "http://x", "--users", "3"])
        );
    }

    #[test]
    fn a_flag_without_value_or_a_bad_number_is_refused() {
        assert!(parse_options(args(&["loadtest", "--max-p95-ms"])).is_err());
        assert!(parse_options(args(&["loadtest", "--max-p95-ms", "fast"])).is_err());
        assert!(parse_options(args(&["loadtest", "--max-error-rate", "2"])).is_err());
    }
}
