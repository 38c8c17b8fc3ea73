"""Judged benchmarks (LLaVA-Bench, MM-Vet, MMHal-Bench) against a fake OpenAI-compatible endpoint."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from sena_cli.bench import judge as judge_lib
from sena_cli.bench import llava_bench, mm_vet, mmhal, registry
from sena_cli.config import JudgeParams, params_from_dict
from sena_cli.errors import SenaError
from sena_cli.stages.eval import run_eval
from tests.helpers import project_from

KEY = "sk-test-0123456789"


class FakeJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint. `script` lists what the next requests get, in order:
    an HTTP status, ("redirect", url), ("trickle", seconds per byte) or "ok" (the default)."""

    requests: list = []
    status = 200
    script: list = []
    active: set = set()
    peak = 0
    delay = 0.0
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with FakeJudge.lock:
            FakeJudge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            step = FakeJudge.script.pop(0) if FakeJudge.script else "ok"
            active = FakeJudge.active  # a handler outliving its test leaves the next test's set alone
            active.add(id(self))
            FakeJudge.peak = max(FakeJudge.peak, len(active))
        try:
            self._answer(body, step)
        finally:
            with FakeJudge.lock:
                active.discard(id(self))

    def _answer(self, body, step):
        time.sleep(FakeJudge.delay)
        if isinstance(step, int):
            self.send_response(step)
            self.send_header("Content-Length", "2")
            if step == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        if isinstance(step, tuple) and step[0] == "redirect":
            self.send_response(307)
            self.send_header("Location", step[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if isinstance(step, tuple) and step[0] == "trickle":  # one byte at a time, forever-ish
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b" " * 10_000:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(step[1])
            except OSError:  # the client gave up: what the test wants
                pass
            self.close_connection = True
            return
        if FakeJudge.status != 200 or self.headers.get("Authorization") != f"Bearer {KEY}":
            self.send_response(401 if FakeJudge.status == 200 else FakeJudge.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        if "[Assistant 1]" in prompt:
            reply = "8 6\nAssistant 2 misses details."
        elif "Ground truth:" in prompt:
            reply = "0.5"
        else:
            reply = "The response invents an object.\nRating: 2"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeJudge.requests, FakeJudge.status, FakeJudge.script = [], 200, []
    FakeJudge.active, FakeJudge.peak = set(), 0
    FakeJudge.delay = 0.0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _write_benchmarks(tmp_path) -> dict:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("001.jpg", "002.jpg", "v1_0.png", "v1_1.png", "34650.jpg"):
        Image.new("RGB", (32, 32), "blue").save(images / name)
    lb = tmp_path / "llava-bench-in-the-wild"
    lb.mkdir()
    (lb / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question_id": 0, "image": "001.jpg", "text": "What is in the picture?", "category": "conv"},
        {"question_id": 1, "image": "002.jpg", "text": "Describe the picture in detail.", "category": "detail"}]))
    (lb / "answers_gpt4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question_id": 0, "text": "A blue square."}, {"question_id": 1, "text": "A plain blue image."}]))
    (lb / "context.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "001", "image": "001.jpg", "caption": "blue"}, {"id": "002", "image": "002.jpg", "caption": "blue"}]))
    (tmp_path / "mm-vet.json").write_text(json.dumps({
        "v1_0": {"imagename": "v1_0.png", "question": "What colour is it?", "answer": "blue", "capability": ["rec"]},
        "v1_1": {"imagename": "v1_1.png", "question": "How many shapes?", "answer": "0",
                 "capability": ["rec", "math"]}}))
    (tmp_path / "response_template.json").write_text(json.dumps([
        {"question_type": "attribute", "question_topic": "x", "image_id": "34650",
         "image_src": "https://farm.staticflickr.com/34650.jpg", "image_content": ["wall"],
         "question": "What colour is the wall?", "gt_answer": "Blue.", "model_answer": ""}]))
    return {"llava_bench": {"questions": str(lb / "questions.jsonl"), "answers": str(lb / "answers_gpt4.jsonl"),
                            "context": str(lb / "context.jsonl"), "image_root": str(images)},
            "mm_vet": {"file": str(tmp_path / "mm-vet.json"), "image_root": str(images)},
            "mmhal": {"file": str(tmp_path / "response_template.json"), "image_root": str(images)}}


@pytest.fixture
def project(micro_project, tmp_path):
    return project_from(micro_project, tmp_path / "project")


def _params(micro_dict, files, judge):
    return params_from_dict({**micro_dict, "eval": {**micro_dict["eval"], **files, "judge": judge,
                                                    "benchmarks": ["llava_bench", "mm_vet", "mmhal"]}})


def test_judged_scores_with_the_judge_and_prompt_version_and_no_key_anywhere(
        project, micro_dict, tmp_path, endpoint, monkeypatch):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    params = _params(micro_dict, _write_benchmarks(tmp_path), {"base_url": endpoint, "model": "fake-judge-1"})
    result = run_eval(params, 0, root=project)
    metrics = json.loads((project / "metrics/iter0.json").read_text())
    assert result["skipped"] == {}
    assert metrics["llava_bench"]["relative_score"] == pytest.approx(6 / 8)
    assert metrics["llava_bench"]["relative_score_detail"] == pytest.approx(6 / 8)
    assert metrics["mm_vet"]["total"] == pytest.approx(0.5) and metrics["mm_vet"]["math"] == pytest.approx(0.5)
    assert metrics["mmhal"] == {"average_score": 2.0, "hallucination_rate": 1.0, "unparsed": 0,
                                "judge_model": "fake-judge-1", "prompt_version": "sena-mmhal-v1"}
    for name in ("llava_bench", "mm_vet"):
        assert metrics[name]["judge_model"] == "fake-judge-1"
        assert metrics[name]["prompt_version"] == registry.get(name).prompt_version
    assert len(FakeJudge.requests) == 2 + 2 + 1
    assert all(r["path"] == "/v1/chat/completions" and r["auth"] == f"Bearer {KEY}" for r in FakeJudge.requests)
    assert all(r["body"]["model"] == "fake-judge-1" for r in FakeJudge.requests)
    for written in project.rglob("*"):
        if written.is_file() and not written.is_symlink() and "world" not in written.parts:
            assert KEY not in written.read_text(errors="ignore"), written


def test_without_a_judge_the_judged_benchmarks_are_skipped_with_how_to_enable(project, micro_dict, tmp_path,
                                                                              monkeypatch):
    monkeypatch.delenv("SENA_JUDGE_API_KEY", raising=False)
    files = _write_benchmarks(tmp_path)
    result = run_eval(_params(micro_dict, files, {}), 0, root=project)
    assert set(result["skipped"]) == {"llava_bench", "mm_vet", "mmhal"}
    assert "eval.judge.base_url" in result["skipped"]["mmhal"]
    result = run_eval(_params(micro_dict, files, {"base_url": "http://127.0.0.1:9/v1", "model": "m"}), 0,
                      root=project)
    assert "export SENA_JUDGE_API_KEY" in result["skipped"]["mm_vet"]
    assert json.loads((project / "metrics/iter0.json").read_text()) == {}


def test_a_refusing_judge_is_one_error_naming_the_status_not_the_key(endpoint, monkeypatch):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    FakeJudge.status = 401
    judge = judge_lib.Judge(JudgeParams(base_url=endpoint, model="m"))
    with pytest.raises(SenaError, match="HTTP 401") as err:
        judge.ask("hello")
    assert KEY not in str(err.value)


def test_judge_reply_parsing():
    assert llava_bench.parse_pair_scores("7 9\nbecause") == (7.0, 9.0)
    assert llava_bench.parse_pair_scores("Assistant 1 is better") is None
    assert mm_vet.parse_unit_score("0.4") == 0.4 and mm_vet.parse_unit_score("7") is None
    assert mmhal.parse_rating("blah\nRating: 5") == 5 and mmhal.parse_rating("no rating") is None
    assert llava_bench.llava_bench_metrics([(8, 6), None, (10, 10)], ["a", "a", "b"]) == pytest.approx(
        {"relative_score": 16 / 18, "unparsed": 1, "relative_score_a": 6 / 8, "relative_score_b": 1.0})


# ---------------------------------------------------------------- the client: retries, redirects, deadline, journal

def test_429_and_5xx_are_retried_with_backoff_and_retry_after(endpoint, monkeypatch):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    FakeJudge.script = [429, 500, 503]
    sleeps = []
    judge = judge_lib.Judge(JudgeParams(base_url=endpoint, model="m", backoff_s=0.5, max_backoff_s=30),
                            sleep=sleeps.append)
    assert judge.ask("Ground truth: x") == "0.5"
    assert len(FakeJudge.requests) == 4
    assert sleeps == [0.0, 0.5 * 2, 0.5 * 4]  # Retry-After: 0 first, then the backoff of attempts 2 and 3


def test_retries_run_out_in_one_line_naming_the_status(endpoint, monkeypatch):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    FakeJudge.script = [500] * 3
    judge = judge_lib.Judge(JudgeParams(base_url=endpoint, model="m", retries=2), sleep=lambda s: None)
    with pytest.raises(SenaError, match="HTTP 500, still after 2 retries") as err:
        judge.ask("hello")
    assert KEY not in str(err.value) and len(FakeJudge.requests) == 3


def test_a_redirect_to_another_host_is_not_followed_and_the_key_stays_home(endpoint, monkeypatch):
    """The other host (127.0.0.2, still this machine) would record any request it got."""
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    other = ThreadingHTTPServer(("127.0.0.2", 0), FakeJudge)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        target = f"http://127.0.0.2:{other.server_address[1]}/v1/chat/completions"
        FakeJudge.script = [("redirect", target)]
        judge = judge_lib.Judge(JudgeParams(base_url=endpoint, model="m"), sleep=lambda s: None)
        with pytest.raises(SenaError, match=r"HTTP 307, a redirect to http://127\.0\.0\.2:\d+; sena does not follow"):
            judge.ask("hello")
        assert len(FakeJudge.requests) == 1  # the redirect itself; nothing reached 127.0.0.2
    finally:
        other.shutdown()


def test_a_trickling_server_is_cut_at_the_deadline(endpoint, monkeypatch):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    FakeJudge.script = [("trickle", 0.05)]  # a byte every 50 ms: no single read ever times out
    judge = judge_lib.Judge(JudgeParams(base_url=endpoint, model="m", timeout_s=5, deadline_s=1.0, retries=0),
                            sleep=lambda s: None)
    started = time.monotonic()
    with pytest.raises(SenaError, match="no complete answer within 5 s per read / 1 s in all"):
        judge.ask("hello")
    assert time.monotonic() - started < 3.0


def test_requests_in_flight_stay_within_the_concurrency(endpoint, monkeypatch):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    FakeJudge.delay = 0.3
    judge = judge_lib.Judge(JudgeParams(base_url=endpoint, model="m", concurrency=2), sleep=lambda s: None)
    started = time.monotonic()
    replies = judge.ask_all([f"Ground truth: {i}" for i in range(6)])
    assert replies == ["0.5"] * 6 and FakeJudge.peak == 2
    assert time.monotonic() - started < 6 * 0.3  # really in parallel


def test_an_interrupted_judged_eval_resumes_with_the_replies_it_paid_for(project, micro_dict, tmp_path, endpoint,
                                                                         monkeypatch):
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    judge = {"base_url": endpoint, "model": "fake-judge-1", "concurrency": 1, "retries": 1, "backoff_s": 0}
    params = _params(micro_dict, _write_benchmarks(tmp_path), judge)
    FakeJudge.script = ["ok"] * 3 + [500, 500]  # llava_bench's 2 and mm_vet's first, then the judge fails
    with pytest.raises(SenaError, match="HTTP 500, still after 1 retries"):
        run_eval(params, 0, root=project)
    first = [r["body"]["messages"][0]["content"] for r in FakeJudge.requests]
    partial = project / "data/iter0/eval.judge.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 3 and KEY not in partial.read_text()
    assert not (project / "metrics/iter0.json").exists()
    FakeJudge.requests = []
    run_eval(params, 0, root=project)
    again = [r["body"]["messages"][0]["content"] for r in FakeJudge.requests]
    assert len(again) == 2  # mm_vet's second question and mmhal's: nothing paid for is asked again
    assert not set(again) & set(first[:3])
    metrics = json.loads((project / "metrics/iter0.json").read_text())
    assert metrics["mm_vet"]["total"] == pytest.approx(0.5) and metrics["mmhal"]["average_score"] == 2.0
    assert not partial.exists()
