//! `.code` snapshots: the reviewable form of what will run in production, and the
//! traced-versus-scripted diff.
//!
//! Each variant's TorchScript `.code` (with the values of the tensor constants it names, and the
//! code of every submodule it calls, which `.code` alone does not show) is normalized (`___torch_mangle_N` names, the worker's
//! `<stem>_2` module names, absolute and temporary paths, source-range comments, memory
//! addresses, trailing whitespace) so two runs on two machines give the same text, then compared
//! with the stored snapshot `<dir>/<case>__<variant>.snap`. The files are in insta's format (a
//! YAML header with `source`, `expression` and `info` {case, variant, torch, model}, then the
//! body) and are read back with insta's own parser, so `cargo insta review` / `cargo insta
//! accept` work on them: a pending change is written next to the snapshot as `.snap.new`, as
//! insta does. Snapshots are written only in [`Mode::Accept`]; in [`Mode::ReadOnly`] (CI)
//! nothing is written, not even `.snap.new`. Diffs are `similar` unified diffs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;

use crate::case::Variant;
use crate::results::ModuleCode;
use crate::results::{SnapshotInfo, SnapshotState};

/// What a run may write into the snapshot folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Compare; write a new or changed snapshot as `.snap.new` for review.
    Check,
    /// Compare; write new and changed snapshots as `.snap` (`--accept`).
    Accept,
    /// Compare only; write nothing (CI).
    ReadOnly,
}

/// Where snapshots live and what may be written there.
#[derive(Debug, Clone)]
pub struct Policy {
    pub dir: PathBuf,
    pub mode: Mode,
}

/// Is this a CI run? The same rule as insta's: `CI` set to anything but `""`, `0` or `false`,
/// or `TF_BUILD` set.
pub fn is_ci() -> bool {
    match std::env::var("CI").ok().as_deref() {
        Some("") | Some("0") | Some("false") => false,
        None => std::env::var_os("TF_BUILD").is_some(),
        Some(_) => true,
    }
}

/// What is not meaningful in a `.code` text, for one case.
#[derive(Debug, Clone, Default)]
pub struct Normalizer {
    /// Absolute folders replaced by a placeholder (longest first): `(folder, placeholder)`.
    roots: Vec<(String, String)>,
    /// The stem of the case's model file: the worker names a second file with the same stem
    /// `<stem>_2`, which shows in qualified names (`__torch__.<stem>_2.Out`).
    model_stem: Option<String>,
}

impl Normalizer {
    /// `case_dir` becomes `<case_dir>`, `work_dir` (the current folder) `<cwd>`.
    pub fn new(case_dir: Option<&Path>, work_dir: Option<&Path>, model_stem: Option<&str>) -> Self {
        let mut roots = Vec::new();
        for (dir, name) in [(case_dir, "<case_dir>"), (work_dir, "<cwd>")] {
            let Some(dir) = dir else { continue };
            for d in [Some(dir.to_path_buf()), dir.canonicalize().ok()]
                .into_iter()
                .flatten()
            {
                let s = d.display().to_string();
                if d.is_absolute() && s.len() > 1 && !roots.iter().any(|(r, _)| r == &s) {
                    roots.push((s, name.to_string()));
                }
            }
        }
        roots.sort_by_key(|(r, _)| std::cmp::Reverse(r.len()));
        Normalizer {
            roots,
            model_stem: model_stem.map(str::to_string),
        }
    }

    /// The normalized text: LF line ends, no trailing whitespace, no trailing blank lines.
    pub fn normalize(&self, code: &str) -> String {
        static RE: OnceLock<[Regex; 5]> = OnceLock::new();
        let [comment, mangle, path, tmp, addr] = RE.get_or_init(|| {
            [
                // A source-range comment: `# /path/to/file.py:54:0` at a line's end.
                Regex::new(r"(?m)[ \t]*#[ \t]*\S+:\d+:\d+[ \t]*$").unwrap(),
                Regex::new(r"___torch_mangle_\d+").unwrap(),
                // An absolute path of two or more parts: only its file name is kept.
                Regex::new(r#"(^|[\s"'(\[{=,:<])(?:/[\w.+@~-]+)+/([\w.+@~-]+)"#).unwrap(),
                Regex::new(r"\b(?:tmp[.A-Za-z0-9_]{6,}|harness-run-[A-Za-z0-9_]+)\b").unwrap(),
                Regex::new(r"\b0x[0-9a-fA-F]{6,}\b").unwrap(),
            ]
        });
        let mut s = code.replace("\r\n", "\n");
        for (root, name) in &self.roots {
            s = s.replace(&format!("{root}/"), &format!("{name}/"));
        }
        let s = comment.replace_all(&s, "");
        let s = mangle.replace_all(&s, "___torch_mangle_N");
        let s = path.replace_all(&s, "${1}<path>/${2}");
        let s = tmp.replace_all(&s, "<tmp>");
        let mut s = addr.replace_all(&s, "0x<addr>").into_owned();
        if let Some(stem) = &self.model_stem {
            let re = Regex::new(&format!(r"__torch__\.{}_\d+\b", regex::escape(stem)))
                .expect("an escaped stem is a valid pattern");
            s = re
                .replace_all(&s, format!("__torch__.{stem}").as_str())
                .into_owned();
        }
        let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
        lines.join("\n").trim_end().to_string()
    }
}

/// What is snapshotted and diffed for a variant: its normalized `.code` and the values of the
/// tensor constants it names (`CONSTANTS.c0`, which `.code` does not show), then the same for
/// each submodule it calls (a submodule with the same text as an earlier one is named only).
pub fn code_text(
    normalizer: &Normalizer,
    code: &str,
    constants: &Constants,
    modules: &[ModuleCode],
) -> String {
    let mut text = module_text(normalizer, code, constants);
    let mut seen: Vec<(String, &str)> = Vec::new();
    for m in modules {
        let body = module_text(normalizer, &m.code, &m.constants);
        match seen.iter().find(|(b, _)| *b == body) {
            Some((_, first)) => {
                text.push_str(&format!("\n\n# module {}: the code of {first}", m.name))
            }
            None => {
                text.push_str(&format!("\n\n# module {}\n{body}", m.name));
                seen.push((body, &m.name));
            }
        }
    }
    text
}

type Constants = std::collections::BTreeMap<String, String>;

fn module_text(normalizer: &Normalizer, code: &str, constants: &Constants) -> String {
    let mut text = normalizer.normalize(code);
    if !constants.is_empty() {
        text.push_str("\n\n# CONSTANTS");
        for (name, value) in constants {
            let value = normalizer.normalize(value).replace('\n', " ");
            text.push_str(&format!("\n# {name} = {value}"));
        }
    }
    text
}

/// A unified diff of `old` and `new` (`--- a` / `+++ b`, three lines of context); empty when
/// they are the same.
pub fn unified_diff(old: &str, new: &str, a: &str, b: &str) -> String {
    if old == new {
        return String::new();
    }
    // Both sides end with a newline so the last line diffs as a line, not a missing newline.
    let old = format!("{}\n", old.trim_end_matches('\n'));
    let new = format!("{}\n", new.trim_end_matches('\n'));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(a, b)
        .to_string()
}

/// The YAML header of a `.snap` file, in insta's field names and order.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// The case file, relative to the workspace when it is inside it, else its file name.
    pub source: String,
    /// How the body was made.
    pub expression: String,
    pub info: Info,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub case: String,
    pub variant: Variant,
    pub torch: String,
    /// `models/tutorial.py:MyCell`
    pub model: String,
    /// The device the code was made on when not the CPU (`cuda`): a trace records it, so its
    /// snapshot is another file (`<case>__<variant>.cuda.snap`).
    pub device: Option<String>,
}

impl Header {
    /// `root`: the workspace (see [`workspace_root`]).
    pub fn new(
        case: &str,
        case_file: &Path,
        root: Option<&Path>,
        variant: Variant,
        torch: &str,
        model: &str,
    ) -> Self {
        Header {
            source: source_path(case_file, root),
            expression: variant.def().snapshot_expression.to_string(),
            info: Info {
                case: case.to_string(),
                variant,
                torch: torch.to_string(),
                model: model.to_string(),
                device: None,
            },
        }
    }

    /// The same header for code made on `device` (`None` or `cpu`: the CPU's snapshot).
    pub fn on_device(mut self, device: Option<&str>) -> Self {
        self.info.device = device
            .map(|d| d.split(':').next().unwrap_or(d).to_string())
            .filter(|d| d != "cpu");
        self
    }
}

/// The Cargo workspace the snapshot folder belongs to (the nearest ancestor holding
/// `Cargo.lock`), as insta's `source:` paths are relative to it; `None` outside one.
pub fn workspace_root(snapshot_dir: &Path) -> Option<PathBuf> {
    let abs = std::env::current_dir().ok()?.join(snapshot_dir);
    // The folder may not exist yet: start from its nearest existing ancestor.
    let existing = abs.ancestors().find_map(|a| a.canonicalize().ok())?;
    existing
        .ancestors()
        .find(|a| a.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
}

/// The case file as a `source:` value that is the same on every machine: relative to the
/// workspace when it is inside it, else its file name.
fn source_path(file: &Path, root: Option<&Path>) -> String {
    let inside = file
        .canonicalize()
        .ok()
        .zip(root)
        .and_then(|(f, r)| f.strip_prefix(r).ok().map(Path::to_path_buf));
    let path = inside.unwrap_or_else(|| PathBuf::from(file.file_name().unwrap_or_default()));
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A whole `.snap` file: `---`, the YAML header, `---`, the body, a final newline. The header is
/// written as insta writes it (the same fields, order and quoting), so a snapshot accepted with
/// `--accept` and one accepted with `cargo insta accept` are the same bytes.
pub fn render(header: &Header, body: &str) -> String {
    let i = &header.info;
    let device = i
        .device
        .as_deref()
        .map(|d| format!("  device: {}\n", yaml_str(d)))
        .unwrap_or_default();
    format!(
        "---\nsource: {}\nexpression: {}\ninfo:\n  case: {}\n  variant: {}\n  torch: {}\n  model: {}\n{device}---\n{}\n",
        yaml_str(&header.source),
        yaml_str(&header.expression),
        yaml_str(&i.case),
        yaml_str(i.variant.as_str()),
        yaml_str(&i.torch),
        yaml_str(&i.model),
        body.trim_end()
    )
}

/// A YAML string scalar, double-quoted exactly when insta's emitter quotes it.
fn yaml_str(s: &str) -> String {
    const KEYWORDS: [&str; 22] = [
        "yes", "Yes", "YES", "no", "No", "NO", "True", "TRUE", "true", "False", "FALSE", "false",
        "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
    ];
    let quote = s.is_empty()
        || s.starts_with(' ')
        || s.ends_with(' ')
        || s.starts_with(['&', '*', '?', '|', '-', '<', '>', '=', '!', '%', '@', '.'])
        || s.contains(|c: char| {
            ":{}[],#`\"'\\\t\n\r".contains(c) || (c.is_control() && c != '\x1b')
        })
        || KEYWORDS.contains(&s)
        || s.starts_with("0x")
        || s.parse::<i64>().is_ok()
        || s.parse::<f64>().is_ok();
    if quote {
        serde_json::to_string(s).expect("a string serializes")
    } else {
        s.to_string()
    }
}

/// The stored snapshot's body, read with insta's parser (normalized as insta compares it);
/// `None` when there is no file.
pub fn read(path: &Path) -> Result<Option<String>, String> {
    if !path.exists() {
        return Ok(None);
    }
    let snap = insta::Snapshot::from_file(path)
        .map_err(|e| format!("{}: not an insta snapshot: {e}", path.display()))?;
    let text = snap
        .as_text()
        .ok_or_else(|| format!("{}: a binary snapshot, expected text", path.display()))?;
    Ok(Some(text.to_string()))
}

/// `<dir>/<case>__<variant>.snap`: insta's `<module>__<name>.snap`; code made on another device
/// than the CPU: `<case>__<variant>.<device>.snap`.
pub fn snap_path(dir: &Path, case: &str, variant: Variant, device: Option<&str>) -> PathBuf {
    match device {
        Some(d) => dir.join(format!("{case}__{variant}.{d}.snap")),
        None => dir.join(format!("{case}__{variant}.snap")),
    }
}

/// Where insta and cargo-insta look for a pending change to `snap`.
pub fn pending_path(snap: &Path) -> PathBuf {
    snap.with_extension("snap.new")
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", path.display());
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(&e))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(|e| err(&e))?;
    tmp.persist(path).map_err(|e| err(&e))?;
    Ok(())
}

fn remove(path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove {}: {e}", path.display())),
    }
}

/// Compare one variant's normalized code (`None`: it produced none) with its stored snapshot,
/// writing what `policy.mode` allows. Errors are unreadable or unwritable files.
pub fn check(policy: &Policy, header: &Header, body: Option<&str>) -> Result<SnapshotInfo, String> {
    let i = &header.info;
    let path = snap_path(&policy.dir, &i.case, i.variant, i.device.as_deref());
    let pending = pending_path(&path);
    let shown = path.display().to_string();
    let info = |state, diff| SnapshotInfo {
        state,
        path: shown.clone(),
        diff,
    };
    let Some(body) = body else {
        return Ok(info(SnapshotState::Skipped, None));
    };
    let body = body.trim_end();
    let stored = read(&path)?;
    let writes = policy.mode != Mode::ReadOnly;
    match stored {
        Some(old) if old == body => {
            if writes {
                remove(&pending)?;
            }
            Ok(info(SnapshotState::Matched, None))
        }
        stored => {
            let diff = stored
                .as_deref()
                .map(|old| unified_diff(old, body, "stored", "new"));
            let text = render(header, body);
            let state = match policy.mode {
                Mode::Accept => {
                    write(&path, &text)?;
                    remove(&pending)?;
                    SnapshotState::Accepted
                }
                Mode::Check => {
                    write(&pending, &text)?;
                    if stored.is_some() {
                        SnapshotState::Changed
                    } else {
                        SnapshotState::New
                    }
                }
                Mode::ReadOnly if stored.is_some() => SnapshotState::Changed,
                Mode::ReadOnly => SnapshotState::New,
            };
            Ok(info(state, diff))
        }
    }
}

/// A unified diff's lines with ANSI colours: additions green, removals red, hunks cyan.
pub fn paint_diff(diff: &str, color: bool) -> Vec<String> {
    diff.lines()
        .map(|l| {
            let code = if l.starts_with("+++") || l.starts_with("---") {
                "1"
            } else if l.starts_with('+') {
                "32"
            } else if l.starts_with('-') {
                "31"
            } else if l.starts_with("@@") {
                "36"
            } else {
                ""
            };
            if color && !code.is_empty() {
                format!("\x1b[{code}m{l}\x1b[0m")
            } else {
                l.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `input` normalizes to `expect` (case folder `/home/ana/repo/cases`, cwd `/home/ana/repo`,
    /// model stem `tutorial`).
    #[track_caller]
    fn check_norm(input: &str, expect: &str) {
        let n = Normalizer {
            roots: vec![
                ("/home/ana/repo/cases".into(), "<case_dir>".into()),
                ("/home/ana/repo".into(), "<cwd>".into()),
            ],
            model_stem: Some("tutorial".into()),
        };
        assert_eq!(n.normalize(input), expect);
        assert_eq!(
            n.normalize(expect),
            expect,
            "normalizing twice changes nothing"
        );
    }

    #[test]
    fn normalization() {
        let cases = [
            // Unchanged: ordinary code, including a torch.device constant and integers.
            (
                "def forward(self,\n    x: Tensor) -> Tensor:\n  return torch.arange(4, device=torch.device(\"cpu\"))",
                "def forward(self,\n    x: Tensor) -> Tensor:\n  return torch.arange(4, device=torch.device(\"cpu\"))",
            ),
            // CRLF, trailing whitespace, trailing blank lines.
            ("a = 1  \r\nb = 2\r\n\r\n\n", "a = 1\nb = 2"),
            // Mangled names.
            (
                "x: __torch__.tutorial.___torch_mangle_17.MyCell",
                "x: __torch__.tutorial.___torch_mangle_N.MyCell",
            ),
            // The worker's second module with the same stem; other modules are kept.
            (
                "_0 = __torch__.tutorial_2.Out(y)\n_1 = __torch__.other_2.Out(y)",
                "_0 = __torch__.tutorial.Out(y)\n_1 = __torch__.other_2.Out(y)",
            ),
            // Source-range comments.
            (
                "%y : Tensor = aten::linear(%x), scope: __module.fc # /usr/lib/torch/nn/linear.py:134:0",
                "%y : Tensor = aten::linear(%x), scope: __module.fc",
            ),
            // Known folders become placeholders; other absolute paths keep their file name.
            (
                "path = \"/home/ana/repo/cases/models/m.py\"",
                "path = \"<case_dir>/models/m.py\"",
            ),
            ("path = \"/home/ana/repo/x.txt\"", "path = \"<cwd>/x.txt\""),
            ("f = \"/opt/data/weights.bin\"", "f = \"<path>/weights.bin\""),
            // Temporary folder names and memory addresses.
            (
                "d = \"tmpa8Zq_9x/s0\"; w = \"harness-run-Xy12ab\"",
                "d = \"<tmp>/s0\"; w = \"<tmp>\"",
            ),
            ("obj at 0x7f3a2b1c9d40", "obj at 0x<addr>"),
            // Short hex constants and division-free code are left alone.
            ("mask = 0xff\nreturn torch.div(a, b)", "mask = 0xff\nreturn torch.div(a, b)"),
        ];
        for (input, expect) in cases {
            check_norm(input, expect);
        }
    }

    #[test]
    fn constants_follow_the_code() {
        let n = Normalizer::default();
        let mut constants = std::collections::BTreeMap::new();
        assert_eq!(code_text(&n, "return x  \n", &constants, &[]), "return x");
        constants.insert("c1".to_string(), "tensor(int64, [], [3])".to_string());
        constants.insert("c0".to_string(), "2".to_string());
        assert_eq!(
            code_text(&n, "return torch.mul(x, CONSTANTS.c0)\n", &constants, &[]),
            "return torch.mul(x, CONSTANTS.c0)\n\n# CONSTANTS\n# c0 = 2\n# c1 = tensor(int64, [], [3])"
        );
        // Submodules follow, each once.
        let module = |name: &str, code: &str| ModuleCode {
            name: name.into(),
            code: code.into(),
            constants: Default::default(),
        };
        let linear = "def forward(self,\n    input: Tensor) -> Tensor:\n  return torch.linear(input, self.weight, self.bias)\n";
        assert_eq!(
            code_text(
                &n,
                "return (fc2).forward((fc1).forward(x, ), )",
                &Default::default(),
                &[module("fc1", linear), module("fc2", linear), module("act", "return x")]
            ),
            "return (fc2).forward((fc1).forward(x, ), )\n\n# module fc1\ndef forward(self,\n    input: Tensor) -> Tensor:\n  return torch.linear(input, self.weight, self.bias)\n\n# module fc2: the code of fc1\n\n# module act\nreturn x"
        );
    }

    #[test]
    fn the_same_code_in_two_folders_normalizes_the_same() {
        let code = |root: &str| {
            format!(
                "def forward(self, x: Tensor) -> __torch__.m.___torch_mangle_{}.Out:\n  # {root}/m.py:3:0\n  return __torch__.m.Out(x)\n",
                root.len()
            )
        };
        let a = Normalizer::new(Some(Path::new("/tmp/tmpAAAAAAAA")), None, Some("m"));
        let b = Normalizer::new(Some(Path::new("/var/tmp/other/dir")), None, Some("m"));
        assert_eq!(
            a.normalize(&code("/tmp/tmpAAAAAAAA")),
            b.normalize(&code("/var/tmp/other/dir"))
        );
    }

    #[track_caller]
    fn check_diff(old: &str, new: &str, expect: &str) {
        assert_eq!(unified_diff(old, new, "traced", "scripted"), expect);
    }

    #[test]
    fn diffs() {
        check_diff("a\nb", "a\nb", "");
        check_diff(
            "return torch.neg(x)",
            "if c:\n  _0 = x\nelse:\n  _0 = torch.neg(x)",
            "--- traced\n+++ scripted\n@@ -1 +1,4 @@\n-return torch.neg(x)\n+if c:\n+  _0 = x\n+else:\n+  _0 = torch.neg(x)\n",
        );
        // A trailing newline on one side only is not a difference.
        check_diff("a\n", "a", "");
        let painted = paint_diff("--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n z", true);
        assert_eq!(painted[3], "\x1b[31m-x\x1b[0m");
        assert_eq!(painted[4], "\x1b[32m+y\x1b[0m");
        assert_eq!(painted[5], " z");
        assert_eq!(paint_diff("-x", false), vec!["-x"]);
    }

    fn header(case: &str, variant: Variant) -> Header {
        Header::new(
            case,
            Path::new("/nowhere/cases/my_cell.yaml"),
            None,
            variant,
            "2.13.0",
            "models/tutorial.py:MyCell",
        )
    }

    #[test]
    fn sources_are_relative_to_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path().canonicalize().unwrap();
        std::fs::write(root.join("Cargo.lock"), "").unwrap();
        std::fs::create_dir_all(root.join("cases")).unwrap();
        std::fs::create_dir_all(root.join("harness")).unwrap();
        let case = root.join("cases/a.yaml");
        std::fs::write(&case, "").unwrap();
        // The snapshot folder need not exist yet.
        assert_eq!(
            workspace_root(&root.join("harness/snapshots")),
            Some(root.clone())
        );
        assert_eq!(source_path(&case, Some(&root)), "cases/a.yaml");
        let outside = tempfile::tempdir().unwrap();
        let other = outside.path().join("b.yaml");
        std::fs::write(&other, "").unwrap();
        assert_eq!(source_path(&other, Some(&root)), "b.yaml");
        assert_eq!(source_path(&case, None), "a.yaml");
    }

    #[test]
    fn yaml_quoting_follows_insta() {
        let cases = [
            ("cases/my_cell.yaml", "cases/my_cell.yaml"),
            ("2.13.0", "2.13.0"),
            ("2.13", "\"2.13\""),
            ("7", "\"7\""),
            ("models/m.py:Net", "\"models/m.py:Net\""),
            ("f(a, b)", "\"f(a, b)\""),
            ("true", "\"true\""),
            ("-x", "\"-x\""),
            ("", "\"\""),
            ("it's", "\"it's\""),
            ("traced", "traced"),
        ];
        for (input, expect) in cases {
            assert_eq!(yaml_str(input), expect, "{input}");
        }
    }

    #[test]
    fn files_round_trip_through_insta() {
        let dir = tempfile::tempdir().unwrap();
        let h = header("my_cell", Variant::named("traced").unwrap());
        let body = "def forward(self,\n    x: Tensor) -> Tensor:\n  return x";
        let path = snap_path(
            dir.path(),
            "my_cell",
            Variant::named("traced").unwrap(),
            None,
        );
        std::fs::write(&path, render(&h, body)).unwrap();
        // Byte for byte what `cargo insta accept` writes for this snapshot.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "---\nsource: my_cell.yaml\nexpression: \"torch.jit.trace(model, trace_input).code_with_constants\"\ninfo:\n  case: my_cell\n  variant: traced\n  torch: 2.13.0\n  model: \"models/tutorial.py:MyCell\"\n---\ndef forward(self,\n    x: Tensor) -> Tensor:\n  return x\n"
        );
        let snap = insta::Snapshot::from_file(&path).unwrap();
        assert_eq!(snap.metadata().source(), Some("my_cell.yaml"));
        assert_eq!(
            snap.metadata().expression(),
            Some("torch.jit.trace(model, trace_input).code_with_constants")
        );
        assert_eq!(snap.module_name(), "my_cell");
        assert_eq!(snap.snapshot_name(), Some("traced"));
        assert_eq!(read(&path).unwrap().as_deref(), Some(body));
        assert_eq!(read(&dir.path().join("absent.snap")).unwrap(), None);
    }

    #[test]
    fn states_and_writes_per_mode() {
        let dir = tempfile::tempdir().unwrap();
        let policy = |mode| Policy {
            dir: dir.path().join("snaps"),
            mode,
        };
        let h = header("c", Variant::named("scripted").unwrap());
        let snap = snap_path(
            &dir.path().join("snaps"),
            "c",
            Variant::named("scripted").unwrap(),
            None,
        );
        let pending = pending_path(&snap);
        let state = |mode, body: Option<&str>| check(&policy(mode), &h, body).unwrap();

        // Nothing stored: CI writes nothing, a check writes .snap.new, accept writes .snap.
        assert_eq!(state(Mode::ReadOnly, Some("a")).state, SnapshotState::New);
        assert!(!dir.path().join("snaps").exists());
        assert_eq!(state(Mode::Check, Some("a")).state, SnapshotState::New);
        assert!(pending.is_file() && !snap.exists());
        assert_eq!(
            state(Mode::Accept, Some("a")).state,
            SnapshotState::Accepted
        );
        assert!(snap.is_file() && !pending.exists());
        assert_eq!(
            state(Mode::ReadOnly, Some("a\n")).state,
            SnapshotState::Matched
        );

        // A change: its diff, old to new.
        let changed = state(Mode::Check, Some("b"));
        assert_eq!(changed.state, SnapshotState::Changed);
        assert_eq!(
            changed.diff.as_deref(),
            Some("--- stored\n+++ new\n@@ -1 +1 @@\n-a\n+b\n")
        );
        assert!(pending.is_file());
        assert_eq!(read(&snap).unwrap().as_deref(), Some("a"));
        // Back to the stored code: the stale .snap.new goes.
        assert_eq!(state(Mode::Check, Some("a")).state, SnapshotState::Matched);
        assert!(!pending.exists());
        let accepted = state(Mode::Accept, Some("b"));
        assert_eq!(accepted.state, SnapshotState::Accepted);
        assert!(accepted.diff.is_some());
        assert_eq!(read(&snap).unwrap().as_deref(), Some("b"));

        // No code: skipped, nothing touched.
        let skipped = state(Mode::Accept, None);
        assert_eq!(skipped.state, SnapshotState::Skipped);
        assert_eq!(read(&snap).unwrap().as_deref(), Some("b"));
        assert_eq!(skipped.path, snap.display().to_string());

        // Code made on CUDA has its own snapshot beside the CPU's, the device in its header.
        let on_cuda = header("c", Variant::named("scripted").unwrap()).on_device(Some("cuda:0"));
        let cuda = check(&policy(Mode::Accept), &on_cuda, Some("cuda code")).unwrap();
        assert_eq!(cuda.state, SnapshotState::Accepted);
        assert!(
            cuda.path.ends_with("c__scripted.cuda.snap"),
            "{}",
            cuda.path
        );
        let text = std::fs::read_to_string(&cuda.path).unwrap();
        assert!(text.contains("  device: cuda\n---\n"), "{text}");
        assert_eq!(read(&snap).unwrap().as_deref(), Some("b"));
        let on_cpu = header("c", Variant::named("scripted").unwrap()).on_device(Some("cpu"));
        assert_eq!(on_cpu.info.device, None);

        // A file insta cannot read is an error naming it.
        std::fs::write(&snap, "---\nsource: [unclosed\n---\nx\n").unwrap();
        let err = check(&policy(Mode::Check), &h, Some("x")).unwrap_err();
        assert!(err.contains("not an insta snapshot"), "{err}");
    }
}
