"""Checkpointed subscribers that keep SQL read models in step with the event store."""
