#!/usr/bin/env bash
# Start (or stop) a real vLLM OpenAI-compatible server on 127.0.0.1 for the integration
# tests, serving the tiny random-weight Llama from scripts/make_tiny_llama.py.
#
#   scripts/vllm_server.sh start VENV MODEL_DIR [PORT [PRESET]]   # builds the model if
#                                                                  # missing, waits
#   scripts/vllm_server.sh stop [PORT]
#   scripts/vllm_server.sh presets                                 # lists the presets
#
# VENV is a virtualenv with vLLM's CPU build (see DEVELOPERS.md). Prints the exports
# the tests read (CRITPATH_VLLM_URL, CRITPATH_VLLM_MODEL, CRITPATH_VLLM_MODEL_PATH).
#
# PRESET picks the serving flags (docs/SERVING.md says why each serves its goal):
#   default          what CI and the integration tests use: --max-num-seqs 2 (a queue
#                    on this tiny machine, so priority scheduling shows), priority
#                    scheduling, tool calling (hermes parser), compact JSON for
#                    typed answers (no free whitespace in structured outputs)
#   low-ttft         many sequences (no queue), a large prefill budget per step,
#                    prefix caching on, priority scheduling
#   low-itl          few sequences, a small token budget per step (chunked prefill
#                    cannot stall decoding for long), n-gram speculative decoding
#   throughput       many sequences and a large token budget per step
#   batch1 | batch4 | batch16    --max-num-seqs 1 / 4 / 16 (the batching trade-off)
#   no-prefix-cache  the default without prefix caching
#   spec-ngram       the default with n-gram speculative decoding (3 tokens)
# VLLM_EXTRA_ARGS (split on spaces) is appended to any preset.
set -euo pipefail
cmd=${1:-}
here=$(cd "$(dirname "$0")" && pwd)

# The tool-calling flags: the tiny model's chat template ignores tools, so its answers
# are never parsed as calls, but the server starts and answers requests that carry tools.
tools=(--enable-auto-tool-choice --tool-call-parser hermes)
# Typed answers: random weights pad JSON with whitespace until max_tokens unless the
# grammar forbids free whitespace.
compact=(--structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}')
ngram=(--speculative-config '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}')
presets="default low-ttft low-itl throughput batch1 batch4 batch16 no-prefix-cache spec-ngram"
# Sets the array `flags` to PRESET's flags; fails on an unknown preset.
preset_flags() {
  case "$1" in
  default)         flags=(--max-num-seqs 2 --scheduling-policy priority "${tools[@]}"
                          "${compact[@]}") ;;
  low-ttft)        flags=(--max-num-seqs 16 --max-num-batched-tokens 2048 --enable-prefix-caching
                          --scheduling-policy priority "${tools[@]}") ;;
  low-itl)         flags=(--max-num-seqs 4 --max-num-batched-tokens 512 "${ngram[@]}" "${tools[@]}") ;;
  throughput)      flags=(--max-num-seqs 64 --max-num-batched-tokens 4096 "${tools[@]}") ;;
  batch1)          flags=(--max-num-seqs 1 "${tools[@]}") ;;
  batch4)          flags=(--max-num-seqs 4 "${tools[@]}") ;;
  batch16)         flags=(--max-num-seqs 16 "${tools[@]}") ;;
  no-prefix-cache) flags=(--max-num-seqs 2 --scheduling-policy priority --no-enable-prefix-caching
                          "${tools[@]}") ;;
  spec-ngram)      flags=(--max-num-seqs 2 --scheduling-policy priority "${ngram[@]}" "${tools[@]}") ;;
  *) return 1 ;;
  esac
}

case "$cmd" in
start)
  venv=$2; model_dir=$3; port=${4:-8011}; preset=${5:-default}
  if ! preset_flags "$preset"; then
    echo "unknown preset $preset; $0 presets lists them" >&2; exit 2
  fi
  if [ ! -f "$model_dir/config.json" ]; then
    "$venv/bin/python" "$here/make_tiny_llama.py" "$model_dir" >&2
  fi
  log=${VLLM_LOG:-/tmp/critpath-vllm-$port.log}
  # shellcheck disable=SC2086  # VLLM_EXTRA_ARGS is a word list on purpose
  VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} nohup "$venv/bin/python" -m vllm.entrypoints.openai.api_server \
    --model "$model_dir" --served-model-name tiny-llama --host 127.0.0.1 --port "$port" \
    --enforce-eager --dtype float32 --max-model-len 512 \
    "${flags[@]}" ${VLLM_EXTRA_ARGS:-} > "$log" 2>&1 &
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
presets)
  for p in $presets; do preset_flags "$p"; printf '%-16s %s\n' "$p" "${flags[*]}"; done
  ;;
*)
  echo "usage: $0 start VENV MODEL_DIR [PORT [PRESET]] | stop [PORT] | presets" >&2; exit 2 ;;
esac
