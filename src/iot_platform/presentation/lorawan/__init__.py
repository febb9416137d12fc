"""The LoRaWAN side devices face: the gateways' UDP endpoint (Semtech GWMP), the network server
that turns their frames into readings, ChirpStack uplinks, and the payload codecs."""
