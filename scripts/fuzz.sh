#!/usr/bin/env bash
# `make fuzz`: runs each fuzz target of the protocols crate (protocols/fuzz/) for
# FUZZ_SECONDS (default 60) with cargo-fuzz and libFuzzer on the nightly toolchain, then
# prints executions and coverage per target. Exits non-zero if any target crashed, saying
# where libFuzzer left the input and how to replay it. FUZZ_TARGETS picks targets.
#
# Each run starts from the committed seeds (protocols/fuzz/seeds/TARGET, read only) and
# the corpus earlier runs grew (protocols/fuzz/corpus/TARGET, ignored by git, where new
# inputs go). Once a crash is fixed, copy its input to protocols/fuzz/crashes/TARGET/ and
# commit it: `make test` replays it from then on (protocols/tests/corpus.rs).
set -euo pipefail

cd "$(dirname "$0")/.."
FUZZ_DIR=protocols/fuzz
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-socks5_handshake resp echo packet pcap}
LOG_DIR=target/fuzz
mkdir -p "$LOG_DIR"

# libFuzzer ships with cargo-fuzz (libfuzzer-sys) and needs nightly's -Z sanitizer flags.
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: installing the nightly toolchain (rustup toolchain install nightly --profile minimal)" >&2
  rustup toolchain install nightly --profile minimal ||
    { echo "fuzz: no nightly toolchain: run 'rustup toolchain install nightly'" >&2; exit 2; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi

# The protocols crate has no `unsafe`, so AddressSanitizer would find nothing that safe
# Rust's bounds checks do not already catch, at half the speed: -s none. Debug assertions
# and overflow checks stay on (cargo-fuzz's default).
FUZZ=(cargo +nightly fuzz)
OPTS=(--fuzz-dir "$FUZZ_DIR" -s none)
"${FUZZ[@]}" build "${OPTS[@]}"

failed=()
summary=()
for t in $TARGETS; do
  mkdir -p "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/artifacts/$t"
  log="$LOG_DIR/$t.log"
  echo "fuzz: $t for ${SECONDS_EACH}s (log: $log)" >&2
  # -max_len: 4 KiB inputs are ample for these messages (the echo line limit, 64 KiB, is
  # swept by the replay test instead). RESP gets 1 KiB: the parser keeps no state, so the
  # caller re-parses a growing frame after every chunk, which is quadratic in the number
  # of chunks; at 4 KiB the target ran five times slower, for no coverage it lacks at 1 KiB.
  max_len=4096
  [ "$t" = resp ] && max_len=1024
  set +e
  # -timeout: an input that takes 10 s counts as a crash (a hang).
  "${FUZZ[@]}" run "${OPTS[@]}" "$t" "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/seeds/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -max_len="$max_len" -print_final_stats=1 \
    >"$log" 2>&1
  status=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  seeds_cov=$(grep -E '^#[0-9]+[[:space:]]+INITED' "$log" | sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' | tail -1)
  end_cov=$(grep -E '^#[0-9]+[[:space:]]+(DONE|NEW|REDUCE|pulse|INITED)' "$log" | sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' | tail -1)
  line=$(printf '%-18s executions %10s   coverage: %s edges, %s features (at start, from the seeds and the corpus kept: %s, %s)   new inputs %s' \
    "$t" "${execs:-?}" "${end_cov% *}" "${end_cov#* }" "${seeds_cov% *}" "${seeds_cov#* }" "${units:-?}")
  summary+=("$line")
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "fuzz: $t FAILED (exit $status); the check that failed:" >&2
    grep -m1 -A3 -E "panicked at|ERROR: libFuzzer" "$log" >&2 || tail -20 "$log" >&2
    echo "fuzz: the input is ${artifact:-in $FUZZ_DIR/artifacts/$t/}" >&2
    echo "fuzz: replay it: cargo +nightly fuzz run --fuzz-dir $FUZZ_DIR -s none $t ${artifact:-FILE}" >&2
    echo "fuzz: once fixed, copy it to $FUZZ_DIR/crashes/$t/ and commit it (make test replays it)" >&2
  fi
done

echo
echo "fuzz summary (${SECONDS_EACH}s per target):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
