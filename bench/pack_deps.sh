#!/usr/bin/env bash
# Packs this machine's GoogleTest, nlohmann_json, CLI11 and PCRE2 (Debian -dev packages; PCRE2 as
# its header and static library, for the Qwen2 tokenizer) into .deps/, a
# CMake prefix that bench/device.sh uses on GPU machines without those packages. Carry it with
# the device tool: run(..., carry=[".deps"]). .deps/ is listed in .git/info/exclude.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.deps/" .git/info/exclude 2>/dev/null || echo "/.deps/" >>.git/info/exclude
rm -rf .deps
mkdir -p .deps/include .deps/lib/x86_64-linux-gnu/cmake .deps/share/cmake
cp -r /usr/include/gtest /usr/include/gmock /usr/include/nlohmann /usr/include/CLI .deps/include/
cp /usr/include/pcre2.h .deps/include/
cp /usr/lib/x86_64-linux-gnu/libpcre2-8.a .deps/lib/x86_64-linux-gnu/
cp /usr/lib/x86_64-linux-gnu/libgtest*.a /usr/lib/x86_64-linux-gnu/libgmock*.a \
  .deps/lib/x86_64-linux-gnu/
cp -r /usr/lib/x86_64-linux-gnu/cmake/GTest .deps/lib/x86_64-linux-gnu/cmake/
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 .deps/share/cmake/
du -sh .deps
