//! Where a case's time went. A case's run is timed as one stopwatch whose laps are its phases
//! (`fork`, `load`, `export traced`, `eager`, `run scripted`, `shrink`, `snapshot`, ...), each lap
//! the time since the previous one, so the phases of a case never overlap and add up to its
//! `duration_ms` (what no lap names is `other`, said, never dropped). Torch work timed where it
//! ran (the worker's export and forward passes) is carved out of the lap it happened in, so a
//! phase's own overhead (round trips, files, comparison) is its remainder. [`summarize`] turns a
//! run's timelines into the slowest cases and the phases the run spent most on, for the console
//! (`--durations`) and the report, as test runners list slow tests.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::results::{CaseResult, Results};

/// One phase of a case's timeline, in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    pub ms: f64,
}

/// The phase a case's unnamed time goes to.
pub const OTHER: &str = "other";

/// Laps shorter than this are not recorded (a phase that had nothing to do).
const MIN_MS: f64 = 0.001;

/// A case's stopwatch: each [`Stopwatch::lap`] names the time since the last one.
#[derive(Debug, Clone)]
pub struct Stopwatch {
    mark: Instant,
    carved: f64,
    pub phases: Vec<PhaseTime>,
}

impl Default for Stopwatch {
    fn default() -> Self {
        Stopwatch::new()
    }
}

impl Stopwatch {
    pub fn new() -> Stopwatch {
        Stopwatch {
            mark: Instant::now(),
            carved: 0.0,
            phases: Vec::new(),
        }
    }

    /// The time since the last lap (less what was carved out of it) was `phase`.
    pub fn lap(&mut self, phase: &str) {
        let ms = self.mark.elapsed().as_secs_f64() * 1e3 - self.carved;
        add(&mut self.phases, phase, ms);
        self.mark = Instant::now();
        self.carved = 0.0;
    }

    /// `ms` of the current lap were `phase` (timed where it ran, e.g. in the worker).
    pub fn carve(&mut self, phase: &str, ms: f64) {
        let left = self.mark.elapsed().as_secs_f64() * 1e3 - self.carved;
        let ms = ms.clamp(0.0, left.max(0.0));
        add(&mut self.phases, phase, ms);
        self.carved += ms;
    }

    /// Start the next lap now, recording nothing (the case was set aside meanwhile).
    pub fn restart(&mut self) {
        self.mark = Instant::now();
        self.carved = 0.0;
    }
}

/// Add `ms` to `phase` (appended the first time, in order).
pub fn add(phases: &mut Vec<PhaseTime>, phase: &str, ms: f64) {
    if ms.is_nan() || ms < MIN_MS {
        return;
    }
    match phases.iter_mut().find(|p| p.phase == phase) {
        Some(p) => p.ms += ms,
        None => phases.push(PhaseTime {
            phase: phase.into(),
            ms,
        }),
    }
}

/// Close a case's timeline against its duration: what no phase names becomes [`OTHER`].
pub fn close(phases: &mut Vec<PhaseTime>, duration_ms: f64) {
    let named: f64 = phases.iter().map(|p| p.ms).sum();
    add(phases, OTHER, duration_ms - named);
}

/// A phase's family: `export traced` and `export scripted` are both `export`.
pub fn family(phase: &str) -> &str {
    phase.split(' ').next().unwrap_or(phase)
}

/// One of the slowest cases: its name, duration and its largest phases (largest first).
#[derive(Debug, Clone, PartialEq)]
pub struct SlowCase {
    pub name: String,
    pub ms: f64,
    pub phases: Vec<PhaseTime>,
}

/// One phase over the run: its total, its share of all case time, and how many cases had it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseTotal {
    pub phase: String,
    pub ms: f64,
    pub share: f64,
    pub cases: usize,
}

/// The run's slowest cases and its phases by total time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub cases: Vec<SlowCase>,
    pub phases: Vec<PhaseTotal>,
    /// Cases that ran (not served from the cache) and their summed duration, ms.
    pub ran: usize,
    pub total_ms: f64,
}

/// The `n` slowest cases that ran (with their 3 largest phases) and every phase family's total.
pub fn summarize(results: &Results, n: usize) -> Summary {
    let ran: Vec<&CaseResult> = results.cases.iter().filter(|c| !c.cached).collect();
    let total_ms: f64 = ran.iter().map(|c| c.duration_ms as f64).sum();
    let mut cases: Vec<SlowCase> = ran
        .iter()
        .map(|c| SlowCase {
            name: c.name.clone(),
            ms: c.duration_ms as f64,
            phases: largest(&c.timeline, 3),
        })
        .collect();
    cases.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.name.cmp(&b.name)));
    cases.truncate(n);
    let mut totals: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    for c in &ran {
        let mut seen: Vec<&str> = Vec::new();
        for p in &c.timeline {
            let f = family(&p.phase);
            let t = totals.entry(f).or_default();
            t.0 += p.ms;
            if !seen.contains(&f) {
                seen.push(f);
                t.1 += 1;
            }
        }
    }
    let mut phases: Vec<PhaseTotal> = totals
        .into_iter()
        .map(|(phase, (ms, cases))| PhaseTotal {
            phase: phase.into(),
            ms,
            share: if total_ms > 0.0 { ms / total_ms } else { 0.0 },
            cases,
        })
        .collect();
    phases.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.phase.cmp(&b.phase)));
    Summary {
        cases,
        phases,
        ran: ran.len(),
        total_ms,
    }
}

/// A timeline's `n` largest phases, largest first.
pub fn largest(phases: &[PhaseTime], n: usize) -> Vec<PhaseTime> {
    let mut v = phases.to_vec();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    v.truncate(n);
    v
}

/// `1.2 s` or `35 ms`.
pub fn human_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// The summary as lines for the console: the slowest cases, then the phases.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    if summary.cases.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "slowest {} of {} cases run ({} in all):\n",
        summary.cases.len(),
        summary.ran,
        human_ms(summary.total_ms)
    ));
    for c in &summary.cases {
        let parts: Vec<String> = c
            .phases
            .iter()
            .map(|p| format!("{} {}", p.phase, human_ms(p.ms)))
            .collect();
        out.push_str(&format!(
            "  {:>8}  {}  ({})\n",
            human_ms(c.ms),
            c.name,
            parts.join(", ")
        ));
    }
    out.push_str("time by phase, over those cases:\n");
    for p in &summary.phases {
        out.push_str(&format!(
            "  {:>8}  {:>3.0}%  {} ({} {})\n",
            human_ms(p.ms),
            p.share * 100.0,
            p.phase,
            p.cases,
            if p.cases == 1 { "case" } else { "cases" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(list: &[(&str, f64)]) -> Vec<PhaseTime> {
        list.iter()
            .map(|(p, ms)| PhaseTime {
                phase: p.to_string(),
                ms: *ms,
            })
            .collect()
    }

    #[track_caller]
    fn check<T: PartialEq + std::fmt::Debug>(actual: T, expected: T) {
        assert_eq!(actual, expected);
    }

    #[test]
    fn laps_add_up_to_the_time_they_cover_and_carving_never_overdraws() {
        let mut w = Stopwatch::new();
        let start = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        w.carve("export traced", 2.0);
        w.carve("export scripted", 1e9); // more than the lap holds: clamped
        w.lap("export");
        w.lap("nothing"); // too short to record? it may be a few ns: only >= 1 µs is kept
        let covered = start.elapsed().as_secs_f64() * 1e3;
        let sum: f64 = w.phases.iter().map(|p| p.ms).sum();
        assert!(sum <= covered + 0.01 && sum >= 5.0, "{sum} of {covered}");
        check(w.phases[0].phase.as_str(), "export traced");
        check(w.phases[0].ms, 2.0);
        let export = w.phases.iter().find(|p| p.phase == "export").map(|p| p.ms);
        assert!(export.is_none_or(|ms| ms < 0.5), "{export:?}");
    }

    #[test]
    fn a_phase_named_again_accumulates_in_first_order_and_close_names_the_rest() {
        let mut p = Vec::new();
        add(&mut p, "load", 3.0);
        add(&mut p, "eager", 2.0);
        add(&mut p, "load", 1.0);
        add(&mut p, "nothing", 0.0);
        add(&mut p, "negative", -1.0);
        add(&mut p, "nan", f64::NAN);
        close(&mut p, 10.0);
        check(p, phases(&[("load", 4.0), ("eager", 2.0), (OTHER, 4.0)]));
    }

    #[test]
    fn the_summary_ranks_cases_and_phase_families_over_cases_that_ran() {
        let mut results: Results = serde_json::from_str(
            r#"{"schema": 1, "harness": "", "torch": "", "tch": "", "python": "", "seed": null,
                "duration_ms": 0, "complete": true, "cases": []}"#,
        )
        .expect("a results document");
        let mut case = |name: &str, ms: u64, cached: bool, list: &[(&str, f64)]| {
            let mut c = CaseResult::ran(name, &format!("{name}.yaml"));
            c.duration_ms = ms;
            c.cached = cached;
            c.timeline = phases(list);
            results.cases.push(c);
        };
        case(
            "a",
            100,
            false,
            &[
                ("load", 10.0),
                ("export traced", 60.0),
                ("export scripted", 30.0),
            ],
        );
        case("b", 300, false, &[("load", 200.0), ("eager", 100.0)]);
        case("c", 900, true, &[("load", 900.0)]); // from the cache: not this run's time
        let s = summarize(&results, 1);
        check(s.ran, 2);
        check(s.total_ms, 400.0);
        check(s.cases.len(), 1);
        check(s.cases[0].name.as_str(), "b");
        check(s.cases[0].phases[0].phase.as_str(), "load");
        let totals: Vec<(&str, f64, usize)> = s
            .phases
            .iter()
            .map(|p| (p.phase.as_str(), p.ms, p.cases))
            .collect();
        check(
            totals,
            vec![("load", 210.0, 2), ("eager", 100.0, 1), ("export", 90.0, 1)],
        );
        let expected = [
            "slowest 1 of 2 cases run (400 ms in all):",
            "    300 ms  b  (load 200 ms, eager 100 ms)",
            "time by phase, over those cases:",
            "    210 ms   52%  load (2 cases)",
            "    100 ms   25%  eager (1 case)",
            "     90 ms   22%  export (1 case)",
            "",
        ];
        check(render(&s), expected.join("\n"));
    }
}
