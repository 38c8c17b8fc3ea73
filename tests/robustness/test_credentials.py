"""Credentials written into a URL never reach any output: the hostile cases run through the CLI and
every byte they print or write is searched for the planted secrets (issue 23)."""

import io
import logging

import pytest

from sena_cli.bench.judge import Judge
from sena_cli.config import JudgeParams
from sena_cli.errors import SenaError, redact, redact_logs
from tests.bench.test_judge import KEY, FakeJudge, endpoint  # noqa: F401 - fixture
from tests.robustness.helpers import fails, params_with

TOKEN, AWS_KEY, AWS_SECRET, PASSWORD = "hf_PlantedToken0451", "AKIAPLANTED0451", "PlantedSecret0451", "Planted0451Pw"
SECRETS = (TOKEN, AWS_KEY, AWS_SECRET, PASSWORD)


def _nothing_leaked(project, output: str) -> None:
    assert not any(s in output for s in SECRETS), output
    for path in project.rglob("*"):
        if path.is_file() and "world" not in path.parts:
            text = path.read_bytes().decode("utf-8", "replace")
            assert not any(s in text for s in SECRETS), path


@pytest.mark.parametrize("args, edit, expected", [
    (["base"], {"model__base": f"https://user:{TOKEN}@huggingface.co/llava-hf/llava-1.5-7b-hf"},
     "params.yaml: 'model.base' is a URL (https://***@huggingface.co/llava-hf/llava-1.5-7b-hf); give a hub id"),
    (["sample", "--iter", "1"], {"sample__pool": f"s3://{AWS_KEY}:{AWS_SECRET}@bucket/pool"},
     "params.yaml: 'sample.pool' is a URL (s3://***@bucket/pool); sena reads a local pool"),
    (["sample", "--iter", "1"],
     {"sample__pool": f"https://bucket.s3.amazonaws.com/pool.json?X-Amz-Credential={AWS_KEY}"
                      f"&X-Amz-Signature={AWS_SECRET}"},
     "'sample.pool' is a URL (https://bucket.s3.amazonaws.com/pool.json?X-Amz-Credential=***&X-Amz-Signature=***)"),
    (["eval", "--iter", "0"], {"eval__judge__base_url": f"http://judge:{PASSWORD}@127.0.0.1:9/v1",
                               "eval__judge__model": "j"},
     "params.yaml: 'eval.judge.base_url' carries credentials (http://***@127.0.0.1:9/v1); remove them: the judge "
     "key comes only from the environment variable SENA_JUDGE_API_KEY"),
    (["eval", "--iter", "0"], {"eval__judge__base_url": f"http://127.0.0.1:9/v1?api_key={PASSWORD}",
                               "eval__judge__model": "j"},
     "'eval.judge.base_url' carries credentials (http://127.0.0.1:9/v1?api_key=***)"),
])
def test_a_url_with_credentials_is_refused_without_printing_them(project, monkeypatch, args, edit, expected):
    output = fails(project, monkeypatch, args, expected, params_with(project, **edit))
    _nothing_leaked(project, output)


def test_the_judge_errors_name_its_address_without_the_password(endpoint, tmp_path, monkeypatch):  # noqa: F811
    # Validation refuses such a base_url; this is the second line of defence, for one built in code.
    monkeypatch.setenv("SENA_JUDGE_API_KEY", KEY)
    FakeJudge.status = 500
    url = endpoint.replace("http://", f"http://judge:{PASSWORD}@")
    judge = Judge(JudgeParams(base_url=url, model="j", retries=0), sleep=lambda s: None)
    with pytest.raises(SenaError) as error:
        judge.ask("hi")
    assert PASSWORD not in str(error.value) and "http://***@127.0.0.1:" in str(error.value)
    assert KEY not in str(error.value)


def test_logged_urls_are_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        redact_logs()
        logging.getLogger("httpx").warning("GET %s failed", f"https://u:{PASSWORD}@h/x?token={TOKEN}&page=2")
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue() == "GET https://***@h/x?token=***&page=2 failed\n"


@pytest.mark.parametrize("text, shown", [
    ("https://a:b@h.io/x", "https://***@h.io/x"),
    ("https:/a:b@h.io/x: model directory not found", "https:/***@h.io/x: model directory not found"),  # a Path()
    ("s3://KEY:SECRET@bucket", "s3://***@bucket"),
    ("https://h/x.png?X-Amz-Signature=abc&X-Amz-Date=1&w=2", "https://h/x.png?X-Amz-Signature=***&X-Amz-Date=***&w=2"),
    ("https://h/v1?sig=abc&password=p", "https://h/v1?sig=***&password=***"),
    ("line 3: 'a' must be text, got 'me@example.org'", "line 3: 'a' must be text, got 'me@example.org'"),
    ("data/iter1/pairs/pairs.jsonl: line 1", "data/iter1/pairs/pairs.jsonl: line 1"),
    ("llava?token=abc: not found", "llava?token=***: not found"),  # the colon after it is the message's
    ("(http://h/x?key=abc), then", "(http://h/x?key=***), then"),
])
def test_redact(text, shown):
    assert redact(text) == shown
