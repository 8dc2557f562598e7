"""The pose node's parameters: one table (name, default, description, check) read by the node (to
declare and validate them), by ``launch/pose.launch.py`` (one launch argument each) and by the tests
(``config/pose.yaml`` must list exactly these). No ROS imports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# the pipeline's names and defaults (dsc_pose_core.defaults imports nothing: the launch file stays free of torch)
from dsc_pose_core import defaults
from dsc_pose_core.defaults import ALIGN_ORDERS, HYPOTHESES, INITIALISERS

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dsc_pose_ros"
NODE_NAME = "dsc_pose"
RELIABILITY = ("best_effort", "reliable")
SYNC_MODES = ("exact", "approximate")


class ParameterError(ValueError):
    """An unknown or invalid parameter value (the node refuses to start)."""


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None  # returns an error message or None


def _one_of(choices):
    return lambda v: None if v in choices else f"must be one of {list(choices)}"


def _device(value: str):
    return None if re.fullmatch(r"cpu|cuda(:\d+)?", value) else "must be cpu, cuda or cuda:N"


def _at_least(low):
    return lambda v: None if v >= low else f"must be >= {low}"


def _obj_ids(value: str):
    try:
        parse_obj_ids(value)
    except ValueError as exc:
        return str(exc)
    return None


def _pattern(value: str):
    if "{name}" not in value and "{id}" not in value:
        return "must contain {name} or {id}"
    try:
        value.format(name="x", id=1)
    except (KeyError, IndexError, ValueError) as exc:
        return f"is not a valid pattern ({exc})"
    return None


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("registry", "config/demo/objects.yaml",
              "object registry YAML (ids = the detector's class ids); relative paths: to the package root. "
              "Default: the embedded demo object (starts anywhere); LM-O: config/objects.yaml (config/lmo.yaml)"),
    Parameter("models_dir", "", "override the registry's models_dir ('' = the registry's own)"),
    Parameter("obj_ids", "", "objects to serve, e.g. '1,5' ('' = every registry object)", _obj_ids),
    Parameter("init", defaults.INIT, "initial pose: box (2D box only), dsc (DSC-PoseNet), self6d or templates "
              "(rendered templates matched in pretrained features; needs the segmentation checkpoint)",
              _one_of(INITIALISERS)),
    Parameter("checkpoints", "checkpoints/demo", "checkpoint folder of every method: dsc_posenet/obj_XXXXXX.pt (init dsc), "
              "self6d/obj_XXXXXX.pt (init self6d), deepim.pt, segmentation/lmo_seg.pt"),
    Parameter("deepim_checkpoint", "", "DeepIM checkpoint ('' = <checkpoints>/deepim.pt); needed when refining"),
    Parameter("refine_iterations", defaults.REFINE_ITERATIONS, "DeepIM iterations per frame (0 = no refinement; the paper uses 2-4)",
              _at_least(0)),
    Parameter("align", defaults.ALIGN, "training-free render-and-compare alignment of each pose: off, before or after "
              "DeepIM (alone when refine_iterations is 0)", _one_of(ALIGN_ORDERS)),
    Parameter("align_hypotheses", defaults.ALIGN_HYPOTHESES, "rotations the aligner tries besides the initial one: none, "
              "flips, cube24 (for the box initialiser) or templates (the pose of rendered templates matched in "
              "pretrained features; needs the segmentation checkpoint)", _one_of(HYPOTHESES)),
    Parameter("align_colour", defaults.ALIGN_COLOUR, "weight of the aligner's appearance term (the model's vertex "
              "colours against the image; helps from rotations near the truth: init templates)", _at_least(0.0)),
    Parameter("segmentation_checkpoint", "", "the mask network of the aligner and the templates initialiser ('' = "
              "<checkpoints>/segmentation/lmo_seg.pt); needed when aligning or with init templates"),
    Parameter("template_cache", defaults.TEMPLATE_CACHE, "init templates: folder where the rendered template banks are "
              "kept between starts ('' = build them at every start, ~35 s per object on 2 cores)"),
    Parameter("tracking", defaults.TRACKING, "a confident pose of the previous frame starts the refiners instead of the "
              "initialiser (instances matched by class and box); needs align or refine_iterations > 0"),
    Parameter("tracking_min_score", defaults.TRACKING_MIN_SCORE, "tracking: poses at least this confident continue their track",
              lambda v: None if 0.0 <= v <= 1.0 else "must be in [0, 1]"),
    Parameter("tracking_smoothing", defaults.TRACKING_SMOOTHING, "tracking: weight of the previous pose in the published one (0 = none)",
              lambda v: None if 0.0 <= v < 1.0 else "must be in [0, 1)"),
    Parameter("box_templates", 0, "box initialiser: viewpoints scored against the box (0 = canonical rotation)",
              _at_least(0)),
    Parameter("device", "cpu", "torch device: cpu or cuda[:N] (cuda falls back to cpu with a warning)",
              _device),
    Parameter("threads", 1, "torch CPU threads (0 = torch's default)", _at_least(0)),
    Parameter("max_detections", 16, "most detections estimated per frame, the highest scores first (0 = no "
              "limit): bounds the work one frame may ask for", _at_least(0)),
    Parameter("max_stamp_ahead_s", 10.0, "messages stamped more than this ahead of the node's clock are ignored "
              "(0 = no limit)", _at_least(0.0)),
    Parameter("score_threshold", defaults.SCORE_THRESHOLD, "estimates with a lower confidence are not published", _at_least(0.0)),
    Parameter("sync", "exact", "match image, camera_info and detections by exact stamp or approximately",
              _one_of(SYNC_MODES)),
    Parameter("sync_tolerance_s", 0.01, "approximate sync: largest stamp difference (s)", _at_least(0.0)),
    Parameter("qos_reliability", "best_effort", "input QoS reliability: best_effort (sensor data) or reliable",
              _one_of(RELIABILITY)),
    Parameter("qos_depth", 5, "input QoS history depth", _at_least(1)),
    Parameter("object_frame_pattern", "dsc_pose/{name}", "TF child frame per object ({name}, {id})", _pattern),
    Parameter("publish_tf", True, "broadcast image frame -> object frame on /tf"),
    Parameter("publish_poses", True, "publish ~/pose/<object name> (geometry_msgs/PoseStamped)"),
    Parameter("class_id_names", False, "Detection3D class ids as registry names instead of numeric ids"),
    Parameter("debug_image", True, "publish ~/debug_image (contours and axes) while someone subscribes"),
    Parameter("markers", True, "publish ~/markers (the meshes as visualization_msgs/MarkerArray) while subscribed"),
    Parameter("stats_period_s", 5.0, "log and publish latency / drop statistics every this many seconds",
              _at_least(0.1)),
)
BY_NAME = {p.name: p for p in PARAMETERS}


def parse_obj_ids(text: str) -> list[int]:
    text = str(text).replace(" ", "")
    if not text:
        return []
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def validate(values: dict[str, Any]) -> dict[str, Any]:
    """Check types (same type as the default; ints accepted for floats) and each check; returns the
    values; raises :class:`ParameterError` listing every problem."""
    problems = []
    for name in values:
        if name not in BY_NAME:
            problems.append(f"unknown parameter {name!r}")
    for param in PARAMETERS:
        value = values.get(param.name, param.default)
        expected = type(param.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            values[param.name] = value
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            problems.append(f"{param.name}: expected {expected.__name__}, got {value!r}")
            continue
        message = param.check(value) if param.check else None
        if message:
            problems.append(f"{param.name}={value!r} {message}")
    if problems:
        raise ParameterError("invalid parameters: " + "; ".join(problems))
    return values


def package_root() -> Path:
    """Where ``config/`` and ``checkpoints/`` live: the source checkout this module runs from, else the
    package's share directory in a ROS 2 install space (``colcon build``: found through the ament index
    of ``AMENT_PREFIX_PATH``, i.e. after sourcing the workspace's ``install/setup.sh``)."""
    if (REPO_ROOT / "config" / "pose.yaml").is_file():
        return REPO_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # ament_index missing or this package not in any install space
        return REPO_ROOT


def resolve_path(path: str) -> Path:
    """Relative paths are relative to the package root (:func:`package_root`: the checkout, or the
    install space's share/dsc_pose_ros)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else package_root() / p
