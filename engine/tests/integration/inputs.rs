//! Trace options and the kinds of inputs a case can give forward: the fixtures under
//! `engine/tests/fixtures/inputs/`, run with the real worker and libtorch.

use std::path::Path;

use harness::case::Variant;
use harness::results::Outcome;

use super::{check, fixtures, replay, run};

/// `trace: {strict: false}` reaches torch.jit.trace: a dict output traces and passes, where the
/// default (strict) trace fails as the case expects.
#[test]
fn trace_options_reach_the_trace() {
    let dir = fixtures().join("inputs");
    let cases = [
        dir.join("dict_strict.yaml"),
        dir.join("dict_strict_default.yaml"),
    ];
    let (results, _out) = run(&cases, None, None);
    check(
        &results,
        &[
            ("dict_strict", "traced=pass scripted=pass"),
            (
                "dict_strict_default",
                "traced=xfail[trace_error] scripted=pass",
            ),
        ],
    );
}

/// `values: {int: [0, T - 1]}` and `{int: [1, T]}`: every sample's indices and lengths are valid
/// under its own dims (eager raises otherwise), so both variants pass.
#[test]
fn value_bounds_follow_each_samples_dims() {
    let case = fixtures().join("inputs/bounded_by_dim.yaml");
    let (results, _out) = run(std::slice::from_ref(&case), None, None);
    check(&results, &[("bounded_by_dim", "traced=pass scripted=pass")]);
    assert!(results.cases[0].samples.iter().any(|s| s.group == "dim:T"));
}

/// Scalar, bool and None inputs reach eager as Python values and libtorch as IValues; the trace
/// binds them, so a scalar that varies is a value_specialization, found, shrunk and replayed.
#[test]
fn scalar_and_none_inputs_reach_eager_and_libtorch() {
    let dir = fixtures().join("inputs");
    let cases = [dir.join("scalar_scale.yaml"), dir.join("scalar_fixed.yaml")];
    let (results, _out) = run(&cases, None, None);
    check(
        &results,
        &[
            (
                "scalar_scale",
                "traced=xfail[value_specialization] scripted=pass",
            ),
            ("scalar_fixed", "traced=pass scripted=pass"),
        ],
    );
    let traced = Variant::named("traced").unwrap();
    let cx = results.cases[0].variants[&traced]
        .counterexample
        .clone()
        .unwrap();
    assert!(cx.inputs.contains("k: scalar int64"), "{}", cx.inputs);
    // The first failure is a dim:B sample (s1 drew the trace-time k); the shrinker starts from
    // the first failing `values` sample, as diagnosis does, so the replay judges it the same.
    let samples = &results.cases[0].samples;
    let from = samples.iter().find(|s| s.id == cx.from_sample).unwrap();
    assert_eq!(from.group, "values");
    let out = tempfile::tempdir().unwrap();
    let r = replay(&cases[0], Path::new(&cx.file), Some(0), out.path());
    assert_eq!(r.cases[0].variants[&traced].outcome, Outcome::Xfail);
}

/// A keyword input: eager gets `mask=...`, the scripted artifact gets it where its forward's
/// schema puts it (after `offset`, which gets forward's default), the trace binds it by name.
#[test]
fn keyword_inputs_go_where_forward_takes_them() {
    let case = fixtures().join("inputs/keyword.yaml");
    let (results, _out) = run(std::slice::from_ref(&case), None, None);
    check(&results, &[("keyword", "traced=pass scripted=pass")]);
}

/// `file:` reads the same tensor into every sample (its shape and dtype the file's); a key the
/// file lacks is one clear case-file error naming the field, and the other case still runs.
#[test]
fn inputs_read_from_a_safetensors_file() {
    let dir = fixtures().join("inputs");
    let cases = [
        dir.join("from_file.yaml"),
        dir.join("from_file_bad_key.yaml"),
    ];
    let (results, _out) = run(&cases, None, None);
    check(
        &results,
        &[
            ("from_file", "traced=pass scripted=pass"),
            ("from_file_bad_key", "error:case_file"),
        ],
    );
    let samples = &results.cases[0].samples;
    assert!(
        samples
            .iter()
            .all(|s| s.inputs.starts_with("tokens: 2x5 int64, x: ")),
        "{samples:?}"
    );
    let e = results.cases[1].error.as_ref().unwrap();
    assert!(
        e.message.ends_with(
            "from_file_bad_key.yaml: inputs[0].key: \
             {}/data/tokens.safetensors has no tensor `token_ids` (it holds other, tokens)"
                .replace("{}", &dir.display().to_string())
                .as_str()
        ),
        "{}",
        e.message
    );
}
