#!/usr/bin/env bash
# Installs what earnserve needs on Debian 12: the Debian packages for the build, tests and tools,
# a virtual environment .venv with the light test packages of tools/requirements-test.txt (the
# HTTP end-to-end tests), and (with --python) the pinned packages of tools/requirements.txt.
# Idempotent: packages already installed are not fetched again.
#   bash tools/setup.sh            # Debian packages and .venv with the test packages
#   bash tools/setup.sh --python   # also .venv with torch/transformers for tools/ and baselines
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libpcre2-dev nlohmann-json3-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcpp-httplib-dev prometheus-cpp-dev libgloo-dev libboost-dev
  clang-14 clang-format-14 libclang-rt-14-dev libomp-14-dev
  python3 python3-venv python3-pip nginx-light
  chromium chromium-driver
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip install -q -r "$root/tools/requirements-test.txt"; then
  echo "setup: could not install tools/requirements-test.txt; the HTTP end-to-end test will skip"
fi

if [[ "${1:-}" == "--python" ]]; then
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -r "$root/tools/requirements.txt"
  echo "setup: python tools in $venv"
fi
echo "setup: done"
