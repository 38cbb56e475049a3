//! Reports: what a user opens when the gate goes red, rendered from saved results.json only.
//!
//! A run's `Results` (read back from results.json, or several of them merged, for sharded runs)
//! become a self-contained HTML page (`html`), a JUnit XML file for CI test tabs (`junit`) and,
//! against a previous run, a regression view (`baseline`: new failures, fixed variants, changed
//! `.code`, notable timing changes). Nothing here looks at live state (workers, artifacts,
//! case files): the same results.json always renders the same report, so `harness report`
//! can re-render any saved run.

pub mod baseline;
pub mod html;
pub mod junit;
pub mod paths;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::results::Results;

pub use baseline::{compare, Regression};

/// The files one report step wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub html: PathBuf,
    /// The timestamped copy of the HTML, under `OUT/history/`.
    pub history: PathBuf,
    pub junit: PathBuf,
}

/// Write `index.html`, its timestamped copy `history/<UTC>.html` and `junit.xml` into `out`.
pub fn write(
    results: &Results,
    regression: Option<&Regression>,
    out: &Path,
) -> anyhow::Result<Written> {
    std::fs::create_dir_all(out.join("history"))?;
    let page = html::render(results, regression)?;
    let html_path = out.join("index.html");
    write_atomic(&html_path, page.as_bytes())?;
    let stamp = results
        .started_at
        .as_deref()
        .map(|s| s.replace([':', '-'], ""))
        .unwrap_or_else(|| utc_stamp(SystemTime::now()));
    let history = out.join("history").join(format!("{stamp}.html"));
    write_atomic(&history, page.as_bytes())?;
    let junit_path = out.join("junit.xml");
    write_atomic(&junit_path, junit::render(results)?.as_bytes())?;
    Ok(Written {
        html: html_path,
        history,
        junit: junit_path,
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)?;
    // Readable like any other output (NamedTempFile makes 0600 files); best effort.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    Ok(())
}

/// Several results files as one: cases concatenated in order, a case named again replacing
/// the earlier one (a re-run shard wins). Versions come from the first; durations add up.
pub fn merge(mut parts: Vec<Results>) -> anyhow::Result<Results> {
    if parts.is_empty() {
        anyhow::bail!("no results to merge");
    }
    let mut merged = parts.remove(0);
    for p in parts {
        if p.schema != merged.schema {
            anyhow::bail!(
                "cannot merge results of schema {} and {}",
                merged.schema,
                p.schema
            );
        }
        merged.duration_ms += p.duration_ms;
        merged.complete &= p.complete;
        if merged.seed != p.seed {
            merged.seed = None;
        }
        if merged.started_at.is_none() || p.started_at < merged.started_at {
            merged.started_at = p.started_at.clone().or(merged.started_at);
        }
        for c in p.cases {
            match merged.cases.iter_mut().find(|m| m.name == c.name) {
                Some(slot) => *slot = c,
                None => merged.cases.push(c),
            }
        }
    }
    Ok(merged)
}

/// `2026-11-22T00:17:24Z`: RFC 3339 in UTC, to the second.
pub fn utc_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `20261122T001724Z`: the same instant, safe in file names.
pub fn utc_stamp(t: SystemTime) -> String {
    utc_rfc3339(t).replace([':', '-'], "")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_timestamps() {
        let t = |s: u64| utc_rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(t(0), "1970-01-01T00:00:00Z");
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(1_795_307_844), "2026-11-22T00:37:24Z");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_307_844)),
            "20261122T003724Z"
        );
    }
}
