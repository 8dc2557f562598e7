#!/usr/bin/env bash
# System libraries the fast renderer needs: EGL with Mesa (llvmpipe on CPU, the GPU driver where
# there is one). Debian 12 package names; installs them when missing and we are root.
set -euo pipefail
if ldconfig -p | grep -q 'libEGL.so.1' && ldconfig -p | grep -q 'libEGL_mesa.so.0\|libEGL_nvidia.so.0'; then
  exit 0
fi
packages="libegl1 libegl-mesa0 libgl1-mesa-dri"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "[check_system] installing $packages for headless OpenGL"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages
else
  echo "[check_system] headless OpenGL needs EGL: install $packages (Debian/Ubuntu) and rerun" >&2
  exit 1
fi
