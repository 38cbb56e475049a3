//! Structural comparison of an expected (eager) output with an actual (variant) output.
//!
//! Same structure (tensor, tuple, list, dict, scalar), then per tensor the same shape and dtype,
//! then `isclose(rtol, atol)` element-wise with NaN equal to NaN and infinities equal to
//! themselves. Every mismatch carries the output path (`output[0]["boxes"]`) and, for values,
//! the max absolute and relative error, so a report can say where and by how much.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub use harness::diagnose::MismatchKind;

use crate::value::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    pub path: String,
    pub kind: MismatchKind,
    pub detail: String,
}

/// The result of comparing two outputs: mismatches (empty means equal within tolerance) and
/// the error statistics over every tensor leaf whose shape and dtype agree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub mismatches: Vec<Mismatch>,
    pub max_abs: f64,
    pub max_rel: f64,
    /// The smallest `atol` that would have passed at the given `rtol` (values only).
    pub min_atol: f64,
}

impl Comparison {
    pub fn is_match(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// The tolerances of one case: a default, per-output overrides by path glob, and the optional
/// tie-reordering key.
#[derive(Debug, Clone)]
pub struct Tolerances {
    pub default: Tolerance,
    /// `(glob, tolerance)`: the first glob matching an output path wins (`*` matches anything).
    pub outputs: Vec<(regex::Regex, Tolerance)>,
    /// Dict outputs holding this key are put in one canonical row order on both sides.
    pub reorder_ties: Option<String>,
}

impl From<Tolerance> for Tolerances {
    fn from(default: Tolerance) -> Tolerances {
        Tolerances {
            default,
            outputs: Vec::new(),
            reorder_ties: None,
        }
    }
}

impl Tolerances {
    /// From a case's `check:` section.
    pub fn from_check(check: &harness::case::CheckSpec) -> Tolerances {
        let default = Tolerance {
            rtol: check.rtol,
            atol: check.atol,
        };
        let outputs = check
            .outputs
            .iter()
            .map(|o| {
                let pattern = format!("^{}$", regex::escape(&o.path).replace("\\*", ".*"));
                let re = regex::Regex::new(&pattern).expect("an escaped glob is a valid regex");
                let tol = Tolerance {
                    rtol: o.rtol.unwrap_or(default.rtol),
                    atol: o.atol.unwrap_or(default.atol),
                };
                (re, tol)
            })
            .collect();
        Tolerances {
            default,
            outputs,
            reorder_ties: check.reorder_ties.clone(),
        }
    }

    /// The tolerance for the output at `path`.
    pub fn at(&self, path: &str) -> Tolerance {
        self.outputs
            .iter()
            .find(|(re, _)| re.is_match(path))
            .map(|(_, t)| *t)
            .unwrap_or(self.default)
    }
}

pub fn compare(expected: &Value, actual: &Value, tols: &Tolerances) -> Comparison {
    let mut out = Comparison::default();
    walk("output", expected, actual, tols, &mut out);
    out
}

/// Rows of a dict output, put in one canonical order: by `key`'s score (descending), ties
/// broken by the rows of every other tensor with as many rows. `None` when `key` is absent or
/// not a 1-D tensor.
fn canonical_rows(d: &[(Value, Value)], key: &str) -> Option<Vec<(Value, Value)>> {
    let scores = d.iter().find_map(|(k, v)| match (k, v) {
        (Value::Str(s), Value::Tensor(t)) if s == key && t.dim() == 1 => Some(t),
        _ => None,
    })?;
    let n = scores.size()[0];
    let rows_of = |t: &Tensor| t.dim() >= 1 && t.size()[0] == n;
    let mut keys: Vec<Vec<f64>> = Vec::try_from(scores.to_kind(Kind::Double))
        .ok()?
        .into_iter()
        .map(|s: f64| vec![-s])
        .collect();
    for (k, v) in d {
        if let (Value::Tensor(t), false) = (v, matches!(k, Value::Str(s) if s == key)) {
            if rows_of(t) {
                let flat: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).ok()?;
                let width = if n == 0 { 0 } else { flat.len() / n as usize };
                for (i, row) in keys.iter_mut().enumerate() {
                    row.extend_from_slice(&flat[i * width..(i + 1) * width]);
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| {
        keys[a]
            .iter()
            .zip(&keys[b])
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let perm = Tensor::from_slice(&order.iter().map(|&i| i as i64).collect::<Vec<_>>());
    Some(
        d.iter()
            .map(|(k, v)| {
                let v = match v {
                    // The index goes where the rows are (a CUDA case's outputs are on CUDA).
                    Value::Tensor(t) if rows_of(t) => {
                        Value::Tensor(t.index_select(0, &perm.to_device(t.device())))
                    }
                    other => other.dup(),
                };
                (k.dup(), v)
            })
            .collect(),
    )
}

fn walk(path: &str, e: &Value, a: &Value, tols: &Tolerances, out: &mut Comparison) {
    let tol = tols.at(path);
    let mut mismatch = |kind, detail: String| {
        out.mismatches.push(Mismatch {
            path: path.to_string(),
            kind,
            detail,
        });
    };
    match (e, a) {
        (Value::Tensor(e), Value::Tensor(a)) => tensors(path, e, a, tol, out),
        // The same dtype carried in another form (complex as real and imaginary parts, ...):
        // compared in that form, element by element with the case's tolerances.
        (
            Value::Exotic {
                tensor: e,
                dtype: ed,
            },
            Value::Exotic {
                tensor: a,
                dtype: ad,
            },
        ) if ed == ad => tensors(path, e, a, tol, out),
        (
            Value::Desc { .. } | Value::Tensor(_) | Value::Exotic { .. },
            Value::Desc { .. } | Value::Tensor(_) | Value::Exotic { .. },
        ) => {
            let (
                Value::Desc {
                    shape: es,
                    dtype: ed,
                    device: ev,
                },
                Value::Desc {
                    shape: s,
                    dtype: d,
                    device: v,
                },
            ) = (e.describe(), a.describe())
            else {
                unreachable!("describe() turns tensors into descriptions")
            };
            if ev != v {
                mismatch(
                    MismatchKind::Device,
                    format!("expected device {ev}, got {v}"),
                );
            } else if es != s {
                mismatch(
                    MismatchKind::Shape,
                    format!("expected shape {es:?}, got {s:?}"),
                );
            } else if ed != d {
                mismatch(MismatchKind::Dtype, format!("expected dtype {ed}, got {d}"));
            }
        }
        (Value::Tuple(es), Value::Tuple(as_)) | (Value::List(es), Value::List(as_)) => {
            if es.len() != as_.len() {
                mismatch(
                    MismatchKind::Structure,
                    format!("expected {} items, got {}", es.len(), as_.len()),
                );
                return;
            }
            for (i, (e, a)) in es.iter().zip(as_).enumerate() {
                walk(&format!("{path}[{i}]"), e, a, tols, out);
            }
        }
        (Value::Dict(es), Value::Dict(as_)) => {
            if let Some(key) = &tols.reorder_ties {
                if let (Some(e2), Some(a2)) = (canonical_rows(es, key), canonical_rows(as_, key)) {
                    let inner = Tolerances {
                        reorder_ties: None,
                        ..tols.clone()
                    };
                    walk(path, &Value::Dict(e2), &Value::Dict(a2), &inner, out);
                    return;
                }
            }
            let ekeys: Vec<String> = es.iter().map(|(k, _)| k.to_string()).collect();
            let akeys: Vec<String> = as_.iter().map(|(k, _)| k.to_string()).collect();
            let mut sorted_e = ekeys.clone();
            let mut sorted_a = akeys.clone();
            sorted_e.sort();
            sorted_a.sort();
            if sorted_e != sorted_a {
                mismatch(
                    MismatchKind::Container,
                    format!(
                        "expected keys [{}], got [{}]",
                        ekeys.join(", "),
                        akeys.join(", ")
                    ),
                );
                return;
            }
            for (k, ev) in es {
                let key = k.to_string();
                let av = &as_
                    .iter()
                    .find(|(ak, _)| ak.to_string() == key)
                    .expect("same keys")
                    .1;
                walk(&format!("{path}[{key}]"), ev, av, tols, out);
            }
        }
        (Value::Tuple(es), Value::List(as_)) | (Value::List(es), Value::Tuple(as_)) => {
            container(path, e, a, es, as_, tols, out)
        }
        (Value::Int(x), Value::Int(y)) if x == y => {}
        (Value::Bool(x), Value::Bool(y)) if x == y => {}
        (Value::Str(x), Value::Str(y)) if x == y => {}
        (Value::None, Value::None) => {}
        (Value::Float(x), Value::Float(y)) => {
            let d = (x - y).abs();
            let ok = x == y || (x.is_nan() && y.is_nan()) || d <= tol.atol + tol.rtol * x.abs();
            if !ok {
                mismatch(MismatchKind::Values, format!("expected {x}, got {y}"));
            }
            if !(x == y || x.is_nan() && y.is_nan()) {
                out.max_abs = out.max_abs.max(if d.is_nan() { f64::INFINITY } else { d });
            }
        }
        (Value::Int(_), Value::Int(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Str(_), Value::Str(_)) => {
            mismatch(MismatchKind::Values, format!("expected {e}, got {a}"))
        }
        _ => mismatch(
            MismatchKind::Structure,
            format!("expected {}, got {}", e.kind(), a.kind()),
        ),
    }
}

/// A tuple where eager returns a list, or the other way: a container mismatch (a C++ caller's
/// `toTuple()` or `toList()` throws), saying whether the elements match; their own mismatches
/// follow it.
fn container(
    path: &str,
    e: &Value,
    a: &Value,
    es: &[Value],
    as_: &[Value],
    tols: &Tolerances,
    out: &mut Comparison,
) {
    let mut inner = Comparison::default();
    if es.len() == as_.len() {
        for (i, (x, y)) in es.iter().zip(as_).enumerate() {
            walk(&format!("{path}[{i}]"), x, y, tols, &mut inner);
        }
    }
    let elements = if es.len() != as_.len() {
        "and another number of items".to_string()
    } else if inner.is_match() {
        "the elements match".to_string()
    } else {
        let m = &inner.mismatches[0];
        format!("the elements differ too, first at {}: {}", m.path, m.detail)
    };
    out.mismatches.push(Mismatch {
        path: path.to_string(),
        kind: MismatchKind::Container,
        detail: format!("expected a {}, got a {} ({elements})", e.kind(), a.kind()),
    });
    out.max_abs = out.max_abs.max(inner.max_abs);
    out.max_rel = out.max_rel.max(inner.max_rel);
    out.min_atol = out.min_atol.max(inner.min_atol);
    out.mismatches.extend(inner.mismatches);
}

fn tensors(path: &str, e: &Tensor, a: &Tensor, tol: Tolerance, out: &mut Comparison) {
    let mut mismatch = |kind, detail: String| {
        out.mismatches.push(Mismatch {
            path: path.to_string(),
            kind,
            detail,
        });
    };
    if e.device() != a.device() {
        mismatch(
            MismatchKind::Device,
            format!("expected device {:?}, got {:?}", e.device(), a.device()),
        );
        return;
    }
    if e.size() != a.size() {
        mismatch(
            MismatchKind::Shape,
            format!("expected shape {:?}, got {:?}", e.size(), a.size()),
        );
        return;
    }
    if e.kind() != a.kind() {
        mismatch(
            MismatchKind::Dtype,
            format!("expected dtype {:?}, got {:?}", e.kind(), a.kind()),
        );
        return;
    }
    if e.numel() == 0 {
        return;
    }
    let e64 = e.to_kind(Kind::Double);
    let a64 = a.to_kind(Kind::Double);
    let both_nan = e64.isnan().logical_and(&a64.isnan());
    let same = e64.eq_tensor(&a64).logical_or(&both_nan);
    let diff = (&a64 - &e64).abs();
    // Where the two agree exactly (incl. equal infinities and NaN with NaN) the error is 0;
    // where one side is NaN and the other is not, it is infinite.
    let err = diff
        .where_self(&same.logical_not(), &diff.zeros_like())
        .nan_to_num(Some(f64::INFINITY), Some(f64::INFINITY), None);
    let scale = e64.abs();
    let allowed = &scale * tol.rtol + tol.atol;
    // Non-finite errors (NaN against a number, inf against -inf) fail whatever the tolerance.
    let bad = err.gt_tensor(&allowed).logical_or(&err.isinf());
    let bad_count = bad.sum(Kind::Int64).int64_value(&[]);
    let max_abs = err.max().double_value(&[]);
    // Relative to the expected magnitude; infinite where eager is 0 and the variant is not.
    let rel = (&err / &scale).nan_to_num(Some(f64::INFINITY), Some(f64::INFINITY), None);
    let max_rel = rel
        .where_self(&err.gt(0.0), &rel.zeros_like())
        .max()
        .double_value(&[]);
    let min_atol = (&err - &scale * tol.rtol)
        .clamp_min(0.0)
        .max()
        .double_value(&[]);
    out.max_abs = out.max_abs.max(max_abs);
    out.max_rel = out.max_rel.max(max_rel);
    out.min_atol = out.min_atol.max(min_atol);
    if bad_count > 0 {
        mismatch(
            MismatchKind::Values,
            format!(
                "{bad_count} of {} elements differ: max abs error {}, max rel error {}",
                e.numel(),
                fmt_err(max_abs),
                fmt_err(max_rel)
            ),
        );
    }
}

/// Errors in a short scientific form (`1.2e-3`), `inf` when infinite.
pub fn fmt_err(x: f64) -> String {
    if x.is_infinite() {
        "inf".into()
    } else if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance {
        rtol: 1e-5,
        atol: 1e-6,
    };

    fn t(v: &[f32]) -> Value {
        Value::Tensor(Tensor::from_slice(v))
    }

    /// Compare `e` with `a` and check the mismatch details (empty: they match).
    #[track_caller]
    fn check(e: Value, a: Value, expect: &[&str]) {
        let c = compare(&e, &a, &TOL.into());
        let got: Vec<String> = c
            .mismatches
            .iter()
            .map(|m| format!("{}: {}", m.path, m.detail))
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn tensors_compare_within_tolerance() {
        check(t(&[1.0, 2.0]), t(&[1.0, 2.0 + 1e-6]), &[]);
        check(
            t(&[1.0, 2.0]),
            t(&[1.0, 2.5]),
            &["output: 1 of 2 elements differ: max abs error 5.00e-1, max rel error 2.50e-1"],
        );
        check(
            t(&[1.0, 2.0]),
            t(&[1.0]),
            &["output: expected shape [2], got [1]"],
        );
        check(
            t(&[1.0]),
            Value::Tensor(Tensor::from_slice(&[1.0f64])),
            &["output: expected dtype Float, got Double"],
        );
    }

    #[test]
    fn nan_and_inf_in_the_same_places_are_equal() {
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        check(t(&[nan, inf, -inf, 0.0]), t(&[nan, inf, -inf, 0.0]), &[]);
        check(
            t(&[nan, 1.0]),
            t(&[1.0, 1.0]),
            &["output: 1 of 2 elements differ: max abs error inf, max rel error inf"],
        );
        check(
            t(&[inf]),
            t(&[-inf]),
            &["output: 1 of 1 elements differ: max abs error inf, max rel error inf"],
        );
    }

    #[test]
    fn structures_compare_by_path() {
        check(
            Value::Tuple(vec![t(&[1.0]), Value::Dict(vec![(Value::Str("a".into()), t(&[2.0]))])]),
            Value::Tuple(vec![t(&[1.0]), Value::Dict(vec![(Value::Str("a".into()), t(&[3.0]))])]),
            &["output[1][\"a\"]: 1 of 1 elements differ: max abs error 1.00e0, max rel error 5.00e-1"],
        );
        check(
            Value::Tuple(vec![t(&[1.0]), t(&[1.0])]),
            Value::Tuple(vec![t(&[1.0])]),
            &["output: expected 2 items, got 1"],
        );
        check(
            Value::Tuple(vec![]),
            Value::List(vec![]),
            &["output: expected a tuple of 0, got a list of 0 (the elements match)"],
        );
        check(
            Value::List(vec![t(&[1.0]), t(&[2.0])]),
            Value::Tuple(vec![t(&[1.0]), t(&[2.5])]),
            &[
                "output: expected a list of 2, got a tuple of 2 (the elements differ too, first \
                 at output[1]: 1 of 1 elements differ: max abs error 5.00e-1, max rel error \
                 2.50e-1)",
                "output[1]: 1 of 1 elements differ: max abs error 5.00e-1, max rel error 2.50e-1",
            ],
        );
        check(
            Value::Tuple(vec![t(&[1.0])]),
            Value::List(vec![]),
            &["output: expected a tuple of 1, got a list of 0 (and another number of items)"],
        );
        check(
            Value::Dict(vec![(Value::Str("a".into()), Value::None)]),
            Value::Dict(vec![(Value::Str("b".into()), Value::None)]),
            &["output: expected keys [\"a\"], got [\"b\"]"],
        );
        check(Value::Int(3), Value::Int(4), &["output: expected 3, got 4"]);
        check(Value::Float(f64::NAN), Value::Float(f64::NAN), &[]);
        let desc = |device: &str| Value::Desc {
            shape: vec![2],
            dtype: "float32".into(),
            device: device.into(),
        };
        check(desc("meta"), desc("meta"), &[]);
        check(
            desc("meta"),
            desc("cpu"),
            &["output: expected device meta, got cpu"],
        );
        check(t(&[1.0, 2.0]), desc("cpu"), &[]);
    }

    #[test]
    fn integers_must_be_exact_and_stats_are_kept() {
        let e = Value::Tensor(Tensor::from_slice(&[1i64, 2, 3]));
        let a = Value::Tensor(Tensor::from_slice(&[1i64, 2, 4]));
        let c = compare(&e, &a, &TOL.into());
        assert_eq!(c.mismatches.len(), 1);
        assert_eq!(c.max_abs, 1.0);
        let c = compare(&t(&[1.0, 2.0]), &t(&[1.0, 2.001]), &TOL.into());
        assert!(!c.is_match());
        assert!(
            (c.min_atol - (0.001 - 2.0 * 1e-5)).abs() < 1e-6,
            "{}",
            c.min_atol
        );
    }

    fn detections(scores: &[f32], labels: &[i64]) -> Value {
        let n = scores.len() as i64;
        let boxes: Vec<f32> = labels
            .iter()
            .flat_map(|l| [*l as f32, 0.0, 1.0, 1.0])
            .collect();
        Value::List(vec![Value::Dict(vec![
            (
                Value::Str("boxes".into()),
                Value::Tensor(Tensor::from_slice(&boxes).reshape([n, 4])),
            ),
            (
                Value::Str("labels".into()),
                Value::Tensor(Tensor::from_slice(labels)),
            ),
            (
                Value::Str("scores".into()),
                Value::Tensor(Tensor::from_slice(scores)),
            ),
        ])])
    }

    #[test]
    fn tied_rows_may_come_in_any_order_when_asked() {
        let e = detections(&[0.9, 0.5, 0.5], &[1, 2, 3]);
        let a = detections(&[0.9, 0.5, 0.5], &[1, 3, 2]);
        let strict: Tolerances = TOL.into();
        let c = compare(&e, &a, &strict);
        let paths: Vec<&str> = c.mismatches.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, vec!["output[0][\"boxes\"]", "output[0][\"labels\"]"]);
        let lenient = Tolerances {
            reorder_ties: Some("scores".into()),
            ..strict.clone()
        };
        assert!(compare(&e, &a, &lenient).is_match());
        // Reordering only forgives ties: different scores still differ.
        let b = detections(&[0.9, 0.6, 0.5], &[1, 3, 2]);
        assert!(!compare(&e, &b, &lenient).is_match());
    }

    #[test]
    fn per_output_tolerances_match_by_path_glob() {
        let check = harness::case::CheckSpec {
            outputs: vec![harness::case::OutputTolerance {
                path: "output[*][\"scores\"]".into(),
                rtol: Some(0.0),
                atol: Some(0.1),
            }],
            ..harness::case::CheckSpec::default()
        };
        let tols = Tolerances::from_check(&check);
        assert_eq!(tols.at("output[0][\"scores\"]").atol, 0.1);
        assert_eq!(tols.at("output[0][\"boxes\"]"), tols.default);
        let e = detections(&[0.9], &[1]);
        let a = detections(&[0.95], &[1]);
        assert!(compare(&e, &a, &tols).is_match());
        assert!(!compare(&e, &a, &TOL.into()).is_match());
    }
}
