//! The SVG timeline, built with plain string formatting. Top to bottom:
//! title, fault labels, one lane per node coloured by its sampled role,
//! acknowledged writes per second (a line), failed and unknown operations
//! (bars up and down), broken promises (diamonds), the time axis in
//! seconds, and a legend. Faults are translucent bands across all of it.
//!
//! Hazard: everything per-operation is binned (bins of 0.25 s up to 5 min,
//! a few pixels wide), and fault labels that would overlap are left out
//! (the band colour and the legend still name the kind), so a run of any
//! length stays readable and small.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::human_ms;
use crate::chaos::check::{CheckReport, SplitBrain};
use crate::chaos::history::{History, OpKind, Outcome};

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 30.0;
const LANE_H: f64 = 24.0;
const LANE_GAP: f64 = 6.0;
const LABEL_ROWS: usize = 3;
const THR_H: f64 = 150.0;
const ERR_H: f64 = 40.0;
const VIOL_H: f64 = 14.0;

const PRIMARY: &str = "#2e7d32";
const STANDBY: &str = "#90caf9";
const DOWN: &str = "#c62828";
const UNKNOWN_ROLE: &str = "#bdbdbd";
const LINE: &str = "#0d47a1";
const FAILED: &str = "#d32f2f";
const UNKNOWN_OP: &str = "#ef6c00";
const VIOLATION: &str = "#c2185b";
const GAP: &str = "#212121";

/// Known fault kinds get fixed colours; others are hashed onto the palette.
const KNOWN_KINDS: [&str; 14] = [
    "kill_postgres",
    "kill_agent",
    "node_crash",
    "pause_agent",
    "pause_postgres",
    "primary_from_etcd",
    "primary_from_standbys",
    "isolate_standby",
    "kill_etcd_member",
    "etcd_majority_lost",
    "switchover",
    "link_latency",
    "archive_full",
    "etcd_outage",
];
const PALETTE: [&str; 14] = [
    "#e6194b", "#f58231", "#9a6324", "#ffe119", "#bfef45", "#3cb44b", "#469990", "#42d4f4",
    "#4363d8", "#911eb4", "#f032e6", "#800000", "#808000", "#000075",
];

fn fault_color(kind: &str) -> &'static str {
    let i = KNOWN_KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_else(|| {
            let h = kind
                .bytes()
                .fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            h % PALETTE.len()
        });
    PALETTE[i % PALETTE.len()]
}

fn role_color(role: &str) -> &'static str {
    match role {
        "primary" => PRIMARY,
        "standby" => STANDBY,
        "down" => DOWN,
        _ => UNKNOWN_ROLE,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Maps run time to x and holds the vertical layout.
struct Frame {
    t_end: u64,
    lanes_top: f64,
    thr_top: f64,
    err_top: f64,
    viol_top: f64,
    axis_y: f64,
}

impl Frame {
    fn new(h: &History, t_end: u64) -> Frame {
        let lanes_top = 52.0 + LABEL_ROWS as f64 * 13.0 + 4.0;
        let lanes_bottom = lanes_top + h.nodes.len() as f64 * (LANE_H + LANE_GAP);
        let thr_top = lanes_bottom + 14.0;
        let err_top = thr_top + THR_H + 16.0;
        let viol_top = err_top + ERR_H + 6.0;
        Frame {
            t_end,
            lanes_top,
            thr_top,
            err_top,
            viol_top,
            axis_y: viol_top + VIOL_H + 4.0,
        }
    }

    fn plot_w(&self) -> f64 {
        WIDTH - LEFT - RIGHT
    }

    fn x(&self, t: u64) -> f64 {
        LEFT + self.plot_w() * t.min(self.t_end) as f64 / self.t_end as f64
    }

    fn lane_y(&self, i: usize) -> f64 {
        self.lanes_top + i as f64 * (LANE_H + LANE_GAP)
    }
}

/// The last moment the history mentions.
fn end_ms(h: &History) -> u64 {
    let ops = h.ops.iter().map(|o| o.end_ms).max().unwrap_or(0);
    let roles = h.roles.iter().map(|r| r.at_ms).max().unwrap_or(0);
    let faults = h
        .faults
        .iter()
        .map(|f| f.healed_ms.unwrap_or(f.start_ms))
        .max()
        .unwrap_or(0);
    let fin = h.final_state.as_ref().map_or(0, |f| f.at_ms);
    [h.duration_ms, ops, roles, faults, fin]
        .into_iter()
        .max()
        .unwrap_or(0)
        .max(1_000)
}

/// The whole picture as an SVG document.
pub fn timeline_svg(h: &History, r: &CheckReport) -> String {
    let f = Frame::new(h, end_ms(h));
    let mut s = String::new();
    let (legend, legend_h) = legend(h, f.axis_y + 34.0);
    let height = f.axis_y + 34.0 + legend_h + 8.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11" stroke="none">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    title(&mut s, h, r);
    lanes(&mut s, h, &f);
    fault_bands(&mut s, h, &f);
    let bins = Bins::new(h, f.t_end, f.plot_w());
    throughput(&mut s, &f, &bins);
    unavailable(&mut s, r, &f);
    errors(&mut s, &f, &bins);
    violations(&mut s, h, r, &f);
    axis(&mut s, &f);
    s.push_str(&legend);
    s.push_str("</svg>\n");
    s
}

fn title(s: &mut String, h: &History, r: &CheckReport) {
    let verdict = if r.ok() { "PASS" } else { "FAIL" };
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">pgha chaos run, seed {}: {verdict}: {} lost, {} split-brain findings, {} stale reads; {} faults, {} writes acknowledged</text>"#,
        h.seed,
        r.lost_count(),
        r.split_brain_count(),
        r.stale_reads.len(),
        h.faults.len(),
        r.writes.ok
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="38" fill="#555">{} (network: {}; writes unavailable {})</text>"##,
        esc(&h.replay),
        esc(&h.network),
        human_ms(r.availability.unavailable_ms)
    );
}

fn lanes(s: &mut String, h: &History, f: &Frame) {
    let mut per_node: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for rs in &h.roles {
        per_node
            .entry(&rs.node)
            .or_default()
            .push((rs.at_ms, &rs.role, rs.timeline));
    }
    for (i, node) in h.nodes.iter().enumerate() {
        let y = f.lane_y(i);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" font-weight="bold">{}</text><rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{LANE_H}" fill="#f5f5f5"/>"##,
            LEFT - 8.0,
            y + LANE_H / 2.0 + 4.0,
            esc(node),
            f.plot_w()
        );
        let mut samples = per_node.remove(node.as_str()).unwrap_or_default();
        samples.sort_by_key(|x| x.0);
        for (from, to, role, tl) in segments(&samples, f.t_end) {
            let (x0, x1) = (f.x(from), f.x(to));
            let _ = write!(
                s,
                r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{LANE_H}" fill="{}"/>"#,
                (x1 - x0).max(0.5),
                role_color(role)
            );
            if role == "primary" && x1 - x0 > 40.0 {
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" fill="white" font-size="10">TL{}</text>"#,
                    x0 + 4.0,
                    y + LANE_H / 2.0 + 4.0,
                    tl.map_or_else(|| "?".into(), |t| t.to_string())
                );
            }
        }
        s.push('\n');
    }
}

/// A role sample: (at, role, timeline).
type Sample<'a> = (u64, &'a str, Option<u32>);

/// Consecutive samples with the same role and timeline merged into
/// (from, to, role, timeline); the last one lasts until `t_end`.
fn segments<'a>(samples: &[Sample<'a>], t_end: u64) -> Vec<(u64, u64, &'a str, Option<u32>)> {
    let mut out: Vec<(u64, u64, &str, Option<u32>)> = Vec::new();
    for (i, &(at, role, tl)) in samples.iter().enumerate() {
        let to = samples.get(i + 1).map_or(t_end, |n| n.0);
        match out.last_mut() {
            Some(last) if last.2 == role && last.3 == tl && last.1 == at => last.1 = to,
            _ => out.push((at, to, role, tl)),
        }
    }
    out
}

/// Bands from start to heal across every lane and chart, a tick on the
/// target's lane, and labels in the first free row above the lanes.
fn fault_bands(s: &mut String, h: &History, f: &Frame) {
    let top = f.lanes_top;
    let bottom = f.err_top + ERR_H;
    let mut row_end = [f64::MIN; LABEL_ROWS];
    for fault in &h.faults {
        let color = fault_color(&fault.kind);
        let x0 = f.x(fault.start_ms);
        let x1 = f.x(fault.healed_ms.unwrap_or(f.t_end)).max(x0 + 2.0);
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} on {} ({}) at {} ms: {}</title></rect>"#,
            x1 - x0,
            bottom - top,
            rgba(color, 0.22),
            esc(&fault.kind),
            esc(&fault.target),
            esc(&fault.target_role),
            fault.start_ms,
            esc(&fault.detail)
        );
        if let Some(i) = h.nodes.iter().position(|n| *n == fault.target) {
            let y = f.lane_y(i);
            let _ = write!(
                s,
                r#"<path d="M{:.1} {:.1}l4 -6h-8z" fill="black"/>"#,
                x0,
                y + 1.0
            );
        }
        let w = fault.kind.len() as f64 * 6.0 + 4.0;
        let free = (0..LABEL_ROWS).find(|&r| x0 >= row_end[r] + 3.0 && x0 + w <= WIDTH - 2.0);
        if let Some(r) = free {
            row_end[r] = x0 + w;
            let y = 52.0 + r as f64 * 13.0 + 10.0;
            let _ = write!(
                s,
                r##"<line x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{top:.1}" stroke="{color}"/><text x="{:.1}" y="{y:.1}" font-size="10" fill="#333">{}</text>"##,
                y - 9.0,
                x0 + 2.0,
                esc(&fault.kind)
            );
        }
        s.push('\n');
    }
}

/// Per-bin counts of acknowledged writes and of failed/unknown operations.
struct Bins {
    bin_ms: u64,
    acks: Vec<u64>,
    failed: Vec<u64>,
    unknown: Vec<u64>,
}

impl Bins {
    fn new(h: &History, t_end: u64, plot_w: f64) -> Bins {
        // At least ~3 px per bin.
        let raw = (t_end as f64 * 3.0 / plot_w).ceil() as u64;
        let bin_ms = [
            250, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000,
        ]
        .into_iter()
        .find(|&b| b >= raw)
        .unwrap_or(300_000);
        let n = (t_end / bin_ms + 1) as usize;
        let mut b = Bins {
            bin_ms,
            acks: vec![0; n],
            failed: vec![0; n],
            unknown: vec![0; n],
        };
        for op in &h.ops {
            let i = ((op.end_ms / bin_ms) as usize).min(n - 1);
            match (&op.outcome, op.kind) {
                (Outcome::Ok, OpKind::Write) => b.acks[i] += 1,
                (Outcome::Ok, OpKind::Read) => {}
                (Outcome::Failed(_), _) => b.failed[i] += 1,
                (Outcome::Unknown(_), _) => b.unknown[i] += 1,
            }
        }
        b
    }
}

/// 1, 2, 5 times a power of ten, at least `v`.
fn nice_ceil(v: f64) -> f64 {
    let mut p = 1.0;
    while p * 10.0 <= v {
        p *= 10.0;
    }
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn throughput(s: &mut String, f: &Frame, b: &Bins) {
    let secs = b.bin_ms as f64 / 1000.0;
    let max = b.acks.iter().copied().max().unwrap_or(0) as f64 / secs;
    let top = nice_ceil(max.max(1.0));
    let (y0, w) = (f.thr_top + THR_H, f.plot_w());
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{:.1}" width="{w:.1}" height="{THR_H}" fill="none" stroke="#ccc"/>"##,
        f.thr_top
    );
    for k in 0..=4 {
        let v = top * k as f64 / 4.0;
        let y = y0 - THR_H * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10">{v}</text>"##,
            LEFT + w,
            LEFT - 4.0,
            y + 3.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1} {:.1}) rotate(-90)" text-anchor="middle">writes acked/s</text>"#,
        LEFT - 40.0,
        f.thr_top + THR_H / 2.0
    );
    let mut pts = format!("{LEFT:.1},{y0:.1}");
    for (i, &n) in b.acks.iter().enumerate() {
        let x = f.x(i as u64 * b.bin_ms + b.bin_ms / 2);
        let y = y0 - THR_H * (n as f64 / secs / top).min(1.0);
        let _ = write!(pts, " {x:.1},{y:.1}");
    }
    let _ = writeln!(
        s,
        r#"<polygon points="{pts} {:.1},{y0:.1}" fill="{}"/>"#,
        f.x(f.t_end),
        rgba(LINE, 0.10)
    );
    let line = pts.split_once(' ').map_or("", |(_, rest)| rest);
    let _ = writeln!(
        s,
        r#"<polyline points="{line}" fill="none" stroke="{LINE}" stroke-width="1.2"/>"#
    );
}

/// Gaps without acknowledgements, as a bar under the throughput chart;
/// gaps less than a pixel apart are drawn as one bar.
fn unavailable(s: &mut String, r: &CheckReport, f: &Frame) {
    let y = f.thr_top + THR_H + 3.0;
    let mut bars: Vec<(f64, f64, u64)> = Vec::new();
    for g in &r.availability.gaps {
        let (x0, x1) = (f.x(g.from_ms), f.x(g.to_ms).max(f.x(g.from_ms) + 1.0));
        match bars.last_mut() {
            Some(last) if x0 <= last.1 + 1.0 => {
                last.1 = last.1.max(x1);
                last.2 += g.to_ms - g.from_ms;
            }
            _ => bars.push((x0, x1, g.to_ms - g.from_ms)),
        }
    }
    for (x0, x1, ms) in bars {
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="5" fill="{GAP}"><title>no write acknowledged for {}</title></rect>"#,
            x1 - x0,
            human_ms(ms)
        );
    }
    s.push('\n');
}

/// Failed operations as bars up from the middle, unknown ones down, height
/// by the square root of the count so that one error still shows.
fn errors(s: &mut String, f: &Frame, b: &Bins) {
    let mid = f.err_top + ERR_H / 2.0;
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{ERR_H}" fill="none" stroke="#ccc"/><line x1="{LEFT}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">errors</text>"##,
        f.err_top,
        f.plot_w(),
        LEFT + f.plot_w(),
        LEFT - 8.0,
        mid + 4.0
    );
    let max = b
        .failed
        .iter()
        .chain(&b.unknown)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bw = (f.x(b.bin_ms) - f.x(0) - 0.5).max(1.0);
    for i in 0..b.failed.len() {
        let x = f.x(i as u64 * b.bin_ms);
        for (n, color, up) in [
            (b.failed[i], FAILED, true),
            (b.unknown[i], UNKNOWN_OP, false),
        ] {
            if n == 0 {
                continue;
            }
            let len = (ERR_H / 2.0 - 1.0) * (n as f64 / max).sqrt().max(0.15);
            let y = if up { mid - len } else { mid };
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{len:.1}" fill="{color}"/>"#
            );
        }
    }
    s.push('\n');
}

/// Times of every broken promise: when the lost/phantom/duplicated write
/// ended, when the split-brain writes ended, when the stale read began.
fn violation_times(h: &History, r: &CheckReport) -> Vec<u64> {
    let ends: BTreeMap<i64, u64> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Write)
        .map(|o| (o.id, o.end_ms))
        .collect();
    let mut t: Vec<u64> = r
        .lost
        .iter()
        .chain(&r.phantom)
        .chain(&r.duplicated)
        .flat_map(|n| n.ids.iter().filter_map(|id| ends.get(id).copied()))
        .collect();
    for sb in &r.split_brain {
        match sb {
            SplitBrain::OffHistory { writes, .. } => t.extend(writes.iter().map(|w| w.end_ms)),
            SplitBrain::ConcurrentPrimaries { first, second, .. } => {
                t.extend([first.end_ms, second.end_ms])
            }
            // The first node is the likely owner; mark the others.
            SplitBrain::SharedTimeline { nodes, .. } => {
                t.extend(nodes.iter().skip(1).map(|(_, _, w)| w.end_ms))
            }
        }
    }
    t.extend(r.stale_reads.iter().map(|sr| sr.start_ms));
    t
}

fn violations(s: &mut String, h: &History, r: &CheckReport, f: &Frame) {
    let y = f.viol_top + VIOL_H / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">violations</text>"#,
        LEFT - 8.0,
        y + 4.0
    );
    let mut xs: Vec<i64> = violation_times(h, r)
        .into_iter()
        .map(|t| f.x(t).round() as i64)
        .collect();
    xs.sort_unstable();
    xs.dedup();
    if xs.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{:.1}" fill="#2e7d32">none</text>"##,
            y + 4.0
        );
    }
    for x in xs {
        let _ = write!(
            s,
            r#"<path d="M{x} {:.1}l5 6l-5 6l-5 -6z" fill="{VIOLATION}"/>"#,
            y - 6.0
        );
    }
    s.push('\n');
}

/// Ticks every 1 s to 2 h, about ten of them, labelled in seconds.
fn axis(s: &mut String, f: &Frame) {
    let step_s = [
        1u64, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200,
    ]
    .into_iter()
    .find(|&st| f.t_end / 1000 / st <= 12)
    .unwrap_or(14_400);
    let (top, y) = (f.lanes_top, f.axis_y);
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#333"/>"##,
        LEFT + f.plot_w()
    );
    let mut t = 0;
    while t <= f.t_end {
        let x = f.x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{y:.1}" stroke="#e6e6e6"/><line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="10">{} s</text>"##,
            y + 4.0,
            y + 15.0,
            t / 1000
        );
        t += step_s * 1000;
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">seconds since start</text>"##,
        LEFT + f.plot_w(),
        y + 28.0
    );
}

/// The legend, flowing left to right and wrapping; returns it and its height.
fn legend(h: &History, top: f64) -> (String, f64) {
    let mut items: Vec<(String, String)> = vec![
        (swatch(PRIMARY, 1.0), "primary".into()),
        (swatch(STANDBY, 1.0), "standby".into()),
        (swatch(DOWN, 1.0), "down".into()),
        (swatch(UNKNOWN_ROLE, 1.0), "unknown role / no sample".into()),
        (
            format!(r#"<line x1="0" y1="6" x2="14" y2="6" stroke="{LINE}" stroke-width="2"/>"#),
            "writes acknowledged per second".into(),
        ),
        (swatch(GAP, 1.0), "no write acknowledged (gap)".into()),
        (swatch(FAILED, 1.0), "failed ops (up)".into()),
        (swatch(UNKNOWN_OP, 1.0), "unknown-outcome ops (down)".into()),
        (
            format!(r#"<path d="M7 0l5 6l-5 6l-5 -6z" fill="{VIOLATION}"/>"#),
            "lost / phantom / duplicate / split brain / stale read".into(),
        ),
        (
            r#"<path d="M7 11l4 -6h-8z" fill="black"/>"#.into(),
            "fault target".into(),
        ),
    ];
    let mut kinds: Vec<&str> = h.faults.iter().map(|f| f.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    items.extend(
        kinds
            .into_iter()
            .map(|k| (swatch(fault_color(k), 0.35), format!("fault: {k}"))),
    );
    let (mut x, mut y) = (LEFT, top);
    let mut s = String::new();
    for (mark, label) in items {
        let w = 22.0 + label.len() as f64 * 6.2 + 14.0;
        if x + w > WIDTH - RIGHT {
            x = LEFT;
            y += 18.0;
        }
        let _ = writeln!(
            s,
            r#"<g transform="translate({x:.1} {y:.1})">{mark}<text x="20" y="11">{}</text></g>"#,
            esc(&label)
        );
        x += w;
    }
    (s, y - top + 18.0)
}

fn swatch(color: &str, opacity: f64) -> String {
    format!(
        r#"<rect x="0" y="1" width="14" height="11" fill="{}"/>"#,
        rgba(color, opacity)
    )
}

/// `#rrggbb` with an alpha as `rgba(..)`: translucency that ImageMagick's
/// own SVG renderer honours too (it ignores `fill-opacity`).
fn rgba(hex: &str, alpha: f64) -> String {
    let c = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    if alpha >= 1.0 {
        return hex.to_string();
    }
    format!("rgba({},{},{},{alpha})", c(1), c(3), c(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::check::{check, sample_history};

    #[test]
    fn svg_is_well_formed_enough_and_escapes() {
        let mut h = sample_history(11);
        h.faults[0].kind = "a<b&\"c\"".into();
        let svg = timeline_svg(&h, &check(&h));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b&amp;&quot;c&quot;"));
        assert!(!svg.contains("a<b"));
        for node in ["node1", "node2", "node3"] {
            assert!(svg.contains(&format!(">{node}</text>")));
        }
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.contains(">none</text>"));
    }

    #[test]
    fn violations_are_marked() {
        let mut h = sample_history(13);
        let stale = h.ops.iter_mut().find(|o| o.kind == OpKind::Read).unwrap();
        stale.saw = Some(false);
        let r = check(&h);
        assert!(!r.ok());
        let svg = timeline_svg(&h, &r);
        assert!(svg.contains(&format!(r#"fill="{VIOLATION}""#)));
        assert!(!svg.contains(">none</text>"));
        assert!(svg.contains(": FAIL:"));
    }

    /// A ten-minute history stretched to an hour (cheap in debug builds).
    fn hour_long() -> History {
        let mut h = sample_history(12);
        let x6 = |t: &mut u64| *t *= 6;
        h.duration_ms *= 6;
        for o in &mut h.ops {
            x6(&mut o.start_ms);
            x6(&mut o.end_ms);
        }
        for f in &mut h.faults {
            x6(&mut f.start_ms);
            if let Some(t) = f.healed_ms.as_mut() {
                x6(t);
            }
        }
        for r in &mut h.roles {
            x6(&mut r.at_ms);
        }
        if let Some(f) = h.final_state.as_mut() {
            x6(&mut f.at_ms);
        }
        h
    }

    #[test]
    fn hour_long_run_stays_small() {
        let h = hour_long();
        assert_eq!(h.duration_ms, 3_600_000);
        let svg = timeline_svg(&h, &check(&h));
        assert!(svg.len() < 600_000, "{} bytes", svg.len());
        assert!(svg.contains(">3600 s</text>"));
    }

    #[test]
    fn segments_merge_equal_roles() {
        let s = [
            (0, "primary", Some(1)),
            (1000, "primary", Some(1)),
            (2000, "down", None),
        ];
        assert_eq!(
            segments(&s, 5000),
            vec![(0, 2000, "primary", Some(1)), (2000, 5000, "down", None)]
        );
    }

    #[test]
    fn colors() {
        assert_eq!(rgba("#e6194b", 0.25), "rgba(230,25,75,0.25)");
        assert_eq!(rgba("#e6194b", 1.0), "#e6194b");
        assert_eq!(fault_color("kill_postgres"), PALETTE[0]);
        assert!(PALETTE.contains(&fault_color("something_new")));
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(37.0), 50.0);
        assert_eq!(nice_ceil(120.0), 200.0);
    }
}
