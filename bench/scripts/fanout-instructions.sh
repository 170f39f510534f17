#!/bin/bash
# Instructions per fan-out delivery, for the hand-written baseline, rohrpost's groups and the
# todo demo: stable where CPU times on a shared machine are not (they move by 15% from one
# hour to the next).
#
# Two `fanout` runs with every server under callgrind, which differ only in the number of
# updates; each server's instruction count of the second minus the first, over the
# deliveries between them (so the handshakes and subscribes drop out).
#
#   cargo build --release -p rohrpost-bench
#   bench/scripts/fanout-instructions.sh                          # Ir per delivery
#   CG_EXTRA=--cache-sim=yes bench/scripts/fanout-instructions.sh  # and simulated misses
#
# S subscribers (1000), U1 and U2 updates (20, 120); BIN the bench binary (relative paths
# from the repository's root). Needs valgrind and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=${S:-1000}; U1=${U1:-20}; U2=${U2:-120}
BIN=${BIN:-target/release/rohrpost-bench}
CG_EXTRA=${CG_EXTRA:-}
for tool in valgrind python3; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "no bench binary at $BIN: cargo build --release -p rohrpost-bench" >&2; exit 1; }
OUT=$(mktemp -d)
for U in "$U1" "$U2"; do
  mkdir -p "$OUT/$U"
  if ! ROHRPOST_BENCH_SERVER_PREFIX="valgrind --tool=callgrind $CG_EXTRA --callgrind-out-file=$OUT/$U/cg.%p" \
    "$BIN" fanout --subscribers "$S" --updates "$U" --rounds 1 >"$OUT/$U/log" 2>&1; then
    echo "the fanout run with $U updates failed; its output ends:" >&2
    tail -20 "$OUT/$U/log" >&2
    exit 1
  fi
done
python3 - "$OUT" "$S" "$((U2 - U1))" "$U1" "$U2" <<'PY'
import glob, sys
out, subscribers, updates = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = sys.argv[4:6]

def totals(run, kind):
    """The event totals of the callgrind file whose command served `kind`."""
    for path in glob.glob(f"{out}/{run}/cg.*"):
        lines = open(path).read().splitlines()
        cmd = next((l for l in lines if l.startswith("cmd:")), "")
        if f" serve {kind} " in cmd + " ":
            events = next(l for l in lines if l.startswith("events:")).split()[1:]
            summary = next(l for l in lines if l.startswith("summary:")).split()[1:]
            return dict(zip(events, map(int, summary)))
    sys.exit(f"no callgrind file for the {kind} server of the run with {run} updates in {out}")

for kind in ["fanout-baseline", "rohrpost-groups", "todo"]:
    first, second = (totals(run, kind) for run in runs)
    per = "  ".join(f"{e} {(second[e] - first[e]) / (subscribers * updates):.1f}" for e in first)
    print(f"{kind:<16} {per}")
PY
echo "callgrind files in $OUT (callgrind_annotate shows where they go)"
