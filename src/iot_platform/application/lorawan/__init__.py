"""LoRaWAN devices and gateways: registration with keys, sessions, payload decoders."""
