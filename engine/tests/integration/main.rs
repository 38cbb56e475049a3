//! Integration tests: the real Python worker, real torch 2.13, real libtorch through tch, on the
//! shipped cases and on fixtures that misbehave on purpose (`tests/fixtures/`).
//!
//! The Python interpreter comes from `HARNESS_PYTHON` (set by `cargo xtask test`) or the
//! repository's `.venv`.

mod devices;
mod inputs;
mod output;
mod report;
mod user_repo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use harness::case::Variant;
use harness::options::Options;
use harness::pitfall::Pitfall;
use harness::results::{exit, CaseStatus, Outcome, Results, SnapshotState, VariantResult};
use harness::snapshot::{Mode, Policy};
use harness::verify::Request;
use harness_engine::tensors;
use harness_engine::verify::verify;

fn repo() -> PathBuf {
    Path::new(env!("HARNESS_ENGINE_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `harness` binary (the core crate's), beside `harness-run` in the same target folder.
/// `cargo test` builds only this package's binaries, so it is built here, once per test run, with
/// the cargo that runs the tests: a stale one would carry another build id (and so another
/// cache key) than `harness-run`.
fn harness_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--quiet", "-p", "harness", "--bin", "harness"]);
            if !cfg!(debug_assertions) {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("cargo runs");
            assert!(status.success(), "cargo build -p harness failed");
            let bin = Path::new(env!("CARGO_BIN_EXE_harness-run")).with_file_name("harness");
            assert!(bin.exists(), "{} is missing", bin.display());
            bin
        })
        .clone()
}

fn fixtures() -> PathBuf {
    Path::new(env!("HARNESS_ENGINE_DIR")).join("tests/fixtures")
}

fn python() -> PathBuf {
    std::env::var_os("HARNESS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// Verify `paths` through the library, as the CLI does, without snapshot checks.
fn run(paths: &[PathBuf], filter: Option<&str>, seed: Option<u64>) -> (Results, tempfile::TempDir) {
    run_with(paths, filter, seed, None)
}

/// The committed snapshots, read only (as in CI).
fn committed_snapshots() -> Policy {
    Policy {
        dir: repo().join("harness/snapshots"),
        mode: Mode::ReadOnly,
    }
}

fn run_with(
    paths: &[PathBuf],
    filter: Option<&str>,
    seed: Option<u64>,
    snapshots: Option<Policy>,
) -> (Results, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    (run_into(paths, filter, seed, out.path(), snapshots), out)
}

fn run_into(
    paths: &[PathBuf],
    filter: Option<&str>,
    seed: Option<u64>,
    out: &Path,
    snapshots: Option<Policy>,
) -> Results {
    let variants = paths.first().map(|p| variants_for(p)).unwrap_or_default();
    run_choosing(paths, (filter, seed), out, snapshots, variants)
}

/// A case's variants as its project chooses them: the shipped cases' (`cases/`) are the
/// repository's `harness.toml`'s, a fixture's the defaults.
fn variants_for(case: &Path) -> harness::case::VariantChoice {
    if case.starts_with(repo().join("cases")) {
        project_variants()
    } else {
        Default::default()
    }
}

/// The variants the repository's own `harness.toml` gives its cases (`cargo xtask verify`).
fn project_variants() -> harness::case::VariantChoice {
    let project = harness::project::Project::load(&repo().join("harness.toml"), &repo()).unwrap();
    harness::case::VariantChoice {
        project: project.variants,
        run: None,
    }
}

fn run_choosing(
    paths: &[PathBuf],
    (filter, seed): (Option<&str>, Option<u64>),
    out: &Path,
    snapshots: Option<Policy>,
    variants: harness::case::VariantChoice,
) -> Results {
    let req = Request {
        paths: paths.to_vec(),
        filter: filter.map(|f| regex::Regex::new(f).unwrap()),
        options: Options {
            python: python(),
            out_dir: out.to_path_buf(),
            seed,
            timeout: None,
            max_elements: None,
            replay: None,
            torch_threads: None,
            python_path: Vec::new(),
            variants,
            device: Default::default(),
        },
        snapshots,
        cache: None,
        jobs: 1,
        shard: None,
    };
    verify(&req, |_| {}).expect("the worker starts")
}

/// Replay a saved input for a case file, with no snapshots and no cache.
fn replay(case: &Path, input: &Path, seed: Option<u64>, out: &Path) -> Results {
    let options = Options {
        python: python(),
        out_dir: out.to_path_buf(),
        seed,
        timeout: None,
        max_elements: None,
        replay: Some(input.to_path_buf()),
        torch_threads: None,
        python_path: Vec::new(),
        variants: variants_for(case),
        device: Default::default(),
    };
    verify(&Request::new(vec![case.to_path_buf()], options), |_| {}).unwrap()
}

/// The shipped cases, run once for every test that looks at them; results.json is written to
/// (and read back from) `<out>/results.json`, as the CLI does.
fn shipped() -> &'static (Results, PathBuf) {
    static SHIPPED: OnceLock<(Results, PathBuf)> = OnceLock::new();
    SHIPPED.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shipped");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        // The top-level cases; the model zoo (cases/zoo) is `cargo xtask verify`'s, too slow
        // for the test suite.
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("cases"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        // With the project's variants, as `cargo xtask verify` runs them.
        let snapshots = Some(committed_snapshots());
        let results = run_choosing(&files, (None, None), &out, snapshots, project_variants());
        let json = out.join("results.json");
        results.write(&json).unwrap();
        (Results::read(&json).unwrap(), out)
    })
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
                    .map(|(v, r)| {
                        let ids: Vec<&str> = r.pitfalls.iter().map(|p| p.id()).collect();
                        let ids = match r.outcome {
                            Outcome::Pass => String::new(),
                            _ => format!("[{}]", ids.join(",")),
                        };
                        format!("{v}={}{ids}", r.outcome.label().to_lowercase())
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                other => other.label().to_string(),
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

/// torch.export's failures, each with the evidence torch gives and an export fix hint; a program
/// that exports runs in the worker, with its graph (and dims) as its `.code`.
fn exported_findings_say_what_torch_export_said(variant: &dyn Fn(&str, Variant) -> VariantResult) {
    let exported = Variant::named("exported").unwrap();
    let first = |case: &str| variant(case, exported).findings[0].clone();
    let gate = first("decision_gate");
    assert_eq!(gate.pitfall, Pitfall::DataDependentControlFlow);
    assert!(gate
        .location
        .unwrap()
        .ends_with("cases/models/tutorial.py:25"));
    assert!(
        gate.evidence.iter().any(|e| e.contains("if x.sum() > 0")),
        "{:?}",
        gate.evidence
    );
    assert!(gate.hint.contains("torch.cond"), "{}", gate.hint);
    let len = first("arange_len");
    assert_eq!(len.pitfall, Pitfall::ShapeSpecialization);
    assert!(
        len.summary.contains("B: the model's code specialized it"),
        "{}",
        len.summary
    );
    assert!(
        len.summary.contains("torch suggests: B = 4"),
        "{}",
        len.summary
    );
    assert!(len.hint.contains("Dim"), "{}", len.hint);
    let numpy = first("numpy_round_trip");
    assert_eq!(numpy.pitfall, Pitfall::ExportError);
    assert!(numpy
        .location
        .unwrap()
        .ends_with("cases/models/pitfalls.py:32"));
    let finfo = first("mask_fill_finfo");
    assert_eq!(finfo.pitfall, Pitfall::DtypeSpecialization);
    assert!(finfo.hint.contains("torch.export"), "{}", finfo.hint);
    let cell = variant("my_cell", exported);
    assert_eq!(cell.outcome, Outcome::Pass);
    let code = cell.export.code.unwrap();
    assert!(code.starts_with("# dims: x.shape[0] in [1, "), "{code}");
    assert!(code.contains("torch.ops.aten.linear.default"), "{code}");
    assert!(cell.export.artifact.unwrap().ends_with(".pt2"));
}

/// Each case's timeline adds up to its duration, with its phases in order and each variant's
/// export and run named.
fn every_second_is_explained(results: &Results) {
    for c in results.cases.iter().filter(|c| c.status == CaseStatus::Ran) {
        let phases: Vec<&str> = c.timeline.iter().map(|p| p.phase.as_str()).collect();
        let sum: f64 = c.timeline.iter().map(|p| p.ms).sum();
        assert!(
            (sum - c.duration_ms as f64).abs() <= 2.0,
            "{}: phases add up to {sum} ms of {} ms: {phases:?}",
            c.name,
            c.duration_ms
        );
        let at = |name: &str| phases.iter().position(|p| *p == name);
        let order: Vec<Option<usize>> = ["fork", "load", "eager", "snapshot"].map(at).into();
        assert!(
            order.iter().all(Option::is_some) && order.is_sorted(),
            "{}: {phases:?}",
            c.name
        );
        for (v, r) in &c.variants {
            if r.export.ok {
                assert!(
                    at(&format!("export {v}")).is_some(),
                    "{}: {phases:?}",
                    c.name
                );
            }
            if r.export.ok && r.samples_run > 0 {
                assert!(
                    at(&format!("run {v}")).is_some(),
                    "{}/{v}: {phases:?}",
                    c.name
                );
            }
        }
    }
}

#[test]
fn shipped_cases_meet_their_expectations() {
    let (results, out) = shipped();
    let none = "";
    check(
        results,
        &[
            ("aoti_cell", "scripted=pass exported=pass aoti=pass"),
            ("arange_len", "traced=xfail[shape_specialization] scripted=pass frozen=pass optimized=pass exported=xfail[shape_specialization]"),
            ("arange_shape", "traced=pass scripted=pass frozen=pass optimized=pass exported=pass"),
            ("classifier", "traced=pass scripted=pass frozen=pass optimized=pass exported=pass"),
            ("decision_gate", "traced=xfail[control_flow_erasure] scripted=pass frozen=pass optimized=pass exported=xfail[data_dependent_control_flow]"),
            ("device_factory", "traced=xfail[device_specialization] scripted=pass frozen=pass optimized=pass exported=xfail[device_specialization]"),
            ("dict_output", "traced=xfail[trace_error] scripted=pass frozen=pass optimized=pass exported=pass"),
            ("dropout_train", "traced=xfail[nondeterministic_eager] scripted=xfail[nondeterministic_eager] frozen=xfail[nondeterministic_eager] optimized=xfail[nondeterministic_eager] exported=xfail[nondeterministic_eager]"),
            ("feature_hash", "traced=xfail[value_specialization] scripted=xfail[output_mismatch] frozen=xfail[output_mismatch] optimized=xfail[output_mismatch] exported=xfail[data_dependent_control_flow]"),
            ("flatten_len", "traced=xfail[shape_specialization,runtime_error] scripted=pass frozen=pass optimized=pass exported=xfail[shape_specialization]"),
            ("frozen_cell", "traced=pass scripted=pass frozen=pass optimized=pass"),
            ("frozen_denorm_dtype", "traced=pass scripted=pass frozen=xfail[output_mismatch] optimized=xfail[output_mismatch]"),
            ("frozen_transductive_bn", "traced=pass scripted=pass frozen=xfail[output_mismatch] optimized=xfail[output_mismatch]"),
            ("item_scale", "traced=xfail[value_specialization] scripted=pass frozen=pass optimized=pass exported=pass"),
            ("loop_over_batch", "traced=xfail[shape_specialization,runtime_error] scripted=pass frozen=pass optimized=pass exported=xfail[shape_specialization]"),
            ("mask_fill_finfo", "traced=xfail[dtype_specialization] scripted=xfail[script_compile_error] frozen=xfail[script_compile_error] optimized=xfail[script_compile_error] exported=xfail[dtype_specialization]"),
            ("my_cell", "traced=pass scripted=pass frozen=pass optimized=pass exported=pass"),
            ("numpy_round_trip", "traced=xfail[value_specialization,shape_specialization] scripted=xfail[script_compile_error] frozen=xfail[script_compile_error] optimized=xfail[script_compile_error] exported=xfail[export_error]"),
            ("optional_bias", "traced=pass scripted=xfail[script_compile_error] frozen=xfail[script_compile_error] optimized=xfail[script_compile_error] exported=pass"),
            ("scaled_by_width", "traced=pass scripted=pass frozen=pass optimized=pass exported=pass"),
            ("shipped_cell", "traced=pass scripted=pass frozen=pass optimized=pass shipped=pass exported=pass"),
            ("shipped_gate", "traced=xfail[control_flow_erasure] scripted=pass frozen=pass optimized=pass shipped=xfail[control_flow_erasure] exported=xfail[data_dependent_control_flow]"),
            ("shipped_newer_torch", "traced=pass scripted=pass frozen=pass optimized=pass shipped=xfail[artifact_incompatible] exported=pass"),
            ("split_heads", "traced=pass scripted=xfail[container_mismatch] frozen=xfail[container_mismatch] optimized=xfail[container_mismatch] exported=pass"),
        ],
    );
    let _ = none;
    assert_eq!(results.exit_code(), exit::OK);
    assert_eq!(results.torch, harness::TORCH_VERSION);
    every_second_is_explained(results);

    // Every pitfall id is shown by some shipped case.
    let seen: std::collections::BTreeSet<Pitfall> = results
        .cases
        .iter()
        .flat_map(|c| c.variants.values())
        .flat_map(|v| v.pitfalls.clone())
        .collect();
    for p in Pitfall::ALL {
        assert!(seen.contains(&p), "no shipped case shows {p}");
    }

    let variant = |case: &str, v: Variant| {
        let c = results.cases.iter().find(|c| c.name == case).unwrap();
        c.variants[&v].clone()
    };
    // The len() case: the shape is frozen, shown by a re-trace, the warning and the constant.
    exported_findings_say_what_torch_export_said(&variant);
    let traced = variant("arange_len", Variant::named("traced").unwrap());
    let f = &traced.findings[0];
    assert_eq!(f.pitfall, Pitfall::ShapeSpecialization);
    assert_eq!(
        f.location
            .as_deref()
            .map(|l| l.ends_with("cases/models/tutorial.py:54")),
        Some(true)
    );
    assert!(
        f.evidence.iter().any(|e| e.contains("int 4 became")),
        "{:?}",
        f.evidence
    );
    assert!(f
        .evidence
        .iter()
        .any(|e| e.starts_with("TracerWarning") && e.contains("len(x)")));
    assert!(f
        .evidence
        .iter()
        .any(|e| e.contains("trace-time value of dim B")));
    assert!(f.hint.contains("x.shape[0]"));
    assert!(traced
        .export
        .code
        .as_deref()
        .unwrap()
        .contains("torch.arange(4"));
    // Control flow: a re-trace on a failing input records another path.
    let gate = variant("decision_gate", Variant::named("traced").unwrap());
    assert!(gate.findings[0]
        .evidence
        .iter()
        .any(|e| e.contains("records a different graph")));
    assert!(gate.findings[0].hint.contains("script_if_tracing"));
    // Value specialization: the same ops with another constant.
    let item = variant("item_scale", Variant::named("traced").unwrap());
    assert!(item.findings[0]
        .evidence
        .iter()
        .any(|e| e.contains("same ops with other constants")));
    // The device probe ran on meta and named the baked device.
    let device = variant("device_factory", Variant::named("traced").unwrap());
    let check = device.device_check.unwrap();
    assert!(check.flagged && check.device == "meta", "{check:?}");
    assert!(device.findings[0]
        .evidence
        .iter()
        .any(|e| e.contains("Device device(\"cpu\")")));
    // Graphs that name no device are not probed, and say so.
    for v in [
        Variant::named("traced").unwrap(),
        Variant::named("scripted").unwrap(),
    ] {
        let check = variant("item_scale", v).device_check.unwrap();
        assert!(
            !check.flagged && check.detail.starts_with("not run on meta"),
            "{check:?}"
        );
    }
    // Script errors name the user's line.
    let script = variant("mask_fill_finfo", Variant::named("scripted").unwrap());
    assert!(script.findings[0]
        .location
        .as_deref()
        .unwrap()
        .ends_with("pitfalls.py:39"));

    // Every sample ran on every exported variant; the artifacts are where results.json says.
    // Eager's forward time, as the worker measured it, is kept per sample.
    for c in &results.cases {
        if c.status == CaseStatus::Ran {
            assert!(c.samples.iter().all(|s| s.eager_ms > 0.0), "{}", c.name);
        }
        for v in c.variants.values() {
            if v.export.ok {
                assert_eq!(v.samples_run, c.samples.len(), "{}", c.name);
                assert!(Path::new(v.export.artifact.as_deref().unwrap()).starts_with(out));
            }
            for f in &v.findings {
                assert!(
                    !f.summary.is_empty() && !f.hint.is_empty(),
                    "{}: {f:?}",
                    c.name
                );
            }
        }
    }

    // Divergent variants carry a shrunk counterexample that replays.
    let mut round_trips = Vec::new();
    for c in &results.cases {
        for (v, r) in &c.variants {
            let divergent =
                r.first_failure.is_some() && !r.pitfalls.contains(&Pitfall::NondeterministicEager);
            assert_eq!(r.counterexample.is_some(), divergent, "{}/{v}", c.name);
            let Some(cx) = &r.counterexample else {
                continue;
            };
            round_trips.push(cx.round_trips);
            assert!(cx.round_trips <= harness_engine::run::MAX_SHRINK_ROUND_TRIPS);
            assert!(Path::new(&cx.file).is_file(), "{}", cx.file);
            assert!(
                cx.replay.contains("--replay") && cx.replay.contains(&c.file),
                "{}",
                cx.replay
            );
        }
    }
    assert!(!round_trips.is_empty());
    let shrunk = |case: &str| {
        variant(case, Variant::named("traced").unwrap())
            .counterexample
            .unwrap()
    };
    assert_eq!(shrunk("decision_gate").dims["B"], 1);
    assert_eq!(shrunk("arange_len").dims["B"], 1);
    assert_eq!(shrunk("arange_len").inputs, "x: 1x3 float32");

    // Every variant with code matches its committed snapshot; the others are skipped.
    for c in &results.cases {
        for (v, r) in &c.variants {
            let snap = r.snapshot.as_ref().unwrap();
            let expect = if r.export.code.is_some() && r.export.ok {
                SnapshotState::Matched
            } else {
                SnapshotState::Skipped
            };
            assert_eq!(snap.state, expect, "{}/{v}: {snap:?}", c.name);
            assert!(snap.path.ends_with(&format!("{}__{v}.snap", c.name)));
        }
        // The case's diff is its first variant's against its base, both exported.
        let ok = |v: &Variant| c.variants.get(v).is_some_and(|r| r.export.ok);
        let pair = c
            .variants
            .keys()
            .any(|v| ok(v) && v.diff_base().is_some_and(|b| ok(&b)));
        assert_eq!(c.code_diff.is_some(), pair, "{}", c.name);
    }
    // The traced-vs-scripted diff shows what tracing erased or baked in.
    let diff = |case: &str| {
        let c = results.cases.iter().find(|c| c.name == case).unwrap();
        c.code_diff.clone().unwrap()
    };
    let gate = diff("decision_gate");
    assert!(gate.starts_with("--- traced\n+++ scripted\n"), "{gate}");
    assert!(
        gate.contains("\n+  if bool("),
        "the if only the scripted side has: {gate}"
    );
    let device = diff("device_factory");
    assert!(
        device
            .lines()
            .any(|l| l.starts_with('-') && l.contains("torch.device(\"cpu\")")),
        "{device}"
    );
    let arange = diff("arange_len");
    assert!(
        arange
            .lines()
            .any(|l| l.starts_with('-') && l.contains("torch.arange(4,")),
        "{arange}"
    );
    // The classifier's forward is the same either way; only the submodules' code differs.
    let classifier = diff("classifier");
    assert!(
        !classifier
            .lines()
            .any(|l| (l.starts_with('-') || l.starts_with('+')) && l.contains("sigmoid")),
        "{classifier}"
    );
    assert!(classifier.contains("\n # module fc1\n"), "{classifier}");
    // A snapshot holds the submodules' code and the constants' values too.
    let stored = |file: &str| {
        let path = repo().join("harness/snapshots").join(file);
        insta::Snapshot::from_file(&path)
            .unwrap()
            .as_text()
            .unwrap()
            .to_string()
    };
    let cell = stored("my_cell__traced.snap");
    assert!(
        cell.contains("\n# module linear\n") && cell.contains("torch.linear("),
        "{cell}"
    );
    let hash = stored("feature_hash__traced.snap");
    assert!(
        hash.contains("CONSTANTS.c0") && hash.contains("\n# c0 = "),
        "{hash}"
    );
}

/// The printed replay command reproduces the divergence on exactly the saved input.
#[test]
fn counterexamples_replay() {
    let (results, _out) = run(&[repo().join("cases/decision_gate.yaml")], None, None);
    let cx = results.cases[0].variants[&Variant::named("traced").unwrap()]
        .counterexample
        .clone()
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let replay = |file: &Path| {
        let req = Request {
            paths: vec![repo().join("cases/decision_gate.yaml")],
            filter: None,
            options: Options {
                python: python(),
                out_dir: out.path().to_path_buf(),
                seed: Some(0),
                timeout: None,
                max_elements: None,
                replay: Some(file.to_path_buf()),
                torch_threads: None,
                python_path: Vec::new(),
                variants: project_variants(),
                device: Default::default(),
            },
            snapshots: Some(Policy {
                dir: out.path().join("snapshots"),
                mode: Mode::Check,
            }),
            cache: None,
            jobs: 1,
            shard: None,
        };
        verify(&req, |_| {}).unwrap()
    };
    let r = replay(Path::new(&cx.file));
    let case = &r.cases[0];
    assert_eq!(
        case.samples.len(),
        2,
        "the trace input and the replayed one"
    );
    assert_eq!(case.samples[1].inputs, cx.inputs);
    // The replay reproduces the run's verdict: the same pitfall, as the case expects it.
    let traced = &case.variants[&Variant::named("traced").unwrap()];
    assert_eq!(traced.outcome, Outcome::Xfail, "{}", traced.message);
    assert_eq!(traced.pitfalls, vec![Pitfall::ControlFlowErasure]);
    assert_eq!(
        case.variants[&Variant::named("scripted").unwrap()].outcome,
        Outcome::Pass
    );
    assert_eq!(r.exit_code(), exit::OK);
    // A replay checks the input, not the snapshots.
    assert!(case.variants.values().all(|v| v.snapshot.is_none()));
    assert!(!out.path().join("snapshots").exists());
    // A file without the case's inputs is a clear case error.
    let empty = out.path().join("empty.safetensors");
    tensors::write(
        &empty,
        &[("y".to_string(), tch::Tensor::from_slice(&[1.0f32]))],
    )
    .unwrap();
    let r = replay(&empty);
    let err = r.cases[0].error.as_ref().unwrap();
    assert!(err.message.ends_with("has no input `x`"), "{}", err.message);
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
            ("empty", "error:case_file"),
            ("import_raises", "error:model_import"),
            ("missing_entry", "error:model_entry"),
            ("missing_model", "error:case_file"),
            ("not_a_module", "error:model_entry"),
            ("not_utf8", "error:case_file"),
            ("outside_repo", "error:case_file"),
            ("oversized", "error:too_large"),
            ("syntax_error_model", "error:model_import"),
            ("trace_outside_range", "error:case_file"),
            ("undeclared_dim", "error:case_file"),
            ("unsupported_output", "error:unsupported_output"),
            ("unknown_field", "error:case_file"),
            ("wrong_type", "error:case_file"),
            ("yaml_syntax", "error:case_file"),
        ],
    );
    assert_eq!(results.exit_code(), exit::HARNESS_ERROR);
    let message = |name: &str| {
        let c = results.cases.iter().find(|c| c.name == name).unwrap();
        c.error.as_ref().unwrap().message.clone()
    };
    // (case, a fragment its one line must hold, is the line all there is)
    let expect = [
        (
            "yaml_syntax",
            "yaml_syntax.yaml:3:1: did not find expected ',' or ']'",
            true,
        ),
        (
            "unknown_field",
            "unknown_field.yaml:4:3: model: unknown field `evals`, expected one of `source`, \
             `import`, `entry`, `kwargs`, `eval`, `weights`, `weights_strict`; did you mean `eval`?",
            true,
        ),
        (
            "wrong_type",
            "wrong_type.yaml:4:12: check.samples: invalid type: string \"many\", expected usize",
            true,
        ),
        ("empty", "empty.yaml: the case file is empty", true),
        (
            "not_utf8",
            "not_utf8.yaml: the case file is not UTF-8 (invalid byte at offset",
            true,
        ),
        (
            "undeclared_dim",
            "undeclared_dim.yaml: inputs[0].shape[0]: dim `N` is not declared under `dims`",
            true,
        ),
        (
            "trace_outside_range",
            "trace_outside_range.yaml: dims.B.trace: trace 9 is outside [min 1, max 8]",
            true,
        ),
        (
            "missing_model",
            "missing_model.yaml: model.source: ../models/nowhere.py does not exist",
            true,
        ),
        (
            "outside_repo",
            "(model files must stay inside the repository, or under one of harness.toml's `roots`)",
            true,
        ),
        (
            "oversized",
            "sample s2 (dim:B; dims B=16) would hold 268435456 elements, above the budget of \
             16777216 per sample",
            true,
        ),
        (
            "missing_entry",
            "fixtures.py has no attribute 'Afine'",
            true,
        ),
        (
            "import_raises",
            "No module named 'package_that_does_not_exist'",
            true,
        ),
        ("syntax_error_model", "SyntaxError: expected ':'", true),
        (
            "constructor_raises",
            "ValueError: bad config: width must be even",
            true,
        ),
        (
            "not_a_module",
            "not_a_module returned str, not a torch.nn.Module",
            true,
        ),
        (
            "eager_raises",
            "eager raised on sample s0 (trace; x: 2x5 float32)",
            false,
        ),
        (
            "unsupported_output",
            "eager's output on sample s0 (trace; x: 2x3 float32) cannot be compared: TypeError: \
             output of type Opaque cannot be compared",
            false,
        ),
    ];
    for (name, fragment, one_line) in expect {
        let m = message(name);
        assert!(m.contains(fragment), "{name}: {m:?} lacks {fragment:?}");
        if one_line {
            assert!(!m.contains('\n'), "{name}: not one line: {m:?}");
        }
    }
    // Model faults keep the traceback's last lines for the report.
    let c = results
        .cases
        .iter()
        .find(|c| c.name == "constructor_raises")
        .unwrap();
    let tb = &c.error.as_ref().unwrap().traceback;
    assert!(
        tb.iter()
            .any(|l| l.contains("fixtures.py") && l.contains("__init__")),
        "{tb:?}"
    );
}

#[test]
fn worker_deaths_hangs_and_prints_are_contained() {
    let (results, _out) = run(&[fixtures().join("robust")], None, None);
    check(
        &results,
        &[
            ("a_printer", "traced=pass scripted=pass"),
            ("b_exits", "crashed"),
            ("c_after_crash", "traced=pass scripted=pass"),
            ("d_in_place", "traced=pass scripted=pass"),
            ("e_segfault", "crashed"),
            ("f_killed", "crashed"),
            ("g_hangs", "timeout"),
            ("h_non_finite", "traced=pass scripted=pass"),
            ("i_probe_segfault", "traced=pass"),
        ],
    );
    assert_eq!(results.exit_code(), exit::HARNESS_ERROR);
    let probe = results
        .cases
        .iter()
        .find(|c| c.name == "i_probe_segfault")
        .unwrap();
    assert!(
        probe.notes.iter().any(|n| n.contains("device probe on meta failed")
            && n.contains("killed by signal 11")),
        "{:?}",
        probe.notes
    );
    let message = |name: &str| {
        let c = results.cases.iter().find(|c| c.name == name).unwrap();
        c.error.as_ref().unwrap().message.clone()
    };
    let m = message("b_exits");
    assert!(m.contains("exited with code 3"), "{m}");
    assert!(
        !m.contains("constructing Printer"),
        "the previous case's stderr leaked: {m}"
    );
    assert!(message("e_segfault").contains("killed by signal 11 (SIGSEGV)"));
    assert!(message("f_killed").contains("killed by signal 9 (SIGKILL)"));
    let m = message("g_hangs");
    assert!(m.contains("longer than its limit of 3 s"), "{m}");
    let hang = results.cases.iter().find(|c| c.name == "g_hangs").unwrap();
    assert!(
        hang.duration_ms < 20_000,
        "the limit was not enforced: {} ms",
        hang.duration_ms
    );
}

/// SIGTERM mid-run: the worker is reaped, the results so far are written (incomplete), the
/// case cut short leaves no artifacts and no half-written file is left.
#[test]
fn sigterm_writes_partial_results_and_reaps_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::copy(
        fixtures().join("models/fixtures.py"),
        cases.join("fixtures.py"),
    )
    .unwrap();
    let pid_file = dir.path().join("worker.pid");
    std::fs::write(
        cases.join("a_fast.yaml"),
        "model: {source: fixtures.py, entry: Affine}\ninputs: [{name: x, shape: [2, 4]}]\n\
         check: {samples: 2}\n",
    )
    .unwrap();
    std::fs::write(
        cases.join("b_hangs.yaml"),
        format!(
            "model: {{source: fixtures.py, entry: Hangs, kwargs: {{pid_file: {}}}}}\n\
             inputs: [{{name: x, shape: [2, 3]}}]\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::write(
        cases.join("c_never.yaml"),
        std::fs::read(cases.join("a_fast.yaml")).unwrap(),
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut child = Command::new(harness_bin())
        .current_dir(std::env::temp_dir())
        .arg("verify")
        .arg("--no-snapshots")
        .arg("--no-cache")
        .args(["--jobs", "1"])
        .arg(&cases)
        .arg("--python")
        .arg(python())
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the hanging model runs inside the worker.
    let start = std::time::Instant::now();
    while !pid_file.exists() || std::fs::read_to_string(&pid_file).unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the hanging case never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let worker_pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(i32::from(exit::HARNESS_ERROR)));

    let results = Results::read(&out.join("results.json")).unwrap();
    assert!(!results.complete);
    check(
        &results,
        &[
            ("a_fast", "traced=pass scripted=pass"),
            ("b_hangs", "interrupted"),
        ],
    );
    assert!(
        !Path::new(&format!("/proc/{worker_pid}")).exists(),
        "worker {worker_pid} still there"
    );
    assert!(!out.join("artifacts/b_hangs").exists());
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "half-written files: {leftovers:?}");
}

#[test]
fn same_seed_same_samples() {
    let case = repo().join("cases/my_cell.yaml");
    let samples = |seed| {
        let (r, _out) = run(std::slice::from_ref(&case), None, Some(seed));
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

/// `harness verify` with the test's Python and snapshot folder, outside CI whatever runs the
/// tests (the CI test sets it back).
fn harness_cli(snapshots: &Path) -> Command {
    let mut cmd = Command::new(harness_bin());
    cmd.arg("verify")
        .arg("--python")
        .arg(python())
        .arg("--snapshots")
        .arg(snapshots)
        .env_remove("CI")
        .env_remove("TF_BUILD")
        // Outside the repository: its harness.toml (every variant for the shipped cases) is not
        // the fixtures' project.
        .current_dir(std::env::temp_dir());
    cmd
}

/// The command line: exit codes, one line per case and variant, results.json where asked.
#[test]
fn cli_exit_codes_and_output() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("r.json");
    let snapshots = out.path().join("snapshots");
    let cli = |args: &[&str]| {
        let o = harness_cli(&snapshots)
            .args(args)
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

    // The fixtures' snapshots, accepted into a temporary folder first.
    let (code, stdout) = cli(&[gate, "--accept"]);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    assert!(stdout.contains("snapshots: 8 accepted"), "{stdout}");
    let (code, stdout) = cli(&[gate, "--json", json.to_str().unwrap()]);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    assert!(
        stdout.contains("FAIL   undocumented_branch/traced: control_flow_erasure"),
        "{stdout}"
    );
    assert!(
        stdout.contains("XPASS  stale_expectation/traced"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "FAIL   wrong_expectation/traced: expected shape_specialization, observed \
             control_flow_erasure; shape_specialization not seen"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("4 cases, 8 variants: 5 pass, 2 fail, 1 xpass"),
        "{stdout}"
    );
    assert!(stdout.contains("snapshots: 8 matched\n"), "{stdout}");
    // A divergent case shows the traced-vs-scripted code diff; no colours off a terminal.
    assert!(
        stdout.contains("code: traced vs scripted .code:"),
        "{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "{stdout}");
    let results = Results::read(&json).unwrap();
    assert_eq!(results.cases.len(), 4);
    let fail = &results
        .cases
        .iter()
        .find(|c| c.name == "undocumented_branch")
        .unwrap()
        .variants[&Variant::named("traced").unwrap()];
    assert_eq!(fail.outcome, Outcome::Fail);

    let (code, stdout) = cli(&[gate, "--filter", "^faithful$"]);
    assert_eq!(code, i32::from(exit::OK), "{stdout}");
    assert!(out.path().join("results.json").is_file());

    // `harness verify | head`: a reader that goes away costs no panic and changes no exit code.
    let mut child = harness_cli(&snapshots)
        .args([gate, "--filter", "^faithful$", "--durations", "3", "--out"])
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(i32::from(exit::OK)), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (code, _) = cli(&[fixtures().join("bad/yaml_syntax.yaml").to_str().unwrap()]);
    assert_eq!(code, i32::from(exit::HARNESS_ERROR));
    let (code, _) = cli(&["--filter", "(unclosed"]);
    assert_eq!(code, i32::from(exit::HARNESS_ERROR));
}

/// `--variants` (the run's choice, over the case files' own): exactly these variants run,
/// `shipped` joins a case that names an artifact, and an expectation for a variant the run left
/// out is not judged (decision_gate expects its trace to fail).
#[test]
fn the_run_chooses_the_variants() {
    let out = tempfile::tempdir().unwrap();
    let mut options = Options {
        python: python(),
        out_dir: out.path().to_path_buf(),
        seed: None,
        timeout: None,
        max_elements: None,
        replay: None,
        torch_threads: None,
        python_path: Vec::new(),
        variants: project_variants(),
        device: Default::default(),
    };
    options.variants.run = Some(vec![Variant::named("scripted").unwrap()]);
    let cases = ["decision_gate", "shipped_cell"].map(|c| repo().join(format!("cases/{c}.yaml")));
    let results = verify(&Request::new(cases.to_vec(), options), |_| {}).unwrap();
    check(
        &results,
        &[
            ("decision_gate", "scripted=pass"),
            ("shipped_cell", "scripted=pass shipped=pass"),
        ],
    );
    assert_eq!(results.exit_code(), exit::OK);
}

/// List[Tensor] inputs reach eager (as a Python list) and libtorch (as a TensorList), shrink,
/// and replay.
#[test]
fn list_inputs_reach_eager_and_libtorch() {
    let case = fixtures().join("lists/sum_list.yaml");
    let (results, _out) = run(std::slice::from_ref(&case), None, None);
    check(
        &results,
        &[(
            "sum_list",
            "traced=xfail[shape_specialization,runtime_error] scripted=pass",
        )],
    );
    let c = &results.cases[0];
    assert!(
        c.samples.iter().any(|s| s.inputs.contains("images.3: ")),
        "{:?}",
        c.samples
    );
    let cx = c.variants[&Variant::named("traced").unwrap()]
        .counterexample
        .clone()
        .unwrap();
    assert_eq!(cx.inputs, "images.0: 3x2 float32");
    let out = tempfile::tempdir().unwrap();
    let r = replay(&case, Path::new(&cx.file), Some(0), out.path());
    let v = &r.cases[0].variants;
    // The replay reproduces the run's verdict (an expected runtime error).
    assert_eq!(
        v[&Variant::named("traced").unwrap()].outcome,
        Outcome::Xfail
    );
    assert_eq!(
        v[&Variant::named("scripted").unwrap()].outcome,
        Outcome::Pass
    );
}

#[test]
fn device_probe_is_judged_only_where_eager_runs_on_meta() {
    // A graph names a device, so the probe runs; eager itself cannot (`.item()` on meta), so no
    // variant is judged there, and the case says so.
    let case = fixtures().join("probe/pinned_item.yaml");
    let (results, _out) = run(std::slice::from_ref(&case), None, None);
    check(
        &results,
        &[(
            "pinned_item",
            "traced=xfail[value_specialization] scripted=pass",
        )],
    );
    let c = &results.cases[0];
    assert!(
        c.notes
            .iter()
            .any(|n| n.contains("device probe on meta skipped")),
        "{:?}",
        c.notes
    );
    assert!(c.variants.values().all(|v| v.device_check.is_none()));
    // #13 item 2: the traced graph's device pin is not judged: a visible warning, not silence.
    let traced = &c.variants[&Variant::named("traced").unwrap()];
    assert!(
        traced.not_judged.iter().any(|w| w
            .starts_with("device portability not judged: eager cannot run on meta")
            && w.contains("graph names a device")),
        "{:?}",
        traced.not_judged
    );
    let lines = harness::console::Console::plain().case_lines(c);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WARN   pinned_item/traced: device portability")),
        "{lines:?}"
    );
    assert!(
        harness::console::Console::summary(&results).contains("1 with checks not judged"),
        "{}",
        harness::console::Console::summary(&results)
    );
}

#[test]
fn device_probe_always_catches_a_device_branch_the_trace_erased() {
    let cases =
        ["probe/device_branch.yaml", "probe/device_branch_auto.yaml"].map(|c| fixtures().join(c));
    let (results, _out) = run(&cases, None, None);
    check(
        &results,
        &[
            (
                "device_branch",
                "traced=xfail[device_specialization] scripted=pass",
            ),
            // The default (`auto`): the traced graph names no device, so it is not probed, and
            // the check says how to probe it anyway.
            ("device_branch_auto", "traced=pass scripted=pass"),
        ],
    );
    let auto = results
        .cases
        .iter()
        .find(|c| c.name == "device_branch_auto")
        .unwrap();
    let check = auto.variants[&Variant::named("traced").unwrap()]
        .device_check
        .clone()
        .unwrap();
    assert!(check.detail.contains("device_probe: always"), "{check:?}");
}

/// A case `net` in a fresh folder: `relu(x) * factor` and its case file.
fn write_net(dir: &Path, factor: u32) {
    std::fs::write(
        dir.join("model.py"),
        format!(
            "import torch\n\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return torch.relu(x) * {factor}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("net.yaml"),
        "model: {source: model.py, entry: Net}\ninputs: [{name: x, shape: [B, 4]}]\ndims: {B: {trace: 2, min: 1, max: 3}}\ncheck: {samples: 3}\n",
    )
    .unwrap();
}

/// `harness` serves a run whose every case is cached by itself (it does not link libtorch in
/// release builds); any other run it hands to `harness-run`, next to it.
#[test]
fn a_fully_cached_run_is_served_without_the_runner() {
    let dir = tempfile::tempdir().unwrap();
    write_net(dir.path(), 2);
    let out = dir.path().join("out");
    let cache = dir.path().join("cache");
    let verify = |exe: &Path| {
        Command::new(exe)
            .arg("verify")
            .arg(dir.path().join("net.yaml"))
            .arg("--python")
            .arg(python())
            .args(["--no-snapshots", "--no-baseline", "--cache-dir"])
            .arg(&cache)
            .arg("--out")
            .arg(&out)
            .env_remove("CI")
            .output()
            .unwrap()
    };
    let first = verify(harness_bin().as_path());
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    // A copy of `harness` with no `harness-run` beside it.
    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(harness_bin(), alone.join("harness")).unwrap();
    let cached = verify(&alone.join("harness"));
    assert_eq!(cached.status.code(), Some(0), "{cached:?}");
    let stdout = String::from_utf8_lossy(&cached.stdout);
    assert!(stdout.contains("PASS   net/traced"), "{stdout}");
    let results = Results::read(&out.join("results.json")).unwrap();
    assert!(results.complete && results.cases[0].cached);
    // An edit: the case must run, which only harness-run can do.
    write_net(dir.path(), 3);
    let edited = verify(&alone.join("harness"));
    assert_eq!(edited.status.code(), Some(2), "{edited:?}");
    let stderr = String::from_utf8_lossy(&edited.stderr);
    assert!(stderr.contains("harness-run"), "{stderr}");
}

/// The review workflow on the command line: a new snapshot fails the gate and is written as
/// `.snap.new`; `--accept` writes `.snap`; a model edit that changes `.code` fails with the diff
/// until accepted; with CI set nothing is written and `--accept` is refused.
#[test]
fn snapshot_review_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir(&cases).unwrap();
    write_net(&cases, 2);
    let snaps = dir.path().join("snaps");
    let out = dir.path().join("out");
    let cli = |snapshots: &Path, args: &[&str], ci: bool| {
        let mut cmd = harness_cli(snapshots);
        cmd.arg(&cases).arg("--out").arg(&out).args(args);
        if ci {
            cmd.env("CI", "1");
        }
        let o = cmd.output().unwrap();
        let results = Results::read(&out.join("results.json")).ok();
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
            results,
        )
    };
    let states = |r: &Option<Results>| {
        r.as_ref().unwrap().cases[0]
            .variants
            .iter()
            .map(|(v, r)| format!("{v}={:?}", r.snapshot.as_ref().unwrap().state))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let snap = snaps.join("net__traced.snap");
    let pending = snaps.join("net__traced.snap.new");

    // CI: nothing written, not even .snap.new; new snapshots fail the gate.
    let (code, stdout, r) = cli(&snaps, &[], true);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    assert_eq!(states(&r), "traced=New scripted=New");
    assert!(!snaps.exists(), "CI wrote into {}", snaps.display());
    let (code, stdout, _) = cli(&snaps, &["--accept"], true);
    assert_eq!(code, i32::from(exit::HARNESS_ERROR), "{stdout}");
    assert!(stdout.contains("--accept: CI is set"), "{stdout}");
    assert!(!snaps.exists());

    // Locally: new snapshots are pending, for `cargo insta review`.
    let (code, stdout, r) = cli(&snaps, &[], false);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    assert_eq!(states(&r), "traced=New scripted=New");
    assert!(
        stdout.contains("SNAP   net/traced: .code snapshot new: no stored snapshot"),
        "{stdout}"
    );
    assert!(stdout.contains("snapshots: 2 new: review"), "{stdout}");
    assert!(pending.is_file() && !snap.exists());

    // --accept writes them; then they match and the gate is green.
    let (code, stdout, r) = cli(&snaps, &["--accept"], false);
    assert_eq!(code, i32::from(exit::OK), "{stdout}");
    assert_eq!(states(&r), "traced=Accepted scripted=Accepted");
    assert!(snap.is_file() && !pending.exists());
    let stored = std::fs::read_to_string(&snap).unwrap();
    let parsed = insta::Snapshot::from_file(&snap).unwrap();
    assert_eq!(parsed.metadata().source(), Some("net.yaml"));
    let body = parsed.as_text().unwrap().to_string();
    // Traced code names the factor as a constant, scripted code has it inline.
    assert!(body.contains("# c0 = 2"), "{body}");
    let scripted_body = insta::Snapshot::from_file(&snaps.join("net__scripted.snap")).unwrap();
    let scripted_body = scripted_body.as_text().unwrap().to_string();
    assert!(
        scripted_body.contains("torch.mul(torch.relu(x), 2)"),
        "{scripted_body}"
    );
    let torch = format!("  torch: {}\n", harness::TORCH_VERSION);
    assert!(stored.contains(&torch), "{stored}");
    let (code, stdout, r) = cli(&snaps, &[], false);
    assert_eq!(code, i32::from(exit::OK), "{stdout}");
    assert_eq!(states(&r), "traced=Matched scripted=Matched");
    assert_eq!(std::fs::read_to_string(&snap).unwrap(), stored);

    // A model edit that changes .code fails the gate with the diff, old to new.
    write_net(&cases, 3);
    let (code, stdout, r) = cli(&snaps, &[], false);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    assert_eq!(states(&r), "traced=Changed scripted=Changed");
    assert!(
        stdout.contains("SNAP   net/traced: .code snapshot changed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-# c0 = 2") && stdout.contains("+# c0 = 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-  return torch.mul(torch.relu(x), 2)")
            && stdout.contains("+  return torch.mul(torch.relu(x), 3)"),
        "{stdout}"
    );
    let diff = r.as_ref().unwrap().cases[0].variants[&Variant::named("traced").unwrap()]
        .snapshot
        .clone()
        .unwrap()
        .diff
        .unwrap();
    assert!(diff.starts_with("--- stored\n+++ new\n@@"), "{diff}");
    assert_eq!(std::fs::read_to_string(&snap).unwrap(), stored);
    assert!(pending.is_file());
    // ... and passes once accepted.
    let (code, stdout, r) = cli(&snaps, &["--accept"], false);
    assert_eq!(code, i32::from(exit::OK), "{stdout}");
    assert_eq!(states(&r), "traced=Accepted scripted=Accepted");
    assert!(!pending.exists());
    let (code, stdout, _) = cli(&snaps, &[], false);
    assert_eq!(code, i32::from(exit::OK), "{stdout}");
}

/// The same model in two folders, loaded after another model file with the same stem, gives
/// byte-identical snapshots (each case runs in a fresh child of the fork server, so nothing of
/// the earlier case, such as its module name, leaks into the next).
#[test]
fn same_model_in_two_folders_gives_identical_snapshots() {
    let model = "from typing import NamedTuple\n\nimport torch\n\n\nclass Out(NamedTuple):\n    y: torch.Tensor\n    total: torch.Tensor\n\n\nclass Head(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(4, 4)\n\n    def forward(self, x):\n        y = self.fc(x)\n        return Out(y, y.sum())\n";
    let case = |source: &str| {
        format!(
            "model: {{source: {source}, entry: Head}}\ninputs: [{{name: x, shape: [B, 4]}}]\ndims: {{B: {{trace: 2, min: 1, max: 3}}}}\ncheck: {{samples: 2}}\n"
        )
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("nt_model.py"), model).unwrap();
    std::fs::write(a.path().join("nt.yaml"), case("nt_model.py")).unwrap();
    // In b, another file with the same stem is loaded first.
    std::fs::create_dir(b.path().join("other")).unwrap();
    std::fs::write(b.path().join("other/nt_model.py"), model).unwrap();
    std::fs::write(b.path().join("a_first.yaml"), case("other/nt_model.py")).unwrap();
    std::fs::write(b.path().join("nt_model.py"), model).unwrap();
    std::fs::write(b.path().join("nt.yaml"), case("nt_model.py")).unwrap();

    let accept = |paths: &[PathBuf], dir: &Path| {
        let policy = Policy {
            dir: dir.to_path_buf(),
            mode: Mode::Accept,
        };
        let (r, _out) = run_with(paths, None, None, Some(policy));
        assert_eq!(r.exit_code(), exit::OK, "{:?}", outcomes(&r));
        r
    };
    let snaps_a = a.path().join("snaps");
    let snaps_b = b.path().join("snaps");
    accept(&[a.path().join("nt.yaml")], &snaps_a);
    let rb = accept(
        &[b.path().join("a_first.yaml"), b.path().join("nt.yaml")],
        &snaps_b,
    );
    // Isolation: the second case's module is not renamed after the first case's.
    let raw = rb.cases[1].variants[&Variant::named("scripted").unwrap()]
        .export
        .code
        .clone()
        .unwrap();
    assert!(raw.contains("__torch__.nt_model.Out"), "{raw}");
    for v in Variant::defaults() {
        let file = format!("nt__{v}.snap");
        let sa = std::fs::read_to_string(snaps_a.join(&file)).unwrap();
        let sb = std::fs::read_to_string(snaps_b.join(&file)).unwrap();
        assert_eq!(sa, sb, "{file}");
        assert!(!sa.contains("/tmp") && !sa.contains(&*a.path().to_string_lossy()));
    }
    let scripted = std::fs::read_to_string(snaps_a.join("nt__scripted.snap")).unwrap();
    assert!(scripted.contains("__torch__.nt_model.Out("), "{scripted}");
}

/// The result cache: a second run takes every case from it; editing one model file re-runs
/// only the cases that import it; two jobs give the same verdicts as one.
#[test]
fn cache_reruns_only_what_changed_and_jobs_agree() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::write(
        cases.join("shared.py"),
        "import torch\n\n\ndef double(x):\n    return x * 2\n\n\nclass Double(torch.nn.Module):\n    def forward(self, x):\n        return double(x)\n",
    )
    .unwrap();
    std::fs::write(
        cases.join("gate.py"),
        "import torch\nfrom shared import double\n\n\nclass Gate(torch.nn.Module):\n    def forward(self, x):\n        if x.sum() > 0:\n            return double(x)\n        return -x\n",
    )
    .unwrap();
    std::fs::write(
        cases.join("alone.py"),
        "import torch\n\n\nclass Alone(torch.nn.Module):\n    def forward(self, x):\n        return x + 1\n",
    )
    .unwrap();
    let case = |name: &str, file: &str, entry: &str, expect: &str| {
        std::fs::write(
            cases.join(format!("{name}.yaml")),
            format!(
                "model: {{source: {file}, entry: {entry}}}\ninputs: [{{name: x, shape: [B, 3]}}]\n\
                 dims: {{B: {{trace: 2, min: 1, max: 3}}}}\ncheck: {{samples: 4}}\n{expect}"
            ),
        )
        .unwrap();
    };
    case(
        "a_gate",
        "gate.py",
        "Gate",
        "expect: {traced: [control_flow_erasure]}\n",
    );
    case("b_alone", "alone.py", "Alone", "");
    case("c_double", "shared.py", "Double", "");
    let cache_dir = dir.path().join("cache");
    let out = dir.path().join("out");
    let go = |jobs: usize| {
        let mut req = Request::new(
            vec![cases.clone()],
            Options {
                python: python(),
                out_dir: out.clone(),
                seed: None,
                timeout: None,
                max_elements: None,
                replay: None,
                torch_threads: None,
                python_path: Vec::new(),
                variants: Default::default(),
                device: Default::default(),
            },
        );
        req.cache = Some(harness::cache::Cache {
            dir: cache_dir.clone(),
        });
        req.jobs = jobs;
        verify(&req, |_| {}).unwrap()
    };
    let cached = |r: &Results| -> Vec<(String, bool)> {
        r.cases.iter().map(|c| (c.name.clone(), c.cached)).collect()
    };
    let first = go(2);
    let expect = [
        ("a_gate", "traced=xfail[control_flow_erasure] scripted=pass"),
        ("b_alone", "traced=pass scripted=pass"),
        ("c_double", "traced=pass scripted=pass"),
    ];
    check(&first, &expect);
    assert!(first.cases.iter().all(|c| !c.cached));
    let gate = first.cases.iter().find(|c| c.name == "a_gate").unwrap();
    assert!(
        gate.sources.iter().any(|s| s.ends_with("shared.py")),
        "{:?}",
        gate.sources
    );

    // Nothing changed: everything from the cache, artifacts and counterexamples in place.
    let second = go(1);
    check(&second, &expect);
    assert!(
        second.cases.iter().all(|c| c.cached),
        "{:?}",
        cached(&second)
    );
    let cx = second.cases[0].variants[&Variant::named("traced").unwrap()]
        .counterexample
        .clone()
        .unwrap();
    assert!(
        Path::new(&cx.file).is_file() && cx.replay.contains(&cx.file),
        "{cx:?}"
    );
    for c in &second.cases {
        for v in c.variants.values() {
            assert!(Path::new(v.export.artifact.as_deref().unwrap()).is_file());
        }
    }

    // Editing shared.py re-runs the two cases that import it, not the third.
    let shared = cases.join("shared.py");
    let mut text = std::fs::read_to_string(&shared).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&shared, text).unwrap();
    let third = go(1);
    check(&third, &expect);
    assert_eq!(
        cached(&third),
        vec![
            ("a_gate".into(), false),
            ("b_alone".into(), true),
            ("c_double".into(), false)
        ]
    );
}

/// #13 item 1: a stale cache must never give a false green. `import: pkg.model` (found through
/// PYTHONPATH) whose module imports `pkg/helper.py`, and weights the case names in `kwargs`: an
/// edit to the helper that erases a branch, or new weights, re-runs the case and changes the
/// verdict; untouched, the second run is served from the cache.
#[test]
fn cache_covers_imported_helpers_and_named_files() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("src/pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    let helper = pkg.join("helper.py");
    std::fs::write(&helper, "def act(x):\n    return x.relu()\n").unwrap();
    std::fs::write(
        pkg.join("model.py"),
        "import torch\nfrom pkg.helper import act\n\n\nclass Net(torch.nn.Module):\n    \
         def __init__(self, weights):\n        super().__init__()\n        \
         self.w = torch.nn.Parameter(torch.load(weights))\n\n    \
         def forward(self, x):\n        return act(x) * self.w\n",
    )
    .unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    let weights = cases.join("w.txt");
    let save_weights = |v: f32| {
        let script = format!(
            "import torch; torch.save(torch.full((3,), {v:?}), {:?})",
            weights.display().to_string()
        );
        let ok = Command::new(python())
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    save_weights(1.0);
    std::fs::write(
        cases.join("net.yaml"),
        "model: {import: pkg.model, entry: Net, kwargs: {weights: w.txt}}\n\
         inputs: [{name: x, shape: [B, 3]}]\ndims: {B: {trace: 2, min: 1, max: 3}}\n\
         check: {samples: 4}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = || -> Results {
        let o = harness_cli(&dir.path().join("snapshots"))
            .arg(&cases)
            .args(["--no-snapshots", "--no-baseline", "--out"])
            .arg(&out)
            .env("PYTHONPATH", dir.path().join("src"))
            // The model opens `w.txt` from the working folder.
            .current_dir(&cases)
            .output()
            .unwrap();
        let results = Results::read(&out.join("results.json")).unwrap();
        assert!(
            results.cases[0].status == CaseStatus::Ran,
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        results
    };
    let first = run();
    let sources = &first.cases[0].sources;
    assert!(
        sources.iter().any(|s| s.ends_with("helper.py")),
        "{sources:?}"
    );
    assert!(!first.cases[0].cached);
    assert!(
        run().cases[0].cached,
        "nothing changed: served from the cache"
    );

    // The helper gains a data-dependent branch: tracing erases it.
    std::fs::write(
        &helper,
        "def act(x):\n    if x.sum() > 0:\n        return x.relu()\n    return -x\n",
    )
    .unwrap();
    let edited = run();
    let c = &edited.cases[0];
    assert!(
        !c.cached,
        "an edit to an imported helper must re-run the case"
    );
    let traced = &c.variants[&Variant::named("traced").unwrap()];
    assert!(
        traced.pitfalls.contains(&Pitfall::ControlFlowErasure),
        "{}",
        traced.message
    );
    assert!(run().cases[0].cached);

    // New weights: the case runs again.
    save_weights(2.0);
    assert!(!run().cases[0].cached, "new weights must re-run the case");
}

/// #13 item 4: every dtype torch returns travels and compares: complex64/128 by real and
/// imaginary parts, wide unsigned ints, float8; a difference in the imaginary part alone is
/// caught.
#[test]
fn complex_and_wide_dtypes_travel_and_compare() {
    let (results, _out) = run(&[fixtures().join("dtypes")], None, None);
    check(
        &results,
        &[
            (
                "conjugate_script",
                "traced=pass scripted=xfail[output_mismatch]",
            ),
            ("sparse", "traced=pass scripted=pass"),
            ("spectrum", "traced=pass scripted=pass"),
            ("wide_uints", "traced=pass scripted=pass"),
        ],
    );
}

/// #13 item 6: a tuple for a list is its own pitfall, and the message says whether the elements
/// match.
#[test]
fn container_mismatches_have_their_own_id() {
    let (results, _out) = run(&[fixtures().join("containers")], None, None);
    check(
        &results,
        &[
            ("halves", "traced=pass scripted=xfail[container_mismatch]"),
            (
                "halves_scaled",
                "traced=pass scripted=xfail[container_mismatch]",
            ),
        ],
    );
    let message = |case: usize| {
        results.cases[case].variants[&Variant::named("scripted").unwrap()]
            .message
            .clone()
    };
    assert!(
        message(0).contains("expected a tuple of 2, got a list of 2 (the elements match)"),
        "{}",
        message(0)
    );
    assert!(
        message(1).contains("the elements differ too, first at output[0]"),
        "{}",
        message(1)
    );
}

/// #13 item 3: the meta probe holds an artifact as a device would (parameters and buffers on
/// meta, the graph's constants where they were saved): a constant index tensor that the traced
/// graph copies to the CPU is no false alarm, and the probe still judges the variant.
#[test]
fn a_constant_index_is_no_device_pin() {
    let cases = ["probe/constant_index.yaml", "probe/recurrent.yaml"].map(|c| fixtures().join(c));
    let (results, _out) = run(&cases, None, None);
    check(
        &results,
        &[
            ("constant_index", "traced=pass scripted=pass"),
            (
                "recurrent",
                "traced=xfail[device_specialization] scripted=pass",
            ),
        ],
    );
    let traced = &results.cases[0].variants[&Variant::named("traced").unwrap()];
    let check = traced.device_check.clone().unwrap();
    assert!(
        !check.flagged && check.detail.contains("like eager"),
        "{check:?}"
    );
}

/// #13 item 9: reading uninitialized memory (torch.empty_like) is nondeterministic eager,
/// judged the same way every run: the determinism repeat runs with that memory filled.
#[test]
fn uninitialized_memory_is_nondeterministic_every_time() {
    for seed in [0, 1, 2] {
        let (results, _out) = run(&[fixtures().join("nondeterminism")], None, Some(seed));
        check(
            &results,
            &[(
                "half_written",
                "traced=xfail[nondeterministic_eager] scripted=xfail[nondeterministic_eager]",
            )],
        );
    }
}

/// #13 item 5: an export that crashes the worker (torch.jit.trace dies of SIGSEGV inside
/// torch) costs only its variant's verdict: the case runs, the other variant is judged.
#[test]
fn a_crashing_export_costs_only_its_variant() {
    let (results, _out) = run(&[fixtures().join("crashes")], None, None);
    check(
        &results,
        &[(
            "cholesky_or_input",
            "traced=xfail[trace_error] scripted=xfail[script_compile_error]",
        )],
    );
    let traced = &results.cases[0].variants[&Variant::named("traced").unwrap()];
    assert!(
        traced.message.contains("crashed its process") && traced.message.contains("SIGSEGV"),
        "{}",
        traced.message
    );
}

/// #13 item 7: replaying a shipped case's counterexample reproduces the run's verdict, for
/// every shipped divergent case that saved one.
#[test]
fn every_shipped_counterexample_replays_to_the_runs_verdict() {
    let (results, _) = shipped();
    let mut replayed = 0;
    for case in &results.cases {
        for (variant, v) in &case.variants {
            let Some(cx) = &v.counterexample else {
                continue;
            };
            let out = tempfile::tempdir().unwrap();
            let file = PathBuf::from(&case.file);
            let r = replay(&file, Path::new(&cx.file), case.seed, out.path());
            let again = &r.cases[0].variants[variant];
            assert_eq!(
                again.outcome, v.outcome,
                "{}/{variant}: the run said {}, the replay {}",
                case.name, v.message, again.message
            );
            assert!(
                again.pitfalls.iter().all(|p| v.pitfalls.contains(p)),
                "{}/{variant}: {:?} vs {:?}",
                case.name,
                again.pitfalls,
                v.pitfalls
            );
            replayed += 1;
        }
    }
    assert!(replayed >= 5, "only {replayed} counterexamples replayed");
}

/// #13 item 10: one problem does not hide the next: an erased branch is the finding, and the
/// frozen `float(width)` the evidence also shows is listed with it.
#[test]
fn every_independent_problem_is_pointed_at() {
    let (results, _out) = run(&[fixtures().join("several")], None, None);
    let traced = &results.cases[0].variants[&Variant::named("traced").unwrap()];
    assert!(
        traced.pitfalls.contains(&Pitfall::ControlFlowErasure),
        "{}",
        traced.message
    );
    let evidence: Vec<&String> = traced.findings.iter().flat_map(|f| &f.evidence).collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.starts_with("also: ") && e.contains("float(x.shape[1])")),
        "{evidence:?}"
    );
    let lines = harness::console::Console::plain().case_lines(&results.cases[0]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("- also: ") && l.contains("float")),
        "{lines:?}"
    );
}

/// #13 item 8: a case is named by its path under the folder given (`a/head_tail`), so two case
/// files with one stem in two folders share no artifact, counterexample or snapshot.
#[test]
fn same_stem_cases_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases");
    for (sub, body) in [
        ("a", "return x * 2"),
        ("b", "return x * 2 if x.sum() > 0 else -x"),
    ] {
        let folder = cases.join(sub);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join("m.py"),
            format!("import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n        {body}\n"),
        )
        .unwrap();
        std::fs::write(
            folder.join("head_tail.yaml"),
            "model: {source: m.py, entry: M}\ninputs: [{name: x, shape: [B, 3]}]\n\
             dims: {B: {trace: 2, min: 1, max: 3}}\ncheck: {samples: 6}\n",
        )
        .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let snapshots = Policy {
        dir: dir.path().join("snapshots"),
        mode: Mode::Accept,
    };
    let results = run_into(
        std::slice::from_ref(&cases),
        None,
        None,
        out.path(),
        Some(snapshots),
    );
    let names: Vec<&str> = results.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a/head_tail", "b/head_tail"]);
    for name in names {
        assert!(out
            .path()
            .join("artifacts")
            .join(name)
            .join("traced.pt")
            .is_file());
        assert!(dir
            .path()
            .join(format!("snapshots/{name}__traced.snap"))
            .is_file());
    }
    let b = &results.cases[1].variants[&Variant::named("traced").unwrap()];
    let cx = b.counterexample.as_ref().unwrap();
    assert!(
        cx.file
            .ends_with("counterexamples/b/head_tail.traced.safetensors"),
        "{}",
        cx.file
    );
    assert!(results.cases[0]
        .variants
        .values()
        .all(|v| v.counterexample.is_none()));
    // A file given by itself keeps its stem.
    let (alone, _out) = run(&[cases.join("a/head_tail.yaml")], None, None);
    assert_eq!(alone.cases[0].name, "head_tail");
}
