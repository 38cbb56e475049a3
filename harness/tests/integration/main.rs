//! Integration tests: the real Python worker, real torch 2.13, real libtorch through tch, on the
//! shipped cases and on fixtures that misbehave on purpose (`tests/fixtures/`).
//!
//! The Python interpreter comes from `HARNESS_PYTHON` (set by `cargo xtask test`) or the
//! repository's `.venv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::case::Variant;
use harness::results::{exit, CaseStatus, Outcome, Results};
use harness::run::Options;
use harness::verify::{verify, Request};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn python() -> PathBuf {
    std::env::var_os("HARNESS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// Verify `paths` through the library, as the CLI does.
fn run(paths: &[PathBuf], filter: Option<&str>, seed: Option<u64>) -> (Results, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let req = Request {
        paths: paths.to_vec(),
        filter: filter.map(|f| regex::Regex::new(f).unwrap()),
        options: Options {
            python: python(),
            out_dir: out.path().to_path_buf(),
            seed,
            timeout: Duration::from_secs(300),
        },
    };
    (verify(&req, |_| {}).expect("the worker starts"), out)
}

/// Each case's status, or its variants' outcomes, as short strings.
fn outcomes(results: &Results) -> BTreeMap<String, String> {
    results
        .cases
        .iter()
        .map(|c| {
            let v = match c.status {
                CaseStatus::Error => format!("error:{}", c.error.as_ref().unwrap().kind),
                CaseStatus::Ran => c
                    .variants
                    .iter()
                    .map(|(v, r)| format!("{v}={}", r.outcome.label().to_lowercase()))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            (c.name.clone(), v)
        })
        .collect()
}

#[track_caller]
fn check(results: &Results, expect: &[(&str, &str)]) {
    let got = outcomes(results);
    let expect: BTreeMap<String, String> = expect
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn shipped_cases_meet_their_expectations() {
    let (results, out) = run(&[repo().join("cases")], None, None);
    check(
        &results,
        &[
            ("arange_len", "traced=xfail scripted=pass"),
            ("arange_shape", "traced=pass scripted=pass"),
            ("classifier", "traced=pass scripted=pass"),
            ("decision_gate", "traced=xfail scripted=pass"),
            ("device_factory", "traced=pass scripted=pass"),
            ("item_scale", "traced=xfail scripted=pass"),
            ("my_cell", "traced=pass scripted=pass"),
        ],
    );
    assert_eq!(results.exit_code(), exit::OK);
    assert_eq!(results.torch, "2.13.0");

    // The len() case: the traced artifact returns the trace-time length on other batch sizes.
    let len = results
        .cases
        .iter()
        .find(|c| c.name == "arange_len")
        .unwrap();
    let traced = &len.variants[&Variant::Traced];
    let f = traced.first_failure.as_ref().unwrap();
    assert_eq!(f.kind, "mismatch");
    assert!(f.detail.starts_with("expected shape ["), "{}", f.detail);
    assert!(
        f.group.starts_with("dim:B") || f.group == "joint",
        "{}",
        f.group
    );
    assert!(traced
        .export
        .code
        .as_deref()
        .unwrap()
        .contains("torch.arange(4"));
    assert!(
        traced
            .export
            .warnings
            .iter()
            .any(|w| w.category == "TracerWarning"
                && w.file.ends_with("cases/models/tutorial.py")
                && w.source_line.contains("len(x)")),
        "{:?}",
        traced.export.warnings
    );
    // Every sample ran on both variants; the artifacts are where results.json says.
    for c in &results.cases {
        for v in c.variants.values() {
            assert_eq!(v.samples_run, c.samples.len(), "{}", c.name);
            assert!(Path::new(v.export.artifact.as_deref().unwrap()).starts_with(out.path()));
        }
    }
    let classifier = results
        .cases
        .iter()
        .find(|c| c.name == "classifier")
        .unwrap();
    assert_eq!(classifier.samples.len(), 5);
}

#[test]
fn bad_input_gets_one_clear_line_and_the_rest_still_runs() {
    let (results, _out) = run(&[fixtures().join("bad")], None, None);
    check(
        &results,
        &[
            ("a_good", "traced=pass scripted=pass"),
            ("constructor_raises", "error:model_construct"),
            ("eager_raises", "error:eager_raised"),
            ("import_raises", "error:model_import"),
            ("missing_entry", "error:model_entry"),
            ("missing_model", "error:case_file"),
            ("not_a_module", "error:model_entry"),
            ("syntax_error_model", "error:model_import"),
            ("unknown_field", "error:case_file"),
            ("yaml_syntax", "error:case_file"),
        ],
    );
    assert_eq!(results.exit_code(), exit::HARNESS_ERROR);
    let message = |name: &str| {
        let c = results.cases.iter().find(|c| c.name == name).unwrap();
        c.error.as_ref().unwrap().message.clone()
    };
    let expect = [
        (
            "yaml_syntax",
            "yaml_syntax.yaml:3:1: did not find expected ',' or ']'",
        ),
        (
            "unknown_field",
            "unknown_field.yaml:4:3: model: unknown field `evals`, expected one of",
        ),
        (
            "missing_model",
            "missing_model.yaml: model.source: ../models/nowhere.py does not exist",
        ),
        ("missing_entry", "fixtures.py has no attribute 'Afine'"),
        (
            "import_raises",
            "No module named 'package_that_does_not_exist'",
        ),
        ("syntax_error_model", "SyntaxError: expected ':'"),
        (
            "constructor_raises",
            "ValueError: bad config: width must be even",
        ),
        (
            "not_a_module",
            "not_a_module returned str, not a torch.nn.Module",
        ),
        (
            "eager_raises",
            "eager raised on sample s0 (trace; x: 2x5 float32)",
        ),
    ];
    for (name, fragment) in expect {
        let m = message(name);
        assert!(m.contains(fragment), "{name}: {m:?} lacks {fragment:?}");
        if !name.ends_with("raises") && name != "syntax_error_model" {
            assert!(!m.contains('\n'), "{name}: not one line: {m:?}");
        }
    }
}

#[test]
fn worker_crash_and_model_prints_are_contained() {
    let (results, _out) = run(&[fixtures().join("robust")], None, None);
    check(
        &results,
        &[
            ("a_printer", "traced=pass scripted=pass"),
            ("b_exits", "error:crashed"),
            ("c_after_crash", "traced=pass scripted=pass"),
        ],
    );
    let crashed = results.cases.iter().find(|c| c.name == "b_exits").unwrap();
    let m = &crashed.error.as_ref().unwrap().message;
    assert!(m.contains("exited with code 3"), "{m}");
    assert!(
        !m.contains("constructing Printer"),
        "the previous case's stderr leaked: {m}"
    );
}

#[test]
fn same_seed_same_samples() {
    let case = repo().join("cases/my_cell.yaml");
    let samples = |seed| {
        let (r, _out) = run(&[case.clone()], None, Some(seed));
        assert_eq!(r.seed, Some(seed));
        r.cases[0]
            .samples
            .iter()
            .map(|s| s.inputs.clone())
            .collect::<Vec<_>>()
    };
    let a = samples(5);
    assert_eq!(a, samples(5));
    assert_ne!(a, samples(6));
}

/// The command line: exit codes, one line per case and variant, results.json where asked.
#[test]
fn cli_exit_codes_and_output() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("r.json");
    let cli = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("verify")
            .args(args)
            .arg("--python")
            .arg(python())
            .arg("--out")
            .arg(out.path())
            .output()
            .unwrap();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let gate = fixtures().join("gate");
    let gate = gate.to_str().unwrap();

    let (code, stdout) = cli(&[gate, "--json", json.to_str().unwrap()]);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    assert!(
        stdout.contains("FAIL   undocumented_branch/traced: output_mismatch"),
        "{stdout}"
    );
    assert!(
        stdout.contains("XPASS  stale_expectation/traced"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 cases, 6 variants: 4 pass, 1 fail, 1 xpass"),
        "{stdout}"
    );
    let results = Results::read(&json).unwrap();
    assert_eq!(results.cases.len(), 3);
    let fail = &results
        .cases
        .iter()
        .find(|c| c.name == "undocumented_branch")
        .unwrap()
        .variants[&Variant::Traced];
    assert_eq!(fail.outcome, Outcome::Fail);

    let (code, stdout) = cli(&[gate, "--filter", "^faithful$"]);
    assert_eq!(code, i32::from(exit::OK), "{stdout}");
    assert!(out.path().join("results.json").is_file());

    let (code, _) = cli(&[fixtures().join("bad/yaml_syntax.yaml").to_str().unwrap()]);
    assert_eq!(code, i32::from(exit::HARNESS_ERROR));
    let (code, _) = cli(&["--filter", "(unclosed"]);
    assert_eq!(code, i32::from(exit::HARNESS_ERROR));
}
