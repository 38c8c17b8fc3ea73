"""The one bounded reader (sena_cli/bounded.py, issue 23): every file and reply sena opens is a regular
file or a bounded stream, sized from its stat or header before it is read. The hostile files are sparse
(a 3 GiB tail costs no disk) and every case that could hang runs under a timeout, so the file stays fast.
The lines asserted are the ones docs/robustness.md lists."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from sena_cli import bounded
from sena_cli.bench import coco_pope
from sena_cli.bench import judge as judge_lib
from sena_cli.bench.registry import Context
from sena_cli.config import JudgeParams, params_from_dict
from sena_cli.errors import SenaError
from sena_cli.stages.sample import inspect_image
from sena_cli.vlm.chat import ChatFormat
from sena_cli.vlm.model import VLM, safetensors_fault
from sena_fixtures.scripted import ScriptedVLM
from tests.robustness.helpers import fails, params_with, theta1
from tests.robustness.test_schemas import _no_model

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of `size` bytes that takes no disk: `head`, then a hole."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def _png(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height (its pixels are not there: only the header is read)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _small_png() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    return buf.getvalue()


@contextmanager
def _swapped(path: Path, make):
    """`path` replaced by make(path) (a FIFO, a link, a sparse file) for the test, then put back."""
    saved = path.with_name(f".saved-{path.name}")
    os.replace(path, saved)
    try:
        make(path)
        yield
    finally:
        if os.path.lexists(path):
            os.unlink(path)
        os.replace(saved, path)


def _first_sampled(project: Path) -> str:
    return json.loads((project / "data/iter1/sample/manifest.jsonl").read_text().splitlines()[0])["path"]


# ---------------------------------------------------------------- sampled images (noise, qa, pair, train read them)


def test_a_sampled_image_replaced_by_a_fifo_fails_at_once_instead_of_hanging(project):
    """Run as a person runs it, in a subprocess with a timeout: a regression hangs in read(), not the suite."""
    image = project / _first_sampled(project)
    with _swapped(image, os.mkfifo):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sena_cli", "noise", "--iter", "1"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    assert f"{_first_sampled(project)}: a FIFO (named pipe), not a regular file; sena reads regular files only; " \
           "rerun `sena sample --iter 1`" in " ".join(out.split()), out
    assert time.monotonic() - started < 170


@pytest.mark.parametrize("make, expected", [
    (lambda p: os.symlink("/dev/zero", p), "a character device, not a regular file"),
    (lambda p: os.symlink(p.with_name(".fifo"), p) or os.mkfifo(p.with_name(".fifo")),
     "a FIFO (named pipe), not a regular file"),
    (lambda p: _sparse(p, 3 * GIB, _small_png()),
     "image of 3072 MiB, more than limits.max_image_bytes (256 MiB); replace it, or raise limits.max_image_bytes"),
])
def test_a_sampled_image_swapped_for_something_unbounded_is_refused_before_reading(project, monkeypatch, make,
                                                                                   expected):
    """/dev/zero took 6.6 GB and a MemoryError; a 3 GiB tail was read whole (all before the sha256 check)."""
    _no_model(monkeypatch)
    rel = _first_sampled(project)
    image = project / rel
    fifo = image.with_name(".fifo")
    try:
        with _swapped(image, make):
            fails(project, monkeypatch, ["noise", "--iter", "1"], f"{rel}: {expected}", allow=(rel,))
    finally:
        if os.path.lexists(fifo):
            os.unlink(fifo)


def test_the_pixel_limit_is_a_parameter(project, monkeypatch):
    _no_model(monkeypatch)
    fails(project, monkeypatch, ["noise", "--iter", "1"],
          "image of 48x48 pixels (2304), more than limits.max_image_pixels (100); shrink it",
          params_with(project, limits__max_image_pixels=100))


# ---------------------------------------------------------------- the pool (`sample` skips and counts)


@pytest.mark.parametrize("make, reason", [
    (os.mkfifo, "a FIFO (named pipe), not a regular file"),
    (lambda p: os.symlink("/dev/zero", p), "a character device, not a regular file"),
    (lambda p: _sparse(p, 3 * GIB, _small_png()), "too large a file (3221225472 bytes; limits.max_image_bytes is "
                                                  "268435456)"),
])
def test_a_pool_file_that_is_no_regular_file_or_too_big_is_skipped_unread(tmp_path, make, reason):
    """`sena sample` read all of a 3 GiB tail (3.1 GB peak); a FIFO would block it."""
    path = tmp_path / "photo.png"
    make(path)
    started = time.monotonic()
    assert inspect_image(path) == (None, reason)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- JSON lines and JSON files


def test_a_line_over_the_line_limit_is_refused_naming_the_file_and_line(project, monkeypatch):
    _no_model(monkeypatch)
    fails(project, monkeypatch, ["pair", "--iter", "1"],
          "data/iter1/qa/records.jsonl: line 1 is longer than limits.max_line_bytes (100 bytes); rerun "
          "`sena qa --iter 1`, or raise limits.max_line_bytes if it is right",
          params_with(project, limits__max_line_bytes=100))


def test_a_jsonl_file_is_streamed_not_held(tmp_path):
    """10⁵ records: reading them one by one holds one line, not the file (a list of them is ~40 MB)."""
    path = tmp_path / "pope.json"
    with open(path, "w") as f:
        for i in range(100_000):
            f.write(json.dumps({"question_id": i, "image": "a.jpg", "text": f"Is there a thing{i}?",
                                "label": "yes"}) + "\n")
    tracemalloc.start()
    try:
        n = sum(1 for _ in coco_pope.stream_pope_file(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 100_000 and peak < 8 * 2**20, peak


def test_pope_is_answered_in_windows_so_images_do_not_pile_up(tmp_path):
    """A POPE file of 10⁶ questions decoded every image before the first batch (4.8 GB, MemoryError)."""
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    path = tmp_path / "coco_pope_random.json"
    path.write_text("".join(json.dumps({"question_id": i, "image": "a.png", "text": f"Is it {i}?",
                                        "label": "yes"}) + "\n" for i in range(1000)))
    params = params_from_dict({"eval": {"batch_size": 2, "coco_pope": {"files": [str(path)],
                                                                        "image_root": str(tmp_path)}}})
    sizes = []

    class Counting(ScriptedVLM):
        def generate(self, images, texts, **kwargs):
            sizes.append(len(images))
            return super().generate(images, texts, **kwargs)

    metrics, records = coco_pope.run(Context(params), Counting(lambda t: "Yes."), lambda n: None)
    assert max(sizes) == 2 * coco_pope.WINDOW and sum(sizes) == 1000 and len(records) == 1000
    assert metrics["random"]["accuracy"] == 1.0


def test_every_benchmark_with_images_opens_them_a_window_at_a_time(tmp_path):
    """AMBER, COCO CHAIR, LLaVA-Bench, MM-Vet and MMHal decoded all their images before the first batch."""
    from sena_cli.bench.external import WINDOW, generate_windows

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    params = params_from_dict({"eval": {"batch_size": 1}})
    sizes = []

    class Counting(ScriptedVLM):
        def generate(self, images, texts, **kwargs):
            sizes.append(len(images))
            return super().generate(images, texts, **kwargs)

    answers = generate_windows(Counting(lambda t: t.upper()), tmp_path, ["a.png"] * 200, [f"q{i}" for i in range(200)],
                               "eval.amber.image_root", params, lambda n: None)
    assert sizes == [WINDOW, WINDOW, WINDOW, 200 - 3 * WINDOW] and answers == [f"Q{i}" for i in range(200)]


def test_a_100_mb_question_is_refused_before_the_tokenizer(project, monkeypatch, tmp_path):
    """It aborted the process inside the tokenizer (SIGABRT, rc 134, no error line)."""
    _no_model(monkeypatch)
    path = tmp_path / "pope.json"
    path.write_text(json.dumps({"question_id": 1, "image": "a.jpg", "text": "x" * 100_000_000, "label": "no"}))
    fails(project, monkeypatch, ["eval", "--iter", "0"],
          f"{path}: line 1 is longer than limits.max_line_bytes (16 MiB); is this a POPE question file? check "
          "eval.coco_pope.files, or raise limits.max_line_bytes",
          params_with(project, eval__benchmarks=["coco_pope"], eval__coco_pope={"files": [str(path)],
                                                                                 "image_root": str(tmp_path)}))


def test_a_question_under_the_line_limit_but_over_the_text_limit_is_refused(project, monkeypatch, tmp_path):
    _no_model(monkeypatch)
    path = tmp_path / "pope.json"
    path.write_text(json.dumps({"question_id": 1, "image": "a.jpg", "text": "x" * 2_000_001, "label": "no"}) + "\n")
    fails(project, monkeypatch, ["eval", "--iter", "0"],
          "line 1: 'text' must be text of at most limits.max_text_chars characters",
          params_with(project, eval__benchmarks=["coco_pope"], eval__coco_pope={"files": [str(path)],
                                                                                 "image_root": str(tmp_path)}))


def test_any_text_is_sized_before_the_tokenizer():
    with pytest.raises(SenaError, match=r"^prompt 2 of 2: text of 2000001 characters, more than "
                                        r"limits.max_text_chars \(2000000\); shorten it"):
        VLM.generate(None, None, ["fine", "x" * 2_000_001], max_new_tokens=1)  # refused before self is used


@pytest.mark.parametrize("make, kind", [
    (lambda t: "/dev/zero", "a character device"),
    (lambda t: os.mkfifo(t / "pope.json") or str(t / "pope.json"), "a FIFO (named pipe)"),
    (lambda t: (t / "pope.json").mkdir() or str(t / "pope.json"), "a folder"),
])
def test_a_device_fifo_or_folder_as_a_benchmark_file_is_refused(project, monkeypatch, tmp_path, make, kind):
    _no_model(monkeypatch)
    path = make(tmp_path)
    fails(project, monkeypatch, ["eval", "--iter", "0"],
          f"{path}: {kind}, not a regular file; sena reads regular files only; is this a POPE question file? "
          "check eval.coco_pope.files",
          params_with(project, eval__benchmarks=["coco_pope"], eval__coco_pope={"files": [path],
                                                                                 "image_root": str(tmp_path)}))


def test_a_params_file_that_is_a_fifo_is_refused_unopened(project, monkeypatch, tmp_path):
    os.mkfifo(tmp_path / "params.yaml")
    fails(project, monkeypatch, ["--params", str(tmp_path / "params.yaml"), "noise", "--iter", "1"],
          f"{tmp_path}/params.yaml: a FIFO (named pipe), not a regular file; sena reads regular files only; point "
          "to a params file")


def test_an_amber_safe_word_list_that_is_dev_zero_is_refused(tmp_path):
    from sena_cli.bench import amber

    (tmp_path / "q.json").write_text(json.dumps([{"id": 1, "image": "a.jpg", "query": "Describe."}]))
    (tmp_path / "a.json").write_text(json.dumps([{"type": "generative", "truth": ["dog"]}]))
    (tmp_path / "r.json").write_text(json.dumps({"dog": ["puppy"]}))
    with pytest.raises(SenaError, match="^/dev/zero: a character device, not a regular file; sena reads regular "
                                        "files only; fix eval.amber.safe_words$"):
        amber.read_amber(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "r.json", "/dev/zero")


def test_a_json_benchmark_file_over_the_file_limit_is_refused_from_its_stat(project, monkeypatch, tmp_path):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", "not-a-real-key")
    _no_model(monkeypatch)
    path = _sparse(tmp_path / "mm-vet.json", 2 * GIB, b"{")
    fails(project, monkeypatch, ["eval", "--iter", "0"],
          f"{path}: file of 2048 MiB, more than limits.max_file_bytes (1024 MiB); replace it, or raise "
          "limits.max_file_bytes if it is right",
          params_with(project, eval__benchmarks=["mm_vet"], eval__mm_vet={"file": str(path), "image_root": "."},
                      eval__judge={"base_url": "http://127.0.0.1:9/v1", "model": "judge"}))


def test_a_benchmark_image_with_a_pixel_bomb_header_is_refused_before_decoding(tmp_path):
    from sena_cli.bench.external import open_benchmark_image

    (tmp_path / "bomb.png").write_bytes(_png(15000, 15000))
    with pytest.raises(SenaError, match=r"bomb.png: image of 15000x15000 pixels \(225000000\), more than "
                                        r"limits.max_image_pixels"):
        open_benchmark_image(tmp_path, "bomb.png", "eval.coco_pope.image_root")
    os.mkfifo(tmp_path / "fifo.png")  # (a link to /dev/zero leaves the image root: refused as that)
    with pytest.raises(SenaError, match="fifo.png: a FIFO \\(named pipe\\), not a regular file"):
        open_benchmark_image(tmp_path, "fifo.png", "eval.coco_pope.image_root")


def test_an_mmbench_image_with_a_pixel_bomb_header_is_refused(tmp_path):
    import base64

    from sena_cli.bench import mmbench

    path = tmp_path / "mmbench.tsv"
    path.write_text("index\tquestion\tA\tB\tanswer\timage\n0\tq\ta\tb\tA\t"
                    + base64.b64encode(_png(15000, 15000)).decode() + "\n")
    row = mmbench.read_mmbench_tsv(path)[0]
    with pytest.raises(SenaError, match=r"mmbench.tsv: index 0: image of 15000x15000 pixels"):
        row.image()


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name, size, expected", [
    ("config.json", GIB, "config.json: checkpoint file config.json of 1024 MiB, more than "
                         "limits.max_checkpoint_file_bytes (64 MiB)"),
    ("tokenizer.json", 100 * 2**20, "tokenizer.json: checkpoint file tokenizer.json of 100 MiB, more than "
                                    "limits.max_checkpoint_file_bytes (64 MiB)"),
    ("chat_template.jinja", 65 * 2**20, "chat_template.jinja: checkpoint file chat_template.jinja of 65 MiB"),
])
def test_a_checkpoint_file_over_its_limit_is_refused_before_transformers_reads_it(project, monkeypatch, name,
                                                                                  size, expected):
    """A 1 GB config.json, a tokenizer.json of a million merges: sized from the stat, never parsed (the
    check is the first step of loading a model, so no _no_model here)."""
    with theta1(project):
        target = project / "models/iter1" / name
        target.unlink(missing_ok=True)
        _sparse(target, size, b"{")
        fails(project, monkeypatch, ["eval", "--iter", "1"], f"models/iter1/{expected}", allow=("models/iter1",))


def test_a_checkpoint_file_that_is_a_device_is_refused(project, monkeypatch):
    with theta1(project):
        target = project / "models/iter1/tokenizer_config.json"
        target.unlink(missing_ok=True)
        os.symlink("/dev/zero", target)
        fails(project, monkeypatch, ["eval", "--iter", "1"],
              "models/iter1/tokenizer_config.json: a character device, not a regular file")


def test_a_safetensors_header_claiming_1_tb_is_refused_from_its_8_bytes(project, monkeypatch):
    with theta1(project):
        weights = project / "models/iter1/model.safetensors"
        weights.write_bytes((10**12).to_bytes(8, "little") + b"{}")
        fails(project, monkeypatch, ["eval", "--iter", "1"],
              "models/iter1/model.safetensors: damaged or hostile (its header claims 1000000000000 bytes, more than "
              "limits.max_safetensors_header_bytes, 100000000), so the weights cannot be read")


def test_safetensors_that_are_a_fifo_are_refused_unopened(tmp_path):
    os.mkfifo(tmp_path / "model.safetensors")
    assert safetensors_fault(tmp_path / "model.safetensors") == "a FIFO (named pipe), not a regular file"


class _Processor:
    """Just enough of a processor for ChatFormat.of: its template is `render`."""

    chat_template = "{{ fake }}"

    def __init__(self, render):
        self.render = render
        from types import SimpleNamespace

        self.tokenizer = SimpleNamespace(eos_token_id=2)

    def apply_chat_template(self, messages, **kwargs):
        return self.render(messages)


def test_a_chat_template_that_loops_is_refused_at_load():
    forever = threading.Event()
    started = time.monotonic()
    with bounded.limited(max_template_seconds=0.5), pytest.raises(
            SenaError, match=r"the chat template did not render a one-line prompt within 0.5 s "
                             r"\(limits.max_template_seconds\): it loops"):
        ChatFormat.of(_Processor(lambda m: forever.wait()))
    assert time.monotonic() - started < 5
    forever.set()


def test_a_chat_template_that_repeats_its_input_is_refused_before_the_tokenizer():
    with bounded.limited(max_text_chars=1000), pytest.raises(
            SenaError, match=r"the chat template rendered 1900000 characters from 19 characters of messages"):
        ChatFormat.of(_Processor(lambda m: m[0]["content"][1]["text"] * 100_000))


# ---------------------------------------------------------------- the judge


def _serve(handler) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


class _Huge(BaseHTTPRequestHandler):
    """Answers 200 with a 1 GiB body of spaces (valid JSON whitespace), as fast as the client reads."""

    sent = 0
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(GIB))
        self.end_headers()
        block = b" " * 65536
        try:
            for _ in range(GIB // len(block)):
                self.wfile.write(block)
                _Huge.sent += len(block)
        except OSError:
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_judge_answering_1_gib_is_cut_at_the_reply_cap(monkeypatch):
    """It exited 0 after 4.9 GB and published a 1,073,742,073-byte answers.jsonl."""
    monkeypatch.setenv("SENA_JUDGE_API_KEY", "k")
    server, url = _serve(_Huge)
    try:
        judge = judge_lib.Judge(JudgeParams(base_url=url, model="m"), sleep=lambda s: None)
        with pytest.raises(SenaError, match=r"a reply longer than eval.judge.max_reply_bytes \(1048576 bytes\), "
                                            r"cut there; check the endpoint and model"):
            judge.ask("hello")
    finally:
        server.shutdown()
    assert _Huge.sent < 64 * 2**20  # the socket's buffers, not the gigabyte


class _Trickle(BaseHTTPRequestHandler):
    """A byte every 20 ms: no single read ever waits long, the reply never ends."""

    protocol_version = "HTTP/1.1"
    requests = 0

    def do_POST(self):  # noqa: N802
        _Trickle.requests += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b" " * 100_000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_trickling_judge_is_bounded_by_one_deadline_for_all_tries(monkeypatch):
    """It was bounded only after about 30 minutes (6 tries × 300 s): the deadline now counts the retries."""
    monkeypatch.setenv("SENA_JUDGE_API_KEY", "k")
    server, url = _serve(_Trickle)
    try:
        judge = judge_lib.Judge(JudgeParams(base_url=url, model="m", timeout_s=5, deadline_s=1.5, retries=5))
        started = time.monotonic()
        with pytest.raises(SenaError, match=r"no complete answer within 5 s per read / 1.5 s in all, "
                                            r"eval.judge.deadline_s \(1.5 s\) spent after 1 tries"):
            judge.ask("hello")
        assert time.monotonic() - started < 10  # (1.5 s, and a loaded machine; it was half an hour)
    finally:
        server.shutdown()


def test_the_judge_defaults_bound_a_prompt_to_two_minutes():
    p = JudgeParams()
    assert (p.deadline_s, p.timeout_s, p.max_reply_bytes) == (120.0, 30.0, 2**20)


# ---------------------------------------------------------------- the limits themselves


@pytest.mark.parametrize("key, value, expected", [
    ("limits__max_line_bytes", 0, "limits.max_line_bytes"),
    ("limits__max_image_pixels", -5, "limits.max_image_pixels"),
    ("limits__max_template_seconds", 0, "limits.max_template_seconds"),
    ("eval__judge__max_reply_bytes", 10, "eval.judge.max_reply_bytes"),
])
def test_an_impossible_limit_is_refused_naming_the_key(project, monkeypatch, key, value, expected):
    _no_model(monkeypatch)
    fails(project, monkeypatch, ["noise", "--iter", "1"], expected, params_with(project, **{key: value}))


def test_the_limits_are_the_params_of_the_run(project, monkeypatch):
    """`sena` installs params.limits when it reads params.yaml; the defaults are the Limits dataclass's."""
    from sena_cli.config import load_params

    (project / "tmp-params.yaml").write_text(params_with(project, limits__max_line_bytes=4096))
    try:
        with bounded.limited():
            load_params(project / "tmp-params.yaml")
            assert bounded.limits().max_line_bytes == 4096
    finally:
        (project / "tmp-params.yaml").unlink()
    assert bounded.limits() == bounded.Limits()


def _pope_eval(micro_project, micro_dict, root: Path, questions: int, monkeypatch, *, traced: bool = False,
               benchmarks=("coco_pope",), answer=lambda t: "No, not." if "7" in t else "Yes."):
    """`run_eval` of coco_pope alone on a POPE file of `questions` questions, the model scripted;
    (the project, tracemalloc's peak from loading the model to publishing when `traced`, else run_eval's
    answer, the params)."""
    from sena_cli.stages import eval as eval_stage
    from tests.helpers import project_from

    project = root if (root / "models").exists() else project_from(micro_project, root)
    path = project / "coco_pope_random.json"
    if not path.exists():  # a rerun in the same project reads the same files
        Image.new("RGB", (8, 8), "red").save(project / "a.png")
        with open(path, "w") as f:
            for i in range(questions):
                f.write(json.dumps({"question_id": i, "image": "a.png", "text": f"Is there a thing{i}?",
                                    "label": "yes" if i % 3 else "no"}) + "\n")
    d = {**micro_dict, "eval": {**micro_dict["eval"], "benchmarks": list(benchmarks), "batch_size": 4,
                                "coco_pope": {"files": [str(path)], "image_root": str(project)}}}
    class Forgetful(ScriptedVLM):  # keeps no prompts (ScriptedVLM.asked would grow with the file)
        def generate(self, images, texts, **kwargs):
            answers = super().generate(images, texts, **kwargs)
            self.asked.clear()
            return answers

    def load(*args, **kwargs):  # after the files are counted (streamed, tested above): the answer path's peak
        tracemalloc.reset_peak()
        return Forgetful(answer)

    monkeypatch.setattr(eval_stage.VLM, "from_params", staticmethod(load))
    params = params_from_dict(d)
    if not traced:
        return project, eval_stage.run_eval(params, 0, root=project), params
    tracemalloc.start()
    try:
        eval_stage.run_eval(params, 0, root=project)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return project, peak, params


def test_pope_answers_are_published_as_the_records_in_memory_were(micro_project, micro_dict, tmp_path, monkeypatch):
    """Streamed through a part file, answers.jsonl is byte for byte what writing the runner's records at once
    wrote (one `json.dumps(record, sort_keys=True)` a line), and the metrics are those of all answers at once."""
    from sena_cli.bench import pope

    project, info, params = _pope_eval(micro_project, micro_dict, tmp_path / "p", 700, monkeypatch)
    metrics, records = coco_pope.run(Context(params), ScriptedVLM(lambda t: "No, not." if "7" in t else "Yes."),
                                     lambda n: None)
    expected = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    assert len(records) == 700 and (project / "data/iter0/eval/answers.jsonl").read_text() == expected
    parsed, labels = [r["parsed"] for r in records], [r["label"] for r in records]
    assert info["metrics"]["coco_pope"]["random"] == pope.pope_metrics(parsed, labels) == metrics["random"]
    assert info["metrics"]["coco_pope"]["n"]["random"] == pope.pope_counts(parsed, labels)
    assert 0 < metrics["random"]["yes_ratio"] < 1 and not (project / "data/iter0/eval.partial").exists()


def test_pope_eval_memory_does_not_grow_with_the_file(micro_project, micro_dict, tmp_path, monkeypatch):
    """Every answer's record was held, journaled as one line and published whole (~2 KB a question:
    10⁶ questions peaked at 3 GB). Now records go to a part file a window at a time, the metrics are
    running counts and collected batches are let go: 10× the questions, about the same peak."""
    _, small, _ = _pope_eval(micro_project, micro_dict, tmp_path / "small", 1000, monkeypatch, traced=True)
    _, large, _ = _pope_eval(micro_project, micro_dict, tmp_path / "large", 10_000, monkeypatch, traced=True)
    assert large < 1.5 * small, (small, large)


def test_a_killed_eval_reuses_the_part_file_of_a_finished_benchmark_and_refuses_a_changed_one(
        micro_project, micro_dict, tmp_path, monkeypatch):
    """The records of a finished benchmark are in its part file, not the journal: a rerun after a kill
    publishes them without asking again; a part file changed in between is refused in one line."""
    from sena_cli.errors import SenaError

    root = tmp_path / "p"
    asked = []

    def dies_after_pope(text):
        if "thing" not in text:  # world_pope's turn: coco_pope is journaled by now
            raise KeyboardInterrupt
        asked.append(text)
        return "Yes."

    with pytest.raises(KeyboardInterrupt):
        _pope_eval(micro_project, micro_dict, root, 300, monkeypatch, benchmarks=("coco_pope", "world_pope"),
                   answer=dies_after_pope)
    parts = list((root / "data/iter0/eval.partial").glob("answers-*-0.jsonl"))
    assert len(asked) == 300 and len(parts) == 1 and len(parts[0].read_text().splitlines()) == 300
    saved = parts[0].read_bytes()
    parts[0].write_bytes(saved[:-10])
    with pytest.raises(SenaError, match=r"answers-\w+-0\.jsonl: \d+ bytes, not the \d+ written; it changed since"):
        _pope_eval(micro_project, micro_dict, root, 300, monkeypatch, benchmarks=("coco_pope", "world_pope"),
                   answer=lambda t: "Yes.")
    parts[0].write_bytes(saved)
    asked.clear()
    _pope_eval(micro_project, micro_dict, root, 300, monkeypatch, benchmarks=("coco_pope", "world_pope"),
               answer=lambda t: asked.append(t) or "Yes.")
    answers = (root / "data/iter0/eval/answers.jsonl").read_text().splitlines()
    assert not [t for t in asked if "thing" in t] and sum('"coco_pope_random"' in a for a in answers) == 300


# ---------------------------------------------------------------- sena's own files: journals, dvc.yaml, training logs

def test_a_rank_journal_replaced_by_a_fifo_is_refused_instead_of_blocking_every_poll(tmp_path):
    from sena_cli.ranks import _JournalReader

    os.mkfifo(tmp_path / "rank0.jsonl")
    outcome: list = []

    def poll():
        try:
            _JournalReader(tmp_path, "run").poll()
            outcome.append("read")
        except SenaError as e:
            outcome.append(str(e))

    reader = threading.Thread(target=poll, daemon=True)
    reader.start()
    reader.join(timeout=20)  # open() of a FIFO with no writer blocks forever: the thread would still be alive
    assert not reader.is_alive(), "polling a FIFO journal blocked"
    assert outcome and "rank0.jsonl: a FIFO (named pipe), not a regular file" in outcome[0], outcome
    assert "delete it (its work is redone)" in outcome[0]


def test_a_journal_over_the_file_limit_is_refused_naming_it(tmp_path):
    from sena_cli.artifacts import read_journals

    journal = _sparse(tmp_path / "rank0.jsonl", 3 * GIB, b'{"run": "r", "chunk": 0, "data": 1}\n')
    with bounded.limited(max_file_bytes=2**20), pytest.raises(SenaError) as e:
        read_journals([journal], "r")
    assert "rank0.jsonl: journal of 3072 MiB, more than limits.max_file_bytes (1 MiB)" in str(e.value)
    assert read_journals([journal.with_name("missing.jsonl")], "r") == {}


def test_a_sparse_dvc_yaml_or_training_log_is_refused_before_it_is_read(tmp_path):
    from sena_cli.stages.report import _read_tsv
    from sena_cli.tracked import read_pipeline

    _sparse(tmp_path / "dvc.yaml", 3 * GIB, b"stages: {}\n")
    log = _sparse(tmp_path / "dpo.tsv", 3 * GIB, b"step\tloss\n1\t0.5\n")
    with bounded.limited(max_file_bytes=2**20):
        with pytest.raises(SenaError, match=r"dvc\.yaml: pipeline file of 3072 MiB, more than limits\.max_file_bytes"):
            read_pipeline(tmp_path)
        with pytest.raises(SenaError, match=r"dpo\.tsv: training log of 3072 MiB, more than limits\.max_file_bytes"):
            _read_tsv(log, "loss")
    (tmp_path / "small.tsv").write_text("step\tloss\n1\t0.5\n2\t0.25\n")
    assert _read_tsv(tmp_path / "small.tsv", "loss") == [(1.0, 0.5), (2.0, 0.25)]
