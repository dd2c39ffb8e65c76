#!/usr/bin/env bash
# The end-to-end performance harness (benches/e2e.rs) in one command: installs the Python
# yardstick's client (confluent-kafka, into var/venv), starts a local broker unless
# KAFKA_BOOTSTRAP is set, and prints the table quoted in docs/BENCHMARKS.md.
#
#   scripts/bench.sh                     # 100,000 articles; 10 / 1,000 / 10,000 rules
#   VIGIE_BENCH_ARTICLES=20000 VIGIE_BENCH_RULES=1000 scripts/bench.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
VIGIE_PYTHON=$(scripts/setup.sh)
export VIGIE_PYTHON
started=0
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  KAFKA_BOOTSTRAP=$(scripts/broker.sh start)
  started=1
fi
export KAFKA_BOOTSTRAP
trap '[ "$started" = 1 ] && scripts/broker.sh stop' EXIT
cargo bench --bench e2e
