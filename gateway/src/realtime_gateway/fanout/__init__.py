"""Cross-instance fan-out: per-room channels over Redis 7 sharded pub/sub."""
