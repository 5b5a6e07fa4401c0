#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The library beside other process pools on the same workloads, in the
# same run:
#   - 100 000 tiny calls queued at once (an int echoed), 1 and 2 workers;
#   - a 1 MiB bytes argument echoed, one call at a time, 1 worker.
# Peers: Python's multiprocessing.Pool (apply_async) and
# concurrent.futures.ProcessPoolExecutor with /usr/bin/python3, and Perl's
# IO::Async::Function when `perl -MIO::Async::Function -e1` works.
#
#   peers.sh BENCH-THROUGHPUT BENCH-BANDWIDTH
#
# The library's figures come from the built bench programs' --tsv output
# (two rounds each, best kept: DC_BENCH_ROUNDS=2).  DC_BENCH_SCALE scales every count.
#
# DESIGN target: 100k tiny calls, 2 workers, pipeline-depth 32: >= 8x the
# calls/s of multiprocessing.Pool.apply_async.

set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 BENCH-THROUGHPUT BENCH-BANDWIDTH" >&2
  exit 2
fi
throughput=$1
bandwidth=$2
python=/usr/bin/python3
scale=${DC_BENCH_SCALE:-1}

if [ ! -x "$python" ]; then
  echo "# peers: $python not found, nothing to compare with"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

echo "# peers: the library beside other process pools, same workloads, same run"
echo "# scale $scale (DC_BENCH_SCALE), $(nproc) CPUs online"

# ---- the library ----

DC_BENCH_ROUNDS=2 "$throughput" --tsv w.d >"$tmp/lib-throughput.out"
DC_BENCH_ROUNDS=2 "$bandwidth" --tsv echo.1MiB >"$tmp/lib-bandwidth.out"
grep '^@tsv' "$tmp/lib-throughput.out" "$tmp/lib-bandwidth.out" | cut -f2,3 >"$tmp/lib.tsv" || true
if grep -q 'LIBRARY FAILURE' "$tmp/lib-throughput.out" "$tmp/lib-bandwidth.out"; then
  echo "# the library's own runs reported failures:"
  grep -h 'LIBRARY FAILURE' "$tmp/lib-throughput.out" "$tmp/lib-bandwidth.out"
fi

# ---- Python ----

"$python" - "$scale" >"$tmp/peers.tsv" <<'EOF'
import concurrent.futures
import multiprocessing
import sys
import time

scale = float(sys.argv[1])
N = max(1000, int(100000 * scale))
M = max(3, int(300 * scale))
SIZE = 1 << 20


def echo(x):
    return x


def report(key, value):
    print(f"{key}\t{value:.6g}", flush=True)


def tiny_pool(workers):
    with multiprocessing.Pool(workers) as pool:
        for r in [pool.apply_async(echo, (i,)) for i in range(1000)]:
            r.get()
        t0 = time.perf_counter()
        results = [pool.apply_async(echo, (424242,)) for _ in range(N)]
        for r in results:
            r.get()
        return N / (time.perf_counter() - t0)


def tiny_executor(workers):
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        for f in [ex.submit(echo, i) for i in range(1000)]:
            f.result()
        t0 = time.perf_counter()
        futures = [ex.submit(echo, 424242) for _ in range(N)]
        for f in futures:
            f.result()
        return N / (time.perf_counter() - t0)


def big_pool():
    data = bytes(range(256)) * (SIZE // 256)
    with multiprocessing.Pool(1) as pool:
        assert pool.apply_async(echo, (data,)).get() == data
        t0 = time.perf_counter()
        for _ in range(M):
            pool.apply_async(echo, (data,)).get()
        return M * SIZE / (time.perf_counter() - t0) / (1 << 20)


def big_executor():
    data = bytes(range(256)) * (SIZE // 256)
    with concurrent.futures.ProcessPoolExecutor(1) as ex:
        assert ex.submit(echo, data).result() == data
        t0 = time.perf_counter()
        for _ in range(M):
            ex.submit(echo, data).result()
        return M * SIZE / (time.perf_counter() - t0) / (1 << 20)


# The Pool's figures are the DESIGN target's peer, so they go first.
report("pool.tiny.1w", tiny_pool(1))
report("pool.tiny.2w", tiny_pool(2))
report("executor.tiny.2w", tiny_executor(2))
report("pool.echo.1MiB", big_pool())
report("executor.echo.1MiB", big_executor())
EOF

# ---- Perl ----

have_perl=no
if command -v perl >/dev/null 2>&1 && perl -MIO::Async::Function -e1 2>/dev/null; then
  have_perl=yes
  perl - "$scale" >>"$tmp/peers.tsv" <<'EOF'
use strict;
use warnings;
use Future;
use IO::Async::Function;
use IO::Async::Loop;
use Time::HiRes qw(time);

my $scale = $ARGV[0];
# A quarter of the others' count: it runs at a few thousand calls/s, and
# the whole of peers.sh should stay near a minute.
my $N = int(25000 * $scale); $N = 1000 if $N < 1000;
my $M = int(300 * $scale); $M = 3 if $M < 3;
my $SIZE = 1 << 20;
$| = 1;

my $loop = IO::Async::Loop->new;

sub pool {
  my ($workers) = @_;
  my $function = IO::Async::Function->new(
    code        => sub { return $_[0] },
    min_workers => $workers,
    max_workers => $workers,
  );
  $loop->add($function);
  return $function;
}

{
  my $function = pool(2);
  Future->wait_all(map { $function->call(args => [$_]) } 1 .. 1000)->get;
  my $t0 = time;
  my @calls = map { $function->call(args => [424242]) } 1 .. $N;
  Future->wait_all(@calls)->get;
  printf "ioasync.tiny.2w\t%.6g\n", $N / (time - $t0);
  $loop->remove($function);
}

{
  my $function = pool(1);
  my $data = join '', map { chr($_ % 256) } 0 .. $SIZE - 1;
  die "echo differs\n" unless $function->call(args => [$data])->get eq $data;
  my $t0 = time;
  $function->call(args => [$data])->get for 1 .. $M;
  printf "ioasync.echo.1MiB\t%.6g\n", $M * $SIZE / (time - $t0) / (1 << 20);
  $loop->remove($function);
}
EOF
fi

# ---- the table ----

awk -F '\t' -v have_perl="$have_perl" '
  FNR == NR { lib[$1] = $2; next }
  { peer[$1] = $2 }
  function row(label, who, pv, lv, unit, target,    ratio, verdict) {
    ratio = (pv > 0 && lv > 0) ? lv / pv : 0
    verdict = ""
    if (target > 0)
      verdict = sprintf("ratio >= %.2f  %s", target, ratio >= target ? "met" : "MISSED")
    printf "%-30s %-38s %12s %12s %-8s %8s  %s\n", label, who,
           (pv > 0 ? sprintf("%.1f", pv) : "-"), (lv > 0 ? sprintf("%.1f", lv) : "-"), unit,
           (ratio > 0 ? sprintf("%.2fx", ratio) : "-"), verdict
  }
  END {
    # The library at its best depth for each worker count.
    for (w = 1; w <= 2; w++) {
      d32 = lib["throughput." w "w.d32"]; d1 = lib["throughput." w "w.d1"]
      if (d32 != "" && d32 + 0 > 0) { best[w] = d32; depth[w] = 32 }
      else { best[w] = d1; depth[w] = 1 }
    }
    print ""
    print "## library vs peers (ratio = library / peer, higher is better for the library)"
    printf "%-30s %-38s %12s %12s %-8s %8s  %s\n", "workload", "peer", "peer", "library",
           "unit", "ratio", "target"
    row("100k tiny calls, 1 worker", "multiprocessing.Pool.apply_async",
        peer["pool.tiny.1w"], best[1], "calls/s", 0)
    row("100k tiny calls, 2 workers", "multiprocessing.Pool.apply_async",
        peer["pool.tiny.2w"], best[2], "calls/s", 8)
    row("100k tiny calls, 2 workers", "concurrent.futures.ProcessPoolExecutor",
        peer["executor.tiny.2w"], best[2], "calls/s", 0)
    if (have_perl == "yes")
      row("100k tiny calls, 2 workers", "IO::Async::Function",
          peer["ioasync.tiny.2w"], best[2], "calls/s", 0)
    row("1 MiB echoed, 1 worker", "multiprocessing.Pool.apply_async",
        peer["pool.echo.1MiB"], lib["bandwidth.echo.1MiB"], "MiB/s", 0)
    row("1 MiB echoed, 1 worker", "concurrent.futures.ProcessPoolExecutor",
        peer["executor.echo.1MiB"], lib["bandwidth.echo.1MiB"], "MiB/s", 0)
    if (have_perl == "yes")
      row("1 MiB echoed, 1 worker", "IO::Async::Function",
          peer["ioasync.echo.1MiB"], lib["bandwidth.echo.1MiB"], "MiB/s", 0)
    printf "  note: library rows: 1 worker at pipeline-depth %d, 2 workers at pipeline-depth %d " \
           "(the best this build has)\n", depth[1], depth[2]
    if (have_perl == "yes")
      print "  note: IO::Async::Function gets 25k tiny calls (a quarter), to keep the run short"
    if (have_perl != "yes")
      print "  note: IO::Async::Function not installed (perl -MIO::Async::Function): skipped"
    print "  note: Python peers echo an int and a 1 MiB bytes object; the library echoes " \
          "\"(i)\" and \"(ay)\""
  }
' "$tmp/lib.tsv" "$tmp/peers.tsv"

if grep -q 'LIBRARY FAILURE' "$tmp/lib-throughput.out" "$tmp/lib-bandwidth.out"; then
  exit 1
fi
exit 0
