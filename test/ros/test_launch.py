"""launch/pose.launch.py with stand-ins for the launch API (launch and launch_ros are not
installable here): it must start the same executable the console script installs, with the
package's params file, the input remappings, and only the parameters given on the command line."""

from __future__ import annotations

import importlib.util
import sys
import types
from importlib.metadata import entry_points

import pytest


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture()
def launch_module(monkeypatch, repo_root):
    fakes = {name: types.ModuleType(name) for name in ("launch", "launch.actions", "launch_ros", "launch_ros.actions")}
    fakes["launch"].LaunchDescription = type("LaunchDescription", (Recorded,), {})
    fakes["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (Recorded,), {})
    fakes["launch.actions"].OpaqueFunction = type("OpaqueFunction", (Recorded,), {})
    fakes["launch_ros.actions"].Node = type("Node", (Recorded,), {})
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setitem(sys.modules, "ament_index_python", None)  # a source checkout: no ament index
    spec = importlib.util.spec_from_file_location("pose_launch", repo_root / "launch" / "pose.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _start(module, given: dict):
    description = module.generate_launch_description()
    actions = description.args[0]
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions if type(a).__name__ == "DeclareLaunchArgument"}
    opaque = [a for a in actions if type(a).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    context = types.SimpleNamespace(launch_configurations={**declared, **given})
    (node,) = opaque[0].kwargs["function"](context)
    return declared, node.kwargs


def test_launch_starts_the_console_scripts_executable_with_params_and_remappings(launch_module, repo_root):
    from dsc_pose_ros.params import PARAMETERS

    declared, node = _start(launch_module, {"image": "/cam/image", "camera_info": "/cam/info",
                                            "detections": "/det", "device": "cuda", "refine_iterations": "2",
                                            "score_threshold": "1", "publish_tf": "false", "obj_ids": "5"})
    assert (node["package"], node["executable"], node["name"]) == ("dsc_pose_ros", "pose_node", "dsc_pose")
    params_file, overrides = node["parameters"]
    assert params_file == str(repo_root / "config" / "pose.yaml") == declared["params_file"]
    assert overrides == {"device": "cuda", "refine_iterations": 2, "score_threshold": 1.0, "publish_tf": False,
                         "obj_ids": "5"}
    assert node["remappings"] == [("image", "/cam/image"), ("camera_info", "/cam/info"), ("detections", "/det")]
    # every parameter is a launch argument
    assert {p.name for p in PARAMETERS} | {"params_file", "image", "camera_info", "detections"} == set(declared)
    # pose_node is the same entry point as dsc-pose-node
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["pose_node"] == scripts["dsc-pose-node"] == "dsc_pose_ros.node:main"


def test_launch_without_arguments_leaves_the_params_file_in_charge(launch_module):
    _, node = _start(launch_module, {})
    assert node["parameters"][1] == {}
    assert node["remappings"] == [("image", "image"), ("camera_info", "camera_info"), ("detections", "detections")]
