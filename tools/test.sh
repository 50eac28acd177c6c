#!/usr/bin/env bash
# The whole test suite: installs Debian packages if missing, checks that every tracked C++ file is
# clang-format-14 clean and that includes point one way (tools/check_layers.py), builds (CPU, plus the CUDA backend when nvcc exists, which must compile),
# runs every GoogleTest through ctest, then rebuilds the loader and tokenizer tests under
# AddressSanitizer + UBSan and runs them.
#   bash tools/test.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="${EARNSERVE_JOBS:-$(nproc)}"
# ccache, where installed, makes rebuilds of unchanged sources cheap (a no-op otherwise).
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi

bash tools/setup.sh

echo "== formatting (clang-format-14 --dry-run -Werror, .clang-format) =="
if ! command -v clang-format-14 >/dev/null; then
  echo "clang-format-14 not found: bash tools/setup.sh installs it" >&2
  exit 1
fi
mapfile -d '' cxx_files < <(git ls-files -z -- '*.h' '*.cpp' '*.cu' '*.cuh')
if ! format_log="$(clang-format-14 --dry-run -Werror "${cxx_files[@]}" 2>&1)"; then
  {
    echo "$format_log" | grep -o '^[^:]*:[0-9]*:[0-9]*: error' | cut -d: -f1 | sort -u |
      sed 's/^/  not clang-formatted: /' || echo "$format_log"
    echo "Fix: clang-format-14 -i <file>...  (every C++ file: git ls-files -z -- '*.h' '*.cpp'" \
      "'*.cu' '*.cuh' | xargs -0 clang-format-14 -i)"
  } >&2
  exit 1
fi

echo "== layering (includes point one way: api -> scheduler -> cache, model -> kernels -> core) =="
python3 tools/check_layers.py

echo "== build (release) =="
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
cmake --build build -j"$jobs"

echo "== unit and integration tests =="
(cd build && ctest --output-on-failure -j"$jobs" --timeout 600)

# The same unit tests with each CPU code path forced (README, "CPU code paths"): the portable
# kernels (EARNSERVE_CPU_ISA=portable), the AVX2 kernels where the default is avx512, row-major
# weights (EARNSERVE_WEIGHT_PANELS=0: the GEMV and OpenBLAS instead of the panel GEMM) and
# OpenBLAS's SSE3 core (the one it falls back to on CPUs it does not know) must give the results
# the default path gives. The end-to-end tests (servers, CLI) run on the default path only.
forced_paths=(EARNSERVE_CPU_ISA=portable EARNSERVE_WEIGHT_PANELS=0 EARNSERVE_BLAS_CORE=Prescott)
if ./build/api/earnserve info | grep -qx 'kernel path: avx512'; then
  forced_paths+=(EARNSERVE_CPU_ISA=avx2)
fi
for forced in "${forced_paths[@]}"; do
  echo "== unit tests with $forced =="
  for binary in core kernels cache model scheduler api parallel; do
    env "$forced" "./build/tests/${binary}_tests" --gtest_brief=1
  done
done

echo "== sanitizers (ASan + UBSan): model loader and tokenizer =="
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DEARNSERVE_SANITIZE=ON \
  -DEARNSERVE_CUDA=OFF -DEARNSERVE_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
cmake --build build-asan -j"$jobs" --target model_tests
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ./build-asan/tests/model_tests --gtest_filter='*Tokenizer*:*Safetensors*:*Config*:*Load*'
# One libFuzzer target per parser of user input, each seeded from tests/fuzz/corpus_<name>/ (the
# request fuzzer from tests/fuzz/corpus/) and run for a bounded time: EARNSERVE_FUZZ_SECONDS for
# the request fuzzer (default 40), EARNSERVE_FUZZ_FILE_SECONDS for each file parser (default 20).
echo "== fuzzing: request and file parsers (libFuzzer + ASan/UBSan, clang-14) =="
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEARNSERVE_SANITIZE=ON -DEARNSERVE_FUZZ=ON -DEARNSERVE_CUDA=OFF -DEARNSERVE_BUILD_BENCH=OFF \
  "${launcher[@]}" >/dev/null
fuzzers=(request:4096 safetensors:8192 config:4096 tokenizer:32768 chat_template:4096
  recommendation:8192 batch_line:4096)
cmake --build build-fuzz -j"$jobs" --target "${fuzzers[@]/%:*/_fuzzer}"
for entry in "${fuzzers[@]}"; do
  name="${entry%%:*}"
  seconds="${EARNSERVE_FUZZ_FILE_SECONDS:-20}"
  seeds="tests/fuzz/corpus_$name"
  if [[ "$name" == request ]]; then
    seconds="${EARNSERVE_FUZZ_SECONDS:-40}"
    seeds=tests/fuzz/corpus
  fi
  echo "-- $name fuzzer: $seconds s, max_len ${entry##*:}"
  mkdir -p "build-fuzz/corpus_$name"
  "./build-fuzz/tests/${name}_fuzzer" -max_total_time="$seconds" -max_len="${entry##*:}" \
    -timeout=10 -print_final_stats=1 "build-fuzz/corpus_$name" "$seeds"
done
echo "== all tests passed =="
