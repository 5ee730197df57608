"""realtime_operator."""
