"""Stage `report`: one self-contained HTML page (report/index.html) about a whole run.

Inline SVG charts and base64 images, no script and no network: the headline metrics against
iteration, each iteration's training curves (its dvclive log), the per-filter pair counts,
and a sample of pairs with the clean image, the corrupted image the rejected answer came
from, the prompt, and the chosen and rejected answers. Whatever a run has not produced yet
(no θ3, no training log) is left out with a note, so the page works part-way through a run.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import random
from pathlib import Path

from PIL import Image

from sena_cli import layout
from sena_cli.artifacts import Corruption, atomic_write_text, sampled_image_loader
from sena_cli.bench import registry
from sena_cli.config import Params, for_iteration
from sena_cli.errors import SenaError
from sena_cli.frame import METRICS, PAIR, PAIR_STATS, made_by, read_json, read_records
from sena_cli.progress import Progress, no_progress

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
TRAIN_CURVES = [("DPO loss", "dpo_loss"), ("alignment loss", "alignment_loss"),
                ("reward accuracy", "rewards/accuracies"), ("reward margin", "rewards/margins")]


# ---------------------------------------------------------------- drawing

def svg_chart(title: str, series: list[tuple[str, list[tuple[float, float]]]], x_label: str,
              width: int = 420, height: int = 240) -> str:
    """A line chart as inline SVG; series = [(name, [(x, y), ...])]."""
    points = [p for _, pts in series for p in pts]
    if not points:
        return ""
    left, right, top, bottom = 48, 12, 28, 36
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or abs(y1) * 0.1 or 0.1
    y0, y1 = y0 - pad, y1 + pad

    def px(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y):
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
             f'{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
             f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle" font-size="11">'
             f'{html.escape(x_label)}</text>']
    for frac in (0.0, 0.5, 1.0):
        y = y0 + frac * (y1 - y0)
        parts.append(f'<text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="10">{y:.3g}</text>')
    for x in sorted(set(xs))[:: max(1, len(set(xs)) // 8)]:
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 13}" text-anchor="middle" font-size="10">'
                     f'{x:g}</text>')
    for i, (name, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
        parts.append(f'<text x="{left + 8 + 92 * i}" y="{top + 10}" font-size="10" fill="{colour}">'
                     f'{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


THUMBNAIL = 192  # longest side of a picture in the page: it stays small for any photo


def thumbnail_uri(image: Image.Image) -> str:
    """A bounded picture as a data URI: tiny world images enlarged (pixels kept sharp) as PNG,
    anything larger shrunk to THUMBNAIL px as JPEG (noise does not compress in PNG)."""
    if max(image.size) <= THUMBNAIL // 3:
        scale = THUMBNAIL // max(image.size)
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        fmt, mime, options = "PNG", "image/png", {}
    else:
        image = image.copy()
        image.thumbnail((THUMBNAIL, THUMBNAIL), Image.LANCZOS)
        fmt, mime, options = "JPEG", "image/jpeg", {"quality": 80}
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt, **options)
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- reading a run

def _read_tsv(path: Path, column: str) -> list[tuple[float, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [(float(r["step"]), float(r[column])) for r in csv.DictReader(f, delimiter="\t")]


def _pair_samples(params: Params, k: int, root: Path, count: int) -> list[dict]:
    """A seeded sample of iteration k's pairs with the clean and corrupted pictures θ(k-1) saw.

    Both come from the same processing (vlm/pixels.py): the last picture of the image (the whole
    image in the model's geometry: LLaVA's crop, Qwen2-VL's resized image, SmolVLM's global
    tile), the corrupted one recomputed from what `sena noise` recorded and checked against it.
    """
    from sena_cli.vlm import load_preprocessor

    if not layout.pairs_file(k, root).is_file() or not layout.noise_index_file(k, root).is_file():
        return []
    pairs = read_records(layout.pairs_file(k, root), made_by("pair", k), PAIR)
    picked = random.Random(f"report:{k}").sample(pairs, min(count, len(pairs)))
    if not picked:
        return []
    params = for_iteration(params, k)
    corruption = Corruption(params, k, root)
    pre = load_preprocessor(layout.model_dir(k - 1, root), trust_remote_code=params.model.trust_remote_code,
                            settings=params.model.processor,
                            pad_to_square=params.model.pad_to_square, conversation=params.model.conversation)
    out = []
    for p in picked:
        clean_image = sampled_image_loader([p], root, k)(p["image"])
        if params.noise.space == "pixel_values":
            clean = pre.pictures(clean_image)
            noised = corruption.transform([clean], [p["id"]])[0]
            shown = [Image.fromarray(pre.layout.to_uint8(pics[-1])) for pics in (clean, noised)]
        else:
            shown = [clean_image, corruption.image(p["id"], clean_image)]
        out.append({**p, "clean_uri": thumbnail_uri(shown[0]), "corrupted_uri": thumbnail_uri(shown[1])})
    return out


# ---------------------------------------------------------------- headline metrics

def _headlines(metrics: dict[int, dict]) -> list[str]:
    """A chart per headline chart of every benchmark that ran (bench/registry.py), and a table."""
    ran = registry.ran(list(metrics.values()))
    out = ["<h2>Headline metrics against iteration</h2><div class='charts'>"]
    for b in ran:
        for chart in b.charts:
            series = [(label, [(k, v) for k in sorted(metrics)
                               if (v := registry.metric(metrics[k], f"{b.key}.{key}")) is not None])
                      for label, key in chart.series]
            out.append(svg_chart(chart.title, [s for s in series if s[1]], "iteration (θk)"))
    out.append("</div>")
    keys = registry.headline_keys(list(metrics.values()))
    out.append("<table><tr><th class='l'>θ</th>" + "".join(f"<th>{html.escape(key)}</th>" for key in keys) + "</tr>")
    for k in sorted(metrics):
        cells = "".join(f"<td>{v:.4g}</td>" if (v := registry.metric(metrics[k], key)) is not None else "<td></td>"
                        for key in keys)
        out.append(f"<tr><td class='l'>θ{k}</td>{cells}</tr>")
    out.append("</table>")
    return out


# ---------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;background:#fafafa}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
.charts{display:flex;flex-wrap:wrap;gap:12px} .chart{border:1px solid #ddd;background:#fff}
table{border-collapse:collapse;margin:8px 0;background:#fff} td,th{border:1px solid #ccc;padding:4px 8px;
font-size:13px;text-align:right} th{background:#eee} td.l,th.l{text-align:left}
.pair{display:grid;grid-template-columns:160px 160px 1fr;gap:10px;align-items:start;background:#fff;
border:1px solid #ddd;padding:8px;margin:8px 0} .pair img{width:150px;border:1px solid #999}
.cap{font-size:11px;color:#555} .chosen{color:#176b1b} .rejected{color:#a11d1d} .note{color:#777;font-style:italic}
details{margin:8px 0} summary{cursor:pointer;font-weight:bold}
"""


def render(params: Params, root: Path, samples_per_iteration: int = 6, tick=lambda n: None) -> str:
    n = params.loop.iterations
    metrics = {k: read_json(layout.metrics_file(k, root), made_by("eval", k), METRICS) for k in range(n + 1)
               if layout.metrics_file(k, root).is_file()}
    if not metrics:
        raise SenaError(f"{layout.metrics_file(0, root)}: no metrics yet; run `sena eval --iter 0` first")
    body = [f"<h1>sena report</h1><p class='cap'>model.base: {html.escape(params.model.base)} · "
            f"{n} iterations · M = {params.sample.images_per_iteration} images per iteration · "
            f"t = {params.noise.timestep} · β = {params.train.beta} · lr = {params.train.lr} · "
            f"alignment weight {params.train.alignment_weight} · self-questioning "
            f"{'on' if params.qa.self_questioning else 'off'} · self-enhancement "
            f"{'on' if params.qa.self_enhancement else 'off'}</p>"]

    body += _headlines(metrics)

    body.append("<h2>Training curves</h2>")
    for k in range(1, n + 1):
        if not layout.train_live_dir(k, root).is_dir():
            body.append(f"<p class='note'>iteration {k}: not trained yet</p>")
            continue
        body.append(f"<h3>iteration {k}</h3><div class='charts'>")
        for title, name in TRAIN_CURVES:
            column = name.split("/")[-1]
            body.append(svg_chart(title, [(column, _read_tsv(layout.train_curve_file(k, name, root), column))],
                                  "optimizer step", width=260, height=180))
        body.append("</div>")

    body.append("<h2>Preference pairs and filters</h2>")
    stats = {k: read_json(p, made_by("pair", k), PAIR_STATS) for k in range(1, n + 1)
             if (p := layout.pairs_stats_file(k, root)).is_file()}
    if stats:
        filters = list(next(iter(stats.values()))["dropped"])
        body.append("<table><tr><th class='l'>iteration</th><th>qa records</th><th>pairs</th><th>des</th><th>gen</th>"
                    + "".join(f"<th>dropped: {html.escape(f)}</th>" for f in filters) + "</tr>")
        for k, s in stats.items():
            body.append(f"<tr><td class='l'>{k}</td><td>{s['records']}</td><td>{s['pairs']}</td>"
                        f"<td>{s['pairs_des']}</td><td>{s['pairs_gen']}</td>"
                        + "".join(f"<td>{s['dropped'].get(f, 0)}</td>" for f in filters) + "</tr>")
        body.append("</table>")
    for k in range(1, n + 1):
        samples = _pair_samples(params, k, root, samples_per_iteration)
        tick(1)
        if not samples:
            continue
        body.append(f"<details{' open' if k == 1 else ''}><summary>iteration {k}: {len(samples)} pairs "
                    f"(seeded sample)</summary>")
        for p in samples:
            corrupted = (f"<img alt='corrupted' src='{p['corrupted_uri']}'>" if p["corrupted_uri"]
                         else "<span class='note'>no corrupted copy</span>")
            body.append(
                f"<div class='pair'><div><img alt='clean' src='{p['clean_uri']}'><div class='cap'>clean</div></div>"
                f"<div>{corrupted}<div class='cap'>corrupted (t = {params.noise.timestep})</div></div>"
                f"<div><div class='cap'>{html.escape(p['type'])} · {html.escape(p['id'])}</div>"
                f"<p><b>prompt</b>: {html.escape(p['prompt'])}</p>"
                f"<p class='chosen'><b>chosen</b>: {html.escape(p['chosen'])}</p>"
                f"<p class='rejected'><b>rejected</b>: {html.escape(p['rejected'])}</p></div></div>")
        body.append("</details>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sena report</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def run_report(params: Params, root: Path = Path("."), progress: Progress = no_progress) -> dict:
    tick = progress("report: sampling pairs", params.loop.iterations)
    page = render(params, root, tick=tick)
    atomic_write_text(layout.report_file(root), page)
    return {"output": str(layout.report_file(root)), "kilobytes": round(len(page.encode()) / 1024)}

