"""Adapters of the ``TimeSeriesStore`` port: ``SqliteTimeSeriesStore`` (embedded, one file) and
``InfluxTimeSeriesStore`` (InfluxDB 1.8+ through its v2-compatible HTTP API)."""

from iot_platform.infrastructure.timeseries.influx import InfluxTimeSeriesStore
from iot_platform.infrastructure.timeseries.sqlite import SqliteTimeSeriesStore, sqlite_path

__all__ = ["InfluxTimeSeriesStore", "SqliteTimeSeriesStore", "sqlite_path"]
