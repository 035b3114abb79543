# Shell helpers shared by scripts/ (sourced, never run): `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.

# retry CMD...: up to RETRY_ATTEMPTS (default 5) attempts of CMD, backoff 2, 4, 8, 16 s (network flakes).
# Progress and the final failure go to stderr, prefixed with the calling script's name.
retry() {
  local attempt=1 delay=2 attempts=${RETRY_ATTEMPTS:-5} name
  name=$(basename "$0")
  until "$@"; do
    if ((attempt >= attempts)); then
      echo "$name: '$*' failed after $attempt attempts" >&2
      return 1
    fi
    echo "$name: '$1 ${2:-}' failed (attempt $attempt/$attempts), retrying in ${delay}s" >&2
    sleep "$delay"
    attempt=$((attempt + 1)) delay=$((delay * 2))
  done
}

# wait_for WHAT SECONDS PID TEST...: polls TEST WAIT_FOR_RATE times a second (default 10) while PID lives;
# calls the script's own `fail MESSAGE` when PID exits or SECONDS pass.
wait_for() {
  local what=$1 seconds=$2 pid=$3 rate=${WAIT_FOR_RATE:-10} poll
  shift 3
  poll=$(awk -v rate="$rate" 'BEGIN { print 1 / rate }')
  for _ in $(seq $((seconds * rate))); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || fail "$what: the process exited"
    sleep "$poll"
  done
  fail "$what: not within ${seconds}s"
}
