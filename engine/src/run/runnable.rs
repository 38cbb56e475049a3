//! Running a variant on samples, wherever its definition says it runs: a TorchScript artifact
//! loaded with `tch::CModule` and run here in libtorch, or a torch.export program run in the
//! case's worker child from its saved file (tch has no runtime for it). Phase 5 runs every
//! sample; shrinking and the counterexample run one input at a time, the same way.

use std::path::PathBuf;
use std::time::Instant;

use tch::{CModule, Tensor};

use harness::case::Variant;
use harness::diagnose::error_summary;
use harness::error::ErrorKind;
use harness::variant::Runtime;
use harness::worker::{ErrorBody, ProgramRef, SampleRef};

use super::context::{CaseRun, SampleRun, VariantRun};
use super::io::{load_module, run_sample, signature, Slot};
use super::phases::EagerCall;
use super::Runner;
use crate::compare::compare;
use crate::value::Value;

/// What a variant runs as, once loaded.
pub enum Runnable {
    /// Loaded in libtorch.
    Libtorch(CModule),
    /// A saved program the worker loads and runs (`eager` with `program`), and the export method
    /// that made it.
    Worker(PathBuf, &'static str),
}

impl Runner {
    /// 5. Each exported variant on every sample (a variant that does not load is noted: a
    ///    deployment would fail to load it too).
    pub(super) fn run_variants(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        for variant in cx.case.variants.clone() {
            let export = &cx.exported.as_ref().expect("exported").exports[&variant];
            let Some(path) = export.path.clone().filter(|_| export.ok) else {
                continue;
            };
            let mut run = VariantRun::default();
            match variant.def().runtime {
                Runtime::Libtorch => run_in_libtorch(cx, variant, &mut run, &path),
                Runtime::Worker => self.run_in_worker(cx, variant, &mut run, path)?,
            }
            cx.variants.insert(variant, run);
            cx.clock.lap(&format!("run {variant}"));
        }
        Ok(())
    }

    /// A saved program on every sample, in the case's worker child. A program the worker cannot
    /// load is the variant's load error (a finding), as in libtorch, not the case's error.
    fn run_in_worker(
        &mut self,
        cx: &mut CaseRun,
        variant: Variant,
        run: &mut VariantRun,
        path: PathBuf,
    ) -> Result<(), ErrorBody> {
        let t = Instant::now();
        let calls: Vec<EagerCall> = (0..cx.samples().specs.len())
            .map(|i| super::phases::eager_call(cx.samples(), i, None))
            .collect();
        let method = variant.def().method;
        let program = ProgramRef {
            path: &path,
            method,
        };
        let got = match self.run_program(cx, program, &calls) {
            Err(e) if e.kind == ErrorKind::ExportError => {
                run.load_error = Some(e);
                return Ok(());
            }
            other => other?,
        };
        run.runs = got
            .into_iter()
            .zip(&cx.samples().expected)
            .map(|(got, expected)| judge(got, expected, cx))
            .collect();
        run.run_ms = t.elapsed().as_secs_f64() * 1e3;
        run.runnable = Some(Runnable::Worker(path, method));
        Ok(())
    }

    /// One input (written to `file` already) through a loaded variant, against `expected`.
    pub(super) fn run_one(
        &mut self,
        cx: &mut CaseRun,
        variant: (&Runnable, &[Slot]),
        input: (&[(String, Tensor)], &SampleRef),
        expected: &Value,
    ) -> Result<SampleRun, ErrorBody> {
        let t = Instant::now();
        let run = match variant.0 {
            Runnable::Libtorch(m) => run_sample(
                (m, cx.on()),
                (&cx.case, variant.1),
                input.0,
                expected,
                &cx.tol,
            ),
            Runnable::Worker(path, method) => {
                let call = EagerCall {
                    id: input.1.sample.clone(),
                    file: input.1.clone(),
                    what: format!("sample {}", input.1.sample),
                    fill: false,
                };
                let program = ProgramRef { path, method };
                let got = self.run_program(cx, program, &[call])?.remove(0);
                judge(got, expected, cx)
            }
        };
        cx.clock.add_torch(t);
        Ok(run)
    }

    /// A saved program on each call's input, in the worker: each output, or what it raised.
    fn run_program(
        &mut self,
        cx: &mut CaseRun,
        program: ProgramRef<'_>,
        calls: &[EagerCall],
    ) -> Result<Vec<Result<Value, String>>, ErrorBody> {
        let (case, dir) = (&cx.case, &cx.sample_dir);
        let replies = self.worker_runs(&mut cx.clock, case, dir, calls, Some(program))?;
        let mut read = None;
        Ok(replies
            .iter()
            .zip(calls)
            .map(|(r, call)| match r.ok {
                false => Err(r
                    .error
                    .as_ref()
                    .map(|e| error_summary(&e.message))
                    .unwrap_or_default()),
                true => super::phases::eager_value(r, &call.what, &mut read)
                    .map(|(v, _)| v)
                    .map_err(|e| e.message),
            })
            .collect())
    }
}

/// Load a TorchScript artifact in libtorch and run every sample through it.
fn run_in_libtorch(
    cx: &mut CaseRun,
    variant: Variant,
    run: &mut VariantRun,
    path: &std::path::Path,
) {
    let export = &cx.exported.as_ref().expect("exported").exports[&variant];
    let loaded = signature(&cx.case, export)
        .map_err(|why| ErrorBody::new(ErrorKind::Load, why))
        .and_then(|args| {
            run.args = args;
            load_module(path, cx.on(), cx.case.spec.model.eval)
                .map_err(|e| ErrorBody::new(ErrorKind::Load, format!("{e}")))
        });
    match loaded {
        Ok(m) => {
            let t = Instant::now();
            let samples = cx.samples();
            let call = (&cx.case, run.args.as_slice());
            let on = (&m, cx.on());
            run.runs = samples
                .inputs
                .iter()
                .zip(&samples.expected)
                .map(|(i, e)| run_sample(on, call, i, e, &cx.tol))
                .collect();
            run.run_ms = t.elapsed().as_secs_f64() * 1e3;
            cx.clock.add_torch(t);
            run.runnable = Some(Runnable::Libtorch(m));
        }
        Err(e) => run.load_error = Some(e),
    }
}

/// A worker run's output against eager's.
fn judge(got: Result<Value, String>, expected: &Value, cx: &CaseRun) -> SampleRun {
    match got {
        Err(message) => SampleRun::Raised(message),
        Ok(actual) => {
            let c = compare(expected, &actual, &cx.tol);
            if c.is_match() {
                SampleRun::Match(c)
            } else {
                SampleRun::Mismatch(c)
            }
        }
    }
}
