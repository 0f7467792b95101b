"""The event recorder never blocks a reconcile and never buffers without bound."""

from prometheus_client import CollectorRegistry

from controller.events import NORMAL, EventRecorder
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
