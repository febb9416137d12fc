"""Device command use cases: issue, deliver, acknowledge, expire, and wait for an outcome."""
