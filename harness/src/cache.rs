//! The result cache: a case whose inputs did not change is not run again.
//!
//! An entry is keyed by what decides a case's result before it runs: the case file's bytes, the
//! harness build (a hash of its sources and worker, made by build.rs), the torch version, the
//! Python interpreter, the command-line options that change results (seed, time limit,
//! element budget, import roots) and the variants the case runs (its file, the project's
//! `variants` or `--variants` chose them). It records every file the verdict depends on, with its content hash: each
//! user file the model's import and constructor pulled in (transitively: helpers, PYTHONPATH,
//! editable installs) and each file the case names (weights and other paths in `kwargs`, whole
//! folders included); and, for each folder the worker's installed libraries live in, a hash of
//! what is installed there (names, versions and file lists). A lookup is a hit only when all of
//! them are unchanged, so editing a helper, replacing weights or upgrading a library re-runs
//! exactly the cases that depend on it. Entries hold the case's result and copies of its
//! artifacts and counterexamples, which a hit puts back into the output folder. Only cases that
//! ran to a verdict are stored: errors, crashes and timeouts always run again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::results::CaseResult;

/// Bumped when the entry layout changes.
const ENTRY_VERSION: u32 = 2;

/// The harness build: changes whenever its Rust sources or its worker change.
pub const BUILD_ID: &str = env!("HARNESS_BUILD_ID");

#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: PathBuf,
}

/// What, besides the case file and the model files, a result depends on.
#[derive(Debug, Clone, Serialize)]
pub struct KeyParts<'a> {
    pub python: &'a Path,
    pub seed: Option<u64>,
    pub timeout_s: Option<f64>,
    pub max_elements: Option<u64>,
    /// The project's import roots: they decide which file an `import:` finds.
    pub roots: &'a [PathBuf],
    /// The variants the case runs: the project's `variants` and `--variants` choose them, not
    /// only the case file.
    pub variants: &'a [crate::variant::Variant],
    /// The device the case runs on (`cpu`, `cuda`): a GPU verdict never answers for a CPU run.
    pub device: &'static str,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    version: u32,
    /// `(path, sha256)` of every file the result depends on, the case file first.
    files: Vec<(String, String)>,
    /// `(site folder, hash of what is installed there)` for the worker's Python.
    environment: Vec<(String, String)>,
    python_version: String,
    result: CaseResult,
}

/// A hit: the result, with its files put back where the run would have written them.
pub struct Hit {
    pub result: CaseResult,
    pub python_version: String,
}

fn sha256_file(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cache {
    /// The entry folder for a case file under these options (`None` when it cannot be read).
    fn entry_dir(&self, case_file: &Path, parts: &KeyParts<'_>) -> Option<PathBuf> {
        let mut h = Sha256::new();
        h.update(ENTRY_VERSION.to_le_bytes());
        h.update(BUILD_ID.as_bytes());
        h.update(crate::TORCH_VERSION.as_bytes());
        h.update(serde_json::to_vec(parts).ok()?);
        h.update(
            case_file
                .canonicalize()
                .ok()?
                .display()
                .to_string()
                .as_bytes(),
        );
        h.update(std::fs::read(case_file).ok()?);
        Some(self.dir.join(hex(&h.finalize())))
    }

    /// The cached result for this case file, if nothing it depends on changed. Its artifacts
    /// and counterexamples are copied into `out_dir`, and the paths in the result point there.
    pub fn lookup(&self, case_file: &Path, parts: &KeyParts<'_>, out_dir: &Path) -> Option<Hit> {
        let dir = self.entry_dir(case_file, parts)?;
        let text = std::fs::read_to_string(dir.join("entry.json")).ok()?;
        let entry: Entry = serde_json::from_str(&text).ok()?;
        if entry.version != ENTRY_VERSION {
            return None;
        }
        for (path, hash) in &entry.files {
            if sha256_file(Path::new(path)).as_deref() != Some(hash.as_str()) {
                return None;
            }
        }
        for (dir, hash) in &entry.environment {
            if installed_hash(Path::new(dir)).as_deref() != Some(hash.as_str()) {
                return None;
            }
        }
        let mut result = entry.result;
        restore_files(&dir, &mut result, out_dir).ok()?;
        result.cached = true;
        Some(Hit {
            result,
            python_version: entry.python_version,
        })
    }

    /// Store a case's result (only one that ran to a verdict), with copies of its files.
    pub fn store(
        &self,
        case_file: &Path,
        parts: &KeyParts<'_>,
        result: &CaseResult,
        deps: &[PathBuf],
        worker: &crate::verify::WorkerFacts<'_>,
    ) -> std::io::Result<()> {
        if result.status != crate::results::CaseStatus::Ran {
            return Ok(());
        }
        let Some(dir) = self.entry_dir(case_file, parts) else {
            return Ok(());
        };
        let mut files = Vec::new();
        for path in std::iter::once(case_file).chain(deps.iter().map(PathBuf::as_path)) {
            match sha256_file(path) {
                Some(hash) => files.push((path.display().to_string(), hash)),
                None => return Ok(()), // a file it depends on cannot be read: do not cache
            }
        }
        let mut environment = Vec::new();
        for dir in worker.site {
            match installed_hash(dir) {
                Some(hash) => environment.push((dir.display().to_string(), hash)),
                None => return Ok(()),
            }
        }
        // Write the entry in a temporary folder, then rename: a reader never sees half of one.
        std::fs::create_dir_all(&self.dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".entry-")
            .tempdir_in(&self.dir)?;
        let mut stored = result.clone();
        for (variant, v) in stored.variants.iter_mut() {
            if let Some(a) = v.export.artifact.as_mut() {
                let name = format!("{variant}.pt");
                if std::fs::copy(&*a, tmp.path().join(&name)).is_ok() {
                    *a = name;
                }
            }
            if let Some(cx) = v.counterexample.as_mut() {
                let name = format!("{variant}.counterexample.safetensors");
                if std::fs::copy(&cx.file, tmp.path().join(&name)).is_ok() {
                    cx.replay = cx.replay.replace(&cx.file, &format!("{{cx:{variant}}}"));
                    cx.file = name;
                }
            }
        }
        let entry = Entry {
            version: ENTRY_VERSION,
            files,
            environment,
            python_version: worker.python.to_string(),
            result: stored,
        };
        std::fs::write(tmp.path().join("entry.json"), serde_json::to_vec(&entry)?)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(tmp.keep(), &dir)?;
        Ok(())
    }
}

/// What is installed in a site folder: the names of its distributions (`numpy-2.4.6.dist-info`),
/// their file lists (`RECORD`, which holds each file's hash) and `.pth`/`.egg-link` files (editable
/// installs), hashed. Installing, upgrading or reinstalling a library changes it. The contents
/// are read again only when one of those files' modification times changed: torch's `RECORD`
/// alone is 1.5 MB, and every cached case's lookup asks.
fn installed_hash(dir: &Path) -> Option<String> {
    type Seen = Vec<(PathBuf, String, String)>; // (dir, names and mtimes, content hash)
    static SEEN: std::sync::Mutex<Seen> = std::sync::Mutex::new(Vec::new());
    let files = installed_files(dir)?;
    let stamp: String = files
        .iter()
        .map(|(name, file)| {
            let mtime = std::fs::metadata(file).and_then(|m| m.modified()).ok();
            format!("{name} {mtime:?}\n")
        })
        .collect();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, hash)) = seen.iter().find(|(d, s, _)| d == dir && *s == stamp) {
        return Some(hash.clone());
    }
    let mut h = Sha256::new();
    for (name, file) in &files {
        h.update(name.as_bytes());
        h.update(std::fs::read(file).unwrap_or_default());
    }
    let hash = hex(&h.finalize());
    seen.retain(|(d, _, _)| d != dir);
    seen.push((dir.to_path_buf(), stamp, hash.clone()));
    Some(hash)
}

/// `(entry name, the file that says what it installed)` for each installation in a site folder,
/// sorted.
fn installed_files(dir: &Path) -> Option<Vec<(String, PathBuf)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    let files = paths.into_iter().filter_map(|p| {
        let name = p.file_name()?.to_string_lossy().into_owned();
        let file = if name.ends_with(".dist-info") {
            p.join("RECORD")
        } else if name.ends_with(".egg-info") {
            p.join("SOURCES.txt")
        } else if name.ends_with(".pth") || name.ends_with(".egg-link") {
            p
        } else {
            return None;
        };
        Some((name, file))
    });
    Some(files.collect())
}

/// Copy an entry's artifacts and counterexamples into the output folder and point the result
/// at the copies.
fn restore_files(dir: &Path, result: &mut CaseResult, out_dir: &Path) -> std::io::Result<()> {
    let artifacts = out_dir.join("artifacts").join(&result.name);
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts)?;
    let name = result.name.clone();
    for (variant, v) in result.variants.iter_mut() {
        if let Some(a) = v.export.artifact.as_mut() {
            let to = artifacts.join(format!("{variant}.pt"));
            std::fs::copy(dir.join(&*a), &to)?;
            *a = to.display().to_string();
        }
        if let Some(cx) = v.counterexample.as_mut() {
            let cdir = out_dir.join("counterexamples");
            std::fs::create_dir_all(&cdir)?;
            let to = cdir.join(format!("{name}.{variant}.safetensors"));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(dir.join(&cx.file), &to)?;
            cx.file = to.display().to_string();
            cx.replay = cx.replay.replace(&format!("{{cx:{variant}}}"), &cx.file);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Outcome, VariantResult};

    fn result(dir: &Path, model: &Path) -> CaseResult {
        let artifact = dir.join("traced.pt");
        std::fs::write(&artifact, b"artifact").unwrap();
        let mut r = CaseResult::ran_for_test("c");
        r.sources = vec![model.display().to_string()];
        let mut v = VariantResult::for_test(Outcome::Pass);
        v.export.artifact = Some(artifact.display().to_string());
        r.variants
            .insert(crate::case::Variant::named("traced").unwrap(), v);
        r
    }

    /// The files one cached case depends on.
    struct Fixture {
        case: PathBuf,
        model: PathBuf,
        weights: PathBuf,
        site: PathBuf,
    }

    /// Store, then look up after `edit`; compare hit/miss with `expect_hit`.
    #[track_caller]
    fn check(edit: impl FnOnce(&Fixture), expect_hit: bool) {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture {
            case: dir.path().join("c.yaml"),
            model: dir.path().join("m.py"),
            weights: dir.path().join("w.pt"),
            site: dir.path().join("site-packages"),
        };
        write(&f.case, "model: {source: m.py, entry: M}\n");
        write(&f.model, "class M: pass\n");
        write(&f.weights, "weights 1");
        std::fs::create_dir_all(f.site.join("numpy-2.4.6.dist-info")).unwrap();
        write(
            &f.site.join("numpy-2.4.6.dist-info/RECORD"),
            "numpy/a.py,sha256=1\n",
        );
        let cache = Cache {
            dir: dir.path().join("cache"),
        };
        let python = dir.path().join("python");
        let parts = KeyParts {
            python: &python,
            seed: None,
            timeout_s: None,
            max_elements: None,
            roots: &[],
            variants: &[],
            device: "cpu",
        };
        let site = [f.site.clone()];
        let worker = crate::verify::WorkerFacts {
            torch: "2.13.0",
            python: "3.11",
            site: &site,
        };
        let deps = [f.model.clone(), f.weights.clone()];
        let stored = result(dir.path(), &f.model);
        cache
            .store(&f.case, &parts, &stored, &deps, &worker)
            .unwrap();
        edit(&f);
        let out = dir.path().join("out");
        let hit = cache.lookup(&f.case, &parts, &out);
        assert_eq!(hit.is_some(), expect_hit);
        if let Some(hit) = hit {
            assert!(hit.result.cached);
            let a = hit.result.variants[&crate::case::Variant::named("traced").unwrap()]
                .export
                .artifact
                .clone();
            let a = PathBuf::from(a.unwrap());
            assert!(a.starts_with(&out), "{}", a.display());
            assert_eq!(std::fs::read(a).unwrap(), b"artifact");
        }
    }

    fn write(p: &Path, text: &str) {
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn hits_until_something_it_depends_on_changes() {
        check(|_| {}, true);
        check(|f| write(&f.model, "class M: x = 1\n"), false);
        check(
            |f| write(&f.case, "model: {source: m.py, entry: N}\n"),
            false,
        );
        check(|f| std::fs::remove_file(&f.model).unwrap(), false);
        // A file the case names (weights in kwargs).
        check(|f| write(&f.weights, "weights 2"), false);
        // What is installed: a new library, an editable install, a reinstall with other files.
        check(
            |f| std::fs::create_dir_all(f.site.join("pkg-1.0.dist-info")).unwrap(),
            false,
        );
        check(|f| write(&f.site.join("user.pth"), "/src/pkg\n"), false);
        check(
            |f| {
                write(
                    &f.site.join("numpy-2.4.6.dist-info/RECORD"),
                    "numpy/a.py,sha256=2\n",
                )
            },
            false,
        );
        // Not an installation: a stray file in site-packages.
        check(|f| write(&f.site.join("notes.txt"), "x"), true);
    }

    #[test]
    fn options_are_part_of_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("c.yaml");
        std::fs::write(&case, "x").unwrap();
        let cache = Cache {
            dir: dir.path().join("cache"),
        };
        let p = Path::new("python");
        let a = KeyParts {
            python: p,
            seed: None,
            timeout_s: None,
            max_elements: None,
            roots: &[],
            variants: &[],
            device: "cpu",
        };
        let b = KeyParts {
            seed: Some(1),
            ..a.clone()
        };
        assert_ne!(cache.entry_dir(&case, &a), cache.entry_dir(&case, &b));
        let roots = [PathBuf::from("src")];
        let c = KeyParts {
            roots: &roots,
            ..a.clone()
        };
        assert_ne!(cache.entry_dir(&case, &a), cache.entry_dir(&case, &c));
        let scripted = [crate::variant::Variant::named("scripted").unwrap()];
        let d = KeyParts {
            variants: &scripted,
            ..a.clone()
        };
        assert_ne!(cache.entry_dir(&case, &a), cache.entry_dir(&case, &d));
        assert_eq!(
            cache.entry_dir(&case, &a),
            cache.entry_dir(&case, &a.clone())
        );
    }
}
