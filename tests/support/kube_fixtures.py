"""pytest fixtures for kube (see tests/conftest.py)."""

from __future__ import annotations
