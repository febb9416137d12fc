"""The platform as a LoRaWAN 1.0.x network and application server behind Semtech UDP gateways."""
