//! The independent check of FHIR R4: `tests/fhir/validate.py` on the `fhir.resources`
//! models in a pinned venv, and the proof that it rejects resources that break R4.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::{ask, fhir_request};
use crate::support::*;

/// The last release of `fhir.resources` whose default models are FHIR R4 (4.0.1); from 6.5
/// on the default is R4B (4.3.0), from 7 on R5, and R4 itself is not shipped any more.
/// It is written for pydantic 1, which must be pinned below 2.
pub const FHIR_RESOURCES: &str = "fhir.resources==6.4.0";
pub const PYDANTIC: &str = "pydantic==1.10.22";

#[tokio::test]
async fn the_validator_rejects_broken_resources() {
    let server = TestServer::start().await;
    let mut seen = Vec::new();
    let good = ask(&server, &fhir_request(Fixture::MAIN), &mut seen).await;
    validate(&seen).unwrap();
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string()
    };
    let cases = [
        (
            "insurance without coverage",
            broken(&|v| {
                drop(
                    v["insurance"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("coverage"),
                )
            }),
        ),
        (
            "no insurer",
            broken(&|v| drop(v.as_object_mut().unwrap().remove("insurer"))),
        ),
        (
            "no request",
            broken(&|v| drop(v.as_object_mut().unwrap().remove("request"))),
        ),
        (
            "no purpose",
            broken(&|v| drop(v.as_object_mut().unwrap().remove("purpose"))),
        ),
        ("unknown element", broken(&|v| v["eligible"] = json!(true))),
        (
            "end not a date",
            broken(&|v| v["insurance"][0]["benefitPeriod"]["end"] = json!("soon")),
        ),
        (
            "bad outcome code",
            broken(&|v| v["outcome"] = json!("done")),
        ),
        (
            "created without offset",
            broken(&|v| v["created"] = json!("2026-11-22T10:00:00")),
        ),
        ("empty purpose", broken(&|v| v["purpose"] = json!([]))),
        (
            "issue without code",
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]})
                .to_string(),
        ),
    ];
    for (what, resource) in cases {
        let err = validate(&[seen[0].clone(), resource]).expect_err(what);
        assert!(err.contains("resource 2"), "{what}: {err}");
    }
}

/// Validates FHIR JSON resources with `tests/fhir/validate.py` in the pinned venv; `Err`
/// carries the validator's explanation.
pub fn validate(resources: &[String]) -> Result<(), String> {
    use std::io::Write;
    let python = venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fhir/validate.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the FHIR validator");
    let mut input = String::new();
    for r in resources {
        // One resource a line (compact JSON has no raw newlines).
        let compact: Value = serde_json::from_str(r).expect("a JSON resource");
        input.push_str(&compact.to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        _ => panic!(
            "the validator could not run: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The venv's python with the pinned `fhir.resources`, created on first use in
/// `target/fhir-venv` (`.ci/run` creates it up front).
fn venv_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| pinned_venv("fhir-venv", &[FHIR_RESOURCES, PYDANTIC], has_models))
}

/// A venv in `target/<name>` holding `packages`, created when `ready` says it is not there
/// yet. Built under a temporary name and renamed into place, so concurrent test processes
/// never see a half-built venv. Returns its python.
pub fn pinned_venv(name: &str, packages: &[&str], ready: fn(&Path) -> bool) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let venv = target.join(name);
    let python = venv.join("bin/python");
    if ready(&python) {
        return python;
    }
    let building = target.join(format!("{name}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    run(Command::new("python3").args(["-m", "venv"]).arg(&building));
    let mut install = Command::new(building.join("bin/python"));
    install.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]);
    install.args(packages);
    run(&mut install);
    let _ = std::fs::remove_dir_all(&venv);
    if std::fs::rename(&building, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&building); // another process won the race
    }
    assert!(ready(&python), "{} lacks {packages:?}", venv.display());
    python
}

fn has_models(python: &Path) -> bool {
    let check =
        "import fhir.resources as f; assert f.__fhir_version__ == '4.0.1', f.__fhir_version__";
    Command::new(python)
        .args(["-c", check])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}
