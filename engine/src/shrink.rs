//! Shrinking a diverging sample to a minimal counterexample with proptest's value trees.
//!
//! The sample is a point in (dims…, precision) space: each dim shrinks toward its `min` by
//! binary search, then float values toward fewer decimals (`precision` 0 turns `uniform [-1, 1]`
//! into values from {-1, 0, 1}); the value seed and dtypes stay. The search is proptest's:
//! simplify while the candidate still diverges, complicate when it stops, one component at a
//! time, with a bound on the number of candidates tried (each costs one worker round trip).

use proptest::num::u64::BinarySearch;
use proptest::strategy::ValueTree;

use harness::case::{Case, ValueGen};
use harness::plan::SampleSpec;

/// Decimals that count as full precision: `precision` 7 is stored as `None`.
const FULL_PRECISION: u64 = 7;

/// A value tree over a sample's dims and value precision. Each part searches an offset above
/// its minimum (proptest's unsigned binary search shrinks toward 0).
pub struct SampleTree {
    base: SampleSpec,
    names: Vec<String>,
    mins: Vec<i64>,
    parts: Vec<BinarySearch>,
    shrinker: usize,
    prev_shrinker: Option<usize>,
}

impl SampleTree {
    pub fn new(case: &Case, start: &SampleSpec) -> SampleTree {
        let mut names = Vec::new();
        let mut mins = Vec::new();
        let mut parts = Vec::new();
        for (name, d) in &case.spec.dims {
            names.push(name.clone());
            mins.push(d.min);
            let at = start.dims.get(name).copied().unwrap_or(d.trace);
            parts.push(BinarySearch::new((at - d.min).max(0) as u64));
        }
        let has_floats = case
            .spec
            .inputs
            .iter()
            .any(|i| matches!(i.values(), ValueGen::Uniform(_) | ValueGen::Normal(_)));
        if has_floats {
            let p = start.precision.map(u64::from).unwrap_or(FULL_PRECISION);
            parts.push(BinarySearch::new(p));
        }
        SampleTree {
            base: start.clone(),
            names,
            mins,
            parts,
            shrinker: 0,
            prev_shrinker: None,
        }
    }
}

impl ValueTree for SampleTree {
    type Value = SampleSpec;

    fn current(&self) -> SampleSpec {
        let mut s = self.base.clone();
        for ((name, min), part) in self.names.iter().zip(&self.mins).zip(&self.parts) {
            s.dims.insert(name.clone(), min + part.current() as i64);
        }
        if self.parts.len() > self.names.len() {
            let p = self.parts[self.names.len()].current();
            s.precision = (p < FULL_PRECISION).then_some(p as u8);
        }
        s
    }

    fn simplify(&mut self) -> bool {
        while self.shrinker < self.parts.len() {
            if self.parts[self.shrinker].simplify() {
                self.prev_shrinker = Some(self.shrinker);
                return true;
            }
            self.shrinker += 1;
        }
        false
    }

    fn complicate(&mut self) -> bool {
        match self.prev_shrinker {
            Some(i) if self.parts[i].complicate() => {
                self.shrinker = i;
                true
            }
            _ => {
                self.prev_shrinker = None;
                false
            }
        }
    }
}

/// The smallest sample found that still fails, and how many candidates were tried.
pub fn shrink(
    case: &Case,
    start: &SampleSpec,
    max_tries: usize,
    mut fails: impl FnMut(&SampleSpec) -> bool,
) -> (SampleSpec, usize) {
    let mut tree = SampleTree::new(case, start);
    let mut best = start.clone();
    let mut tries = 0;
    if !tree.simplify() {
        return (best, 0);
    }
    while tries < max_tries {
        tries += 1;
        let candidate = tree.current();
        let more = if fails(&candidate) {
            best = candidate;
            tree.simplify()
        } else {
            tree.complicate()
        };
        if !more {
            break;
        }
    }
    (best, tries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::plan::plan;
    use std::path::Path;

    fn case() -> (tempfile::TempDir, Case) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.py"), "").unwrap();
        let text =
            "model: {source: m.py, entry: M}\ninputs:\n  - {name: x, shape: [B, T]}\ndims:\n  \
                    B: {trace: 3, min: 1, max: 64}\n  T: {trace: 5, min: 2, max: 40}\n";
        let file = dir.path().join("c.yaml");
        let case = Case::parse(Path::new(&file), text).unwrap();
        (dir, case)
    }

    /// Shrink from B=`b`, T=`t` under a failure predicate; compare the result and the tries.
    #[track_caller]
    fn check(b: i64, t: i64, fails: impl Fn(&SampleSpec) -> bool, expect: (i64, i64, Option<u8>)) {
        let (_d, c) = case();
        let mut start = plan(&c, 0)[1].clone();
        start.dims.insert("B".into(), b);
        start.dims.insert("T".into(), t);
        assert!(fails(&start));
        let (min, tries) = shrink(&c, &start, 64, &fails);
        assert_eq!((min.dims["B"], min.dims["T"], min.precision), expect);
        assert!(tries <= 64);
        assert!(fails(&min));
        assert_eq!(min.value_seed, start.value_seed);
    }

    #[test]
    fn shrinks_each_dim_toward_its_min_and_values_to_integers() {
        // Fails whatever the dims: everything goes to its minimum, values to integers.
        check(40, 33, |_| true, (1, 2, Some(0)));
        // Fails only with B >= 17: the boundary is found by binary search.
        check(60, 30, |s| s.dims["B"] >= 17, (17, 2, Some(0)));
        // Fails only while values keep 3 decimals or more.
        check(
            5,
            5,
            |s| s.precision.is_none_or(|p| p >= 3),
            (1, 2, Some(3)),
        );
    }

    /// Values bounded by a dim are drawn under each candidate's dims: as the shrinker moves `T`
    /// toward its min, `lengths` stay within `[1, T]` and indices within `[0, T - 1]`.
    #[test]
    fn values_bounded_by_a_dim_stay_valid_while_shrinking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.py"), "").unwrap();
        let text = "model: {source: m.py, entry: M}\ninputs:\n  - {name: x, shape: [B, T]}\n  - \
                    {name: lengths, shape: [B], dtype: int64, values: {int: [1, T]}}\n  - {name: \
                    idx, shape: [8], dtype: int64, values: {int: [0, T - 1]}}\ndims:\n  B: \
                    {trace: 3, min: 1, max: 9}\n  T: {trace: 30, min: 2, max: 40}\n";
        let c = Case::parse(&dir.path().join("c.yaml"), text).unwrap();
        let within = |s: &SampleSpec| {
            let t = crate::materialize::materialize(&c, s);
            let values = |i: usize| Vec::<i64>::try_from(&t[i].1).unwrap();
            let top = s.dims["T"];
            values(1).iter().all(|v| (1..=top).contains(v))
                && values(2).iter().all(|v| (0..top).contains(v))
        };
        let plan = plan(&c, 0);
        assert!(plan.iter().all(within));
        let mut seen = Vec::new();
        let (min, _) = shrink(&c, &plan[1], 64, |cand| {
            seen.push(cand.dims["T"]);
            assert!(within(cand), "{cand:?}");
            true
        });
        assert_eq!(min.dims["T"], 2);
        assert!(seen.len() > 3, "{seen:?}");
    }

    #[test]
    fn respects_the_round_trip_bound() {
        let (_d, c) = case();
        let start = plan(&c, 0)[1].clone();
        let mut calls = 0;
        let (_, tries) = shrink(&c, &start, 3, |_| {
            calls += 1;
            true
        });
        assert_eq!((tries, calls), (3, 3));
    }
}
