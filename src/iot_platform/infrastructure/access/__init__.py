"""Credential stores and token signing."""
