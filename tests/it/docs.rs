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

/// The replica's and its init container's memory in deploy/k8s come from the sizing formula at
/// 45 M members (core/src/sizing.rs), which docs/scaling.md states.
#[test]
fn the_manifests_memory_comes_from_the_sizing_formula() {
    use eligd::sizing;
    const MEMBERS: u64 = 45_000_000;
    let manifest = read("deploy/k8s/eligd.yaml");
    let mib = |bytes: u64| format!("memory: {}Mi", sizing::mebibytes(bytes));
    let overlay = sizing::DEFAULT_COMPACT_OVERLAY;
    let build = mib(sizing::build_limit(MEMBERS));
    let request = mib(sizing::replica_request(MEMBERS, overlay));
    let limit = mib(sizing::replica_limit(MEMBERS, overlay));
    assert_eq!(
        manifest.matches(&build).count(),
        2,
        "the init container's request and limit: {build}"
    );
    assert_eq!(
        manifest.matches(&request).count(),
        1,
        "the replica's request: {request}"
    );
    assert_eq!(
        manifest.matches(&limit).count(),
        1,
        "the replica's limit: {limit}"
    );
    let memory_lines = manifest
        .lines()
        .filter(|l| l.trim_start().starts_with("memory:"))
        .count();
    assert_eq!(
        memory_lines, 4,
        "every memory value of deploy/k8s/eligd.yaml is one of the formula's"
    );
    // The default --compact-overlay the formula assumes is the CLI's.
    let cli = read("src/cli.rs");
    assert!(
        cli.contains(&format!("default_value_t = {}", group(overlay))),
        "--compact-overlay's default is not {overlay}"
    );
    let scaling = read("docs/scaling.md");
    for needle in ["40 B", "256 MiB", "65 B", "640 B"] {
        assert!(
            scaling.contains(needle),
            "docs/scaling.md does not state {needle:?} of the formula"
        );
    }
}

/// 500000 as Rust writes it in src/cli.rs (500_000).
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}
