"""Benchmarks of the gateway against a Node socket.io reference (run with ``bench/run``)."""
