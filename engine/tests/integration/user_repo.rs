//! A team's own repository, outside the harness checkout, run with the documented commands:
//! `harness setup` (its venv gets the worker's packages and the team's extra requirement),
//! the team's release script (weights and shipped artifacts), `harness verify`, `--accept`, and
//! the cache after editing the weights and a helper module.
//!
//! The fixture is `tests/fixtures/user_repo`: a package under `src/` whose model file imports
//! a sibling relatively and a dependency (`tinyscale`, a pure-Python wheel in `vendor/`) that
//! only the team's `requirements-harness.txt` installs; cases load `source:` and `import:`
//! models, `model.weights` and `artifact:`. The venv layers on the harness's own (a `.pth` to its
//! site-packages), so `harness setup` finds torch installed and only adds what the team needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::results::Results;

use super::{fixtures, harness_bin, python, repo};

/// Copy a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The team's venv: a fresh one whose site-packages also sees the harness's (torch is large).
fn make_venv(repo_dir: &Path) {
    let status = Command::new(python())
        .args(["-m", "venv"])
        .arg(repo_dir.join(".venv"))
        .status()
        .unwrap();
    assert!(status.success(), "python -m venv failed");
    let purelib = |py: &Path| {
        let out = Command::new(py)
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ])
            .output()
            .unwrap();
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let own = purelib(&repo_dir.join(".venv/bin/python"));
    let base = purelib(&python());
    std::fs::write(
        own.join("harness_base.pth"),
        format!("{}\n", base.display()),
    )
    .unwrap();
}

/// `harness ARGS` in the team's repository, as a user runs it: no harness settings inherited.
fn harness(repo_dir: &Path, args: &[&str]) -> Output {
    Command::new(harness_bin())
        .args(args)
        .current_dir(repo_dir)
        .env_remove("HARNESS_PYTHON")
        .env_remove("HARNESS_COMMAND")
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn team_python(repo_dir: &Path, args: &[&str]) {
    let out = Command::new(repo_dir.join(".venv/bin/python"))
        .args(args)
        .current_dir(repo_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `case/variant -> outcome`, and the cases served from the cache.
fn verdicts(repo_dir: &Path) -> (BTreeMap<String, String>, Vec<String>) {
    let results = Results::read(&repo_dir.join("reports/latest/results.json")).unwrap();
    let mut outcomes = BTreeMap::new();
    for c in &results.cases {
        for (v, r) in &c.variants {
            outcomes.insert(format!("{}/{v}", c.name), format!("{:?}", r.outcome));
        }
    }
    let cached = results
        .cases
        .iter()
        .filter(|c| c.cached)
        .map(|c| c.name.clone())
        .collect();
    (outcomes, cached)
}

fn expect_verdicts(repo_dir: &Path, expect: &[(&str, &str)], cached: &[&str]) {
    let (outcomes, got_cached) = verdicts(repo_dir);
    let want: BTreeMap<String, String> = expect
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(outcomes, want);
    assert_eq!(got_cached, cached);
}

#[test]
fn a_team_repository_runs_with_its_own_venv_weights_and_artifacts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("team-repo");
    assert!(
        !dir.starts_with(repo()),
        "the team's repository is outside the checkout"
    );
    copy_tree(&fixtures().join("user_repo"), &dir);
    make_venv(&dir);

    let setup = harness(&dir, &["setup"]);
    assert!(setup.status.success(), "{}", text(&setup));
    assert!(
        text(&setup).contains(&format!("has torch {}", harness::TORCH_VERSION)),
        "{}",
        text(&setup)
    );
    team_python(&dir, &["-c", "import tinyscale"]);
    team_python(&dir, &["export.py"]);

    // A first run: every verdict, and every snapshot new, with the one command that accepts.
    let first = harness(&dir, &["verify"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let out = text(&first);
    assert!(out.contains("snapshots: 6 new"), "{out}");
    assert!(
        out.contains("accept them all with `harness verify --accept`"),
        "{out}"
    );
    assert!(dir
        .join("cases/snapshots/encoder__shipped.snap.new")
        .is_file());
    let all = [
        ("encoder/traced", "Pass"),
        ("encoder/scripted", "Pass"),
        ("encoder/shipped", "Pass"),
        ("gate/traced", "Xfail"),
        ("gate/scripted", "Pass"),
        ("gate/shipped", "Xfail"),
    ];
    expect_verdicts(&dir, &all, &[]);

    let accept = harness(&dir, &["verify", "--accept"]);
    assert_eq!(accept.status.code(), Some(0), "{}", text(&accept));
    assert!(dir.join("cases/snapshots/encoder__shipped.snap").is_file());
    let again = harness(&dir, &["verify"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    expect_verdicts(&dir, &all, &["encoder", "gate"]);

    // New weights, the old artifact: only the encoder runs again, and its shipped file (made
    // with the old weights) now diverges on the trace input itself.
    team_python(
        &dir,
        &[
            "-c",
            "from safetensors.torch import load_file, save_file\n\
             p = 'cases/weights/encoder.safetensors'\n\
             save_file({k: v * 2 for k, v in load_file(p).items()}, p)",
        ],
    );
    let weights = harness(&dir, &["verify"]);
    assert_eq!(weights.status.code(), Some(1), "{}", text(&weights));
    let mut after = all.map(|(k, v)| (k, v));
    after[2] = ("encoder/shipped", "Fail");
    expect_verdicts(&dir, &after, &["gate"]);
    assert!(
        text(&weights).contains("encoder/shipped: output_mismatch"),
        "{}",
        text(&weights)
    );

    // An edit to the helper both models import relatively: both run again, and both shipped
    // artifacts (made before it) diverge.
    let util = dir.join("src/acme/models/util.py");
    let code = std::fs::read_to_string(&util).unwrap();
    std::fs::write(&util, code.replace("* 1.0", "* 0.5")).unwrap();
    let helper = harness(&dir, &["verify"]);
    assert_eq!(helper.status.code(), Some(1), "{}", text(&helper));
    after[5] = ("gate/shipped", "Fail");
    expect_verdicts(&dir, &after, &[]);
}

#[test]
fn case_file_paths_and_project_roots_resolve_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("team-repo");
    copy_tree(&fixtures().join("user_repo"), &dir);
    // A case in a subfolder naming a model outside its folder (under the project's roots) and a
    // kwargs file relative to itself; a weights file that does not fit; a file that is not
    // TorchScript shipped as the artifact.
    std::fs::create_dir_all(dir.join("cases/more")).unwrap();
    std::fs::write(dir.join("cases/more/vocab.txt"), "a\nb\nc\n").unwrap();
    let status = Command::new(python())
        .current_dir(&dir)
        .args([
            "-c",
            "import torch\n\
             torch.save({'proj.weight': torch.zeros(3, 3)}, 'cases/more/wrong.pt')\n\
             torch.save({'w': torch.zeros(2)}, 'cases/more/not_torchscript.pt')",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        dir.join("src/acme/models/vocab.py"),
        "import torch\n\n\nclass Vocab(torch.nn.Module):\n    def __init__(self, path: str) -> None:\n        super().__init__()\n        self.n = len(open(path).read().split())\n\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        return x * self.n\n",
    )
    .unwrap();
    let case = |name: &str, extra: &str| {
        std::fs::write(
            dir.join(format!("cases/more/{name}.yaml")),
            format!(
                "model:\n  source: ../../src/acme/models/vocab.py\n  entry: Vocab\n  kwargs: {{path: vocab.txt}}\n{extra}inputs:\n  - {{name: x, shape: [3]}}\n"
            ),
        )
        .unwrap();
    };
    case("vocab", "");
    case("wrong_weights", "  weights: wrong.pt\n");
    case("not_torchscript", "artifact: not_torchscript.pt\n");
    let out = Command::new(harness_bin())
        .args(["verify", "cases/more", "--no-snapshots"])
        .arg("--python")
        .arg(python())
        .current_dir(&dir)
        .env_remove("HARNESS_COMMAND")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("PASS   vocab/traced"), "{all}");
    assert!(
        all.contains(
            "does not fit Vocab (unexpected keys: proj.weight); set `model.weights_strict: false`"
        ),
        "{all}"
    );
    assert!(
        all.contains("not_torchscript/shipped: artifact_incompatible"),
        "{all}"
    );
}
