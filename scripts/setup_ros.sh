#!/usr/bin/env bash
# Set up a ROS 2 (Kilted) runtime inside the project's virtualenv from PyPI wheels,
# and build the interface packages that no registry ships (vision_msgs, tf2_msgs).
#
# Usage:  scripts/setup_ros.sh            (venv = <repo>/.venv, created if missing)
#         VENV=/path/to/venv scripts/setup_ros.sh
#         JOBS=4 scripts/setup_ros.sh     (parallel make jobs, default 2)
#
# Idempotent: stamp files in $VENV/.dsc_pose_ros/ record what was done, so a second run
# is a no-op that takes a few seconds. Delete that folder to force a full redo.
#
# Steps:
#   a) pip install -r requirements-ros.txt (skipped when rclpy already comes from a real
#      ROS 2 installation, e.g. /opt/ros/<distro> sourced);
#   b) rewrite the wheel builder's Python paths (/opt/python/cp311-cp311/...) in the
#      wheels' exported CMake files to this interpreter's include dir / numpy include dir;
#   c) build interfaces/vision_msgs and interfaces/tf2_msgs with CMake (rosidl: C, C++,
#      Python, type descriptions, Fast DDS + introspection type supports) and install them
#      into $VENV, next to the wheels' ament index -- only when the package is not already
#      importable from somewhere else (system packages win).
#
# See docs/ROS_SETUP.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
JOBS="${JOBS:-2}"
PY="$VENV/bin/python"
STATE="$VENV/.dsc_pose_ros"
INTERFACE_PKGS=(vision_msgs tf2_msgs)

log() { printf '[setup_ros] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

hash_of() {  # sha256 over the given files/dirs (paths relative to $REPO, content + names)
  (cd "$REPO" && find "$@" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
    | sha256sum | cut -d' ' -f1
}

command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"
command -v make >/dev/null || die "make not found"
command -v c++ >/dev/null || die "a C++ compiler is needed (apt-get install g++)"

if [[ ! -x "$PY" ]]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
mkdir -p "$STATE"

# One run at a time per venv.
exec 9>"$STATE/lock"
flock 9

# Where (if anywhere) a module comes from, with the venv on the ament path as well.
module_origin() {
  AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}$VENV" "$PY" - "$1" <<'EOF' 2>/dev/null || true
import importlib.util, sys
try:
    spec = importlib.util.find_spec(sys.argv[1])
except Exception:
    spec = None
print(spec.origin if spec and spec.origin else '')
EOF
}
inside_venv() { [[ "$(realpath -m "$1")" == "$(realpath -m "$VENV")"/* ]]; }

# --- a) wheels -------------------------------------------------------------------------
req_hash="$(hash_of requirements-ros.txt)"
rclpy_origin="$(module_origin rclpy)"
if [[ -n "$rclpy_origin" ]] && ! inside_venv "$rclpy_origin"; then
  log "rclpy comes from a real ROS installation ($rclpy_origin): not installing ROS wheels"
  SYSTEM_ROS=1
else
  SYSTEM_ROS=0
  if [[ "$(cat "$STATE/wheels.stamp" 2>/dev/null)" != "$req_hash" ]]; then
    log "installing ROS wheels from requirements-ros.txt"
    "$PY" -m pip install -q --no-cache-dir --disable-pip-version-check \
      -r "$REPO/requirements-ros.txt"
    echo "$req_hash" > "$STATE/wheels.stamp"
    rm -f "$STATE"/*.built.stamp   # generators may have changed: rebuild interfaces
  else
    log "ROS wheels up to date"
  fi
fi

# Never let PyPI's unrelated 'launch' or the broken ROS 1 'cv-bridge' sneak in.
bad="$("$PY" -c "
import importlib.metadata as md
found = []
for n in ('launch', 'cv-bridge'):
    try:
        md.distribution(n); found.append(n)
    except md.PackageNotFoundError:
        pass
print(' '.join(found))")"
if [[ -n "$bad" && "$SYSTEM_ROS" == 0 ]]; then
  die "PyPI package(s) '$bad' installed in $VENV; they are not ROS 2 packages: pip uninstall $bad"
fi

if [[ "$SYSTEM_ROS" == 1 ]]; then
  for pkg in "${INTERFACE_PKGS[@]}"; do
    [[ -n "$(module_origin "$pkg")" ]] \
      || log "WARNING: $pkg not found; install it from your ROS distribution (e.g. apt install ros-\$ROS_DISTRO-${pkg//_/-})"
  done
  log "nothing else to do on a real ROS installation"
  exit 0
fi

# --- b) fix the wheel builder's Python paths in exported CMake files ----------------------
py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
np_inc="$("$PY" -c 'import numpy; print(numpy.get_include())')"
[[ -f "$py_inc/Python.h" ]] || die "Python headers not found in $py_inc (install python3-dev)"
mapfile -t cmake_files < <(grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true)
if (( ${#cmake_files[@]} )); then
  log "rewriting Python paths in ${#cmake_files[@]} CMake file(s)"
  sed -i \
    -e "s|/opt/python/cp311-cp311/lib/python3\.11/site-packages/numpy/_core/include|$np_inc|g" \
    -e "s|/opt/python/cp311-cp311/include/python3\.11|$py_inc|g" \
    "${cmake_files[@]}"
  if grep -l '/opt/python/cp311-cp311' "${cmake_files[@]}" >/dev/null; then
    die "unexpected /opt/python path left in: $(grep -l '/opt/python/cp311-cp311' "${cmake_files[@]}" | head -3)"
  fi
fi

# --- c) interface packages -------------------------------------------------------------
build_pkg() {
  local pkg="$1" src="$REPO/interfaces/$1" bld="$STATE/build/$1"
  local want origin
  want="$(hash_of "interfaces/$pkg" requirements-ros.txt)"
  origin="$(module_origin "$pkg")"
  if [[ -n "$origin" ]] && ! inside_venv "$origin"; then
    log "$pkg provided by the system ($origin): not building ours"
    return
  fi
  if [[ -n "$origin" && "$(cat "$STATE/$pkg.built.stamp" 2>/dev/null)" == "$want" ]]; then
    log "$pkg up to date"
    return
  fi
  log "building $pkg (make -j$JOBS) ..."
  rm -rf "$bld"
  mkdir -p "$bld"
  local t0=$SECONDS
  (
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
    cmake -S "$src" -B "$bld" \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DPython3_EXECUTABLE="$PY" >"$bld/cmake.log" 2>&1 \
      || { tail -40 "$bld/cmake.log" >&2; exit 1; }
    make -C "$bld" -j"$JOBS" >"$bld/make.log" 2>&1 || { tail -40 "$bld/make.log" >&2; exit 1; }
    make -C "$bld" install >"$bld/install.log" 2>&1 || { tail -40 "$bld/install.log" >&2; exit 1; }
  ) || die "building $pkg failed (logs in $bld)"
  echo "$want" > "$STATE/$pkg.built.stamp"
  log "$pkg built and installed into $VENV in $((SECONDS - t0)) s"
}
for pkg in "${INTERFACE_PKGS[@]}"; do build_pkg "$pkg"; done

# --- check -----------------------------------------------------------------------------
AMENT_PREFIX_PATH="$VENV" ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
FASTDDS_DEFAULT_PROFILES_FILE="$REPO/config/fastdds.xml" \
ROS_LOG_DIR="$STATE/log" "$PY" -c '
import rclpy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, Detection3DArray
from tf2_msgs.msg import TFMessage
rclpy.init(); rclpy.shutdown()
' || die "ROS check failed"
log "ROS 2 runtime ready in $VENV (set AMENT_PREFIX_PATH=$VENV; see docs/ROS_SETUP.md)"
