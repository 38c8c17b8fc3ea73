"""Judged benchmarks: LLaVA-Bench (in-the-wild), MM-Vet and MMHal-Bench, scored by an LLM.

The judge is any OpenAI-compatible chat endpoint (eval.judge.base_url), called with the
`openai` client. Its key comes from the environment variable eval.judge.api_key_env and goes
only into the request's Authorization header: never into params, logs, answers or metrics.
The judge's model name and the prompt version are stored with the scores, because judge drift
is the known reproducibility problem of these benchmarks.

Calls are paid, so none is wasted:
- retries with exponential backoff (eval.judge.retries, backoff_s, max_backoff_s; a server's
  Retry-After is honoured) after HTTP 429, 408/409, 5xx, a timeout or a dropped connection;
  any other answer stops the run in one line naming the status, never the key;
- a redirect is never followed (the key would go to the other host): it is an error naming
  where it points, so the user can set base_url to the final address;
- every read and write waits at most eval.judge.timeout_s, and a whole request at most
  eval.judge.deadline_s, however slowly the server trickles bytes;
- at most eval.judge.concurrency requests in flight;
- every reply is journaled as it arrives (keyed by a hash of the model and the prompt), so an
  interrupted run resumes with the replies it has paid for and asks only the rest.

The prompts are sena's own wording of each benchmark's published rubric; change the text and
the version together.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit

from sena_cli.artifacts import Journal
from sena_cli.config import JudgeParams
from sena_cli.errors import SenaError

PROMPT_VERSIONS = {"llava_bench": "sena-llava-bench-v1", "mm_vet": "sena-mm-vet-v1", "mmhal": "sena-mmhal-v1"}
RETRY_STATUS = {408, 409, 429}  # and every 5xx

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


class _Retry(Exception):
    def __init__(self, why: str, wait: float | None = None):
        super().__init__(why)
        self.why, self.wait = why, wait


class Judge:
    def __init__(self, params: JudgeParams, journal: str | Path | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not params.base_url or not params.model:
            raise JudgeUnavailable("skipped: no judge; set eval.judge.base_url and eval.judge.model "
                                   f"(an OpenAI-compatible endpoint) and export {params.api_key_env}")
        if not os.environ.get(params.api_key_env):
            raise JudgeUnavailable(f"skipped: the judge key is not set; export {params.api_key_env}")
        self.params = params
        self.journal = Journal(journal, self.run_id()) if journal else None
        self._sleep = sleep
        self._lock = threading.Lock()
        self._client = _client(params)

    @property
    def model(self) -> str:
        return self.params.model

    def run_id(self) -> str:
        """What a journaled reply depends on besides its prompt."""
        return hashlib.sha256(f"{self.params.base_url}|{self.params.model}|{sorted(PROMPT_VERSIONS.items())}"
                              .encode()).hexdigest()[:16]

    # ------------------------------------------------------------ one request

    def ask(self, prompt: str) -> str:
        """The judge's reply to one prompt, retried with backoff on transient failures."""
        p = self.params
        for attempt in range(p.retries + 1):
            try:
                return self._request(prompt)
            except _Retry as why:
                if attempt == p.retries:
                    raise SenaError(f"judge at {p.base_url}: {why.why}, still after {p.retries} retries; "
                                    "the replies so far are kept, rerun to resume") from None
                backoff = min(p.max_backoff_s, p.backoff_s * 2 ** attempt)
                self._sleep(min(p.max_backoff_s, why.wait) if why.wait is not None else backoff)
        raise AssertionError("unreachable")

    def _request(self, prompt: str) -> str:
        import openai

        p = self.params
        _DEADLINE.at = time.monotonic() + p.deadline_s
        try:
            reply = self._client.chat.completions.create(
                model=p.model, temperature=0, messages=[{"role": "user", "content": prompt}])
            content = reply.choices[0].message.content
            if not isinstance(content, str):
                raise TypeError
            return content
        except openai.APITimeoutError:
            raise _Retry(f"no complete answer within {p.timeout_s:g} s per read / {p.deadline_s:g} s in all") from None
        except openai.APIConnectionError:
            raise _Retry("connection failed") from None
        except openai.APIStatusError as exc:  # the message names the status, never the key
            status = exc.status_code
            if 300 <= status < 400:
                where = urlsplit(exc.response.headers.get("location", ""))
                raise SenaError(f"judge at {p.base_url} answered HTTP {status}, a redirect to "
                                f"{where.scheme + '://' + where.netloc if where.netloc else 'another path'}; "
                                "sena does not follow redirects with the key: set eval.judge.base_url to the "
                                "final address") from None
            if status in RETRY_STATUS or status >= 500:
                raise _Retry(f"HTTP {status}", _retry_after(exc.response.headers.get("retry-after"))) from None
            raise SenaError(f"judge at {p.base_url} answered HTTP {status}; check the endpoint, "
                            f"model and {p.api_key_env}") from None
        except (openai.APIResponseValidationError, AttributeError, IndexError, TypeError, ValueError):
            raise SenaError(f"judge at {p.base_url} did not answer like a chat completions API") from None
        finally:
            _DEADLINE.at = None

    # ------------------------------------------------------------ many requests

    def ask_all(self, prompts: Sequence[str]) -> list[str]:
        """Replies to every prompt, at most eval.judge.concurrency at a time; replies already in
        the journal are not asked again, and each new one is journaled as it arrives."""
        keys = [hashlib.sha256(f"{self.model}\n{prompt}".encode()).hexdigest()[:24] for prompt in prompts]
        done = {k: v for k, v in (self.journal.done() if self.journal else {}).items() if k in set(keys)}
        todo = {k: prompt for k, prompt in zip(keys, prompts) if k not in done}

        def work(key: str, prompt: str) -> str:
            reply = self.ask(prompt)
            if self.journal:
                with self._lock:
                    self.journal.add(key, reply)
            return reply

        pool = ThreadPoolExecutor(max_workers=self.params.concurrency, thread_name_prefix="judge")
        try:
            futures = {pool.submit(work, k, prompt): k for k, prompt in todo.items()}
            for future in as_completed(futures):
                done[futures[future]] = future.result()
        finally:  # on the first error: nothing new starts; calls in flight finish and are journaled
            pool.shutdown(wait=True, cancel_futures=True)
        return [done[k] for k in keys]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------- the HTTP client

_DEADLINE = threading.local()  # when the current thread's request must be over (time.monotonic)


def _left(timeout: float | None) -> float | None:
    """The socket timeout for the next step of a request: its own limit, cut to the deadline."""
    import httpcore2

    at = getattr(_DEADLINE, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore2.ReadTimeout("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


def _client(params: JudgeParams):
    """An openai client that never follows redirects and enforces a deadline per request."""
    import httpcore2
    import httpx2
    import openai

    class DeadlineStream(httpcore2.NetworkStream):
        def __init__(self, inner):
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, _left(timeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _left(timeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

        def get_extra_info(self, info):
            return self._inner.get_extra_info(info)

    class DeadlineBackend(httpcore2.SyncBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            return DeadlineStream(super().connect_tcp(host, port, _left(timeout), local_address, socket_options))

    transport = httpx2.HTTPTransport()
    # httpx has no total deadline: every socket step of the pool goes through the backend above.
    transport._pool._network_backend = DeadlineBackend()
    http = httpx2.Client(transport=transport, follow_redirects=False, timeout=httpx2.Timeout(params.timeout_s))
    return openai.OpenAI(base_url=params.base_url, api_key=os.environ[params.api_key_env], max_retries=0,
                         timeout=httpx2.Timeout(params.timeout_s), http_client=http)


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
