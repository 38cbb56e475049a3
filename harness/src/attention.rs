//! Warnings on a variant whatever its outcome: what a green variant still has to say.
//!
//! A variant that matches eager can still carry signs of a pitfall the samples did not reach:
//! warnings raised while exporting (a `TracerWarning` at the user's file:line), a device its
//! graph pins that the graph it is diffed against does not (`torch.device("cpu")` in the traced
//! `.code` only), and checks that could not run (`not_judged`). Dynamic evidence decides the
//! verdict; these only ask for a look, so the console prints them under a PASS line and the
//! report counts them and lists the variant under "needs attention". Everything here is read
//! from a `CaseResult`, so the console and a report re-rendered later agree.

use crate::case::Variant;
use crate::results::{CaseResult, VariantResult};

/// What a warning is, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Raised at a line of the user's code.
    UserCode,
    /// A check that could not run (`not_judged`).
    NotJudged,
    /// A device constant in this graph and not in the one it is diffed against.
    DevicePin,
    /// Raised inside a library (torch, site-packages).
    Library,
}

/// One warning on a variant, as one line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub kind: Kind,
    pub text: String,
    /// What a finding's evidence would name if it cites this warning: `file:line` or the device.
    pub cites: String,
}

impl Warning {
    /// Already said by one of the variant's findings (its location or evidence names it).
    pub fn cited_by(&self, v: &VariantResult) -> bool {
        v.findings.iter().any(|f| {
            f.location.as_deref() == Some(self.cites.as_str())
                || f.evidence.iter().any(|e| e.contains(&self.cites))
        })
    }
}

/// The variant's warnings, deduplicated, user code first. `short` shortens file paths.
pub fn warnings(
    case: &CaseResult,
    variant: Variant,
    short: &dyn Fn(&str) -> String,
) -> Vec<Warning> {
    let Some(v) = case.variants.get(&variant) else {
        return Vec::new();
    };
    let mut out: Vec<Warning> = export_warnings(v, short);
    out.extend(v.not_judged.iter().map(|w| Warning {
        kind: Kind::NotJudged,
        text: w.clone(),
        cites: w.clone(),
    }));
    // A pin no probe could judge is already a `not_judged` warning that names it.
    if v.not_judged.is_empty() {
        out.extend(device_pins(case, variant));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|w| seen.insert(w.text.clone()));
    out.sort_by_key(|w| w.kind);
    out
}

fn export_warnings(v: &VariantResult, short: &dyn Fn(&str) -> String) -> Vec<Warning> {
    v.export
        .warnings
        .iter()
        .map(|w| {
            let times = if w.count > 1 {
                format!(" ({}x)", w.count)
            } else {
                String::new()
            };
            let source = if w.source_line.is_empty() {
                String::new()
            } else {
                format!(": `{}`", w.source_line.trim())
            };
            let message = w.message.lines().next().unwrap_or_default().trim();
            let at = format!("{}:{}", short(&w.file), w.line);
            Warning {
                kind: if is_library(&w.file) {
                    Kind::Library
                } else {
                    Kind::UserCode
                },
                text: format!("{} at {at}{times}{source}: {message}", w.category),
                cites: at,
            }
        })
        .collect()
}

/// A file of an installed library rather than of the user's project.
fn is_library(file: &str) -> bool {
    ["site-packages/", "dist-packages/", "/lib/python", "<"]
        .iter()
        .any(|m| file.contains(m))
}

/// Devices this variant's `.code` (and its submodules') names that a variant diffed against it
/// does not: `device("cpu")` recorded by tracing, which scripting computes.
fn device_pins(case: &CaseResult, variant: Variant) -> Vec<Warning> {
    let Some(mine) = case.variants.get(&variant) else {
        return Vec::new();
    };
    let others: Vec<(Variant, &VariantResult)> = case
        .variants
        .iter()
        .filter(|(o, _)| o.diff_base() == Some(variant))
        .map(|(o, r)| (*o, r))
        .collect();
    // A probe that ran and saw the variant follow eager has judged the pin; say so.
    let consequence = match &mine.device_check {
        Some(d) if !d.flagged && !d.detail.starts_with("not run") => {
            format!("the {} probe saw it behave as eager does", d.device)
        }
        _ => "on another device this artifact may keep work on {} or fail".to_string(),
    };
    let mut out = Vec::new();
    for device in devices(mine) {
        for (o, r) in &others {
            if r.export.code.is_some() && !devices(r).contains(&device) {
                out.push(Warning {
                    kind: Kind::DevicePin,
                    text: format!(
                        "the {variant} graph pins {device}, the {o} graph does not: {}",
                        consequence.replace("{}", device_name(&device))
                    ),
                    cites: device.clone(),
                });
            }
        }
    }
    out
}

/// The `device("…")` literals of a variant's code, in order of appearance, once each.
fn devices(v: &VariantResult) -> Vec<String> {
    let mut found = Vec::new();
    let texts = v
        .export
        .code
        .iter()
        .chain(v.export.modules.iter().map(|m| &m.code));
    for text in texts {
        for (i, _) in text.match_indices("device(\"") {
            let rest = &text[i..];
            if let Some(end) = rest.find("\")") {
                let d = rest[..end + 2].to_string();
                if !found.contains(&d) {
                    found.push(d);
                }
            }
        }
    }
    found
}

/// `cpu` for `device("cpu")`.
fn device_name(device: &str) -> &str {
    device
        .trim_start_matches("device(\"")
        .trim_end_matches("\")")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{ModuleCode, Outcome, TraceWarning};

    fn warning(file: &str, line: u32, count: u32) -> TraceWarning {
        TraceWarning {
            category: "TracerWarning".into(),
            message: "Converting a tensor to a Python boolean\nmore".into(),
            file: file.into(),
            line,
            source_line: "  if x.sum() > 0:".into(),
            count,
        }
    }

    fn case(traced_code: &str, scripted_code: &str) -> CaseResult {
        let mut c = CaseResult::ran_for_test("c");
        let mut t = VariantResult::for_test(Outcome::Pass);
        t.export.modules = vec![ModuleCode {
            name: "m".into(),
            code: traced_code.into(),
            constants: Default::default(),
        }];
        t.export.code = Some("def forward(self, x):\n  return self.m(x)\n".into());
        let mut s = VariantResult::for_test(Outcome::Pass);
        s.export.code = Some(scripted_code.into());
        c.variants.insert(Variant::named("traced").unwrap(), t);
        c.variants.insert(Variant::named("scripted").unwrap(), s);
        c
    }

    #[track_caller]
    fn check(c: &CaseResult, variant: &str, expect: &[&str]) {
        let short = |p: &str| p.trim_start_matches("/root/").to_string();
        let got: Vec<String> = warnings(c, Variant::named(variant).unwrap(), &short)
            .into_iter()
            .map(|w| w.text)
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn user_code_first_deduplicated_with_pins_and_unjudged_checks() {
        let mut c = case(
            "torch.zeros([2], device=torch.device(\"cpu\"))",
            "torch.zeros([2])",
        );
        let t = c
            .variants
            .get_mut(&Variant::named("traced").unwrap())
            .unwrap();
        t.export.warnings = vec![
            warning("/venv/lib/python3.11/site-packages/torch/x.py", 7, 1),
            warning("/root/m.py", 3, 2),
            warning("/root/m.py", 3, 2),
        ];
        check(
            &c,
            "traced",
            &[
                "TracerWarning at m.py:3 (2x): `if x.sum() > 0:`: Converting a tensor to a Python boolean",
                "the traced graph pins device(\"cpu\"), the scripted graph does not: on another device this artifact may keep work on cpu or fail",
                "TracerWarning at /venv/lib/python3.11/site-packages/torch/x.py:7: `if x.sum() > 0:`: Converting a tensor to a Python boolean",
            ],
        );
        // The scripted graph is not diffed against anything: no pin to compare.
        check(&c, "scripted", &[]);
        // A probe that saw the variant follow eager says so.
        let t = c
            .variants
            .get_mut(&Variant::named("traced").unwrap())
            .unwrap();
        t.export.warnings.clear();
        t.device_check = Some(crate::diagnose::DeviceCheck {
            device: "meta".into(),
            flagged: false,
            detail: "on meta, traced returns a float32 tensor like eager".into(),
        });
        check(
            &c,
            "traced",
            &["the traced graph pins device(\"cpu\"), the scripted graph does not: the meta probe saw it behave as eager does"],
        );
        // A pin no probe could judge is said once, by `not_judged`.
        let t = c
            .variants
            .get_mut(&Variant::named("traced").unwrap())
            .unwrap();
        t.export.warnings.clear();
        t.not_judged = vec!["device portability not judged".into()];
        check(&c, "traced", &["device portability not judged"]);
    }

    #[test]
    fn no_pin_when_both_graphs_name_the_device() {
        let pinned = "torch.zeros([2], device=torch.device(\"cpu\"))";
        check(&case(pinned, pinned), "traced", &[]);
        check(&case("torch.zeros([2])", pinned), "traced", &[]);
    }
}
