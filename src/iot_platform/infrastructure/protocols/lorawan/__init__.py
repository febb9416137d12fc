"""Where LoRaWAN sessions (keys, counters) and gateways are kept; the network server and the
gateways' UDP endpoint that use them are in ``presentation.lorawan``."""
