"""Telemetry stream adapters: in-process (embedded default) and, later, Kafka."""
