"""Prometheus metrics shared by the gateway and the worker (each exposes its own /metrics)."""

from prometheus_client import Counter, Histogram

INBOUND = Counter("nudge_inbound_messages_total", "Inbound messages accepted", ["channel"])
INBOUND_DUPLICATES = Counter("nudge_inbound_duplicates_total", "Inbound messages dropped as duplicates",
                             ["channel"])
OUTBOUND = Counter("nudge_outbound_messages_total", "Outbound messages handed to a transport",
                   ["channel", "template"])
ENGINE_LATENCY = Histogram(
    "nudge_engine_latency_seconds", "Round trip to the Rasa engine", ["op"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 5, 10, 30),
)
PROCESSING_LATENCY = Histogram(
    "nudge_inbound_processing_seconds", "From acceptance of an inbound message to its replies sent",
    buckets=(0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 2, 5, 10, 30, 60),
)
