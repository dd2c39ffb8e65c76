#!/usr/bin/env bash
# The whole product on one machine: a Kafka-API broker (Tansu), a mail catcher (aiosmtpd),
# a webhook catcher, vigie with the example config in config/, and a generated feed in
# which coverage of Kazakhstan surges. Shows the alerts that vigie sends.
#
#   scripts/demo.sh            run, show the alerts, stop everything
#   KEEP=1 scripts/demo.sh     leave vigie running (http://127.0.0.1:8080) until Ctrl-C
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
demo=var/demo
rm -rf "$demo" && mkdir -p "$demo/mail/new" "$demo/mail/cur" "$demo/mail/tmp"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing tools (Python venv with Tansu and aiosmtpd) and building vigie"
PYTHON=$(scripts/setup.sh)
export PYTHON
cargo build --release --quiet
vigie=target/release/vigie

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

step "starting the broker, the mail catcher and the webhook catcher"
brokers=$(scripts/broker.sh start)
echo "broker: $brokers"
"$PYTHON" -m aiosmtpd -n -l 127.0.0.1:2525 -c aiosmtpd.handlers.Mailbox "$demo/mail" & pids+=($!)
"$PYTHON" scripts/webhook_catcher.py 8025 demo-secret "$demo/webhooks.jsonl" & pids+=($!)

topic="demo-articles-$(date +%s)"
step "generating 10 days of news ending now, with a Kazakhstan surge, and publishing to $topic"
"$vigie" generate --scenario kazakhstan-unrest --seed 2022 --days 10 -o "$demo/feed.jsonl"
"$vigie" publish --brokers "$brokers" --topic "$topic" "$demo/feed.jsonl"

step "running vigie with config/ (channels added from the environment)"
export VIGIE_KAFKA__BROKERS="$brokers" VIGIE_KAFKA__TOPIC="$topic" VIGIE_KAFKA__GROUP_ID="demo-$topic"
export VIGIE_STATE__PATH="$demo/state.db" VIGIE_HTTP__LISTEN=127.0.0.1:8080
export VIGIE_SMTP__HOST=127.0.0.1 VIGIE_SMTP__PORT=2525 VIGIE_SMTP__TLS=none VIGIE_SMTP__FROM="vigie <vigie@localhost>"
export VIGIE_CHANNELS__MAIL__TYPE=email VIGIE_CHANNELS__MAIL__TO='["desk@localhost"]'
export VIGIE_CHANNELS__HOOK__TYPE=webhook VIGIE_CHANNELS__HOOK__URL=http://127.0.0.1:8025/hook VIGIE_CHANNELS__HOOK__SECRET=demo-secret
export VIGIE_ALERTS__DEFAULT_NOTIFY='["log", "mail", "hook"]'
"$vigie" check --config config
"$vigie" run --config config 2>"$demo/vigie.log" & pids+=($!)
echo "log: $demo/vigie.log"

step "waiting for the feed to be processed"
for _ in $(seq 1 120); do
  n=$(curl -sf http://127.0.0.1:8080/metrics | awk '/^vigie_articles_processed_total/ {print $2}' || true)
  total=$(wc -l < "$demo/feed.jsonl")
  if [ -n "$n" ] && [ "${n%.*}" -ge "$total" ]; then break; fi
  sleep 1
done
sleep 3
echo "articles processed: ${n:-0}"

"$PYTHON" scripts/demo_report.py http://127.0.0.1:8080 "$demo"

if [ "${KEEP:-0}" = 1 ]; then
  step "vigie keeps running: http://127.0.0.1:8080/ (dashboard), /api/rules, /metrics; Ctrl-C to stop"
  wait
fi
