#!/usr/bin/env bash
# Builds the data plane's native gRPC transport (grpc_frontend.cpp) into OUT_DIR/_grpc_frontend
# for the Python in $PYTHON, against Debian's gRPC C++ (libgrpc++-dev) and pybind11.
# Used by the Makefile and by the data-plane Dockerfile, so both build it the same way.
set -euo pipefail
python=${PYTHON:-python3}
out_dir=${1:-dataplane}
suffix=$("$python" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
# shellcheck disable=SC2046  # the flag lists must split into words
g++ -O2 -Wall -std=c++17 -shared -fPIC -fvisibility=hidden \
  $("$python" -m pybind11 --includes) "$(dirname "$0")/grpc_frontend.cpp" \
  -o "$out_dir/_grpc_frontend$suffix" $(pkg-config --cflags --libs grpc++)
