"""Fixtures for the ROS 2 tests: a private, local-only ROS environment per test session.

Tests here that need the ROS runtime FAIL (never skip) when it is missing; run
``scripts/setup_ros.sh`` first (see docs/ROS_SETUP.md).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

from dsc_pose_ros.ros_env import DOMAIN_ID_RANGE, apply_ros_env

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # lets tests import the peer helper module
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session", autouse=True)
def ros_session_env(tmp_path_factory):
    """Apply the ROS env for the whole session: random ROS_DOMAIN_ID, temp ROS_LOG_DIR.

    Returns the applied variables; restores os.environ afterwards.
    """
    saved = dict(os.environ)
    applied = apply_ros_env(
        domain_id=random.SystemRandom().randint(*DOMAIN_ID_RANGE),
        log_dir=tmp_path_factory.mktemp("ros_log"),
    )
    try:
        yield dict(applied)
    finally:
        os.environ.clear()
        os.environ.update(saved)
