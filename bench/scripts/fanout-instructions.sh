#!/bin/bash
# Instructions per fan-out delivery, for rohrpost and the hand-written baseline: stable
# where CPU times on a shared machine are not (they move by 15% from one hour to the next).
#
# Two `fanout` runs with every server under callgrind, which differ only in the number of
# updates; each server's instruction count of the second minus the first, over the
# deliveries between them (so the handshakes and subscribes drop out).
#
#   cargo build --release -p rohrpost-bench
#   bench/scripts/fanout-instructions.sh                        # Ir per delivery
#   CG_EXTRA=--cache-sim=yes bench/scripts/fanout-instructions.sh  # and simulated misses
#
# S subscribers (1000), U1 and U2 updates (20, 120); BIN the bench binary. Needs valgrind.
set -euo pipefail
S=${S:-1000}; U1=${U1:-20}; U2=${U2:-120}
BIN=${BIN:-target/release/rohrpost-bench}
CG_EXTRA=${CG_EXTRA:-}
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
OUT=$(mktemp -d)
for U in $U1 $U2; do
  mkdir -p $OUT/$U
  ROHRPOST_BENCH_SERVER_PREFIX="valgrind --tool=callgrind $CG_EXTRA --callgrind-out-file=$OUT/$U/cg.%p" \
    $BIN fanout --subscribers $S --updates $U --rounds 1 >/dev/null 2>&1
done
python3 - $OUT $S $((U2-U1)) <<'PY'
import sys,glob
out,S,dU=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
def totals(d,kind):
    for f in glob.glob(d+'/cg.*'):
        txt=open(f).read()
        if ('serve %s '%kind) in txt[:400]:
            ev=[l for l in txt.splitlines() if l.startswith('events:')][0].split()[1:]
            su=[l for l in txt.splitlines() if l.startswith('summary:')][0].split()[1:]
            return dict(zip(ev,map(int,su)))
dirs=sorted(glob.glob(out+'/*'),key=lambda x:int(x.split('/')[-1]))
for kind in ['fanout-baseline','todo']:
    a,b=totals(dirs[0],kind),totals(dirs[1],kind)
    print(kind.ljust(16),'  '.join('%s %.1f'%(k,(b[k]-a[k])/(S*dU)) for k in a))
PY
echo "callgrind files in $OUT (callgrind_annotate shows where they go)"
