"""The duplicate window: behaves exactly like a dictionary of the last N distinct ids in order of first
sighting, while its memory is fixed when it is made."""

from __future__ import annotations

import tracemalloc
from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.kafka.dedup import RecentIds, id_digest, index_size


class ReferenceWindow:
    """The obvious implementation the compact one must agree with."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, event_id: str) -> bool:
        if self.capacity <= 0:
            return False
        if event_id in self.ids:
            return True
        self.ids[event_id] = None
        while len(self.ids) > self.capacity:
            self.ids.popitem(last=False)
        return False


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(min_value=0, max_value=9),
    ids=st.lists(st.sampled_from([f"E-{n}" for n in range(14)]), max_size=120),
)
def test_agrees_with_a_first_in_first_out_dictionary(capacity: int, ids: list[str]) -> None:
    """Few distinct ids in a small window: ids evicted, seen again and re-added in every order, and
    crowded index slots (probe chains that wrap and are closed up after removals)."""
    compact, reference = RecentIds(capacity), ReferenceWindow(capacity)
    for event_id in ids:
        assert compact.check_and_add(event_id) == reference.check_and_add(event_id), event_id
        assert len(compact) == len(reference.ids)
    assert {f"E-{n}" for n in range(14) if f"E-{n}" in compact} == set(reference.ids)


def test_the_window_is_bounded_and_the_first_seen_leaves_first() -> None:
    recent = RecentIds(3)
    assert [recent.check_and_add(i) for i in ("a", "b", "a", "c", "d")] == [False, False, True, False, False]
    assert len(recent) == 3
    assert recent.check_and_add("a") is False  # a was first seen before b and c: it left first
    assert recent.check_and_add("c") is True
    assert RecentIds(0).check_and_add("a") is False and RecentIds(0).check_and_add("a") is False
    assert 42 not in recent  # only strings are ids


def test_a_long_run_allocates_nothing_after_the_window_is_made() -> None:
    """The soak's concern: 50,000 distinct ids through a window of 10,000 leave memory where the
    empty window had it (a dictionary of strings would have grown by about 1.8 MB)."""
    tracemalloc.start()
    try:
        recent = RecentIds(10_000)
        made, _ = tracemalloc.get_traced_memory()
        for n in range(50_000):
            recent.check_and_add(f"event-{n:08d}")
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(recent) == 10_000
    assert after - made < 4_096, after - made
    assert "event-00049999" in recent and "event-00039999" not in recent


def test_index_is_at_most_half_full_and_digests_are_wide() -> None:
    assert [index_size(n) for n in (1, 2, 3, 100_000)] == [2, 4, 8, 262_144]
    low, high = id_digest("E-1")
    assert (low, high) != id_digest("E-2") and max(low, high) >= 2**32  # two 64-bit halves
