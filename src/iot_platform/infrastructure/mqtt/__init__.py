"""MQTT broker integration: the embedded broker for the one-machine setup."""
