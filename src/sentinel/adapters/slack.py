"""Slack: incident tickets over the Web API, and the Approve/Reject clicks coming back.

What lives here:

* ``SlackSink``: ``ports.TicketSink`` over slack-sdk's ``AsyncWebClient`` for one
  channel. Tickets carry ``{"event_type": "sentinel_incident", "event_payload":
  {"incident_id": ...}}`` as message metadata, which is how ``find`` recognises them
  again after a crash. Every failure becomes a ``NotifyError`` naming the method and the
  channel (never a token): 429 sets ``retry_after`` from Retry-After; 5xx, Slack's
  transient error codes and transport errors are retryable; any other refusal
  (``invalid_auth``, ``channel_not_found``, ``invalid_blocks``, ...) is not. slack-sdk's
  own retry handlers are turned off: the outbox owns retries and their schedule.
* ``Click``, ``parse_click`` and the action ids ``APPROVE_ACTION_ID`` /
  ``REJECT_ACTION_ID``: the contract with the ticket renderer. A ``block_actions``
  payload whose action id is one of ours and whose value is the action key becomes a
  ``Click``; any other payload is none of our business (None).
* ``SocketModeListener``: receives interactions over Socket Mode. Each envelope is
  acknowledged before anything else happens (Slack wants the ack within 3 s), then the
  click is handed to ``on_click`` in its own task.
* ``verify_request`` and ``click_from_form``: the same clicks in HTTP mode (Slack POSTs
  ``payload=<JSON>`` forms, signed with the app's signing secret).

What must not live here: what a ticket says (its text and blocks are rendered
elsewhere), who may approve what (authorization belongs to the approval stage; this
module only reports who clicked), the outbox and its retry schedule, and reading
configuration (``SlackSettings`` and the tokens are passed in).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final
from urllib.parse import parse_qs

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import Clock as SignatureClock
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from sentinel.errors import ConfigError, NotifyError, SentinelError
from sentinel.ports import Block
from sentinel.settings import Settings, SlackSettings
from sentinel.tickets import (
    APPROVE_ACTION_ID,
    CONFIRM_ACTION_ID,
    CONFIRM_BLOCK_PREFIX,
    REJECT_ACTION_ID,
)

__all__ = [
    "APPROVE_ACTION_ID",
    "INCIDENT_EVENT_TYPE",
    "REJECT_ACTION_ID",
    "SIGNATURE_MAX_AGE_SECONDS",
    "Click",
    "Decision",
    "SlackSignatureError",
    "SlackSink",
    "SocketModeListener",
    "click_from_form",
    "parse_click",
    "slack_sink_from_settings",
    "slack_web_client",
    "verify_request",
]

log = structlog.get_logger(__name__)

# Message metadata event type of a ticket (its payload: {"incident_id": ...}).
INCIDENT_EVENT_TYPE: Final = "sentinel_incident"
# Slack's replay window for signed requests.
SIGNATURE_MAX_AGE_SECONDS: Final = 5 * 60

# How far back ``find`` looks: the newest FIND_MAX_PAGES * FIND_PAGE_SIZE messages. A
# ticket whose post outcome is unknown was posted moments ago, so it is near the top.
FIND_PAGE_SIZE: Final = 200
FIND_MAX_PAGES: Final = 5

# Error codes Slack answers with (HTTP 200, ok=false) for trouble on its side: worth
# another try. Every other ok=false answer is a refusal of the request itself (bad token,
# unknown channel, malformed blocks, missing scope) that the same request meets again.
_TRANSIENT_ERRORS: Final = frozenset(
    {
        "ratelimited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_added_to_org",
    }
)
# Transport failures: the request may not have reached Slack, or its answer was lost.
_TRANSPORT_ERRORS: Final = (aiohttp.ClientError, TimeoutError, SlackClientError)


# --- the Web API ------------------------------------------------------------------------


def slack_web_client(token: str, base_url: str, *, timeout_seconds: int = 10) -> AsyncWebClient:
    """An ``AsyncWebClient`` as sentinel uses it: slack-sdk's retry handlers off (the
    outbox retries on its own schedule, and a client sleeping through Retry-After inside
    a call would hold up everything behind it), one HTTP session per call (a session is
    bound to the event loop it was made on, and the CLI runs more than one)."""
    return AsyncWebClient(
        token=token, base_url=base_url, timeout=timeout_seconds, retry_handlers=[]
    )


def _retry_after(value: str | None) -> float | None:
    """Retry-After as delta-seconds (Slack never sends an HTTP date)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _notify_error(
    error: Exception, method: str, channel: str | None, secrets: Sequence[str]
) -> NotifyError:
    """The ``NotifyError`` for a failed Web API call (see the module docstring)."""
    where = f"Slack {method}" + (f" in channel {channel!r}" if channel else "")
    if isinstance(error, SlackApiError):
        response = error.response
        # A SlackResponse has status_code; a body that was not JSON leaves the raw aiohttp
        # response here, which has status.
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        data = getattr(response, "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        headers = getattr(response, "headers", None) or {}
        detail = f"HTTP {status}" + (f", error {code!r}" if code else "")
        if status == 429 or code == "ratelimited":
            after = _retry_after(headers.get("Retry-After"))
            wait = f" (Retry-After {after:g} s)" if after is not None else ""
            return NotifyError(f"{where}: rate limited, {detail}{wait}", retry_after=after)
        retryable = (
            isinstance(status, int) and (status >= 500 or status == 408)
        ) or code in _TRANSIENT_ERRORS
        return NotifyError(f"{where} failed: {detail}", retryable=retryable)
    message = f"{where} failed: {type(error).__name__}: {error}"
    for secret in secrets:
        if secret:
            message = message.replace(secret, "<redacted>")
    return NotifyError(message, retryable=True)


class SlackSink:
    """``ports.TicketSink`` in one Slack channel (``settings.channel``).

    ``ref``s are message timestamps (``ts``) of that channel. Raises ``NotifyError``
    (see the module docstring for what is retryable). Each call opens its own HTTP
    session, so a sink holds no connection between calls; ``close`` is there for the
    composition root's lifecycle and releases nothing today.
    """

    def __init__(self, settings: SlackSettings, token: str, *, timeout_seconds: int = 10) -> None:
        if not settings.channel:
            raise ConfigError("slack.channel is empty: there is no channel to post tickets to")
        if not token.strip():
            raise ConfigError("the Slack bot token (SENTINEL_SLACK_BOT_TOKEN) is empty")
        self.channel = settings.channel
        self._token = token
        self._client = slack_web_client(token, settings.base_url, timeout_seconds=timeout_seconds)

    @property
    def web_client(self) -> AsyncWebClient:
        """The Web API client (retries off), for a ``SocketModeListener`` to share."""
        return self._client

    async def _call(self, method: str, call: Awaitable[AsyncSlackResponse]) -> AsyncSlackResponse:
        try:
            return await call
        except (SlackApiError, *_TRANSPORT_ERRORS) as e:
            raise _notify_error(e, method, self.channel, [self._token]) from e

    def _ts(self, method: str, response: AsyncSlackResponse, key: str = "ts") -> str:
        ts = response.get(key)
        if not isinstance(ts, str) or not ts:
            raise NotifyError(
                f"Slack {method} in channel {self.channel!r} answered ok without a {key!r}: {ts!r}",
                retryable=False,
            )
        return ts

    async def post(self, incident_id: str, text: str, blocks: Sequence[Block]) -> str:
        method = "chat.postMessage"
        response = await self._call(
            method,
            self._client.chat_postMessage(
                channel=self.channel,
                text=text,
                blocks=list(blocks),
                metadata={
                    "event_type": INCIDENT_EVENT_TYPE,
                    "event_payload": {"incident_id": incident_id},
                },
            ),
        )
        return self._ts(method, response)

    async def find(self, incident_id: str) -> str | None:
        method = "conversations.history"
        cursor: str | None = None
        for _ in range(FIND_MAX_PAGES):
            response = await self._call(
                method,
                self._client.conversations_history(
                    channel=self.channel,
                    include_all_metadata=True,
                    limit=FIND_PAGE_SIZE,
                    cursor=cursor,
                ),
            )
            messages = response.get("messages") or []
            for message in messages:
                if _incident_of(message) == incident_id:
                    ts = message.get("ts")
                    if isinstance(ts, str) and ts:
                        return ts
            meta = response.get("response_metadata") or {}
            cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if not cursor:
                return None
        return None

    async def update(self, ref: str, text: str, blocks: Sequence[Block]) -> None:
        await self._call(
            "chat.update",
            self._client.chat_update(channel=self.channel, ts=ref, text=text, blocks=list(blocks)),
        )

    async def reply(self, ref: str, text: str) -> None:
        await self._call(
            "chat.postMessage",
            self._client.chat_postMessage(channel=self.channel, thread_ts=ref, text=text),
        )

    async def upload(self, ref: str, filename: str, content: bytes, title: str) -> None:
        await self._call(
            "files.upload_v2",
            self._client.files_upload_v2(
                channel=self.channel,
                thread_ts=ref,
                filename=filename,
                content=content,
                title=title,
            ),
        )

    async def tell_user(self, user: str, text: str) -> None:
        """An ephemeral message to ``user`` in the channel. ``user`` is a Slack user id,
        bare (``U0123``) or as approvals name people (``slack:U0123``)."""
        user_id = user.removeprefix("slack:")
        await self._call(
            "chat.postEphemeral",
            self._client.chat_postEphemeral(channel=self.channel, user=user_id, text=text),
        )

    async def group_members(self, group_id: str) -> frozenset[str]:
        """The user ids of a Slack user group (``S...``)."""
        method = "usergroups.users.list"
        try:
            response = await self._client.usergroups_users_list(usergroup=group_id)
        except (SlackApiError, *_TRANSPORT_ERRORS) as e:
            error = _notify_error(e, method, None, [self._token])
            raise NotifyError(
                f"{error} (user group {group_id!r})",
                retry_after=error.retry_after,
                retryable=error.retryable,
            ) from e
        users = response.get("users")
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise NotifyError(
                f"Slack {method} for user group {group_id!r} answered without a list of "
                f"user ids: {users!r}",
                retryable=False,
            )
        return frozenset(users)

    async def close(self) -> None:
        """Nothing is held between calls (see the class docstring)."""


def _incident_of(message: Any) -> str | None:
    """The incident id in a history message's metadata, if it is a sentinel ticket."""
    if not isinstance(message, Mapping):
        return None
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != INCIDENT_EVENT_TYPE:
        return None
    payload = metadata.get("event_payload")
    incident = payload.get("incident_id") if isinstance(payload, Mapping) else None
    return incident if isinstance(incident, str) else None


def slack_sink_from_settings(settings: Settings) -> SlackSink | None:
    """The sink for ``[slack]``, or None while ``slack.channel`` is empty (Slack off)."""
    if not settings.slack.channel:
        return None
    token = settings.secrets.slack_bot_token
    if token is None:
        raise ConfigError(
            f"slack.channel = {settings.slack.channel!r} needs SENTINEL_SLACK_BOT_TOKEN"
        )
    return SlackSink(settings.slack, token.get_secret_value())


# --- interactions -----------------------------------------------------------------------


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CONFIRM = "confirm"  # a root cause chosen in the ticket's select menu


_DECISIONS: Final = {
    APPROVE_ACTION_ID: Decision.APPROVE,
    REJECT_ACTION_ID: Decision.REJECT,
    CONFIRM_ACTION_ID: Decision.CONFIRM,
}


class Click(BaseModel):
    """Someone clicked Approve or Reject on a ticket, or chose its root cause in the
    select menu. Who they are is reported, not checked: authorization is the approval
    stage's business."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The button's value: the action's key; for CONFIRM, the incident (from the block id).
    action_key: str = Field(min_length=1)
    decision: Decision
    user_id: str = Field(min_length=1)  # Slack user id (U...)
    user_name: str
    channel: str | None
    message_ts: str | None  # the ticket's ts
    trigger: str  # the action_ts: unique per click, for deduplicating redeliveries
    component: str | None = None  # CONFIRM: the root cause chosen


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_click(payload: Mapping[str, Any]) -> Click | None:
    """The sentinel click in an interaction payload, or None for any other payload (not
    ``block_actions``, another app's button, a malformed payload)."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list):
        return None
    action = next(
        (
            a
            for a in actions
            if isinstance(a, Mapping)
            and isinstance(a.get("action_id"), str)
            and a["action_id"] in _DECISIONS
        ),
        None,
    )
    if action is None:
        return None
    component: str | None = None
    if action["action_id"] == CONFIRM_ACTION_ID:
        option = action.get("selected_option")
        component = _str(option.get("value")) if isinstance(option, Mapping) else None
        block = _str(action.get("block_id")) or ""
        key = (
            block.removeprefix(CONFIRM_BLOCK_PREFIX)
            if block.startswith(CONFIRM_BLOCK_PREFIX)
            else None
        )
        if component is None:
            key = None
    else:
        key = _str(action.get("value"))
    user = payload.get("user")
    user_id = _str(user.get("id")) if isinstance(user, Mapping) else None
    if key is None or user_id is None or not isinstance(user, Mapping):
        log.warning(
            "slack_click_malformed",
            action_id=action.get("action_id"),
            value=action.get("value"),
            user=user,
        )
        return None
    channel = payload.get("channel")
    container = payload.get("container")
    message = payload.get("message")
    message_ts = (_str(message.get("ts")) if isinstance(message, Mapping) else None) or (
        _str(container.get("message_ts")) if isinstance(container, Mapping) else None
    )
    return Click(
        action_key=key,
        decision=_DECISIONS[action["action_id"]],
        user_id=user_id,
        user_name=_str(user.get("username")) or _str(user.get("name")) or "",
        channel=_str(channel.get("id")) if isinstance(channel, Mapping) else None,
        message_ts=message_ts,
        trigger=_str(action.get("action_ts")) or "",
        component=component,
    )


OnClick = Callable[[Click], Awaitable[None]]


class SocketModeListener:
    """Interactions over Socket Mode (an outbound websocket: no public URL needed).

    ``start`` opens the connection (``apps.connections.open`` with the app token through
    ``web_client``, then the websocket) and returns once Slack said hello; slack-sdk
    reconnects on its own after that. Every envelope is acknowledged first, so the ack
    never waits for a handler; a sentinel click is then handed to ``on_click`` in a task
    of its own. A ``SentinelError`` from ``on_click`` is logged and dropped (one bad click
    must not stop the listener); anything else is logged as a bug.
    """

    def __init__(
        self,
        app_token: str,
        web_client: AsyncWebClient,
        on_click: OnClick,
        *,
        connect_timeout_seconds: float = 10.0,
    ) -> None:
        if not app_token.strip():
            raise ConfigError("the Slack app token (SENTINEL_SLACK_APP_TOKEN) is empty")
        self._app_token = app_token
        self._web_client = web_client
        self._on_click = on_click
        self._connect_timeout = connect_timeout_seconds
        self._client: SocketModeClient | None = None
        self._hello = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect. Raises ``NotifyError`` when the connection cannot be opened (a bad
        app token: not retryable) or Slack does not say hello within the timeout."""
        if self._client is not None:
            return
        method = "apps.connections.open"
        try:
            opened = await self._web_client.apps_connections_open(app_token=self._app_token)
        except (SlackApiError, *_TRANSPORT_ERRORS) as e:
            raise _notify_error(e, method, None, [self._app_token]) from e
        url = opened.get("url")
        if not isinstance(url, str) or not url:
            raise NotifyError(f"Slack {method} answered ok without a url", retryable=False)
        # Made here, not in __init__: the client starts tasks on the running loop.
        client = SocketModeClient(app_token=self._app_token, web_client=self._web_client)
        client.message_listeners.append(self._on_message)
        client.socket_mode_request_listeners.append(self._on_request)
        client.wss_uri = url
        self._client = client
        try:
            async with asyncio.timeout(self._connect_timeout):
                await client.connect()  # type: ignore[no-untyped-call]
                await self._hello.wait()
        except TimeoutError as e:
            await self.close()
            raise NotifyError(
                f"Slack Socket Mode did not connect within {self._connect_timeout:g} s"
            ) from e
        log.info("slack_socket_mode_connected")

    async def close(self) -> None:
        """Disconnect, and cancel the click handlers still running."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]
            # slack-sdk cancels its tasks without waiting for them.
            tasks = [
                t
                for t in (
                    client.message_processor,
                    client.message_receiver,
                    client.current_session_monitor,
                )
                if t is not None
            ]
            await asyncio.gather(*tasks, return_exceptions=True)
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        self._hello.clear()

    async def _on_message(
        self, client: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        if message.get("type") == "hello":
            self._hello.set()

    async def _on_request(
        self, client: AsyncBaseSocketModeClient, request: SocketModeRequest
    ) -> None:
        # Ack first, whatever the envelope: Slack redelivers what is not acked in 3 s.
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        if request.type != "interactive":
            return
        click = parse_click(request.payload)
        if click is None:
            return
        task = asyncio.create_task(self._handle(click), name=f"slack-click-{click.trigger}")
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)

    async def _handle(self, click: Click) -> None:
        try:
            await self._on_click(click)
        except SentinelError as e:
            log.warning(
                "slack_click_failed",
                action_key=click.action_key,
                decision=click.decision.value,
                user_id=click.user_id,
                error=str(e),
                error_type=type(e).__name__,
            )

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            # Not a SentinelError: a bug. Logged here so it is not lost with the task.
            log.error("slack_click_handler_crashed", task=task.get_name(), exc_info=error)


# --- HTTP mode --------------------------------------------------------------------------


class SlackSignatureError(NotifyError):
    """A request claiming to come from Slack whose signature is missing, wrong or too old
    (-> HTTP 401). Never retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class _FixedClock(SignatureClock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def verify_request(body: bytes, headers: Mapping[str, str], secret: str, now: float) -> None:
    """Check Slack's signature of a request (``X-Slack-Signature`` over the raw body and
    ``X-Slack-Request-Timestamp``) at Unix time ``now``. Raises ``SlackSignatureError``;
    ``ConfigError`` when no signing secret is configured."""
    if not secret.strip():
        raise ConfigError("the Slack signing secret (SENTINEL_SLACK_SIGNING_SECRET) is empty")
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("x-slack-request-timestamp")
    signature = lower.get("x-slack-signature")
    missing = [
        name
        for name, value in (
            ("X-Slack-Request-Timestamp", timestamp),
            ("X-Slack-Signature", signature),
        )
        if not value
    ]
    if timestamp is None or signature is None or missing:
        raise SlackSignatureError(f"Slack request without {' and '.join(missing)}")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SlackSignatureError(
            f"Slack request timestamp {timestamp!r} is not a Unix time"
        ) from None
    if abs(now - sent) > SIGNATURE_MAX_AGE_SECONDS:
        raise SlackSignatureError(
            f"Slack request timestamp {timestamp!r} is {now - sent:+.0f} s from now, outside "
            f"the {SIGNATURE_MAX_AGE_SECONDS} s window: a replay, or a skewed clock"
        )
    verifier = SignatureVerifier(secret, clock=_FixedClock(now))
    try:
        valid = verifier.is_valid(body, timestamp, signature)
    except UnicodeDecodeError:
        valid = False
    if not valid:
        raise SlackSignatureError(
            f"Slack request signature {signature!r} does not match its body and timestamp "
            f"{timestamp!r} (another app's request, or the wrong signing secret)"
        )


def click_from_form(body: bytes) -> Click | None:
    """The sentinel click in an interaction request body (``payload=<url-encoded JSON>``),
    or None when it holds none (another payload, or a body that is not one)."""
    try:
        form = parse_qs(body.decode("utf-8"))
        payload = json.loads(form["payload"][0])
    except (UnicodeDecodeError, KeyError, IndexError, ValueError) as e:
        log.warning("slack_interaction_unreadable", error=str(e), body_bytes=len(body))
        return None
    return parse_click(payload) if isinstance(payload, Mapping) else None
