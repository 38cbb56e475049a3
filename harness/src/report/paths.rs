//! Paths as the reader knows them: relative to the project root and to the case's folder.
//!
//! Messages, evidence, warnings and tracebacks carry the absolute paths of the machine that ran
//! the cases (`/home/ci/build/cases/models/m.py`). A report strips the run's root folder
//! (`Results::root`, the folder `verify` was started in) from every text of a case, then the
//! case file's folder, so the same file reads `models/m.py` wherever it ran. Older results
//! files have no root: it is inferred from a model source whose path ends with the case folder
//! and the model's origin, else taken as the longest common folder of the absolute case files
//! and sources. The case file's own path and the model's origin are left as they are.

use std::path::Path;

use crate::results::{CaseResult, Results};

/// The results with every case's texts made relative (see the module doc).
pub fn relative(results: &Results) -> Results {
    let mut out = results.clone();
    let root = root(results);
    for c in &mut out.cases {
        if let Some(relative) = relative_case(c, root.as_deref()) {
            *c = relative;
        }
    }
    out
}

/// The texts whose paths are shown relative to the case's folder too: messages, evidence,
/// tracebacks, warnings. Commands and artifact paths (`replay`, `artifact`, a snapshot's `path`)
/// stay relative to the root, where they are run from.
const CASE_RELATIVE: [&str; 9] = [
    "message",
    "traceback",
    "evidence",
    "summary",
    "location",
    "detail",
    "notes",
    "not_judged",
    "file",
];

fn relative_case(c: &CaseResult, root: Option<&str>) -> Option<CaseResult> {
    let mut prefixes = Vec::new();
    if let Some(r) = root {
        prefixes.push(format!("{}/", r.trim_end_matches('/')));
    }
    let file = strip_all(&c.file, &prefixes);
    let dir = Path::new(&file).parent().map(|d| d.display().to_string());
    let case_dir = dir
        .filter(|d| !d.is_empty() && !d.starts_with('/'))
        .map(|d| format!("{d}/"));
    let mut value = serde_json::to_value(c).ok()?;
    strip_value(&mut value, &prefixes, case_dir.as_deref(), false);
    let mut out: CaseResult = serde_json::from_value(value).ok()?;
    out.file = file;
    out.model = c.model.clone();
    Some(out)
}

/// The run's root: recorded, inferred from a model source, or the common folder of absolute
/// case files and sources.
pub fn root(results: &Results) -> Option<String> {
    if let Some(r) = &results.root {
        return Some(r.clone());
    }
    results
        .cases
        .iter()
        .find_map(root_from_sources)
        .or_else(|| {
            let absolute = results
                .cases
                .iter()
                .flat_map(|c| std::iter::once(&c.file).chain(&c.sources))
                .filter(|p| p.starts_with('/'));
            common_folder(absolute)
        })
}

/// `/work/x` from a source `/work/x/cases/m.py` of a case file `cases/c.yaml` with origin `m.py`.
fn root_from_sources(c: &CaseResult) -> Option<String> {
    let origin = &c.model.as_ref()?.origin;
    if c.file.starts_with('/') || !origin.ends_with(".py") {
        return None;
    }
    let dir = Path::new(&c.file).parent().unwrap_or(Path::new(""));
    let tail = format!("/{}", dir.join(origin).display());
    c.sources
        .iter()
        .find_map(|s| s.strip_suffix(&tail))
        .filter(|r| r.starts_with('/'))
        .map(str::to_string)
}

/// The longest folder every path is in (not `/` itself).
fn common_folder<'a>(paths: impl Iterator<Item = &'a String>) -> Option<String> {
    let mut common: Option<Vec<&str>> = None;
    for p in paths {
        let parts: Vec<&str> = p.split('/').collect();
        let folder = &parts[..parts.len() - 1];
        common = Some(match common {
            None => folder.to_vec(),
            Some(c) => c
                .iter()
                .zip(folder)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    let c = common?.join("/");
    (c.len() > 1).then_some(c)
}

/// Strip `prefixes` from every string, and `case_dir` too under the `CASE_RELATIVE` keys.
fn strip_value(
    v: &mut serde_json::Value,
    prefixes: &[String],
    case_dir: Option<&str>,
    texts: bool,
) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            *s = strip_all(s, prefixes);
            if let Some(d) = case_dir.filter(|_| texts) {
                *s = strip_prefix_everywhere(s, d);
            }
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| strip_value(x, prefixes, case_dir, texts)),
        Value::Object(o) => o.iter_mut().for_each(|(k, x)| {
            let texts = CASE_RELATIVE.contains(&k.as_str());
            strip_value(x, prefixes, case_dir, texts)
        }),
        _ => {}
    }
}

fn strip_all(text: &str, prefixes: &[String]) -> String {
    prefixes
        .iter()
        .fold(text.to_string(), |t, p| strip_prefix_everywhere(&t, p))
}

/// `text` without `prefix` wherever a path starts with it (not inside a longer path or word).
fn strip_prefix_everywhere(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (i, _) in text.match_indices(prefix) {
        let before = text[..i].chars().next_back();
        let inside = before.is_some_and(|c| c.is_alphanumeric() || "_-./~".contains(c));
        if !inside && i >= last {
            out.push_str(&text[last..i]);
            last = i + prefix.len();
        }
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(file: &str, origin: &str, sources: &[&str], message: &str) -> CaseResult {
        serde_json::from_value(serde_json::json!({
            "name": "c", "file": file, "status": "error", "duration_ms": 0, "variants": {},
            "model": {"origin": origin, "entry": "M"},
            "sources": sources,
            "error": {"kind": "eager_raised", "message": message,
                      "traceback": [format!("  File \"{}\", line 3", sources.first().unwrap_or(&""))]},
        }))
        .unwrap()
    }

    fn results(root: Option<&str>, cases: Vec<CaseResult>) -> Results {
        serde_json::from_value(serde_json::json!({
            "schema": 1, "harness": "0", "torch": "t", "tch": "t", "python": "p", "seed": null,
            "duration_ms": 0, "complete": true, "root": root, "cases": cases,
        }))
        .unwrap()
    }

    #[track_caller]
    fn check(r: &Results, expect: (&str, &str, &str)) {
        let c = &relative(r).cases[0];
        let e = c.error.as_ref().unwrap();
        assert_eq!(
            (c.file.as_str(), e.message.as_str(), e.traceback[0].as_str()),
            expect
        );
    }

    #[test]
    fn strips_the_root_then_the_case_folder() {
        let c = case(
            "cases/c.yaml",
            "models/m.py",
            &["/w/p/cases/models/m.py"],
            "at /w/p/cases/models/m.py:3 and cases/models/m.py:4, not /x/w/p/cases/y or /w/p/cases2/z",
        );
        let expect = (
            "cases/c.yaml",
            "at models/m.py:3 and models/m.py:4, not /x/w/p/cases/y or cases2/z",
            "  File \"models/m.py\", line 3",
        );
        check(&results(Some("/w/p"), vec![c.clone()]), expect);
        // A command keeps the path it is run with, from the root.
        let mut with_replay = c.clone();
        with_replay.notes = vec!["see /w/p/cases/models/m.py".into()];
        with_replay.description = Some("cargo xtask verify /w/p/cases/c.yaml".into());
        let r = &relative(&results(Some("/w/p"), vec![with_replay])).cases[0];
        assert_eq!(r.notes, ["see models/m.py"]);
        assert_eq!(
            r.description.as_deref(),
            Some("cargo xtask verify cases/c.yaml")
        );
        // Without a recorded root: inferred from the source, the case folder and the origin.
        check(&results(None, vec![c.clone()]), expect);
        assert_eq!(root(&results(None, vec![c])).as_deref(), Some("/w/p"));
    }

    #[test]
    fn falls_back_to_the_common_folder_of_absolute_paths() {
        let a = case("/w/p/a/c.yaml", "pkg.mod", &["/w/p/a/m.py"], "m");
        let b = case("/w/p/b/c.yaml", "pkg.mod", &["/w/p/b/m.py"], "m");
        assert_eq!(
            root(&results(None, vec![a.clone(), b])).as_deref(),
            Some("/w/p")
        );
        assert_eq!(
            root(&results(None, vec![case("c.yaml", "m", &[], "m")])),
            None
        );
        check(
            &results(None, vec![a]),
            ("c.yaml", "m", "  File \"m.py\", line 3"),
        );
    }
}
