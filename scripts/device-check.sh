#!/usr/bin/env bash
# adapterkit on a CUDA machine: builds the addon against the Python torch there (CUDA build, headers
# included), runs the GPU test subset (forward parity CPU vs GPU, seeded draws, LoRA training whose
# loss falls, save/reload, mixed batch) and bench:train on the GPU, and prints the figures.
#   usage: scripts/device-check.sh            (PYTHON=/path/to/python3, NODE=/path/to/node to choose)
# Needs: an NVIDIA GPU, Python torch with CUDA, Node.js 20+ (carry a node binary if none is
# installed), g++/make, and node_modules (carry them: the machine may have no network).
set -euo pipefail
cd "$(dirname "$0")/.."
NODE=${NODE:-node}
PYTHON=${PYTHON:-python3}
export PYTHON
command -v "$NODE" >/dev/null || { echo "device-check: Node.js 20+ not found (set NODE=/path/to/node)"; exit 2; }
"$PYTHON" - <<'PY' || { echo "device-check: $PYTHON has no CUDA torch"; exit 2; }
import torch, sys
print(f"torch {torch.__version__}, cuda {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
sys.exit(0 if torch.cuda.is_available() else 1)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
NODE_DIR=$(dirname "$(dirname "$(command -v "$NODE")")")
[ -f "$NODE_DIR/include/node/node_api.h" ] && export npm_config_nodedir="$NODE_DIR"
PATH="$(dirname "$(command -v "$NODE")"):$PATH"
echo "== build against $("$PYTHON" -c 'import torch; print(torch.__file__)')"
node scripts/find-libtorch.cjs
npx --no-install node-gyp rebuild --jobs max >/tmp/ak-device-build.log 2>&1 || { tail -30 /tmp/ak-device-build.log; exit 1; }
npx --no-install tsc -p .
node bin/adapterkit.js info
echo "== GPU tests"
node --test --test-reporter=spec dist/test/cuda.test.js dist/test/runtime.test.js
echo "== bench:train on the GPU"
BENCH_DEVICE=cuda BENCH_STEPS=${BENCH_STEPS:-10} node dist/bench/train.js
