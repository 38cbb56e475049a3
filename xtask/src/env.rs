//! The Python environment and the build environment the harness needs, for one torch line.
//!
//! `.venv/` in the repository holds the default line's torch (2.13.0, the libtorch tch 0.26
//! links) and the worker's packages, from the pinned `harness/python/requirements.txt`, plus the
//! worker's development tools (pytest, ruff) from `harness/python/requirements-dev.txt` when that
//! file exists. It is made once and remade only when either file changes (a stamp file keeps the
//! requirements it was made from). Builds and runs get the venv's python first on PATH and
//! `LIBTORCH_USE_PYTORCH=1`, as torch-sys wants.
//!
//! Another line (`--torch 2.11`, see `harness/src/torch_lines.rs`) gets the same requirements
//! with its torch and torchvision pins, in `.venv-torch-X.Y/`, and builds into
//! `target/torch-X.Y/` from its manifest (a workspace of its own when its tch differs), so the
//! lines never rebuild each other.

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
#[path = "../../harness/src/torch_lines.rs"]
pub mod torch_lines;

pub use torch_lines::TorchLine;

pub struct Env {
    pub root: PathBuf,
    pub venv: PathBuf,
    pub line: &'static TorchLine,
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

/// `--torch X.Y` taken out of `args`: the line it names (`None` when not given).
pub fn take_line(args: &mut Vec<String>) -> Result<Option<&'static TorchLine>, String> {
    let mut name = None;
    let mut i = 0;
    while i < args.len() {
        if let Some(v) = args[i].strip_prefix("--torch=") {
            name = Some(v.to_string());
            args.remove(i);
        } else if args[i] == "--torch" {
            args.remove(i);
            if i >= args.len() {
                return Err("--torch needs a line, such as --torch 2.12".into());
            }
            name = Some(args.remove(i));
        } else {
            i += 1;
        }
    }
    name.map(|n| torch_lines::line_named(&n)).transpose()
}

/// The default line (`torch_lines::DEFAULT_LINE`).
pub fn default_line() -> &'static TorchLine {
    torch_lines::line_named(torch_lines::DEFAULT_LINE).expect("the default line is in the table")
}

impl Env {
    /// Find the repository and make sure `.venv` matches the pinned requirements.
    pub fn prepare() -> Result<Env, String> {
        Env::prepare_line(default_line())
    }

    /// The same for `line`: its venv made or updated, its folders named.
    pub fn prepare_line(line: &'static TorchLine) -> Result<Env, String> {
        let root = root();
        let venv = root.join(venv_folder(line));
        let env = Env { root, venv, line };
        env.ensure_venv()?;
        Ok(env)
    }

    pub fn is_default(&self) -> bool {
        self.line.name == torch_lines::DEFAULT_LINE
    }

    /// Where this line builds: `target/` for the default line, else `target/torch-X.Y/`.
    pub fn target_dir(&self) -> PathBuf {
        if self.is_default() {
            self.root.join("target")
        } else {
            self.root.join(format!("target/torch-{}", self.line.name))
        }
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// A program installed in the venv (`ruff`, `pytest`).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    fn ensure_venv(&self) -> Result<(), String> {
        let pinned = std::fs::read_to_string(self.root.join(REQUIREMENTS))
            .map_err(|e| format!("cannot read {REQUIREMENTS}: {e}"))?;
        let runtime = for_line(&pinned, self.line);
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
        // The line's requirements: the pinned file with this line's torch and torchvision.
        let line_requirements = self.venv.join("requirements-line.txt");
        std::fs::write(&line_requirements, &runtime)
            .map_err(|e| format!("cannot write {}: {e}", line_requirements.display()))?;
        let mut pip = Command::new(self.python());
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&line_requirements);
        if dev.is_some() {
            eprintln!(
                "xtask: installing {REQUIREMENTS} (torch {}) and {DEV_REQUIREMENTS} into {} \
                 (torch is large: about a minute)",
                self.line.release,
                venv_folder(self.line)
            );
            pip.arg("-r").arg(&dev_path);
        } else {
            eprintln!(
                "xtask: installing {REQUIREMENTS} (torch {}) into {} (torch is large: about a \
                 minute)",
                self.line.release,
                venv_folder(self.line)
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
        if !self.is_default() {
            cmd.env("CARGO_TARGET_DIR", self.target_dir());
        }
        if self.line.bypass_version_check {
            // torch-sys checks for its own torch; this line's ops are all there (torch_lines.rs).
            cmd.env("LIBTORCH_BYPASS_VERSION_CHECK", "1");
        }
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
        let mut args = vec!["build", "--release", "--quiet"];
        let manifest = self.manifest_args();
        args.extend(manifest.iter().map(String::as_str));
        args.extend([
            "--package",
            "harness",
            "--package",
            "harness-engine",
            "--bins",
        ]);
        self.cargo(&args)?;
        Ok(self.target_dir().join("release/harness"))
    }

    /// `--manifest-path M` for a line built from a workspace of its own, else nothing.
    pub fn manifest_args(&self) -> Vec<String> {
        if self.line.manifest == "engine/Cargo.toml" {
            Vec::new()
        } else {
            let path = self.root.join(self.line.manifest);
            vec!["--manifest-path".into(), path.display().to_string()]
        }
    }

    /// Run cargo in the repository with this environment.
    pub fn cargo(&self, args: &[&str]) -> Result<(), String> {
        run(&mut self.cargo_command(args))
    }
}

/// The venv of a line, in the repository: `.venv` for the default line, else `.venv-torch-X.Y`.
pub fn venv_folder(line: &TorchLine) -> String {
    if line.name == torch_lines::DEFAULT_LINE {
        ".venv".into()
    } else {
        format!(".venv-torch-{}", line.name)
    }
}

/// The pinned requirements with `line`'s torch and torchvision pins (unchanged for the default
/// line, whose pins they are).
fn for_line(requirements: &str, line: &TorchLine) -> String {
    let mut out: Vec<String> = requirements
        .lines()
        .map(|l| {
            if l.starts_with("torch==") {
                format!("torch=={}", line.release)
            } else if l.starts_with("torchvision==") {
                format!("torchvision=={}", line.torchvision)
            } else {
                l.to_string()
            }
        })
        .collect();
    if requirements.ends_with('\n') {
        out.push(String::new());
    }
    out.join("\n")
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
    fn a_line_gets_its_own_torch_pins_and_venv() {
        let pinned = "# x\ntorch==2.13.0\nsafetensors==0.8.0\ntorchvision==0.28.0\n";
        let l211 = torch_lines::line_named("2.11").unwrap();
        assert_eq!(
            for_line(pinned, l211),
            "# x\ntorch==2.11.0\nsafetensors==0.8.0\ntorchvision==0.26.0\n"
        );
        let default = torch_lines::line_named(torch_lines::DEFAULT_LINE).unwrap();
        assert_eq!(for_line(pinned, default), pinned);
        assert_eq!(venv_folder(default), ".venv");
        assert_eq!(venv_folder(l211), ".venv-torch-2.11");
    }

    #[test]
    fn the_default_lines_pins_are_the_requirements_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let pinned = std::fs::read_to_string(root.join(REQUIREMENTS)).unwrap();
        let default = torch_lines::line_named(torch_lines::DEFAULT_LINE).unwrap();
        assert_eq!(for_line(&pinned, default), pinned);
        assert!(pinned.contains(&format!("torch=={}\n", default.release)));
    }

    #[test]
    fn torch_is_taken_out_of_the_arguments() {
        let mut args: Vec<String> = ["cases/a.yaml", "--torch", "2.12", "--jobs", "2"]
            .map(String::from)
            .into();
        assert_eq!(take_line(&mut args).unwrap().unwrap().release, "2.12.0");
        assert_eq!(args, ["cases/a.yaml", "--jobs", "2"]);
        let mut args = vec!["--torch=2.11".to_string()];
        assert_eq!(take_line(&mut args).unwrap().unwrap().tch, "0.24.0");
        assert!(args.is_empty());
        let mut none: Vec<String> = Vec::new();
        assert_eq!(take_line(&mut none), Ok(None));
        assert_eq!(default_line().name, torch_lines::DEFAULT_LINE);
        assert!(take_line(&mut vec!["--torch".to_string()]).is_err());
        assert!(take_line(&mut vec!["--torch".into(), "2.10".into()]).is_err());
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
