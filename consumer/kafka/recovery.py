"""Getting a consumer group out of a rebalance that cannot finish.

Tansu 0.6.0 (the embedded broker) keeps the leader of a forming generation when that leader
sends LeaveGroup: every later JoinGroup names the departed member as leader, only the leader's
SyncGroup can form the group, so the remaining members loop through JoinGroup and a failing
SyncGroup for ever, and even brand-new members join the same dead end. It happens when the
member the broker made leader stops before its SyncGroup went through, e.g. two routers scaled
in at once. The broker clears a leader only when it evicts it as a member for missed heartbeats,
so the recovery is to make it a member again: one JoinGroup under the departed leader's id, never
heartbeated, which the broker then evicts after a session timeout, leadership included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.client import CoordinationType
from aiokafka.coordinator.protocol import ConsumerProtocol
from aiokafka.errors import MemberIdRequired
from aiokafka.protocol.admin import DescribeGroupsRequest
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest

log = logging.getLogger(__name__)


def orphaned_leader(leader: str, members: Collection[str]) -> bool:
    """Whether ``leader`` leads a group it is not a member of: no one can finish that rebalance.

    A coordinator that works never answers like this, so acting on it cannot hurt a healthy group.
    """
    return bool(leader) and leader not in members


class _WatchedListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Passes the callbacks on, and tells the consumer when it is between revoke and assign."""

    def __init__(self, inner: ConsumerRebalanceListener | None, consumer: RecoveringConsumer) -> None:
        self.inner = inner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            if self.inner is not None:
                await self.inner.on_partitions_revoked(revoked)
        finally:  # the clock starts once the drain is over, and even if it failed
            self.consumer.rejoin_started()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.consumer.rejoin_finished()
        if self.inner is not None:
            await self.inner.on_partitions_assigned(assigned)


class RecoveringConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """An AIOKafkaConsumer that gets its group out of a rebalance that cannot finish.

    After revoking (or before its first join) the member waits for an assignment; when none comes
    within ``stuck_after_s`` (longer than any rebalance the coordinator allows), it asks the
    coordinator who leads the group and, if that leader is not a member, rejoins in its place once
    (see the module's docstring). It checks again every ``stuck_after_s`` until assigned.
    """

    def __init__(self, *, stuck_after_s: float, **options: Any) -> None:
        super().__init__(**options)
        self.stuck_after_s = stuck_after_s
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def subscribe(
        self,
        topics: Collection[str] = (),
        pattern: str | None = None,
        listener: ConsumerRebalanceListener | None = None,
    ) -> None:
        super().subscribe(topics, pattern=pattern, listener=_WatchedListener(listener, self))

    def rejoin_started(self) -> None:
        """The member gave up its partitions (or has none yet): from now on it waits for new ones
        (a revoke while stopping is the member leaving: nothing to wait for)."""
        if self._stopping:
            return
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_rejoin(), name="group-rejoin-watch")

    def rejoin_finished(self) -> None:
        """Assigned (or stopping): the group formed, nothing to watch."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def stop(self) -> None:
        self._stopping = True
        self.rejoin_finished()
        await super().stop()

    async def _watch_rejoin(self) -> None:
        while True:
            await asyncio.sleep(self.stuck_after_s)
            log.warning(
                "no partitions assigned %.0fs after the rebalance began; checking the group",
                self.stuck_after_s,
            )
            try:
                await self.release_orphaned_leader()
            except Exception as exc:  # a broken check must not end the watch: it is the way out
                log.warning("group check failed (%r); trying again in %.0fs", exc, self.stuck_after_s)

    async def release_orphaned_leader(self) -> bool:
        """If the group's leader is not a member, rejoin once under its id; True if it did."""
        node = await self._client.coordinator_lookup(CoordinationType.GROUP, self._group_id)
        probe = await self._join(node, "")
        if probe.error_code == MemberIdRequired.errno:
            probe = await self._join(node, probe.member_id)
        if probe.error_code != 0:
            log.warning("group check: JoinGroup answered error %d", probe.error_code)
            return False
        if probe.leader_id != probe.member_id:  # the probe leaves at once; a leader is left to expire
            await self._client.send(node, LeaveGroupRequest(self._group_id, probe.member_id))
        members = await self._group_members(node)
        if not orphaned_leader(probe.leader_id, members):
            return False
        log.warning(
            "group %s is led by %s, which left before the group formed; rejoining under its id so "
            "the coordinator evicts it and another member can lead",
            self._group_id,
            probe.leader_id,
        )
        await self._join(node, probe.leader_id)
        return True

    async def _join(self, node: int, member_id: str) -> Any:
        protocols = [
            (assignor.name, assignor.metadata(self.subscription()).encode())
            for assignor in self._partition_assignment_strategy
        ]
        request = JoinGroupRequest(
            self._group_id,
            self._session_timeout_ms,
            self._rebalance_timeout_ms,
            member_id,
            None,
            ConsumerProtocol.PROTOCOL_TYPE,
            protocols,
        )
        return await self._client.send(node, request)

    async def _group_members(self, node: int) -> set[str]:
        response = await self._client.send(node, DescribeGroupsRequest([self._group_id]))
        members: set[str] = set()
        for group in response.groups:
            members.update(member[0] for member in group[5])
        return members
