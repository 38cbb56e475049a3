//! Trace options and the kinds of inputs a case can give forward: the fixtures under
//! `engine/tests/fixtures/inputs/`, run with the real worker and libtorch.

use super::{check, fixtures, run};

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
