/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* What the sandbox costs, against the same pool without one, in the same
 * run and in alternating rounds:
 *  - per call: one call at a time on an idle one-worker pool, "(i)"
 *    echoed, with DC_SANDBOX_ALL (no path listed) and without;
 *  - per worker start: a call that needs a new worker (max-worker-calls
 *    1), from call_async() to the callback, with and without.
 *
 * DESIGN target: a call under the sandbox costs about what it costs without
 * (ratio <= 1.1: the kernel caches the verdict for system calls the
 * filter allows whatever their arguments); a worker start costs more
 * (loading the filter, the Landlock ruleset), reported as a difference.
 */

#include "bench-common.h"

#define ROUNDS bench_rounds (12)

typedef struct
{
  DcDetachedCode *pool;
  GVariant       *args;
  double         *samples;
  guint           n;
  guint           done;
  gint64          t0;
  gboolean        failed;
} Run;

static void
call_cb (GObject      *source,
         GAsyncResult *result,
         gpointer      data)
{
  Run *run = data;
  gint64 t1 = bench_now_ns ();
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (run->pool, result, &error);

  if (value == NULL)
    {
      bench_fail ("call %u failed: %s", run->done, error->message);
      run->failed = TRUE;
      bench_loop_quit ();
      return;
    }
  if (run->samples != NULL)
    run->samples[run->done] = (t1 - run->t0) / 1000.0;
  if (++run->done == run->n)
    {
      bench_loop_quit ();
      return;
    }
  run->t0 = bench_now_ns ();
  dc_detached_code_call_async (run->pool, run->args, G_PRIORITY_DEFAULT, NULL, call_cb, run);
}

/* @n sequential calls; FALSE when the library failed. */
static gboolean
round_of_calls (DcDetachedCode *pool,
                GVariant       *args,
                double         *samples,
                guint           n)
{
  Run run = { pool, args, samples, n, 0, 0, FALSE };

  run.t0 = bench_now_ns ();
  dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, call_cb, &run);
  if (!bench_loop_run (120))
    {
      bench_fail ("hang: %u of %u sequential calls completed in 120 s", run.done, n);
      return FALSE;
    }
  return !run.failed;
}

int
main (int   argc,
      char *argv[])
{
  g_autoptr(GVariant) args = NULL;
  DcDetachedCode *calls[2], *starts[2];
  guint n_calls, n_starts, per_calls, per_starts, r, i;
  g_autofree double *call_samples[2] = { NULL, NULL };
  g_autofree double *start_samples[2] = { NULL, NULL };
  double call_median[2], start_median[2];
  gboolean ok = TRUE;

  bench_init (&argc, &argv, "bench-sandbox: DC_SANDBOX_ALL against no sandbox, "
              "per call and per worker start");

  /* [0]: without, [1]: with.  All made before anything could make a
   * thread. */
  for (i = 0; i < 2; i++)
    {
      DcSandboxFlags flags = i == 0 ? DC_SANDBOX_NONE : DC_SANDBOX_ALL;

      calls[i] = bench_pool_new (bench_echo_code, NULL, 1, "sandbox", flags, NULL);
      starts[i] = bench_pool_new (bench_echo_code, NULL, 1, "sandbox", flags,
                                  "max-worker-calls", 1, NULL);
    }

  args = g_variant_ref_sink (g_variant_new ("(i)", 424242));
  per_calls = bench_count (2000, 50);
  per_starts = bench_count (40, 10);
  n_calls = per_calls * ROUNDS;
  n_starts = per_starts * ROUNDS;
  for (i = 0; i < 2; i++)
    {
      call_samples[i] = g_new0 (double, n_calls);
      start_samples[i] = g_new0 (double, n_starts);
      ok = ok && round_of_calls (calls[i], args, NULL, bench_count (1000, 20));
      ok = ok && round_of_calls (starts[i], args, NULL, bench_count (20, 5));
    }

  /* Each round on fresh workers: where the scheduler puts a worker
   * (beside the parent or not) weighs more than the filter, and must not
   * stick to one pool for the whole run. */
  for (r = 0; ok && r < ROUNDS; r++)
    for (i = 0; ok && i < 2; i++)
      {
        dc_detached_code_restart (calls[i]);
        ok = round_of_calls (calls[i], args, NULL, bench_count (100, 10));
        ok = ok && round_of_calls (calls[i], args, call_samples[i] + r * per_calls, per_calls);
        ok = ok && round_of_calls (starts[i], args, start_samples[i] + r * per_starts, per_starts);
      }

  for (i = 0; i < 2; i++)
    {
      bench_pool_destroy (calls[i]);
      bench_pool_destroy (starts[i]);
    }

  if (ok)
    {
      for (i = 0; i < 2; i++)
        {
          call_median[i] = bench_quantile (call_samples[i], n_calls, 0.5);
          start_median[i] = bench_quantile (start_samples[i], n_starts, 0.5);
        }

      bench_table_begin ("sandboxed vs unsandboxed (lower is better)");
      bench_table_row ("sandbox.call.median", "call, median", call_median[1], call_median[0],
                       "us", BENCH_RATIO_AT_MOST, 1.1);
      bench_table_row ("sandbox.start.median", "call on a new worker, median", start_median[1],
                       start_median[0], "us", BENCH_NO_TARGET, 0);
      bench_table_row ("sandbox.start.extra", "sandbox cost per worker start, median",
                       start_median[1] - start_median[0], 0, "us", BENCH_NO_TARGET, 0);
      bench_table_note ("%u calls and %u worker starts per pool, in %u alternating rounds; "
                        "DC_SANDBOX_ALL with no path listed", n_calls, n_starts, ROUNDS);
    }

  return bench_finish ();
}
