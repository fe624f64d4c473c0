"""Reading a topic to its end, for consumers without a group (the learner, the tools)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition


async def caught_up(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition]) -> bool:
    """Every partition read up to the high watermark its last fetch reported: the one end figure
    that is right on Kafka and on Tansu (``end_offsets`` is not), and reached even when the last
    records were deleted or compacted away. False before the first fetch of a partition."""
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
