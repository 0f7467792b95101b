"""The event recorder never blocks a reconcile and never buffers without bound."""

import asyncio

from prometheus_client import CollectorRegistry

from controller.events import COMBINE_IDLE_SECONDS, NORMAL, WARNING, EventRecorder
from fakeclock import FakeClock


class RecordingClient:
    def __init__(self):
        self.created: list[dict] = []
        self.patched: list[tuple[str, dict]] = []

    async def create(self, resource, body, namespace=None):
        self.created.append(body)
        return {"metadata": {"name": f"event-{len(self.created)}"}}

    async def patch(self, resource, name, patch, namespace=None):
        self.patched.append((name, patch))
        return {}


TASK = {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u-1"}}


async def test_record_drops_and_counts_when_the_queue_is_full():
    registry = CollectorRegistry()
    recorder = EventRecorder(RecordingClient(), FakeClock(), component="c", host="h", registry=registry, queue_size=2)
    for i in range(3):
        recorder.record(TASK, NORMAL, "Reason", f"message {i}")
    assert registry.get_sample_value("fabric_task_events_dropped_total") == 1


async def test_repeats_bump_the_count_of_the_event_already_written():
    client = RecordingClient()
    recorder = EventRecorder(client, FakeClock(), component="c", host="h")
    recorder.record(TASK, NORMAL, "CreatedJob", "Created Job t-1")
    recorder.record(TASK, NORMAL, "CreatedJob", "Created Job t-1")
    recorder.record(TASK, NORMAL, "Other", "something else")
    await recorder.flush()
    assert [e["reason"] for e in client.created] == ["CreatedJob", "Other"]
    assert client.created[0]["involvedObject"] == {
        "apiVersion": "fabric.dev/v1alpha1", "kind": "Task", "name": "t", "namespace": "ns", "uid": "u-1",
        "resourceVersion": None}
    assert client.patched == [("event-1", {"count": 2, "lastTimestamp": client.created[0]["lastTimestamp"]})]


def task(name: str, namespace: str = "ns") -> dict:
    return {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
            "metadata": {"name": name, "namespace": namespace, "uid": f"u-{namespace}-{name}"}}


async def test_events_repeating_status_are_combined_once_the_burst_budget_is_spent():
    client, registry = RecordingClient(), CollectorRegistry()
    recorder = EventRecorder(client, FakeClock(), component="c", host="h", registry=registry,
                             repeats_per_second=1.0, repeats_burst=3)
    for i in range(10):
        recorder.record(task(f"t{i}"), NORMAL, "ExecutionSucceeded", f"Execution t{i}-1 succeeded",
                        repeats_status=True)
    recorder.record(task("t0", "other"), NORMAL, "ExecutionSucceeded", "Execution t0-1 succeeded",
                    repeats_status=True)
    recorder.record(task("t9"), WARNING, "ExecutionFailed", "Execution t9-2 failed", repeats_status=False)
    await recorder.flush()
    written = [(e["involvedObject"]["namespace"], e["involvedObject"]["name"], e["reason"], e["message"])
               for e in client.created]
    assert written[:3] == [("ns", f"t{i}", "ExecutionSucceeded", f"Execution t{i}-1 succeeded") for i in range(3)]
    assert ("ns", "t9", "ExecutionFailed", "Execution t9-2 failed") in written, "a Warning is never combined"
    combined = [w for w in written[3:] if w[2] == "ExecutionSucceeded"]
    assert [(ns, name) for ns, name, *_ in combined] == [("ns", "t9"), ("other", "t0")], \
        "one combined Event per namespace and reason, on the last object"
    assert combined[0][3].startswith("(combined from similar events): 7 ExecutionSucceeded Events")
    assert combined[0][3].endswith("Execution t9-1 succeeded")
    assert combined[1][3].startswith("(combined from similar events): 1 ExecutionSucceeded Events")
    assert registry.get_sample_value("fabric_task_events_combined_total", {"reason": "ExecutionSucceeded"}) == 8


async def test_combined_events_are_written_when_the_queue_goes_idle_and_the_budget_refills():
    client, clock = RecordingClient(), FakeClock()
    recorder = EventRecorder(client, clock, component="c", host="h", repeats_per_second=1.0, repeats_burst=1)
    writer = asyncio.create_task(recorder.run())
    try:
        for i in range(3):
            recorder.record(task(f"t{i}"), NORMAL, "CreatedJob", f"Created Job t{i}-1", repeats_status=True)
        await clock.settle()
        assert [e["message"] for e in client.created] == ["Created Job t0-1"], "the rest wait, combined"
        await clock.advance(COMBINE_IDLE_SECONDS)
        assert [e["message"] for e in client.created][1:] == [
            "(combined from similar events): 2 CreatedJob Events on Tasks of this namespace during a burst "
            "(each Task's status says it); the last: Created Job t2-1"]
        await clock.advance(1.0)  # the burst is over: the budget is back
        recorder.record(task("t3"), NORMAL, "CreatedJob", "Created Job t3-1", repeats_status=True)
        await clock.settle()
        assert client.created[-1]["message"] == "Created Job t3-1"
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)


async def test_a_queued_event_keeps_only_the_reference_to_its_object():
    """The queue holds what ``involvedObject`` needs, taken when the Event was recorded, not the
    object: a Task as the API server returned it (managedFields, spec, status) is dropped at once."""
    client = RecordingClient()
    recorder = EventRecorder(client, FakeClock(), component="c", host="h")
    task = {**TASK, "metadata": {**TASK["metadata"], "resourceVersion": "7", "managedFields": [{"manager": "x"}]},
            "spec": {"payload": "x" * 10_000}}
    recorder.record(task, NORMAL, "CreatedJob", "Created Job t-1")
    task["metadata"]["name"] = "changed-after-recording"
    queued = recorder._pending.get_nowait()
    assert queued[0] == {"apiVersion": "fabric.dev/v1alpha1", "kind": "Task",
                         "metadata": {"name": "t", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}}
    recorder._pending.put_nowait(queued)
    await recorder.flush()
    assert client.created[0]["involvedObject"]["name"] == "t"
    assert client.created[0]["involvedObject"]["resourceVersion"] == "7"
