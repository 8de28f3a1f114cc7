#!/usr/bin/env bash
# The GPU check of issue #9, run on the GPU host from the repository root,
# with the bundle that scripts/build-cuda.sh made (target/gpu-bundle/, sent
# along as a carried path). Needs there: python3 with torch (CUDA), transformers,
# sentence-transformers, numpy; no Rust, no network. Prints every figure
# (JSON lines, then tables and the ratios); with $OUT set (the device tool),
# writes the results there. docs/gpu.md explains each figure.
#
#   scripts/gpu-check.sh                 on the GPU host (~3-5 min on an H100)
#   scripts/gpu-check.sh --cpu-dry-run   anywhere: a corpus slice, small search,
#                                        everything on the CPU (proves the plumbing)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
DRY=0
for arg in "$@"; do
    case $arg in
        --cpu-dry-run) DRY=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
BUNDLE=${GPU_BUNDLE:-target/gpu-bundle}
[ -f "$BUNDLE/gpu_check.xz" ] || { echo "no $BUNDLE/gpu_check.xz: run scripts/build-cuda.sh first" >&2; exit 1; }
WORK=$(mktemp -d /tmp/ragjet-gpu-check.XXXXXX)
RESULTS=${OUT:-$WORK}
t0=$(date +%s)
step() { printf '\n==> [%3ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

step "unpack the bundle into $WORK"
xz -dc "$BUNDLE/gpu_check.xz" >"$WORK/gpu_check"
chmod +x "$WORK/gpu_check"
if [ -f shared/fixtures/corpus.jsonl ]; then
    cp shared/fixtures/corpus.jsonl "$WORK/corpus.jsonl"
else
    xz -dc "$BUNDLE/corpus.jsonl.xz" >"$WORK/corpus.jsonl"
fi

step "random-weight model of all-MiniLM-L6-v2's architecture"
python3 scripts/gpu_check/make_model.py --src "$BUNDLE/model" --out "$WORK/model"

if [ "$DRY" = 1 ]; then
    ST_ARGS=(--limit 64 --cpu-dry-run)
    RJ_ARGS=(--device cpu --limit 64 --search-rows 20000 --search-queries 300
             --cpu-queries 300 --skip-real-oom)
else
    ST_ARGS=()
    RJ_ARGS=(--device cuda:0)
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

step "sentence-transformers: CPU f32 reference, fp16 throughput"
python3 scripts/gpu_check/st_reference.py --model "$WORK/model" --corpus "$WORK/corpus.jsonl" \
    --out-npy "$WORK/reference.npy" --out-json "$RESULTS/st.jsonl" "${ST_ARGS[@]}" \
    2> >(grep -v -e 'pooler.dense' -e '^Key ' -e '^---' -e 'LOAD REPORT' -e '^Notes' -e 'MISSING' >&2)

step "ragjet gpu_check"
# The CUDA 13 libraries of the host's torch wheels (cuBLAS, cuRAND, NVRTC);
# libcuda.so.1 comes from the driver. The binary dlopens them.
CU_LIB=$(python3 -c 'import nvidia, os
print(next((d for p in nvidia.__path__ for d in [os.path.join(p, "cu13", "lib")] if os.path.isdir(d)), ""))' 2>/dev/null || true)
echo "LD_LIBRARY_PATH += ${CU_LIB:-(no nvidia/cu13/lib in the site-packages of python3)}"
export LD_LIBRARY_PATH="${CU_LIB:+$CU_LIB:}${LD_LIBRARY_PATH:-}"
set +e
"$WORK/gpu_check" --model "$WORK/model" --corpus "$WORK/corpus.jsonl" --reference "$WORK/reference.npy" \
    --json-out "$RESULTS/ragjet.jsonl" "${RJ_ARGS[@]}" 2> >(tee "$RESULTS/ragjet-log.jsonl" >&2)
rc=$?
set -e
sleep 1 # let tee finish
[ $rc = 0 ] || { echo "gpu_check failed with status $rc" >&2; exit $rc; }

step "ratios"
python3 scripts/gpu_check/report.py --st "$RESULTS/st.jsonl" --ragjet "$RESULTS/ragjet.jsonl" \
    --log "$RESULTS/ragjet-log.jsonl" | tee "$RESULTS/summary.txt"
step "done; results in $RESULTS"
