//! The harness's own output, as insta snapshots: the one-line error of each bad case file (no
//! Python needed), and, for the shipped cases run with the real worker and libtorch, the console
//! lines, the summary and a results.json view with times and paths redacted. A change to any of
//! them shows as a reviewable `.snap.new` (`cargo insta review`), never as a silent edit.

use harness::case::Case;
use harness::console::Console;
use harness::results::{CaseStatus, Results};

use super::{repo, shipped};

/// Times and the checkout's own path vary between runs and machines; nothing else may.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    let root = regex::escape(&repo().display().to_string());
    s.add_filter(&root, "[repo]");
    s.add_filter(r"\(\d+ ms\)", "(N ms)");
    s.add_filter(r"in \d+(\.\d+)? s\b", "in N s");
    s.add_filter(r"/tmp/[^ :/]+", "[tmp]");
    // libtorch's dropout is not seeded (eager's is): a nondeterministic variant's numbers vary.
    s.add_filter(
        r#"(nondeterministic_eager: .*?: output: )\d+ of \d+ elements differ: max abs error [^,]+, max rel error [^ ")]+"#,
        "${1}[random]",
    );
    s
}

#[test]
fn bad_case_files_get_one_line_each() {
    settings().bind(|| {
        insta::glob!("../fixtures/bad", "*.yaml", |path| {
            // Relative to the package, as a user would name it (whatever folder the tests run
            // in: a torch line's workspace runs them from lines/torch-X.Y).
            let engine = format!("{}/", env!("HARNESS_ENGINE_DIR"));
            let line = match Case::load(path) {
                Ok(_) => "parses; fails later, in the worker".to_string(),
                Err(e) => e.to_string().replace(&engine, ""),
            };
            assert!(!line.contains('\n'), "{line}");
            insta::assert_snapshot!(line);
        });
    });
}

/// The shipped results with the checkout's path replaced before anything is rendered: the
/// console clips long lines, and a longer path would move where.
fn shipped_here() -> Results {
    let (results, _) = shipped();
    let text = serde_json::to_string(results).unwrap();
    let root = repo().display().to_string();
    serde_json::from_str(&text.replace(&root, "[repo]")).unwrap()
}

#[test]
fn console_lines_of_the_shipped_cases() {
    if harness::torch_line().name != harness::torch_lines::DEFAULT_LINE {
        // The snapshot holds torch 2.13's verdicts and messages; the lines' differences are
        // their cases' `torch:` expectations, which shipped_cases_meet_their_expectations checks.
        eprintln!("skipped: the console snapshot is the default torch line's");
        return;
    }
    let results = &shipped_here();
    let console = Console::plain();
    let mut lines: Vec<String> = results
        .cases
        .iter()
        .flat_map(|c| console.case_lines(c))
        .collect();
    lines.push(Console::summary(results));
    settings().bind(|| insta::assert_snapshot!(lines.join("\n")));
}

#[test]
fn results_json_of_the_shipped_cases() {
    let (results, _) = shipped();
    let view: Vec<serde_json::Value> = results
        .cases
        .iter()
        .map(|c| {
            let variants: serde_json::Map<String, serde_json::Value> = c
                .variants
                .iter()
                .map(|(v, r)| {
                    let view = serde_json::json!({
                        "outcome": r.outcome,
                        "pitfalls": r.pitfalls,
                        "expected": r.expected,
                        "message": r.message,
                        "samples": [r.samples_failed, r.samples_run],
                        "first_failure": r.first_failure.as_ref().map(|f| &f.sample),
                        "counterexample": r.counterexample.as_ref().map(|x| &x.inputs),
                        "device_flagged": r.device_check.as_ref().map(|d| d.flagged),
                        "snapshot": r.snapshot.as_ref().map(|s| s.state),
                    });
                    (v.to_string(), view)
                })
                .collect();
            serde_json::json!({
                "name": c.name,
                "status": c.status,
                "error": (c.status != CaseStatus::Ran).then(|| c.error.as_ref().map(|e| e.kind)),
                "variants": variants,
                "notes": c.notes,
            })
        })
        .collect();
    settings().bind(|| insta::assert_json_snapshot!(view));
}
