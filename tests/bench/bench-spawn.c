/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The cost of a fresh worker against the size of the parent:
 *  - call_async() until the callback, for a call that needs a new worker
 *    (the pool keeps none idle: min-workers 0, max-worker-calls 1);
 *  - with the parent at about 10 MiB resident, then with 1 GiB more
 *    allocated and every page of it touched;
 *  - with fork-server TRUE, the pool started (so its worker template made)
 *    while the parent was small, and with fork-server FALSE, where every
 *    worker is a fork of the parent as it is then.
 *
 * Baseline, in the same run and at both sizes: socketpair() + fork() of a
 * bare child and its first echo of the same bytes, which grows with the
 * parent as fork-server FALSE does.
 *
 * The small and the large parent cannot be measured at the same moment,
 * and the machine drifts, so each round measures both (the 1 GiB is
 * touched afresh and dropped again every round) and the samples of all
 * rounds are pooled; within a phase each case runs in a block (see
 * below why not in turns).
 *
 * DESIGN target ("Workers from a template process"): with fork-server
 * TRUE, the large parent's median / the small parent's median <= 1.5.
 */

#define _GNU_SOURCE

#include "bench-common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define SMALL_RSS  ((gsize) 10 << 20)
#define BIG_BYTES  ((gsize) 1 << 30)
#define MIB        (1024.0 * 1024.0)

typedef enum
{
  CASE_TEMPLATE,   /* fork-server TRUE */
  CASE_DIRECT,     /* fork-server FALSE */
  CASE_BARE,       /* the baseline */
  N_CASES
} Case;

typedef enum
{
  PHASE_SMALL,
  PHASE_BIG,
  N_PHASES
} Phase;

typedef struct
{
  DcDetachedCode *pool;
  GPid            spawned;   /* the worker the call made */
  guint           n_spawned;
  gint64          t1;
  gboolean        failed;
} Fresh;

static void
spawned_cb (DcDetachedCode *pool,
            int             pid,
            gpointer        data)
{
  Fresh *fresh = data;

  fresh->spawned = pid;
  fresh->n_spawned++;
}

static void
fresh_cb (GObject      *source,
          GAsyncResult *result,
          gpointer      data)
{
  Fresh *fresh = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (fresh->pool, result, &error);

  fresh->t1 = bench_now_ns ();
  if (value == NULL)
    {
      bench_fail ("call failed: %s", error->message);
      fresh->failed = TRUE;
    }
  bench_loop_quit ();
}

static gboolean
pid_gone (GPid pid)
{
  return kill (pid, 0) < 0 && errno == ESRCH;
}

/* Milliseconds from call_async() to the callback of a call that must fork
 * its worker; -1 on failure.  Returns once that worker is reaped: it
 * leaves after its one call, and its exit (which, forked from a large
 * parent, unmaps a large copy) must be neither timed nor overlap the next
 * sample; it would also hold max-workers' one place. */
static double
fresh_call (Fresh    *fresh,
            GVariant *args)
{
  gint64 t0, deadline;
  double ms;

  fresh->spawned = 0;
  fresh->n_spawned = 0;
  fresh->failed = FALSE;
  t0 = bench_now_ns ();
  dc_detached_code_call_async (fresh->pool, args, G_PRIORITY_DEFAULT, NULL, fresh_cb, fresh);
  if (!bench_loop_run (30))
    {
      bench_fail ("hang: a call did not complete in 30 s");
      return -1;
    }
  if (fresh->failed)
    return -1;
  ms = (fresh->t1 - t0) / 1e6;
  if (fresh->n_spawned != 1)
    {
      /* With max-worker-calls 1 and no worker left, every call makes one. */
      bench_fail ("a call made %u workers, not 1 (max-worker-calls 1, min-workers 0)",
                  fresh->n_spawned);
      return -1;
    }

  deadline = bench_now_ns () + 10 * G_GINT64_CONSTANT (1000000000);
  while (!pid_gone (fresh->spawned) && bench_now_ns () < deadline)
    {
      while (g_main_context_iteration (NULL, FALSE))
        ;
      if (!pid_gone (fresh->spawned))
        g_usleep (50);
    }
  if (!pid_gone (fresh->spawned))
    {
      bench_fail ("worker %d, past max-worker-calls 1, not reaped 10 s after its reply",
                  (int) fresh->spawned);
      return -1;
    }
  return ms;
}

/* The baseline: a bare child forked now, until its first echo. */
static double
bare_call (BenchFrames *frames)
{
  g_autofree guint8 *buf = g_malloc0 (MAX (frames->call, frames->reply));
  BenchPeer peer;
  gint64 t0, t1;

  t0 = bench_now_ns ();
  peer = bench_peer_spawn (bench_reply_peer, frames);
  if (!bench_write_full (peer.fd, buf, frames->call) ||
      !bench_read_full (peer.fd, buf, frames->reply))
    g_error ("bare child went away");
  t1 = bench_now_ns ();
  bench_peer_finish (&peer);
  return (t1 - t0) / 1e6;
}

/* VmRSS of this process, in bytes; 0 if unknown. */
static gsize
resident_bytes (void)
{
  g_autofree char *contents = NULL;
  const char *p;

  if (!g_file_get_contents ("/proc/self/status", &contents, NULL, NULL) ||
      (p = strstr (contents, "VmRSS:")) == NULL)
    return 0;
  return (gsize) g_ascii_strtoull (p + 6, NULL, 10) * 1024;
}

/* A pool that forks a worker for every call, started now. */
static DcDetachedCode *
fresh_pool_new (Fresh    *fresh,
                gboolean  fork_server)
{
  g_autoptr(GError) error = NULL;
  DcDetachedCode *pool = dc_detached_code_new (bench_echo_code, NULL, NULL);

  g_object_set (pool, "min-workers", 0, "max-workers", 1, "max-worker-calls", 1, NULL);
  if (bench_have_property ("fork-server"))
    g_object_set (pool, "fork-server", fork_server, NULL);
  g_signal_connect (pool, "worker-spawned", G_CALLBACK (spawned_cb), fresh);
  /* With fork-server TRUE this makes the template: from the parent as it
   * is now, small. */
  if (!dc_detached_code_start (pool, &error))
    {
      g_printerr ("dc_detached_code_start: %s\n", error->message);
      exit (1);
    }
  fresh->pool = pool;
  return pool;
}

static double
median (GArray *samples)
{
  return bench_quantile ((double *) (void *) samples->data, samples->len, 0.5);
}

int
main (int   argc,
      char *argv[])
{
  static const char *const case_names[N_CASES] = { "fork-server TRUE", "fork-server FALSE",
                                                   "bare fork" };
  g_autoptr(GVariant) args = NULL;
  BenchFrames frames;
  DcDetachedCode *probe;
  Fresh fresh[2] = { { NULL, }, { NULL, } };
  GArray *samples[N_CASES][N_PHASES];
  g_autofree guint8 *ballast = NULL;
  gsize rss_start, rss_small = 0, rss_big = 0;
  double touch_s = 0;
  guint reps, rounds, round, c, ph;
  gboolean have_fork_server, ok = TRUE;

  bench_init (&argc, &argv, "bench-spawn: a fresh worker's cost against the parent's size");
  have_fork_server = bench_have_property ("fork-server");

  args = g_variant_ref_sink (g_variant_new ("(i)", 424242));
  probe = bench_pool_new (bench_echo_code, NULL, 1, NULL);
  if (!bench_measure_frames (probe, args, 16, &frames))
    return bench_finish ();
  bench_pool_destroy (probe);
  bench_wait_children (10);

  /* Bring the parent up to about 10 MiB, a modest program's size, so that
   * the small figure does not depend on how lean this one happens to be. */
  rss_start = resident_bytes ();
  if (rss_start > 0 && rss_start < SMALL_RSS)
    {
      ballast = g_malloc (SMALL_RSS - rss_start);
      memset (ballast, 0x5a, SMALL_RSS - rss_start);
    }

  /* Both pools start now, while the parent is small: the template of the
   * first is this small parent, whatever the parent becomes later. */
  fresh_pool_new (&fresh[CASE_TEMPLATE], TRUE);
  fresh_pool_new (&fresh[CASE_DIRECT], FALSE);
  for (c = 0; c < N_CASES; c++)
    for (ph = 0; ph < N_PHASES; ph++)
      samples[c][ph] = g_array_new (FALSE, FALSE, sizeof (double));

  reps = bench_count (25, 5);
  rounds = bench_rounds (3);
  for (round = 0; ok && round < rounds; round++)
    for (ph = 0; ok && ph < N_PHASES; ph++)
      {
        guint8 *big = NULL;
        guint k;

        if (ph == PHASE_BIG)
          {
            gint64 t0 = bench_now_ns ();

            big = mmap (NULL, BIG_BYTES, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (big == MAP_FAILED)
              {
                g_printerr ("cannot map %zu bytes: %s\n", BIG_BYTES, g_strerror (errno));
                exit (1);
              }
            /* Small pages, as most of a real heap is: with transparent huge
             * pages the 1 GiB would be 512 entries to copy at a fork, and
             * the growth this measures would not show. */
            madvise (big, BIG_BYTES, MADV_NOHUGEPAGE);
            memset (big, 0xa5, BIG_BYTES);
            touch_s += (bench_now_ns () - t0) / 1e9;
            rss_big = MAX (rss_big, resident_bytes ());
          }
        else
          rss_small = MAX (rss_small, resident_bytes ());

        /* Each case in a block of its own, not in turns: a fork and exit
         * of the 1 GiB parent (fork-server FALSE, bare) drags 2 MiB of page
         * tables and 16 MiB of page descriptors through the caches, and
         * the sample after it, whatever it is, pays for the eviction:
         * measured, 3-4x on a template's call.  A real program with
         * fork-server TRUE makes no such forks.  One untimed call first
         * in each block for the same reason; the blocks' order turns
         * with the rounds. */
        for (k = 0; ok && k < N_CASES; k++)
          {
            Case which = (round + k) % N_CASES;
            guint i;

            for (i = 0; ok && i <= reps; i++)
              {
                double ms;

                if (which == CASE_BARE)
                  ms = bare_call (&frames);
                else
                  ms = fresh_call (&fresh[which], args);
                ok = ms >= 0;
                if (i > 0)
                  g_array_append_val (samples[which][ph], ms);
              }
          }

        if (big != NULL)
          munmap (big, BIG_BYTES);
      }

  for (c = 0; c <= CASE_DIRECT; c++)
    bench_pool_destroy (fresh[c].pool);
  bench_wait_children (10);

  if (ok)
    {
      double med[N_CASES][N_PHASES];
      const char *big_label = "+1 GiB touched";

      for (c = 0; c < N_CASES; c++)
        for (ph = 0; ph < N_PHASES; ph++)
          med[c][ph] = median (samples[c][ph]);

      bench_table_begin ("a fresh worker: call_async() to callback, ms, median "
                         "(lower is better); baseline: a bare fork's first echo");
      for (c = 0; c <= CASE_DIRECT; c++)
        for (ph = 0; ph < N_PHASES; ph++)
          {
            g_autofree char *key = g_strdup_printf ("spawn.%s.%s",
                                                    c == CASE_TEMPLATE ? "template" : "direct",
                                                    ph == PHASE_SMALL ? "small" : "big");
            g_autofree char *label = g_strdup_printf ("%s, parent %s", case_names[c],
                                                      ph == PHASE_SMALL ? "~10 MiB" : big_label);

            bench_table_row (key, label, med[c][ph], med[CASE_BARE][ph], "ms",
                             BENCH_NO_TARGET, 0);
          }

      bench_table_begin ("growth with the parent: median with 1 GiB more resident / "
                         "median at ~10 MiB");
      bench_table_row ("spawn.template.growth", "fork-server TRUE: big / small",
                       med[CASE_TEMPLATE][PHASE_BIG], med[CASE_TEMPLATE][PHASE_SMALL], "ms",
                       have_fork_server ? BENCH_RATIO_AT_MOST : BENCH_NO_TARGET, 1.5);
      bench_table_row ("spawn.direct.growth", "fork-server FALSE: big / small",
                       med[CASE_DIRECT][PHASE_BIG], med[CASE_DIRECT][PHASE_SMALL], "ms",
                       BENCH_NO_TARGET, 0);
      bench_table_row ("spawn.bare.growth", "bare fork + first echo: big / small",
                       med[CASE_BARE][PHASE_BIG], med[CASE_BARE][PHASE_SMALL], "ms",
                       BENCH_NO_TARGET, 0);

      bench_table_note ("%u rounds of %u samples per case and size, pooled; each round "
                        "touches the 1 GiB afresh (%.2f s per round) and unmaps it after; "
                        "each case in a block after one untimed call, since a 1 GiB fork "
                        "evicts the caches for whatever runs next",
                        rounds, reps, touch_s / rounds);
      bench_table_note ("parent resident: %.1f MiB small (%.1f MiB before the ballast), "
                        "%.1f MiB big; the 1 GiB is madvise(MADV_NOHUGEPAGE): 4 KiB pages",
                        rss_small / MIB, rss_start / MIB, rss_big / MIB);
      bench_table_note ("pools: min-workers 0, max-workers 1, max-worker-calls 1, so every "
                        "call forks a worker; each sample waits until the last one is reaped");
      if (have_fork_server)
        bench_table_note ("fork-server TRUE keeps the cost flat only because both pools were "
                          "started, and so the template made, while the parent was small: "
                          "a pool started (or restart()ed) after the parent grew makes its "
                          "template from the large parent, and its workers cost what "
                          "fork-server FALSE costs.  Start pools early.");
      else
        bench_table_note ("the pool class has no fork-server property: both pools fork from "
                          "the parent, and the growth target is not judged");
    }

  for (c = 0; c < N_CASES; c++)
    for (ph = 0; ph < N_PHASES; ph++)
      g_array_unref (samples[c][ph]);
  return bench_finish ();
}
