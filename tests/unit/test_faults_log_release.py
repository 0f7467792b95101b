"""A finished pod whose log could not be stored (a full disk) is released at the time limit, and
the loss goes on the Task's status; a ship that stores the log later replaces it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from controller.logs import Stored
from controller.reconcile.logs import FINALIZER, RELEASED_UNSTORED, LogCoordinator, log_entry
from controller.settings import LogSettings

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


class Clock:
    def now(self) -> datetime:
        return NOW


class Client:
    def __init__(self) -> None:
        self.patches: list[tuple[str, list]] = []

    async def patch(self, resource, name, patch, *, namespace, patch_type):
        self.patches.append((name, patch))


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []

    def record(self, obj, event_type, reason, message) -> None:
        self.recorded.append((event_type, reason))


TASK = {"metadata": {"name": "t", "namespace": "ns", "uid": "u"}}


def pod(ended_seconds_ago: float) -> dict:
    finished = (NOW - timedelta(seconds=ended_seconds_ago)).isoformat().replace("+00:00", "Z")
    return {"metadata": {"name": "t-1-abc", "namespace": "ns", "creationTimestamp": "2026-11-27T11:00:00Z",
                         "finalizers": [FINALIZER], "labels": {"fabric.dev/task": "t"}},
            "status": {"phase": "Succeeded",
                       "containerStatuses": [{"state": {"terminated": {"finishedAt": finished}}}]}}


def status() -> dict:
    return {"executions": [{"name": "t-1", "phase": "Succeeded", "log": {"state": "streaming"}}]}


def coordinator(client, events, enqueued) -> LogCoordinator:
    return LogCoordinator(client, pool=object(), clock=Clock(), settings=LogSettings(release_after_seconds=60),
                          events=events, enqueue=enqueued.append)


async def test_within_the_limit_the_pod_keeps_its_log():
    client, events, enqueued = Client(), Events(), []
    logs = coordinator(client, events, enqueued)
    wait = await logs.release(TASK, status(), {"t-1": [pod(ended_seconds_ago=20)]})
    assert 39 <= wait <= 41 and client.patches == [] and events.recorded == []


async def test_past_the_limit_the_pod_is_released_and_the_loss_recorded():
    client, events, enqueued = Client(), Events(), []
    logs = coordinator(client, events, enqueued)
    wait = await logs.release(TASK, status(), {"t-1": [pod(ended_seconds_ago=61)]})
    assert wait is None
    assert [name for name, _ in client.patches] == ["t-1-abc"]
    assert events.recorded == [("Warning", "LogReleased")]
    assert enqueued == ["ns/t"], "the Task is reconciled again to write the loss"
    written = status()
    logs.merge_into(written)
    assert written["executions"][0]["log"] == {"state": "lost", "size": 0, "reason": RELEASED_UNSTORED}

    # The ship kept retrying and stored the log once space was back: stored replaces lost.
    logs.committed(written)
    logs.on_done("t-1", Stored(10, "ab" * 32, verified=True))
    later = {"executions": [{"name": "t-1", "phase": "Succeeded", "log": written["executions"][0]["log"]}]}
    logs.merge_into(later)
    assert later["executions"][0]["log"]["state"] == "stored"


def test_a_stored_log_with_gaps_says_so_on_the_status():
    """Lines the kubelet rotated away before they were read (controller/logs/cursor.py, "Gaps")
    stay visible on the execution's log entry; a whole log carries no ``gaps`` member."""
    whole = log_entry(Stored(10, "ab" * 32, verified=True))
    gapped = log_entry(Stored(10, "ab" * 32, verified=False, gaps=2))
    assert whole == {"state": "stored", "size": 10, "sha256": "ab" * 32}
    assert gapped == {**whole, "gaps": 2}
