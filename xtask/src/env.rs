//! The Python environment and the build environment the harness needs.
//!
//! `.venv/` in the repository holds torch 2.13.0 (the libtorch tch 0.26 links) and the worker's
//! packages, from the pinned `harness/python/requirements.txt`. It is made once and remade only
//! when the requirements change (a stamp file keeps the requirements it was made from). Builds
//! and runs get the venv's python first on PATH and `LIBTORCH_USE_PYTORCH=1`, as torch-sys wants.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Env {
    pub root: PathBuf,
    pub venv: PathBuf,
}

const REQUIREMENTS: &str = "harness/python/requirements.txt";
const STAMP: &str = ".harness-requirements";

impl Env {
    /// Find the repository and make sure `.venv` matches the pinned requirements.
    pub fn prepare() -> Result<Env, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is in the workspace")
            .to_path_buf();
        let venv = root.join(".venv");
        let env = Env { root, venv };
        env.ensure_venv()?;
        Ok(env)
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    fn ensure_venv(&self) -> Result<(), String> {
        let wanted = std::fs::read_to_string(self.root.join(REQUIREMENTS))
            .map_err(|e| format!("cannot read {REQUIREMENTS}: {e}"))?;
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
        eprintln!("xtask: installing {REQUIREMENTS} into .venv (torch is large: about a minute)");
        run(Command::new(self.python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(self.root.join(REQUIREMENTS)))?;
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
        // libtorch's own warnings (printed from C++ while models run) would drown the
        // harness's lines; the harness reports what matters itself.
        .env(
            "TORCH_CPP_LOG_LEVEL",
            std::env::var("TORCH_CPP_LOG_LEVEL").unwrap_or_else(|_| "ERROR".into()),
        )
        .env_remove("PYTHONHOME");
    }

    /// Build the `harness` binary (release) and return its path.
    pub fn build_harness(&self) -> Result<PathBuf, String> {
        self.cargo(&[
            "build",
            "--release",
            "--quiet",
            "--package",
            "harness",
            "--bins",
        ])?;
        Ok(self.root.join("target/release/harness"))
    }

    /// Run cargo in the repository with this environment.
    pub fn cargo(&self, args: &[&str]) -> Result<(), String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(args).current_dir(&self.root);
        self.apply(&mut cmd);
        run(&mut cmd)
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} failed ({status})", cmd.get_program()))
    }
}
