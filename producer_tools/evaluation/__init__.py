"""``ticket-tools evaluate`` internals: labeled data, metrics, the run over the pipeline, reports.

Split so that the metrics are pure functions tested on hand-computed examples, and the parts that
need the service (the pipeline) or optional libraries (matplotlib) stay at the edges.
"""
