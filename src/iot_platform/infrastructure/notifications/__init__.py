"""Alert channels that leave the process: webhooks and MQTT."""
