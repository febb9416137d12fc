"""The event store adapter and the event (de)serialization it uses."""
