"""Tests of the Slack adapter (``sentinel.adapters.slack``) against the local fake of
Slack's Web API and Socket Mode (``tests.fixtures.slack``).

What must not live here: what tickets say (the renderer's tests), who may approve (the
approval stage's tests), the outbox's retry schedule.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier
from structlog.testing import capture_logs

from sentinel.adapters.slack import (
    APPROVE_ACTION_ID,
    REJECT_ACTION_ID,
    Click,
    Decision,
    SlackSignatureError,
    SlackSink,
    SocketModeListener,
    click_from_form,
    parse_click,
    slack_web_client,
    verify_request,
)
from sentinel.errors import ConfigError, NotifyError
from sentinel.ports import TicketSink
from sentinel.settings import SlackSettings
from tests.fixtures import slack as slack_fixtures
from tests.fixtures.slack import CHANNEL, UPLOAD, SlackFake, block_actions_payload

# Until tests/conftest.py lists "tests.fixtures.slack" in pytest_plugins.
slack_fake = slack_fixtures.slack_fake

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*inc-1*: error rate up"}}]


def sink_for(fake: SlackFake, token: str | None = None, channel: str = CHANNEL) -> SlackSink:
    settings = SlackSettings(channel=channel, base_url=fake.base_url)
    return SlackSink(settings, fake.bot_token if token is None else token)


def test_the_sink_is_a_ticket_sink(slack_fake: SlackFake) -> None:
    sink: TicketSink = sink_for(slack_fake)
    assert sink is not None


def test_the_sink_needs_a_channel_and_a_token(slack_fake: SlackFake) -> None:
    with pytest.raises(ConfigError, match=r"slack\.channel"):
        sink_for(slack_fake, channel="")
    with pytest.raises(ConfigError, match="SENTINEL_SLACK_BOT_TOKEN"):
        sink_for(slack_fake, token=" ")


# --- tickets as Slack shows them --------------------------------------------------------


async def test_post_lands_in_the_channel_with_its_incident_metadata(slack_fake: SlackFake) -> None:
    ts = await sink_for(slack_fake).post("inc-1", "Incident inc-1", BLOCKS)

    [message] = slack_fake.messages()
    assert message.ts == ts
    assert message.text == "Incident inc-1"
    assert message.blocks == BLOCKS
    assert message.metadata == {
        "event_type": "sentinel_incident",
        "event_payload": {"incident_id": "inc-1"},
    }


async def test_update_changes_the_ticket_in_place(slack_fake: SlackFake) -> None:
    sink = sink_for(slack_fake)
    ts = await sink.post("inc-1", "Incident inc-1: open", BLOCKS)
    resolved = [{"type": "section", "text": {"type": "mrkdwn", "text": "resolved"}}]

    await sink.update(ts, "Incident inc-1: resolved", resolved)

    [message] = slack_fake.messages()
    assert (message.ts, message.text, message.blocks) == (ts, "Incident inc-1: resolved", resolved)
    assert message.updates == 1
    # The update keeps the metadata: the ticket can still be found.
    assert await sink.find("inc-1") == ts


async def test_reply_goes_to_the_ticket_thread(slack_fake: SlackFake) -> None:
    sink = sink_for(slack_fake)
    ts = await sink.post("inc-1", "Incident inc-1", BLOCKS)

    await sink.reply(ts, "Rolled back prompt v42")
    await sink.reply(ts, "Verified: error rate back to baseline")

    assert [m.ts for m in slack_fake.messages()] == [ts]
    assert [m.text for m in slack_fake.replies(ts)] == [
        "Rolled back prompt v42",
        "Verified: error rate back to baseline",
    ]


async def test_upload_attaches_the_file_to_the_ticket_thread(slack_fake: SlackFake) -> None:
    sink = sink_for(slack_fake)
    ts = await sink.post("inc-1", "Incident inc-1", BLOCKS)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

    await sink.upload(ts, "causal-graph.png", png, "Causal graph of inc-1")

    [file] = slack_fake.files
    assert (file.filename, file.title, file.content) == (
        "causal-graph.png",
        "Causal graph of inc-1",
        png,
    )
    assert (file.channel, file.thread_ts) == (CHANNEL, ts)


async def test_tell_user_sends_an_ephemeral_message(slack_fake: SlackFake) -> None:
    sink = sink_for(slack_fake)

    await sink.tell_user("U0APPROVER", "You may not approve this action")
    await sink.tell_user("slack:U0OTHER", "Approved")

    assert [(e.channel, e.user, e.text) for e in slack_fake.ephemerals] == [
        (CHANNEL, "U0APPROVER", "You may not approve this action"),
        (CHANNEL, "U0OTHER", "Approved"),
    ]
    assert slack_fake.messages() == []


def test_the_fake_serves_sync_tests_too(slack_fake: SlackFake) -> None:
    # The fake runs on a thread of its own: a test without an event loop can use it.
    ts = asyncio.run(sink_for(slack_fake).post("inc-1", "Incident inc-1", BLOCKS))
    assert [m.ts for m in slack_fake.messages()] == [ts]


# --- find -------------------------------------------------------------------------------


async def test_find_returns_the_ticket_of_the_incident_and_not_another(
    slack_fake: SlackFake,
) -> None:
    sink = sink_for(slack_fake)
    first = await sink.post("inc-1", "Incident inc-1", BLOCKS)
    slack_fake.add_message("deploying v2 now")
    slack_fake.add_message("other app", metadata={"event_type": "deploy", "event_payload": {}})
    second = await sink.post("inc-2", "Incident inc-2", BLOCKS)
    await sink.reply(first, "a reply in the thread")

    assert await sink.find("inc-1") == first
    assert await sink.find("inc-2") == second
    assert await sink.find("inc-3") is None
    history = [c for c in slack_fake.calls if c.method == "conversations.history"]
    assert all(c.params["include_all_metadata"] == "1" for c in history)


async def test_find_pages_through_recent_history(slack_fake: SlackFake) -> None:
    sink = sink_for(slack_fake)
    ts = await sink.post("inc-1", "Incident inc-1", BLOCKS)
    for i in range(450):
        slack_fake.add_message(f"chatter {i}")

    assert await sink.find("inc-1") == ts
    assert slack_fake.methods().count("conversations.history") == 3


async def test_find_looks_back_a_bounded_number_of_pages(slack_fake: SlackFake) -> None:
    sink = sink_for(slack_fake)
    await sink.post("inc-1", "Incident inc-1", BLOCKS)
    for i in range(1000):
        slack_fake.add_message(f"chatter {i}")

    assert await sink.find("inc-1") is None
    assert slack_fake.methods().count("conversations.history") == 5


# --- errors -----------------------------------------------------------------------------


async def test_rate_limit_becomes_a_notify_error_with_retry_after(slack_fake: SlackFake) -> None:
    slack_fake.fail("chat.postMessage", status=429, retry_after=7)

    with pytest.raises(NotifyError) as caught:
        await sink_for(slack_fake).post("inc-1", "Incident inc-1", BLOCKS)

    assert caught.value.retry_after == 7.0
    assert caught.value.retryable
    assert "chat.postMessage" in str(caught.value) and CHANNEL in str(caught.value)
    # slack-sdk did not retry on its own: the outbox owns retries.
    assert slack_fake.methods() == ["chat.postMessage"]
    assert slack_fake.messages() == []


async def test_server_error_is_retryable(slack_fake: SlackFake) -> None:
    slack_fake.fail("chat.update", status=500)
    sink = sink_for(slack_fake)
    ts = await sink.post("inc-1", "Incident inc-1", BLOCKS)

    with pytest.raises(NotifyError) as caught:
        await sink.update(ts, "Incident inc-1: resolved", BLOCKS)

    assert caught.value.retryable and caught.value.retry_after is None
    assert "chat.update" in str(caught.value) and "500" in str(caught.value)
    assert slack_fake.methods() == ["chat.postMessage", "chat.update"]
    # The next try goes through.
    await sink.update(ts, "Incident inc-1: resolved", BLOCKS)
    assert slack_fake.messages()[0].updates == 1


async def test_a_failed_upload_is_retryable(slack_fake: SlackFake) -> None:
    sink = sink_for(slack_fake)
    ts = await sink.post("inc-1", "Incident inc-1", BLOCKS)
    slack_fake.fail(UPLOAD, status=500)

    with pytest.raises(NotifyError) as caught:
        await sink.upload(ts, "graph.png", b"png", "graph")

    assert caught.value.retryable
    assert slack_fake.files == []


async def test_an_invalid_token_is_not_retryable_and_never_shown(slack_fake: SlackFake) -> None:
    token = "xoxb-revoked-0123456789-secret"

    with pytest.raises(NotifyError) as caught:
        await sink_for(slack_fake, token=token).post("inc-1", "Incident inc-1", BLOCKS)

    assert not caught.value.retryable
    assert "invalid_auth" in str(caught.value)
    assert token not in str(caught.value) and token not in repr(caught.value.args)
    assert slack_fake.messages() == []


async def test_an_unknown_channel_is_not_retryable(slack_fake: SlackFake) -> None:
    with pytest.raises(NotifyError) as caught:
        await sink_for(slack_fake, channel="C0GONE").reply("1.0", "hello")

    assert not caught.value.retryable
    assert "channel_not_found" in str(caught.value) and "C0GONE" in str(caught.value)


async def test_a_dropped_connection_is_retryable_and_not_retried_by_the_client(
    slack_fake: SlackFake,
) -> None:
    slack_fake.fail("chat.postMessage", status=0)

    with pytest.raises(NotifyError) as caught:
        await sink_for(slack_fake).post("inc-1", "Incident inc-1", BLOCKS)

    assert caught.value.retryable
    # slack-sdk's default handlers would have sent it again: the outbox owns retries.
    assert slack_fake.methods() == ["chat.postMessage"]


async def test_an_unreachable_slack_is_retryable(slack_fake: SlackFake) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = SlackSettings(channel=CHANNEL, base_url=f"http://127.0.0.1:{port}/api/")
    sink = SlackSink(settings, slack_fake.bot_token)

    with pytest.raises(NotifyError) as caught:
        await sink.tell_user("U0APPROVER", "hi")

    assert caught.value.retryable
    assert "chat.postEphemeral" in str(caught.value)
    assert slack_fake.bot_token not in str(caught.value)


# --- user groups ------------------------------------------------------------------------


async def test_group_members(slack_fake: SlackFake) -> None:
    slack_fake.set_group("S0ONCALL", ["U0DANA", "U0LEE"])
    sink = sink_for(slack_fake)

    assert await sink.group_members("S0ONCALL") == frozenset({"U0DANA", "U0LEE"})

    with pytest.raises(NotifyError, match="S0NOPE") as caught:
        await sink.group_members("S0NOPE")
    assert not caught.value.retryable


# --- Socket Mode ------------------------------------------------------------------------


@asynccontextmanager
async def listening(
    fake: SlackFake, on_click: Callable[[Click], Awaitable[None]]
) -> AsyncIterator[SocketModeListener]:
    web = slack_web_client(fake.bot_token, fake.base_url)
    listener = SocketModeListener(fake.app_token, web, on_click)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_click_is_acked_at_once_and_reaches_the_handler(slack_fake: SlackFake) -> None:
    started: list[Click] = []
    finished: list[Click] = []

    async def slow(click: Click) -> None:
        started.append(click)
        await asyncio.sleep(1.0)
        finished.append(click)

    async with listening(slack_fake, slow):
        payload = block_actions_payload(
            APPROVE_ACTION_ID, "inc-1/rollback/0", message_ts="1700000001.000001"
        )
        ack = await slack_fake.interact(payload)

        assert ack.seconds < 0.5
        assert ack.body == {"envelope_id": ack.envelope_id}
        assert finished == []
        await wait_for(lambda: len(finished) == 1)

    assert finished == [
        Click(
            action_key="inc-1/rollback/0",
            decision=Decision.APPROVE,
            user_id="U0APPROVER",
            user_name="dana",
            channel=CHANNEL,
            message_ts="1700000001.000001",
            trigger="1700000100.123456",
        )
    ]


async def test_other_actions_are_acked_and_ignored(slack_fake: SlackFake) -> None:
    clicks: list[Click] = []

    async def record(click: Click) -> None:
        clicks.append(click)

    async with listening(slack_fake, record):
        await slack_fake.interact(block_actions_payload("other_app_button", "x"))
        await slack_fake.interact({"type": "view_submission", "view": {"id": "V1"}})
        await slack_fake.interact(block_actions_payload(REJECT_ACTION_ID, "inc-1/rollback/0"))
        await wait_for(lambda: len(clicks) > 0)

    assert [(c.decision, c.action_key) for c in clicks] == [(Decision.REJECT, "inc-1/rollback/0")]


async def test_a_failing_handler_does_not_stop_the_listener(slack_fake: SlackFake) -> None:
    clicks: list[Click] = []

    async def flaky(click: Click) -> None:
        clicks.append(click)
        if len(clicks) == 1:
            raise NotifyError("the store is down")

    with capture_logs() as logs:
        async with listening(slack_fake, flaky):
            await slack_fake.interact(block_actions_payload(APPROVE_ACTION_ID, "key-1"))
            await wait_for(lambda: len(clicks) == 1)
            ack = await slack_fake.interact(
                block_actions_payload(APPROVE_ACTION_ID, "key-2", action_ts="1700000200.000001")
            )
            await wait_for(lambda: len(clicks) == 2)

    assert ack.seconds < 0.5
    assert [c.action_key for c in clicks] == ["key-1", "key-2"]
    failed = [e for e in logs if e["event"] == "slack_click_failed"]
    assert [(e["action_key"], e["error"]) for e in failed] == [("key-1", "the store is down")]


async def test_a_bad_app_token_fails_start(slack_fake: SlackFake) -> None:
    async def never(click: Click) -> None:
        raise AssertionError("no click expected")

    web = slack_web_client(slack_fake.bot_token, slack_fake.base_url)
    listener = SocketModeListener("xapp-wrong-token-9999", web, never)

    with pytest.raises(NotifyError) as caught:
        await listener.start()

    assert not caught.value.retryable
    assert "apps.connections.open" in str(caught.value)
    assert "xapp-wrong-token-9999" not in str(caught.value)
    await listener.close()


# --- HTTP mode --------------------------------------------------------------------------

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_700_000_000.0


def signed(body: bytes, timestamp: float, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(timestamp))
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def form(payload: Mapping[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


BODY = form(block_actions_payload(APPROVE_ACTION_ID, "inc-1/rollback/0"))


def test_verify_request_accepts_a_correct_signature() -> None:
    verify_request(BODY, signed(BODY, NOW - 10), SECRET, NOW)
    lower = {k.lower(): v for k, v in signed(BODY, NOW).items()}
    verify_request(BODY, lower, SECRET, NOW)


def test_verify_request_rejects_a_wrong_signature() -> None:
    with pytest.raises(SlackSignatureError, match="does not match") as caught:
        verify_request(BODY, signed(BODY, NOW, secret="another-apps-secret"), SECRET, NOW)
    assert not caught.value.retryable
    assert SECRET not in str(caught.value)


def test_verify_request_rejects_a_tampered_body() -> None:
    tampered = form(block_actions_payload(APPROVE_ACTION_ID, "inc-9/rollback/0"))
    with pytest.raises(SlackSignatureError, match="does not match"):
        verify_request(tampered, signed(BODY, NOW), SECRET, NOW)


@pytest.mark.parametrize("header", ["X-Slack-Signature", "X-Slack-Request-Timestamp"])
def test_verify_request_rejects_a_missing_header(header: str) -> None:
    headers = signed(BODY, NOW)
    del headers[header]
    with pytest.raises(SlackSignatureError, match=header) as caught:
        verify_request(BODY, headers, SECRET, NOW)
    assert not caught.value.retryable


def test_verify_request_rejects_a_replayed_request() -> None:
    six_minutes_ago = NOW - 6 * 60
    with pytest.raises(SlackSignatureError, match="window") as caught:
        verify_request(BODY, signed(BODY, six_minutes_ago), SECRET, NOW)
    assert str(int(six_minutes_ago)) in str(caught.value)


def test_verify_request_rejects_a_timestamp_that_is_no_number() -> None:
    headers = {**signed(BODY, NOW), "X-Slack-Request-Timestamp": "yesterday"}
    with pytest.raises(SlackSignatureError, match="'yesterday'"):
        verify_request(BODY, headers, SECRET, NOW)


# A block_actions payload as Slack posts it for a button click (the shape of Slack's
# interactivity reference), with the ticket renderer's action ids.
REAL_PAYLOAD: dict[str, Any] = {
    "type": "block_actions",
    "user": {"id": "U045VRZFT", "username": "mavis", "name": "mavis", "team_id": "T9TK3CUKW"},
    "api_app_id": "A0KRD7HC3",
    "token": "Shh_its_a_seekrit",
    "container": {
        "type": "message",
        "message_ts": "1548261231.000200",
        "channel_id": "CBR2V3XEX",
        "is_ephemeral": False,
    },
    "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
    "team": {"id": "T9TK3CUKW", "domain": "example"},
    "enterprise": None,
    "is_enterprise_install": False,
    "channel": {"id": "CBR2V3XEX", "name": "incidents"},
    "message": {
        "bot_id": "BAH5CA16Z",
        "type": "message",
        "text": "Incident inc-7: error rate of agent:support up",
        "user": "UAJ2RU415",
        "ts": "1548261231.000200",
        "team": "T9TK3CUKW",
        "blocks": [],
    },
    "state": {"values": {}},
    "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9",
    "actions": [
        {
            "action_id": "sentinel_reject",
            "block_id": "decision",
            "text": {"type": "plain_text", "text": "Reject", "emoji": True},
            "value": "inc-7/throttle/1",
            "style": "danger",
            "type": "button",
            "action_ts": "1548426417.840180",
        }
    ],
}


def test_click_from_form_parses_a_block_actions_payload() -> None:
    assert click_from_form(form(REAL_PAYLOAD)) == Click(
        action_key="inc-7/throttle/1",
        decision=Decision.REJECT,
        user_id="U045VRZFT",
        user_name="mavis",
        channel="CBR2V3XEX",
        message_ts="1548261231.000200",
        trigger="1548426417.840180",
    )


@pytest.mark.parametrize(
    "body",
    [
        form(block_actions_payload("someone_elses_button", "v")),
        form(block_actions_payload(APPROVE_ACTION_ID, "")),
        form({"type": "view_submission", "view": {}}),
        form({**REAL_PAYLOAD, "actions": [{"action_id": ["sentinel_approve"], "value": "k"}]}),
        form({**REAL_PAYLOAD, "user": "U045VRZFT"}),
        b"payload=not-json",
        b"token=abc&command=%2Fsentinel",
        b"\xff\xfe",
    ],
)
def test_click_from_form_ignores_anything_else(body: bytes) -> None:
    assert click_from_form(body) is None


def test_a_click_without_a_message_takes_the_container_ts() -> None:
    payload = {**REAL_PAYLOAD}
    del payload["message"]
    click = parse_click(payload)
    assert click is not None and click.message_ts == "1548261231.000200"


def test_a_root_cause_chosen_in_the_select_menu_is_a_confirm_click() -> None:
    payload = slack_fixtures.block_actions_payload("sentinel_confirm", "unused")
    action = payload["actions"][0]
    action.update(
        {
            "type": "static_select",
            "block_id": "sentinel_confirm:inc-42",
            "selected_option": {"text": {"type": "plain_text", "text": "#2"}, "value": "tool:crm"},
        }
    )
    del action["value"]
    click = parse_click(payload)
    assert click is not None
    assert (click.decision, click.action_key, click.component) == (
        Decision.CONFIRM,
        "inc-42",
        "tool:crm",
    )
    action["block_id"] = "someone_else"  # not our menu's block: no incident, no click
    assert parse_click(payload) is None
