/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Large arguments and results, which travel from their own bytes rather
 * than from a copy: many queued at once, at each pipeline depth, on both
 * streams, through memfds, sent again after exit-on-die, and a frame cut
 * short by a cancellation or a killed worker. */

#include "config.h"

#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dc-test-common.h"
#include "dc-wire-private.h"

#define MiB (1 << 20)

static guint64
checksum (const guint8 *data,
          gsize         n)
{
  guint64 h = 14695981039346656037ull;   /* FNV-1a */
  gsize i;

  for (i = 0; i < n; i++)
    h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

/* "(ay)", or any other value but those below: its length and checksum,
 * "(tt)".  "(s)": a value of that type made from one byte.  "(bay)": the
 * bytes back, "(ay)", when b (a large result); an error when not.  "(i)":
 * sleeps that many ms (the worker reads nothing meanwhile) and gives its
 * pid, "(i)". */
static GVariant *
large_code (GVariant  *args,
            gpointer   user_data,
            GError   **error)
{
  g_autoptr(GVariant) bytes = NULL;
  const guint8 *data;
  gsize n;

  if (g_variant_is_of_type (args, G_VARIANT_TYPE ("(i)")))
    {
      gint32 ms;

      g_variant_get (args, "(i)", &ms);
      g_usleep (ms * G_TIME_SPAN_MILLISECOND);
      return g_variant_new ("(i)", (gint32) getpid ());
    }
  if (g_variant_is_of_type (args, G_VARIANT_TYPE ("(bay)")))
    {
      gboolean echo;

      g_variant_get (args, "(b@ay)", &echo, &bytes);
      if (!echo)
        {
          g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "asked to fail");
          return NULL;
        }
      return g_variant_new ("(@ay)", g_steal_pointer (&bytes));
    }

  if (g_variant_is_of_type (args, G_VARIANT_TYPE ("(s)")))
    {
      const char *type;

      /* A value of that type from one byte of data. */
      g_variant_get (args, "(&s)", &type);
      return g_variant_new_from_data (G_VARIANT_TYPE (type), "x", 1, FALSE, NULL, NULL);
    }
  if (!g_variant_is_of_type (args, G_VARIANT_TYPE ("(ay)")))
    {
      /* Any other value: its serialized size and checksum. */
      g_autofree guint8 *copy = g_malloc (g_variant_get_size (args));

      g_variant_store (args, copy);
      n = g_variant_get_size (args);
      return g_variant_new ("(tt)", (guint64) n, checksum (copy, n));
    }

  g_variant_get (args, "(@ay)", &bytes);
  data = g_variant_get_fixed_array (bytes, &n, 1);
  return g_variant_new ("(tt)", (guint64) n, checksum (data, n));
}

/* Bytes of @size that differ from call to call, in a value built from its
 * children, as a caller makes it. */
static GVariant *
make_bytes (gsize size,
            guint seed)
{
  guint8 *data = g_malloc (size);
  gsize i;

  for (i = 0; i < size; i++)
    data[i] = (guint8) ((i * 31 + seed * 7) ^ (i >> 11));
  return g_variant_new_from_data (G_VARIANT_TYPE_BYTESTRING, data, size, TRUE, g_free, data);
}

static DcDetachedCode *
new_large_pool (const char *first_property,
                ...)
{
  DcDetachedCode *code = dc_detached_code_new (large_code, NULL, NULL);
  va_list ap;

  g_object_set (code, "min-workers", 1, "max-workers", 1, NULL);
  va_start (ap, first_property);
  if (first_property != NULL)
    g_object_set_valist (G_OBJECT (code), first_property, ap);
  va_end (ap);
  return code;
}

static GPid
worker_pid (DcDetachedCode *code)
{
  Result r = { 0, };
  gint32 pid;

  call_sync (code, g_variant_new ("(i)", 0), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(i)", &pid);
  result_clear (&r);
  return pid;
}

/* Sizes on both sides of the split between copied and kept arguments. */
static const gsize sizes[] = {
  1 * MiB, 100, 64 * 1024 - 8, 64 * 1024, 3 * MiB + 5, 1 * MiB, 200 * 1024, 1,
};

#define N_QUEUED 24

typedef struct
{
  Result  results[N_QUEUED];
  guint64 sums[N_QUEUED];
  gsize   lengths[N_QUEUED];
  gboolean echo;
} Queued;

/* N_QUEUED calls made at once, each with bytes of its own; the caller
 * drops its references at once.  Under @echo every call asks for its
 * bytes back. */
static void
queue_calls (DcDetachedCode *code,
             Queued         *q,
             gboolean        echo)
{
  guint i;

  memset (q, 0, sizeof *q);
  q->echo = echo;
  for (i = 0; i < N_QUEUED; i++)
    {
      GVariant *bytes = g_variant_ref_sink (make_bytes (sizes[i % G_N_ELEMENTS (sizes)], i));
      gsize n;
      const guint8 *data = g_variant_get_fixed_array (bytes, &n, 1);

      q->lengths[i] = n;
      q->sums[i] = checksum (data, n);
      if (echo)
        call (code, g_variant_new ("(b@ay)", TRUE, bytes), &q->results[i]);
      else
        call (code, g_variant_new ("(@ay)", bytes), &q->results[i]);
      g_variant_unref (bytes);
    }
}

static void
check_calls (Queued *q)
{
  guint i;

  for (i = 0; i < N_QUEUED; i++)
    {
      Result *r = &q->results[i];
      guint64 n, sum;

      wait_for_flag (&r->done, "a queued large call");
      g_assert_no_error (r->error);
      if (q->echo)
        {
          g_autoptr(GVariant) bytes = NULL;
          const guint8 *data;
          gsize len;

          g_assert_cmpstr (g_variant_get_type_string (r->value), ==, "(ay)");
          g_variant_get (r->value, "(@ay)", &bytes);
          data = g_variant_get_fixed_array (bytes, &len, 1);
          n = len;
          sum = checksum (data, len);
        }
      else
        g_variant_get (r->value, "(tt)", &n, &sum);
      g_assert_cmpuint (n, ==, q->lengths[i]);
      g_assert_cmpuint (sum, ==, q->sums[i]);
      /* One worker: in call order. */
      if (i > 0)
        g_assert_cmpuint (r->order, >, q->results[i - 1].order);
      result_clear (r);
    }
}

static void
run_queued (DcDetachedCode *code)
{
  Queued q;

  queue_calls (code, &q, FALSE);
  check_calls (&q);
  queue_calls (code, &q, TRUE);
  check_calls (&q);
}

/* The pools the tests run on. */
typedef struct
{
  guint    depth;
  DcStream stream;
  guint    memfd_threshold;   /* 0: none */
} PoolConfig;

static const PoolConfig depth1 = { 1, DC_STREAM_AUTO, 0 };
static const PoolConfig depth32 = { 32, DC_STREAM_AUTO, 0 };
static const PoolConfig depth32_pipes = { 32, DC_STREAM_PIPE, 0 };
/* Both ways: the calls' frames, and the workers' large results. */
static const PoolConfig depth32_memfd = { 32, DC_STREAM_AUTO, 65536 };
/* Room for a call written behind the one that runs. */
static const PoolConfig depth2 = { 2, DC_STREAM_AUTO, 0 };
static const PoolConfig depth2_pipes = { 2, DC_STREAM_PIPE, 0 };

static DcDetachedCode *
config_pool (const PoolConfig *config)
{
  return new_large_pool ("pipeline-depth", config->depth, "stream", config->stream,
                         "memfd-threshold", config->memfd_threshold, NULL);
}

static void
test_queued (gconstpointer data)
{
  DcDetachedCode *code = config_pool (data);

  run_queued (code);
  destroy_pool (code);
}

/* A failing call first: the worker leaves after it, and the large calls
 * written behind it go to a fresh worker, written again from the values
 * they kept. */
static void
check_requeue (DcDetachedCode *code)
{
  Result failing = { 0, };
  Queued q;

  call (code, g_variant_new ("(b@ay)", FALSE, make_bytes (2 * MiB, 99)), &failing);
  queue_calls (code, &q, FALSE);
  wait_for_flag (&failing.done, "the failing call");
  g_assert_error (failing.error, G_IO_ERROR, G_IO_ERROR_FAILED);
  result_clear (&failing);
  check_calls (&q);
}

static void
test_requeue (void)
{
  DcDetachedCode *code = new_large_pool ("pipeline-depth", 32, "exit-on-die", TRUE, NULL);

  check_requeue (code);
  destroy_pool (code);
}

static void
test_requeue_memfd (void)
{
  DcDetachedCode *code = new_large_pool ("pipeline-depth", 32, "exit-on-die", TRUE,
                                         "memfd-threshold", 65536u, NULL);

  check_requeue (code);
  destroy_pool (code);
}

/* Far more than a socket or a pipe holds: its frame is written across
 * many wake-ups, and is half written while the worker sleeps. */
#define HUGE (24 * MiB)

/* A worker busy for a long time (it reads nothing), then a huge call
 * written behind it: call_async() writes what fits and returns. */
static GVariant *
start_half_written (DcDetachedCode *code,
                    Result         *sleeper,
                    GCancellable   *sleeper_cancellable,
                    Result         *huge,
                    GCancellable   *huge_cancellable,
                    guint64        *sum)
{
  GVariant *bytes = g_variant_ref_sink (make_bytes (HUGE, 5));
  gsize n;
  const guint8 *data = g_variant_get_fixed_array (bytes, &n, 1);

  *sum = checksum (data, n);
  dc_detached_code_call_async (code, g_variant_new ("(i)", 1000), G_PRIORITY_DEFAULT,
                               sleeper_cancellable, result_cb, sleeper);
  dc_detached_code_call_async (code, g_variant_new ("(@ay)", bytes), G_PRIORITY_DEFAULT,
                               huge_cancellable, result_cb, huge);
  return bytes;
}

static void
test_cancel_mid_write (void)
{
  DcDetachedCode *code = config_pool (&depth2);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Result sleeper = { 0, }, huge = { 0, }, after = { 0, };
  GVariant *bytes;
  guint64 sum, n, got;

  worker_pid (code);
  bytes = start_half_written (code, &sleeper, NULL, &huge, cancellable, &sum);
  /* The last reference but the pool's goes; then the call completes
   * while its frame is still being written. */
  g_variant_unref (bytes);
  g_cancellable_cancel (cancellable);
  wait_for_flag (&huge.done, "the cancelled call");
  g_assert_error (huge.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* The rest of the frame still goes out whole: the stream stays in
   * step, and the next call on the same worker is answered right. */
  bytes = g_variant_ref_sink (make_bytes (3 * MiB, 8));
  call (code, g_variant_new ("(@ay)", bytes), &after);
  wait_for_flag (&after.done, "the call after the cancelled one");
  g_assert_no_error (after.error);
  g_variant_get (after.value, "(tt)", &n, &got);
  g_assert_cmpuint (n, ==, 3 * MiB);
  g_assert_cmpuint (got, ==, checksum (g_variant_get_data (bytes), 3 * MiB));
  g_variant_unref (bytes);

  wait_for_flag (&sleeper.done, "the sleeping call");
  g_assert_no_error (sleeper.error);
  result_clear (&sleeper);
  result_clear (&huge);
  result_clear (&after);
  destroy_pool (code);
}

/* kill-on-cancel: the running call is cancelled while the huge frame
 * behind it is half written; the worker is killed, and the huge call
 * fails with it. */
static void
test_cancel_mid_write_kills (void)
{
  DcDetachedCode *code = new_large_pool ("pipeline-depth", 2, "kill-on-cancel", TRUE, NULL);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Result sleeper = { 0, }, huge = { 0, };
  GPid pid = worker_pid (code);
  guint64 sum;

  g_variant_unref (start_half_written (code, &sleeper, cancellable, &huge, NULL, &sum));
  g_cancellable_cancel (cancellable);
  wait_for_flag (&sleeper.done, "the cancelled call");
  g_assert_error (sleeper.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  wait_for_flag (&huge.done, "the call written behind it");
  g_assert_error (huge.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  assert_process_gone (pid);
  result_clear (&sleeper);
  result_clear (&huge);
  destroy_pool (code);
}

static void
test_killed_mid_write (gconstpointer data)
{
  DcDetachedCode *code = config_pool (data);
  Result sleeper = { 0, }, huge = { 0, }, after = { 0, };
  GPid pid = worker_pid (code);
  guint64 sum, n, got;
  GVariant *bytes;

  bytes = start_half_written (code, &sleeper, NULL, &huge, NULL, &sum);
  g_assert_cmpint (kill (pid, SIGKILL), ==, 0);
  wait_for_flag (&huge.done, "the call of the killed worker");
  g_assert_error (huge.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  wait_for_flag (&sleeper.done, "the sleeping call");
  g_assert_error (sleeper.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  assert_process_gone (pid);

  /* The same value again, on a fresh worker. */
  call (code, g_variant_new ("(@ay)", bytes), &after);
  g_variant_unref (bytes);
  wait_for_flag (&after.done, "the call after the killed worker");
  g_assert_no_error (after.error);
  g_variant_get (after.value, "(tt)", &n, &got);
  g_assert_cmpuint (n, ==, HUGE);
  g_assert_cmpuint (got, ==, sum);

  result_clear (&sleeper);
  result_clear (&huge);
  result_clear (&after);
  destroy_pool (code);
}

static void
unmap (gpointer data)
{
  munmap (data, DC_WIRE_MAX_PAYLOAD + 1);
}

/* Too large for a message: the call fails with MARSHAL, and the value is
 * never read (its pages are never touched). */
static void
test_too_large (void)
{
  DcDetachedCode *code = new_large_pool (NULL);
  Result r = { 0, };
  gsize size = DC_WIRE_MAX_PAYLOAD + 1;
  void *map = mmap (NULL, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  GVariant *bytes;

  g_assert_true (map != MAP_FAILED);
  bytes = g_variant_new_from_data (G_VARIANT_TYPE_BYTESTRING, map, size, TRUE, unmap, map);
  call (code, g_variant_new ("(@ay)", bytes), &r);
  wait_for_flag (&r.done, "the oversized call");
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);
  destroy_pool (code);
}

/* A large value of fixed size made from data of the wrong size: GLib
 * reads it as the type's default, all zeros, and keeps no bytes for it
 * (g_variant_get_data() gives NULL).  The worker receives those zeros. */
static void
test_fixed_size_wrong_data (gconstpointer data)
{
  DcDetachedCode *code = config_pool (data);
  GString *type = g_string_new ("(");
  g_autofree guint8 *zeros = g_malloc0 (64 * 1024);
  Result r = { 0, };
  guint64 n, sum;
  guint i;

  for (i = 0; i < 64 * 1024 / 8; i++)
    g_string_append_c (type, 't');
  g_string_append_c (type, ')');
  call (code, g_variant_new_from_data (G_VARIANT_TYPE (type->str), "x", 1, FALSE, NULL, NULL),
        &r);
  wait_for_flag (&r.done, "the call with a value of the wrong size");
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(tt)", &n, &sum);
  g_assert_cmpuint (n, ==, 64 * 1024);
  g_assert_cmpuint (sum, ==, checksum (zeros, 64 * 1024));
  result_clear (&r);

  /* The same as a worker's result. */
  call (code, g_variant_new ("(s)", type->str), &r);
  wait_for_flag (&r.done, "the result of the wrong size");
  g_assert_no_error (r.error);
  g_assert_cmpuint (g_variant_get_size (r.value), ==, 64 * 1024);
  g_assert_true (memcmp (g_variant_get_data (r.value), zeros, 64 * 1024) == 0);
  result_clear (&r);
  g_string_free (type, TRUE);
  destroy_pool (code);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_data_func ("/detached-code/large/queued-depth1", &depth1, test_queued);
  g_test_add_data_func ("/detached-code/large/queued-depth32", &depth32, test_queued);
  g_test_add_data_func ("/detached-code/large/queued-pipes", &depth32_pipes, test_queued);
  g_test_add_data_func ("/detached-code/large/queued-memfd", &depth32_memfd, test_queued);
  g_test_add_func ("/detached-code/large/requeue", test_requeue);
  g_test_add_func ("/detached-code/large/requeue-memfd", test_requeue_memfd);
  g_test_add_func ("/detached-code/large/cancel-mid-write", test_cancel_mid_write);
  g_test_add_func ("/detached-code/large/cancel-mid-write-kills", test_cancel_mid_write_kills);
  g_test_add_data_func ("/detached-code/large/killed-mid-write", &depth2, test_killed_mid_write);
  g_test_add_data_func ("/detached-code/large/killed-mid-write-pipes", &depth2_pipes,
                        test_killed_mid_write);
  g_test_add_func ("/detached-code/large/too-large", test_too_large);
  g_test_add_data_func ("/detached-code/large/fixed-size-wrong-data", &depth1,
                        test_fixed_size_wrong_data);
  g_test_add_data_func ("/detached-code/large/fixed-size-wrong-data-pipes", &depth2_pipes,
                        test_fixed_size_wrong_data);
  g_test_add_data_func ("/detached-code/large/fixed-size-wrong-data-memfd", &depth32_memfd,
                        test_fixed_size_wrong_data);

  return g_test_run ();
}
