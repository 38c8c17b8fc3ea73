"""Judged benchmarks: LLaVA-Bench (in-the-wild), MM-Vet and MMHal-Bench, scored by an LLM.

The judge is any OpenAI-compatible chat endpoint (eval.judge.base_url + /chat/completions);
its key comes from the environment variable eval.judge.api_key_env and goes only into the
request's Authorization header: never into params, logs, answers or metrics. The judge's
model name and the prompt version below are stored with the scores, because judge drift is
the known reproducibility problem of these benchmarks.

The prompts are sena's own wording of each benchmark's published rubric; change the text and
the version together.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from sena_cli.config import JudgeParams
from sena_cli.errors import SenaError

PROMPT_VERSIONS = {"llava_bench": "sena-llava-bench-v1", "mm_vet": "sena-mm-vet-v1", "mmhal": "sena-mmhal-v1"}

LLAVA_BENCH_RULE = (
    "We would like your feedback on two AI assistants' answers to the user question above, given a "
    "description of the image. Rate the helpfulness, relevance, accuracy and level of detail of each. "
    "Each assistant gets an overall score from 1 to 10, higher is better. On the first line write only "
    "the two scores, for Assistant 1 and Assistant 2, separated by a space. Then explain your evaluation, "
    "avoiding bias from the order of the answers."
)
MM_VET_RULE = (
    "Compare the ground truth and the prediction for the question, and give the prediction a correctness "
    "score between 0.0 and 1.0: 1.0 when it matches the ground truth (for answers with several parts, the "
    "share of parts that are right; 'AND' in the ground truth means all parts are needed, 'OR' means any "
    "one is enough). Reply with the score only."
)
MMHAL_RULE = (
    "Rate the response to the question about an image, given the image's contents and a standard human "
    "answer, for informativeness and hallucination (claims about the image that are not supported by its "
    "contents). 6: informative, no hallucination; 5: informative, no hallucination, some missing; 4: some "
    "information, no hallucination; 3: little information, no hallucination; 2: informative, with "
    "hallucination; 1: little information, with hallucination; 0: not informative, with hallucination. "
    "End your reply with a line 'Rating: N'."
)


class JudgeUnavailable(Exception):
    """No judge configured: the benchmark is skipped, with the reason."""


class Judge:
    def __init__(self, params: JudgeParams, post: Callable[[urllib.request.Request, float], bytes] | None = None):
        if not params.base_url or not params.model:
            raise JudgeUnavailable("skipped: no judge; set eval.judge.base_url and eval.judge.model "
                                   f"(an OpenAI-compatible endpoint) and export {params.api_key_env}")
        if not os.environ.get(params.api_key_env):
            raise JudgeUnavailable(f"skipped: the judge key is not set; export {params.api_key_env}")
        self.params = params
        self._post = post or _urlopen

    @property
    def model(self) -> str:
        return self.params.model

    def ask(self, prompt: str) -> str:
        body = json.dumps({"model": self.params.model, "temperature": 0,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        request = urllib.request.Request(
            self.params.base_url.rstrip("/") + "/chat/completions", data=body, method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {os.environ[self.params.api_key_env]}"})
        try:
            reply = json.loads(self._post(request, self.params.timeout_s))
            return reply["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as exc:  # the message names the status, never the key
            raise SenaError(f"judge at {self.params.base_url} answered HTTP {exc.code}; check the endpoint, "
                            f"model and {self.params.api_key_env}") from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise SenaError(f"judge at {self.params.base_url} unreachable ({getattr(exc, 'reason', exc)})") from None
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise SenaError(f"judge at {self.params.base_url} did not answer like a chat completions API") from None


def _urlopen(request: urllib.request.Request, timeout: float) -> bytes:
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the user's endpoint
        return response.read()


# ---------------------------------------------------------------- prompts and parsing

def llava_bench_prompt(caption: str, question: str, reference: str, answer: str) -> str:
    return (f"[Context]\n{caption}\n\n[Question]\n{question}\n\n[Assistant 1]\n{reference}\n\n"
            f"[End of Assistant 1]\n\n[Assistant 2]\n{answer}\n\n[End of Assistant 2]\n\n[System]\n{LLAVA_BENCH_RULE}")


def parse_pair_scores(reply: str) -> tuple[float, float] | None:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", reply.strip().splitlines()[0] if reply.strip() else "")
    return (float(numbers[0]), float(numbers[1])) if len(numbers) >= 2 else None


def mm_vet_prompt(question: str, truth: str, prediction: str) -> str:
    return f"{MM_VET_RULE}\n\nQuestion: {question}\nGround truth: {truth}\nPrediction: {prediction}\nScore:"


def parse_unit_score(reply: str) -> float | None:
    match = re.search(r"\d+(?:\.\d+)?", reply)
    if not match:
        return None
    value = float(match.group())
    return value if 0.0 <= value <= 1.0 else None


def mmhal_prompt(contents: Sequence[str], question: str, truth: str, answer: str) -> str:
    return (f"{MMHAL_RULE}\n\nImage contents: {', '.join(contents)}\nQuestion: {question}\n"
            f"Standard human-generated answer: {truth}\nResponse to rate: {answer}")


def parse_rating(reply: str) -> int | None:
    match = re.findall(r"rating:\s*([0-6])", reply.lower())
    return int(match[-1]) if match else None


# ---------------------------------------------------------------- metrics

def llava_bench_metrics(pairs: Sequence[tuple[float, float] | None], categories: Sequence[str]) -> dict:
    """relative_score = sum of the model's scores / sum of the reference's, overall and per category;
    unparseable judge replies are counted and left out."""
    def relative(idx):
        ref = sum(pairs[i][0] for i in idx)
        return sum(pairs[i][1] for i in idx) / ref if ref else 0.0

    scored = [i for i, p in enumerate(pairs) if p is not None]
    out = {"relative_score": relative(scored), "unparsed": len(pairs) - len(scored)}
    for cat in sorted(set(categories)):
        out[f"relative_score_{cat}"] = relative([i for i in scored if categories[i] == cat])
    return out


def mm_vet_metrics(scores: Sequence[float | None], capabilities: Sequence[Sequence[str]]) -> dict:
    scored = [i for i, s in enumerate(scores) if s is not None]
    out = {"total": sum(scores[i] for i in scored) / len(scored) if scored else 0.0,
           "unparsed": len(scores) - len(scored)}
    for cap in sorted({c for caps in capabilities for c in caps}):
        idx = [i for i in scored if cap in capabilities[i]]
        out[cap] = sum(scores[i] for i in idx) / len(idx) if idx else 0.0
    return out


def mmhal_metrics(ratings: Sequence[int | None]) -> dict:
    """average rating (0-6) and hallucination rate (share rated below 3), as MMHal-Bench reports."""
    scored = [r for r in ratings if r is not None]
    return {"average_score": sum(scored) / len(scored) if scored else 0.0,
            "hallucination_rate": sum(r < 3 for r in scored) / len(scored) if scored else 0.0,
            "unparsed": len(ratings) - len(scored)}
