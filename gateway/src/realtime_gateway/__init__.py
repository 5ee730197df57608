"""realtime_gateway."""
