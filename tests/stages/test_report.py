"""`sena report`: a self-contained page, rendered in headless Chromium."""

import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

from sena_cli.config import params_from_dict
from sena_cli.stages.eval import run_eval
from sena_cli.stages.report import run_report
from sena_cli.stages.train import run_train
from sena_fixtures.micro import paired_iteration, photo
from tests.helpers import project_from


def _chromium() -> str:
    """Debian's chromium, installed when missing (the test set-up the report test needs)."""
    path = shutil.which("chromium")
    if path is None:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        install = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        proc = subprocess.run(install, capture_output=True, text=True)
        if proc.returncode:  # a fresh machine may have no package lists yet
            subprocess.run([*sudo, "apt-get", "update"], capture_output=True, text=True)
            proc = subprocess.run(install, capture_output=True, text=True)
        path = shutil.which("chromium")
        if path is None:
            pytest.fail("chromium is missing and `apt-get install chromium` failed:\n" + proc.stderr[-2000:])
    return path


@pytest.fixture
def run_project(micro_project, micro_dict, tmp_path):
    """One iteration of the micro loop: sampled, corrupted, paired (scripted qa records), trained, evaluated."""
    root = project_from(micro_project, tmp_path / "project")
    d = {**micro_dict, "loop": {"iterations": 1}, "sample": {"images_per_iteration": 6},
         "train": {"global_batch_size": 2, "per_device_batch_size": 2, "lr": 1e-3, "checkpoint_steps": 0}}
    params = params_from_dict(d)
    paired_iteration(params, root, "des", "Describe the image <concisely>.", "A red circle & a blue square.",
                     "A green cross.")
    run_train(params, 1, root=root)
    run_eval(params, 0, root=root)
    run_eval(params, 1, root=root)
    return root, params


def test_report_is_self_contained_and_renders_in_headless_chromium(run_project, tmp_path):
    root, params = run_project
    info = run_report(params, root=root)
    page = (root / "report" / "index.html").read_text()
    assert info["output"].endswith("report/index.html")
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)  # nothing fetched from the network
    assert "<script" not in page
    assert page.count("<svg") >= 4 + 4  # headline charts + one iteration's training curves
    assert page.count("data:image/png;base64,") == 2 * 6  # clean and corrupted image of 6 pairs
    assert "Describe the image &lt;concisely&gt;." in page and "&amp; a blue square" in page  # escaped text
    assert "dropped: identical" in page
    # The charts are matplotlib's, each legend outside the axes (a chart of several lines has one), with
    # error bars where the metric is a proportion over a recorded n, and whole-number iteration ticks.
    charts = re.findall(r"<svg .*?</svg>", page, re.S)
    assert charts and all("Matplotlib v" in chart for chart in charts)
    assert len(re.findall(r'<g id="[\w.-]+-legend_1"', page)) >= 4
    assert "LineCollection" in page and "± " in page  # error bars, and the table's standard errors
    ticks = re.findall(r">θ([^<]*)</text>", page)
    assert set(ticks) == {"0", "1"}
    assert len(re.findall(r'\bid="([^"]+)"', page)) == len(set(re.findall(r'\bid="([^"]+)"', page)))  # ids unique

    shot = tmp_path / "report.png"
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1200,1600", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0",
                           (root / "report" / "index.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Failed to load" in line]
    assert console == [], console
    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # charts, text and pictures: far from blank
    background = max(colours)[0] / sum(c for c, _ in colours)
    assert background < 0.97

    # Nothing is wider than the page (a wide table scrolls inside its own box): measured on a copy
    # with a script, in a window narrower than the page's 1100 px column.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", "<script>document.body.dataset.fit = document.documentElement"
                                             ".scrollWidth + ' ' + document.documentElement.clientWidth</script>"
                                             "</body>"))
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=900,1600",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scroll, client = map(int, re.search(r'data-fit="(\d+) (\d+)"', proc.stdout).groups())
    assert client > 800 and scroll <= client, (scroll, client)


def test_report_before_any_evaluation_says_what_to_run(tmp_path):
    from sena_cli.errors import SenaError

    with pytest.raises(SenaError, match="run `sena eval --iter 0` first"):
        run_report(params_from_dict({}), root=tmp_path)


@pytest.mark.parametrize("space", ["pixel_values", "image"])
def test_the_page_stays_small_for_big_photos(micro_project, micro_dict, tmp_path, space):
    """Two 3000×2000 photos (JPEG, 1.3 MB each): the page stays far under 2 MB, each picture a bounded
    thumbnail, clean and corrupted in one geometry (benchmarks/report_photos.py measures six 6000×4000)."""
    import base64
    import io
    import json

    root = project_from(micro_project, tmp_path / "project")
    (root / "photos").mkdir()  # a pool is inside the project (`sena pool --add` puts one there)
    for i in range(2):
        photo(3000, 2000, seed=i).save(root / "photos" / f"{i}.jpg", quality=90)
    params = params_from_dict({**micro_dict, "loop": {"iterations": 1}, "noise": {"space": space},
                               "sample": {"pool": "photos", "images_per_iteration": 2}})
    paired_iteration(params, root, "des", "Describe the image concisely.", "A smooth colour gradient.",
                     "A grey square.")
    (root / "metrics").mkdir()
    (root / "metrics/iter0.json").write_text(json.dumps({"pope": {"random": {"accuracy": 0.5, "f1": 0.5}}}))
    run_report(params, root=root)
    page = (root / "report/index.html").read_text()
    assert len(page.encode()) < 2_000_000
    uris = re.findall(r"src='data:image/(png|jpeg);base64,([^']+)'", page)
    assert len(uris) == 2 * 2
    sizes = []
    for _, data in uris:
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            sizes.append(im.size)
    assert all(max(size) <= 192 for size in sizes)
    assert sizes[0] == sizes[1] and sizes[2] == sizes[3]  # clean and corrupted in the same geometry
    if space == "image":
        assert sizes[0] == (192, 128)  # the photo itself, shrunk: 3000×2000 -> 192×128


def test_standard_errors_are_those_of_proportions_over_their_recorded_n():
    from sena_cli.stages.report import standard_error

    metrics = {"pope": {"random": {"accuracy": 0.8, "f1": 0.7}, "n": {"random": {"accuracy": 100}}},
               "world_dev": {"chair": {"chair_i": 0.1, "n": {"chair_i": 400}}},
               "amber": {"generative": {"chair": 12.5}}}
    assert standard_error(metrics, "pope.random.accuracy") == pytest.approx((0.8 * 0.2 / 100) ** 0.5)
    assert standard_error(metrics, "world_dev.chair.chair_i") == pytest.approx((0.1 * 0.9 / 400) ** 0.5)
    assert standard_error(metrics, "pope.random.f1") is None  # no n: F1 is no proportion
    assert standard_error(metrics, "amber.generative.chair") is None  # a percentage, no n


def test_the_header_shows_each_iterations_effective_settings_and_a_table_of_what_differs(tmp_path):
    import json

    from sena_cli.stages.report import render

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "iter0.json").write_text(json.dumps({"world_vqa": {"accuracy": 0.5}}))
    params = params_from_dict({"train": {"lr": 2e-6}, "iterations": {
        "2": {"train": {"lr": 1.5e-5}}, "3": {"train": {"lr": 7.5e-6}, "qa": {"self_enhancement": False}}}})
    header = render(params, tmp_path).split("<h2>")[0]
    assert "lr = 2e-06 / 1.5e-05 / 7.5e-06 (iterations 1 / 2 / 3)" in header  # not the file's train.lr alone
    assert "self-enhancement = on / on / off (iterations 1 / 2 / 3)" in header
    assert "β = 0.1 ·" in header and "t = 600 ·" in header  # the same in every iteration: said once
    rows = re.findall(r"<tr><td class='l'>([^<]*)</td>((?:<td>[^<]*</td>)*)</tr>", header)
    assert [(key, re.findall(r"<td>([^<]*)</td>", cells)) for key, cells in rows] == [
        ("qa.self_enhancement", ["on", "on", "off"]), ("train.lr", ["2e-06", "1.5e-05", "7.5e-06"])]

    same = render(params_from_dict({"train": {"lr": 2e-6}}), tmp_path).split("<h2>")[0]
    assert "lr = 2e-06 ·" in same and "every iteration runs the same settings" in same and "<table>" not in same
