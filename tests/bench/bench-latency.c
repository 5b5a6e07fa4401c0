/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* One call at a time on an idle one-worker pool, tiny arguments "(i)"
 * echoed back: the time from call_async() to the callback, against a bare
 * blocking socketpair ping-pong with a forked child moving the same number
 * of bytes each way.
 *
 * The two are measured in alternating rounds, so that a burst of noise on
 * the machine lands on both rather than on one.
 *
 * A third column, for orientation, drives the same bare ping-pong from a
 * GMainLoop (a g_unix_fd_add() source on the socket): the part of the
 * library's latency that any GLib main-loop client pays.
 *
 * DESIGN target: median latency <= 1.3x the ping-pong's.
 */

#include "bench-common.h"

#include <glib-unix.h>
#include <math.h>

#define ROUNDS bench_rounds (5)

typedef struct
{
  DcDetachedCode *pool;
  GVariant       *args;
  gint32          expect;
  double         *samples;
  guint           n;
  guint           done;
  gint64          t0;
  gboolean        failed;
} LatencyRun;

static void
latency_cb (GObject      *source,
            GAsyncResult *result,
            gpointer      data)
{
  LatencyRun *run = data;
  gint64 t1 = bench_now_ns ();
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (run->pool, result, &error);
  gint32 got = 0;

  if (value == NULL || !g_variant_is_of_type (value, G_VARIANT_TYPE ("(i)")))
    {
      bench_fail ("call %u failed: %s", run->done,
                  error ? error->message : "result of the wrong type");
      run->failed = TRUE;
      bench_loop_quit ();
      return;
    }
  g_variant_get (value, "(i)", &got);
  if (got != run->expect)
    {
      bench_fail ("call %u returned %d, not %d", run->done, got, run->expect);
      run->failed = TRUE;
    }

  if (run->samples != NULL)
    run->samples[run->done] = (t1 - run->t0) / 1000.0;
  run->done++;

  if (run->done == run->n || run->failed)
    {
      bench_loop_quit ();
      return;
    }

  run->t0 = bench_now_ns ();
  dc_detached_code_call_async (run->pool, run->args, G_PRIORITY_DEFAULT, NULL, latency_cb, run);
}

/* Returns FALSE when the library failed. */
static gboolean
library_round (DcDetachedCode *pool,
               GVariant       *args,
               double         *samples,
               guint           n)
{
  LatencyRun run = { pool, args, 0, samples, n, 0, 0, FALSE };

  g_variant_get (args, "(i)", &run.expect);
  run.t0 = bench_now_ns ();
  dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, latency_cb, &run);
  if (!bench_loop_run (60))
    {
      bench_fail ("hang: %u of %u sequential calls completed in 60 s", run.done, n);
      return FALSE;
    }
  return !run.failed;
}

static void
baseline_round (BenchPeer         *peer,
                const BenchFrames *frames,
                double            *samples,
                guint              n)
{
  g_autofree guint8 *out = g_malloc0 (frames->call);
  g_autofree guint8 *in = g_malloc (frames->reply);
  guint i;

  for (i = 0; i < n; i++)
    {
      gint64 t0 = bench_now_ns ();

      if (!bench_write_full (peer->fd, out, frames->call) ||
          !bench_read_full (peer->fd, in, frames->reply))
        g_error ("baseline peer went away");
      if (samples != NULL)
        samples[i] = (bench_now_ns () - t0) / 1000.0;
    }
}

typedef struct
{
  int     fd;
  gsize   call;
  gsize   reply;
  guint8 *buf;
  double *samples;
  guint   n;
  guint   done;
  gint64  t0;
} LoopPing;

static gboolean
loop_ping_cb (gint         fd,
              GIOCondition condition,
              gpointer     data)
{
  LoopPing *ping = data;
  gint64 t1;

  if (!bench_read_full (fd, ping->buf, ping->reply))
    g_error ("baseline peer went away");
  t1 = bench_now_ns ();
  if (ping->samples != NULL)
    ping->samples[ping->done] = (t1 - ping->t0) / 1000.0;
  if (++ping->done == ping->n)
    {
      bench_loop_quit ();
      return G_SOURCE_REMOVE;
    }
  ping->t0 = bench_now_ns ();
  if (!bench_write_full (fd, ping->buf, ping->call))
    g_error ("baseline peer went away");
  return G_SOURCE_CONTINUE;
}

static void
loop_baseline_round (BenchPeer         *peer,
                     const BenchFrames *frames,
                     double            *samples,
                     guint              n)
{
  g_autofree guint8 *buf = g_malloc0 (MAX (frames->call, frames->reply));
  LoopPing ping = { peer->fd, frames->call, frames->reply, buf, samples, n, 0, 0 };

  g_unix_fd_add (peer->fd, G_IO_IN, loop_ping_cb, &ping);
  ping.t0 = bench_now_ns ();
  if (!bench_write_full (peer->fd, buf, frames->call))
    g_error ("baseline peer went away");
  if (!bench_loop_run (60))
    g_error ("bare ping-pong through the main loop stalled");
}

int
main (int   argc,
      char *argv[])
{
  g_autoptr(GVariant) args = NULL;
  DcDetachedCode *pool;
  BenchPeer peer;
  BenchFrames frames;
  guint n, per_round, r;
  g_autofree double *lib = NULL;
  g_autofree double *base = NULL;
  g_autofree double *loop = NULL;
  double lib_median, lib_p99, base_median, base_p99;
  gboolean ok = TRUE;

  bench_init (&argc, &argv, "bench-latency: one call at a time on an idle pool, "
              "args \"(i)\" echoed, 1 worker");

  /* Start the pool first, as applications are told to: before anything
   * could have made a thread (GLib makes one for child watches where the
   * kernel has no pidfds). */
  pool = bench_pool_new (bench_echo_code, NULL, 1, NULL);

  args = g_variant_ref_sink (g_variant_new ("(i)", 424242));
  if (!bench_measure_frames (pool, args, 64, &frames))
    return bench_finish ();
  peer = bench_peer_spawn (bench_reply_peer, &frames);

  per_round = bench_count (4000, 50);
  n = per_round * ROUNDS;
  lib = g_new0 (double, n);
  base = g_new0 (double, n);
  loop = g_new0 (double, n);

  /* Warm both paths: page faults, the worker's first allocations, the
   * scheduler's idea of where each process runs. */
  ok = library_round (pool, args, NULL, bench_count (1000, 20));
  baseline_round (&peer, &frames, NULL, bench_count (1000, 20));
  loop_baseline_round (&peer, &frames, NULL, bench_count (1000, 20));

  for (r = 0; ok && r < ROUNDS; r++)
    {
      ok = library_round (pool, args, lib + r * per_round, per_round);
      baseline_round (&peer, &frames, base + r * per_round, per_round);
      loop_baseline_round (&peer, &frames, loop + r * per_round, per_round);
    }

  bench_peer_finish (&peer);
  bench_pool_destroy (pool);

  if (ok)
    {
      lib_median = bench_quantile (lib, n, 0.5);
      lib_p99 = bench_quantile (lib, n, 0.99);
      base_median = bench_quantile (base, n, 0.5);
      base_p99 = bench_quantile (base, n, 0.99);

      bench_table_begin ("round trip, call_async() to callback vs blocking write()+read() "
                         "(lower is better)");
      bench_table_row ("latency.median", "median", lib_median, base_median, "us",
                       BENCH_RATIO_AT_MOST, 1.3);
      bench_table_row ("latency.p99", "p99", lib_p99, base_p99, "us", BENCH_NO_TARGET, 0);
      bench_table_row ("latency.min", "min", lib[0], base[0], "us", BENCH_NO_TARGET, 0);
      bench_table_row ("latency.loop.median", "median vs bare ping-pong in a GMainLoop",
                       lib_median, bench_quantile (loop, n, 0.5), "us", BENCH_NO_TARGET, 0);
      bench_table_row ("latency.loop.p99", "p99 vs bare ping-pong in a GMainLoop",
                       lib_p99, bench_quantile (loop, n, 0.99), "us", BENCH_NO_TARGET, 0);
      bench_table_note ("%u calls in %u alternating rounds; %" G_GSIZE_FORMAT " bytes per call "
                        "and %" G_GSIZE_FORMAT " per reply, frames included (%s)", n, ROUNDS,
                        frames.call, frames.reply,
                        frames.how);
      bench_table_note ("baseline: a blocking ping-pong with a forked child; the GMainLoop rows "
                        "drive the same child from a g_unix_fd_add() source");
    }

  return bench_finish ();
}
