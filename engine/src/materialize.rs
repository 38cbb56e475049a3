//! Samples as tensors: a planned sample's inputs made on demand, bit-identical every time.
//!
//! The plan (in the core crate) describes a sample by its dims, dtypes and a value seed; this
//! module draws its values from a ChaCha stream seeded by the sample and makes the tensors, so
//! plans stay cheap to keep and to shrink.

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use tch::{Kind, Tensor};

use std::path::Path;

use harness::case::{Case, DType, DimRef, InputKind, InputSpec, ValueGen};
use harness::error::ErrorKind;
use harness::plan::{self, SampleSpec};
use harness::worker::ErrorBody;

use crate::tensors;

/// The libtorch kind of a case file's dtype.
pub fn kind(dtype: DType) -> Kind {
    match dtype {
        DType::Float32 => Kind::Float,
        DType::Float64 => Kind::Double,
        DType::Float16 => Kind::Half,
        DType::Bfloat16 => Kind::BFloat16,
        DType::Uint8 => Kind::Uint8,
        DType::Int8 => Kind::Int8,
        DType::Int16 => Kind::Int16,
        DType::Int32 => Kind::Int,
        DType::Int64 => Kind::Int64,
        DType::Bool => Kind::Bool,
    }
}

/// The libtorch kinds a case file can name, back to the case file's dtype.
pub fn dtype_of(kind: Kind) -> Option<DType> {
    use DType::*;
    [
        Float32, Float64, Float16, Bfloat16, Uint8, Int8, Int16, Int32, Int64, Bool,
    ]
    .into_iter()
    .find(|d| self::kind(*d) == kind)
}

/// Inputs read from a safetensors file: each one's tensor checked, and its shape and dtype
/// filled into the case, so plans, budgets and descriptions see them. A missing tensor or an
/// unsupported dtype is the case file's error, naming the input's field.
pub fn resolve_files(case: &mut Case) -> Result<(), ErrorBody> {
    for i in 0..case.spec.inputs.len() {
        let input = &case.spec.inputs[i];
        let Some(path) = case.input_file(input) else {
            continue;
        };
        let bad = |field: &str, why: String| {
            let file = case.file.display();
            ErrorBody::new(
                ErrorKind::CaseFile,
                format!("{file}: inputs[{i}].{field}: {why}"),
            )
        };
        let t = read_file_input(&path, input.file_key()).map_err(|why| bad("key", why))?;
        let dtype = dtype_of(t.kind()).ok_or_else(|| {
            bad(
                "file",
                format!("a tensor of kind {:?} cannot be an input", t.kind()),
            )
        })?;
        let input = &mut case.spec.inputs[i];
        input.shape = Some(t.size().into_iter().map(DimRef::Fixed).collect());
        input.dtype = Some(dtype);
    }
    Ok(())
}

/// The tensor named `key` in a safetensors file.
fn read_file_input(path: &Path, key: &str) -> Result<Tensor, String> {
    let mut all = tensors::read(path).map_err(|e| format!("{e:#}"))?;
    all.remove(key).ok_or_else(|| {
        let mut names: Vec<String> = all.into_keys().collect();
        names.sort();
        format!(
            "{} has no tensor `{key}` (it holds {})",
            path.display(),
            names.join(", ")
        )
    })
}

/// Make a sample's tensors: `(input name, tensor)` in the case's order, on the CPU (a scalar as
/// a 0-d tensor of its dtype, nothing for a `none` input).
///
/// Values are drawn in f64 (or i64) from a ChaCha stream seeded by the sample, then cast to the
/// input's dtype for this sample, so a dtype sample holds the same numbers as far as the dtype
/// can represent them.
pub fn materialize(case: &Case, sample: &SampleSpec) -> Vec<(String, Tensor)> {
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &value_seed_bytes(sample.value_seed));
    let shapes = plan::shapes(case, sample);
    let mut out = Vec::new();
    for ((input, shape), dtype) in case.spec.inputs.iter().zip(shapes).zip(&sample.dtypes) {
        if input.kind() == InputKind::None {
            continue; // nothing to carry: the worker and libtorch pass None
        }
        if let Some(path) = case.input_file(input) {
            // Checked by `resolve_files`: the same tensor in every sample.
            let t = read_file_input(&path, input.file_key()).unwrap_or_else(|e| panic!("{e}"));
            out.push((input.name.clone(), t));
            continue;
        }
        match plan::list_len(input, sample) {
            None => out.push((
                input.name.clone(),
                generate(input, &shape, *dtype, sample, &mut rng),
            )),
            Some(n) => {
                for i in 0..n {
                    let t = generate(input, &shape, *dtype, sample, &mut rng);
                    out.push((format!("{}.{i}", input.name), t));
                }
            }
        }
    }
    out
}

fn generate(
    input: &InputSpec,
    shape: &[i64],
    dtype: DType,
    sample: &SampleSpec,
    rng: &mut TestRng,
) -> Tensor {
    let numel: i64 = shape.iter().product();
    let n = usize::try_from(numel).unwrap_or(0);
    let p = sample.precision;
    let t = match input.values() {
        ValueGen::Uniform([lo, hi]) => {
            let v: Vec<f64> = (0..n)
                .map(|_| plan::round(lo + (hi - lo) * unit(rng), p))
                .collect();
            Tensor::from_slice(&v)
        }
        ValueGen::Normal([mean, std]) => {
            let v: Vec<f64> = (0..n)
                .map(|_| plan::round(mean + std * normal(rng), p))
                .collect();
            Tensor::from_slice(&v)
        }
        ValueGen::Int([lo, hi]) => {
            let (lo, hi) = (lo.resolve(&sample.dims), hi.resolve(&sample.dims));
            let span = (hi - lo) as u64 + 1;
            let v: Vec<i64> = (0..n)
                .map(|_| lo + (rng.next_u64() % span.max(1)) as i64)
                .collect();
            Tensor::from_slice(&v)
        }
        ValueGen::Bool(p) => {
            let v: Vec<bool> = (0..n).map(|_| unit(rng) < p).collect();
            Tensor::from_slice(&v)
        }
    };
    t.reshape(shape).to_kind(kind(dtype))
}

fn value_seed_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8] = 0x5a;
    bytes
}

/// Uniform in `[0, 1)` with 53 bits.
fn unit(rng: &mut TestRng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal (Box-Muller).
fn normal(rng: &mut TestRng) -> f64 {
    let u1 = unit(rng).max(f64::MIN_POSITIVE);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A short human form of a sample's inputs: `x: 3x4 float32, h: 3x4 float32`.
pub fn describe_tensors(inputs: &[(String, Tensor)]) -> String {
    plan::describe_parts(
        inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.size(), crate::value::kind_name(t.kind()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::plan::{plan, Group};

    fn case(extra: &str) -> (tempfile::TempDir, Case) {
        harness::plan::example_case(extra)
    }

    #[test]
    fn dtype_samples_and_materialize() {
        let (_d, c) = case("");
        let mut spec = c.spec.clone();
        spec.inputs[0].dtypes = Some(vec![DType::Float32, DType::Float64]);
        let c2 = Case { spec, ..c.clone() };
        let p = plan(&c2, 0);
        let s = p
            .iter()
            .find(|s| matches!(s.group, Group::Dtype { .. }))
            .unwrap();
        assert_eq!(s.dtypes, vec![DType::Float64, DType::Int64]);
        let t = materialize(&c2, s);
        assert_eq!(t[0].1.kind(), tch::Kind::Double);
        assert_eq!(t[0].1.size(), vec![3, 4]);
        assert_eq!(t[1].1.size(), vec![3, 5]);
        let ints = Vec::<i64>::try_from(t[1].1.flatten(0, -1)).unwrap();
        assert!(ints.iter().all(|v| (0..=3).contains(v)));
        let again = materialize(&c2, s);
        assert!(t[0].1.equal(&again[0].1));
        let floats = Vec::<f64>::try_from(t[0].1.flatten(0, -1)).unwrap();
        assert!(floats.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_eq!(describe_tensors(&t), "x: 3x4 float64, i: 3x5 int64");
        // The dtype sample holds the trace input's values, cast.
        let trace = materialize(&c2, &p[0]);
        assert!(t[0].1.to_kind(tch::Kind::Float).equal(&trace[0].1));
        // Rounded values: uniform [-1, 1] at precision 0 is in {-1, 0, 1}.
        let rounded = materialize(
            &c2,
            &SampleSpec {
                precision: Some(0),
                ..p[1].clone()
            },
        );
        let v =
            Vec::<f64>::try_from(rounded[0].1.to_kind(tch::Kind::Double).flatten(0, -1)).unwrap();
        assert!(v.iter().all(|x| [-1.0, 0.0, 1.0].contains(x)), "{v:?}");
    }
}
