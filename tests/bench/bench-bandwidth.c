/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Large "(ay)" arguments, one call at a time on a one-worker pool, in two
 * shapes: echoed back whole, and taken by the worker with a tiny "(t)"
 * reply (args only).  And 500 args-only calls of 1 MiB queued at once on
 * one worker, at pipeline-depth 1 and 32 (a photo application sending a
 * folder).  MiB/s counts argument bytes per second of wall time.
 *
 * Baseline, in the same run: a forked child on a socketpair that reads the
 * same number of bytes as the library's call frame and writes back as many
 * as the library's reply frame, with blocking read()/write(); for the
 * queued case the parent writes every call frame before it reads the
 * replies.  The library and the baseline alternate in rounds; each side's
 * best round counts.
 *
 * DESIGN targets: 1 MiB argument, 1 worker, one call at a time and 500
 * queued at once (depth 1 and 32): >= 0.5x the bare bandwidth.
 */

#include "bench-common.h"

#include <string.h>

#define ROUNDS bench_rounds (3)

typedef enum
{
  MODE_ECHO,
  MODE_ARGS_ONLY,
} Mode;

static GVariant *
bandwidth_code (GVariant  *args,
                gpointer   user_data,
                GError   **error)
{
  g_autoptr(GVariant) bytes = NULL;

  if (GPOINTER_TO_INT (user_data) == MODE_ECHO)
    return g_variant_ref (args);

  bytes = g_variant_get_child_value (args, 0);
  return g_variant_new ("(t)", (guint64) g_variant_get_size (bytes));
}

static guint8
pattern_byte (gsize i)
{
  return (guint8) ((i * 31) ^ (i >> 13));
}

static GVariant *
make_args (gsize size)
{
  guint8 *data = g_malloc (size);
  g_autoptr(GBytes) bytes = NULL;
  GVariant *array;
  gsize i;

  for (i = 0; i < size; i++)
    data[i] = pattern_byte (i);
  bytes = g_bytes_new_take (data, size);
  array = g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, bytes, TRUE);
  return g_variant_ref_sink (g_variant_new_tuple (&array, 1));
}

/* ---- the library ---- */

typedef struct
{
  DcDetachedCode *pool;
  GVariant       *args;
  Mode            mode;
  gsize           size;
  guint           n;
  guint           done;
  gboolean        check_all;
  gboolean        failed;
  gboolean        queued;
} Run;

static gboolean
check_result (Run      *run,
              GVariant *value,
              GError   *error)
{
  if (value == NULL)
    {
      bench_fail ("%" G_GSIZE_FORMAT "-byte call failed: %s", run->size, error->message);
      return FALSE;
    }

  if (run->mode == MODE_ARGS_ONLY)
    {
      guint64 got = 0;

      if (!g_variant_is_of_type (value, G_VARIANT_TYPE ("(t)")))
        {
          bench_fail ("args-only call returned %s", g_variant_get_type_string (value));
          return FALSE;
        }
      g_variant_get (value, "(t)", &got);
      if (got != run->size)
        {
          bench_fail ("worker saw %" G_GUINT64_FORMAT " bytes, not %" G_GSIZE_FORMAT,
                      got, run->size);
          return FALSE;
        }
      return TRUE;
    }
  else
    {
      g_autoptr(GVariant) array = NULL;
      const guint8 *data;
      gsize n = 0, i;

      if (!g_variant_is_of_type (value, G_VARIANT_TYPE ("(ay)")))
        {
          bench_fail ("echo call returned %s", g_variant_get_type_string (value));
          return FALSE;
        }
      array = g_variant_get_child_value (value, 0);
      data = g_variant_get_fixed_array (array, &n, 1);
      if (n != run->size)
        {
          bench_fail ("echo came back with %" G_GSIZE_FORMAT " bytes, not %" G_GSIZE_FORMAT,
                      n, run->size);
          return FALSE;
        }
      /* All bytes once (outside the timing); the ends every time. */
      if (run->check_all)
        {
          for (i = 0; i < n; i++)
            if (data[i] != pattern_byte (i))
              {
                bench_fail ("echo differs at byte %" G_GSIZE_FORMAT, i);
                return FALSE;
              }
        }
      else if (data[0] != pattern_byte (0) || data[n - 1] != pattern_byte (n - 1))
        {
          bench_fail ("echo differs at its ends");
          return FALSE;
        }
      return TRUE;
    }
}

static void
call_cb (GObject      *source,
         GAsyncResult *result,
         gpointer      data)
{
  Run *run = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (run->pool, result, &error);

  if (!check_result (run, value, error))
    run->failed = TRUE;
  if (++run->done == run->n || run->failed)
    {
      bench_loop_quit ();
      return;
    }
  /* Queued calls were all made at once; the others one after another. */
  if (!run->queued)
    dc_detached_code_call_async (run->pool, run->args, G_PRIORITY_DEFAULT, NULL, call_cb, run);
}

/* Seconds for @n sequential calls, or -1 when the library failed. */
static double
library_round (DcDetachedCode *pool,
               Mode            mode,
               GVariant       *args,
               gsize           size,
               guint           n,
               gboolean        check_all)
{
  Run run = { pool, args, mode, size, n, 0, check_all, FALSE, FALSE };
  gint64 t0 = bench_now_ns ();

  dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, call_cb, &run);
  if (!bench_loop_run (120))
    {
      bench_fail ("hang: %u of %u sequential %" G_GSIZE_FORMAT "-byte calls completed in 120 s",
                  run.done, n, size);
      return -1;
    }
  if (run.failed)
    return -1;
  return (bench_now_ns () - t0) / 1e9;
}

/* Seconds for @n args-only calls made at once, or -1 when the library
 * failed. */
static double
queued_round (DcDetachedCode *pool,
              GVariant       *args,
              gsize           size,
              guint           n)
{
  Run run = { pool, args, MODE_ARGS_ONLY, size, n, 0, FALSE, FALSE, TRUE };
  gint64 t0 = bench_now_ns ();
  guint i;

  for (i = 0; i < n; i++)
    dc_detached_code_call_async (pool, args, G_PRIORITY_DEFAULT, NULL, call_cb, &run);
  if (!bench_loop_run (300))
    {
      bench_fail ("hang: %u of %u queued %" G_GSIZE_FORMAT "-byte calls completed in 300 s",
                  run.done, n, size);
      return -1;
    }
  /* A failed round leaves calls behind: let them finish before the
   * pool is used again. */
  while (run.done < n && bench_loop_run (60))
    ;
  if (run.failed)
    return -1;
  return (bench_now_ns () - t0) / 1e9;
}

/* ---- the baseline ---- */

static double
baseline_round (BenchPeer *peer,
                gsize      in,
                gsize      out,
                guint      n)
{
  g_autofree guint8 *buf = g_malloc0 (MAX (in, out));
  gint64 t0 = bench_now_ns ();
  guint i;

  for (i = 0; i < n; i++)
    if (!bench_write_full (peer->fd, buf, in) || !bench_read_full (peer->fd, buf, out))
      g_error ("baseline peer went away");
  return (bench_now_ns () - t0) / 1e9;
}

typedef struct
{
  int   fd;
  gsize out;
  guint n;
} ReplyReader;

static gpointer
read_replies (gpointer data)
{
  ReplyReader *reader = data;
  g_autofree guint8 *buf = g_malloc (reader->out);
  guint i;

  for (i = 0; i < reader->n; i++)
    if (!bench_read_full (reader->fd, buf, reader->out))
      g_error ("baseline peer went away");
  return NULL;
}

/* Every call frame written in one go, as the library's queue does, while
 * a thread reads the replies (which would fill the socket and stop the
 * peer otherwise: each small message costs the socket far more than its
 * bytes). */
static double
baseline_queued_round (BenchPeer *peer,
                       gsize      in,
                       gsize      out,
                       guint      n)
{
  g_autofree guint8 *buf = g_malloc0 (in);
  ReplyReader reader = { peer->fd, out, n };
  gint64 t0 = bench_now_ns ();
  GThread *thread = g_thread_new ("replies", read_replies, &reader);
  guint i;

  for (i = 0; i < n; i++)
    if (!bench_write_full (peer->fd, buf, in))
      g_error ("baseline peer went away");
  g_thread_join (thread);
  return (bench_now_ns () - t0) / 1e9;
}

/* The queued cases: 500 calls of @size bytes at once on one worker, at
 * each depth. */
static void
run_queued (gsize size)
{
  static const guint depths[] = { 1, 32 };
  DcDetachedCode *pools[G_N_ELEMENTS (depths)] = { NULL, };
  double lib_best[G_N_ELEMENTS (depths)] = { 0, }, base_best = 0;
  gboolean have_depth = bench_have_pipeline_depth ();
  g_autoptr(GVariant) args = NULL;
  BenchFrames frames;
  BenchPeer peer;
  gboolean ok = TRUE, any = FALSE, measured = FALSE;
  guint n = bench_count (500, 20), d, r;

  for (d = 0; d < G_N_ELEMENTS (depths); d++)
    {
      g_autofree char *key = g_strdup_printf ("bandwidth.queued.1MiB.d%u", depths[d]);

      if (!bench_selected (key) || (d > 0 && !have_depth))
        continue;
      if (have_depth)
        pools[d] = bench_pool_new (bandwidth_code, GINT_TO_POINTER (MODE_ARGS_ONLY), 1,
                                   "pipeline-depth", depths[d], NULL);
      else
        pools[d] = bench_pool_new (bandwidth_code, GINT_TO_POINTER (MODE_ARGS_ONLY), 1, NULL);
      any = TRUE;
    }
  if (!any)
    return;

  args = make_args (size);
  for (d = 0; d < G_N_ELEMENTS (depths); d++)
    if (pools[d] != NULL)
      {
        /* Warm both sides, and tell the frame sizes once. */
        ok = ok && queued_round (pools[d], args, size, 4) > 0;
        if (ok && !measured)
          ok = measured = bench_measure_frames (pools[d], args, 4, &frames);
      }

  if (ok)
    {
      peer = bench_peer_spawn (bench_reply_peer, &frames);
      baseline_queued_round (&peer, frames.call, frames.reply, 3);
      for (r = 0; ok && r < ROUNDS; r++)
        {
          double base_s;

          for (d = 0; ok && d < G_N_ELEMENTS (depths); d++)
            if (pools[d] != NULL)
              {
                double lib_s = queued_round (pools[d], args, size, n);

                if (lib_s < 0)
                  ok = FALSE;
                else
                  lib_best[d] = MAX (lib_best[d], (double) size * n / lib_s / (1 << 20));
              }
          base_s = baseline_queued_round (&peer, frames.call, frames.reply, n);
          base_best = MAX (base_best, (double) size * n / base_s / (1 << 20));
        }
      bench_peer_finish (&peer);
    }

  for (d = 0; d < G_N_ELEMENTS (depths); d++)
    if (pools[d] != NULL)
      {
        g_autofree char *key = g_strdup_printf ("bandwidth.queued.1MiB.d%u", depths[d]);
        g_autofree char *label = g_strdup_printf ("%u x 1 MiB args queued at once, depth %u",
                                                  n, depths[d]);

        if (ok)
          bench_table_row (key, label, lib_best[d], base_best, "MiB/s",
                           BENCH_RATIO_AT_LEAST, 0.5);
        bench_pool_destroy (pools[d]);
      }
  if (ok)
    bench_table_note ("queued: %u args-only calls made at once (one \"(ay)\" value, kept "
                      "by every call), then the loop runs until all replied; the baseline "
                      "writes every %" G_GSIZE_FORMAT "-byte frame while a thread reads the %"
                      G_GSIZE_FORMAT "-byte replies", n, frames.call, frames.reply);
}

typedef struct
{
  const char *key;
  const char *label;
  gsize       size;
  Mode        mode;
  guint       base_count;
  double      target;     /* ratio at least; 0: none */
} Case;

int
main (int   argc,
      char *argv[])
{
  static const Case cases[] = {
    { "bandwidth.echo.1MiB", "1 MiB echoed", 1 << 20, MODE_ECHO, 1000, 0.5 },
    { "bandwidth.args.1MiB", "1 MiB args only", 1 << 20, MODE_ARGS_ONLY, 1000, 0.5 },
    { "bandwidth.echo.16MiB", "16 MiB echoed", 16 << 20, MODE_ECHO, 40, 0 },
    { "bandwidth.args.16MiB", "16 MiB args only", 16 << 20, MODE_ARGS_ONLY, 40, 0 },
  };
  /* [mode][transport]: transport 0 is the pool as it comes (memfds off by
   * default); 1, when the class has a memfd-threshold, the same pool with
   * messages of 64 KiB and more in memfds, so that each build shows what
   * that path costs or buys. */
  DcDetachedCode *pools[2][2] = { { NULL, NULL }, { NULL, NULL } };
  double lib_best[G_N_ELEMENTS (cases)][2], base_best[G_N_ELEMENTS (cases)];
  BenchFrames frames[G_N_ELEMENTS (cases)];
  guint n[G_N_ELEMENTS (cases)];
  guint n_transports = 1, default_threshold = 0;
  guint i, r, t, m;
  GObjectClass *klass;

  bench_init (&argc, &argv, "bench-bandwidth: large \"(ay)\" arguments, one call at a "
              "time, 1 worker");

  klass = g_type_class_ref (DC_TYPE_DETACHED_CODE);
  if (g_object_class_find_property (klass, "memfd-threshold") != NULL)
    n_transports = 2;
  g_type_class_unref (klass);

  for (m = 0; m < 2; m++)
    {
      pools[m][0] = bench_pool_new (bandwidth_code, GINT_TO_POINTER (m), 1, NULL);
      if (n_transports > 1)
        {
          pools[m][1] = bench_pool_new (bandwidth_code, GINT_TO_POINTER (m), 1,
                                        "memfd-threshold", 65536u, NULL);
          g_object_get (pools[m][0], "memfd-threshold", &default_threshold, NULL);
        }
    }

  bench_table_begin ("MiB/s of argument bytes, one call at a time (higher is better)");

  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      const Case *c = &cases[i];
      g_autoptr(GVariant) args = NULL;
      BenchPeer peer;
      gboolean ok = TRUE;

      lib_best[i][0] = lib_best[i][1] = base_best[i] = 0;
      if (!bench_selected (c->key))
        continue;

      args = make_args (c->size);
      n[i] = bench_count (c->base_count, 3);

      /* The first call checks every byte; the next ones warm both sides'
       * buffers and tell the sizes of the frames (on the socket path,
       * whose bytes the worker's counters see). */
      for (t = 0; ok && t < n_transports; t++)
        ok = library_round (pools[c->mode][t], c->mode, args, c->size, 1, TRUE) > 0;
      ok = ok && bench_measure_frames (pools[c->mode][0], args, 4, &frames[i]);
      if (!ok)
        continue;

      peer = bench_peer_spawn (bench_reply_peer, &frames[i]);
      baseline_round (&peer, frames[i].call, frames[i].reply, 3);

      for (r = 0; ok && r < ROUNDS; r++)
        {
          double base_s;

          for (t = 0; ok && t < n_transports; t++)
            {
              double lib_s = library_round (pools[c->mode][t], c->mode, args, c->size,
                                            n[i], FALSE);

              if (lib_s < 0)
                ok = FALSE;
              else
                lib_best[i][t] = MAX (lib_best[i][t], (double) c->size * n[i] / lib_s / (1 << 20));
            }
          base_s = baseline_round (&peer, frames[i].call, frames[i].reply, n[i]);
          base_best[i] = MAX (base_best[i], (double) c->size * n[i] / base_s / (1 << 20));
        }
      bench_peer_finish (&peer);
      if (!ok)
        continue;

      for (t = 0; t < n_transports; t++)
        {
          g_autofree char *key = g_strdup_printf ("%s%s", c->key, t == 1 ? ".memfd" : "");
          g_autofree char *label = NULL;

          if (n_transports == 1)
            label = g_strdup (c->label);
          else if (t == 0)
            label = g_strdup_printf ("%s, as built (%s)", c->label,
                                     default_threshold > 0 && frames[i].call >= default_threshold
                                       ? "memfd" : "socket");
          else
            label = g_strdup_printf ("%s, memfd-threshold 64 KiB", c->label);
          bench_table_row (key, label, lib_best[i][t], base_best[i], "MiB/s",
                           t == 0 && c->target > 0 ? BENCH_RATIO_AT_LEAST : BENCH_NO_TARGET,
                           c->target);
        }
    }

  for (m = 0; m < 2; m++)
    for (t = 0; t < n_transports; t++)
      bench_pool_destroy (pools[m][t]);

  run_queued (1 << 20);

  bench_table_note ("best of %u alternating rounds; the baseline moves the library's frame "
                    "sizes with blocking write()/read(), no copy beyond the kernel's; "
                    "args-only calls get a \"(t)\" reply", ROUNDS);
  if (n_transports > 1)
    bench_table_note ("\"as built\": the default memfd-threshold, %u bytes (0: every byte "
                      "through the socket); \"memfd-threshold 64 KiB\": messages that large "
                      "travel as a sealed memfd", default_threshold);
  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    if (bench_selected (cases[i].key) && lib_best[i][0] > 0)
      bench_table_note ("%s: %u calls per round, frames %" G_GSIZE_FORMAT " in / %"
                        G_GSIZE_FORMAT " out bytes (%s), %.2f ms per call (library as built), "
                        "%.2f ms (baseline)",
                        cases[i].label, n[i], frames[i].call, frames[i].reply, frames[i].how,
                        cases[i].size / (lib_best[i][0] * (1 << 20)) * 1e3,
                        cases[i].size / (base_best[i] * (1 << 20)) * 1e3);

  return bench_finish ();
}
