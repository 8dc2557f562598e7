"""The interface types we use must be wire-identical to the ROS 2 distribution's.

The RIHS01 type hash (REP-2011) covers every field name, type and order of a message and of all
messages it contains, so one wrong field anywhere below Detection3DArray changes it.
Two independent views are checked: the hash the middleware actually advertises for a live
publisher, and the hash recorded in the installed type description (share/<pkg>/msg/<T>.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ros_helpers import require_ros

EXPECTED = {
    "vision_msgs/msg/Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "tf2_msgs/msg/TFMessage": "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
    # from the PyPI wheels; a control that the hashing itself is what ROS 2 uses
    "sensor_msgs/msg/Image": "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47",
}


def _msg_class(type_name: str):
    pkg, _, name = type_name.split("/")
    module = require_ros(f"{pkg}.msg")
    return getattr(module, name)


@pytest.fixture(scope="module")
def node():
    rclpy = require_ros("rclpy")
    context = rclpy.Context()
    rclpy.init(context=context)
    n = rclpy.create_node("dsc_pose_type_hash_probe", context=context)
    try:
        yield n
    finally:
        n.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.parametrize("type_name", sorted(EXPECTED))
def test_advertised_type_hash(node, type_name):
    """Hash that the rmw puts on the wire for a publisher of this type."""
    cls = _msg_class(type_name)
    topic = "/dsc_pose_hash_probe/" + type_name.replace("/", "_")
    pub = node.create_publisher(cls, topic, 1)
    try:
        infos = node.get_publishers_info_by_topic(topic)
        assert len(infos) == 1, infos
        assert infos[0].topic_type == type_name
        assert str(infos[0].topic_type_hash) == EXPECTED[type_name]
    finally:
        node.destroy_publisher(pub)


@pytest.mark.parametrize("type_name", sorted(EXPECTED))
def test_installed_type_description_hash(type_name):
    packages = require_ros("ament_index_python.packages")
    pkg, kind, name = type_name.split("/")
    share = Path(packages.get_package_share_directory(pkg))
    desc = json.loads((share / kind / f"{name}.json").read_text())
    hashes = {h["type_name"]: h["hash_string"] for h in desc["type_hashes"]}
    assert hashes[type_name] == EXPECTED[type_name]
    # the class we import is the one that description belongs to
    cls = _msg_class(type_name)
    fields = [f["name"] for f in desc["type_description_msg"]["type_description"]["fields"]]
    assert fields == list(cls.get_fields_and_field_types())


def test_message_shapes():
    """Field-level spot checks of the vision_msgs 4.x / tf2_msgs layout used by dsc_pose."""
    vision = require_ros("vision_msgs.msg")
    tf2 = require_ros("tf2_msgs.msg")
    assert list(vision.Detection3D.get_fields_and_field_types()) == ["header", "results", "bbox", "id"]
    assert list(vision.Detection2D.get_fields_and_field_types()) == ["header", "results", "bbox", "id"]
    assert vision.ObjectHypothesisWithPose.get_fields_and_field_types() == {
        "hypothesis": "vision_msgs/ObjectHypothesis",
        "pose": "geometry_msgs/PoseWithCovariance",
    }
    assert vision.ObjectHypothesis.get_fields_and_field_types() == {"class_id": "string", "score": "double"}
    assert vision.BoundingBox2D.get_fields_and_field_types() == {
        "center": "vision_msgs/Pose2D",
        "size_x": "double",
        "size_y": "double",
    }
    assert vision.VisionClass.get_fields_and_field_types() == {"class_id": "uint16", "class_name": "string"}
    assert tf2.TFMessage.get_fields_and_field_types() == {"transforms": "sequence<geometry_msgs/TransformStamped>"}
    assert (tf2.TF2Error.NO_ERROR, tf2.TF2Error.TRANSFORM_ERROR) == (0, 6)
