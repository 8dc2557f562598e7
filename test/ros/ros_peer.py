"""A separate ROS 2 process for test_transport.py (run as ``python ros_peer.py pub|sub``).

pub: publishes a 640x480 rgb8 sensor_msgs/Image and a vision_msgs/Detection3DArray (reliable QoS)
     every 0.2 s once a subscriber is matched, until killed or MAX_SECONDS pass.
sub: subscribes to both, prints one JSON line describing what it received (plus its own UDP
     sockets), then exits; exit code 2 on timeout.
The environment (domain id, discovery range, Fast DDS profile) comes from the parent.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

IMAGE_TOPIC = "/dsc_pose_test/image"
DETECTIONS_TOPIC = "/dsc_pose_test/detections"
WIDTH, HEIGHT = 640, 480
MAX_SECONDS = 25.0


def image_bytes() -> bytes:
    """Deterministic, non-trivial rgb8 pixel data (640x480x3)."""
    import numpy as np

    idx = np.arange(WIDTH * HEIGHT * 3, dtype=np.uint32)
    return ((idx * 7 + idx // (WIDTH * 3) * 13) % 251).astype(np.uint8).tobytes()


DETECTION = {
    "frame_id": "camera_color_optical_frame",
    "stamp": [1700000000, 123456789],
    "id": "obj_000005#1",
    "class_id": "lmo_obj_000005",
    "score": 0.875,
    "position": [0.125, -0.25, 0.75],
    "orientation": [0.0, 0.0, 0.38268343236508984, 0.9238795325112867],
    "covariance_diag": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06],
    "bbox_size": [0.1, 0.2, 0.3],
}


def _qos():
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def _make_messages():
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    d = DETECTION
    img = Image()
    img.header.frame_id = d["frame_id"]
    img.header.stamp.sec, img.header.stamp.nanosec = d["stamp"]
    img.height, img.width, img.encoding, img.is_bigendian = HEIGHT, WIDTH, "rgb8", 0
    img.step = WIDTH * 3
    img.data = image_bytes()

    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = d["class_id"]
    hyp.hypothesis.score = d["score"]
    p, q = hyp.pose.pose.position, hyp.pose.pose.orientation
    p.x, p.y, p.z = d["position"]
    q.x, q.y, q.z, q.w = d["orientation"]
    cov = [0.0] * 36
    for i, v in enumerate(d["covariance_diag"]):
        cov[i * 7] = v
    hyp.pose.covariance = cov

    det = Detection3D()
    det.header = img.header
    det.id = d["id"]
    det.results = [hyp]
    det.bbox.center = hyp.pose.pose
    det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = d["bbox_size"]

    arr = Detection3DArray()
    arr.header = img.header
    arr.detections = [det]
    return img, arr


def _udp_sockets() -> list[list]:
    """[[address, port], ...] of this process's UDP/UDPv6 sockets (from /proc; no ss needed)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, v6 in (("/proc/net/udp", False), ("/proc/net/udp6", True)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] not in inodes:
                continue
            addr_hex, port_hex = cols[1].split(":")
            if v6:
                addr = "v6:" + addr_hex
            else:
                addr = ".".join(str(int(addr_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
            found.append([addr, int(port_hex, 16)])
    return found


def run_pub() -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection3DArray

    rclpy.init()
    node = rclpy.create_node("dsc_pose_test_pub")
    img_pub = node.create_publisher(Image, IMAGE_TOPIC, _qos())
    det_pub = node.create_publisher(Detection3DArray, DETECTIONS_TOPIC, _qos())
    img, arr = _make_messages()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < MAX_SECONDS:
            if img_pub.get_subscription_count() and det_pub.get_subscription_count():
                img_pub.publish(img)
                det_pub.publish(arr)
            rclpy.spin_once(node, timeout_sec=0.2)
    except (KeyboardInterrupt, ExternalShutdownException):  # SIGINT/SIGTERM from the test
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def run_sub() -> int:
    import rclpy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection3DArray

    got: dict = {}

    def on_image(msg):
        if "image" not in got:
            got["image"] = {
                "width": msg.width,
                "height": msg.height,
                "encoding": msg.encoding,
                "step": msg.step,
                "len": len(msg.data),
                "sha256": hashlib.sha256(bytes(msg.data)).hexdigest(),
                "frame_id": msg.header.frame_id,
                "stamp": [msg.header.stamp.sec, msg.header.stamp.nanosec],
            }

    def on_dets(msg):
        if "detections" in got:
            return
        out = {"frame_id": msg.header.frame_id, "count": len(msg.detections)}
        if msg.detections:
            det = msg.detections[0]
            hyp = det.results[0] if det.results else None
            out.update(
                id=det.id,
                n_results=len(det.results),
                class_id=hyp.hypothesis.class_id if hyp else None,
                score=hyp.hypothesis.score if hyp else None,
                position=[hyp.pose.pose.position.x, hyp.pose.pose.position.y, hyp.pose.pose.position.z],
                orientation=[
                    hyp.pose.pose.orientation.x,
                    hyp.pose.pose.orientation.y,
                    hyp.pose.pose.orientation.z,
                    hyp.pose.pose.orientation.w,
                ],
                covariance_diag=[float(hyp.pose.covariance[i * 7]) for i in range(6)],
                bbox_center=[det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.center.position.z],
                bbox_size=[det.bbox.size.x, det.bbox.size.y, det.bbox.size.z],
            )
        got["detections"] = out

    rclpy.init()
    node = rclpy.create_node("dsc_pose_test_sub")
    node.create_subscription(Image, IMAGE_TOPIC, on_image, _qos())
    node.create_subscription(Detection3DArray, DETECTIONS_TOPIC, on_dets, _qos())
    t0 = time.monotonic()
    try:
        while len(got) < 2 and time.monotonic() - t0 < MAX_SECONDS:
            rclpy.spin_once(node, timeout_sec=0.2)
        got["elapsed_s"] = round(time.monotonic() - t0, 3)
        got["udp_sockets"] = _udp_sockets()
        got["env"] = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
        print(json.dumps(got), flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0 if "image" in got and "detections" in got else 2


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "pub":
        sys.exit(run_pub())
    if role == "sub":
        sys.exit(run_sub())
    sys.exit(f"usage: {sys.argv[0]} pub|sub")
