import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def lmo_root_path() -> Path:
    return Path(os.environ.get("DSC_POSE_LMO", REPO_ROOT.parent / "shared" / "data" / "lmo"))


@pytest.fixture(scope="session")
def lmo_root() -> Path:
    """The real LM-O data under ../shared. In CI it is always present: missing data fails, never skips."""
    root = lmo_root_path()
    assert (root / "models" / "models_info.json").is_file(), f"LM-O data missing at {root} (set DSC_POSE_LMO)"
    return root
