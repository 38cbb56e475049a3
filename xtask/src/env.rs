//! The Python environment and the build environment the harness needs.
//!
//! `.venv/` in the repository holds torch 2.13.0 (the libtorch tch 0.26 links) and the worker's
//! packages, from the pinned `harness/python/requirements.txt`, plus the worker's development
//! tools (pytest, ruff) from `harness/python/requirements-dev.txt` when that file exists. It is
//! made once and remade only when either file changes (a stamp file keeps the requirements it
//! was made from). Builds and runs get the venv's python first on PATH and
//! `LIBTORCH_USE_PYTORCH=1`, as torch-sys wants.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Env {
    pub root: PathBuf,
    pub venv: PathBuf,
}

const REQUIREMENTS: &str = "harness/python/requirements.txt";
const DEV_REQUIREMENTS: &str = "harness/python/requirements-dev.txt";
const STAMP: &str = ".harness-requirements";

/// The repository root: found at run time from the current folder, as cargo finds its
/// workspace (`cargo xtask` runs where the user is), so a checkout that was moved or copied uses
/// its own `.venv`, build and snapshots, never the folder xtask was first compiled in.
pub fn root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    find_root(&cwd).unwrap_or_else(|| {
        let built = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is in the workspace")
            .to_path_buf();
        eprintln!(
            "xtask: {} is not inside a harness checkout; using {}, where xtask was built",
            cwd.display(),
            built.display()
        );
        built
    })
}

/// The nearest folder at or above `from` with a workspace `Cargo.toml` and `xtask/`.
fn find_root(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .find(|dir| {
            dir.join("xtask/Cargo.toml").is_file()
                && std::fs::read_to_string(dir.join("Cargo.toml"))
                    .is_ok_and(|t| t.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
}

impl Env {
    /// Find the repository and make sure `.venv` matches the pinned requirements.
    pub fn prepare() -> Result<Env, String> {
        let root = root();
        let venv = root.join(".venv");
        let env = Env { root, venv };
        env.ensure_venv()?;
        Ok(env)
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// A program installed in the venv (`ruff`, `pytest`).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    fn ensure_venv(&self) -> Result<(), String> {
        let runtime = std::fs::read_to_string(self.root.join(REQUIREMENTS))
            .map_err(|e| format!("cannot read {REQUIREMENTS}: {e}"))?;
        let dev_path = self.root.join(DEV_REQUIREMENTS);
        let dev = match std::fs::read_to_string(&dev_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {DEV_REQUIREMENTS}: {e}")),
        };
        let wanted = stamp_text(&runtime, dev.as_deref());
        let stamp = self.venv.join(STAMP);
        if self.python().exists()
            && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str())
        {
            return Ok(());
        }
        if !self.python().exists() {
            let base =
                std::env::var("HARNESS_BOOTSTRAP_PYTHON").unwrap_or_else(|_| "python3".into());
            eprintln!("xtask: creating {} with {base}", self.venv.display());
            run(Command::new(&base).args(["-m", "venv"]).arg(&self.venv))?;
        }
        let mut pip = Command::new(self.python());
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(self.root.join(REQUIREMENTS));
        if dev.is_some() {
            eprintln!(
                "xtask: installing {REQUIREMENTS} and {DEV_REQUIREMENTS} into .venv \
                 (torch is large: about a minute)"
            );
            pip.arg("-r").arg(&dev_path);
        } else {
            eprintln!(
                "xtask: installing {REQUIREMENTS} into .venv (torch is large: about a minute)"
            );
        }
        run(&mut pip)?;
        std::fs::write(&stamp, wanted)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
        Ok(())
    }

    /// Give a command the venv's python and the libtorch build settings.
    pub fn apply(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.venv.join("bin")];
        paths.extend(std::env::split_paths(&path));
        cmd.env(
            "PATH",
            std::env::join_paths(paths).expect("PATH entries are joinable"),
        )
        .env("VIRTUAL_ENV", &self.venv)
        .env("LIBTORCH_USE_PYTORCH", "1")
        .env("HARNESS_PYTHON", self.python())
        // The commands the harness suggests (accept snapshots, replay) are this checkout's.
        .env("HARNESS_COMMAND", "cargo xtask")
        // libtorch's own warnings (printed from C++ while models run) would drown the
        // harness's lines; the harness reports what matters itself.
        .env(
            "TORCH_CPP_LOG_LEVEL",
            std::env::var("TORCH_CPP_LOG_LEVEL").unwrap_or_else(|_| "ERROR".into()),
        )
        .env_remove("PYTHONHOME");
    }

    /// A command run in the repository with this environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        self.apply(&mut cmd);
        cmd
    }

    /// `cargo ARGS` in the repository with this environment (not run yet).
    pub fn cargo_command(&self, args: &[&str]) -> Command {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = self.command(cargo);
        cmd.args(args);
        cmd
    }

    /// Build the `harness` and `harness-run` binaries (release) and return the path of
    /// `harness`. `harness-run` lives in the `harness-engine` package once `engine/` exists
    /// (before that, in `harness` itself); `harness` execs it from the same folder.
    pub fn build_harness(&self) -> Result<PathBuf, String> {
        self.cargo(&[
            "build",
            "--release",
            "--quiet",
            "--package",
            "harness",
            "--package",
            "harness-engine",
            "--bins",
        ])?;
        Ok(self.root.join("target/release/harness"))
    }

    /// Run cargo in the repository with this environment.
    pub fn cargo(&self, args: &[&str]) -> Result<(), String> {
        run(&mut self.cargo_command(args))
    }
}

/// What the stamp holds: the runtime requirements, then the development ones if any, so a
/// change to either file remakes the venv.
fn stamp_text(runtime: &str, dev: Option<&str>) -> String {
    match dev {
        Some(dev) => format!("{runtime}\n# {DEV_REQUIREMENTS}\n{dev}"),
        None => runtime.to_string(),
    }
}

/// Run a command; an error unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed ({status})", cmd.get_program()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_found_from_where_xtask_runs() {
        let dir = std::env::temp_dir().join(format!("xtask-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let moved = dir.join("moved-checkout");
        std::fs::create_dir_all(moved.join("xtask/src")).unwrap();
        std::fs::create_dir_all(moved.join("cases/zoo")).unwrap();
        std::fs::write(moved.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        std::fs::write(moved.join("xtask/Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(find_root(&moved.join("cases/zoo")), Some(moved.clone()));
        assert_eq!(find_root(&moved), Some(moved.clone()));
        assert_eq!(find_root(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_stamp_changes_with_either_requirements_file() {
        let base = stamp_text("torch==2.13.0\n", None);
        assert_eq!(
            base, "torch==2.13.0\n",
            "no dev file: the stamp is as before"
        );
        let dev = stamp_text("torch==2.13.0\n", Some("pytest==8\n"));
        assert_ne!(base, dev);
        assert_ne!(dev, stamp_text("torch==2.13.0\n", Some("pytest==9\n")));
        assert_ne!(dev, stamp_text("torch==2.12.0\n", Some("pytest==8\n")));
    }
}
