#!/usr/bin/env bash
# Runs the whole test suite: format and lint checks, unit tests, and the integration tests
# against a real Kafka-API broker (Tansu, or KAFKA_BOOTSTRAP), a real SMTP server
# (aiosmtpd) and real HTTP receivers. Installs what it needs first.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

PYTHON=$(scripts/setup.sh --durable-broker)
export PYTHON
export TANSU_DURABLE_BIN=$here/var/tansu/bin/tansu
started_broker=0
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  KAFKA_BOOTSTRAP=$(scripts/broker.sh start)
  started_broker=1
fi
export KAFKA_BOOTSTRAP
trap '[ "$started_broker" = 1 ] && scripts/broker.sh stop' EXIT
echo "broker: $KAFKA_BOOTSTRAP"

if rustup component list --installed 2>/dev/null | grep -q rustfmt; then
  cargo fmt --check
fi
if rustup component list --installed 2>/dev/null | grep -q clippy; then
  cargo clippy --all-targets --quiet -- -D warnings
fi
# Benchmarks are compiled by clippy above and run by `cargo bench` (docs/BENCHMARKS.md).
mkdir -p var
set +e
cargo test 2>&1 | tee var/test-output.log
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' var/test-output.log
exit "$status"
