"""Real ROS 2 traffic between two separate processes, kept on the local host.

Also checks the local-only configuration itself: the Fast DDS profile (config/fastdds.xml) and
the environment from dsc_pose_ros.ros_env.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import ros_peer
from dsc_pose_ros.ros_env import DOMAIN_ID_RANGE, fastdds_profile, ros_env, shm_segment_bytes, subprocess_env
from ros_helpers import require_ros

PEER = Path(ros_peer.__file__).resolve()
TIMEOUT_S = 30
NS = {"d": "http://www.eprosima.com"}


def _ephemeral_ports() -> range:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except OSError:
        lo, hi = 32768, 60999
    return range(lo, hi + 1)


def test_image_and_detections_round_trip(ros_session_env):
    require_ros("rclpy", "sensor_msgs.msg", "vision_msgs.msg")  # fail fast and clearly
    env = subprocess_env()
    assert env["ROS_DOMAIN_ID"] == ros_session_env["ROS_DOMAIN_ID"]
    sub = subprocess.Popen(
        [sys.executable, str(PEER), "sub"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pub = subprocess.Popen(
        [sys.executable, str(PEER), "pub"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        try:
            out, err = sub.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            sub.kill()
            out, err = sub.communicate()
            pytest.fail(f"subscriber did not finish in {TIMEOUT_S} s; stderr:\n{err[-3000:]}")
    finally:
        for proc in (pub, sub):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        pub_err = pub.stderr.read() if pub.stderr else ""
        for proc in (pub, sub):
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()

    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no report from subscriber (rc={sub.returncode}); stderr:\n{err[-3000:]}\npub:\n{pub_err[-2000:]}"
    report = json.loads(lines[-1])
    assert sub.returncode == 0, f"subscriber incomplete: {report}\nstderr:\n{err[-3000:]}\npub:\n{pub_err[-2000:]}"

    assert report["env"] == {"ROS_DOMAIN_ID": env["ROS_DOMAIN_ID"], "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}

    image = report["image"]
    expected_bytes = ros_peer.image_bytes()
    assert (image["width"], image["height"], image["encoding"], image["step"]) == (640, 480, "rgb8", 1920)
    assert image["len"] == len(expected_bytes) == 640 * 480 * 3
    assert image["sha256"] == hashlib.sha256(expected_bytes).hexdigest()
    assert image["frame_id"] == ros_peer.DETECTION["frame_id"]
    assert image["stamp"] == ros_peer.DETECTION["stamp"]

    d = ros_peer.DETECTION
    dets = report["detections"]
    assert dets["frame_id"] == d["frame_id"]
    assert dets["count"] == 1 and dets["n_results"] == 1
    assert dets["id"] == d["id"]
    assert dets["class_id"] == d["class_id"]
    assert dets["score"] == d["score"]
    assert dets["position"] == d["position"]
    assert dets["orientation"] == d["orientation"]
    assert dets["covariance_diag"] == d["covariance_diag"]
    assert dets["bbox_center"] == d["position"]
    assert dets["bbox_size"] == d["bbox_size"]

    # Receiving sockets (fixed RTPS ports etc.) must be bound to loopback only. The middleware
    # may also hold unconnected *send* sockets on OS-assigned ephemeral ports; those are allowed.
    ephemeral = _ephemeral_ports()
    sockets = [tuple(s) for s in report["udp_sockets"]]
    assert sockets, "subscriber reported no UDP sockets"
    offenders = [s for s in sockets if s[0] != "127.0.0.1" and s[1] not in ephemeral]
    assert not offenders, f"UDP sockets bound outside loopback: {offenders} (all: {sockets})"
    domain = int(env["ROS_DOMAIN_ID"])
    rtps = [s for s in sockets if 7400 + 250 * domain <= s[1] < 7400 + 250 * (domain + 1)]
    assert rtps and all(addr == "127.0.0.1" for addr, _ in rtps), sockets


def test_fastdds_profile_is_loopback_only():
    path = fastdds_profile()
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.eprosima.com}dds"

    descriptors = {
        td.findtext("d:transport_id", namespaces=NS): td
        for td in root.findall("d:profiles/d:transport_descriptors/d:transport_descriptor", NS)
    }
    kinds = {tid: td.findtext("d:type", namespaces=NS) for tid, td in descriptors.items()}
    assert sorted(kinds.values()) == ["SHM", "UDPv4"], kinds
    for tid, td in descriptors.items():
        if kinds[tid] == "SHM":
            # room for one 4000x3000 rgb8 image (issue 31), which the node's size check reads too
            assert td.findtext("d:segment_size", namespaces=NS) == str(64 * 1024 * 1024)
            assert 4000 * 3000 * 3 < shm_segment_bytes({"FASTDDS_DEFAULT_PROFILES_FILE": str(path)})
        else:
            allowed = [a.text for a in td.findall("d:interfaceWhiteList/d:address", NS)]
            allowed += [i.get("name") for i in td.findall("d:interfaces/d:allowlist/d:interface", NS)]
            assert allowed == ["127.0.0.1"], allowed

    participants = root.findall("d:profiles/d:participant", NS)
    defaults = [p for p in participants if p.get("is_default_profile") == "true"]
    assert len(defaults) == 1
    rtps = defaults[0].find("d:rtps", NS)
    assert rtps.findtext("d:useBuiltinTransports", namespaces=NS) == "false"
    used = [t.text for t in rtps.findall("d:userTransports/d:transport_id", NS)]
    assert sorted(used) == sorted(descriptors)

    # every locator anywhere in the profile is unicast UDPv4 on 127.0.0.1; no multicast lists
    assert not root.findall(".//d:metatrafficMulticastLocatorList/d:locator", NS)
    assert not root.findall(".//d:multicastLocatorList/d:locator", NS)
    locators = root.findall(".//d:locator", NS)
    assert locators
    for loc in locators:
        kinds_ = [child.tag.split("}")[1] for child in loc]
        assert kinds_ == ["udpv4"], kinds_
        assert loc.findtext("d:udpv4/d:address", namespaces=NS) == "127.0.0.1"
    peers = rtps.findall("d:builtin/d:initialPeersList/d:locator", NS)
    assert peers, "discovery over loopback needs 127.0.0.1 as an initial peer"


def test_ros_env_is_local_only(ros_session_env):
    for env in (dict(os.environ), ros_session_env):
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
        assert Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]) == fastdds_profile()
        assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in env  # deprecated name; rmw would warn
        assert DOMAIN_ID_RANGE[0] <= int(env["ROS_DOMAIN_ID"]) <= DOMAIN_ID_RANGE[1]
        assert Path(env["ROS_LOG_DIR"]).is_dir()
        assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"


def test_ros_env_defaults():
    fresh = ros_env({"PATH": "/usr/bin"})
    assert fresh["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert DOMAIN_ID_RANGE[0] <= int(fresh["ROS_DOMAIN_ID"]) <= DOMAIN_ID_RANGE[1]
    assert "AMENT_PREFIX_PATH" in fresh  # no real ROS on the path -> the venv prefix is added
    kept = ros_env({"ROS_DOMAIN_ID": "42", "ROS_LOG_DIR": "/tmp/x", "AMENT_PREFIX_PATH": fresh["AMENT_PREFIX_PATH"]})
    assert kept["ROS_DOMAIN_ID"] == "42" and kept["ROS_LOG_DIR"] == "/tmp/x"
    assert "AMENT_PREFIX_PATH" not in kept  # already there
    assert ros_env({}, domain_id=7)["ROS_DOMAIN_ID"] == "7"
    with pytest.raises(ValueError):
        ros_env({}, domain_id=0)


def test_ros_env_leaves_real_ros_install_alone(tmp_path):
    fake = tmp_path / "opt_ros"
    marker = fake / "share" / "ament_index" / "resource_index" / "packages"
    marker.mkdir(parents=True)
    (marker / "rclpy").write_text("")
    env = ros_env({"AMENT_PREFIX_PATH": str(fake)})
    assert "AMENT_PREFIX_PATH" not in env
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    # Fast DDS 2.x (Jazzy) reads only the old variable name
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"]
