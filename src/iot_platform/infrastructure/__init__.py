"""Adapters: each implements an application port with one technology."""
