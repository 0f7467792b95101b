"""The pool's scheduling policy (``controller.logs.slots``): when a stream may start, when that
changes with no event, and which queued log goes first. Pure: times are passed in."""

from __future__ import annotations

import pytest

from controller.logs.slots import SlotPolicy, StreamSlots, next_job


def slots_with(policy: SlotPolicy, last_reads: list[float]) -> StreamSlots:
    slots = StreamSlots(policy)
    for i, at in enumerate(last_reads):
        slots.opened(f"e{i}", at)
    return slots


# (max_streams, max_waiting, idle_after, each open stream's last read, now) -> may_start, next_change
CASES = [
    pytest.param(2, 0, 2.0, [], 10.0, True, None, id="empty-pool"),
    pytest.param(2, 0, 2.0, [10.0], 10.0, True, None, id="a-free-slot"),
    pytest.param(2, 0, 2.0, [10.0, 10.0], 10.0, False, None, id="no-lending-full"),
    pytest.param(2, 0, 2.0, [0.0, 0.0], 10.0, False, None, id="no-lending-waiting-streams-still-count"),
    pytest.param(2, 2, 2.0, [10.0, 9.0], 10.0, False, 11.0, id="both-moving-until-the-older-turns-waiting"),
    pytest.param(2, 2, 2.0, [10.0, 8.0], 10.0, True, None, id="one-waiting-lends-its-slot"),
    pytest.param(2, 2, 2.0, [10.0, 9.5, 8.0], 10.0, False, 11.5, id="two-moving-one-waiting"),
    pytest.param(2, 2, 2.0, [10.0, 9.5, 9.0, 8.5], 10.0, False, None, id="open-cap-reached"),
    pytest.param(2, 2, 2.0, [10.0, 10.0, 10.0], 10.0, False, 12.0,
                 id="moving-beyond-max-after-waiting-streams-woke"),
    pytest.param(1, 1, 2.0, [7.0], 10.0, True, None, id="single-slot-lent"),
]


@pytest.mark.parametrize("max_streams,max_waiting,idle_after,last_reads,now,may,change", CASES)
def test_may_start_and_next_change(max_streams, max_waiting, idle_after, last_reads, now, may, change):
    slots = slots_with(SlotPolicy(max_streams, max_waiting, idle_after), last_reads)
    assert slots.may_start(now) is may
    if not may:
        assert slots.next_change(now) == change
        if change is not None:
            assert not slots.may_start(change - 1e-6) and slots.may_start(change)


def test_a_read_makes_a_waiting_stream_move_and_closing_frees_its_slot():
    slots = slots_with(SlotPolicy(1, 1, 2.0), [0.0])
    assert slots.may_start(5.0)  # e0 waits: its slot is lent
    slots.opened("e1", 5.0)
    slots.read("e0", 5.5)  # the quiet follow brings lines again
    assert slots.moving(5.5) == 2 and not slots.may_start(5.5)
    assert slots.next_change(5.5) is None  # open cap (2) reached: only a close makes room
    slots.closed("e1")
    assert slots.open == 1 and not slots.may_start(5.5)  # e0 moves: it holds the one slot
    assert slots.next_change(5.5) == 7.5
    slots.read("gone", 6.0)  # a stream the slots do not know is ignored
    assert slots.open == 1


@pytest.mark.parametrize("running,index", [
    pytest.param([False, False], 0, id="all-finished-submit-order"),
    pytest.param([False, True, True], 1, id="first-running"),
    pytest.param([True, False], 0, id="running-first-in-place"),
    pytest.param([], 0, id="empty-is-the-callers-problem"),
])
def test_next_job_prefers_running_pods(running, index):
    assert next_job(running) == index


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        SlotPolicy(0)
    with pytest.raises(ValueError):
        SlotPolicy(1, -1)
    with pytest.raises(ValueError):
        SlotPolicy(1, 1, 0.0)
