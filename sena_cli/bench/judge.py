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
- every read and write waits at most eval.judge.timeout_s, and one prompt, all its tries and
  the waits between them, at most eval.judge.deadline_s, however slowly the server trickles bytes
  (so with the defaults no prompt takes more than 120 s);
- a reply is counted as it streams in and cut at eval.judge.max_reply_bytes (a judge answering
  with 1 GiB is refused at 1 MiB, not held in memory and published);
- at most eval.judge.concurrency requests in flight;
- every reply is journaled as it arrives (keyed by a hash of the model and the prompt), so an
  interrupted run resumes with the replies it has paid for and asks only the rest.

Each judged benchmark's rubric, prompt, parsing and metrics live in its own module
(llava_bench.py, mm_vet.py, mmhal.py), with the rubric's version in its registry record.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit

from sena_cli.artifacts import Journal
from sena_cli.config import JudgeParams
from sena_cli.errors import SenaError, redact

RETRY_STATUS = {408, 409, 429}  # and every 5xx


class JudgeUnavailable(Exception):
    """No judge configured: the benchmark is skipped, with the reason."""


class _Retry(Exception):
    def __init__(self, why: str, wait: float | None = None):
        super().__init__(why)
        self.why, self.wait = why, wait


class Judge:
    def __init__(self, params: JudgeParams, journal: str | Path | None = None,
                 sleep: Callable[[float], None] = time.sleep, versions: dict[str, str] | None = None):
        if not params.base_url or not params.model:
            raise JudgeUnavailable("skipped: no judge; set eval.judge.base_url and eval.judge.model "
                                   f"(an OpenAI-compatible endpoint) and export {params.api_key_env}")
        if not os.environ.get(params.api_key_env):
            raise JudgeUnavailable(f"skipped: the judge key is not set; export {params.api_key_env}")
        self.params = params
        self.versions = versions or {}  # {judged benchmark: its prompt version}: journaled replies depend on them
        self.journal = Journal(journal, self.run_id()) if journal else None
        self._sleep = sleep
        self._lock = threading.Lock()
        self._client = _client(params)

    @property
    def model(self) -> str:
        return self.params.model

    def run_id(self) -> str:
        """What a journaled reply depends on besides its prompt."""
        return hashlib.sha256(f"{self.params.base_url}|{self.params.model}|{sorted(self.versions.items())}"
                              .encode()).hexdigest()[:16]

    # ------------------------------------------------------------ one request

    def ask(self, prompt: str) -> str:
        """The judge's reply to one prompt, retried with backoff on transient failures, all of it
        within eval.judge.deadline_s."""
        p = self.params
        end = time.monotonic() + p.deadline_s
        for attempt in range(p.retries + 1):
            try:
                return self._request(prompt, end)
            except _Retry as why:
                left = end - time.monotonic()
                if attempt == p.retries or left <= 0:
                    tries = f"still after {attempt} retries"
                    if left <= 0 and attempt < p.retries:
                        tries = f"eval.judge.deadline_s ({p.deadline_s:g} s) spent after {attempt + 1} tries"
                    raise SenaError(f"judge at {redact(p.base_url)}: {why.why}, {tries}; "
                                    "the replies so far are kept, rerun to resume") from None
                backoff = min(p.max_backoff_s, p.backoff_s * 2 ** attempt)
                wait = min(p.max_backoff_s, why.wait) if why.wait is not None else backoff
                self._sleep(min(wait, left))
        raise AssertionError("unreachable")

    def _request(self, prompt: str, end: float) -> str:
        import openai

        p = self.params
        _DEADLINE.at, _DEADLINE.read, _DEADLINE.cap = end, 0, p.max_reply_bytes
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
            if _DEADLINE.read > p.max_reply_bytes:  # not retried: the same judge would send it again
                raise SenaError(f"judge at {redact(p.base_url)}: a reply longer than eval.judge.max_reply_bytes "
                                f"({p.max_reply_bytes} bytes), cut there; check the endpoint and model, or raise "
                                "eval.judge.max_reply_bytes") from None
            raise _Retry("connection failed") from None
        except openai.APIStatusError as exc:  # the message names the status, never the key
            status = exc.status_code
            if 300 <= status < 400:
                where = urlsplit(exc.response.headers.get("location", ""))
                raise SenaError(f"judge at {redact(p.base_url)} answered HTTP {status}, a redirect to "
                                f"{where.scheme + '://' + where.netloc if where.netloc else 'another path'}; "
                                "sena does not follow redirects with the key: set eval.judge.base_url to the "
                                "final address") from None
            if status in RETRY_STATUS or status >= 500:
                raise _Retry(f"HTTP {status}", _retry_after(exc.response.headers.get("retry-after"))) from None
            raise SenaError(f"judge at {redact(p.base_url)} answered HTTP {status}; check the endpoint, "
                            f"model and {p.api_key_env}") from None
        except (openai.APIResponseValidationError, AttributeError, IndexError, TypeError, ValueError):
            raise SenaError(f"judge at {redact(p.base_url)} did not answer like a chat completions API") from None
        finally:
            _DEADLINE.at = _DEADLINE.cap = None

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
            data = self._inner.read(max_bytes, _left(timeout))
            cap = getattr(_DEADLINE, "cap", None)
            if cap is not None:
                _DEADLINE.read += len(data)
                if _DEADLINE.read > cap:  # cut here: a 1 GiB reply is never held whole
                    raise httpcore2.ReadError("the reply is longer than eval.judge.max_reply_bytes")
            return data

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
