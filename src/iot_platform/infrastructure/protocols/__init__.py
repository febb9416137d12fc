"""Device protocols the platform speaks itself (beyond MQTT, which has its own package)."""
