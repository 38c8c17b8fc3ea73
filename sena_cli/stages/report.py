"""Stage `report`: one self-contained HTML page (report/index.html) about a whole run.

Inline SVG charts (drawn by matplotlib) and base64 images, no script and no network: the headline metrics against
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
import math
import random
import re
from pathlib import Path

from PIL import Image

from sena_cli import bounded, layout
from sena_cli.artifacts import atomic_write_text, sampled_image_loader
from sena_cli.bench import registry
from sena_cli.config import PER_ITERATION_SECTIONS, Params, for_iteration, to_dict
from sena_cli.errors import SenaError
from sena_cli.frame import METRICS, PAIR, PAIR_STATS, made_by, read_json, read_records
from sena_cli.method.noise import Corruption
from sena_cli.progress import Progress, no_progress

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
TRAIN_CURVES = [("DPO loss", "dpo_loss"), ("alignment loss", "alignment_loss"),
                ("reward accuracy", "rewards/accuracies"), ("reward margin", "rewards/margins")]


# ---------------------------------------------------------------- drawing

# (label, [(x, y, standard error or None), ...])
Series = tuple[str, list[tuple[float, float, float | None]]]


def chart_svg(title: str, series: list[Series], x_label: str, chart_id: str, *, iterations: bool = False,
              size: tuple[float, float] = (3.5, 2.7)) -> str:
    """A line chart drawn by matplotlib, as inline SVG; error bars where a point has a standard error.

    The legend sits under the axes, never over the lines; x ticks are whole numbers (θk on an
    iteration axis). Text stays text (svg.fonttype none), and every id is prefixed with
    `chart_id` so that many charts live in one page.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    series = [(label, points) for label, points in series if points]
    if not series:
        return ""
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.add_subplot()
    xs = sorted({x for _, points in series for x, _, _ in points})
    handles = []  # in the series' order (matplotlib would list plain lines before error-bar lines)
    for i, (label, points) in enumerate(series):
        x, y, err = zip(*points)
        style = {"label": label, "color": COLOURS[i % len(COLOURS)], "linewidth": 1.6,
                 "marker": "o" if len(points) <= 40 else None, "markersize": 4}
        if any(e is not None for e in err):
            handles.append(ax.errorbar(x, y, yerr=[e or 0.0 for e in err], capsize=3, elinewidth=1, **style))
            line = handles[-1].lines[0]
        else:
            handles += ax.plot(x, y, **style)
            line = handles[-1]
        line.set_gid(f"series-{i}")  # <g id="CHART-series-i">: each series findable in the page
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(x_label, fontsize=9)
    ax.tick_params(labelsize=8)
    if iterations and len(xs) <= 12:
        ax.set_xticks(xs, [f"θ{x:g}" for x in xs])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if iterations:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"θ{v:g}"))
    if len(xs) == 1:  # one point: some room either side instead of matplotlib's ±0.05 ticks
        ax.set_xlim(xs[0] - 1, xs[0] + 1)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(series), 3), frameon=False,
                   fontsize=8)
    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "sena-report"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # no XML prolog inside HTML
    svg = re.sub(r'(\bid="|url\(#|href="#)', lambda m: m.group(1) + f"{chart_id}-", svg)
    return svg.replace("<svg ", f'<svg class="chart" role="img" aria-label="{html.escape(title)}" ', 1)


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
    text = bounded.read_text(path, what="training log", fix="delete it or rerun its `sena train`")
    return [(float(r["step"]), float(r[column])) for r in csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")]


def _pair_samples(params: Params, k: int, root: Path, count: int) -> list[dict]:
    """A seeded sample of iteration k's pairs with the clean and corrupted pictures θ(k-1) saw.

    Both come from the same processing (vlm/pixels.py): the last picture of the image (the whole
    image in the model's geometry: LLaVA's crop, Qwen2-VL's resized image, SmolVLM's global
    tile), the corrupted one recomputed from what `sena noise` recorded and checked against it.
    """
    from sena_cli.vlm import Preprocessor

    if not layout.pairs_file(k, root).is_file() or not layout.noise_index_file(k, root).is_file():
        return []
    pairs = read_records(layout.pairs_file(k, root), made_by("pair", k), PAIR)
    picked = random.Random(f"report:{k}").sample(pairs, min(count, len(pairs)))
    if not picked:
        return []
    params = for_iteration(params, k)
    corruption = Corruption(params, k, root)
    pre = Preprocessor.from_params(params.model, layout.model_dir(k - 1, root))
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

def standard_error(metrics: dict, key: str) -> float | None:
    """√(p(1−p)/n) for a proportion p whose n its benchmark keeps under an "n" key (`sena eval`
    records them: 'pope.adversarial.accuracy' is over 'pope.n.adversarial.accuracy' answers), else
    None: F1, scores and percentages have none. It is the spread a rerun on another draw of as many
    items would show; CHAIR_i's mentions cluster within captions, so its bar is a lower bound."""
    value = registry.metric(metrics, key)
    if value is None or not 0.0 <= value <= 1.0:
        return None
    parts = key.split(".")
    for i in range(1, len(parts)):  # the "n" may sit at any level of the benchmark's metrics
        n = registry.metric(metrics, ".".join([*parts[:i], "n", *parts[i:]]))
        if n:
            return math.sqrt(value * (1.0 - value) / n)
    return None


def _headlines(metrics: dict[int, dict]) -> list[str]:
    """A chart per headline chart of every benchmark that ran (bench/registry.py), and a table."""
    ran = registry.ran(list(metrics.values()))
    iterations = sorted(metrics)
    out = ["<h2>Headline metrics against iteration</h2>",
           "<p class='cap'>Bars: ± one standard error, √(p(1−p)/n), of a proportion over the n questions, "
           "captions, mentions or objects it counts; F1 and scores have none. CHAIR_i's mentions cluster "
           "within captions, so its bar is a lower bound.</p><div class='charts'>"]
    for b in ran:
        for j, chart in enumerate(b.charts):
            series = [(label, [(k, v, standard_error(metrics[k], f"{b.key}.{key}")) for k in iterations
                               if (v := registry.metric(metrics[k], f"{b.key}.{key}")) is not None])
                      for label, key in chart.series]
            out.append(chart_svg(chart.title, series, "iteration", f"{b.key}-{j}", iterations=True))
    out.append("</div>")
    # A metric per row and θk per column: as wide as the iterations, so it fits; a long run scrolls in its box.
    out.append("<div class='scroll'><table><tr><th class='l'>metric</th>"
               + "".join(f"<th>θ{k}</th>" for k in iterations) + "</tr>")
    for key in registry.headline_keys(list(metrics.values())):
        cells = []
        for k in iterations:
            value, se = registry.metric(metrics[k], key), standard_error(metrics[k], key)
            shown = "" if value is None else f"{value:.4g}" + (f" <span class='se'>± {se:.2g}</span>" if se else "")
            cells.append(f"<td>{shown}</td>")
        out.append(f"<tr><td class='l'>{html.escape(key)}</td>{''.join(cells)}</tr>")
    out.append("</table></div>")
    return out


# ---------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;background:#fafafa}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
.charts{display:flex;flex-wrap:wrap;gap:12px} .chart{border:1px solid #ddd;background:#fff;max-width:100%;
height:auto} .scroll{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;margin:8px 0;background:#fff} td,th{border:1px solid #ccc;padding:4px 8px;
font-size:13px;text-align:right} th{background:#eee} td.l,th.l{text-align:left} td.l{overflow-wrap:anywhere}
.se{color:#777;font-size:11px;white-space:nowrap}
.pair{display:grid;grid-template-columns:160px 160px 1fr;gap:10px;align-items:start;background:#fff;
border:1px solid #ddd;padding:8px;margin:8px 0} .pair img{width:150px;border:1px solid #999}
.cap{font-size:11px;color:#555} .chosen{color:#176b1b} .rejected{color:#a11d1d} .note{color:#777;font-style:italic}
details{margin:8px 0} summary{cursor:pointer;font-weight:bold}
"""


# The method's settings the header names, as each iteration runs them (its overrides applied).
HEADER_SETTINGS = (("t", "noise.timestep"), ("β", "train.beta"), ("lr", "train.lr"),
                   ("alignment weight", "train.alignment_weight"), ("self-questioning", "qa.self_questioning"),
                   ("self-enhancement", "qa.self_enhancement"))


def iteration_settings(params: Params) -> dict[int, dict[str, object]]:
    """{k: {dotted key: value}} of the sections an iteration may override, as iteration k runs them
    (config's per-iteration merge: the file's values with `iterations.k` laid over them)."""
    def flat(value, prefix: str):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from flat(inner, f"{prefix}.{key}")
        else:
            yield prefix, value

    settings = {}
    for k in range(1, params.loop.iterations + 1):
        effective = to_dict(for_iteration(params, k))
        settings[k] = {key: value for name in PER_ITERATION_SECTIONS for key, value in flat(effective[name], name)}
    return settings


def differing(settings: dict[int, dict[str, object]]) -> list[str]:
    """The keys whose value is not the same in every iteration, in params order."""
    first = next(iter(settings.values()), {})
    return [key for key in first if any(s[key] != first[key] for s in settings.values())]


def _value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def settings_html(params: Params) -> str:
    """The header: the run's shape and each iteration's effective method settings (one value when every
    iteration runs the same, else one per iteration), then a table of every key that differs."""
    settings = iteration_settings(params)
    parts = [f"model.base: {html.escape(params.model.base)}", f"{params.loop.iterations} iterations",
             f"M = {params.sample.images_per_iteration} images per iteration"]
    for label, key in HEADER_SETTINGS:
        values = [_value(s[key]) for s in settings.values()]
        shown = values[0] if len(set(values)) == 1 else (
            " / ".join(values) + f" (iterations {' / '.join(map(str, settings))})")
        parts.append(f"{label} = {html.escape(shown)}")
    out = [f"<p class='cap'>{' · '.join(parts)}</p>"]
    keys = differing(settings)
    if not keys:
        out.append("<p class='cap'>every iteration runs the same settings (no per-iteration overrides)</p>")
        return "".join(out)
    out.append("<table><tr><th class='l'>differs between iterations</th>"
               + "".join(f"<th>iteration {k}</th>" for k in settings) + "</tr>")
    for key in keys:
        out.append(f"<tr><td class='l'>{html.escape(key)}</td>"
                   + "".join(f"<td>{html.escape(_value(s[key]))}</td>" for s in settings.values()) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render(params: Params, root: Path, samples_per_iteration: int = 6, tick=lambda n: None) -> str:
    n = params.loop.iterations
    metrics = {k: read_json(layout.metrics_file(k, root), made_by("eval", k), METRICS) for k in range(n + 1)
               if layout.metrics_file(k, root).is_file()}
    if not metrics:
        raise SenaError(f"{layout.metrics_file(0, root)}: no metrics yet; run `sena eval --iter 0` first")
    body = ["<h1>sena report</h1>", settings_html(params)]

    body += _headlines(metrics)

    body.append("<h2>Training curves</h2>")
    for k in range(1, n + 1):
        if not layout.train_live_dir(k, root).is_dir():
            body.append(f"<p class='note'>iteration {k}: not trained yet</p>")
            continue
        body.append(f"<h3>iteration {k}</h3><div class='charts'>")
        for title, name in TRAIN_CURVES:
            column = name.split("/")[-1]
            curve = [(x, y, None) for x, y in _read_tsv(layout.train_curve_file(k, name, root), column)]
            body.append(chart_svg(title, [(column, curve)], "optimizer step", f"train{k}-{column}",
                                  size=(2.6, 2.0)))
        body.append("</div>")

    body.append("<h2>Preference pairs and filters</h2>")
    stats = {k: read_json(p, made_by("pair", k), PAIR_STATS) for k in range(1, n + 1)
             if (p := layout.pairs_stats_file(k, root)).is_file()}
    if stats:
        filters = list(next(iter(stats.values()))["dropped"])
        body.append("<div class='scroll'><table><tr><th class='l'>iteration</th><th>qa records</th><th>pairs</th>"
                    "<th>des</th><th>gen</th>"
                    + "".join(f"<th>dropped: {html.escape(f)}</th>" for f in filters) + "</tr>")
        for k, s in stats.items():
            body.append(f"<tr><td class='l'>{k}</td><td>{s['records']}</td><td>{s['pairs']}</td>"
                        f"<td>{s['pairs_des']}</td><td>{s['pairs_gen']}</td>"
                        + "".join(f"<td>{s['dropped'].get(f, 0)}</td>" for f in filters) + "</tr>")
        body.append("</table></div>")
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
                f"<div>{corrupted}<div class='cap'>corrupted (t = {for_iteration(params, k).noise.timestep})</div>"
                "</div>"
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

