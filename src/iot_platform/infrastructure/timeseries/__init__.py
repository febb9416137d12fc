"""Adapters of the ``TimeSeriesStore`` port: ``SqliteTimeSeriesStore`` (embedded, one file,
in ``sqlite``) and ``InfluxTimeSeriesStore`` (InfluxDB 1.8+ through its v2-compatible HTTP API,
in ``influx``). Import each from its module: the InfluxDB client (with aiohttp and reactivex)
costs a second of start-up that the embedded default should not pay."""
