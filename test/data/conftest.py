"""Fixtures for the synthetic-data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth_testlib import make_models_dir


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    return make_models_dir(tmp_path_factory.mktemp("tiny_models"))
