"""Kafka at the edges: the consume-classify-publish loop, offsets, topics and duplicates.

Also the connection settings and the embedded broker for local runs and tests.
"""
