//! `harness`: the command line without libtorch (see [`harness::cli`]); it serves reports and
//! cached runs itself and hands every other `verify` to `harness-run`.

fn main() -> std::process::ExitCode {
    harness::cli::main(None)
}
