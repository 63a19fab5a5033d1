//! What a person reads after a chaos run: a markdown summary table (fine in
//! a terminal, pasteable into docs/reliability.md) and an SVG timeline
//! (roles per node, faults as bands, write throughput, errors), optionally
//! rendered to PNG with `rsvg-convert` or ImageMagick's `convert` when one
//! is installed (neither is required).
//!
//! Hazards: node names and fault kinds come from the history file and are
//! XML-escaped before they reach the SVG. The SVG is built with plain
//! string formatting and bins all per-operation data, so an hour-long run
//! (hundreds of thousands of operations) still gives a file of a few
//! hundred kilobytes.

mod svg;
mod table;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::check::CheckReport;
use super::history::History;
pub use svg::timeline_svg;
pub use table::summary_markdown;

/// Files written by [`write_all`].
#[derive(Clone, Debug)]
pub struct Written {
    pub report_json: PathBuf,
    pub summary: PathBuf,
    pub svg: PathBuf,
    /// `None` when no PNG converter is installed or it failed (logged).
    pub png: Option<PathBuf>,
}

/// Writes `check.json`, `summary.md`, `timeline.svg` and, when ImageMagick
/// or librsvg is installed, `timeline.png` into `dir`.
pub fn write_all(dir: &Path, h: &History, r: &CheckReport) -> anyhow::Result<Written> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let report_json = dir.join("check.json");
    let json = serde_json::to_vec_pretty(r).context("serialize the check report")?;
    std::fs::write(&report_json, json)
        .with_context(|| format!("write {}", report_json.display()))?;
    let summary = dir.join("summary.md");
    std::fs::write(&summary, summary_markdown(h, r))
        .with_context(|| format!("write {}", summary.display()))?;
    let svg = dir.join("timeline.svg");
    std::fs::write(&svg, timeline_svg(h, r)).with_context(|| format!("write {}", svg.display()))?;
    let png_path = dir.join("timeline.png");
    let png = match svg_to_png(&svg, &png_path) {
        Ok(true) => Some(png_path),
        Ok(false) => {
            tracing::info!(
                "no rsvg-convert or ImageMagick: skipping the PNG (the SVG is complete)"
            );
            None
        }
        Err(e) => {
            tracing::warn!("render the timeline to PNG: {e:#}");
            None
        }
    };
    Ok(Written {
        report_json,
        summary,
        svg,
        png,
    })
}

/// Renders `svg` to `png` with `rsvg-convert` (librsvg) or else
/// ImageMagick's `convert`. `Ok(false)` when neither is installed; an
/// error when one ran and failed.
pub fn svg_to_png(svg: &Path, png: &Path) -> anyhow::Result<bool> {
    let mut rsvg = Command::new("rsvg-convert");
    rsvg.arg("-b").arg("white").arg("-o").arg(png).arg(svg);
    let mut convert = Command::new("convert");
    convert.arg("-density").arg("120").arg(svg).arg(png);
    for mut cmd in [rsvg, convert] {
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("run {cmd:?}")),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return Ok(true);
        }
        // A stand-in `convert` that says ImageMagick is missing.
        if stderr.contains("not installed") {
            continue;
        }
        bail!("{cmd:?} exited with {}: {}", out.status, stderr.trim());
    }
    Ok(false)
}

/// "850 ms", "4.2 s", "12 m 5 s", "1 h 2 m".
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{} m {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::check::{check, sample_history};

    #[test]
    fn human_durations() {
        assert_eq!(human_ms(850), "850 ms");
        assert_eq!(human_ms(4_249), "4.2 s");
        assert_eq!(human_ms(725_000), "12 m 5 s");
        assert_eq!(human_ms(3_720_000), "1 h 2 m");
    }

    #[test]
    fn write_all_writes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let h = sample_history(5);
        let r = check(&h);
        let w = write_all(dir.path(), &h, &r).unwrap();
        for p in [&w.report_json, &w.summary, &w.svg] {
            assert!(std::fs::metadata(p).unwrap().len() > 100, "{}", p.display());
        }
        let back: CheckReport =
            serde_json::from_slice(&std::fs::read(&w.report_json).unwrap()).unwrap();
        assert!(back.ok());
    }
}
