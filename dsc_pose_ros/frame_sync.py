"""Match image, camera_info and detections by header stamp, and hand the worker only the newest
complete frame (no ROS imports: stamps are integer nanoseconds, payloads are opaque).

* ``exact``: the three stamps are equal (what a camera driver + detector pipeline usually gives);
* ``approximate``: camera_info and detections are the ones nearest to the image stamp within
  ``tolerance_ns``.

Latency stays bounded by dropping, never by queueing: :meth:`take` returns the newest image that has
a matching camera_info and detections, and every older image still waiting is dropped and counted;
each buffer keeps at most ``max_pending`` messages (the oldest are evicted, images counted as
dropped). Thread-safe: callbacks add, the worker takes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

KINDS = ("image", "camera_info", "detections")
MODES = ("exact", "approximate")


@dataclass
class Frame:
    stamp_ns: int
    image: Any
    camera_info: Any
    detections: Any


class FrameSynchronizer:
    def __init__(self, mode: str = "exact", tolerance_ns: int = 0, max_pending: int = 10):
        if mode not in MODES:
            raise ValueError(f"sync mode {mode!r} not in {MODES}")
        if tolerance_ns < 0 or max_pending < 1:
            raise ValueError("tolerance must be >= 0 and max_pending >= 1")
        self.mode = mode
        self.tolerance_ns = int(tolerance_ns) if mode == "approximate" else 0
        self.max_pending = int(max_pending)
        self._buffers: dict[str, dict[int, Any]] = {k: {} for k in KINDS}
        self._lock = threading.Lock()
        self.dropped = 0  # images never processed (superseded by a newer frame, or evicted)
        self.taken = 0

    def add(self, kind: str, stamp_ns: int, payload: Any) -> None:
        with self._lock:
            buffer = self._buffers[kind]
            buffer[int(stamp_ns)] = payload
            while len(buffer) > self.max_pending:
                del buffer[min(buffer)]
                if kind == "image":
                    self.dropped += 1

    def _match(self, kind: str, stamp: int) -> int | None:
        buffer = self._buffers[kind]
        if stamp in buffer:
            return stamp
        if self.mode == "exact" or not buffer:
            return None
        nearest = min(buffer, key=lambda s: abs(s - stamp))
        return nearest if abs(nearest - stamp) <= self.tolerance_ns else None

    def take(self) -> Frame | None:
        """The newest complete frame (removed with everything older), or None."""
        with self._lock:
            images = self._buffers["image"]
            for stamp in sorted(images, reverse=True):
                info_stamp = self._match("camera_info", stamp)
                det_stamp = self._match("detections", stamp)
                if info_stamp is None or det_stamp is None:
                    continue
                frame = Frame(stamp, images[stamp], self._buffers["camera_info"][info_stamp],
                              self._buffers["detections"][det_stamp])
                older = [s for s in images if s < stamp]
                self.dropped += len(older)
                for s in older + [stamp]:
                    del images[s]
                # older inputs can only belong to dropped images; the matched camera_info stays
                # (approximate mode may reuse it for the next image), the matched detections go
                for kind, upto in (("camera_info", info_stamp), ("detections", det_stamp)):
                    buffer = self._buffers[kind]
                    for s in [s for s in buffer if s < upto]:
                        del buffer[s]
                del self._buffers["detections"][det_stamp]
                self.taken += 1
                return frame
            return None

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self._buffers.items()}
