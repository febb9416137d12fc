"""Use cases and the ports (typing.Protocol) that infrastructure implements."""
