"""realtime_gateway."""

from realtime_gateway.compiled import prefer_fresh_sources

prefer_fresh_sources()
