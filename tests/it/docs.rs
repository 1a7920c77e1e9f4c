//! The documents operators and client developers read are kept true to the code: every
//! route and error code is in docs/openapi.yaml, every flag, environment variable and
//! metric is in docs/operations.md.

use clap::CommandFactory;
use eligd::cli::Cli;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn openapi_describes_every_route_and_error_code() {
    let spec = read("docs/openapi.yaml");
    for route in [
        "/v1/members/{national_id}/eligibility:",
        "/v1/booklets/{booklet_no}/eligibility:",
        "/v1/eligibility/batch:",
        "/ussd:",
        "/sms:",
        "/fhir/r4/CoverageEligibilityRequest:",
        "/healthz:",
        "/readyz:",
        "/metrics:",
    ] {
        assert!(spec.contains(route), "docs/openapi.yaml lacks {route}");
    }
    for code in eligd::inquiry::CODES {
        let code = format!("- {code} ");
        assert!(
            spec.contains(&code),
            "docs/openapi.yaml lacks error code {code} in ErrorCode"
        );
    }
    for status in [
        "main_insured_inactive",
        "main_insured_not_found",
        "service_not_covered",
    ] {
        assert!(
            spec.contains(status),
            "docs/openapi.yaml lacks status {status}"
        );
    }
}

#[test]
fn operations_guide_lists_every_flag_env_var_and_metric() {
    let guide = read("docs/operations.md");
    fn walk(cmd: &clap::Command, guide: &str) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                if long == "help" || long == "version" {
                    continue;
                }
                assert!(
                    guide.contains(&format!("--{long}")),
                    "docs/operations.md lacks --{long} ({})",
                    cmd.get_name()
                );
            }
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(
                    guide.contains(env.as_ref()),
                    "docs/operations.md lacks {env}"
                );
            }
        }
        for sub in cmd.get_subcommands() {
            assert!(
                guide.contains(sub.get_name()),
                "docs/operations.md lacks subcommand {}",
                sub.get_name()
            );
            walk(sub, guide);
        }
    }
    walk(&Cli::command(), &guide);
    let metrics = eligd::metrics::Metrics::new().encode()
        + &eligd::relay::metrics::RelayMetrics::new().encode();
    for line in metrics.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            guide.contains(name),
            "docs/operations.md lacks metric {name}"
        );
    }
    for name in [
        "eligd_requests_total",
        "eligd_inquiries_total",
        "eligd_request_duration_seconds",
    ] {
        assert!(
            guide.contains(name),
            "docs/operations.md lacks metric {name}"
        );
    }
}

#[test]
fn readme_shows_the_two_commands() {
    let readme = read("README.md");
    assert!(
        readme.contains("cargo run --release"),
        "README lacks the run command"
    );
    assert!(
        readme.contains("cargo test"),
        "README lacks the test command"
    );
}

/// `index-budget`'s limits are the ones docs/performance.md states ("Index budgets,
/// restated"): one truth.
#[test]
fn index_budget_enforces_the_limits_the_performance_doc_states() {
    let code = read("loadtest/src/bin/index-budget.rs");
    let constant = |name: &str| -> f64 {
        code.lines()
            .find_map(|l| l.strip_prefix(&format!("const {name}: f64 = ")))
            .and_then(|v| v.trim_end_matches(';').parse().ok())
            .unwrap_or_else(|| panic!("no const {name}: f64 in index-budget.rs"))
    };
    let doc = read("docs/performance.md");
    let restated = doc
        .split("## Index budgets, restated")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/performance.md has \"Index budgets, restated\"");
    let load = format!(
        "≤ {} s (10 M), ≤ {} s (45 M)",
        constant("LOAD_SECONDS_UP_TO_10M"),
        constant("LOAD_SECONDS_ABOVE_10M")
    );
    let ratio = format!("≤ {:.1}×", constant("LOOKUP_RATIO"));
    for wanted in [&load, &ratio] {
        assert!(
            restated.contains(wanted.as_str()),
            "docs/performance.md (\"Index budgets, restated\") lacks {wanted:?}"
        );
    }
}
