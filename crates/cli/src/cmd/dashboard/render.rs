//! The status page as HTML, from one [`Snapshot`]: a pure function, so the
//! page is tested without a browser. No front-end build chain: the HTML is
//! written here, the pictures are inline SVG, the only script reloads the
//! page's body every two seconds.

use super::{Point, ProxySplit, Snapshot};
use crate::cmd::status::MemberStatus;
use std::fmt::Write as _;

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:16px 24px;color:#222;background:#fafafa}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px;color:#444}\
.bar{display:flex;gap:18px;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 12px}\
.ok{color:#1a7f37}.bad{color:#c62828;font-weight:600}.muted{color:#777}\
table{border-collapse:collapse;background:#fff}td,th{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}\
th{font-weight:600;color:#555}";

const SCRIPT: &str = "setInterval(async()=>{try{const r=await fetch(location.href,{cache:'no-store'});\
const d=new DOMParser().parseFromString(await r.text(),'text/html');document.body.replaceWith(d.body);}catch(e){}},2000);";

/// The whole page.
pub fn page(s: &Snapshot) -> String {
    let st = &s.status;
    let leader = st.leader.as_deref().unwrap_or("none");
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pgha {}</title><style>{STYLE}</style></head>\
         <body data-leader=\"{}\"><h1>pgha cluster {}</h1>",
        esc(&st.cluster),
        esc(leader),
        esc(&st.cluster)
    );
    summary(&mut h, s);
    h.push_str("<h2>Members</h2>");
    h.push_str(&members_svg(
        &st.members,
        st.sync.as_ref().map(|s| (s.members.as_slice(), s.quorum)),
    ));
    h.push_str("<h2>Last minutes: replication lag and write availability</h2>");
    h.push_str(&chart_svg(&s.history, s.taken_at_unix_ms));
    h.push_str("<div class=\"bar\">");
    routing(&mut h, s.proxy.as_ref());
    archive(&mut h, st.archive.as_ref());
    h.push_str("</div>");
    events(&mut h, s);
    decisions(&mut h, s);
    let _ = write!(h, "<script>{SCRIPT}</script></body></html>");
    h
}

fn summary(h: &mut String, s: &Snapshot) {
    let st = &s.status;
    let writable = super::writable(st);
    let _ = write!(
        h,
        "<div class=\"bar\"><div class=\"card\">leader <b id=\"leader\">{}</b></div>\
         <div class=\"card\">writes <span class=\"{}\">{}</span></div>\
         <div class=\"card\">etcd <span class=\"{}\">{}</span></div>\
         <div class=\"card\">paused {}</div>",
        esc(st.leader.as_deref().unwrap_or("none")),
        if writable { "ok" } else { "bad" },
        if writable { "accepted" } else { "NOT accepted" },
        if st.etcd == "ok" { "ok" } else { "bad" },
        esc(&st.etcd),
        if st.paused == Some(true) { "yes" } else { "no" },
    );
    if let Some(sync) = &st.sync {
        let _ = write!(
            h,
            "<div class=\"card\">sync quorum <b>{}</b> of {{{}}}</div>",
            sync.quorum,
            esc(&sync.members.join(", "))
        );
    }
    let _ = write!(
        h,
        "<div class=\"card muted\">{}</div></div>",
        esc(&super::utc(s.taken_at_unix_ms))
    );
}

/// The members as boxes: the leader on top, the others below with a line
/// from the leader (solid while streaming, labelled with the sync state),
/// each with role, state, timeline and a lag bar.
pub fn members_svg(members: &[MemberStatus], sync: Option<(&[String], u32)>) -> String {
    const W: f64 = 860.0;
    const BW: f64 = 200.0;
    const BH: f64 = 96.0;
    let leader = members.iter().find(|m| m.leader);
    let others: Vec<&MemberStatus> = members.iter().filter(|m| !m.leader).collect();
    let row_y = if leader.is_some() { 150.0 } else { 10.0 };
    let height = row_y + BH + 12.0;
    let mut svg = format!(
        "<svg id=\"members\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-family=\"system-ui,sans-serif\" font-size=\"12\">"
    );
    let max_lag = members
        .iter()
        .filter_map(|m| m.lag_bytes)
        .max()
        .unwrap_or(0)
        .max(16 * 1024 * 1024);
    let slot = W / others.len().max(1) as f64;
    let lx = (W - BW) / 2.0;
    for (i, m) in others.iter().enumerate() {
        let x = slot * i as f64 + (slot - BW) / 2.0;
        if leader.is_some() {
            let streaming = m.sync_state.is_some();
            let dash = if streaming {
                ""
            } else {
                " stroke-dasharray=\"5 4\""
            };
            let _ = write!(
                svg,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{row_y}\" stroke=\"#888\" stroke-width=\"2\"{dash}/>",
                lx + BW / 2.0,
                10.0 + BH,
                x + BW / 2.0
            );
            let label = m.sync_state.as_deref().unwrap_or("not streaming");
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                (lx + BW / 2.0 + x + BW / 2.0) / 2.0 + 4.0,
                (10.0 + BH + row_y) / 2.0,
                esc(label)
            );
        }
        member_box(&mut svg, m, x, row_y, max_lag, sync);
    }
    if let Some(l) = leader {
        member_box(&mut svg, l, lx, 10.0, max_lag, sync);
    }
    svg.push_str("</svg>");
    svg
}

fn member_box(
    svg: &mut String,
    m: &MemberStatus,
    x: f64,
    y: f64,
    max_lag: u64,
    sync: Option<(&[String], u32)>,
) {
    let (fill, stroke) = match (m.role.as_str(), m.state.as_str()) {
        (_, "down") | (_, "stopped") => ("#eeeeee", "#9e9e9e"),
        ("primary", _) if m.writable == Some(false) => ("#fff3e0", "#ef6c00"),
        ("primary", _) => ("#e8f5e9", "#2e7d32"),
        ("standby", _) => ("#e3f2fd", "#1565c0"),
        _ => ("#f5f5f5", "#757575"),
    };
    let in_sync = sync.is_some_and(|(set, _)| set.contains(&m.name));
    let _ = write!(
        svg,
        "<g class=\"member\" data-member=\"{n}\" data-role=\"{r}\"><rect x=\"{x}\" y=\"{y}\" width=\"200\" height=\"96\" rx=\"8\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"/>\
         <text x=\"{tx}\" y=\"{ty}\" font-size=\"15\" font-weight=\"600\">{star}{n}</text>\
         <text x=\"{tx}\" y=\"{ty2}\">{r} · {s}{fenced}</text>\
         <text x=\"{tx}\" y=\"{ty3}\" fill=\"#555\">timeline {tl} · agent {a}{sy}</text>",
        n = esc(&m.name),
        r = esc(&m.role),
        s = esc(&m.state),
        sw = if m.leader { 3 } else { 1 },
        tx = x + 10.0,
        ty = y + 20.0,
        ty2 = y + 38.0,
        ty3 = y + 55.0,
        star = if m.leader { "★ " } else { "" },
        fenced = if m.writable == Some(false) { " · writes refused" } else { "" },
        tl = m.timeline.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
        a = esc(&m.agent),
        sy = if in_sync { " · in /sync" } else { "" },
    );
    if m.role == "standby" {
        let lag = m.lag_bytes.unwrap_or(0);
        let w = (180.0 * lag as f64 / max_lag as f64).clamp(0.0, 180.0);
        let _ = write!(
            svg,
            "<rect x=\"{bx}\" y=\"{by}\" width=\"180\" height=\"10\" fill=\"#fff\" stroke=\"#bbb\"/>\
             <rect x=\"{bx}\" y=\"{by}\" width=\"{w:.1}\" height=\"10\" fill=\"#ff9800\"/>\
             <text x=\"{bx}\" y=\"{ly}\" fill=\"#555\" font-size=\"11\">lag {}</text>",
            m.lag_bytes.map(bytes).unwrap_or_else(|| "unknown".into()),
            bx = x + 10.0,
            by = y + 64.0,
            ly = y + 88.0,
        );
    }
    svg.push_str("</g>");
}

/// `n` bytes for people.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Largest standby lag over time (line) above a strip that is green while
/// the cluster accepted writes and red while it did not.
pub fn chart_svg(points: &[Point], now_ms: u64) -> String {
    const W: f64 = 860.0;
    const H: f64 = 150.0;
    const STRIP: f64 = 14.0;
    let span_ms = super::HISTORY_SPAN.as_millis() as f64;
    let start = now_ms as f64 - span_ms;
    let x = |at: u64| ((at as f64 - start) / span_ms * W).clamp(0.0, W);
    let max = points
        .iter()
        .map(|p| p.max_lag_bytes)
        .max()
        .unwrap_or(0)
        .max(1 << 20);
    let y = |lag: u64| H - 20.0 - (lag as f64 / max as f64) * (H - 40.0);
    let mut svg = format!(
        "<svg id=\"chart\" width=\"{W}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"system-ui,sans-serif\" font-size=\"11\">\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\" stroke=\"#ddd\"/>\
         <text x=\"4\" y=\"14\" fill=\"#555\">max standby lag (top: {})</text>",
        H + STRIP + 18.0,
        bytes(max)
    );
    let line: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.at_unix_ms), y(p.max_lag_bytes)))
        .collect();
    if !line.is_empty() {
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"#ff9800\" stroke-width=\"2\" points=\"{}\"/>",
            line.join(" ")
        );
    }
    for (i, p) in points.iter().enumerate() {
        let x0 = x(p.at_unix_ms);
        let x1 = points.get(i + 1).map(|n| x(n.at_unix_ms)).unwrap_or(W);
        let fill = if p.writable { "#43a047" } else { "#e53935" };
        let _ = write!(
            svg,
            "<rect x=\"{x0:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{STRIP}\" fill=\"{fill}\"/>",
            H + 2.0,
            (x1 - x0).max(0.5)
        );
    }
    let down = points.iter().filter(|p| !p.writable).count();
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{ly}\" fill=\"#555\">-{m} min</text><text x=\"{W}\" y=\"{ly}\" text-anchor=\"end\" fill=\"#555\">now · writes accepted (green) / refused (red): {down} of {n} samples refused</text></svg>",
        ly = H + STRIP + 15.0,
        m = super::HISTORY_SPAN.as_secs() / 60,
        n = points.len()
    );
    svg
}

fn routing(h: &mut String, p: Option<&ProxySplit>) {
    h.push_str("<div class=\"card\"><h2>Proxy routing</h2>");
    match p {
        None => h.push_str("<span class=\"muted\">no proxy metrics (no [proxy] http_port, or the proxy is down)</span>"),
        Some(p) => {
            let total = (p.primary + p.standby).max(1.0);
            let share = 100.0 * p.standby / total;
            let _ = write!(
                h,
                "<div id=\"routing\">statements: {:.0} to the primary, {:.0} to standbys ({share:.0}% offloaded)</div>\
                 <svg width=\"300\" height=\"14\"><rect width=\"300\" height=\"14\" fill=\"#2e7d32\"/>\
                 <rect x=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"#1565c0\"/></svg>\
                 <div class=\"muted\">primary (green) / standby (blue) · clients active {:.0}, waiting {:.0}</div>",
                p.primary,
                p.standby,
                300.0 - 3.0 * share,
                3.0 * share,
                p.clients_active,
                p.clients_waiting
            );
        }
    }
    h.push_str("</div>");
}

fn archive(h: &mut String, a: Option<&serde_json::Value>) {
    h.push_str("<div class=\"card\" id=\"archive\"><h2>WAL archive</h2>");
    let Some(a) = a else {
        h.push_str("<span class=\"muted\">unknown (no agent answered)</span></div>");
        return;
    };
    let state = a["state"].as_str().unwrap_or("unknown");
    let class = if state == "ok" { "ok" } else { "bad" };
    let _ = write!(h, "state <span class=\"{class}\">{}</span>", esc(state));
    if let Some(wal) = a["last_archived_wal"].as_str() {
        let age = a["last_archived_age_seconds"].as_f64().unwrap_or(0.0);
        let _ = write!(h, "<br>last archived {} ({age:.0}s ago)", esc(wal));
    }
    if let (Some(files), Some(b)) = (a["files"].as_u64(), a["bytes"].as_u64()) {
        let _ = write!(h, "<br>{files} files, {}", bytes(b));
    }
    if let Some(o) = a["oldest_segment"].as_str() {
        let _ = write!(h, ", oldest {}", esc(o));
    }
    if let Some(r) = a["last_failure_reason"].as_str() {
        let _ = write!(
            h,
            "<br><span class=\"bad\">archiving fails:</span> {}",
            esc(r)
        );
    }
    for c in a["corrupt"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<br><span class=\"bad\">corrupt</span> {}: {}",
            esc(c["file"].as_str().unwrap_or("?")),
            esc(c["reason"].as_str().unwrap_or("?"))
        );
    }
    h.push_str("</div>");
}

fn events(h: &mut String, s: &Snapshot) {
    h.push_str("<h2>Events (newest first)</h2>");
    if s.events.is_empty() {
        h.push_str("<p class=\"muted\">none recorded yet</p>");
        return;
    }
    h.push_str("<table id=\"events\"><tr><th>time (UTC)</th><th>event</th><th>member</th><th>took</th><th>reason</th></tr>");
    for e in s.events.iter().rev().take(12) {
        let took = e
            .duration_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{took}</td><td>{}{}</td></tr>",
            esc(&super::utc(e.at_unix_ms)),
            if e.ok { "" } else { "bad" },
            e.kind.name(),
            esc(&e.member),
            esc(&e.reason),
            if e.detail.is_empty() {
                String::new()
            } else {
                format!(" <span class=\"muted\">[{}]</span>", esc(&e.detail))
            }
        );
    }
    h.push_str("</table>");
}

fn decisions(h: &mut String, s: &Snapshot) {
    h.push_str("<h2>Last decisions of the leader's agent</h2><table id=\"decisions\">");
    for d in s.status.decisions.iter().rev().take(8) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"muted\">{}</td></tr>",
            esc(&super::utc(d.at_unix_ms)),
            esc(&d.reason),
            esc(&d.actions.join(", "))
        );
    }
    h.push_str("</table>");
}
