//! The HTML report: one self-contained page (inline CSS and JS, nothing fetched) from results.
//!
//! The template (`harness/templates/report.html`) is compiled into the binary and rendered with
//! `minijinja`, which escapes every value (the template's name ends in `.html`). This module
//! turns `Results` (and an optional regression view) into a view model the template only has
//! to lay out: the summary and the cases × variants matrix, and per case the model, the input
//! spec, the sample groups as a grid with their errors and the smallest passing tolerance, the
//! findings, the counterexample and its replay command, tracer warnings with the user's source
//! lines, each variant's `.code` side by side with its diff base's (from the variants'
//! `code_diff` when results.json has them, the case's one in older files, else computed here
//! with `similar`) and snapshot diffs.

use std::path::Path;

use minijinja::{context, Environment};
use serde::Serialize;
use similar::{ChangeTag, TextDiff};

use crate::attention;
use crate::case::Variant;
use crate::error::ErrorBody;
use crate::report::baseline::{self, Regression};
use crate::report::paths;
use crate::results::{CaseResult, CaseStatus, Outcome, Results, SpecInfo, VariantResult};

const TEMPLATE: &str = include_str!("../../templates/report.html");
const CASE_BODY: &str = include_str!("../../templates/case_body.html");

/// The outcome filters, in display order: (value, label).
const OUTCOMES: [(&str, &str); 6] = [
    ("fail", "FAIL"),
    ("error", "ERROR"),
    ("xpass", "XPASS"),
    ("case-error", "CASE ERROR"),
    ("xfail", "XFAIL"),
    ("pass", "PASS"),
];

#[derive(Serialize)]
struct Count {
    value: &'static str,
    label: &'static str,
    n: usize,
}

#[derive(Serialize)]
struct Row {
    case: String,
    anchor: String,
    variant: String,
    outcome: &'static str,
    label: &'static str,
    pitfalls: Vec<String>,
    expected: Vec<String>,
    message: String,
    time: String,
    /// `new failure` / `fixed`, against the baseline.
    regression: Option<&'static str>,
    /// Tracer warnings, device pins and checks not judged (see `attention`).
    warnings: usize,
    /// 0 a new failure, 1 fails the gate, 2 green with warnings, 3 nothing to look at.
    rank: u8,
}

/// Rows ranked below this need attention; the page opens on them.
const QUIET: u8 = 3;

/// From this many cases that need no attention on, their details are compressed into the
/// page and inflated when opened (a small report keeps everything inline).
const LAZY_FROM: usize = 100;

#[derive(Serialize)]
struct Seg {
    text: String,
    hl: bool,
}

#[derive(Serialize)]
struct DiffRow {
    /// `eq`, `del`, `ins`, `chg` or `gap` (lines a unified diff left out).
    kind: &'static str,
    left_no: Option<usize>,
    left: Vec<Seg>,
    right_no: Option<usize>,
    right: Vec<Seg>,
}

/// One variant's `.code` against its diff base's, side by side.
#[derive(Serialize)]
struct CodeDiffView {
    /// The left column.
    base: String,
    /// The right column.
    variant: String,
    rows: Vec<DiffRow>,
}

#[derive(Serialize)]
struct UniLine {
    class: &'static str,
    text: String,
}

#[derive(Serialize)]
struct Cell {
    run: usize,
    failed: usize,
    max_abs: String,
    max_rel: String,
    /// The smallest passing `atol` at the case's `rtol`, or why none passes.
    min_tol: String,
    /// The smallest passing `atol` exceeds the case's.
    over: bool,
    /// No tolerance passes (a sample raised or differs in shape, dtype or structure).
    none_passes: bool,
}

#[derive(Serialize)]
struct GridRow {
    group: String,
    inputs: String,
    device: String,
    cells: Vec<Option<Cell>>,
}

#[derive(Serialize)]
struct DeviceCell {
    device: String,
    flagged: bool,
    detail: String,
}

#[derive(Serialize)]
struct Warning {
    category: String,
    location: String,
    source_line: String,
    message: String,
    count: u32,
}

#[derive(Serialize)]
struct Snapshot {
    variant: String,
    state: String,
    path: String,
    diff: Vec<UniLine>,
}

#[derive(Serialize)]
struct VariantView<'a> {
    name: String,
    outcome: &'static str,
    label: &'static str,
    time: String,
    v: &'a VariantResult,
    warnings: Vec<Warning>,
    /// Device pins only this variant's graph has.
    pins: Vec<String>,
    regression: Option<&'static str>,
}

#[derive(Serialize)]
struct CaseView<'a> {
    name: String,
    anchor: String,
    file: String,
    description: Option<String>,
    error: Option<&'a ErrorBody>,
    model_path: Option<String>,
    model_entry: Option<String>,
    model_class: Option<String>,
    seed: Option<u64>,
    duration: String,
    /// Where its time went: `fork 12 ms · load 20 ms · ...` (see `timeline`).
    timeline: String,
    spec: Option<&'a SpecInfo>,
    notes: &'a [String],
    /// Space-separated outcome values of its rows, for the filter.
    outcomes: String,
    /// Open by default: it needs attention (see `Row::rank`).
    open: bool,
    variant_names: Vec<String>,
    grid: Vec<GridRow>,
    devices: Vec<Option<DeviceCell>>,
    variants: Vec<VariantView<'a>>,
    /// Each variant's `.code` against its base's, side by side, in definition order.
    code_diffs: Vec<CodeDiffView>,
    snapshots: Vec<Snapshot>,
    code_changes: Vec<(String, Vec<UniLine>)>,
    /// The lowest rank of its rows (see `Row::rank`).
    rank: u8,
    /// Warnings over its variants.
    warnings: usize,
    /// Its body is in the compressed block, rendered when opened.
    lazy: bool,
}

#[derive(Serialize)]
struct Timing {
    what: String,
    anchor: String,
    before: String,
    after: String,
    ratio: String,
    slower: bool,
}

#[derive(Serialize)]
struct RegressionView<'a> {
    r: &'a Regression,
    timing: Vec<Timing>,
    ratio: String,
    min_ms: String,
}

#[derive(Serialize)]
struct Bar {
    variant: String,
    total: usize,
    /// (outcome value, label, count), non-zero counts only.
    parts: Vec<(&'static str, &'static str, usize)>,
}

#[derive(Serialize)]
struct Slow {
    case: String,
    anchor: String,
    time: String,
    /// Width of its bar, percent of the slowest.
    width: u64,
    /// Its largest phases.
    phases: String,
}

/// One phase family over the cases that ran.
#[derive(Serialize)]
struct PhaseRow {
    phase: String,
    time: String,
    /// Percent of the cases' summed time.
    share: String,
    cases: usize,
    /// Width of its bar, percent of the largest.
    width: u64,
}

/// The summary picture: outcomes per variant, pitfall counts, the slowest cases, and where the
/// time went by phase.
#[derive(Serialize)]
struct Picture {
    bars: Vec<Bar>,
    pitfalls: Vec<(String, usize)>,
    slowest: Vec<Slow>,
    phases: Vec<PhaseRow>,
}

/// A timeline as `phase time · phase time`, in its order.
fn phase_list(phases: &[crate::timeline::PhaseTime]) -> String {
    phases
        .iter()
        .map(|p| format!("{} {}", p.phase, ms(p.ms)))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The phase families of the cases that ran, largest first.
fn phase_rows(results: &Results) -> Vec<PhaseRow> {
    let summary = crate::timeline::summarize(results, 0);
    let top = summary.phases.first().map_or(1.0, |p| p.ms.max(1.0));
    summary
        .phases
        .into_iter()
        .map(|p| PhaseRow {
            time: ms(p.ms),
            share: format!("{:.0}%", p.share * 100.0),
            cases: p.cases,
            width: (p.ms * 100.0 / top) as u64,
            phase: p.phase,
        })
        .collect()
}

fn picture(results: &Results, rows: &[Row]) -> Picture {
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        if !names.contains(&r.variant) {
            names.push(r.variant.clone());
        }
    }
    let bars = names
        .into_iter()
        .map(|variant| {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.variant == variant).collect();
            let parts = OUTCOMES
                .iter()
                .map(|(value, label)| {
                    (
                        *value,
                        *label,
                        mine.iter().filter(|r| r.outcome == *value).count(),
                    )
                })
                .filter(|p| p.2 > 0)
                .collect();
            let variant = if variant == "—" {
                "cases that did not run".into()
            } else {
                variant
            };
            Bar {
                variant,
                total: mine.len(),
                parts,
            }
        })
        .collect();
    let mut pitfalls: Vec<(String, usize)> = Vec::new();
    for p in rows.iter().flat_map(|r| &r.pitfalls) {
        match pitfalls.iter_mut().find(|(id, _)| id == p) {
            Some((_, n)) => *n += 1,
            None => pitfalls.push((p.clone(), 1)),
        }
    }
    pitfalls.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut slow: Vec<&CaseResult> = results.cases.iter().collect();
    slow.sort_by_key(|c| std::cmp::Reverse(c.duration_ms));
    let top = slow.first().map_or(1, |c| c.duration_ms.max(1));
    let slowest = slow
        .into_iter()
        .take(10)
        .map(|c| Slow {
            case: c.name.clone(),
            anchor: anchor(&c.name),
            time: ms(c.duration_ms as f64),
            width: c.duration_ms * 100 / top,
            phases: phase_list(&crate::timeline::largest(&c.timeline, 3)),
        })
        .collect();
    Picture {
        bars,
        pitfalls,
        slowest,
        phases: phase_rows(results),
    }
}

fn environment() -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("anchor", |case: String| anchor(&case));
    env.add_template("report.html", TEMPLATE)?;
    env.add_template("case_body.html", CASE_BODY)?;
    Ok(env)
}

/// Render the report page.
pub fn render(results: &Results, regression: Option<&Regression>) -> anyhow::Result<String> {
    let env = environment()?;
    let results = &paths::relative(results);
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for c in &results.cases {
        rows.extend(case_rows(c, regression));
        cases.push(case_view(c, regression));
    }
    // Stable: within a rank, cases keep their order.
    rows.sort_by_key(|r| r.rank);
    cases.sort_by_key(|c| c.rank);
    let quiet = cases.iter().filter(|c| c.rank >= QUIET).count();
    let lazy = lazy_bodies(&env, &mut cases, quiet >= LAZY_FROM)?;
    let counts: Vec<Count> = OUTCOMES
        .iter()
        .map(|(value, label)| Count {
            value,
            label,
            n: rows.iter().filter(|r| r.outcome == *value).count(),
        })
        .collect();
    let gate = baseline::gate(results, regression);
    let page = env.get_template("report.html")?.render(context! {
        results => results,
        seed => results.seed.map(|s| s.to_string()).unwrap_or_else(|| "per case (check.seed)".into()),
        duration => format!("{:.1} s", results.duration_ms as f64 / 1e3),
        variant_count => rows.iter().filter(|r| r.outcome != "case-error").count(),
        counts => counts,
        picture => picture(results, &rows),
        with_warnings => rows.iter().filter(|r| r.warnings > 0).count(),
        quiet_rows => rows.iter().filter(|r| r.rank >= QUIET).count(),
        quiet_cases => quiet,
        lazy => lazy,
        rows => rows,
        quiet_rank => QUIET,
        cases => cases,
        regression => regression.map(regression_view),
        gate => gate,
        gate_text => match gate {
            0 => "every outcome is as the case files expect",
            1 => "divergence or regression",
            _ => "harness error: some cases could not run",
        },
    })?;
    Ok(page)
}

fn regression_view(r: &Regression) -> RegressionView<'_> {
    RegressionView {
        r,
        timing: r
            .timing
            .iter()
            .map(|t| Timing {
                what: match &t.variant {
                    Some(v) => format!("{}/{v}", t.case),
                    None => format!("{} (whole case)", t.case),
                },
                anchor: anchor(&t.case),
                before: format!("{:.0} ms", t.before_ms),
                after: format!("{:.0} ms", t.after_ms),
                ratio: if t.before_ms > 0.0 {
                    format!("{:.1}×", t.after_ms / t.before_ms)
                } else {
                    "new".into()
                },
                slower: t.slower(),
            })
            .collect(),
        ratio: format!("{}×", baseline::TIMING_RATIO),
        min_ms: format!("{} ms", baseline::TIMING_MIN_MS),
    }
}

/// With `on`, the bodies of the cases that need no attention, rendered, as one gzipped JSON
/// object (anchor → HTML) in base64; those cases are marked lazy. Empty when off.
fn lazy_bodies(
    env: &Environment<'_>,
    cases: &mut [CaseView<'_>],
    on: bool,
) -> anyhow::Result<String> {
    if !on {
        return Ok(String::new());
    }
    let body = env.get_template("case_body.html")?;
    let mut bodies = serde_json::Map::new();
    for c in cases.iter_mut().filter(|c| c.rank >= QUIET) {
        bodies.insert(c.anchor.clone(), body.render(context! { c => &*c })?.into());
        c.lazy = true;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    serde_json::to_writer(&mut gz, &bodies)?;
    Ok(base64(&gz.finish()?))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn anchor(case: &str) -> String {
    format!(
        "case-{}",
        case.chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            })
            .collect::<String>()
    )
}

fn outcome_value(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "fail",
        Outcome::Error => "error",
        Outcome::Xfail => "xfail",
        Outcome::Xpass => "xpass",
    }
}

fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2} s", x / 1e3)
    } else {
        format!("{x:.0} ms")
    }
}

/// An error statistic: `0`, `1.2e-6`, `∞`, `NaN`.
fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        "∞".into()
    } else {
        format!("{x:.2e}")
    }
}

fn regression_of(r: Option<&Regression>, case: &str, variant: &str) -> Option<&'static str> {
    let r = r?;
    let hit = |list: &[baseline::Change]| {
        list.iter()
            .any(|c| c.case == case && (c.variant == variant || variant.is_empty()))
    };
    if hit(&r.new_failures) {
        Some("new failure")
    } else if hit(&r.fixed) {
        Some("fixed")
    } else {
        None
    }
}

fn case_rows(c: &CaseResult, reg: Option<&Regression>) -> Vec<Row> {
    if c.status != CaseStatus::Ran {
        let e = c.error.as_ref();
        return vec![Row {
            case: c.name.clone(),
            anchor: anchor(&c.name),
            variant: "—".into(),
            outcome: "case-error",
            label: match c.status {
                CaseStatus::Crashed => "CRASHED",
                CaseStatus::Timeout => "TIMEOUT",
                CaseStatus::Interrupted => "INTERRUPTED",
                _ => "CASE ERROR",
            },
            pitfalls: Vec::new(),
            expected: Vec::new(),
            message: e
                .map(|e| {
                    format!(
                        "[{}] {}",
                        e.kind,
                        e.message.lines().next().unwrap_or_default()
                    )
                })
                .unwrap_or_default(),
            time: ms(c.duration_ms as f64),
            regression: regression_of(reg, &c.name, ""),
            warnings: 0,
            rank: if regression_of(reg, &c.name, "") == Some("new failure") {
                0
            } else {
                1
            },
        }];
    }
    c.variants
        .iter()
        .map(|(variant, v)| {
            let regression = regression_of(reg, &c.name, variant.as_str());
            let warnings = attention::warnings(c, *variant, &str::to_string).len();
            (variant, v, regression, warnings)
        })
        .map(|(variant, v, regression, warnings)| Row {
            case: c.name.clone(),
            anchor: anchor(&c.name),
            variant: variant.to_string(),
            outcome: outcome_value(v.outcome),
            label: v.outcome.label(),
            pitfalls: v.pitfalls.iter().map(|p| p.id().to_string()).collect(),
            expected: v.expected.iter().map(|p| p.id().to_string()).collect(),
            message: v.message.clone(),
            time: ms(baseline::variant_ms(v)),
            rank: rank(v, regression, warnings),
            regression,
            warnings,
        })
        .collect()
}

/// Where a variant's row goes: new failures, then what fails the gate, then green variants
/// with warnings, then the rest (see `Row::rank`).
fn rank(v: &VariantResult, regression: Option<&str>, warnings: usize) -> u8 {
    let review = v.snapshot.as_ref().is_some_and(|s| s.state.needs_review());
    if regression == Some("new failure") {
        0
    } else if !v.outcome.is_ok() || review {
        1
    } else if warnings > 0 {
        2
    } else {
        QUIET
    }
}

/// The model's source path as the user knows it: relative to the case file's folder.
fn model_path(c: &CaseResult) -> Option<String> {
    let m = c.model.as_ref()?;
    if m.origin.ends_with(".py") {
        let dir = Path::new(&c.file).parent().unwrap_or(Path::new(""));
        Some(normalize(&dir.join(&m.origin)))
    } else {
        Some(m.origin.clone())
    }
}

/// `a/b/../c` as `a/c`, lexically (the report never looks at the file system).
fn normalize(p: &Path) -> String {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out.iter()
        .collect::<std::path::PathBuf>()
        .display()
        .to_string()
}

/// A warning's file, shortened to the path the case names when it is the model's source.
fn short_file(file: &str, model_path: Option<&str>) -> String {
    match model_path {
        Some(m) if file.ends_with(&format!("/{m}")) || file == m => m.to_string(),
        _ => file.to_string(),
    }
}

fn case_view<'a>(c: &'a CaseResult, reg: Option<&Regression>) -> CaseView<'a> {
    let rows = case_rows(c, reg);
    let mut outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
    outcomes.dedup();
    let model_path = model_path(c);
    let variant_names: Vec<String> = c.variants.keys().map(|v| v.to_string()).collect();
    let tol_atol = c.spec.as_ref().map(|s| s.atol);

    // The sample groups, in plan order, with the shapes and dtypes they hold.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for s in &c.samples {
        match groups.iter_mut().find(|(g, _)| *g == s.group) {
            Some((_, inputs)) => {
                if !inputs.contains(&s.inputs) {
                    inputs.push(s.inputs.clone());
                }
            }
            None => groups.push((s.group.clone(), vec![s.inputs.clone()])),
        }
    }
    let grid = groups
        .into_iter()
        .map(|(group, inputs)| {
            let shown = inputs.len().min(4);
            let mut text = inputs[..shown].join("; ");
            if inputs.len() > shown {
                text.push_str(&format!("; +{} more", inputs.len() - shown));
            }
            GridRow {
                cells: c
                    .variants
                    .values()
                    .map(|v| {
                        v.groups.get(&group).map(|g| {
                            let over = g.unmatched == 0 && tol_atol.is_some_and(|a| g.min_atol > a);
                            Cell {
                                run: g.run,
                                failed: g.failed,
                                max_abs: num(g.max_abs),
                                max_rel: num(g.max_rel),
                                min_tol: if g.unmatched > 0 {
                                    format!(
                                        "none: {} of {} raised or differ in shape, dtype or structure",
                                        g.unmatched, g.run
                                    )
                                } else {
                                    format!("atol ≥ {}", num(g.min_atol))
                                },
                                over,
                                none_passes: g.unmatched > 0,
                            }
                        })
                    })
                    .collect(),
                group,
                inputs: text,
                device: c.device.clone().unwrap_or_else(|| "cpu".into()),
            }
        })
        .collect();
    let devices = c
        .variants
        .values()
        .map(|v| {
            v.device_check.as_ref().map(|d| DeviceCell {
                device: d.device.clone(),
                flagged: d.flagged,
                detail: d.detail.clone(),
            })
        })
        .collect::<Vec<_>>();
    let devices = if devices.iter().all(Option::is_none) {
        Vec::new()
    } else {
        devices
    };

    let variants = c
        .variants
        .iter()
        .map(|(variant, v)| VariantView {
            name: variant.to_string(),
            outcome: outcome_value(v.outcome),
            label: v.outcome.label(),
            time: ms(baseline::variant_ms(v)),
            warnings: v
                .export
                .warnings
                .iter()
                .map(|w| Warning {
                    category: w.category.clone(),
                    location: format!("{}:{}", short_file(&w.file, model_path.as_deref()), w.line),
                    source_line: w.source_line.clone(),
                    message: w.message.clone(),
                    count: w.count,
                })
                .collect(),
            pins: attention::warnings(c, *variant, &str::to_string)
                .into_iter()
                .filter(|w| w.kind == attention::Kind::DevicePin)
                .map(|w| w.text)
                .collect(),
            regression: regression_of(reg, &c.name, variant.as_str()),
            v,
        })
        .collect();

    let snapshots = c
        .variants
        .iter()
        .filter_map(|(variant, v)| {
            v.snapshot.as_ref().map(|s| Snapshot {
                variant: variant.to_string(),
                state: serde_json::to_value(s.state)
                    .ok()
                    .and_then(|x| x.as_str().map(str::to_string))
                    .unwrap_or_default(),
                path: s.path.clone(),
                diff: s.diff.as_deref().map(unified_lines).unwrap_or_default(),
            })
        })
        .collect();
    let code_changes: Vec<(String, Vec<UniLine>)> = reg
        .map(|r| {
            r.code_changes
                .iter()
                .filter(|x| x.case == c.name)
                .map(|x| (x.variant.clone(), unified_lines(&x.diff)))
                .collect()
        })
        .unwrap_or_default();

    let changed = if code_changes.is_empty() { QUIET } else { 2 };
    let rank = rows
        .iter()
        .map(|r| r.rank)
        .min()
        .unwrap_or(QUIET)
        .min(changed);
    CaseView {
        name: c.name.clone(),
        anchor: anchor(&c.name),
        file: c.file.clone(),
        description: c.description.clone(),
        error: c.error.as_ref(),
        model_entry: c.model.as_ref().map(|m| m.entry.clone()),
        model_class: c
            .model
            .as_ref()
            .and_then(|m| m.class.clone())
            .filter(|k| Some(k) != c.model.as_ref().map(|m| &m.entry)),
        model_path,
        seed: c.seed,
        duration: ms(c.duration_ms as f64),
        timeline: phase_list(&c.timeline),
        spec: c.spec.as_ref(),
        notes: &c.notes,
        open: rank < QUIET,
        outcomes: outcomes.join(" "),
        variant_names,
        grid,
        devices,
        variants,
        code_diffs: code_diffs(c),
        rank,
        warnings: rows.iter().map(|r| r.warnings).sum(),
        lazy: false,
        snapshots,
        code_changes,
    }
}

/// Each variant's `.code` diff against its base with any change, in definition order: from
/// results.json (the variants' own, or the case's one in older results), else, for results
/// older than that, the first pair computed here from their `.code`.
fn code_diffs(c: &CaseResult) -> Vec<CodeDiffView> {
    let view = |base: Variant, variant: Variant, rows| CodeDiffView {
        base: base.to_string(),
        variant: variant.to_string(),
        rows,
    };
    let mut views: Vec<CodeDiffView> = c
        .variant_diffs()
        .into_iter()
        .map(|d| view(d.base, d.variant, side_by_side(&unified_changes(d.diff))))
        .collect();
    if views.is_empty() {
        let code_of = |v: Variant| c.variants.get(&v)?.export.code.as_deref();
        let computed = c.code_diff_pair().and_then(|(a, b)| {
            let rows = side_by_side(&line_changes(code_of(a)?, code_of(b)?));
            Some(view(a, b, rows))
        });
        views.extend(computed);
    }
    views.retain(|v| !v.rows.is_empty());
    views
}

/// A unified diff as lines with a class each (`add`, `del`, `hunk`, `head`, `ctx`).
fn unified_lines(diff: &str) -> Vec<UniLine> {
    diff.lines()
        .map(|l| UniLine {
            class: if l.starts_with("+++") || l.starts_with("---") {
                "head"
            } else if l.starts_with("@@") {
                "hunk"
            } else if l.starts_with('+') {
                "add"
            } else if l.starts_with('-') {
                "del"
            } else {
                "ctx"
            },
            text: l.to_string(),
        })
        .collect()
}

/// One line of a diff: `None` tags a gap (lines a unified diff does not show), with the
/// line numbers the next hunk starts at.
type LineChange = (Option<ChangeTag>, String, usize, usize);

/// Whole-text line changes of `old` → `new`.
fn line_changes(old: &str, new: &str) -> Vec<LineChange> {
    let diff = TextDiff::from_lines(old, new);
    diff.iter_all_changes()
        .map(|c| {
            (
                Some(c.tag()),
                c.value().trim_end_matches('\n').to_string(),
                c.old_index().map_or(0, |i| i + 1),
                c.new_index().map_or(0, |i| i + 1),
            )
        })
        .collect()
}

/// Line changes read back from a unified diff (`@@ -a,b +c,d @@` hunks).
fn unified_changes(diff: &str) -> Vec<LineChange> {
    let mut out = Vec::new();
    let (mut old_no, mut new_no) = (0usize, 0usize);
    let hunk = regex::Regex::new(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@").expect("valid regex");
    let mut in_hunk = false;
    for line in diff.lines() {
        if !in_hunk && (line.starts_with("--- ") || line.starts_with("+++ ")) {
            continue;
        }
        if let Some(m) = hunk.captures(line) {
            in_hunk = true;
            old_no = m[1].parse().unwrap_or(1);
            new_no = m[2].parse().unwrap_or(1);
            out.push((None, String::new(), old_no, new_no));
            continue;
        }
        let (tag, text) = match line.chars().next() {
            Some('+') => (ChangeTag::Insert, &line[1..]),
            Some('-') => (ChangeTag::Delete, &line[1..]),
            Some(' ') => (ChangeTag::Equal, &line[1..]),
            Some('\\') => continue, // "\ No newline at end of file"
            _ => (ChangeTag::Equal, line),
        };
        let (o, n) = match tag {
            ChangeTag::Equal => {
                old_no += 1;
                new_no += 1;
                (old_no - 1, new_no - 1)
            }
            ChangeTag::Delete => {
                old_no += 1;
                (old_no - 1, 0)
            }
            ChangeTag::Insert => {
                new_no += 1;
                (0, new_no - 1)
            }
        };
        out.push((Some(tag), text.to_string(), o, n));
    }
    out
}

/// Pair deleted and inserted lines into side-by-side rows, highlighting the words that changed.
fn side_by_side(changes: &[LineChange]) -> Vec<DiffRow> {
    let mut rows = Vec::new();
    let mut dels: Vec<(String, usize)> = Vec::new();
    let mut ins: Vec<(String, usize)> = Vec::new();
    let flush = |rows: &mut Vec<DiffRow>,
                 dels: &mut Vec<(String, usize)>,
                 ins: &mut Vec<(String, usize)>| {
        for i in 0..dels.len().max(ins.len()) {
            let row = match (dels.get(i), ins.get(i)) {
                (Some((l, ln)), Some((r, rn))) => {
                    let (left, right) = inline(l, r);
                    DiffRow {
                        kind: "chg",
                        left_no: Some(*ln),
                        left,
                        right_no: Some(*rn),
                        right,
                    }
                }
                (Some((l, ln)), None) => DiffRow {
                    kind: "del",
                    left_no: Some(*ln),
                    left: plain(l),
                    right_no: None,
                    right: Vec::new(),
                },
                (None, Some((r, rn))) => DiffRow {
                    kind: "ins",
                    left_no: None,
                    left: Vec::new(),
                    right_no: Some(*rn),
                    right: plain(r),
                },
                (None, None) => unreachable!("i < max(len)"),
            };
            rows.push(row);
        }
        dels.clear();
        ins.clear();
    };
    for (tag, text, o, n) in changes {
        match tag {
            Some(ChangeTag::Delete) => dels.push((text.clone(), *o)),
            Some(ChangeTag::Insert) => ins.push((text.clone(), *n)),
            Some(ChangeTag::Equal) => {
                flush(&mut rows, &mut dels, &mut ins);
                rows.push(DiffRow {
                    kind: "eq",
                    left_no: Some(*o),
                    left: plain(text),
                    right_no: Some(*n),
                    right: plain(text),
                });
            }
            None => {
                flush(&mut rows, &mut dels, &mut ins);
                if *o > 1 || *n > 1 {
                    rows.push(DiffRow {
                        kind: "gap",
                        left_no: None,
                        left: Vec::new(),
                        right_no: None,
                        right: Vec::new(),
                    });
                }
            }
        }
    }
    flush(&mut rows, &mut dels, &mut ins);
    rows
}

fn plain(s: &str) -> Vec<Seg> {
    vec![Seg {
        text: s.to_string(),
        hl: false,
    }]
}

/// Word-level highlights of the differences between two lines.
fn inline(old: &str, new: &str) -> (Vec<Seg>, Vec<Seg>) {
    let diff = TextDiff::from_words(old, new);
    let (mut left, mut right): (Vec<Seg>, Vec<Seg>) = (Vec::new(), Vec::new());
    // Lines with little in common read better as wholly changed than as confetti.
    if diff.ratio() < 0.5 {
        let indent = |s: &str| s.len() - s.trim_start().len();
        let whole = |s: &str| {
            let i = indent(s);
            vec![
                Seg {
                    text: s[..i].to_string(),
                    hl: false,
                },
                Seg {
                    text: s[i..].to_string(),
                    hl: true,
                },
            ]
        };
        return (whole(old), whole(new));
    }
    let push = |segs: &mut Vec<Seg>, text: &str, hl: bool| match segs.last_mut() {
        Some(last) if last.hl == hl => last.text.push_str(text),
        _ => segs.push(Seg {
            text: text.to_string(),
            hl,
        }),
    };
    for c in diff.iter_all_changes() {
        match c.tag() {
            ChangeTag::Equal => {
                push(&mut left, c.value(), false);
                push(&mut right, c.value(), false);
            }
            ChangeTag::Delete => push(&mut left, c.value(), true),
            ChangeTag::Insert => push(&mut right, c.value(), true),
        }
    }
    (left, right)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn show(rows: &[DiffRow]) -> Vec<String> {
        let side = |segs: &[Seg]| {
            segs.iter()
                .map(|s| {
                    if s.hl {
                        format!("[{}]", s.text)
                    } else {
                        s.text.clone()
                    }
                })
                .collect::<String>()
        };
        rows.iter()
            .map(|r| {
                format!(
                    "{} {:?} {} | {:?} {}",
                    r.kind,
                    r.left_no,
                    side(&r.left),
                    r.right_no,
                    side(&r.right)
                )
            })
            .collect()
    }

    #[track_caller]
    fn check(rows: Vec<DiffRow>, expect: &[&str]) {
        assert_eq!(show(&rows), expect);
    }

    #[test]
    fn side_by_side_pairs_changes_and_highlights_words() {
        let old = "def f(x):\n  y = g(x, 4)\n  return y\n";
        let new = "def f(x):\n  y = g(x, len(x))\n  z = y\n  return y\n";
        let expect = [
            "eq Some(1) def f(x): | Some(1) def f(x):",
            "chg Some(2)   y = g(x, [4)] | Some(2)   y = g(x, [len(x))]",
            "ins None  | Some(3)   z = y",
            "eq Some(3)   return y | Some(4)   return y",
        ];
        check(side_by_side(&line_changes(old, new)), &expect);
        // The same view from a unified diff (what `code_diff` holds).
        let unified = TextDiff::from_lines(old, new)
            .unified_diff()
            .header("traced", "scripted")
            .to_string();
        check(side_by_side(&unified_changes(&unified)), &expect);
    }

    #[test]
    fn unified_hunks_after_the_first_line_show_a_gap() {
        let old: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l15\n", "L15\n");
        let unified = TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(1)
            .to_string();
        let rows = show(&side_by_side(&unified_changes(&unified)));
        assert_eq!(
            rows,
            [
                "gap None  | None ",
                "eq Some(14) l14 | Some(14) l14",
                "chg Some(15) [l15] | Some(15) [L15]",
                "eq Some(16) l16 | Some(16) l16",
            ]
        );
    }

    /// results.json with issue 4's fields (`code_diff`, `snapshot`) and without most optional
    /// ones: the page shows the given diff (not one computed from `.code`) and the snapshot diff.
    #[test]
    fn renders_code_diff_and_snapshot_fields_when_present() {
        let variant = |code: &str, snapshot: &str| {
            format!(
                r#"{{"outcome": "pass", "pitfalls": [], "expected": [], "message": "matches",
                    "samples_run": 1, "samples_failed": 0,
                    "export": {{"ok": true, "seconds": 0.001, "code": "{code}"}},
                    "max_abs": 0, "max_rel": 0, "run_ms": 1.0 {snapshot}}}"#
            )
        };
        let snapshot = r#", "snapshot": {"state": "changed", "path": "snapshots/c/traced.code",
            "diff": "--- snapshots/c/traced.code\n+++ traced\n@@ -1 +1 @@\n-  return old_line\n+  return new_line\n"}"#;
        let text = format!(
            r#"{{"schema": 1, "harness": "0", "torch": "2.13.0", "tch": "0.26.0", "python": "3.11",
                "seed": null, "duration_ms": 5, "complete": true,
                "cases": [{{"name": "c", "file": "cases/c.yaml", "status": "ran", "duration_ms": 3,
                  "variants": {{"traced": {}, "scripted": {}}},
                  "code_diff": "--- traced\n+++ scripted\n@@ -1,2 +1,2 @@\n def forward(self, x):\n--- a comment\n+  return x + normalized\n"}}]}}"#,
            variant(r"def forward(self, x):\n  return x\n", snapshot),
            variant(r"def forward(self, x):\n  return x + 1\n", ""),
        );
        let results: Results = serde_json::from_str(&text).unwrap();
        let page = render(&results, None).unwrap();
        // The side-by-side view comes from code_diff; a removed line starting "--" is content.
        assert!(page.contains("x + normalized"), "code_diff was not used");
        assert!(
            !page.contains("x + 1"),
            "the diff was computed from .code instead"
        );
        assert!(page.contains("-- a comment"));
        assert!(page.contains("Snapshot of traced <code>.code</code>: changed"));
        assert!(page.contains(r#"<div class="del">-  return old_line</div>"#));
        assert!(page.contains(r#"<div class="add">+  return new_line</div>"#));
        assert!(page.contains("snapshots&#x2f;c&#x2f;traced.code"));
    }

    /// Each variant's own diff is shown side by side under its pair, in definition order, the
    /// first where the one diff used to be; a pair whose code is the same shows no table.
    #[test]
    fn renders_each_variant_diff_under_its_pair() {
        let variant = |outcome: &str, diff: Option<(&str, &str)>| {
            let code_diff = diff.map(|(base, d)| serde_json::json!({"diff_base": base, "diff": d}));
            serde_json::json!({"outcome": outcome, "pitfalls": [], "expected": [], "message": "m",
                "samples_run": 1, "samples_failed": 0, "max_abs": 0, "max_rel": 0, "run_ms": 1.0,
                "export": {"ok": true, "seconds": 0.0, "code": "c"}, "code_diff": code_diff})
        };
        let hunk =
            |a: &str, b: &str| format!("--- {a}\n+++ {b}\n@@ -1 +1 @@\n-{a} line\n+{b} line\n");
        let results: Results = serde_json::from_value(serde_json::json!({"schema": 1,
        "harness": "0", "torch": "t", "tch": "t", "python": "p", "seed": null,
        "duration_ms": 5, "complete": true,
        "cases": [{"name": "c", "file": "cases/c.yaml", "status": "ran", "duration_ms": 3,
            "code_diff": hunk("traced", "scripted"),
            "variants": {
                "traced": variant("pass", None),
                "scripted": variant("pass", Some(("traced", &hunk("traced", "scripted")))),
                "frozen": variant("xfail", Some(("scripted", &hunk("scripted", "frozen")))),
                "optimized": variant("xfail", Some(("scripted", ""))),
            }}]}))
        .unwrap();
        let page = render(&results, None).unwrap();
        let heads: Vec<&str> = page
            .match_indices(" <code>.code</code></h4>")
            .map(|(i, _)| page[..i].rsplit("<h4>").next().unwrap())
            .collect();
        assert_eq!(heads, ["traced vs scripted", "scripted vs frozen"]);
        assert_eq!(page.matches("<table class=\"diff\">").count(), 2);
        assert!(page.contains("<th></th><th>scripted</th><th></th><th>frozen</th>"));
        assert!(
            page.contains("<mark>frozen</mark>"),
            "the changed word is highlighted"
        );
        // After the variants' sections, as the one diff was.
        let last_variant = page.rfind("<div class=\"variant").unwrap();
        assert!(page.find("traced vs scripted <code>").unwrap() > last_variant);
    }

    /// A variant for `corpus`: (variant, outcome, pitfall, warning file).
    type V<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);
    /// A case for `corpus`: (name, duration ms, variants).
    type C<'a> = (&'a str, u64, &'a [V<'a>]);

    /// A results file of these cases; no variants makes a case error.
    fn corpus(cases: &[C<'_>]) -> Results {
        let case = |(name, ms, variants): &C<'_>| {
            let variants: serde_json::Map<String, serde_json::Value> = variants
                .iter()
                .map(|(v, outcome, pitfall, warning)| {
                    let warnings: Vec<serde_json::Value> = warning
                        .iter()
                        .map(|f| serde_json::json!({"category": "TracerWarning", "message": "Converting a tensor",
                            "file": f, "line": 7, "source_line": "if x:", "count": 1}))
                        .collect();
                    (v.to_string(), serde_json::json!({"outcome": outcome, "pitfalls": pitfall.iter().collect::<Vec<_>>(),
                        "expected": [], "message": format!("{name} {v} says {outcome}"),
                        "samples_run": 1, "samples_failed": 0, "max_abs": 0, "max_rel": 0, "run_ms": 1.0,
                        "export": {"ok": true, "seconds": 0.0, "warnings": warnings}}))
                })
                .collect();
            let status = if variants.is_empty() { "error" } else { "ran" };
            serde_json::json!({"name": name, "file": format!("cases/{name}.yaml"), "status": status,
                "duration_ms": ms, "variants": variants,
                "error": (status == "error").then(|| serde_json::json!({"kind": "eager_raised",
                    "message": "boom in /w/p/cases/m.py", "traceback": []}))})
        };
        serde_json::from_value(
            serde_json::json!({"schema": 1, "harness": "0", "torch": "t",
            "tch": "t", "python": "p", "seed": null, "duration_ms": 5, "complete": true,
            "root": "/w/p", "cases": cases.iter().map(case).collect::<Vec<_>>()}),
        )
        .unwrap()
    }

    /// The page opens on what needs attention: failures, then case errors, then green variants
    /// with warnings; quiet passes are folded, and paths are relative to the root.
    #[test]
    fn attention_first_with_warnings_and_relative_paths() {
        let results = corpus(&[
            ("quiet", 5, &[("traced", "pass", None, None)]),
            (
                "warned",
                9,
                &[("traced", "pass", None, Some("/w/p/cases/m.py"))],
            ),
            (
                "broken",
                1,
                &[("traced", "fail", Some("shape_specialization"), None)],
            ),
            ("gone", 2, &[]),
        ]);
        let page = render(&results, None).unwrap();
        let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("no {s}"));
        let fold = at(r#"<details class="fold" id="passing">"#);
        let rows = [
            "broken traced says fail",
            "[eager_raised] boom in m.py",
            "warned traced says pass",
        ];
        assert!(
            rows.windows(2).all(|w| at(w[0]) < at(w[1])),
            "rows out of order"
        );
        assert!(at(rows[2]) < fold && at("quiet traced says pass") > fold);
        assert!(page.contains(r#"<td class="num"><span class="warn">1</span></td>"#));
        assert!(page.contains("TracerWarning</b> at <code>m.py:7</code>"));
        assert!(!page.contains("/w/p"), "an absolute path is left");
        // The picture: outcomes per variant, pitfalls by count, the slowest case first.
        assert!(page.contains(r#"<span class="o-fail" style="flex-grow:1" title="FAIL: 1">"#));
        assert!(page.contains("<code>shape_specialization</code></a></td><td class=\"num\">1</td>"));
        assert!(
            at("#case-warned\"><code>warned</code></a></td><td class=\"num\">9 ms")
                < at("#case-quiet\"><code>quiet</code></a></td><td class=\"num\">5 ms")
        );
        // A small report keeps every case inline.
        assert!(!page.contains(r#"id="lazy-bodies""#) && !page.contains("body\" data-lazy"));
    }

    /// Many quiet cases: their bodies are gzipped into the page, and inflate to what the page
    /// would have shown inline.
    #[test]
    fn quiet_cases_of_a_corpus_are_compressed_whole() {
        use std::io::Read;
        let names: Vec<String> = (0..LAZY_FROM).map(|i| format!("q{i}")).collect();
        let quiet: &[V<'_>] = &[("traced", "pass", None, None)];
        let mut spec: Vec<C<'_>> = names.iter().map(|n| (n.as_str(), 1, quiet)).collect();
        spec.push(("broken", 1, &[("traced", "fail", None, None)]));
        let page = render(&corpus(&spec), None).unwrap();
        assert_eq!(
            page.matches("<div class=\"body\" data-lazy></div>").count(),
            LAZY_FROM
        );
        let blob = page
            .split(r#"id="lazy-bodies">"#)
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        let mut json = String::new();
        flate2::read::GzDecoder::new(&unbase64(blob)[..])
            .read_to_string(&mut json)
            .unwrap();
        let bodies: BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
        assert_eq!(bodies.len(), LAZY_FROM);
        assert!(bodies["case-q7"].contains("q7 traced says pass"));
        assert!(
            page.contains("broken traced says fail</p>"),
            "a failing case is inline"
        );
    }

    fn unbase64(s: &str) -> Vec<u8> {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bits: Vec<u8> = s
            .bytes()
            .filter(|b| *b != b'=')
            .map(|b| ABC.iter().position(|a| *a == b).unwrap() as u8)
            .collect();
        bits.chunks(4)
            .flat_map(|c| {
                let n = c
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (18 - 6 * i)));
                (0..c.len() - 1).map(move |i| (n >> (16 - 8 * i)) as u8)
            })
            .collect()
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(
            unbase64(&base64(b"any bytes \xff\x00")),
            b"any bytes \xff\x00"
        );
    }

    #[test]
    fn numbers_and_anchors() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(f64::INFINITY), "∞");
        assert_eq!(num(1.5e-7), "1.50e-7");
        assert_eq!(anchor("a b/c"), "case-a-b-c");
        assert_eq!(
            short_file("/work/x/cases/models/m.py", Some("cases/models/m.py")),
            "cases/models/m.py"
        );
        assert_eq!(
            short_file("/lib/torch.py", Some("cases/m.py")),
            "/lib/torch.py"
        );
    }
}
