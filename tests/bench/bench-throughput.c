/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* 100 000 tiny calls ("(i)" echoed) queued at once, on 1 and 2 workers,
 * and also at pipeline-depth 32 when the pool has that property.  Reports
 * calls/s and the CPU each call costs the parent and the workers.
 *
 * Baseline, in the same run: a bare exchange of the same messages over
 * socketpairs with forked children that echo what they read, the parent
 * polling non-blocking descriptors as a main loop does.  Each library case
 * is set against the bare exchange with the same number of children and
 * the same window of messages in flight per child (1 for pipeline-depth 1,
 * 32 for depth 32); the last rows set the library's best against a fully
 * pipelined exchange, where the parent writes every message before it
 * needs a reply.
 *
 * Python's multiprocessing.Pool on the same workload is measured by
 * peers.sh, which reads this program's --tsv output.
 *
 * Counting instructions per call
 * ------------------------------
 * The measured part of each case runs inside bench_throughput_measured(),
 * so callgrind can be told to count only that:
 *
 *   DC_BENCH_SCALE=0.05 valgrind --tool=callgrind --trace-children=no \
 *       --toggle-collect=bench_throughput_measured \
 *       --callgrind-out-file=cg.%p ./bench-throughput 1w.d1
 *
 * Forked children stay under valgrind (--trace-children concerns exec, not
 * fork) and write their own cg.<pid> files; those forked mid-run inherit
 * the counts collected so far, so the parent's file is the one with the
 * lowest pid among those with a large "totals:" line.  Divide its Ir by the
 * calls made inside the toggled function (warm-up and run: 5 000 and
 * 100 000 calls per case and round, times DC_BENCH_SCALE), and read the hot
 * spots with `callgrind_annotate --inclusive=yes cg.<pid>`.
 */

#define _GNU_SOURCE

#include "bench-common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Non-static and never inlined, so a profiler can toggle on its name. */
void bench_throughput_measured (DcDetachedCode *pool, GVariant *args, guint n,
                                double *enqueue_s, double *total_s);

typedef struct
{
  DcDetachedCode *pool;
  guint           n;
  guint           done;
  guint           failed;
  char           *first_error;
} Run;

static Run current;

static void
call_cb (GObject      *source,
         GAsyncResult *result,
         gpointer      data)
{
  Run *run = data;
  GError *error = NULL;
  GVariant *value = dc_detached_code_call_finish (run->pool, result, &error);

  if (value == NULL)
    {
      if (run->failed++ == 0)
        run->first_error = g_strdup (error->message);
      g_error_free (error);
    }
  else
    g_variant_unref (value);

  if (++run->done == run->n)
    bench_loop_quit ();
}

G_GNUC_NO_INLINE void
bench_throughput_measured (DcDetachedCode *pool,
                           GVariant       *args,
                           guint           n,
                           double         *enqueue_s,
                           double         *total_s)
{
  gint64 t0, t1, t2;
  guint i;

  g_free (current.first_error);
  memset (&current, 0, sizeof current);
  current.pool = pool;
  current.n = n;

  t0 = bench_now_ns ();
  for (i = 0; i < n; i++)
    dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, call_cb, &current);
  t1 = bench_now_ns ();
  if (!bench_loop_run (300))
    bench_fail ("hang: %u of %u queued calls completed in 300 s", current.done, n);
  t2 = bench_now_ns ();

  *enqueue_s = (t1 - t0) / 1e9;
  *total_s = (t2 - t0) / 1e9;
}

typedef struct
{
  double calls_per_s;
  double enqueue_us;      /* per call, the call_async() loop alone */
  double parent_cpu_us;   /* per call */
  double worker_cpu_us;   /* per call, all workers together */
  gboolean ok;
} LibResult;

static double
workers_cpu_us (DcDetachedCode *pool)
{
  guint n_pids = 0, i;
  g_autofree GPid *pids = dc_detached_code_get_worker_pids (pool, &n_pids);
  double sum = 0;

  for (i = 0; i < n_pids; i++)
    {
      double v = bench_pid_cpu_us (pids[i]);

      if (v < 0)
        return -1;
      sum += v;
    }
  return sum;
}

static LibResult
run_library (guint    workers,
             guint    depth,
             GVariant *args,
             guint    n)
{
  LibResult res = { 0, };
  DcDetachedCode *pool = depth > 0
    ? bench_pool_new (bench_echo_code, NULL, workers, "pipeline-depth", depth, NULL)
    : bench_pool_new (bench_echo_code, NULL, workers, NULL);
  double enqueue_s, total_s, cpu0, wcpu0;

  bench_throughput_measured (pool, args, bench_count (5000, 100), &enqueue_s, &total_s);
  if (current.failed > 0 || current.done != current.n)
    {
      bench_fail ("warm-up: %u of %u calls failed (%s)", current.failed, current.n,
                  current.first_error ? current.first_error : "lost");
      bench_pool_destroy (pool);
      return res;
    }

  cpu0 = bench_self_cpu_us ();
  wcpu0 = workers_cpu_us (pool);
  bench_throughput_measured (pool, args, n, &enqueue_s, &total_s);
  res.parent_cpu_us = (bench_self_cpu_us () - cpu0) / n;
  res.worker_cpu_us = wcpu0 < 0 ? -1 : (workers_cpu_us (pool) - wcpu0) / n;
  res.calls_per_s = current.done / total_s;
  res.enqueue_us = enqueue_s * 1e6 / n;
  res.ok = current.failed == 0 && current.done == n;
  if (current.failed > 0)
    bench_fail ("%u workers, depth %u: %u of %u calls failed; first: %s",
                workers, depth, current.failed, n, current.first_error);
  if (dc_detached_code_get_n_workers (pool) != workers)
    bench_fail ("%u workers, depth %u: %u workers alive after the run",
                workers, depth, dc_detached_code_get_n_workers (pool));

  bench_pool_destroy (pool);
  return res;
}

/* ---- the bare exchange ---- */

/* Answers whole messages as they arrive, in as few writes as it can. */
static void
pipelined_reply_peer (int      fd,
                      gpointer data)
{
  const BenchFrames *frames = data;
  gsize cap = 64 * 1024;
  g_autofree guint8 *buf = g_malloc0 (cap);
  g_autofree guint8 *out = NULL;
  gsize out_cap = frames->reply * (cap / frames->call + 1);
  gsize leftover = 0;

  out = g_malloc0 (out_cap);
  for (;;)
    {
      ssize_t n = read (fd, buf, cap);
      gsize total, whole;

      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      total = leftover + (gsize) n;
      whole = total / frames->call;
      leftover = total % frames->call;
      if (whole > 0 && !bench_write_full (fd, out, whole * frames->reply))
        break;
    }
}

typedef struct
{
  double msgs_per_s;
  double parent_cpu_us;
  double child_cpu_us;
} BareResult;

typedef struct
{
  BenchPeer peer;
  gsize     send_quota;
  gsize     receive_quota;
  gsize     sent;
  gsize     received;
} BareChild;

/* @window: messages in flight per child; 0 = no limit. */
static BareResult
run_bare (guint              n_children,
          guint              window,
          guint              n,
          const BenchFrames *frames)
{
  BareResult res = { 0, };
  BareChild children[8];
  struct pollfd fds[8];
  g_autofree guint8 *out = NULL;
  g_autofree guint8 *scratch = g_malloc (64 * 1024);
  gsize max_quota = 0;
  guint i, left;
  gint64 t0, t1;
  double cpu0, ccpu0 = 0, ccpu1 = 0;

  g_assert (n_children <= G_N_ELEMENTS (children));

  for (i = 0; i < n_children; i++)
    {
      guint msgs = n / n_children + (i < n % n_children ? 1 : 0);

      children[i].peer = bench_peer_spawn (pipelined_reply_peer, (gpointer) frames);
      children[i].send_quota = (gsize) msgs * frames->call;
      children[i].receive_quota = (gsize) msgs * frames->reply;
      children[i].sent = children[i].received = 0;
      max_quota = MAX (max_quota, children[i].send_quota);
      fcntl (children[i].peer.fd, F_SETFL, fcntl (children[i].peer.fd, F_GETFL) | O_NONBLOCK);
      ccpu0 += MAX (bench_pid_cpu_us (children[i].peer.pid), 0);
    }
  out = g_malloc0 (max_quota);

  cpu0 = bench_self_cpu_us ();
  t0 = bench_now_ns ();
  left = n_children;
  while (left > 0)
    {
      for (i = 0; i < n_children; i++)
        {
          BareChild *c = &children[i];
          gsize limit = c->send_quota;

          /* Writes what the window allows, without waiting to be told. */
          if (window > 0)
            limit = MIN (limit, (c->received / frames->reply + window) * frames->call);
          while (c->sent < limit)
            {
              ssize_t w = write (c->peer.fd, out + c->sent, limit - c->sent);

              if (w < 0 && errno == EINTR)
                continue;
              if (w < 0 && errno == EAGAIN)
                break;
              if (w <= 0)
                g_error ("bare exchange: write: %s", g_strerror (errno));
              c->sent += (gsize) w;
            }

          fds[i].fd = c->received < c->receive_quota ? c->peer.fd : -1;
          fds[i].events = POLLIN | (c->sent < limit ? POLLOUT : 0);
          fds[i].revents = 0;
        }

      if (poll (fds, n_children, -1) < 0 && errno != EINTR)
        g_error ("poll: %s", g_strerror (errno));

      for (i = 0; i < n_children; i++)
        {
          BareChild *c = &children[i];

          if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
          for (;;)
            {
              ssize_t r = read (c->peer.fd, scratch, 64 * 1024);

              if (r < 0 && errno == EINTR)
                continue;
              if (r < 0 && errno == EAGAIN)
                break;
              if (r <= 0)
                g_error ("bare exchange: child went away");
              c->received += (gsize) r;
              if (c->received == c->receive_quota)
                {
                  left--;
                  break;
                }
            }
        }
    }
  t1 = bench_now_ns ();

  res.msgs_per_s = n / ((t1 - t0) / 1e9);
  res.parent_cpu_us = (bench_self_cpu_us () - cpu0) / n;
  for (i = 0; i < n_children; i++)
    ccpu1 += MAX (bench_pid_cpu_us (children[i].peer.pid), 0);
  res.child_cpu_us = (ccpu1 - ccpu0) / n;
  for (i = 0; i < n_children; i++)
    bench_peer_finish (&children[i].peer);
  return res;
}

typedef struct
{
  const char *key;
  guint       workers;
  guint       depth;     /* 0: the property is not set */
  LibResult   lib;
  BareResult  bare;
} Case;

#define ROUNDS bench_rounds (3)

int
main (int   argc,
      char *argv[])
{
  g_autoptr(GVariant) args = NULL;
  gboolean have_depth;
  Case cases[4];
  BareResult unbounded[3];
  guint n_cases = 0, n, i, r;
  BenchFrames frames;
  DcDetachedCode *probe;
  double best[3] = { 0, 0, 0 };

  bench_init (&argc, &argv, "bench-throughput: tiny calls (\"(i)\" echoed) queued at once");

  have_depth = bench_have_pipeline_depth ();
  cases[n_cases++] = (Case) { "throughput.1w.d1", 1, 0 };
  cases[n_cases++] = (Case) { "throughput.2w.d1", 2, 0 };
  if (have_depth)
    {
      cases[n_cases++] = (Case) { "throughput.1w.d32", 1, 32 };
      cases[n_cases++] = (Case) { "throughput.2w.d32", 2, 32 };
    }
  memset (unbounded, 0, sizeof unbounded);

  args = g_variant_ref_sink (g_variant_new ("(i)", 424242));
  probe = bench_pool_new (bench_echo_code, NULL, 1, NULL);
  if (!bench_measure_frames (probe, args, 64, &frames))
    return bench_finish ();
  bench_pool_destroy (probe);
  n = bench_count (100000, 1000);

  /* Alternating rounds, each side's best kept: noise from other tenants
   * only ever slows a round down. */
  for (r = 0; r < ROUNDS; r++)
    {
      for (i = 0; i < n_cases; i++)
        {
          Case *c = &cases[i];
          LibResult lib;
          BareResult bare;

          if (!bench_selected (c->key))
            continue;
          lib = run_library (c->workers, c->depth, args, n);
          bare = run_bare (c->workers, MAX (c->depth, 1), n, &frames);
          if (lib.ok && lib.calls_per_s > c->lib.calls_per_s)
            c->lib = lib;
          if (bare.msgs_per_s > c->bare.msgs_per_s)
            c->bare = bare;
          best[c->workers] = MAX (best[c->workers], c->lib.calls_per_s);
        }
      for (i = 1; i <= 2; i++)
        {
          g_autofree char *key = g_strdup_printf ("throughput.%uw.vs-bare-pipelined", i);
          BareResult bare;

          if (!bench_selected (key) || best[i] == 0)
            continue;
          bare = run_bare (i, 0, n, &frames);
          if (bare.msgs_per_s > unbounded[i].msgs_per_s)
            unbounded[i] = bare;
        }
    }

  bench_table_begin ("calls/s, 100k queued at once (higher is better)");
  for (i = 0; i < n_cases; i++)
    {
      Case *c = &cases[i];
      g_autofree char *label = NULL;

      if (!bench_selected (c->key))
        continue;
      label = g_strdup_printf ("%u worker%s, pipeline-depth %u%s vs window %u",
                               c->workers, c->workers > 1 ? "s" : "", MAX (c->depth, 1),
                               c->depth == 0 ? " (default)" : "", MAX (c->depth, 1));
      bench_table_row (c->key, label, c->lib.calls_per_s, c->bare.msgs_per_s,
                       "calls/s", BENCH_NO_TARGET, 0);
    }
  for (i = 1; i <= 2; i++)
    {
      g_autofree char *key = g_strdup_printf ("throughput.%uw.vs-bare-pipelined", i);
      g_autofree char *label = NULL;

      if (unbounded[i].msgs_per_s == 0)
        continue;
      label = g_strdup_printf ("best of %u worker%s vs bare, no window",
                               i, i > 1 ? "s" : "");
      bench_table_row (key, label, best[i], unbounded[i].msgs_per_s, "calls/s",
                       BENCH_NO_TARGET, 0);
    }
  if (!have_depth)
    bench_table_note ("no \"pipeline-depth\" property in this build: depth-32 cases skipped");
  bench_table_note ("%u calls per case, best of %u alternating rounds, each after a warm-up; "
                    "%" G_GSIZE_FORMAT " bytes per call and %" G_GSIZE_FORMAT " per reply, "
                    "frames included (%s)", n, ROUNDS, frames.call, frames.reply,
                    frames.how);
  bench_table_note ("baseline \"window W\": bare children echo, the parent keeps W messages "
                    "in flight per child; \"no window\": it writes all before reading");
  bench_table_note ("Python multiprocessing.Pool (the DESIGN target's peer, >= 8x at depth 32) is "
                    "measured by peers.sh");

  bench_table_begin ("CPU per call in the best round, getrusage(RUSAGE_SELF) and /proc/PID/stat "
                     "(lower is better)");
  for (i = 0; i < n_cases; i++)
    {
      Case *c = &cases[i];
      g_autofree char *key_p = g_strdup_printf ("%s.parent_cpu", c->key);
      g_autofree char *key_w = g_strdup_printf ("%s.worker_cpu", c->key);
      g_autofree char *key_e = g_strdup_printf ("%s.enqueue", c->key);
      g_autofree char *label_p = NULL;
      g_autofree char *label_w = NULL;
      g_autofree char *label_e = NULL;

      if (!bench_selected (c->key))
        continue;
      label_p = g_strdup_printf ("parent, %uw depth %u", c->workers, MAX (c->depth, 1));
      label_w = g_strdup_printf ("workers (sum), %uw depth %u", c->workers, MAX (c->depth, 1));
      label_e = g_strdup_printf ("call_async() alone, %uw depth %u", c->workers, MAX (c->depth, 1));
      bench_table_row (key_p, label_p, c->lib.parent_cpu_us, c->bare.parent_cpu_us,
                       "us/call", BENCH_NO_TARGET, 0);
      bench_table_row (key_w, label_w, c->lib.worker_cpu_us, c->bare.child_cpu_us,
                       "us/call", BENCH_NO_TARGET, 0);
      bench_table_row (key_e, label_e, c->lib.enqueue_us, 0, "us/call", BENCH_NO_TARGET, 0);
    }
  bench_table_note ("worker CPU has clock-tick resolution (%.0f ms per case)",
                    1000.0 / sysconf (_SC_CLK_TCK));
  bench_table_note ("instructions per call: see the comment at the top of bench-throughput.c "
                    "or tests/bench/README.md (callgrind --toggle-collect)");

  g_free (current.first_error);
  return bench_finish ();
}
