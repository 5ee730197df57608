"""Metrics, traces and logs of a gateway process."""
