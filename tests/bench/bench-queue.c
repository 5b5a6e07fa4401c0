/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Parent memory per queued call: 1 M tiny "(i)" calls queued behind a
 * call that holds the pool's only worker, so that every one of them waits
 * in the parent.  Measured two ways, each as (after - before) / calls:
 *  - the heap in use, from mallinfo2() (uordblks + hblkhd): exactly what
 *    malloc handed out and was not given back, GSlice's slabs included;
 *  - the resident set, from /proc/self/statm: what the system pays,
 *    allocator slack and page granularity included.
 * The calls are then failed by shutdown(), each completing exactly once.
 *
 * DESIGN target: <= 600 bytes per queued tiny call.  There is no baseline
 * in another program to compare with: the figure is absolute. */

#include "config.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-common.h"

/* Shared with the worker: it sets RUNNING when the blocking call runs,
 * the parent sets RELEASE to let it return. */
enum { RUNNING, RELEASE };

static GVariant *
hold_code (GVariant  *args,
           gpointer   user_data,
           GError   **error)
{
  volatile gint *flags = user_data;
  gint32 value;

  g_variant_get (args, "(i)", &value);
  if (value < 0)
    {
      g_atomic_int_set (&flags[RUNNING], 1);
      while (!g_atomic_int_get (&flags[RELEASE]))
        g_usleep (1000);
    }
  return g_variant_ref (args);
}

typedef struct
{
  guint    completed;
  guint    succeeded;
  guint    expected;
} Count;

static void
done_cb (GObject      *source,
         GAsyncResult *result,
         gpointer      data)
{
  Count *count = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), result,
                                                            &error);

  if (value != NULL)
    count->succeeded++;
  if (++count->completed == count->expected)
    bench_loop_quit ();
}

static guint64
heap_in_use (void)
{
  struct mallinfo2 info = mallinfo2 ();

  return (guint64) info.uordblks + (guint64) info.hblkhd;
}

/* 0 if unknown. */
static guint64
resident (void)
{
  g_autofree char *statm = NULL;
  char *end;
  guint64 pages;

  if (!g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL))
    return 0;
  g_ascii_strtoull (statm, &end, 10);
  pages = g_ascii_strtoull (end, NULL, 10);
  return pages * (guint64) sysconf (_SC_PAGESIZE);
}

int
main (int   argc,
      char *argv[])
{
  DcDetachedCode *pool;
  volatile gint *flags;
  Count count = { 0, };
  guint64 heap0, heap1, rss0, rss1;
  guint n, i, queued = 0;
  gint64 t0;

  bench_init (&argc, &argv, "bench-queue: parent memory per queued call");

  flags = mmap (NULL, 2 * sizeof (gint), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                -1, 0);
  if (flags == MAP_FAILED)
    g_error ("mmap failed");

  n = bench_count (1000000, 10000);
  pool = bench_pool_new (hold_code, (gpointer) flags, 1, NULL);
  count.expected = n + 1;

  /* The worker is held: every call after this one waits in the parent. */
  dc_detached_code_call_async (pool, g_variant_new ("(i)", -1), G_PRIORITY_DEFAULT, NULL,
                               done_cb, &count);
  t0 = bench_now_ns ();
  while (!g_atomic_int_get (&flags[RUNNING]))
    {
      g_main_context_iteration (NULL, FALSE);
      if (bench_now_ns () - t0 > 30 * G_GINT64_CONSTANT (1000000000))
        g_error ("the worker did not start the holding call");
    }

  heap0 = heap_in_use ();
  rss0 = resident ();
  for (i = 0; i < n; i++)
    dc_detached_code_call_async (pool, g_variant_new ("(i)", (gint32) i), G_PRIORITY_DEFAULT,
                                 NULL, done_cb, &count);
  /* Calls made on the pool's own context are queued at once; this only
   * lets anything deferred happen before the figures are read. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  heap1 = heap_in_use ();
  rss1 = resident ();
  g_object_get (pool, "n-queued", &queued, NULL);

  if (queued != n)
    bench_fail ("%u calls queued, not %u: the figure would not be per queued call", queued, n);

  /* Each call completes exactly once: the holding one with its value,
   * the queued ones failed by shutdown(). */
  g_atomic_int_set (&flags[RELEASE], 1);
  dc_detached_code_shutdown (pool);
  if (!bench_loop_run (120))
    bench_fail ("hang: %u of %u calls completed 120 s after shutdown()", count.completed,
                count.expected);
  else if (count.completed != count.expected)
    bench_fail ("%u calls completed, not %u", count.completed, count.expected);
  bench_pool_destroy (pool);

  bench_table_begin ("bytes of parent memory per queued call (lower is better)");
  bench_table_row ("queue.heap", "heap in use (mallinfo2) / queued call",
                   (double) ((gint64) heap1 - (gint64) heap0) / n, 0, "B",
                   BENCH_VALUE_AT_MOST, 600);
  bench_table_row ("queue.rss", "resident set (statm) / queued call",
                   (double) ((gint64) rss1 - (gint64) rss0) / n, 0, "B",
                   BENCH_VALUE_AT_MOST, 600);
  bench_table_note ("%u \"(i)\" calls queued behind one that holds the only worker; "
                    "(after - before) / calls; then all %u calls completed, %u with "
                    "shutdown()'s error", n, count.completed, count.completed - count.succeeded);
  return bench_finish ();
}
