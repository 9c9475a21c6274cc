#!/usr/bin/env bash
# Builds sdpa_check (src/backend/cuda/attention.cpp + sdpa_check.cpp + sdpa_ref.cu) and runs it.
#   CUDNN_ROOT=<dir with include/cudnn.h, lib/libcudnn.so.9>  (default: the nvidia-cudnn wheel of
#   python3, else /usr/local/cuda)   BUILD=<dir> (default /tmp/sdpa_build)   ARGS: passed to sdpa_check
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/../../src" && pwd)"        # repo/src
repo="$(cd "$src/.." && pwd)"
build="${BUILD:-/tmp/sdpa_build}"
cuda="${CUDA_HOME:-/usr/local/cuda}"
if [ -z "${CUDNN_ROOT:-}" ]; then
  CUDNN_ROOT="$(python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))' 2>/dev/null || true)"
  [ -n "$CUDNN_ROOT" ] || CUDNN_ROOT="$cuda"
fi
cudnn_lib="$CUDNN_ROOT/lib"; [ -e "$cudnn_lib/libcudnn.so.9" ] || cudnn_lib="$CUDNN_ROOT/lib64"
echo "cuDNN root: $CUDNN_ROOT (lib $cudnn_lib)"
mkdir -p "$build"
flags=(-std=c++20 -O2 -Wall -Wextra -DFISDIT_HAVE_CUDNN=1 -I"$src" -I"$repo/include"
       -I"$CUDNN_ROOT/include" -I"$cuda/include")
g++ "${flags[@]}" -c "$here/../../src/backend/cuda/attention.cpp" -o "$build/attention.o"
g++ "${flags[@]}" -c "$here/sdpa_check.cpp" -o "$build/sdpa_check.o"
"$cuda/bin/nvcc" -std=c++17 -O2 -arch=sm_90a -c "$here/sdpa_ref.cu" -o "$build/sdpa_ref.o"
g++ "$build/attention.o" "$build/sdpa_check.o" "$build/sdpa_ref.o" -o "$build/sdpa_check" \
    -L"$cudnn_lib" -l:libcudnn.so.9 -L"$cuda/lib64" -lcudart -Wl,-rpath,"$cudnn_lib"
# cuDNN's runtime-compiled engines load NVRTC at run time: put one on the library path.
nvrtc_dir="$(dirname "$(find "$CUDNN_ROOT/.." "$cuda/lib64" -name 'libnvrtc.so*' 2>/dev/null | head -1)" 2>/dev/null || true)"
export LD_LIBRARY_PATH="$cudnn_lib:${nvrtc_dir:+$nvrtc_dir:}$cuda/lib64:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
"$build/sdpa_check" "$@"
