#!/usr/bin/env bash
# Start (or stop) a real vLLM OpenAI-compatible server on 127.0.0.1 for the integration
# tests, serving the tiny random-weight Llama from scripts/make_tiny_llama.py.
#
#   scripts/vllm_server.sh start VENV MODEL_DIR [PORT]   # builds the model if missing, waits
#   scripts/vllm_server.sh stop [PORT]
#
# VENV is a virtualenv with vLLM's CPU build (see DEVELOPERS.md). Prints the exports
# the tests read (CRITPATH_VLLM_URL, CRITPATH_VLLM_MODEL, CRITPATH_VLLM_MODEL_PATH).
set -euo pipefail
cmd=${1:-}
here=$(cd "$(dirname "$0")" && pwd)
case "$cmd" in
start)
  venv=$2; model_dir=$3; port=${4:-8011}
  if [ ! -f "$model_dir/config.json" ]; then
    "$venv/bin/python" "$here/make_tiny_llama.py" "$model_dir" >&2
  fi
  log=${VLLM_LOG:-/tmp/critpath-vllm-$port.log}
  # --max-num-seqs 2 keeps a queue on this tiny machine, so priority scheduling shows.
  VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} nohup "$venv/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$model_dir" --served-model-name tiny-llama --host 127.0.0.1 --port "$port" \
    --enforce-eager --dtype float32 --max-model-len 512 --max-num-seqs 2 \
    --scheduling-policy priority > "$log" 2>&1 &
  echo $! > "/tmp/critpath-vllm-$port.pid"
  for _ in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null; then break; fi
    if ! kill -0 "$(cat "/tmp/critpath-vllm-$port.pid")" 2>/dev/null; then
      echo "vLLM server exited; log:" >&2; tail -50 "$log" >&2; exit 1
    fi
    sleep 1
  done
  curl -sf "http://127.0.0.1:$port/v1/models" > /dev/null || { echo "vLLM did not start; log:" >&2; tail -50 "$log" >&2; exit 1; }
  # The first request compiles and warms up (~15 s); do it here, not in a test.
  curl -sf "http://127.0.0.1:$port/v1/completions" -H 'content-type: application/json' \
    -d '{"model":"tiny-llama","prompt":"warm up","max_tokens":4}' > /dev/null
  echo "export CRITPATH_VLLM_URL=http://127.0.0.1:$port/v1"
  echo "export CRITPATH_VLLM_MODEL=tiny-llama"
  echo "export CRITPATH_VLLM_MODEL_PATH=$model_dir"
  ;;
stop)
  port=${2:-8011}
  if [ -f "/tmp/critpath-vllm-$port.pid" ]; then
    kill "$(cat "/tmp/critpath-vllm-$port.pid")" 2>/dev/null || true
    rm -f "/tmp/critpath-vllm-$port.pid"
  fi
  ;;
*)
  echo "usage: $0 start VENV MODEL_DIR [PORT] | stop [PORT]" >&2; exit 2 ;;
esac
