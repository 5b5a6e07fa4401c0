/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Cancelling a running call with kill-on-cancel: from g_cancellable_cancel()
 * to the callback, and to the worker's reaping, against a bare
 * kill(SIGKILL) + waitpid() of a sleeping child in the same run. */

#include "config.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"

static GVariant *
sleep_code (GVariant  *args,
            gpointer   user_data,
            GError   **error)
{
  /* Tell the parent the call is running (workers keep no descriptor of
   * the parent's, but shared memory stays shared), then never finish. */
  volatile gint *running = user_data;

  g_atomic_int_set (running, 1);
  for (;;)
    pause ();
  return NULL;
}

typedef struct
{
  gint64 cancelled;
  gint64 completed;
  gint64 reaped;
  gboolean was_cancelled;
} Timing;

static void
done_cb (GObject      *source,
         GAsyncResult *result,
         gpointer      data)
{
  Timing *t = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), result, &error);

  t->completed = bench_now_ns ();
  t->was_cancelled = value == NULL && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  if (t->reaped != 0)
    bench_loop_quit ();
}

static void
exited_cb (DcDetachedCode *pool,
           gint            pid,
           gint            status,
           gpointer        data)
{
  Timing *t = data;

  t->reaped = bench_now_ns ();
  if (t->completed != 0)
    bench_loop_quit ();
}

static void
sleeping_peer (int      fd,
               gpointer data)
{
  char c = 'r';

  bench_write_full (fd, &c, 1);
  for (;;)
    pause ();
}

int
main (int   argc,
      char *argv[])
{
  guint reps, r;
  g_autofree double *lib_callback = NULL, *lib_reaped = NULL, *base = NULL;
  volatile gint *running;
  gboolean ok = TRUE;

  bench_init (&argc, &argv, "bench-cancel: cancelling a running call with kill-on-cancel");

  running = mmap (NULL, sizeof (gint), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (running == MAP_FAILED)
    g_error ("mmap failed");

  reps = bench_count (30, 5);
  lib_callback = g_new0 (double, reps);
  lib_reaped = g_new0 (double, reps);
  base = g_new0 (double, reps);

  for (r = 0; ok && r < reps; r++)
    {
      g_autoptr(GCancellable) cancellable = g_cancellable_new ();
      DcDetachedCode *pool;
      Timing t = { 0, };
      BenchPeer peer;
      gint64 t0;
      char c;

      g_atomic_int_set (running, 0);
      pool = bench_pool_new (sleep_code, (gpointer) running, 1, "kill-on-cancel", TRUE, NULL);
      g_signal_connect (pool, "worker-exited", G_CALLBACK (exited_cb), &t);
      dc_detached_code_call_async (pool, NULL, G_PRIORITY_DEFAULT, cancellable, done_cb, &t);
      /* Running for sure: the worker said so. */
      t0 = bench_now_ns ();
      while (!g_atomic_int_get (running))
        {
          g_main_context_iteration (NULL, FALSE);
          if (bench_now_ns () - t0 > 30 * G_GINT64_CONSTANT (1000000000))
            g_error ("worker did not start its call");
        }

      t.cancelled = bench_now_ns ();
      g_cancellable_cancel (cancellable);
      if (!bench_loop_run (30) || !t.was_cancelled)
        {
          bench_fail ("the cancelled call did not complete with G_IO_ERROR_CANCELLED");
          ok = FALSE;
        }
      lib_callback[r] = (t.completed - t.cancelled) / 1e3;
      lib_reaped[r] = (t.reaped - t.cancelled) / 1e3;
      bench_pool_destroy (pool);

      peer = bench_peer_spawn (sleeping_peer, NULL);
      bench_read_full (peer.fd, &c, 1);
      t0 = bench_now_ns ();
      kill (peer.pid, SIGKILL);
      waitpid (peer.pid, NULL, 0);
      base[r] = (bench_now_ns () - t0) / 1e3;
      peer.pid = -1;
      close (peer.fd);
    }

  if (ok)
    {
      bench_table_begin ("microseconds from g_cancellable_cancel() (lower is better)");
      bench_table_row ("cancel.callback.median", "to the callback: median",
                       bench_quantile (lib_callback, reps, 0.5),
                       bench_quantile (base, reps, 0.5), "us", BENCH_NO_TARGET, 0);
      bench_table_row ("cancel.callback.max", "to the callback: worst",
                       bench_quantile (lib_callback, reps, 1.0),
                       bench_quantile (base, reps, 1.0), "us", BENCH_NO_TARGET, 0);
      bench_table_row ("cancel.reaped.median", "until the worker is reaped: median",
                       bench_quantile (lib_reaped, reps, 0.5),
                       bench_quantile (base, reps, 0.5), "us", BENCH_NO_TARGET, 0);
      bench_table_note ("%u repetitions, 1 worker running a call that never ends; baseline: "
                        "kill(SIGKILL) + waitpid() of a bare sleeping child", reps);
    }

  return bench_finish ();
}
