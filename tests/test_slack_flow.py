"""Slack tickets and approvals end to end: a real daemon (its Metric and Remediation
Agents, a SQLite store, a real git remote) talks to a small local fake of Slack's Web API
and Socket Mode (``tests/fixtures/slack.py``). Approve and reject, over Socket Mode and
over the signed HTTP request URL; bad signatures, replays and unauthorized people
refused; Slack failing with 429 and 500, then recovering, with exactly one ticket."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from sentinel.adapters.db import SqlStore, open_store
from sentinel.adapters.slack import APPROVE_ACTION_ID, REJECT_ACTION_ID, SlackSink
from sentinel.agents.tickets import OutboxNotifier, TicketDesk, refresh_ticket
from sentinel.clock import FakeClock, SystemClock
from sentinel.rca import Hypothesis
from sentinel.remediation import ActionState
from sentinel.settings import Settings
from tests.fixtures.slack import SlackFake, block_actions_payload
from tests.harness import make_settings, running_daemon
from tests.test_remediation_agent import (
    PROMPT_GOOD,
    ROOT,
    Remote,
    incident,
    make_remote,
    seed_incident,
)

APPROVER = "U0APPROVER"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
_T = TypeVar("_T")


def wait_for(what: str, probe: Callable[[], _T | None], timeout: float = 30.0) -> _T:
    """Poll ``probe`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def seed(store: SqlStore, remote: Remote, confidence: float) -> str:
    """An open incident (with its lifecycle event, as the Metric Agent writes it), the
    commit that caused it, and a diagnosis blaming that commit; the key of the action
    the rollback playbook will propose."""
    at = SystemClock().now() - timedelta(minutes=2)
    seed_incident(store, remote, confidence, incident("inc-slack", at))
    return "inc-slack/rollback-bad-change"


@dataclass
class World:
    fake: SlackFake
    remote: Remote
    store: SqlStore
    settings: Settings
    key: str

    def action_state(self) -> ActionState:
        record = self.store.get_action(self.key)
        assert record is not None
        return record.state

    def ticket(self) -> Any:
        (message,) = self.fake.messages()
        return message


def make_world(tmp_path: Path, fake: SlackFake, mode: str) -> World:
    remote = make_remote(tmp_path)
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    source = ROOT / "playbooks" / "rollback-bad-change.yaml"
    (playbooks / "rollback.yaml").write_text(source.read_text())
    secrets = {"slack_bot_token": fake.bot_token}
    if mode == "socket":
        secrets["slack_app_token"] = fake.app_token
    else:
        secrets["slack_signing_secret"] = SECRET
    settings = make_settings(
        tmp_path,
        # Runs every half second on a one-second grid: the test does not wait for 30 s.
        detection={"step_seconds": 1.0, "interval_seconds": 0.5, "ingest_lag_seconds": 0.0},
        changes={"repos": [{"name": "agent-config", "url": str(remote.path), "branch": "main"}]},
        remediation={"config_repo": "agent-config", "workdir": str(tmp_path / "gitops")},
        slack={
            "channel": fake.channel,
            "mode": mode,
            "base_url": fake.base_url,
            "deliver_seconds": 0.2,
            "retry_max_seconds": 2.0,
        },
        approvals={"users": [f"slack:{APPROVER}"]},
        secrets=secrets,
        ingest={"writer_process": False},
    )
    store = open_store(settings.store_url, SystemClock())
    key = seed(store, remote, 0.75)
    return World(fake, remote, store, settings, key)


def buttons(message: Any) -> list[str]:
    return [
        e["action_id"]
        for b in message.blocks or []
        if b.get("type") == "actions"
        for e in b.get("elements", [])
        if e.get("type") == "button"
    ]


def ticket_with_buttons(w: World) -> Any:
    messages = w.fake.messages()
    return messages[0] if messages and buttons(messages[0]) else None


def reverted(w: World, before: int) -> bool:
    return len(w.remote.commits()) == before + 1


# --- Socket Mode ---------------------------------------------------------------------------


@pytest.fixture
def socket_world(tmp_path: Path, slack_fake: SlackFake) -> Iterator[World]:
    w = make_world(tmp_path, slack_fake, "socket")
    yield w
    w.store.close()


def test_approve_over_socket_mode_runs_the_fix_once_and_updates_the_ticket(
    socket_world: World,
) -> None:
    w = socket_world
    before = len(w.remote.commits())
    with running_daemon(w.settings, store=w.store):
        ticket = wait_for("the ticket with its buttons", lambda: ticket_with_buttons(w))
        assert buttons(ticket) == [APPROVE_ACTION_ID, REJECT_ACTION_ID]
        assert "prompt:support-agent" in json.dumps(ticket.blocks)
        wait_for("socket mode", lambda: w.fake.connections > 0)

        # Someone not allowed: refused privately, nothing decided.
        intruder = block_actions_payload(APPROVE_ACTION_ID, w.key, user_id="U0INTRUDER")
        assert w.fake.interact_sync(intruder).seconds < 3
        refusal = wait_for(
            "the refusal",
            lambda: [e for e in w.fake.ephemerals if e.user == "U0INTRUDER"],
        )
        assert "may not approve" in refusal[0].text
        assert w.action_state() is ActionState.PROPOSED

        ack = w.fake.interact_sync(block_actions_payload(APPROVE_ACTION_ID, w.key))
        assert ack.seconds < 3  # acknowledged at once, acted on afterwards
        wait_for("the revert on the remote", lambda: reverted(w, before))
        assert w.remote.show("prompts/support.md") == PROMPT_GOOD
        # A second click (a double click, or a retry) changes nothing.
        w.fake.interact_sync(block_actions_payload(APPROVE_ACTION_ID, w.key))
        wait_for(
            "the 'already' answer",
            lambda: [e for e in w.fake.ephemerals if e.user == APPROVER],
        )

        def settled() -> Any:
            m = w.ticket()
            return m if not buttons(m) and "verifying" in m.text.lower() else None

        updated = wait_for("the ticket without buttons, verifying", settled)
        assert updated.updates >= 1
        thread = wait_for(
            "the 'applied' note in the thread",
            lambda: (r := w.fake.replies(updated.ts)) and any("applied" in m.text for m in r) and r,
        )
    assert reverted(w, before)  # exactly one revert
    assert len(w.fake.messages()) == 1  # exactly one ticket
    assert any("applied" in m.text for m in thread)
    approved = [e for e in w.store.audit("inc-slack") if e.action == "action_approved"]
    assert [e.actor for e in approved] == [f"slack:{APPROVER}"]
    refused = [e for e in w.store.audit("inc-slack") if e.action == "approval_refused"]
    assert [e.actor for e in refused] == ["slack:U0INTRUDER"]
    graph = [f for f in w.fake.files if f.filename.endswith(".png")]
    assert graph and graph[0].content.startswith(b"\x89PNG") and graph[0].thread_ts == updated.ts


def test_reject_over_socket_mode_never_runs_the_fix(socket_world: World) -> None:
    w = socket_world
    before = len(w.remote.commits())
    with running_daemon(w.settings, store=w.store):
        wait_for("the ticket with its buttons", lambda: ticket_with_buttons(w))
        wait_for("socket mode", lambda: w.fake.connections > 0)
        w.fake.interact_sync(block_actions_payload(REJECT_ACTION_ID, w.key))
        wait_for("the rejection", lambda: w.action_state() is ActionState.REJECTED)
        wait_for("the ticket without buttons", lambda: not buttons(w.ticket()))
        time.sleep(1.5)  # a few more agent runs
    assert len(w.remote.commits()) == before
    record = w.store.get_action(w.key)
    assert record is not None and record.decided_by == f"slack:{APPROVER}"


# --- the HTTP request URL ------------------------------------------------------------------


def signed(
    payload: dict[str, Any], *, age_seconds: float = 0, secret: str = SECRET
) -> tuple[bytes, dict[str, str]]:
    body = ("payload=" + urllib.parse.quote(json.dumps(payload))).encode()
    ts = str(int(time.time() - age_seconds))
    sig = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    return body, {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


@pytest.fixture
def http_world(tmp_path: Path, slack_fake: SlackFake) -> Iterator[World]:
    w = make_world(tmp_path, slack_fake, "http")
    yield w
    w.store.close()


def test_approve_over_http_checks_signatures_and_runs_the_fix_once(http_world: World) -> None:
    w = http_world
    before = len(w.remote.commits())
    with running_daemon(w.settings, store=w.store) as d:
        wait_for("the ticket with its buttons", lambda: ticket_with_buttons(w))
        url = d.url + "/slack/interactions"
        click = block_actions_payload(APPROVE_ACTION_ID, w.key)

        body, headers = signed(click, secret="not-the-secret")
        assert httpx.post(url, content=body, headers=headers).status_code == 401
        body, headers = signed(click, age_seconds=6 * 60)  # a replay of an old request
        assert httpx.post(url, content=body, headers=headers).status_code == 401
        body, headers = signed(click)
        headers.pop("X-Slack-Signature")
        assert httpx.post(url, content=body, headers=headers).status_code == 401
        time.sleep(1.0)
        assert w.action_state() is ActionState.PROPOSED  # none of them decided anything

        body, headers = signed(click)
        started = time.monotonic()
        answer = httpx.post(url, content=body, headers=headers)
        assert answer.status_code == 200 and time.monotonic() - started < 3
        wait_for("the revert on the remote", lambda: reverted(w, before))
        wait_for("the ticket without buttons", lambda: not buttons(w.ticket()))
        text = httpx.get(d.url + "/metrics").text
    assert "sentinel_slack_requests_refused_total 3.0" in text
    assert len(w.remote.commits()) == before + 1
    assert len(w.fake.messages()) == 1


def test_reject_over_http_and_an_unauthorized_click_is_refused(http_world: World) -> None:
    w = http_world
    before = len(w.remote.commits())
    with running_daemon(w.settings, store=w.store) as d:
        wait_for("the ticket with its buttons", lambda: ticket_with_buttons(w))
        url = d.url + "/slack/interactions"
        body, headers = signed(
            block_actions_payload(APPROVE_ACTION_ID, w.key, user_id="U0INTRUDER")
        )
        assert httpx.post(url, content=body, headers=headers).status_code == 200
        wait_for("the refusal", lambda: [e for e in w.fake.ephemerals if e.user == "U0INTRUDER"])
        assert w.action_state() is ActionState.PROPOSED
        body, headers = signed(block_actions_payload(REJECT_ACTION_ID, w.key))
        assert httpx.post(url, content=body, headers=headers).status_code == 200
        wait_for("the rejection", lambda: w.action_state() is ActionState.REJECTED)
        time.sleep(1.5)
    assert len(w.remote.commits()) == before


# --- Slack failing, then recovering ------------------------------------------------------------


def test_slack_429_and_500_then_recovery_gives_one_ticket_with_every_update(
    tmp_path: Path, slack_fake: SlackFake
) -> None:
    fake = slack_fake
    t0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    clock = FakeClock(t0)
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), clock)
    settings = make_settings(
        tmp_path,
        slack={"channel": fake.channel, "base_url": fake.base_url, "retry_max_seconds": 60.0},
    )
    remote = make_remote(tmp_path)
    seed(store, remote, 0.75)

    async def scenario() -> None:
        sink = SlackSink(settings.slack, fake.bot_token)
        desk = TicketDesk(store, sink, cap_seconds=60.0)
        notifier = OutboxNotifier(store)
        try:
            desk.refresh(["inc-slack"])
            fake.fail("chat.postMessage", status=429, times=1, retry_after=5)
            done = await desk.deliver(clock.now())
            assert done.failed and fake.messages() == []
            # Retry-After is honoured: nothing is tried before it is over.
            clock.advance(3)
            assert (await desk.deliver(clock.now())).posted == []
            fake.fail("chat.postMessage", status=500, times=1)
            clock.advance(3)
            assert (await desk.deliver(clock.now())).failed  # the 500
            clock.advance(3)  # the second failure backs off 4 s: not yet
            assert (await desk.deliver(clock.now())).posted == []
            clock.advance(1)
            assert (await desk.deliver(clock.now())).posted == ["inc-slack"]

            # Updates and thread messages while Slack keeps failing: all applied later.
            notifier.notify("inc-slack", "first note")
            store.put_hypotheses(
                "inc-slack",
                [
                    Hypothesis(
                        component="model:gpt-4o", fault="model_provider_latency", confidence=0.4
                    )
                ],
                clock.now(),
            )
            desk.refresh(["inc-slack"])
            notifier.notify("inc-slack", "second note")
            fake.fail("chat.update", status=500, times=2)
            fake.fail("chat.postMessage", status=429, times=1, retry_after=1)
            for _ in range(8):
                clock.advance(5)
                await desk.deliver(clock.now())
        finally:
            await sink.close()

    asyncio.run(scenario())
    (ticket,) = fake.messages()
    assert "model:gpt-4o" in json.dumps(ticket.blocks)  # the update arrived
    assert [m.text for m in fake.replies(ticket.ts)] == ["first note", "second note"]
    assert store.due_tickets(clock.now() + timedelta(hours=1)) == []
    assert store.due_ticket_messages(clock.now() + timedelta(hours=1)) == []
    store.close()


def test_a_post_whose_outcome_a_crash_lost_is_found_not_repeated(
    tmp_path: Path, slack_fake: SlackFake
) -> None:
    fake = slack_fake
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), SystemClock())
    settings = make_settings(tmp_path, slack={"channel": fake.channel, "base_url": fake.base_url})
    seed(store, make_remote(tmp_path), 0.75)
    refresh_ticket(store, "inc-slack")

    async def crash_after_post() -> None:
        # What a daemon does before it dies: mark the post, send it, and never record it.
        sink = SlackSink(settings.slack, fake.bot_token)
        (t,) = store.due_tickets(SystemClock().now())
        store.ticket_posting("inc-slack")
        await sink.post("inc-slack", t.text, t.blocks)

    async def restarted() -> None:
        sink = SlackSink(settings.slack, fake.bot_token)
        desk = TicketDesk(store, sink, cap_seconds=10.0)
        done = await desk.deliver(SystemClock().now())
        assert done.found == ["inc-slack"] and done.posted == []

    asyncio.run(crash_after_post())
    asyncio.run(restarted())
    (ticket,) = fake.messages()  # one ticket, updated in place
    assert ticket.updates == 1
    store.close()


def test_thread_messages_keep_their_order_while_one_backs_off(
    tmp_path: Path, slack_fake: SlackFake
) -> None:
    fake = slack_fake
    clock = FakeClock(datetime(2026, 11, 1, 10, 0, tzinfo=UTC))
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), clock)
    settings = make_settings(tmp_path, slack={"channel": fake.channel, "base_url": fake.base_url})
    seed(store, make_remote(tmp_path), 0.75)

    async def scenario() -> None:
        sink = SlackSink(settings.slack, fake.bot_token)
        desk = TicketDesk(store, sink, cap_seconds=60.0)
        notifier = OutboxNotifier(store)
        desk.refresh(["inc-slack"])
        assert (await desk.deliver(clock.now())).posted == ["inc-slack"]
        notifier.notify("inc-slack", "first")
        fake.fail("chat.postMessage", status=500, times=1)
        assert (await desk.deliver(clock.now())).failed  # "first" backs off 2 s
        notifier.notify("inc-slack", "second")
        clock.advance(1)
        assert (await desk.deliver(clock.now())).messages == []  # "second" waits its turn
        clock.advance(1)
        assert len((await desk.deliver(clock.now())).messages) == 2

    asyncio.run(scenario())
    (ticket,) = fake.messages()
    assert [m.text for m in fake.replies(ticket.ts)] == ["first", "second"]
    store.close()


def test_a_lost_post_is_posted_again_when_the_channel_cannot_be_searched(
    tmp_path: Path, slack_fake: SlackFake
) -> None:
    """Without the history scope a lost post cannot be looked for: a second ticket is
    better than none (the fake answers conversations.history with a refusal)."""
    fake = slack_fake
    store = open_store("sqlite:///" + str(tmp_path / "s.db"), SystemClock())
    settings = make_settings(tmp_path, slack={"channel": fake.channel, "base_url": fake.base_url})
    seed(store, make_remote(tmp_path), 0.75)
    refresh_ticket(store, "inc-slack")
    store.ticket_posting("inc-slack")  # a post whose outcome a crash lost
    fake.revoke_scope("conversations.history")

    async def restarted() -> None:
        desk = TicketDesk(store, SlackSink(settings.slack, fake.bot_token), cap_seconds=10.0)
        done = await desk.deliver(SystemClock().now())
        assert done.posted == ["inc-slack"] and done.found == []

    asyncio.run(restarted())
    assert len(fake.messages()) == 1
    store.close()


def confirm_payload(incident_id: str, component: str, user_id: str = APPROVER) -> dict[str, Any]:
    payload = block_actions_payload("sentinel_confirm", "", user_id=user_id)
    action = payload["actions"][0]
    del action["value"]
    action.update(
        {
            "type": "static_select",
            "block_id": f"sentinel_confirm:{incident_id}",
            "selected_option": {
                "text": {"type": "plain_text", "text": component},
                "value": component,
            },
        }
    )
    return payload


def test_the_root_cause_chosen_in_the_ticket_is_confirmed_for_learning(
    socket_world: World,
) -> None:
    w = socket_world
    with running_daemon(w.settings, store=w.store):
        ticket = wait_for("the ticket", lambda: ticket_with_buttons(w))
        menus = [b for b in ticket.blocks if b.get("block_id", "").startswith("sentinel_confirm:")]
        assert [o["value"] for o in menus[0]["elements"][0]["options"]] == ["prompt:support-agent"]
        wait_for("socket mode", lambda: w.fake.connections > 0)
        w.fake.interact_sync(confirm_payload("inc-slack", "prompt:support-agent", "U0INTRUDER"))
        wait_for("the refusal", lambda: [e for e in w.fake.ephemerals if e.user == "U0INTRUDER"])
        w.fake.interact_sync(confirm_payload("inc-slack", "prompt:support-agent"))
        thanks = wait_for(
            "the confirmation",
            lambda: [e for e in w.fake.ephemerals if e.user == APPROVER and "confirmed" in e.text],
        )
        assert "prompt:support-agent" in thanks[0].text
        wait_for(
            "the ticket showing it",
            lambda: "root cause confirmed: prompt:support-agent" in json.dumps(w.ticket().blocks),
        )
    confirmed = [e for e in w.store.audit("inc-slack") if e.action == "root_cause_confirmed"]
    assert [e.actor for e in confirmed] == [f"slack:{APPROVER}"]
    refused = [e for e in w.store.audit("inc-slack") if e.action == "approval_refused"]
    assert [(e.actor, e.detail["wanted"]) for e in refused] == [("slack:U0INTRUDER", "confirm")]
