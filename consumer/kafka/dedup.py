"""A bounded memory of recently handled ``event_id``s, to skip redeliveries cheaply.

At-least-once delivery means a record can come back (a retry by the producer, a rebalance
before a commit). Remembering the last N event ids in this process catches the common cases
without a store; after a restart the memory is empty and a redelivered event is handled again,
which is why the guarantee stays at-least-once.

The window is allocated whole when it is made and never grows: an id is kept as a 128-bit digest in
flat arrays (a ring in arrival order and an open-addressing index into it), 20 bytes an id plus the
index, instead of a Python string and a linked dictionary node (about 185 bytes). A full window of
DEDUP_WINDOW = 100,000 ids is 2.6 MB from the first ticket on, so a long run's memory stays flat.
The digest is wide on purpose: two ids sharing one would make the second a "duplicate" and skip
a ticket; at 128 bits the chance within a window of 100,000 is about 10⁻²⁹.
"""

from __future__ import annotations

import hashlib
from array import array

_EMPTY = 0
"""An index slot that points nowhere; occupied slots hold a ring position plus one."""


def id_digest(event_id: str) -> tuple[int, int]:
    """The id's 128-bit BLAKE2b digest as two 64-bit halves (the low half also picks the index slot)."""
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


def index_size(capacity: int) -> int:
    """A power of two at least twice the capacity: linear probing stays short at half load or less."""
    size = 1
    while size < 2 * capacity:
        size *= 2
    return size


class RecentIds:
    """The last ``capacity`` distinct ids, in the order they were first seen: the oldest leaves
    first, and seeing an id again does not move it (a redelivery comes soon after the first delivery,
    or after a restart that emptied the window anyway). Membership is ``in``; ``add`` remembers;
    ``check_and_add`` does both."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        ring = max(1, self.capacity)
        self._low = array("Q", bytes(8 * ring))
        self._high = array("Q", bytes(8 * ring))
        self._index = array("I", bytes(4 * index_size(ring)))
        self._mask = len(self._index) - 1
        self._next = 0  # the ring position written next; once the ring is full, also the oldest
        self._filled = 0  # ids remembered (at most capacity)

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._find(id_digest(event_id))[1] >= 0

    def __len__(self) -> int:
        return self._filled

    def add(self, event_id: str) -> None:
        """Remembers the id as the newest; one already remembered keeps its place."""
        self.check_and_add(event_id)

    def check_and_add(self, event_id: str) -> bool:
        """True when ``event_id`` was seen within the window; remembers it either way."""
        if self.capacity == 0:
            return False
        digest = id_digest(event_id)
        if self._find(digest)[1] >= 0:
            return True
        self._evict_oldest()
        self._write(*digest)
        return False

    def _find(self, digest: tuple[int, int]) -> tuple[int, int]:
        """(index slot, ring position) of the digest, or (the empty slot where it would go, -1)."""
        low, high = digest
        slot = low & self._mask
        while (entry := self._index[slot]) != _EMPTY:
            position = entry - 1
            if self._low[position] == low and self._high[position] == high:
                return slot, position
            slot = (slot + 1) & self._mask
        return slot, -1

    def _evict_oldest(self) -> None:
        """Frees the ring position about to be overwritten: its id leaves the index."""
        if self._filled < self.capacity:
            return
        slot, _ = self._find((self._low[self._next], self._high[self._next]))
        self._index[slot] = _EMPTY
        self._backfill(slot)

    def _write(self, low: int, high: int) -> None:
        position = self._next
        self._low[position] = low
        self._high[position] = high
        slot, _ = self._find((low, high))
        self._index[slot] = position + 1
        self._next = (position + 1) % self.capacity
        self._filled = min(self._filled + 1, self.capacity)

    def _backfill(self, hole: int) -> None:
        """Closes the hole a removal left in a probe chain (backward-shift deletion), so a later
        lookup never stops at it before reaching an id stored further along."""
        slot = hole
        while True:
            slot = (slot + 1) & self._mask
            entry = self._index[slot]
            if entry == _EMPTY:
                return
            home = self._low[entry - 1] & self._mask
            if (slot - home) & self._mask >= (slot - hole) & self._mask:
                self._index[hole] = entry
                self._index[slot] = _EMPTY
                hole = slot
