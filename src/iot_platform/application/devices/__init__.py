"""Device management use cases: the commands, their handler, and the registry's query port."""
