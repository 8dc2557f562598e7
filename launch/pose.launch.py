"""Start the pose node ``dsc_pose``.

    ros2 launch dsc_pose_ros pose.launch.py \\
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info detections:=/detector/detections \\
        [params_file:=my_pose.yaml] [device:=cuda refine_iterations:=2 ...]

Every node parameter (dsc_pose_ros/params.py, defaults in config/pose.yaml) is also a launch
argument; only the ones given on the command line override the params file. Without a ROS 2
workspace (launch and launch_ros are not on PyPI) the same node starts with
``dsc-pose-node --ros-args --params-file config/pose.yaml -r image:=... -p name:=value``.
"""

import os

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from dsc_pose_ros.params import NODE_NAME, PARAMETERS, package_root, resolve_path

NOT_GIVEN = "__from_params_file__"
INPUTS = ("image", "camera_info", "detections")


def _share_dir() -> str:
    """The package root: the install space's share/dsc_pose_ros, or the source checkout."""
    return str(package_root())


def _typed(name: str, text: str):
    """A launch argument's text as the parameter's type (strings stay strings)."""
    default = next(p.default for p in PARAMETERS if p.name == name)
    if isinstance(default, str):
        return text
    value = yaml.safe_load(text)
    return float(value) if isinstance(default, float) and isinstance(value, int) else value


def _node(context):
    config = context.launch_configurations
    overrides = {p.name: _typed(p.name, config[p.name]) for p in PARAMETERS if config.get(p.name, NOT_GIVEN) != NOT_GIVEN}
    return [Node(package="dsc_pose_ros", executable="pose_node", name=NODE_NAME, output="screen",
                 # a relative params file (params_file:=config/lmo.yaml) is the package's own
                 parameters=[str(resolve_path(config["params_file"])), overrides],
                 remappings=[(topic, config[topic]) for topic in INPUTS])]


def generate_launch_description():
    arguments = [DeclareLaunchArgument("params_file", default_value=os.path.join(_share_dir(), "config", "pose.yaml"),
                                       description="node parameters (YAML with dsc_pose: ros__parameters:)")]
    arguments += [DeclareLaunchArgument(topic, default_value=topic, description=f"topic the node reads as '{topic}'")
                  for topic in INPUTS]
    arguments += [DeclareLaunchArgument(p.name, default_value=NOT_GIVEN, description=f"{p.description} "
                                        f"(default: the params file's, shipped {p.default!r})") for p in PARAMETERS]
    return LaunchDescription(arguments + [OpaqueFunction(function=_node)])
