//! Shared pieces of the budget and load commands: a budget table that decides the exit
//! code, and small statistics helpers.

use std::fmt::Write as _;
use std::process::ExitCode;

pub mod closed_loop;
pub mod mix;
pub mod open_loop;
pub mod probe;
pub mod records;
pub mod server;

/// One measured figure against its limit.
pub struct Check {
    pub name: String,
    pub measured: f64,
    pub limit: f64,
    pub unit: &'static str,
    /// True when lower is better (latency, memory); false for throughput.
    pub lower_is_better: bool,
}

impl Check {
    pub fn passed(&self) -> bool {
        if self.lower_is_better {
            self.measured <= self.limit
        } else {
            self.measured >= self.limit
        }
    }
}

#[derive(Default)]
pub struct Budget {
    pub checks: Vec<Check>,
}

impl Budget {
    pub fn at_most(&mut self, name: &str, measured: f64, limit: f64, unit: &'static str) {
        self.checks.push(Check {
            name: name.into(),
            measured,
            limit,
            unit,
            lower_is_better: true,
        });
    }

    pub fn at_least(&mut self, name: &str, measured: f64, limit: f64, unit: &'static str) {
        self.checks.push(Check {
            name: name.into(),
            measured,
            limit,
            unit,
            lower_is_better: false,
        });
    }

    /// A Markdown table of every check.
    pub fn report(&self) -> String {
        let mut out = String::from("| budget | measured | limit | verdict |\n|---|---|---|---|\n");
        for c in &self.checks {
            let sign = if c.lower_is_better { "≤" } else { "≥" };
            let verdict = if c.passed() { "pass" } else { "MISSED" };
            let _ = writeln!(
                out,
                "| {} | {:.3} {} | {sign} {} {} | {verdict} |",
                c.name, c.measured, c.unit, c.limit, c.unit
            );
        }
        out
    }

    pub fn all_passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// Prints the report and returns the exit code: 0 when every budget holds, 1 when one is
    /// missed.
    pub fn exit_code(&self) -> ExitCode {
        println!("\n{}", self.report());
        if self.all_passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// Reads `--flag value` pairs from the command line, handing each to `set`, which returns
/// `Ok(false)` for a flag it does not know.
pub fn parse_flags(mut set: impl FnMut(&str, &str) -> Result<bool, String>) -> Result<(), String> {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        if !set(&flag, &value)? {
            return Err(format!("unknown argument {flag:?}"));
        }
    }
    Ok(())
}

/// A flag's value as a number, or an error naming the flag.
pub fn number(flag: &str, value: &str) -> Result<f64, String> {
    value.parse::<f64>().map_err(|e| format!("{flag}: {e}"))
}

/// The eligd the budget commands measure by default: the deployed build
/// (`cargo build --profile production --bin eligd`).
pub const ELIGD: &str = "target/production/eligd";

/// Checks that the eligd binary a command drives has been built.
pub fn built(eligd: &std::path::Path) -> Result<(), String> {
    if eligd.is_file() {
        Ok(())
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --profile production --bin eligd)",
            eligd.display()
        ))
    }
}

/// The `main` of a budget command: parse the arguments, run, print the budget report; exit
/// 0 when every budget holds, 1 when one is missed, 2 on an error.
pub fn budget_main<A, F, Fut>(command: &str, args: Result<A, String>, run: F) -> ExitCode
where
    F: FnOnce(A) -> Fut,
    Fut: std::future::Future<Output = Result<Budget, String>>,
{
    match args {
        Ok(args) => run_on_one_thread(command, async move {
            run(args).await.map(|budget| budget.exit_code())
        }),
        Err(e) => {
            eprintln!("{command}: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a load command's body on a one-thread runtime (the server under test needs the
/// other core); an error is printed as `<command>: error: …` and exits 2.
pub fn run_on_one_thread<F>(command: &str, body: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode, String>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build();
    match runtime
        .map_err(|e| e.to_string())
        .and_then(|r| r.block_on(body))
    {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{command}: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The median of a sample (sorts it).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A fast deterministic random sequence (xorshift64*), for picking keys.
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_budget_fails_the_run() {
        let mut b = Budget::default();
        b.at_most("latency", 100.0, 150.0, "ns");
        b.at_least("rate", 600_000.0, 500_000.0, "events/s");
        assert!(b.all_passed());
        b.at_most("memory", 81.0, 80.0, "B/member");
        assert!(!b.all_passed());
        assert!(b
            .report()
            .contains("| memory | 81.000 B/member | ≤ 80 B/member | MISSED |"));
    }

    #[test]
    fn median_of_odd_and_even_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&mut []).is_nan());
    }
}
