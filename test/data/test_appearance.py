"""Per-object appearance randomisation of synthetic renders (dsc-pose-synth --object-jitter)."""

from __future__ import annotations

import numpy as np

from dsc_pose_core.data.synthetic import jitter_instances


def test_each_instance_gets_its_own_colour_change_and_the_rest_is_untouched():
    rgb = np.full((20, 30, 3), 120.0, np.float32)
    instance = np.zeros((20, 30), np.int32)
    instance[2:8, 2:10] = 1
    instance[10:18, 15:28] = 2
    out = jitter_instances(rgb, instance, np.random.default_rng(0), 0.3)
    assert np.array_equal(out[instance == 0], rgb[instance == 0])
    one, two = out[instance == 1], out[instance == 2]
    assert np.allclose(one, one[0]) and np.allclose(two, two[0])  # one change per instance
    assert not np.allclose(one[0], two[0]) and not np.allclose(one[0], 120.0)
    assert out.min() >= 0 and out.max() <= 255
    again = jitter_instances(rgb, instance, np.random.default_rng(0), 0.3)
    assert np.array_equal(out, again)  # seeded
    assert np.allclose(jitter_instances(rgb, instance, np.random.default_rng(1), 0.0), rgb)  # strength 0: no change


def test_strength_bounds_the_change():
    rng = np.random.default_rng(3)
    rgb = rng.uniform(50, 200, (16, 16, 3)).astype(np.float32)
    instance = np.ones((16, 16), np.int32)
    for seed in range(10):
        out = jitter_instances(rgb, instance, np.random.default_rng(seed), 0.1)
        assert np.abs(out - rgb).max() < 0.1 * 255 + 0.25 * 200  # gain, offset and saturation of 10 %
