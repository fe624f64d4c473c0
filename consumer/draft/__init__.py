"""Drafted replies (``ticket-router draft``): a first reply per routed ticket, for an agent to review.

``handlers`` picks the taxonomy handler for a routed ticket, ``prompt`` builds what the model is sent
(pure), ``writer`` makes the Messages API call with bounded retries, ``processor`` turns one queue
record into an ``Outcome`` for the router's own Kafka loop, and ``service`` wires it all together.
"""
