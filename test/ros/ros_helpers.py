"""Helpers shared by the ROS 2 tests (not a test module)."""

from __future__ import annotations

import importlib

import pytest


def require_ros(*modules: str):
    """Import and return the given modules; fail the test (not skip) if the ROS runtime is missing."""
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except Exception as exc:  # ImportError, or a broken native extension
            pytest.fail(
                f"ROS 2 runtime not available ({name}: {exc!r}); run scripts/setup_ros.sh "
                f"and use the project venv's python"
            )
    return loaded[0] if len(loaded) == 1 else loaded
