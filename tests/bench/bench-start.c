/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Start-up costs:
 *  - dc_detached_code_start() with min-workers 4, wall time, as built
 *    (fork-server TRUE by default: a worker template forked from this
 *    process, then four workers cloned by it);
 *  - the same with fork-server FALSE (four forks of this process), and
 *    start() with min-workers 0 (the template alone), to tell where the
 *    time of the first goes;
 *  - fork to first result: a fresh pool's first call_async() (which forks
 *    its worker) until the callback;
 *  - start() with 4 workers and then one call, until its callback;
 *  - shutdown() until every worker is reaped (4 workers).
 *
 * Baselines, in the same run: socketpair() + fork() of as many bare
 * children (4, and 1 for the template alone); a bare child's first echoed
 * message; closing the bare children's sockets and waitpid() on each.
 *
 * DESIGN targets: start() with 4 workers <= 10 ms wall, and <= 2x the
 * bare fork of 4 children.
 */

#include "bench-common.h"

#include <errno.h>
#include <signal.h>

#define N_WORKERS 4

typedef struct
{
  DcDetachedCode *pool;
  gint64          t1;
  gboolean        failed;
} First;

static void
first_cb (GObject      *source,
          GAsyncResult *result,
          gpointer      data)
{
  First *first = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (first->pool, result, &error);

  first->t1 = bench_now_ns ();
  if (value == NULL)
    {
      bench_fail ("first call failed: %s", error->message);
      first->failed = TRUE;
    }
  bench_loop_quit ();
}

/* Milliseconds from @t0 to the first call's callback; -1 on failure. */
static double
first_result (DcDetachedCode *pool,
              GVariant       *args,
              gint64          t0)
{
  First first = { pool, 0, FALSE };

  dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, first_cb, &first);
  if (!bench_loop_run (30))
    {
      bench_fail ("hang: the first call did not complete in 30 s");
      return -1;
    }
  return first.failed ? -1 : (first.t1 - t0) / 1e6;
}

static gboolean
pid_gone (GPid pid)
{
  return kill (pid, 0) < 0 && errno == ESRCH;
}

/* Shuts down and runs the context until every worker is reaped; ms. */
static double
shutdown_and_reap (DcDetachedCode *pool)
{
  guint n_pids = 0, i;
  g_autofree GPid *pids = dc_detached_code_get_worker_pids (pool, &n_pids);
  gint64 t0 = bench_now_ns (), t1, deadline = t0 + 10 * G_GINT64_CONSTANT (1000000000);
  gboolean alive = TRUE;

  dc_detached_code_shutdown (pool);
  while (alive && bench_now_ns () < deadline)
    {
      while (g_main_context_iteration (NULL, FALSE))
        ;
      alive = FALSE;
      for (i = 0; i < n_pids && !alive; i++)
        alive = !pid_gone (pids[i]);
      if (alive)
        g_usleep (20);
    }
  t1 = bench_now_ns ();
  if (alive)
    {
      bench_fail ("workers not reaped 10 s after shutdown()");
      return -1;
    }
  return (t1 - t0) / 1e6;
}

static void
wait_eof_peer (int      fd,
               gpointer data)
{
  char c;

  bench_read_full (fd, &c, 1);
}

/* start() of a pool with @min_workers and fork-server @fork_server, then
 * shutdown; ms of start(), -1 on failure. */
static double
start_only (guint    min_workers,
            gboolean fork_server)
{
  g_autoptr(GError) error = NULL;
  DcDetachedCode *pool = dc_detached_code_new (bench_echo_code, NULL, NULL);
  gint64 t0;
  double ms;

  g_object_set (pool, "min-workers", min_workers, "fork-server", fork_server, NULL);
  t0 = bench_now_ns ();
  if (!dc_detached_code_start (pool, &error))
    {
      bench_fail ("start(): %s", error->message);
      g_object_unref (pool);
      return -1;
    }
  ms = (bench_now_ns () - t0) / 1e6;
  if (dc_detached_code_get_n_workers (pool) != min_workers)
    bench_fail ("start() left %u workers, not %u",
                dc_detached_code_get_n_workers (pool), min_workers);
  if (shutdown_and_reap (pool) < 0)
    ms = -1;
  g_object_unref (pool);
  return ms;
}

/* The bare baseline of @n children; ms to fork them. */
static double
bare_start (guint n)
{
  BenchPeer peers[N_WORKERS];
  gint64 t0;
  double ms;
  guint i;

  g_assert (n <= N_WORKERS);
  t0 = bench_now_ns ();
  for (i = 0; i < n; i++)
    peers[i] = bench_peer_spawn (wait_eof_peer, NULL);
  ms = (bench_now_ns () - t0) / 1e6;
  for (i = 0; i < n; i++)
    bench_peer_finish (&peers[i]);
  return ms;
}

int
main (int   argc,
      char *argv[])
{
  g_autoptr(GVariant) args = NULL;
  BenchFrames frames;
  DcDetachedCode *probe;
  guint reps, r, i;
  g_autofree double *lib_start = NULL, *base_start = NULL;
  g_autofree double *lib_first = NULL, *base_first = NULL;
  g_autofree double *lib_start_first = NULL;
  g_autofree double *lib_reap = NULL, *base_reap = NULL;
  g_autofree double *lib_start_direct = NULL, *lib_start_template = NULL, *base_start1 = NULL;
  gboolean have_fork_server;
  gboolean ok = TRUE;

  bench_init (&argc, &argv, "bench-start: starting and stopping workers");
  have_fork_server = bench_have_property ("fork-server");

  args = g_variant_ref_sink (g_variant_new ("(i)", 424242));
  probe = bench_pool_new (bench_echo_code, NULL, 1, NULL);
  if (!bench_measure_frames (probe, args, 16, &frames))
    return bench_finish ();
  bench_pool_destroy (probe);
  bench_wait_children (10);
  reps = bench_count (100, 5);
  lib_start = g_new0 (double, reps);
  base_start = g_new0 (double, reps);
  lib_first = g_new0 (double, reps);
  base_first = g_new0 (double, reps);
  lib_start_first = g_new0 (double, reps);
  lib_reap = g_new0 (double, reps);
  base_reap = g_new0 (double, reps);
  lib_start_direct = g_new0 (double, reps);
  lib_start_template = g_new0 (double, reps);
  base_start1 = g_new0 (double, reps);

  for (r = 0; ok && r < reps; r++)
    {
      g_autoptr(GError) error = NULL;
      DcDetachedCode *pool;
      BenchPeer peers[N_WORKERS];
      gint64 t0;
      double ms;

      /* start() with 4 workers, then one call, then shutdown. */
      pool = dc_detached_code_new (bench_echo_code, NULL, NULL);
      g_object_set (pool, "min-workers", N_WORKERS, NULL);
      t0 = bench_now_ns ();
      if (!dc_detached_code_start (pool, &error))
        {
          bench_fail ("start(): %s", error->message);
          g_object_unref (pool);
          ok = FALSE;
          break;
        }
      lib_start[r] = (bench_now_ns () - t0) / 1e6;
      if (dc_detached_code_get_n_workers (pool) != N_WORKERS)
        bench_fail ("start() left %u workers, not %d",
                    dc_detached_code_get_n_workers (pool), N_WORKERS);
      ms = first_result (pool, args, t0);
      ok = ms >= 0;
      lib_start_first[r] = ms;
      lib_reap[r] = shutdown_and_reap (pool);
      ok = ok && lib_reap[r] >= 0;
      g_object_unref (pool);
      /* The template leaves on its own once its channel closes: not
       * while the next thing is timed. */
      bench_wait_children (10);

      /* The bare fork of as many children, and their reaping. */
      t0 = bench_now_ns ();
      for (i = 0; i < N_WORKERS; i++)
        peers[i] = bench_peer_spawn (wait_eof_peer, NULL);
      base_start[r] = (bench_now_ns () - t0) / 1e6;
      t0 = bench_now_ns ();
      for (i = 0; i < N_WORKERS; i++)
        bench_peer_finish (&peers[i]);
      base_reap[r] = (bench_now_ns () - t0) / 1e6;

      /* A fresh pool's first call, which forks its worker. */
      pool = dc_detached_code_new (bench_echo_code, NULL, NULL);
      t0 = bench_now_ns ();
      ms = first_result (pool, args, t0);
      ok = ok && ms >= 0;
      lib_first[r] = ms;
      ok = ok && shutdown_and_reap (pool) >= 0;
      g_object_unref (pool);
      bench_wait_children (10);

      t0 = bench_now_ns ();
      peers[0] = bench_peer_spawn (bench_reply_peer, &frames);
      {
        g_autofree guint8 *buf = g_malloc0 (MAX (frames.call, frames.reply));

        if (!bench_write_full (peers[0].fd, buf, frames.call) ||
            !bench_read_full (peers[0].fd, buf, frames.reply))
          g_error ("bare child went away");
      }
      base_first[r] = (bench_now_ns () - t0) / 1e6;
      bench_peer_finish (&peers[0]);

      /* Where start()'s time goes: without the template, and the
       * template alone, beside a single bare fork. */
      if (have_fork_server && ok)
        {
          lib_start_direct[r] = start_only (N_WORKERS, FALSE);
          bench_wait_children (10);
          lib_start_template[r] = start_only (0, TRUE);
          bench_wait_children (10);
          ok = lib_start_direct[r] >= 0 && lib_start_template[r] >= 0;
          base_start1[r] = bare_start (1);
        }
    }

  while (g_main_context_iteration (NULL, FALSE))
    ;

  if (ok)
    {
      double start_med = bench_quantile (lib_start, reps, 0.5);
      double base_med = bench_quantile (base_start, reps, 0.5);

      bench_table_begin ("milliseconds of wall time, median and worst of the repetitions "
                         "(lower is better)");

      bench_table_row ("start.4w.median", "start(), 4 workers: median",
                       start_med, base_med, "ms", BENCH_VALUE_AT_MOST, 10);
      bench_table_row ("start.4w.ratio", "start(), 4 workers / bare fork of 4: median",
                       start_med, base_med, "ms", BENCH_RATIO_AT_MOST, 2);
      bench_table_row ("start.4w.max", "start(), 4 workers: worst",
                       bench_quantile (lib_start, reps, 1.0),
                       bench_quantile (base_start, reps, 1.0), "ms", BENCH_NO_TARGET, 0);
      bench_table_row ("start.first", "fork to first result, fresh pool: median",
                       bench_quantile (lib_first, reps, 0.5),
                       bench_quantile (base_first, reps, 0.5), "ms", BENCH_NO_TARGET, 0);
      bench_table_row ("start.first.max", "fork to first result, fresh pool: worst",
                       bench_quantile (lib_first, reps, 1.0),
                       bench_quantile (base_first, reps, 1.0), "ms", BENCH_NO_TARGET, 0);
      bench_table_row ("start.4w.first", "start(4) then one call, to callback: median",
                       bench_quantile (lib_start_first, reps, 0.5), 0, "ms", BENCH_NO_TARGET, 0);
      bench_table_row ("start.4w.reap", "shutdown() until 4 reaped: median",
                       bench_quantile (lib_reap, reps, 0.5),
                       bench_quantile (base_reap, reps, 0.5), "ms", BENCH_NO_TARGET, 0);
      if (have_fork_server)
        {
          double direct_med = bench_quantile (lib_start_direct, reps, 0.5);
          double template_med = bench_quantile (lib_start_template, reps, 0.5);
          double base1_med = bench_quantile (base_start1, reps, 0.5);

          bench_table_row ("start.4w.direct", "start(), 4 workers, fork-server FALSE: median",
                           direct_med, base_med, "ms", BENCH_NO_TARGET, 0);
          bench_table_row ("start.template", "start(), 0 workers (template alone): median",
                           template_med, base1_med, "ms", BENCH_NO_TARGET, 0);
          /* Differences of medians: for orientation, not exact. */
          bench_table_row ("start.per_worker.template", "  per worker, from the template",
                           (start_med - template_med) / N_WORKERS, base_med / N_WORKERS, "ms",
                           BENCH_NO_TARGET, 0);
          bench_table_row ("start.per_worker.direct", "  per worker, fork-server FALSE",
                           direct_med / N_WORKERS, base_med / N_WORKERS, "ms",
                           BENCH_NO_TARGET, 0);
          bench_table_note ("start() with fork-server TRUE (the default) = the template's fork "
                            "from this process (\"template alone\", baseline one bare fork) + "
                            "4 workers, the 4 requests sent to the template at once, then a "
                            "blocking wait for each clone's answer (\"per worker\", derived: (start(4) - "
                            "template alone) / 4; baseline a quarter of the bare fork of 4)");
        }
      else
        bench_table_note ("the pool class has no fork-server property: no breakdown");
      bench_table_note ("%u repetitions; baselines: socketpair()+fork() of 4 bare children, "
                        "a bare child's first echo, close()+waitpid() of 4 children", reps);
      bench_table_note ("reaping is polled every 20 us, so the shutdown row has that much slack");
    }

  return bench_finish ();
}
