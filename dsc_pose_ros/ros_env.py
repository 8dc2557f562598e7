"""Environment variables that a dsc_pose ROS 2 process needs on this machine.

All ROS 2 traffic must stay on the local host:

* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (always);
* ``FASTDDS_DEFAULT_PROFILES_FILE`` points at ``config/fastdds.xml``: shared memory + UDP on
  127.0.0.1 only, no multicast. The older ``FASTRTPS_DEFAULT_PROFILES_FILE`` (Fast DDS 2.x) is
  set to the same file only on a real ROS install, and removed otherwise (Kilted's rmw warns
  that it is deprecated);
* ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp`` unless already chosen (the profile is Fast DDS only);
* a private ``ROS_DOMAIN_ID`` (random in 1..101 unless already set), so concurrent test runs
  do not see each other;
* ``ROS_LOG_DIR`` (a temp folder unless set), so nothing is written to ``~/.ros``.

With the PyPI ROS wheels (``scripts/setup_ros.sh``) ``AMENT_PREFIX_PATH`` must also contain the
virtualenv prefix, where the wheels put ``share/ament_index``. On a real ROS 2 installation
(``/opt/ros/<distro>`` sourced) the existing ``AMENT_PREFIX_PATH`` is left alone.

Usage::

    from dsc_pose_ros.ros_env import ros_env, subprocess_env, apply_ros_env
    subprocess.run([...], env=subprocess_env())   # child processes
    apply_ros_env()                                # this process, before rclpy.init()
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
DOMAIN_ID_RANGE = (1, 101)  # 1..101 is valid for every participant count on Linux
_AMENT_MARKER = Path("share", "ament_index", "resource_index", "packages")
# removed from environments built here: deprecated / conflicting with the settings above
_DROP = ("ROS_LOCALHOST_ONLY", "FASTRTPS_DEFAULT_PROFILES_FILE")


def fastdds_profile() -> Path:
    """Path of the local-only Fast DDS profile (the source tree, else the install space's share)."""
    from .params import resolve_path

    profile = resolve_path("config/fastdds.xml")
    if not profile.is_file():
        raise FileNotFoundError(f"Fast DDS profile not found (looked at {profile})")
    return profile


FASTDDS_DEFAULT_SHM_SEGMENT = 512 * 1024  # Fast DDS's built-in shared-memory transport


def shm_segment_bytes(env: Optional[Mapping[str, str]] = None) -> int | None:
    """The shared-memory segment size of the Fast DDS profile in ``FASTDDS_DEFAULT_PROFILES_FILE``
    (the largest SHM transport's ``segment_size``); Fast DDS's default without a profile; None when the
    profile has no shared-memory transport or cannot be read (then nothing is said about sizes)."""
    import xml.etree.ElementTree as ET

    env = os.environ if env is None else env
    path = env.get("FASTDDS_DEFAULT_PROFILES_FILE", "").strip()
    if not path:
        return FASTDDS_DEFAULT_SHM_SEGMENT
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    sizes = []
    for desc in root.iter():
        if not desc.tag.endswith("transport_descriptor"):
            continue
        fields = {child.tag.split("}")[-1]: (child.text or "").strip() for child in desc}
        if fields.get("type") == "SHM":
            try:
                sizes.append(int(fields.get("segment_size") or FASTDDS_DEFAULT_SHM_SEGMENT))
            except ValueError:
                return None
    return max(sizes) if sizes else None


def venv_prefix() -> Path:
    """Prefix where the PyPI ROS wheels put their ament index (the running venv or <repo>/.venv)."""
    for candidate in (Path(sys.prefix), REPO_ROOT / ".venv"):
        if (candidate / _AMENT_MARKER).is_dir():
            return candidate
    return Path(sys.prefix)


def _split(path_list: str) -> list[str]:
    return [p for p in path_list.split(os.pathsep) if p]


def system_ros_prefixes(env: Mapping[str, str]) -> list[str]:
    """Prefixes on AMENT_PREFIX_PATH, other than the venv, that provide rclpy (a real ROS install)."""
    venv = str(venv_prefix().resolve())
    found = []
    for prefix in _split(env.get("AMENT_PREFIX_PATH", "")):
        try:
            resolved = str(Path(prefix).resolve())
        except OSError:
            continue
        if resolved != venv and (Path(prefix) / _AMENT_MARKER / "rclpy").is_file():
            found.append(prefix)
    return found


def ros_env(
    base: Optional[Mapping[str, str]] = None,
    *,
    domain_id: Optional[int] = None,
    log_dir: Optional[os.PathLike | str] = None,
) -> dict[str, str]:
    """The ROS variables to set on top of ``base`` (default ``os.environ``); only those are returned.

    ``domain_id``/``log_dir`` override; otherwise values already in ``base`` are kept, and new
    ones are chosen (random domain id in 1..101, a temp log folder).
    """
    base = os.environ if base is None else base
    out: dict[str, str] = {}

    system_ros = bool(system_ros_prefixes(base))
    if not system_ros:
        prefix = str(venv_prefix())
        current = _split(base.get("AMENT_PREFIX_PATH", ""))
        if prefix not in current:
            out["AMENT_PREFIX_PATH"] = os.pathsep.join([prefix, *current])

    out["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    profile = str(fastdds_profile())
    out["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    if system_ros:  # the distribution may ship Fast DDS 2.x (Jazzy), which reads only this name
        out["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    out["RMW_IMPLEMENTATION"] = base.get("RMW_IMPLEMENTATION") or "rmw_fastrtps_cpp"

    if domain_id is not None:
        lo, hi = DOMAIN_ID_RANGE
        if not lo <= int(domain_id) <= hi:
            raise ValueError(f"domain_id must be in {lo}..{hi}, got {domain_id}")
        out["ROS_DOMAIN_ID"] = str(int(domain_id))
    elif base.get("ROS_DOMAIN_ID", "").strip():
        out["ROS_DOMAIN_ID"] = base["ROS_DOMAIN_ID"].strip()
    else:
        out["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(*DOMAIN_ID_RANGE))

    if log_dir is not None:
        out["ROS_LOG_DIR"] = str(log_dir)
    elif base.get("ROS_LOG_DIR"):
        out["ROS_LOG_DIR"] = base["ROS_LOG_DIR"]
    else:
        out["ROS_LOG_DIR"] = str(Path(tempfile.gettempdir()) / "dsc_pose_ros_log")
    return out


def subprocess_env(base: Optional[Mapping[str, str]] = None, **kwargs) -> dict[str, str]:
    """A full environment (copy of ``base``/``os.environ`` plus :func:`ros_env`) for a child process."""
    base = dict(os.environ if base is None else base)
    for name in _DROP:
        base.pop(name, None)
    base.update(ros_env(base, **kwargs))
    return base


def apply_ros_env(env: Optional[MutableMapping[str, str]] = None, **kwargs) -> dict[str, str]:
    """Set :func:`ros_env` in ``env`` (default ``os.environ``); call before ``rclpy.init()``."""
    env = os.environ if env is None else env
    for name in _DROP:
        env.pop(name, None)
    updates = ros_env(env, **kwargs)
    env.update(updates)
    return updates
