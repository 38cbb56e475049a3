//! The phases of a case that run while its forked child is there: begin, load, samples, export,
//! eager, the variants in libtorch, then re-traces and shrinking for the variants that diverged.
//! Each is a function over the case's [`CaseRun`]; the [`Runner`] only lends its worker.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::Tensor;

use harness::case::{Case, ModelOrigin, Variant};
use harness::error::ErrorKind;
use harness::options::DEFAULT_MAX_ELEMENTS;
use harness::plan::{self, Group, SampleSpec};
use harness::results::{Counterexample, SampleInfo};
use harness::worker::{ErrorBody, Export, ExportReply, LoadRequest, SampleRef};

use super::context::{CaseRun, Clock, Retraces, SampleRun, Samples};
use super::io::{read_replay, shell_word, write_sample, write_samples};
use super::runnable::Runnable;
use super::{Runner, MAX_SHRINK_ROUND_TRIPS};
use crate::compare::compare;
use crate::materialize::{describe_tensors, materialize};
use crate::shrink;
use crate::tensors;
use crate::value::Value;

/// The case's model module, which its child is forked for.
fn module_ref(case: &Case) -> harness::worker::ModuleRef {
    match &case.origin {
        ModelOrigin::Source(p) => harness::worker::ModuleRef::Source(p.clone()),
        ModelOrigin::Import(m) => harness::worker::ModuleRef::Import(m.clone()),
    }
}

/// One eager call: a sample's id, where its inputs are, and how to name it in an error.
pub struct EagerCall {
    pub id: String,
    pub file: SampleRef,
    pub what: String,
    /// With uninitialized memory filled (the determinism repeat).
    pub fill: bool,
}

impl Runner {
    /// A fresh child of the fork server for the case, and its folders.
    pub(super) fn begin(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        if let Some(w) = &self.worker {
            w.clear_stderr_tail();
        }
        if let Err(why) = &cx.device {
            return Err(ErrorBody::new(ErrorKind::Device, why.clone()));
        }
        if !cx.is_replay() && self.opts.device.cuda != Some(true) {
            self.fork_probe_server_if_wanted(&mut cx.clock);
        }
        // Each case runs in a fresh child of the warm fork server: nothing from earlier cases.
        let module = module_ref(&cx.case);
        self.call(&mut cx.clock, |w, timeout| {
            w.begin_case(timeout, Some(&module))
        })?;
        for dir in [&cx.sample_dir, &cx.artifact_dir] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)
                .map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{}: {e}", dir.display())))?;
        }
        Ok(())
    }

    /// 1. The model, in the worker.
    pub(super) fn load(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        let case = &cx.case;
        let (source, import) = match &case.origin {
            ModelOrigin::Source(p) => (Some(p.clone()), None),
            ModelOrigin::Import(m) => (None, Some(m.clone())),
        };
        let req = LoadRequest {
            case: case.name.clone(),
            source,
            import,
            entry: case.spec.model.entry.clone(),
            kwargs: case.resolved_kwargs(),
            eval: case.spec.model.eval,
            weights: case.weights(),
            weights_strict: case.spec.model.weights_strict,
            seed: cx.seed,
            device: cx.on().is_cuda().then(|| "cuda".into()),
        };
        let loaded = self.call(&mut cx.clock, |w, timeout| w.load(&req, timeout))?;
        cx.load = Some(req);
        if let Some(m) = cx.result.model.as_mut() {
            m.class = Some(loaded.class);
        }
        cx.result.sources = loaded
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        Ok(())
    }

    /// 2. Inputs: the plan (or the trace input and a replayed file), made once, written for the
    ///    worker in one file (a file per sample costs more in system calls than its tensors),
    ///    kept for libtorch.
    pub(super) fn make_samples(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        crate::materialize::resolve_files(&mut cx.case)?;
        cx.result.spec = Some(super::verdict::spec_info(&cx.case)); // with the files' shapes
        let case = &cx.case;
        let mut specs = plan::plan(case, cx.seed);
        let budget = self
            .opts
            .max_elements
            .or(case.spec.check.max_elements)
            .unwrap_or(DEFAULT_MAX_ELEMENTS);
        specs
            .iter()
            .try_for_each(|s| within_budget(case, s, budget))?;
        let mut inputs = Vec::with_capacity(specs.len());
        if let Some(file) = &cx.replay {
            specs.truncate(1);
            inputs.push(materialize(case, &specs[0]));
            let replayed = read_replay(file, case)?;
            // Judged as the group the run found it in (saved with it), so the diagnosis is the
            // run's; an input from elsewhere by its shapes.
            let saved = tensors::metadata(file)
                .ok()
                .and_then(|m| Group::try_from(m.get("group")?.clone()).ok());
            let replay = SampleSpec {
                id: "replay".into(),
                group: saved.unwrap_or_else(|| replay_group(&inputs[0], &replayed)),
                ..specs[0].clone()
            };
            specs.push(replay);
            inputs.push(replayed);
        } else {
            inputs.extend(specs.iter().map(|s| materialize(case, s)));
        }
        let batch = write_samples(
            &cx.sample_dir.join("samples.safetensors"),
            specs
                .iter()
                .map(|s| s.id.as_str())
                .zip(inputs.iter().map(Vec::as_slice)),
        )?;
        let files = specs
            .iter()
            .map(|s| SampleRef {
                file: batch.clone(),
                sample: s.id.clone(),
            })
            .collect();
        cx.samples = Some(Samples {
            specs,
            inputs,
            files,
            expected: Vec::new(),
        });
        Ok(())
    }

    /// 3. Every variant the case declares, exported on the trace input (sample 0).
    pub(super) fn export(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        let variants = cx.case.variants.clone();
        let exported = match self.export_these(cx, &variants) {
            Err(e) if e.kind == ErrorKind::Crashed => self.isolate_crashes(cx, &variants, e)?,
            other => other?,
        };
        for (v, e) in &exported.exports {
            cx.clock
                .worker_torch(&format!("export {v}"), e.seconds * 1e3);
        }
        let case = &cx.case;
        if exported.eager_state_changed {
            return Err(ErrorBody::new(
                ErrorKind::EagerStateChanged,
                "exporting changed the eager model's parameters or buffers",
            ));
        }
        if let Some(v) = case
            .variants
            .iter()
            .find(|v| !exported.exports.contains_key(v))
        {
            return Err(ErrorBody::new(
                ErrorKind::Protocol,
                format!("no {v} export in the reply"),
            ));
        }
        cx.exported = Some(exported);
        Ok(())
    }

    /// Export these variants in the case's child.
    fn export_these(
        &mut self,
        cx: &mut CaseRun,
        variants: &[Variant],
    ) -> Result<ExportReply, ErrorBody> {
        let (case, samples) = (&cx.case, cx.samples.as_ref().expect("made"));
        let names = case.wire_names();
        self.call(&mut cx.clock, |w, timeout| {
            w.export(
                &case.name,
                &samples.files[0],
                &names,
                variants.iter().map(|&v| case.export_spec(v)).collect(),
                &samples.specs[0].dims,
                &cx.artifact_dir,
                timeout,
            )
        })
    }

    /// The case's child died while exporting (tracing can crash in torch itself, as a LAPACK
    /// error inside a traced `try` does): export each variant alone in a fresh child to find the
    /// ones that crash, which get a failed export saying so, then the others together in the
    /// child the case goes on in. A crash costs only its variant's verdict.
    fn isolate_crashes(
        &mut self,
        cx: &mut CaseRun,
        variants: &[Variant],
        crash: ErrorBody,
    ) -> Result<ExportReply, ErrorBody> {
        let mut crashed = BTreeMap::new();
        for &v in variants {
            self.fresh_child(cx)?;
            match self.export_these(cx, &[v]) {
                Err(e) if e.kind == ErrorKind::Crashed => {
                    crashed.insert(v, crashed_export(v, &e));
                }
                other => drop(other?),
            }
        }
        if crashed.is_empty() {
            return Err(crash); // no variant crashes alone: the case does
        }
        self.fresh_child(cx)?;
        let rest: Vec<Variant> = variants
            .iter()
            .filter(|v| !crashed.contains_key(v))
            .copied()
            .collect();
        let mut reply = if rest.is_empty() {
            ExportReply {
                exports: BTreeMap::new(),
                eager_state_changed: false,
                evidence: Default::default(),
            }
        } else {
            self.export_these(cx, &rest)?
        };
        reply.exports.extend(crashed);
        Ok(reply)
    }

    /// A new child of the fork server for the case, with its model loaded.
    fn fresh_child(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        if let Some(w) = self.worker.as_mut() {
            if w.end_case().is_err() {
                self.worker = None;
            }
        }
        let module = module_ref(&cx.case);
        self.call(&mut cx.clock, |w, timeout| {
            w.begin_case(timeout, Some(&module))
        })?;
        self.load(cx)
    }

    /// 4. Eager on every sample, and a second time on the first two (determinism).
    pub(super) fn eager_samples(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        let samples = cx.samples.as_ref().expect("made");
        let mut calls: Vec<EagerCall> = (0..samples.specs.len())
            .map(|i| eager_call(samples, i, None))
            .collect();
        let repeats = samples.specs.len().min(2);
        calls.extend((0..repeats).map(|i| eager_call(samples, i, Some("again"))));
        let (mut outputs, seconds): (Vec<Value>, Vec<f64>) = self
            .eager(&mut cx.clock, &cx.case, &cx.sample_dir, &calls)?
            .into_iter()
            .unzip();
        cx.clock
            .watch
            .carve("eager forward", seconds.iter().sum::<f64>() * 1e3);
        let again = outputs.split_off(samples.specs.len());
        cx.nondeterministic = (0..repeats).find_map(|i| {
            let m = compare(&outputs[i], &again[i], &cx.tol)
                .mismatches
                .into_iter()
                .next()?;
            Some(format!(
                "two eager runs on {} ({}), the second with uninitialized memory filled, differ at {}: {}",
                samples.specs[i].id,
                describe_tensors(&samples.inputs[i]),
                m.path,
                m.detail
            ))
        });
        for (i, s) in samples.specs.iter().enumerate() {
            cx.result.samples.push(SampleInfo {
                id: s.id.clone(),
                group: s.group.clone().into(),
                inputs: describe_tensors(&samples.inputs[i]),
                eager_ms: seconds.get(i).copied().unwrap_or(0.0) * 1000.0,
            });
        }
        cx.samples.as_mut().expect("made").expected = outputs;
        Ok(())
    }

    /// Eager on each call; outputs (with the seconds the worker timed the forward call) in order.
    pub(super) fn eager(
        &mut self,
        clock: &mut Clock,
        case: &Case,
        dir: &Path,
        calls: &[EagerCall],
    ) -> Result<Vec<(Value, f64)>, ErrorBody> {
        let replies = self.worker_runs(clock, case, dir, calls, None)?;
        // The worker writes one file per call: read it once.
        let mut read: Option<(PathBuf, HashMap<String, Tensor>)> = None;
        let mut values = Vec::with_capacity(replies.len());
        for (e, call) in replies.iter().zip(calls) {
            values.push(eager_value(e, &call.what, &mut read)?);
        }
        clock.torch_ms += values.iter().map(|(_, s)| s * 1e3).sum::<f64>();
        Ok(values)
    }

    /// Eager (or, given `program`, a saved torch.export program) on each call in the worker:
    /// one reply per call, in order.
    pub(super) fn worker_runs(
        &mut self,
        clock: &mut Clock,
        case: &Case,
        dir: &Path,
        calls: &[EagerCall],
        program: Option<harness::worker::ProgramRef<'_>>,
    ) -> Result<Vec<harness::worker::EagerResult>, ErrorBody> {
        let names = case.wire_names();
        let requests: Vec<(String, SampleRef, bool)> = calls
            .iter()
            .map(|c| (c.id.clone(), c.file.clone(), c.fill))
            .collect();
        let replies = self.call(clock, |w, timeout| {
            w.eager(&case.name, &requests, (&names, program), dir, timeout)
        })?;
        if replies.len() != calls.len() {
            return Err(ErrorBody::new(
                ErrorKind::Protocol,
                format!(
                    "{} eager replies for {} samples",
                    replies.len(),
                    calls.len()
                ),
            ));
        }
        Ok(replies)
    }

    /// 7. Per variant, while the case's child is there: re-trace a variant that recorded one run,
    ///    and shrink the first failing sample.
    pub(super) fn explain_failures(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        for variant in cx.case.variants.clone() {
            if variant.def().records_one_run {
                let retraces = self.retraces(cx, variant)?;
                cx.variants.entry(variant).or_default().retraces = retraces;
                cx.clock.lap("retrace");
            }
            // A replayed input is already minimal.
            if cx.nondeterministic.is_none() && !cx.is_replay() {
                let cx_ = self.shrink(cx, variant)?;
                cx.variants.entry(variant).or_default().counterexample = cx_;
                cx.clock.lap(&format!("shrink {variant}"));
            }
        }
        Ok(())
    }

    /// Trace again on the first failing trace-shape sample and the first failing new-shape one.
    fn retraces(&mut self, cx: &mut CaseRun, variant: Variant) -> Result<Retraces, ErrorBody> {
        let failures = super::verdict::sample_failures(cx, variant);
        // Diverging on the input it was made on, or (made elsewhere) on every input: no
        // specialization to explain.
        let on_s0 = failures.first().is_some_and(|(_, f)| f.is_some());
        if (on_s0 && variant.def().made_on_trace_input)
            || harness::diagnose::diverges_everywhere(&failures)
        {
            return Ok(Retraces::default());
        }
        let first = |pred: &dyn Fn(&Group) -> bool| {
            failures.iter().position(|(g, f)| pred(g) && f.is_some())
        };
        let values = first(&|g| *g == Group::Values);
        let shapes = first(&|g| matches!(g, Group::Dim(_) | Group::Joint));
        Ok(Retraces {
            values: values.map(|i| self.retrace(cx, variant, i)).transpose()?,
            shapes: shapes.map(|i| self.retrace(cx, variant, i)).transpose()?,
        })
    }

    fn retrace(
        &mut self,
        cx: &mut CaseRun,
        variant: Variant,
        i: usize,
    ) -> Result<(String, harness::worker::Retrace), ErrorBody> {
        let samples = cx.samples.as_ref().expect("made");
        let (case, input) = (&cx.case, samples.files[i].clone());
        let names = case.wire_names();
        let r = self.call(&mut cx.clock, |w, timeout| {
            w.retrace(&case.name, &input, &names, variant.as_str(), timeout)
        })?;
        cx.clock.torch_ms += r.seconds * 1e3;
        let label = format!(
            "{} ({})",
            input.sample,
            describe_tensors(&samples.inputs[i])
        );
        Ok((label, r))
    }

    /// Shrink the variant's first failing sample (see [`shrink_start`]) and save the minimal
    /// counterexample.
    fn shrink(
        &mut self,
        cx: &mut CaseRun,
        variant: Variant,
    ) -> Result<Option<Counterexample>, ErrorBody> {
        let Some(i) = shrink_start(cx, variant) else {
            return Ok(None);
        };
        let Some(run) = cx.variants.get_mut(&variant) else {
            return Ok(None);
        };
        let Some(runnable) = run.runnable.take() else {
            return Ok(None);
        };
        let wants_raise = matches!(run.runs[i], SampleRun::Raised(_));
        let args = run.args.clone();
        let found = self.shrink_with(cx, (&runnable, &args), i, wants_raise);
        let min = found.and_then(|(min, round_trips)| {
            self.save_counterexample(cx, (variant, &runnable, &args), i, &min, round_trips)
        });
        cx.variants.get_mut(&variant).expect("present").runnable = Some(runnable);
        min.map(Some)
    }

    /// The proptest search: a candidate fails when eager accepts it and the variant still
    /// diverges the same way (raises, or mismatches) as on the original sample.
    fn shrink_with(
        &mut self,
        cx: &mut CaseRun,
        variant: (&Runnable, &[super::io::Slot]),
        i: usize,
        wants_raise: bool,
    ) -> Result<(SampleSpec, usize), ErrorBody> {
        let start = cx.samples().specs[i].clone();
        let mut fatal = None;
        let mut n = 0usize;
        let case = cx.case.clone();
        let found = shrink::shrink(&case, &start, MAX_SHRINK_ROUND_TRIPS, |cand| {
            if fatal.is_some() {
                return false;
            }
            n += 1;
            let id = format!("{}-shrink{n}", start.id);
            match self.candidate(cx, variant, cand, &id) {
                Ok(Some(SampleRun::Match(_))) | Ok(None) => false,
                Ok(Some(SampleRun::Raised(_))) => wants_raise,
                Ok(Some(SampleRun::Mismatch(_))) => !wants_raise,
                Err(e) => {
                    fatal = Some(e);
                    false
                }
            }
        });
        fatal.map_or(Ok(found), Err)
    }

    /// One shrink candidate: eager on it, then the variant (`None`: eager rejects the input).
    fn candidate(
        &mut self,
        cx: &mut CaseRun,
        variant: (&Runnable, &[super::io::Slot]),
        cand: &SampleSpec,
        id: &str,
    ) -> Result<Option<SampleRun>, ErrorBody> {
        let inputs = materialize(&cx.case, cand);
        let (expected, file) = match self.eager_one(cx, id, &inputs) {
            Ok(v) => v,
            Err(e) if e.kind == ErrorKind::EagerRaised => return Ok(None),
            Err(e) => return Err(e),
        };
        self.run_one(cx, variant, (&inputs, &file), &expected)
            .map(Some)
    }

    /// Eager on inputs made outside the plan (a shrink candidate), written to their own file.
    fn eager_one(
        &mut self,
        cx: &mut CaseRun,
        id: &str,
        inputs: &[(String, Tensor)],
    ) -> Result<(Value, SampleRef), ErrorBody> {
        let path = write_sample(&cx.sample_dir, id, inputs)?;
        let file = SampleRef {
            file: path,
            sample: id.to_string(),
        };
        let call = EagerCall {
            id: id.to_string(),
            file: file.clone(),
            what: format!("sample {id} ({})", describe_tensors(inputs)),
            fill: false,
        };
        let mut out = self.eager(&mut cx.clock, &cx.case, &cx.sample_dir, &[call])?;
        Ok((out.remove(0).0, file))
    }

    /// The minimal sample, run once more for its numbers, saved for replay.
    fn save_counterexample(
        &mut self,
        cx: &mut CaseRun,
        (variant, runnable, args): (Variant, &Runnable, &[super::io::Slot]),
        i: usize,
        min: &SampleSpec,
        round_trips: usize,
    ) -> Result<Counterexample, ErrorBody> {
        let from = cx.samples().specs[i].id.clone();
        let inputs = materialize(&cx.case, min);
        let (expected, file) = self.eager_one(cx, &format!("{from}-min"), &inputs)?;
        let (kind, detail, max_abs, max_rel) =
            match self.run_one(cx, (runnable, args), (&inputs, &file), &expected)? {
                SampleRun::Raised(e) => ("raised", e, 0.0, 0.0),
                SampleRun::Mismatch(c) | SampleRun::Match(c) => {
                    let d = c
                        .mismatches
                        .first()
                        .map(|m| format!("{}: {}", m.path, m.detail))
                        .unwrap_or_default();
                    ("mismatch", d, c.max_abs, c.max_rel)
                }
            };
        let dir = self.opts.out_dir.join("counterexamples");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{}: {e}", dir.display())))?;
        let file = dir.join(format!("{}.{variant}.safetensors", cx.case.name));
        // A case named by its folder (`zoo/resnet18`) keeps its counterexamples in that folder.
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{}: {e}", parent.display())))?;
        }
        // The group of the sample it was shrunk from: its replay is judged as that group was.
        let group = String::from(cx.samples().specs[i].group.clone());
        let meta = BTreeMap::from([("group".to_string(), group)]);
        tensors::write_with_metadata(&file, &inputs, &meta)
            .map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{e:#}")))?;
        let replay = format!(
            "{} verify {} --seed {} --replay {}",
            harness::command(),
            shell_word(&cx.case.file.display().to_string()),
            cx.seed,
            shell_word(&file.display().to_string())
        );
        Ok(Counterexample {
            from_sample: from,
            inputs: describe_tensors(&inputs),
            shapes: inputs.iter().map(|(_, t)| t.size()).collect(),
            dims: min.dims.clone(),
            precision: min.precision,
            kind: kind.into(),
            detail,
            max_abs,
            max_rel,
            file: file.display().to_string(),
            replay,
            round_trips,
        })
    }
}

/// The sample to shrink: the first that fails, except that for a variant that records one run
/// the first failing `values` sample comes before failing new shapes, as in diagnosis: its
/// counterexample then replays to the run's verdict (a scalar input drawn anew in a `dim:` sample
/// would make a frozen value look like a frozen shape there).
fn shrink_start(cx: &CaseRun, variant: Variant) -> Option<usize> {
    let runs = &cx.variants.get(&variant)?.runs;
    let specs = &cx.samples().specs;
    let failing = |pred: &dyn Fn(&Group) -> bool| {
        runs.iter()
            .zip(specs)
            .position(|(r, s)| !matches!(r, SampleRun::Match(_)) && pred(&s.group))
    };
    let first = failing(&|_| true)?;
    if specs[first].group == Group::Trace || !variant.def().records_one_run {
        return Some(first);
    }
    failing(&|g| *g == Group::Values).or(Some(first))
}

/// The group a replayed input belongs to against the trace input: the trace shapes and dtypes
/// (new values), or new shapes.
fn replay_group(trace: &[(String, Tensor)], replayed: &[(String, Tensor)]) -> Group {
    let same = trace.len() == replayed.len()
        && trace
            .iter()
            .zip(replayed)
            .all(|((n, a), (m, b))| n == m && a.size() == b.size() && a.kind() == b.kind());
    if same {
        Group::Values
    } else {
        Group::Joint
    }
}

/// The failed export of a variant whose export crashed its process.
fn crashed_export(v: Variant, crash: &ErrorBody) -> Export {
    Export {
        ok: false,
        path: None,
        code: None,
        constants: BTreeMap::new(),
        modules: Vec::new(),
        error: Some(ErrorBody::new(
            v.export_error_kind(),
            format!(
                "exporting {v} (the worker's `{}`) crashed its process: {}",
                v.def().method,
                crash.message
            ),
        )),
        warnings: Vec::new(),
        seconds: 0.0,
        device_pins: Vec::new(),
        args: None,
        defaults: BTreeMap::new(),
        bound: Vec::new(),
    }
}

/// Refuse a sample that would hold more elements than the budget.
fn within_budget(case: &Case, s: &SampleSpec, budget: u64) -> Result<(), ErrorBody> {
    let n = plan::elements(case, s);
    if n <= u128::from(budget) {
        return Ok(());
    }
    let dims: Vec<String> = s.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Err(ErrorBody::new(
        ErrorKind::TooLarge,
        format!(
            "sample {} ({}; dims {}) would hold {n} elements, above the budget of {budget} per \
             sample (raise check.max_elements or --max-elements, or lower the dims' max)",
            s.id,
            String::from(s.group.clone()),
            dims.join(" ")
        ),
    ))
}

/// The eager call for planned sample `i` (`again`: its determinism repeat).
pub(super) fn eager_call(samples: &Samples, i: usize, again: Option<&str>) -> EagerCall {
    let spec = &samples.specs[i];
    EagerCall {
        id: again.map_or(spec.id.clone(), |a| format!("{}#{a}", spec.id)),
        fill: again.is_some(),
        file: samples.files[i].clone(),
        what: format!(
            "sample {} ({}; {})",
            spec.id,
            String::from(spec.group.clone()),
            describe_tensors(&samples.inputs[i])
        ),
    }
}

/// One eager reply as a value (its tensors read from the call's file, once).
pub(super) fn eager_value(
    e: &harness::worker::EagerResult,
    what: &str,
    read: &mut Option<(PathBuf, HashMap<String, Tensor>)>,
) -> Result<(Value, f64), ErrorBody> {
    if !e.ok {
        let mut err = e
            .error
            .clone()
            .unwrap_or_else(|| ErrorBody::new(ErrorKind::Eager, String::new()));
        err.message = if err.kind == ErrorKind::UnsupportedOutput {
            format!(
                "eager's output on {what} cannot be compared: {}",
                err.message
            )
        } else {
            err.kind = ErrorKind::EagerRaised;
            format!("eager raised on {what}: {}", err.message)
        };
        return Err(err);
    }
    let (Some(path), Some(output)) = (&e.path, &e.output) else {
        return Err(ErrorBody::new(
            ErrorKind::Protocol,
            format!("the eager reply for {what} lacks its output"),
        ));
    };
    if read.as_ref().is_none_or(|(p, _)| p != path) {
        // Every dtype travels in a form safetensors carries (see the worker's `transportable`);
        // a file that still cannot be read is the output's problem, not a file to look for.
        let t = tensors::read(path).map_err(|e| {
            let why = format!("{e:#}");
            let why = why.rsplit(": ").next().unwrap_or(&why).to_string();
            ErrorBody::new(
                ErrorKind::UnsupportedOutput,
                format!("eager's output on {what} cannot be read back ({why})"),
            )
        })?;
        *read = Some((path.clone(), t));
    }
    let tensors = &mut read.as_mut().expect("just read").1;
    let value = Value::from_wire(output, tensors)
        .map_err(|m| ErrorBody::new(ErrorKind::UnsupportedOutput, format!("{what}: {m}")))?;
    Ok((value, e.seconds.unwrap_or(0.0)))
}
