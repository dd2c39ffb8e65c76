#!/usr/bin/env bash
# Coverage-guided fuzzing of vigie's parsers with cargo fuzz (libFuzzer).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets (fuzz/fuzz_targets/, bodies in fuzz/bodies.rs): article, rawtext, query, text,
# rule_file, silence.
# The machines have one stable toolchain, so the targets are built without a sanitizer
# (`-s none`): Rust's own checks catch out-of-bounds access, and `-a` keeps debug
# assertions and integer-overflow checks on in the optimized build. Starting corpora are
# built here from real inputs (the seed articles in ../shared/seeds, `vigie generate`,
# the example rules), never committed. A crash leaves its input in fuzz/artifacts/TARGET/;
# copy it to fuzz/regressions/TARGET/ once fixed: tests/robustness.rs replays that folder.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(article rawtext query text rule_file silence)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cd "$here"
corpus=$here/fuzz/corpus
mkdir -p "$corpus"/{article,rawtext,query,text,rule_file,silence}
seeds=$here/../shared/seeds
if [ -d "$seeds" ]; then cp "$seeds"/* "$corpus/rawtext/"; cp "$seeds"/* "$corpus/text/"; fi
cargo build --release --quiet --bin vigie
./target/release/vigie generate --days 1 --rate 1 --surge-hours 2 --body-bytes 600 \
  --output "$corpus/generated.jsonl"
split -l 1 "$corpus/generated.jsonl" "$corpus/article/gen-"
cp config/rules/*.toml "$corpus/rule_file/"
{ grep -h '^query = ' config/rules/*.toml || true; } | sed -E "s/^query = ['\"](.*)['\"]$/\1/" |
  split -l 1 - "$corpus/query/rule-"
printf '%s' '"état d'"'"'urgence" NEAR/5 (Almaty OR Алматы) AND NOT sport' > "$corpus/query/hand-1"
printf '%s' 'country:KZ AND entity:tokayev' > "$corpus/query/hand-2"
printf '\002%s\n%s' 'Protests Spread Across Almaty' 'Salvador Allende, New Mexico, Jordan Bardella, É.-U. and the US; guinea pigs in Conakry.' > "$corpus/text/hand-1"
printf '%s' '{"rule": "kazakh*", "duration": "3d", "comment": "known story", "created_by": "desk"}' > "$corpus/silence/hand-1"
printf '%s' '{"rule": "*", "channel": "newsroom", "starts_at": "2022-01-09T00:00:00Z", "ends_at": "2022-01-10T06:00:00+01:00", "comment": "why"}' > "$corpus/silence/hand-2"
printf '%s' 'mon-fri 17:30' > "$corpus/silence/hand-3"
printf '%s' 'sat,sun 22:00-07:00' > "$corpus/silence/hand-4"
printf '\001%s\n%s' 'Les montagnes russes' "Au Nouveau-Mexique, l'Écosse et la Géorgie (Atlanta) ; Kazakhstan, Алматы." > "$corpus/text/hand-2"

for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  cargo fuzz run -s none -O -a "$t" "$corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 -timeout=10 -print_final_stats=1 \
    2>&1 | grep -E '^(#[0-9]+ +DONE|stat::|==|SUMMARY|thread .* panicked|Test unit written|INFO: seed corpus)' || true
  if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
    echo "!! $t left crashing inputs in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
