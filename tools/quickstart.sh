#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running demo: installs the Debian packages,
# builds earnserve (Release), then generates a story with the TinyStories model and, when the
# HTTP server is built, serves the bundled Beauty recommender (models/beauty-earn) on 127.0.0.1:8000.
#   bash tools/quickstart.sh            # build + generate
#   bash tools/quickstart.sh --serve    # build + serve (Ctrl-C to stop)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target earnserve
story_model=../shared/models/tinystories-656k
[ -d "$story_model" ] || { echo "quickstart: $story_model not found (the shared models folder)"; exit 1; }
if [[ "${1:-}" == "--serve" ]]; then
  # The bundled EARN recommender trained on Amazon Beauty (models/beauty-earn/README.md).
  model=${EARNSERVE_MODEL:-models/beauty-earn}
  exec ./build/api/earnserve serve --model "$model" --host 127.0.0.1 --port "${PORT:-8000}"
fi
./build/api/earnserve generate --model "$story_model" --max-tokens 100 --temperature 0
