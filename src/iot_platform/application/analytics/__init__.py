"""Fleet analytics: overview counts, statistics of latest values, and anomaly detection."""
