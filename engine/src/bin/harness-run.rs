//! `harness-run`: the command line that runs cases in libtorch (see [`harness::cli`]); `harness`
//! hands it every `verify` that the result cache cannot serve.

fn main() -> std::process::ExitCode {
    harness::cli::main(Some(|req, on_case| {
        harness_engine::verify::verify(req, on_case)
    }))
}
