"""Fixtures for the renderer tests: LM-O scene (val split only) and a shared fast renderer."""

from __future__ import annotations

import pytest

from render_testlib import LMO_OBJECTS, LmoScene


@pytest.fixture(scope="session")
def lmo(lmo_root) -> LmoScene:
    return LmoScene(lmo_root)


@pytest.fixture(scope="session")
def fast_renderer():
    from dsc_pose_core.render import FastRenderer

    renderer = FastRenderer(640, 480)
    yield renderer
    renderer.close()


@pytest.fixture(scope="session")
def lmo_fast_renderer(lmo, fast_renderer):
    """The session renderer with all eight LM-O meshes (full resolution) uploaded."""
    for obj_id in LMO_OBJECTS:
        if obj_id not in fast_renderer.object_ids:
            fast_renderer.add_object(obj_id, lmo.mesh(obj_id))
    return fast_renderer

