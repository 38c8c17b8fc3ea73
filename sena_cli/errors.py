"""The one exception type the CLI turns into a single red line, and the redaction of credentials
from any text sena prints or logs (both used by every layer, so they import nothing of sena)."""

from __future__ import annotations

import logging
import re


class SenaError(Exception):
    """A problem the user can fix: the message names the file or parameter and the fix."""


HIDDEN = "***"
# scheme://user:password@host (also scheme:/user@host, as a Path() of a URL collapses the slashes)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,3})(?P<userinfo>[^/\s@'\"`?#]+)@")
# ?token=…&X-Amz-Signature=… : query or fragment parameters whose name says they hold a secret
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&#;](?:[A-Za-z0-9_.-]*(?:token|key|secret|passw(?:or)?d|pwd|signature|credential|auth|sig)"
    r"[A-Za-z0-9_.-]*|x-amz-[A-Za-z0-9_.-]+)=)(?P<value>[^&#;)\s'\"`]*?)(?=[:,.]?(?:[&#;)\s'\"`]|$))",
    re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every URL's userinfo and secret-bearing query values replaced by ***.

    A pure function: cli's error handler and its log filter apply it to every line sena prints,
    and the messages built from a user's URL (model.base, sample.pool, eval.judge.base_url) use it."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{HIDDEN}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{HIDDEN}", text)


def has_credentials(url: str) -> bool:
    """Whether a URL carries a userinfo part or a secret-bearing query parameter."""
    return redact(url) != url


class RedactingFilter(logging.Filter):
    """A log filter that redacts credentials from each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logs(*loggers: str) -> None:
    """Put the filter on the handlers that print sena's and its libraries' log records: the root
    logger's, the named loggers' own (transformers has one), and Python's last-resort handler."""
    handlers = [*logging.getLogger().handlers, logging.lastResort]
    for name in loggers:
        handlers += logging.getLogger(name).handlers
    for handler in handlers:
        if handler is not None and not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
