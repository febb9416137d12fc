"""The device certificate authority (X.509 with `cryptography`) and the certificates it issued."""
