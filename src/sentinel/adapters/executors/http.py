"""The ``http`` step (and ``throttle`` through an endpoint) sent with httpx, and
``mask_credentials``, which every error and log line that may quote a URL goes through.

What must not live here: the client's lifetime and the once-per-key memory
(``executor``), deciding whether a step may run (``sentinel.remediation``), rendering
the call's templates (``playbooks.model``), and git.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from sentinel.errors import RemediationError
from sentinel.ports import StepResult

if TYPE_CHECKING:
    from sentinel.playbooks.model import HttpCall

__all__ = ["mask_credentials"]

log = structlog.get_logger(__name__)

MASK = "********"
_USERINFO_RE = re.compile(r"(?<=://)([^/?#@\s]*)@")
_SECRET_PARAM_RE = re.compile(
    r"([?&][^=&#]*(?:token|key|secret|password|passwd|auth|sig|signature)[^=&#]*=)[^&#\s]*",
    re.IGNORECASE,
)


def mask_credentials(text: str) -> str:
    """``text`` with the credentials of the URLs in it hidden: the password of
    ``user:pass@`` (a lone ``token@`` whole) and secret-looking query parameters."""

    def userinfo(m: re.Match[str]) -> str:
        user, sep, _ = m.group(1).partition(":")
        return f"{user}:{MASK}@" if sep else f"{MASK}@"

    return _SECRET_PARAM_RE.sub(rf"\g<1>{MASK}", _USERINFO_RE.sub(userinfo, text))


def _send(
    client: httpx.Client, call: HttpCall, *, key: str, default_body: Mapping[str, Any] | None
) -> StepResult:
    method = call.method.value
    url = mask_credentials(call.url)
    headers = {k: v for k, v in call.headers.items() if k.lower() != "idempotency-key"}
    headers["Idempotency-Key"] = key
    body = call.json_body if call.json_body is not None else default_body
    try:
        response = client.request(
            method,
            call.url,
            headers=headers,
            json=dict(body) if body is not None else None,
            timeout=call.timeout_seconds,
        )
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise RemediationError(
            f"{method} {url} failed: {type(e).__name__}: {mask_credentials(str(e))}"
        ) from e
    status = response.status_code
    if status not in call.expect_status:
        raise RemediationError(
            f"{method} {url} answered {status} {response.reason_phrase}, expected one of "
            f"{list(call.expect_status)}"
        )
    log.info("executor.http.sent", method=method, url=url, status=status)
    return StepResult(detail=f"{method} {url} answered {status}", status=status)
