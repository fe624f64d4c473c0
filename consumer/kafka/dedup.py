"""A bounded memory of recently handled ``event_id``s, to skip redeliveries cheaply.

At-least-once delivery means a record can come back (a retry by the producer, a rebalance
before a commit). Remembering the last N event ids in this process catches the common cases
without a store; after a restart the memory is empty and a redelivered event is handled again,
which is why the guarantee stays at-least-once.
"""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def check_and_add(self, event_id: str) -> bool:
        """True when ``event_id`` was seen within the window; remembers it either way."""
        if self.capacity <= 0:
            return False
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._ids)
