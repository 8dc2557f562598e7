"""Match image, camera_info and detections by header stamp, and hand the worker only the newest
complete frame (no ROS imports: stamps are integer nanoseconds, payloads are opaque).

* ``exact``: the three stamps are equal (what a camera driver + detector pipeline usually gives);
* ``approximate``: camera_info and detections are the ones nearest to the image stamp within
  ``tolerance_ns``.

Latency stays bounded by dropping, never by queueing: :meth:`take` returns the newest image that has
a matching camera_info and detections, and every older image still waiting is dropped and counted;
each buffer keeps at most ``max_pending`` messages (the oldest are evicted, images counted as
dropped). Thread-safe: callbacks add, the worker takes.

Stamps: :meth:`add` refuses (and returns one sentence for) a message stamped more than
``max_ahead_ns`` after ``now_ns`` (a clock far in the future would otherwise make every later frame
look stale) and an image older than the last frame taken (answers go out in stamp order); an image
more than ``RESET_NS`` older than that is taken as a clock that jumped back (a bag replayed again)
and starts afresh. Images evicted or superseded without a partner are counted by what they lacked
(``unmatched``: camera_info, detections), so that the node can say why frames are not answered.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

KINDS = ("image", "camera_info", "detections")
MODES = ("exact", "approximate")
RESET_NS = 5_000_000_000  # an image this much older than the last one taken: the clock jumped back


@dataclass
class Frame:
    stamp_ns: int
    image: Any
    camera_info: Any
    detections: Any


class FrameSynchronizer:
    def __init__(self, mode: str = "exact", tolerance_ns: int = 0, max_pending: int = 10, max_ahead_ns: int = 0):
        if mode not in MODES:
            raise ValueError(f"sync mode {mode!r} not in {MODES}")
        if tolerance_ns < 0 or max_pending < 1:
            raise ValueError("tolerance must be >= 0 and max_pending >= 1")
        self.mode = mode
        self.tolerance_ns = int(tolerance_ns) if mode == "approximate" else 0
        self.max_pending = int(max_pending)
        self._buffers: dict[str, dict[int, Any]] = {k: {} for k in KINDS}
        self._lock = threading.Lock()
        self.max_ahead_ns = int(max_ahead_ns)  # 0: no limit
        self.dropped = 0  # images never processed (superseded by a newer frame, or evicted)
        self.taken = 0
        self.last_taken_ns: int | None = None
        self.unmatched = {"camera_info": 0, "detections": 0}  # dropped images by the partner they lacked
        self.refused = {"future": 0, "out_of_order": 0}

    def _count_unmatched(self, stamp: int) -> None:
        for kind in ("camera_info", "detections"):
            if self._match(kind, stamp) is None:
                self.unmatched[kind] += 1

    def add(self, kind: str, stamp_ns: int, payload: Any, now_ns: int | None = None) -> str | None:
        """Buffer one message; returns None, or one sentence when the message is refused."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            if self.max_ahead_ns and now_ns and stamp_ns - int(now_ns) > self.max_ahead_ns:
                self.refused["future"] += 1
                return (f"{kind} stamp is {(stamp_ns - int(now_ns)) / 1e9:.3g} s ahead of the node's clock "
                        f"(limit {self.max_ahead_ns / 1e9:g} s): message ignored")
            if kind == "image" and self.last_taken_ns is not None and stamp_ns <= self.last_taken_ns:
                if self.last_taken_ns - stamp_ns <= RESET_NS:
                    self.refused["out_of_order"] += 1
                    return (f"image stamp {stamp_ns / 1e9:.9f} is not newer than the last frame answered "
                            f"({self.last_taken_ns / 1e9:.9f}): out of order, ignored")
                self.last_taken_ns = None  # the clock jumped back: start afresh
            buffer = self._buffers[kind]
            buffer[stamp_ns] = payload
            while len(buffer) > self.max_pending:
                oldest = min(buffer)
                del buffer[oldest]
                if kind == "image":
                    self.dropped += 1
                    self._count_unmatched(oldest)
            return None

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
                for s in older:
                    self._count_unmatched(s)
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
                self.last_taken_ns = stamp
                return frame
            return None

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self._buffers.items()}
