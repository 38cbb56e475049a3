//! Reports as a user meets them: the HTML page and junit.xml of real results (the shipped cases
//! and the gate fixtures, run with the real worker and libtorch), `harness report` with a
//! baseline and merged results files, `--format json`, and the page loaded in headless Chromium
//! (console clean, the filter works, a screenshot kept at `reports/report.png`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::case::Variant;
use harness::report;
use harness::results::{exit, CaseStatus, Outcome, Results};

use super::{fixtures, harness_bin, python, repo, shipped};

/// Undo the HTML escaping minijinja applies, to compare page text with results text.
fn unescape(s: &str) -> String {
    s.replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Each case's `<details class="case">` section of a page, by case name.
fn sections(html: &str) -> Vec<(String, String)> {
    html.split("<details class=\"case\" id=\"case-")
        .skip(1)
        .map(|s| {
            let name = s.split('"').next().unwrap().to_string();
            (name, unescape(s))
        })
        .collect()
}

/// No resource comes from the network: no remote src/href, no stylesheet links, no imports.
#[track_caller]
fn assert_self_contained(html: &str) {
    let remote = regex::Regex::new(r#"(?i)(src|href)\s*=\s*["']?\s*(https?:)?//"#).unwrap();
    assert!(!remote.is_match(html), "a remote src/href");
    for bad in ["<link", "@import", "url(", "<script src", "<iframe", "<img"] {
        assert!(!html.contains(bad), "the page has {bad}");
    }
}

/// Render the report of the shipped cases (from their results.json) into `out`.
fn render_shipped(out: &Path) -> (&'static Results, String) {
    let (results, dir) = shipped();
    let saved = Results::read(&dir.join("results.json")).unwrap();
    let written = report::write(&saved, None, out).unwrap();
    assert!(written.history.is_file() && written.junit.is_file());
    assert!(written
        .history
        .file_name()
        .unwrap()
        .to_string_lossy()
        .ends_with("Z.html"));
    (results, std::fs::read_to_string(written.html).unwrap())
}

#[test]
fn report_of_the_shipped_cases_shows_every_case_finding_and_code_diff() {
    let out = tempfile::tempdir().unwrap();
    let (results, html) = render_shipped(out.path());
    assert_self_contained(&html);
    let mut sections = sections(&html);
    // The page opens on the cases that need attention; compare in case order.
    sections.sort_by_key(|(n, _)| results.cases.iter().position(|c| c.name == *n));
    assert_eq!(
        sections.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        results
            .cases
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
    );
    // The matrix: one row per case and variant, with its outcome.
    let rows = regex::Regex::new(r#"<tr data-outcome="([a-z-]+)""#).unwrap();
    let mut outcomes: Vec<&str> = rows
        .captures_iter(&html)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    let mut expected: Vec<String> = results
        .cases
        .iter()
        .flat_map(|c| c.variants.values())
        .map(|v| v.outcome.label().to_lowercase())
        .collect();
    // Rows that need attention come first: fail/xpass/error before green ones.
    let green = |o: &str| o == "pass" || o == "xfail";
    let first_green = outcomes
        .iter()
        .position(|o| green(o))
        .unwrap_or(outcomes.len());
    assert!(
        outcomes[first_green..].iter().all(|o| green(o)),
        "{outcomes:?}"
    );
    outcomes.sort();
    expected.sort();
    assert_eq!(outcomes, expected);

    let mut diffs = 0;
    for (c, (_, section)) in results.cases.iter().zip(&sections) {
        assert!(section.contains(&c.file), "{}", c.name);
        let model = c.model.as_ref().unwrap();
        assert!(section.contains(&model.entry), "{}", c.name);
        let spec = c.spec.as_ref().expect("ran cases record their spec");
        for i in &spec.inputs {
            assert!(section.contains(&i.shape), "{}: {}", c.name, i.shape);
        }
        for (variant, v) in &c.variants {
            for f in &v.findings {
                assert!(section.contains(f.pitfall.id()), "{}/{variant}", c.name);
                assert!(
                    section.contains(&f.hint),
                    "{}/{variant}: {}",
                    c.name,
                    f.hint
                );
                assert!(section.contains(&f.summary), "{}/{variant}", c.name);
            }
            if let Some(cx) = &v.counterexample {
                assert!(section.contains(&cx.replay), "{}/{variant}", c.name);
            }
            for w in &v.export.warnings {
                assert!(section.contains(&w.source_line), "{}/{variant}", c.name);
            }
            for g in v.groups.keys() {
                assert!(section.contains(&format!("<code>{g}</code>")), "{}", c.name);
            }
        }
        // Both exported: the side-by-side diff, with changed words highlighted when they differ.
        let code = |v| c.variants.get(&v).and_then(|v| v.export.code.clone());
        if let (Some(t), Some(s)) = (
            code(Variant::named("traced").unwrap()),
            code(Variant::named("scripted").unwrap()),
        ) {
            assert!(section.contains("<table class=\"diff\">"), "{}", c.name);
            if t != s {
                assert!(section.contains("<mark>"), "{}: no highlight", c.name);
                diffs += 1;
            }
        } else {
            assert!(!section.contains("<table class=\"diff\">"), "{}", c.name);
        }
    }
    assert!(diffs >= 5, "only {diffs} code diffs");
    // The len() case: traced froze 4, scripted calls len: both sides are in its diff.
    let (_, arange) = sections.iter().find(|(n, _)| n == "arange_len").unwrap();
    assert!(arange.contains("torch.arange(4,"));
    assert!(arange.contains("torch.len(x)"));
}

#[test]
fn junit_has_a_testcase_per_case_and_variant() {
    let out = tempfile::tempdir().unwrap();
    let (results, _) = render_shipped(out.path());
    let xml = std::fs::read_to_string(out.path().join("junit.xml")).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(parsed.test_suites.len(), results.cases.len());
    for (suite, c) in parsed.test_suites.iter().zip(&results.cases) {
        assert_eq!(suite.name.as_str(), c.name);
        assert_eq!(suite.test_cases.len(), c.variants.len());
        for (tc, (variant, v)) in suite.test_cases.iter().zip(&c.variants) {
            assert_eq!(tc.name.as_str(), variant.as_str());
            assert_eq!(tc.classname.as_ref().unwrap().as_str(), c.name);
            match (&tc.status, v.outcome) {
                (quick_junit::TestCaseStatus::Success { .. }, Outcome::Pass) => {}
                (
                    quick_junit::TestCaseStatus::Skipped {
                        ty, description, ..
                    },
                    Outcome::Xfail,
                ) => {
                    assert_eq!(ty.as_ref().unwrap().as_str(), "xfail");
                    let text = description.as_ref().unwrap().as_str();
                    for f in &v.findings {
                        assert!(text.contains(f.pitfall.id()) && text.contains(&f.hint));
                    }
                }
                (s, o) => panic!("{}/{variant}: {o:?} became {s:?}", c.name),
            }
        }
    }
}

/// The harness binary run outside the repository (whose harness.toml is not the fixtures').
fn harness(args: &[&str]) -> (i32, String, String) {
    harness_in(&std::env::temp_dir(), args)
}

/// The harness binary run from `cwd` (where its relative defaults, such as
/// `reports/baseline.json`, are looked up).
fn harness_in(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(harness_bin());
    cmd.current_dir(cwd).args(args);
    if args.first() == Some(&"verify") {
        // These tests are about reports, not `.code` snapshots.
        cmd.arg("--no-snapshots");
    }
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `harness verify` on the gate fixtures writes results.json, junit.xml and index.html; failures
/// carry the finding text; `harness report` compares with a baseline, merges results files and
/// accepts a baseline; `--format json` prints only the results document.
#[test]
fn cli_reports_junit_baseline_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let gate = fixtures().join("gate");
    let py = python();
    let (code, stdout, _) = harness(&[
        "verify",
        gate.to_str().unwrap(),
        "--python",
        py.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-baseline",
    ]);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    assert!(stdout.contains("report: "), "{stdout}");
    let results = Results::read(&out.join("results.json")).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("exit 1: divergence or regression"));
    let history: Vec<_> = std::fs::read_dir(out.join("history")).unwrap().collect();
    assert_eq!(history.len(), 1);

    // junit.xml: the unexpected divergence is a failure carrying the finding and its fix.
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let junit = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let testcases: usize = junit.test_suites.iter().map(|s| s.test_cases.len()).sum();
    assert_eq!(testcases, 8);
    let suite = |name: &str| {
        junit
            .test_suites
            .iter()
            .find(|s| s.name.as_str() == name)
            .unwrap()
    };
    let traced = &suite("undocumented_branch").test_cases[0];
    assert_eq!(traced.name.as_str(), "traced");
    let v = &results
        .cases
        .iter()
        .find(|c| c.name == "undocumented_branch")
        .unwrap()
        .variants[&Variant::named("traced").unwrap()];
    match &traced.status {
        quick_junit::TestCaseStatus::NonSuccess {
            kind: quick_junit::NonSuccessKind::Failure,
            message,
            description,
            ..
        } => {
            assert_eq!(message.as_ref().unwrap().as_str(), v.message);
            let text = description.as_ref().unwrap().as_str();
            assert!(text.contains("control_flow_erasure"), "{text}");
            assert!(text.contains(&v.findings[0].hint), "{text}");
            assert!(text.contains("replay: "), "{text}");
        }
        s => panic!("{s:?}"),
    }
    assert!(matches!(
        suite("stale_expectation").test_cases[0].status,
        quick_junit::TestCaseStatus::NonSuccess {
            kind: quick_junit::NonSuccessKind::Failure,
            ..
        }
    ));

    // A baseline in which the divergent variant passed and `.code` was different.
    let mut base = results.clone();
    for c in &mut base.cases {
        if c.name == "undocumented_branch" {
            let t = c
                .variants
                .get_mut(&Variant::named("traced").unwrap())
                .unwrap();
            t.outcome = Outcome::Pass;
        }
        if c.name == "faithful" {
            let t = c
                .variants
                .get_mut(&Variant::named("scripted").unwrap())
                .unwrap();
            t.export.code = Some("def forward(self) -> None:\n  return None\n".into());
        }
    }
    let base_path = dir.path().join("base.json");
    base.write(&base_path).unwrap();
    let rendered = dir.path().join("rendered");
    let json = out.join("results.json");
    let (code, stdout, stderr) = harness(&[
        "report",
        json.to_str().unwrap(),
        "--baseline",
        base_path.to_str().unwrap(),
        "--out",
        rendered.to_str().unwrap(),
    ]);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}{stderr}");
    assert!(stdout.contains("1 new failures"), "{stdout}");
    assert!(stdout.contains("1 .code changes"), "{stdout}");
    let html = unescape(&std::fs::read_to_string(rendered.join("index.html")).unwrap());
    assert!(html.contains("New failures (1)"), "no regression section");
    assert!(html.contains("row-new-failure"));
    assert!(html.contains("scripted <code>.code</code> changed since the baseline"));
    assert!(html.contains("-def forward(self) -> None:"));
    assert!(
        !rendered.join("results.json").exists(),
        "one results file is not copied"
    );

    // Accept these results as the baseline: nothing is new against it.
    let accepted = dir.path().join("accepted.json");
    let (code, stdout, _) = harness(&[
        "report",
        json.to_str().unwrap(),
        "--baseline",
        accepted.to_str().unwrap(),
        "--save-baseline",
        "--out",
        rendered.to_str().unwrap(),
    ]);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}");
    let saved = Results::read(&accepted).unwrap();
    assert_eq!(saved.started_at, results.started_at);
    assert_eq!(
        saved.cases.iter().map(|c| &c.name).collect::<Vec<_>>(),
        results.cases.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    let (_, stdout, _) = harness(&[
        "report",
        json.to_str().unwrap(),
        "--baseline",
        accepted.to_str().unwrap(),
        "--out",
        rendered.to_str().unwrap(),
    ]);
    assert!(stdout.contains("0 new failures, 0 fixed"), "{stdout}");
    // A baseline that is not there is a harness error, not a silent pass.
    let (code, _, stderr) = harness(&[
        "report",
        json.to_str().unwrap(),
        "--baseline",
        dir.path().join("nowhere.json").to_str().unwrap(),
    ]);
    assert_eq!(code, i32::from(exit::HARNESS_ERROR), "{stderr}");

    // Several results files: one merged report and results.json; a case named again replaces
    // the earlier one.
    let (shipped_results, shipped_dir) = shipped();
    let merged_dir = dir.path().join("merged");
    let (code, stdout, stderr) = harness(&[
        "report",
        shipped_dir.join("results.json").to_str().unwrap(),
        json.to_str().unwrap(),
        json.to_str().unwrap(),
        "--out",
        merged_dir.to_str().unwrap(),
        "--no-baseline",
    ]);
    assert_eq!(code, i32::from(exit::DIVERGED), "{stdout}{stderr}");
    let merged = Results::read(&merged_dir.join("results.json")).unwrap();
    assert_eq!(merged.cases.len(), shipped_results.cases.len() + 4);
    let html = std::fs::read_to_string(merged_dir.join("index.html")).unwrap();
    assert_eq!(sections(&html).len(), merged.cases.len());

    // --format json: stdout is exactly the results document.
    let (code, stdout, _) = harness(&[
        "verify",
        gate.join("faithful.yaml").to_str().unwrap(),
        "--python",
        py.to_str().unwrap(),
        "--out",
        dir.path().join("json").to_str().unwrap(),
        "--format",
        "json",
        "--no-baseline",
    ]);
    assert_eq!(code, i32::from(exit::OK), "{stdout}");
    let doc: Results = serde_json::from_str(&stdout).expect("stdout is one results document");
    assert_eq!(doc.cases.len(), 1);
    assert_eq!(doc.cases[0].status, CaseStatus::Ran);
    assert!(!stdout.contains("PASS "), "human lines leaked: {stdout}");

    // The default baseline, reports/baseline.json under the working folder: accepted with
    // --save-baseline, then compared with on the next run without any flag.
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let faithful = gate.join("faithful.yaml");
    let verify_here = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            faithful.to_str().unwrap(),
            "--python",
            py.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        harness_in(&work, &args)
    };
    let (code, stdout, stderr) = verify_here(&["--save-baseline"]);
    assert_eq!(code, i32::from(exit::OK), "{stdout}{stderr}");
    assert!(
        stdout.contains("baseline: reports/baseline.json (accepted)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("against "),
        "there was no baseline yet: {stdout}"
    );
    let base = work.join("reports/baseline.json");
    let mut accepted = Results::read(&base).unwrap();
    // Pretend the baseline run was red: this run fixes it.
    accepted.cases[0]
        .variants
        .get_mut(&Variant::named("traced").unwrap())
        .unwrap()
        .outcome = Outcome::Fail;
    accepted.write(&base).unwrap();
    let (code, stdout, stderr) = verify_here(&[]);
    assert_eq!(code, i32::from(exit::OK), "{stdout}{stderr}");
    assert!(
        stdout.contains("against reports/baseline.json: 0 new failures, 1 fixed"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(work.join("reports/latest/index.html")).unwrap();
    assert!(html.contains("Fixed (1)") && html.contains("reg-fixed"));
    // --no-baseline ignores it.
    let (_, stdout, _) = verify_here(&["--no-baseline"]);
    assert!(!stdout.contains("against "), "{stdout}");
}

/// Chromium from Debian's package, if installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Run headless Chromium on a page; returns (stdout, stderr). Killed after a minute.
fn headless(browser: &Path, url: &str, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so a full pipe cannot stall the browser.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut so, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut se, &mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within a minute on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (t_out.join().unwrap(), t_err.join().unwrap())
}

/// The console messages Chromium logged (`...:CONSOLE...] "message", source: ...`).
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

/// Which rows of the matrix the page shows, by outcome, after its script ran.
fn visible_rows(dom: &str) -> Vec<(String, String)> {
    let row =
        regex::Regex::new(r#"<tr data-outcome="([a-z-]+)" data-search="([^"]*)"([^>]*)>"#).unwrap();
    row.captures_iter(dom)
        .filter(|c| !c[3].contains("hidden"))
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect()
}

#[test]
fn report_renders_in_headless_chromium_and_filters() {
    let Some(browser) = chromium() else {
        if std::env::var("HARNESS_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("HARNESS_REQUIRE_BROWSER=1 but no chromium on PATH");
        }
        eprintln!("SKIP report_renders_in_headless_chromium_and_filters: no chromium on PATH (apt-get install chromium; HARNESS_REQUIRE_BROWSER=1 makes this a failure)");
        return;
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let _ = std::fs::remove_dir_all(&out);
    let (results, _) = render_shipped(&out);
    let page = format!("file://{}", out.join("index.html").display());
    let total: usize = results.cases.iter().map(|c| c.variants.len()).sum();
    let xfail = results
        .cases
        .iter()
        .flat_map(|c| c.variants.values())
        .filter(|v| v.outcome == Outcome::Xfail)
        .count();
    assert!(xfail > 0 && xfail < total);

    // Unfiltered: every row shows (quiet ones in a closed fold), and the console holds only the
    // page's own ready line.
    let (dom, log) = headless(&browser, &page, &["--dump-dom"]);
    assert_eq!(visible_rows(&dom).len(), total, "{log}");
    assert!(
        dom.contains(r#"<details class="fold" id="passing">"#),
        "the fold is open"
    );
    let console = console_lines(&log);
    assert_eq!(
        console.len(),
        1,
        "console messages other than the ready line: {console:#?}"
    );
    assert!(
        console[0].contains(&format!(
            "report ready: {total} of {total} rows shown, filter all"
        )),
        "{console:?}"
    );

    // The outcome filter from the URL: only xfail rows and the cases holding one.
    let (dom, log) = headless(&browser, &format!("{page}#outcome=xfail"), &["--dump-dom"]);
    let rows = visible_rows(&dom);
    assert_eq!(rows.len(), xfail, "{log}");
    assert!(rows.iter().all(|(o, _)| o == "xfail"));
    assert!(dom.contains(&format!("{xfail} of {total} shown")));
    // The filter opens the fold of quiet rows when it holds an xfail one, else hides it.
    let quiet_xfail = results.cases.iter().any(|c| {
        c.variants.iter().any(|(v, r)| {
            r.outcome == Outcome::Xfail
                && harness::attention::warnings(c, *v, &str::to_string).is_empty()
        })
    });
    let fold = if quiet_xfail {
        r#"id="passing" open="">"#
    } else {
        r#"id="passing" hidden="">"#
    };
    assert!(dom.contains(fold), "{fold}");
    let console = console_lines(&log);
    assert!(
        console.len() == 1 && console[0].contains("filter xfail"),
        "{console:#?}"
    );
    let hidden_cases = regex::Regex::new(r#"<details class="case"[^>]*\bhidden\b"#).unwrap();
    let all_pass = results
        .cases
        .iter()
        .filter(|c| c.variants.values().all(|v| v.outcome != Outcome::Xfail))
        .count();
    assert_eq!(hidden_cases.find_iter(&dom).count(), all_pass);

    // Search by name.
    let (dom, _) = headless(&browser, &format!("{page}#q=arange"), &["--dump-dom"]);
    let rows = visible_rows(&dom);
    let arange: usize = results
        .cases
        .iter()
        .filter(|c| c.name.contains("arange"))
        .map(|c| c.variants.len())
        .sum();
    assert_eq!(rows.len(), arange);
    assert!(rows.iter().all(|(_, s)| s.contains("arange")));

    // A screenshot for people (and the CI artifact).
    let shot = repo().join("reports/report.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        png.len()
    );
}
