"""The committed offset is the highest contiguous completed one, whatever the completion order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.kafka.offsets import OffsetTracker, PartitionOffsets


def test_gap_holds_the_commit_back_until_filled() -> None:
    offsets = PartitionOffsets()
    for offset in (10, 11, 12):
        offsets.start(offset)
    offsets.finish(12)
    offsets.finish(11)
    assert offsets.committable() is None
    offsets.finish(10)
    assert offsets.committable() == 13


def test_offset_gaps_in_the_log_do_not_block() -> None:
    offsets = PartitionOffsets()
    for offset in (5, 9, 40):  # compaction or transaction markers leave holes
        offsets.start(offset)
    offsets.finish(5)
    offsets.finish(9)
    assert offsets.committable() == 10
    offsets.mark_committed(10)
    assert offsets.committable() is None
    offsets.finish(40)
    assert offsets.committable() == 41


def test_offsets_must_increase() -> None:
    offsets = PartitionOffsets()
    offsets.start(3)
    with pytest.raises(ValueError):
        offsets.start(3)


def test_revoked_partition_is_forgotten_and_late_finishes_ignored() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.start("p0", 0)
    tracker.start("p1", 0)
    tracker.finish("p1", 0)
    tracker.forget({"p0"})
    tracker.finish("p0", 0)  # an in-flight record of a revoked partition finishing late
    assert tracker.committable() == {"p1": 1}
    assert tracker.in_flight() == 0


@given(
    st.integers(min_value=1, max_value=60).flatmap(lambda n: st.permutations(range(n))), st.integers(0, 59)
)
def test_commit_never_passes_an_unfinished_offset(order: list[int], stop_after: int) -> None:
    """Finish a random prefix of a random completion order: the commit covers exactly the contiguous run."""
    offsets = PartitionOffsets()
    for offset in range(len(order)):
        offsets.start(offset)
    finished = set(order[: stop_after + 1])
    for offset in order[: stop_after + 1]:
        offsets.finish(offset)
    contiguous = 0
    while contiguous in finished:
        contiguous += 1
    assert offsets.committable() == (contiguous if contiguous else None)
    assert offsets.in_flight == len(order) - contiguous
