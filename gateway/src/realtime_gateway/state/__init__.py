"""Shared state behind one interface: Redis in production, in-process memory in embedded mode."""
