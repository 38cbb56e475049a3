//! The result cache: a case whose inputs did not change is not run again.
//!
//! An entry is keyed by what decides a case's result before it runs: the case file's bytes, the
//! harness build (a hash of its sources and worker, made by build.rs), the torch version, the
//! Python interpreter, and the command-line options that change results (seed, time limit,
//! element budget). It records the model source files the worker imported, with their content
//! hashes; a lookup is a hit only when every one still hashes the same, so editing one model
//! re-runs just the cases that import it. Entries hold the case's result and copies of its
//! artifacts and counterexamples, which a hit puts back into the output folder. Only cases that
//! ran to a verdict are stored: errors, crashes and timeouts always run again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::results::CaseResult;

/// Bumped when the entry layout changes.
const ENTRY_VERSION: u32 = 1;

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
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    version: u32,
    /// `(path, sha256)` of every file the result depends on, the case file first.
    files: Vec<(String, String)>,
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
        python_version: &str,
    ) -> std::io::Result<()> {
        if result.status != crate::results::CaseStatus::Ran {
            return Ok(());
        }
        let Some(dir) = self.entry_dir(case_file, parts) else {
            return Ok(());
        };
        let mut files = Vec::new();
        for path in std::iter::once(case_file.display().to_string()).chain(result.sources.clone()) {
            match sha256_file(Path::new(&path)) {
                Some(hash) => files.push((path, hash)),
                None => return Ok(()), // a file it depends on cannot be read: do not cache
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
            python_version: python_version.to_string(),
            result: stored,
        };
        std::fs::write(tmp.path().join("entry.json"), serde_json::to_vec(&entry)?)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(tmp.keep(), &dir)?;
        Ok(())
    }
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

    /// Store, then look up after `edit`; compare hit/miss with `expect_hit`.
    #[track_caller]
    fn check(edit: impl FnOnce(&Path, &Path), expect_hit: bool) {
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("c.yaml");
        let model = dir.path().join("m.py");
        std::fs::write(&case, "model: {source: m.py, entry: M}\n").unwrap();
        std::fs::write(&model, "class M: pass\n").unwrap();
        let cache = Cache {
            dir: dir.path().join("cache"),
        };
        let python = dir.path().join("python");
        let parts = KeyParts {
            python: &python,
            seed: None,
            timeout_s: None,
            max_elements: None,
        };
        cache
            .store(&case, &parts, &result(dir.path(), &model), "3.11")
            .unwrap();
        edit(&case, &model);
        let out = dir.path().join("out");
        let hit = cache.lookup(&case, &parts, &out);
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

    #[test]
    fn hits_until_something_it_depends_on_changes() {
        check(|_, _| {}, true);
        check(|_, m| std::fs::write(m, "class M: x = 1\n").unwrap(), false);
        check(
            |c, _| std::fs::write(c, "model: {source: m.py, entry: N}\n").unwrap(),
            false,
        );
        check(|_, m| std::fs::remove_file(m).unwrap(), false);
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
        };
        let b = KeyParts {
            seed: Some(1),
            ..a.clone()
        };
        assert_ne!(cache.entry_dir(&case, &a), cache.entry_dir(&case, &b));
        assert_eq!(
            cache.entry_dir(&case, &a),
            cache.entry_dir(&case, &a.clone())
        );
    }
}
