#!/usr/bin/env bash
# Set up .venv on a fresh Debian machine (root, only python3 present) or a developer machine: system packages via apt
# when missing, torch (the CPU wheel when no CUDA GPU is present), then mmrl editable with the extras asked for.
# Usage: scripts/setup.sh [EXTRAS]   (EXTRAS defaults to "dev")
set -euo pipefail
EXTRAS="${1:-dev}"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"

apt_install() {  # apt_install PKG...: install Debian packages that are missing (needs root)
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then echo "setup: please install: ${missing[*]}" >&2; return 1; fi
  echo "setup: apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# venv and pip need python3-venv on Debian's own python; a pyenv/python.org build already has them.
if ! "$PY" -c "import venv, ensurepip" >/dev/null 2>&1; then
  ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  apt_install "python${ver}-venv" python3-pip
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip >/dev/null

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$VPY" -m pip install -q torch
  else
    "$VPY" -m pip install -q torch==2.13.0  # the CPU wheel; plain `torch` would pull GBs of CUDA packages
  fi
fi
# [sim]: ManiSkill3 renders on the CPU through Mesa's lavapipe Vulkan driver. SAPIEN refuses bookworm's Mesa 22.x, so on
# Debian 12 it comes from bookworm-backports (25.x).
if [[ ",${EXTRAS}," == *",sim,"* ]] && grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release; then
  if ! dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^2[5-9]\.'; then
    if [ "$(id -u)" -ne 0 ]; then echo "setup: please install mesa-vulkan-drivers (>= 25, bookworm-backports) and libvulkan1" >&2; exit 1; fi
    apt_install ca-certificates
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        > /etc/apt/sources.list.d/bookworm-backports.sources
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports \
      mesa-vulkan-drivers libvulkan1 libx11-6 >/dev/null
  fi
fi
"$VPY" -m pip install -q -e ".[${EXTRAS}]"
# sapien requires the GUI OpenCV (opencv-python), which writes the same cv2/ package as our opencv-python-headless: keep the
# headless one, whole (no libGL needed). `pip check` then reports "sapien requires opencv-python": expected.
if "$VPY" -m pip show opencv-python >/dev/null 2>&1; then
  cv=$("$VPY" -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')
  "$VPY" -m pip uninstall -y -q opencv-python
  "$VPY" -m pip install -q --force-reinstall --no-deps "opencv-python-headless==$cv"
fi
# [gui]: MiniWoB++ (and the rollout viewer's test) drive Debian's chromium through Debian's chromedriver (same version,
# passed explicitly: Selenium Manager would look for a browser on the network); fonts-liberation is only a Recommends.
if [[ ",$EXTRAS," == *",gui,"* ]]; then
  apt_install chromium chromium-driver fonts-liberation
fi
echo "setup: ready ($("$VPY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
