"""The floor of one ROS hop on this machine, for bench/bench_node.py: an rgb8 Image published by one
Python process and received by another (rclpy, Fast DDS with config/fastdds.xml, best effort), latency
= receive time - stamp (stamp = ROS time at publish). The node's path has at least two such hops
(the frame in, the answer out), which no change inside the node removes.

    python bench/ros_floor.py sub WIDTH HEIGHT N   # prints one JSON line, exit 2 on time-out
    python bench/ros_floor.py pub WIDTH HEIGHT N   # N messages at 10 Hz once a subscriber matches
The environment (domain id, profile) comes from the caller (``dsc_pose_ros.ros_env.subprocess_env``).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

TOPIC = "/dsc_pose_bench/floor"


def main() -> int:
    mode, width, height, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    qos = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
    rclpy.init()
    node = rclpy.create_node(f"dsc_pose_floor_{mode}")
    end = time.monotonic() + 40.0
    if mode == "pub":
        pub = node.create_publisher(Image, TOPIC, qos)
        msg = Image()
        msg.height, msg.width, msg.encoding, msg.step = height, width, "rgb8", width * 3
        msg.data = np.random.default_rng(0).integers(0, 255, width * height * 3, dtype=np.uint8).tobytes()
        while pub.get_subscription_count() == 0 and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(1.0)
        for _ in range(count):
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            time.sleep(0.1)
        time.sleep(1.0)
        return 0
    latencies = []

    def on_image(m):
        stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        latencies.append((node.get_clock().now().nanoseconds - stamp) / 1e6)

    node.create_subscription(Image, TOPIC, on_image, qos)
    while len(latencies) < count and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps({"width": width, "height": height, "received": len(latencies), "sent": count,
                      "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
                      "p90_ms": float(np.percentile(latencies, 90)) if latencies else None}), flush=True)
    return 0 if latencies else 2


if __name__ == "__main__":
    sys.exit(main())
