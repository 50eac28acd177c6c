#!/usr/bin/env bash
# The whole test suite: installs Debian packages if missing, builds (CPU, plus the CUDA backend
# when nvcc exists, which must compile), runs every GoogleTest through ctest, then rebuilds the
# loader and tokenizer tests under AddressSanitizer + UBSan and runs them.
#   bash tools/test.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="${EARNSERVE_JOBS:-$(nproc)}"

bash tools/setup.sh

echo "== build (release) =="
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"

echo "== unit and integration tests =="
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600)

echo "== sanitizers (ASan + UBSan): model loader and tokenizer =="
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DEARNSERVE_SANITIZE=ON \
  -DEARNSERVE_CUDA=OFF -DEARNSERVE_BUILD_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs" --target model_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ./build-asan/tests/model_tests --gtest_filter='*Tokenizer*:*Safetensors*:*Config*:*Load*'
echo "== fuzzing: request parsing (libFuzzer + ASan/UBSan, clang-14, ${EARNSERVE_FUZZ_SECONDS:-60} s) =="
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEARNSERVE_SANITIZE=ON -DEARNSERVE_FUZZ=ON -DEARNSERVE_CUDA=OFF -DEARNSERVE_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$jobs" --target request_fuzzer
mkdir -p build-fuzz/corpus
./build-fuzz/tests/request_fuzzer -max_total_time="${EARNSERVE_FUZZ_SECONDS:-60}" -max_len=4096 \
  -print_final_stats=1 build-fuzz/corpus tests/fuzz/corpus
echo "== all tests passed =="
