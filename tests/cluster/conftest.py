"""Cluster tier: the fixtures (``kube``, ``kube_namespace``, ``kube_api``, ``helm_bin``) come from
tests/support/kube_fixtures.py, loaded for the whole suite by tests/conftest.py."""

from __future__ import annotations
