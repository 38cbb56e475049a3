//! The sample plan: which inputs a case is checked on, in named groups.
//!
//! Sample 0 is always the trace input (every dim at its `trace` value). The rest come from
//! proptest strategies built from the case, drawn with a fixed seed so the same case and seed
//! always give the same samples: the trace shapes with new values (`values`), each dim alone at
//! its `min` and `max` (`dim:B`), each extra declared dtype (`dtype:x=float64`), then random
//! joint shapes (`joint`). A sample is a small description (dims, dtypes, a value seed); its
//! tensors are made on demand by the engine's `materialize`, so plans are cheap to keep and to shrink.

use std::collections::BTreeMap;

use proptest::prelude::Rng;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde::{Deserialize, Serialize};

use crate::case::{Case, DType, DimRef, InputSpec};

/// What a group of samples varies, relative to the trace input.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Group {
    /// The trace input itself.
    Trace,
    /// Trace shapes, new values.
    Values,
    /// One dim moved, the others at their trace values.
    Dim(String),
    /// One input cast to another declared dtype.
    Dtype { input: String, dtype: DType },
    /// Every dim drawn at random within its range.
    Joint,
    /// An input read from a file (`--replay`) that says no group: results.json of earlier
    /// versions holds it; a replay now takes the group its counterexample was shrunk from.
    Replay,
}

impl From<Group> for String {
    fn from(g: Group) -> String {
        match g {
            Group::Trace => "trace".into(),
            Group::Values => "values".into(),
            Group::Dim(d) => format!("dim:{d}"),
            Group::Dtype { input, dtype } => format!("dtype:{input}={dtype}"),
            Group::Joint => "joint".into(),
            Group::Replay => "replay".into(),
        }
    }
}

impl TryFrom<String> for Group {
    type Error = String;
    fn try_from(s: String) -> Result<Group, String> {
        Ok(match s.as_str() {
            "trace" => Group::Trace,
            "values" => Group::Values,
            "joint" => Group::Joint,
            "replay" => Group::Replay,
            _ => {
                if let Some(d) = s.strip_prefix("dim:") {
                    Group::Dim(d.to_string())
                } else if let Some((input, dtype)) =
                    s.strip_prefix("dtype:").and_then(|r| r.split_once('='))
                {
                    let dtype = serde_json::from_value(serde_json::Value::String(dtype.into()))
                        .map_err(|e| e.to_string())?;
                    Group::Dtype {
                        input: input.to_string(),
                        dtype,
                    }
                } else {
                    return Err(format!("unknown sample group `{s}`"));
                }
            }
        })
    }
}

/// One planned input: enough to make its tensors again, bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleSpec {
    /// `s0` is the trace input; ids are unique within a case.
    pub id: String,
    pub group: Group,
    /// Every declared dim's value.
    pub dims: BTreeMap<String, i64>,
    /// Each input's dtype, in input order.
    pub dtypes: Vec<DType>,
    /// Seeds the value generators.
    pub value_seed: u64,
    /// Float values rounded to this many decimals (`None`: full precision). Shrinking lowers
    /// it: `Some(0)` turns `uniform [-1, 1]` into values from {-1, 0, 1}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u8>,
}

/// The plan for one case.
pub fn plan(case: &Case, seed: u64) -> Vec<SampleSpec> {
    let spec = &case.spec;
    let trace_dims: BTreeMap<String, i64> = spec
        .dims
        .iter()
        .map(|(k, d)| (k.clone(), d.trace))
        .collect();
    let trace_dtypes: Vec<DType> = spec.inputs.iter().map(|i| i.trace_dtype()).collect();
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed, &case.name)),
    );
    let draw_seed = |runner: &mut TestRunner| runner.rng().next_u64();

    let trace = SampleSpec {
        id: String::new(),
        group: Group::Trace,
        dims: trace_dims.clone(),
        dtypes: trace_dtypes.clone(),
        value_seed: draw_seed(&mut runner),
        precision: None,
    };

    let budget = spec.check.samples;
    let values_count = budget.div_ceil(4).max(1);
    let mut values = Vec::new();
    for _ in 0..values_count {
        values.push(SampleSpec {
            group: Group::Values,
            value_seed: draw_seed(&mut runner),
            ..trace.clone()
        });
    }
    let mut bounds = Vec::new();
    for (name, d) in &spec.dims {
        for v in [d.min, d.max] {
            if v != d.trace
                && !bounds
                    .iter()
                    .any(|s: &SampleSpec| s.dims[name] == v && s.group == Group::Dim(name.clone()))
            {
                let mut dims = trace_dims.clone();
                dims.insert(name.clone(), v);
                bounds.push(SampleSpec {
                    group: Group::Dim(name.clone()),
                    dims,
                    value_seed: draw_seed(&mut runner),
                    ..trace.clone()
                });
            }
        }
    }
    let mut dtypes = Vec::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        for d in input.dtypes().into_iter().skip(1) {
            let mut dts = trace_dtypes.clone();
            dts[i] = d;
            // The trace input's values in another dtype: only the dtype changes.
            dtypes.push(SampleSpec {
                group: Group::Dtype {
                    input: input.name.clone(),
                    dtype: d,
                },
                dtypes: dts,
                ..trace.clone()
            });
        }
    }
    // Joint shapes: each dim uniformly within its range, as a proptest strategy.
    let names: Vec<String> = spec.dims.keys().cloned().collect();
    let ranges: Vec<std::ops::RangeInclusive<i64>> =
        spec.dims.values().map(|d| d.min..=d.max).collect();
    let joint_strategy = (ranges, proptest::num::u64::ANY);
    let mut joint = Vec::new();
    let joint_count = budget.saturating_sub(values.len() + bounds.len() + dtypes.len());
    for _ in 0..joint_count {
        let (vals, value_seed) = joint_strategy
            .new_tree(&mut runner)
            .expect("range strategies always produce a value")
            .current();
        let dims = names.iter().cloned().zip(vals).collect();
        joint.push(SampleSpec {
            group: Group::Joint,
            dims,
            value_seed,
            ..trace.clone()
        });
    }

    // Priority when the budget is small: one new-values sample, the boundaries, the dtypes,
    // the remaining new-values samples, then joint shapes.
    let mut rest = Vec::new();
    let mut values = values.into_iter();
    rest.extend(values.next());
    rest.extend(bounds);
    rest.extend(dtypes);
    rest.extend(values);
    rest.extend(joint);
    rest.truncate(budget);

    let mut out = vec![trace];
    out.extend(rest);
    for (i, s) in out.iter_mut().enumerate() {
        s.id = format!("s{i}");
    }
    out
}

fn seed_bytes(seed: u64, case: &str) -> [u8; 32] {
    // The case name is mixed in so two cases with the same seed do not share samples.
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in case.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    bytes[8..16].copy_from_slice(&h.to_le_bytes());
    bytes
}

/// The concrete shape of each input under a sample's dims.
pub fn shapes(case: &Case, sample: &SampleSpec) -> Vec<Vec<i64>> {
    case.spec
        .inputs
        .iter()
        .map(|input| {
            input
                .shape()
                .iter()
                .map(|d| match d {
                    DimRef::Fixed(n) => *n,
                    DimRef::Named(name) => sample.dims[name],
                })
                .collect()
        })
        .collect()
}

/// How many elements a sample's inputs hold together (exact, so huge dims cannot overflow).
pub fn elements(case: &Case, sample: &SampleSpec) -> u128 {
    let counts = case.spec.inputs.iter().map(|i| {
        list_len(i, sample)
            .map(|n| u128::try_from(n).unwrap_or(0))
            .unwrap_or(1)
    });
    shapes(case, sample)
        .iter()
        .zip(counts)
        .map(|(s, count)| {
            s.iter()
                .map(|d| u128::try_from(*d).unwrap_or(0))
                .fold(count, u128::saturating_mul)
        })
        .fold(0u128, u128::saturating_add)
}

/// Round to `p` decimals (no-op for `None`).
pub fn round(v: f64, p: Option<u8>) -> f64 {
    match p {
        None => v,
        Some(p) => {
            let scale = 10f64.powi(i32::from(p));
            (v * scale).round() / scale
        }
    }
}

/// How many tensors a list input holds in this sample (`None`: not a list).
pub fn list_len(input: &InputSpec, sample: &SampleSpec) -> Option<i64> {
    input.list.as_ref().map(|d| match d {
        DimRef::Fixed(n) => *n,
        DimRef::Named(name) => sample.dims[name],
    })
}

pub fn describe_parts(parts: impl Iterator<Item = (String, Vec<i64>, &'static str)>) -> String {
    parts
        .map(|(name, shape, dtype)| {
            let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
            let dims = if dims.is_empty() {
                "scalar".to_string()
            } else {
                dims.join("x")
            };
            format!("{name}: {dims} {dtype}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// For tests here and in the engine: a case with a float input `x: [B, 4]` and an int input
/// `i: [B, T]` in a fresh folder (kept while the `TempDir` lives), with `extra` YAML appended.
#[doc(hidden)]
pub fn example_case(extra: &str) -> (tempfile::TempDir, Case) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("m.py"), "").expect("writable");
    let text = format!(
        "model: {{source: m.py, entry: M}}\ninputs:\n  - {{name: x, shape: [B, 4]}}\n  - {{name: \
         i, shape: [B, T], dtype: int64, values: {{int: [0, 3]}}}}\ndims:\n  B: {{trace: 3, min: 1, \
         max: 8}}\n  T: {{trace: 5, min: 5, max: 7}}\n{extra}"
    );
    let file = dir.path().join("c.yaml");
    let case = Case::parse(&file, &text).expect("the example parses");
    (dir, case)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(extra: &str) -> (tempfile::TempDir, Case) {
        example_case(extra)
    }

    #[test]
    fn plan_is_reproducible_and_covers_groups() {
        let (_d, c) = case("");
        let a = plan(&c, 7);
        assert_eq!(a, plan(&c, 7));
        assert_ne!(a, plan(&c, 8));
        assert_eq!(a.len(), 25);
        assert_eq!(a[0].group, Group::Trace);
        assert_eq!(
            a[0].dims,
            BTreeMap::from([("B".into(), 3), ("T".into(), 5)])
        );
        let groups: Vec<String> = a.iter().map(|s| String::from(s.group.clone())).collect();
        for g in ["values", "dim:B", "dim:T", "joint"] {
            assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
        }
        // B at 1 and at 8, T at 7 (5 is the trace value and the min).
        let b: Vec<i64> = a
            .iter()
            .filter(|s| s.group == Group::Dim("B".into()))
            .map(|s| s.dims["B"])
            .collect();
        assert_eq!(b, vec![1, 8]);
        for s in &a {
            assert!((1..=8).contains(&s.dims["B"]) && (5..=7).contains(&s.dims["T"]));
        }
        let ids: std::collections::BTreeSet<_> = a.iter().map(|s| &s.id).collect();
        assert_eq!(ids.len(), a.len());
    }

    #[test]
    fn small_budget_keeps_boundaries_first() {
        let (_d, c) = case("check: {samples: 2}\n");
        let p = plan(&c, 0);
        let groups: Vec<String> = p.iter().map(|s| String::from(s.group.clone())).collect();
        assert_eq!(groups, vec!["trace", "values", "dim:B"]);
    }

    #[test]
    fn groups_round_trip_as_strings() {
        for g in [
            Group::Trace,
            Group::Values,
            Group::Dim("B".into()),
            Group::Dtype {
                input: "x".into(),
                dtype: DType::Bfloat16,
            },
            Group::Joint,
        ] {
            let s: String = g.clone().into();
            assert_eq!(Group::try_from(s).unwrap(), g);
        }
    }
}
