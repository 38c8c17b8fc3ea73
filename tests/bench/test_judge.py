"""Judged benchmarks (LLaVA-Bench, MM-Vet, MMHal-Bench) against a fake OpenAI-compatible endpoint."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from PIL import Image

from sena_cli.bench import judge as judge_lib
from sena_cli.config import JudgeParams, params_from_dict
from sena_cli.errors import SenaError
from sena_cli.stages.eval import run_eval
from tests.helpers import project_from

KEY = "sk-test-0123456789"


class FakeJudge(BaseHTTPRequestHandler):
    requests: list = []
    status = 200

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if FakeJudge.status != 200 or self.headers.get("Authorization") != f"Bearer {KEY}":
            self.send_response(401 if FakeJudge.status == 200 else FakeJudge.status)
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
    server = HTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeJudge.requests, FakeJudge.status = [], 200
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
        assert metrics[name]["prompt_version"] == judge_lib.PROMPT_VERSIONS[name]
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
    assert judge_lib.parse_pair_scores("7 9\nbecause") == (7.0, 9.0)
    assert judge_lib.parse_pair_scores("Assistant 1 is better") is None
    assert judge_lib.parse_unit_score("0.4") == 0.4 and judge_lib.parse_unit_score("7") is None
    assert judge_lib.parse_rating("blah\nRating: 5") == 5 and judge_lib.parse_rating("no rating") is None
    assert judge_lib.llava_bench_metrics([(8, 6), None, (10, 10)], ["a", "a", "b"]) == pytest.approx(
        {"relative_score": 16 / 18, "unparsed": 1, "relative_score_a": 6 / 8, "relative_score_b": 1.0})
