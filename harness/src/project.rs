//! The project file, `harness.toml`: where a team's cases, Python, import roots, snapshots and
//! reports are, and which variants its cases check, so that `harness verify` in their
//! repository needs no arguments.
//!
//! The nearest `harness.toml` at or above the working folder (or `--project FILE`) is read; its
//! paths are relative to its own folder, the project root. Without one, the working folder is
//! the root and every setting has its default. The command line overrides the file, and
//! `HARNESS_PYTHON` overrides its interpreter (as an environment variable overrides a config
//! file in cargo).

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::variant::Variant;

/// The project file's name.
pub const FILE_NAME: &str = "harness.toml";

/// `harness.toml` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    /// Case files and folders `verify` runs when given none (default `["cases"]`).
    cases: Option<Vec<String>>,
    /// The Python interpreter with torch (a path).
    python: Option<String>,
    /// A virtual environment: its `bin/python` is the interpreter (`harness setup` creates it).
    venv: Option<String>,
    /// Folders put on the worker's `sys.path`: `import:` modules and the packages of `source:`
    /// files are found there, and model files may live anywhere under them.
    roots: Option<Vec<String>>,
    /// Where the `.code` snapshots are (default `snapshots/` in the first cases folder).
    snapshots: Option<String>,
    /// The output folder (default `reports/latest`).
    out: Option<String>,
    /// The baseline results (default `reports/baseline.json`).
    baseline: Option<String>,
    /// Requirements files `harness setup` installs into the interpreter's environment.
    requirements: Option<Vec<String>>,
    /// The variants of every case that does not list its own (default: the variants marked
    /// `default`), with their places in the file for errors.
    variants: Option<Spanned<Vec<Spanned<String>>>>,
    /// Where cases that name no `check.device` run: `cpu` (default), `cuda` or `auto`.
    device: Option<crate::case::DeviceChoice>,
}

/// A project's settings, resolved: every path relative to the working folder or absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The folder of the project file (the working folder without one).
    pub root: PathBuf,
    /// The project file, when there is one.
    pub file: Option<PathBuf>,
    pub cases: Vec<PathBuf>,
    /// The interpreter the file names (`python`, or `venv`'s), if any.
    pub python: Option<PathBuf>,
    /// The virtual environment the file names, if any.
    pub venv: Option<PathBuf>,
    pub roots: Vec<PathBuf>,
    pub snapshots: PathBuf,
    pub out: PathBuf,
    pub baseline: PathBuf,
    pub requirements: Vec<PathBuf>,
    /// The variants of every case that does not list its own (`None`: the defaults).
    pub variants: Option<Vec<Variant>>,
    /// Where cases that name no device run (`None`: the CPU).
    pub device: Option<crate::case::DeviceChoice>,
}

/// The nearest project file at or above `from`.
pub fn find(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|f| f.is_file())
}

impl Project {
    /// The project of `file` (`--project`), else of the nearest project file above the working
    /// folder, else the defaults at the working folder.
    pub fn discover(file: Option<&Path>) -> anyhow::Result<Project> {
        let cwd = std::env::current_dir()?;
        match file.map(Path::to_path_buf).or_else(|| find(&cwd)) {
            Some(f) => Project::load(&f, &cwd),
            None => Ok(Project::resolve(&cwd, &cwd, None, ProjectFile::default())),
        }
    }

    /// Read a project file; `cwd` is the working folder paths are made relative to.
    pub fn load(file: &Path, cwd: &Path) -> anyhow::Result<Project> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            anyhow::anyhow!("{}: cannot read the project file: {e}", file.display())
        })?;
        let mut spec: ProjectFile =
            toml::from_str(&text).map_err(|e| toml_error(file, &text, e.span(), e.message()))?;
        let variants = spec
            .variants
            .take()
            .map(|list| chosen_variants(&list))
            .transpose()
            .map_err(|(span, message)| toml_error(file, &text, Some(span), &message))?;
        let file = cwd.join(file);
        let root = file.parent().unwrap_or(cwd).to_path_buf();
        Ok(Project {
            variants,
            ..Project::resolve(&root, cwd, Some(file), spec)
        })
    }

    fn resolve(root: &Path, cwd: &Path, file: Option<PathBuf>, spec: ProjectFile) -> Project {
        let at = |p: &str| relative_to(cwd, &root.join(p));
        let cases: Vec<PathBuf> = spec
            .cases
            .unwrap_or_else(|| vec!["cases".into()])
            .iter()
            .map(|c| at(c))
            .collect();
        let venv = spec.venv.as_deref().map(at);
        let python = spec
            .python
            .as_deref()
            .map(at)
            .or_else(|| venv.as_ref().map(|v| v.join("bin/python")));
        let snapshots = match &spec.snapshots {
            Some(s) => at(s),
            None => cases
                .first()
                .map(|c| {
                    if c.extension().is_some() {
                        c.with_file_name("snapshots")
                    } else {
                        c.join("snapshots")
                    }
                })
                .unwrap_or_else(|| at("snapshots")),
        };
        Project {
            root: root.to_path_buf(),
            file,
            cases,
            python,
            venv,
            roots: spec
                .roots
                .unwrap_or_default()
                .iter()
                .map(|r| root.join(r))
                .collect(),
            snapshots,
            out: at(spec.out.as_deref().unwrap_or("reports/latest")),
            baseline: at(spec.baseline.as_deref().unwrap_or("reports/baseline.json")),
            requirements: spec
                .requirements
                .unwrap_or_default()
                .iter()
                .map(|r| at(r))
                .collect(),
            variants: None,
            device: spec.device,
        }
    }

    /// The interpreter to use: `--python`, else `HARNESS_PYTHON`, else the project's, else
    /// `.venv/bin/python` in the project root when it exists, else `python3`.
    pub fn interpreter(&self, flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os("HARNESS_PYTHON").map(PathBuf::from))
            .or_else(|| self.python.clone())
            .or_else(|| {
                let venv = self.root.join(".venv/bin/python");
                venv.exists().then_some(venv)
            })
            .unwrap_or_else(|| PathBuf::from("python3"))
    }
}

/// `path` relative to `cwd` when it is under it (so messages stay short), else as it is.
fn relative_to(cwd: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(cwd) {
        Ok(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
        Ok(rel) => rel.to_path_buf(),
        Err(_) => path.to_path_buf(),
    }
}

/// The project's `variants`, checked: an error is the place of the name (or the list) at fault
/// and what is wrong.
fn chosen_variants(
    list: &Spanned<Vec<Spanned<String>>>,
) -> Result<Vec<Variant>, (Range<usize>, String)> {
    let mut chosen = Vec::new();
    for name in list.get_ref() {
        let variant = Variant::for_every_case(name.get_ref());
        chosen.push(variant.map_err(|m| (name.span(), format!("variants: {m}")))?);
    }
    Variant::choice(chosen).map_err(|m| (list.span(), format!("variants: {m}")))
}

/// One line naming the file, line and column of a TOML error (at `span`, when known).
fn toml_error(file: &Path, text: &str, span: Option<Range<usize>>, message: &str) -> anyhow::Error {
    let place = span.map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(":{line}:{column}")
    });
    anyhow::anyhow!(
        "{}{}: {}",
        file.display(),
        place.unwrap_or_default(),
        message.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(text: &str) -> (tempfile::TempDir, anyhow::Result<Project>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(&file, text).unwrap();
        let p = Project::load(&file, dir.path());
        (dir, p)
    }

    #[test]
    fn defaults_without_settings() {
        let (dir, p) = project("");
        let p = p.unwrap();
        assert_eq!(p.root, dir.path());
        assert_eq!(p.cases, [PathBuf::from("cases")]);
        assert_eq!(p.snapshots, PathBuf::from("cases/snapshots"));
        assert_eq!(p.out, PathBuf::from("reports/latest"));
        assert_eq!(p.baseline, PathBuf::from("reports/baseline.json"));
        assert_eq!(p.python, None);
        assert!(p.roots.is_empty() && p.requirements.is_empty());
        assert_eq!(p.variants, None);
    }

    #[test]
    fn paths_are_relative_to_the_project_file() {
        let (dir, p) = project(
            "cases = [\"tests/cases\", \"more.yaml\"]\nvenv = \".venv-harness\"\nroots = [\"src\"]\n\
             requirements = [\"requirements-harness.txt\"]\nout = \"/tmp/elsewhere\"\n",
        );
        let p = p.unwrap();
        assert_eq!(
            p.cases,
            [PathBuf::from("tests/cases"), PathBuf::from("more.yaml")]
        );
        assert_eq!(p.python, Some(PathBuf::from(".venv-harness/bin/python")));
        assert_eq!(p.roots, [dir.path().join("src")]);
        assert_eq!(p.snapshots, PathBuf::from("tests/cases/snapshots"));
        assert_eq!(p.out, PathBuf::from("/tmp/elsewhere"));
        // Seen from a subfolder, the same settings point at the same places.
        let sub = dir.path().join("sub");
        let q = Project::load(&dir.path().join(FILE_NAME), &sub).unwrap();
        assert_eq!(q.cases[0], dir.path().join("tests/cases"));
    }

    #[test]
    fn errors_name_the_file_and_place() {
        let (dir, p) = project("cases = [\"a\"]\npyton = \"x\"\n");
        let e = p.unwrap_err().to_string();
        let file = dir.path().join(FILE_NAME).display().to_string();
        assert!(
            e.starts_with(&format!("{file}:2:1: unknown field `pyton`")),
            "{e}"
        );
        let (_dir, p) = project("cases = \"a\"\n");
        let e = p.unwrap_err().to_string();
        assert!(
            e.contains(":1:9: invalid type: string \"a\", expected a sequence"),
            "{e}"
        );
    }

    #[test]
    fn found_from_a_subfolder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "").unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(find(&sub), Some(dir.path().join(FILE_NAME)));
        assert_eq!(find(Path::new("/nonexistent-harness-folder")), None);
    }

    #[test]
    fn variants_for_every_case() {
        let (_dir, p) = project("variants = [\"scripted\", \"traced\", \"frozen\", \"traced\"]\n");
        let names: Vec<&str> = p
            .unwrap()
            .variants
            .unwrap()
            .iter()
            .map(|v| v.as_str())
            .collect();
        assert_eq!(names, ["traced", "scripted", "frozen"]);
    }

    #[test]
    fn variant_errors_name_the_place_and_the_known_variants() {
        let error = |text: &str| {
            let (dir, p) = project(text);
            let file = dir.path().join(FILE_NAME).display().to_string();
            p.unwrap_err().to_string().replace(&file, "harness.toml")
        };
        assert_eq!(
            error("out = \"r\"\nvariants = [\"traced\", \"tensorrt\"]\n"),
            format!(
                "harness.toml:2:23: variants: unknown variant `tensorrt`, expected one of {}",
                Variant::names()
            )
        );
        let shipped = error("variants = [\"shipped\"]\n");
        assert!(
            shipped.starts_with(
                "harness.toml:1:13: variants: `shipped` cannot be chosen for every case: it runs \
                 the file a case's `artifact:` names"
            ),
            "{shipped}"
        );
        assert_eq!(
            error("variants = []\n"),
            format!(
                "harness.toml:1:12: variants: expected at least one of {}",
                Variant::names()
            )
        );
        assert!(error("variants = \"traced\"\n").starts_with("harness.toml:1:12: invalid type"));
    }
}
