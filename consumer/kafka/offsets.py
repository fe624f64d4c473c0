"""Which offset may be committed, when records of a partition finish out of order.

Records run concurrently, so record 12 may be published before record 10. Committing 13 then
would lose 10 and 11 on a crash; the safe commit is one past the highest offset below which
every started record has finished. Pure data structures, no Kafka types.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


class PartitionOffsets:
    """Started-but-unfinished offsets of one partition, in the order they were fetched."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        self._next_commit: int | None = None
        self._committed: int | None = None

    def start(self, offset: int) -> None:
        if self._order and offset <= self._order[-1]:
            raise ValueError(f"offset {offset} started after {self._order[-1]}; offsets must increase")
        if not self._order and self._next_commit is not None and offset < self._next_commit:
            raise ValueError(f"offset {offset} started after {self._next_commit - 1} completed")
        self._order.append(offset)

    def finish(self, offset: int) -> None:
        self._done.add(offset)
        while self._order and self._order[0] in self._done:
            head = self._order.popleft()
            self._done.discard(head)
            self._next_commit = head + 1

    @property
    def in_flight(self) -> int:
        return len(self._order)

    def committable(self) -> int | None:
        """The offset to commit (next to read) if it moved since the last ``mark_committed``."""
        if self._next_commit is None or self._next_commit == self._committed:
            return None
        return self._next_commit

    def mark_committed(self, offset: int) -> None:
        self._committed = offset

    @property
    def committed(self) -> int | None:
        """The last offset this process committed for the partition, if any."""
        return self._committed


class OffsetTracker(Generic[P]):
    """PartitionOffsets for every assigned partition."""

    def __init__(self) -> None:
        self._partitions: dict[P, PartitionOffsets] = {}

    def start(self, partition: P, offset: int) -> None:
        self._partitions.setdefault(partition, PartitionOffsets()).start(offset)

    def finish(self, partition: P, offset: int) -> None:
        tracked = self._partitions.get(partition)
        if tracked is not None:  # a partition revoked mid-flight is simply forgotten
            tracked.finish(offset)

    def in_flight(self, partition: P | None = None) -> int:
        if partition is not None:
            tracked = self._partitions.get(partition)
            return tracked.in_flight if tracked else 0
        return sum(p.in_flight for p in self._partitions.values())

    def committable(self, partitions: set[P] | None = None) -> dict[P, int]:
        offsets = {}
        for partition, tracked in self._partitions.items():
            if partitions is not None and partition not in partitions:
                continue
            offset = tracked.committable()
            if offset is not None:
                offsets[partition] = offset
        return offsets

    def mark_committed(self, offsets: dict[P, int]) -> None:
        for partition, offset in offsets.items():
            tracked = self._partitions.get(partition)
            if tracked is not None:
                tracked.mark_committed(offset)

    def committed(self, partition: P) -> int | None:
        tracked = self._partitions.get(partition)
        return tracked.committed if tracked else None

    def forget(self, partitions: set[P]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)

    def partitions(self) -> list[P]:
        return list(self._partitions)
