"""A grouped bar chart as a standalone SVG string (no plotting library):
groups along x, one bar per series in each group, optional min-max
whiskers. Values are (median, min, max) tuples or None (drawn as a gap).
Hazard: text is XML-escaped; labels must stay short to fit."""

from xml.sax.saxutils import escape

COLORS = ["#1f77b4", "#7f7f7f", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _nice_max(v):
    if v <= 0:
        return 1
    mag = 10 ** (len(str(int(v))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * mag >= v:
            return step * mag
    return 10 * mag


def grouped_bars(title, groups, series, ylabel, width=960, height=420, target=None,
                 colors=None, scale_to_medians=False):
    """`target`: optional (value, label) drawn as a dashed horizontal line.
    `scale_to_medians`: size the y axis to the medians (whiskers are clipped),
    so one outlier does not flatten every bar."""
    colors = colors or COLORS
    left, right, top, bottom = 70, 20, 50, 80
    pw, ph = width - left - right, height - top - bottom
    vmax = max((v[0 if scale_to_medians else 2] for _, vals in series for v in vals if v),
               default=1)
    ymax = _nice_max(vmax * 1.05)
    gw = pw / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(series))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for i in range(6):
        v = ymax * i / 5
        y = top + ph - ph * i / 5
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
    out.append(f'<text x="16" y="{top + ph / 2}" transform="rotate(-90 16 {top + ph / 2})" '
               f'text-anchor="middle">{escape(ylabel)}</text>')
    for gi, name in enumerate(groups):
        gx = left + gi * gw + gw * 0.1
        for si, (_, vals) in enumerate(series):
            v = vals[gi]
            if not v:
                continue
            med, lo, hi = v
            x = gx + si * bw
            h = ph * med / ymax
            out.append(f'<rect x="{x:.1f}" y="{top + ph - h:.1f}" width="{bw * 0.9:.1f}" '
                       f'height="{h:.1f}" fill="{colors[si % len(colors)]}"/>')
            cx = x + bw * 0.45
            y1 = top + ph - ph * min(lo, ymax) / ymax
            y2 = top + ph - ph * min(hi, ymax) / ymax
            out.append(f'<line x1="{cx:.1f}" y1="{y1:.1f}" x2="{cx:.1f}" y2="{y2:.1f}" '
                       f'stroke="black"/>')
        lx = left + gi * gw + gw / 2
        out.append(f'<text x="{lx:.1f}" y="{top + ph + 16}" text-anchor="middle">'
                   f'{escape(name)}</text>')
    if target and target[0] <= ymax:
        y = top + ph - ph * target[0] / ymax
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                   f'stroke="#d62728" stroke-dasharray="6,4"/>')
        out.append(f'<text x="{left + 4}" y="{y - 4:.1f}" text-anchor="start" '
                   f'fill="#d62728">{escape(target[1])}</text>')
    lx = left
    for si, (label, _) in enumerate(series):
        out.append(f'<rect x="{lx}" y="{height - 30}" width="12" height="12" '
                   f'fill="{colors[si % len(colors)]}"/>')
        out.append(f'<text x="{lx + 16}" y="{height - 20}">{escape(label)}</text>')
        lx += 30 + 8 * len(label)
    out.append("</svg>")
    return "\n".join(out) + "\n"
