"""Telemetry: readings in (every protocol feeds one use case), time series and queries out."""
