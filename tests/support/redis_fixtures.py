"""pytest fixtures for redis (see tests/conftest.py)."""

from __future__ import annotations
