/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* dc_detached_code_map_async(): results in item order, chunks spread
 * over the workers, the lowest failing item, a dying worker, cancellation,
 * time limits, the queue bound, bad input, other threads, and workers that
 * lie about a chunk. */

#include "config.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dc-detached-code-private.h"
#include "dc-map-private.h"
#include "dc-wire-private.h"
#include "dc-test-common.h"

/* ---- the code ---- */

/* Items are ("command", n) or (n):
 *   (n), ("double", n)  → (2n)
 *   ("pid", n)          → (pid), after n ms
 *   ("fail", n)         → G_IO_ERROR_NOT_FOUND "item n"
 *   ("slow-fail", n)    → the same, after 300 ms
 *   ("null", n)         → no value, no error
 *   ("exit", n)         → the worker exits with status n
 *   ("string", n)       → ("n"), a result of variable size
 *   ("lie-count", s), ("lie-index", s), ("lie-size", s): a malformed
 *                         reply to the chunk of serial s (too few results,
 *                         a failing item past the end, results of the
 *                         wrong size), then a long sleep */
static GVariant *
map_code (GVariant  *args,
          gpointer   user_data,
          GError   **error)
{
  const char *command = "double";
  gint64 n;

  if (g_variant_is_of_type (args, G_VARIANT_TYPE ("(i)")))
    {
      gint32 i;

      g_variant_get (args, "(i)", &i);
      n = i;
    }
  else
    g_variant_get (args, "(&sx)", &command, &n);

  if (g_str_equal (command, "double"))
    return g_variant_new ("(i)", (gint32) (2 * n));
  if (g_str_equal (command, "pid"))
    {
      g_usleep (n * G_TIME_SPAN_MILLISECOND);
      return g_variant_new ("(i)", (gint32) getpid ());
    }
  if (g_str_equal (command, "slow-fail"))
    g_usleep (300 * G_TIME_SPAN_MILLISECOND);
  if (g_str_equal (command, "fail") || g_str_equal (command, "slow-fail"))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "item %d", (int) n);
      return NULL;
    }
  if (g_str_equal (command, "null"))
    return NULL;
  if (g_str_equal (command, "exit"))
    _exit ((int) n);
  if (g_str_equal (command, "string"))
    {
      g_autofree char *text = g_strdup_printf ("%d", (int) n);

      return g_variant_new ("(s)", text);
    }
  if (g_str_equal (command, "lie-count") || g_str_equal (command, "lie-index") ||
      g_str_equal (command, "lie-size"))
    {
      guint8 frame[DC_WIRE_HEADER_SIZE + DC_WIRE_CHUNK_HEAD_SIZE + 32];
      /* A success with one result for a chunk of several; a failure at
       * an item past the chunk's end. */
      DcWireChunkHead head = { 0, 0 };
      gsize size = DC_WIRE_CHUNK_HEAD_SIZE;

      if (g_str_equal (command, "lie-count"))
        {
          /* An "av" of one "()": the unit value, a NUL, its type. */
          static const guint8 one_unit[] = { 0, 0, '(', ')', 4 };

          memcpy (frame + DC_WIRE_HEADER_SIZE + DC_WIRE_CHUNK_HEAD_SIZE, one_unit, sizeof one_unit);
          size += sizeof one_unit;
        }
      else if (g_str_equal (command, "lie-size"))
        {
          /* Three "(i)" results of 3 bytes each, framed as GLib would. */
          static const guint8 short_ints[] = {
            1, 2, 3, 0, '(', 'i', ')', 0,
            1, 2, 3, 0, '(', 'i', ')', 0,
            1, 2, 3, 0, '(', 'i', ')',
            7, 15, 23,
          };

          memcpy (frame + DC_WIRE_HEADER_SIZE + DC_WIRE_CHUNK_HEAD_SIZE, short_ints,
                  sizeof short_ints);
          size += sizeof short_ints;
        }
      else
        {
          head.failure = DC_WIRE_NULL_RESULT;
          head.index = 99;
        }
      memcpy (frame + DC_WIRE_HEADER_SIZE, &head, sizeof head);
      dc_wire_header_encode (frame, DC_WIRE_CHUNK_RESULT, (guint64) n, size);
      g_assert_cmpint (write (highest_fd (), frame, DC_WIRE_HEADER_SIZE + size), ==,
                       (gssize) (DC_WIRE_HEADER_SIZE + size));
      g_usleep (60 * G_USEC_PER_SEC);
      return g_variant_new ("()");
    }

  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "unknown command %s", command);
  return NULL;
}

static DcDetachedCode *
map_pool (guint workers)
{
  DcDetachedCode *code = dc_detached_code_new (map_code, NULL, NULL);

  g_object_set (code, "min-workers", workers, "max-workers", workers, NULL);
  return code;
}

/* ---- running a map ---- */

static void
map_result_cb (GObject      *source,
               GAsyncResult *res,
               gpointer      user_data)
{
  Result *r = user_data;

  r->times_called++;
  g_assert_false (r->done);
  r->value = dc_detached_code_map_finish (DC_DETACHED_CODE (source), res, &r->error);
  g_assert_true ((r->value == NULL) != (r->error == NULL));
  r->done = TRUE;
}

static void
map_sync (DcDetachedCode *code,
          GVariant       *items,
          guint           chunk_size,
          GCancellable   *cancellable,
          Result         *r)
{
  dc_detached_code_map_async (code, items, chunk_size, G_PRIORITY_DEFAULT, cancellable,
                              map_result_cb, r);
  /* Never before map_async() returns. */
  g_assert_false (r->done);
  wait_for_flag (&r->done, "a map");
}

/* ("command", n) for n in [0, count), with @special at @at. */
static GVariant *
commands (const char *command,
          guint       count,
          const char *special,
          guint       at)
{
  GVariantBuilder builder;
  guint i;

  g_variant_builder_init (&builder, G_VARIANT_TYPE ("a(sx)"));
  for (i = 0; i < count; i++)
    g_variant_builder_add (&builder, "(sx)", special != NULL && i == at ? special : command,
                           (gint64) i);
  return g_variant_builder_end (&builder);
}

/* @count times ("command", n). */
static GVariant *
repeat (const char *command,
        gint64      n,
        guint       count)
{
  GVariantBuilder builder;
  guint i;

  g_variant_builder_init (&builder, G_VARIANT_TYPE ("a(sx)"));
  for (i = 0; i < count; i++)
    g_variant_builder_add (&builder, "(sx)", command, n);
  return g_variant_builder_end (&builder);
}

/* The integer in the (i) of item @i. */
static gint32
result_int (GVariant *results,
            gsize     i)
{
  g_autoptr(GVariant) boxed = g_variant_get_child_value (results, i);
  g_autoptr(GVariant) value = g_variant_get_variant (boxed);
  gint32 got;

  g_assert_true (g_variant_is_of_type (value, G_VARIANT_TYPE ("(i)")));
  g_variant_get (value, "(i)", &got);
  return got;
}

/* The integer of each (i) result. */
static void
assert_doubled (GVariant *results,
                guint     count)
{
  guint i;

  g_assert_true (g_variant_is_of_type (results, G_VARIANT_TYPE ("av")));
  g_assert_cmpuint (g_variant_n_children (results), ==, count);
  for (i = 0; i < count; i++)
    g_assert_cmpint (result_int (results, i), ==, 2 * (gint32) i);
}

/* ---- tests ---- */

static void
test_map_order (void)
{
  static const guint chunk_sizes[] = { 0, 1, 7, 1000, 5000 };
  DcDetachedCode *code = map_pool (2);
  guint i;

  for (i = 0; i < G_N_ELEMENTS (chunk_sizes); i++)
    {
      Result r = { 0, };

      map_sync (code, commands ("double", 1000, NULL, 0), chunk_sizes[i], NULL, &r);
      g_assert_no_error (r.error);
      assert_doubled (r.value, 1000);
      g_assert_cmpuint (r.times_called, ==, 1);
      result_clear (&r);
    }
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  destroy_pool (code);
}

/* Elements of a fixed size travel as sliced bytes: many, in few chunks. */
static void
test_map_fixed (void)
{
  DcDetachedCode *code = map_pool (2);
  const guint count = 100000;
  g_autofree gint32 *ints = g_new (gint32, count);
  Result r = { 0, };
  guint i;

  for (i = 0; i < count; i++)
    ints[i] = (gint32) i;
  map_sync (code, g_variant_new_from_data (G_VARIANT_TYPE ("a(i)"), ints, count * sizeof (gint32),
                                           TRUE, NULL, NULL),
            0, NULL, &r);
  g_assert_no_error (r.error);
  assert_doubled (r.value, count);
  result_clear (&r);
  destroy_pool (code);
}

/* Results of variable size, and of several types in one map. */
static void
test_map_mixed_results (void)
{
  DcDetachedCode *code = map_pool (2);
  GVariantBuilder builder;
  Result r = { 0, };
  guint i;

  g_variant_builder_init (&builder, G_VARIANT_TYPE ("a(sx)"));
  for (i = 0; i < 600; i++)
    g_variant_builder_add (&builder, "(sx)", i % 3 == 0 ? "string" : "double", (gint64) i);
  map_sync (code, g_variant_builder_end (&builder), 13, NULL, &r);
  g_assert_no_error (r.error);
  g_assert_cmpuint (g_variant_n_children (r.value), ==, 600);
  for (i = 0; i < 600; i++)
    {
      g_autoptr(GVariant) boxed = g_variant_get_child_value (r.value, i);
      g_autoptr(GVariant) value = g_variant_get_variant (boxed);

      if (i % 3 == 0)
        {
          g_autofree char *expected = g_strdup_printf ("('%u',)", i);
          g_autofree char *printed = g_variant_print (value, FALSE);

          g_assert_cmpstr (printed, ==, expected);
        }
      else
        {
          gint32 got;

          g_variant_get (value, "(i)", &got);
          g_assert_cmpint (got, ==, 2 * (gint32) i);
        }
    }
  /* What GLib itself would have made, byte for byte. */
  {
    g_autoptr(GVariantBuilder) expected = g_variant_builder_new (G_VARIANT_TYPE ("av"));
    g_autoptr(GVariant) built = NULL;

    for (i = 0; i < 600; i++)
      if (i % 3 == 0)
        {
          g_autofree char *text = g_strdup_printf ("%u", i);

          g_variant_builder_add (expected, "v", g_variant_new ("(s)", text));
        }
      else
        g_variant_builder_add (expected, "v", g_variant_new ("(i)", 2 * (gint32) i));
    built = g_variant_ref_sink (g_variant_builder_end (expected));
    g_assert_cmpmem (g_variant_get_data (r.value), g_variant_get_size (r.value),
                     g_variant_get_data (built), g_variant_get_size (built));
  }
  result_clear (&r);
  destroy_pool (code);
}

/* Results too large to join fail the map, the process lives on.  The real
 * bound (4 GiB joined) takes over 8 GiB and minutes to reach: lowered. */
static void
test_map_joined_too_large (void)
{
  DcDetachedCode *code = map_pool (2);
  Result r = { 0, };

  /* 1000 results of 8 bytes each and their table: over 8000 bytes. */
  dc_map_set_max_joined (4096);
  map_sync (code, commands ("double", 1000, NULL, 0), 100, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  g_assert_cmpuint (r.times_called, ==, 1);
  result_clear (&r);

  /* One chunk small enough, the next past the bound. */
  dc_map_set_max_joined (400);
  map_sync (code, commands ("double", 40, NULL, 0), 20, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);

  dc_map_set_max_joined (G_MAXSIZE);
  map_sync (code, commands ("double", 1000, NULL, 0), 100, NULL, &r);
  g_assert_no_error (r.error);
  assert_doubled (r.value, 1000);
  result_clear (&r);
  destroy_pool (code);
}

/* A chunk past 4 GiB is refused in the parent, not cut to what a guint
 * length keeps (which a worker then answered "wrongly", and was killed). */
static void
test_map_chunk_too_large (void)
{
  DcDetachedCode *code = map_pool (1);
  const gsize size = ((gsize) 4 << 30) + 4096;
  /* Never touched: refused before any copy. */
  void *data = mmap (NULL, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  g_autofree GPid *before = NULL, *after = NULL;
  guint n_before, n_after;
  Result r = { 0, };

  g_assert_true (data != MAP_FAILED);
  g_assert_true (dc_detached_code_start (code, NULL));
  before = dc_detached_code_get_worker_pids (code, &n_before);
  map_sync (code, g_variant_new_from_data (G_VARIANT_TYPE ("a(i)"), data, size, TRUE, NULL, NULL),
            G_MAXUINT, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);
  munmap (data, size);

  map_sync (code, commands ("double", 10, NULL, 0), 0, NULL, &r);
  g_assert_no_error (r.error);
  assert_doubled (r.value, 10);
  result_clear (&r);
  after = dc_detached_code_get_worker_pids (code, &n_after);
  g_assert_cmpuint (n_after, ==, n_before);
  g_assert_cmpmem (after, n_after * sizeof (GPid), before, n_before * sizeof (GPid));
  destroy_pool (code);
}

static void
test_map_empty (void)
{
  DcDetachedCode *code = map_pool (1);
  Result r = { 0, };

  map_sync (code, g_variant_new_array (G_VARIANT_TYPE ("(i)"), NULL, 0), 0, NULL, &r);
  g_assert_no_error (r.error);
  g_assert_true (g_variant_is_of_type (r.value, G_VARIANT_TYPE ("av")));
  g_assert_cmpuint (g_variant_n_children (r.value), ==, 0);
  result_clear (&r);
  destroy_pool (code);
}

/* Chunks go to both workers, as calls do. */
static void
test_map_spread (void)
{
  DcDetachedCode *code = map_pool (2);
  g_autoptr(GHashTable) pids = g_hash_table_new (NULL, NULL);
  Result r = { 0, };
  guint i;

  g_assert_true (dc_detached_code_start (code, NULL));
  map_sync (code, repeat ("pid", 100, 8), 1, NULL, &r);
  g_assert_no_error (r.error);
  for (i = 0; i < 8; i++)
    g_hash_table_add (pids, GINT_TO_POINTER (result_int (r.value, i)));
  g_assert_cmpuint (g_hash_table_size (pids), ==, 2);
  result_clear (&r);
  destroy_pool (code);
}

/* The lowest failing item wins, even when a higher one failed first. */
static void
test_map_lowest_failure (void)
{
  DcDetachedCode *code = map_pool (2);
  GVariantBuilder builder;
  Result r = { 0, };
  guint i;

  /* Chunk 0 fails at item 8 after 300 ms; chunk 1 at item 13 at once,
   * and chunk 4 at 41. */
  g_variant_builder_init (&builder, G_VARIANT_TYPE ("a(sx)"));
  for (i = 0; i < 100; i++)
    g_variant_builder_add (&builder, "(sx)",
                           i == 8 ? "slow-fail" : (i == 13 || i == 41) ? "fail" : "double",
                           (gint64) i);
  map_sync (code, g_variant_builder_end (&builder), 10, NULL, &r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_cmpstr (r.error->message, ==, "item 8");
  result_clear (&r);

  map_sync (code, commands ("double", 50, "null", 33), 10, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED);
  result_clear (&r);

  /* The pool goes on. */
  map_sync (code, commands ("double", 50, NULL, 0), 0, NULL, &r);
  g_assert_no_error (r.error);
  assert_doubled (r.value, 50);
  result_clear (&r);
  destroy_pool (code);
}

/* After a failure, the chunks behind it are never sent. */
static void
test_map_failure_drops_later (void)
{
  DcDetachedCode *code = map_pool (1);
  Result r = { 0, };

  /* One worker, chunks of one: chunk 0 fails, the 99 others wait. */
  map_sync (code, commands ("pid", 100, "fail", 0), 1, NULL, &r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_cmpstr (r.error->message, ==, "item 0");
  result_clear (&r);
  /* Had they run, this would take 100 × 0 ms plus a round trip each; what
   * shows it is the queue, empty once the failure is known. */
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  destroy_pool (code);
}

static void
test_map_worker_dies (void)
{
  DcDetachedCode *code = map_pool (2);
  Result r = { 0, };

  map_sync (code, commands ("double", 40, "exit", 25), 5, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_test_message ("%s", r.error->message);
  result_clear (&r);

  map_sync (code, commands ("double", 40, NULL, 0), 5, NULL, &r);
  g_assert_no_error (r.error);
  assert_doubled (r.value, 40);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_map_cancel (void)
{
  DcDetachedCode *code = map_pool (1);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Result r = { 0, };

  g_assert_true (dc_detached_code_start (code, NULL));
  /* 20 chunks of 200 ms: cancelled while the first runs. */
  g_timeout_add (50, cancel_cb, cancellable);
  map_sync (code, repeat ("pid", 200, 20), 1, cancellable, &r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpuint (r.times_called, ==, 1);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  result_clear (&r);

  /* Cancelled before it starts. */
  map_sync (code, commands ("double", 20, NULL, 0), 1, cancellable, &r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  result_clear (&r);

  map_sync (code, commands ("double", 20, NULL, 0), 0, NULL, &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

/* A chunk may run call-timeout for each of its items. */
static void
test_map_timeout (void)
{
  DcDetachedCode *code = map_pool (1);
  Result r = { 0, };

  g_object_set (code, "call-timeout", 150, NULL);
  /* 5 items of 60 ms in one chunk: 300 ms, over 150 and under 5 × 150. */
  map_sync (code, repeat ("pid", 60, 5), 5, NULL, &r);
  g_assert_no_error (r.error);
  result_clear (&r);

  /* A chunk of 2 may take 300 ms; its second item takes 3 s. */
  map_sync (code, g_variant_new_parsed ("[('pid', int64 1), ('pid', 3000)]"), 2, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT);
  result_clear (&r);
  destroy_pool (code);
}

static GVariant *
fd_code (GVariant     *args,
         GUnixFDList  *fd_list,
         GUnixFDList **out_fd_list,
         gpointer      user_data,
         GError      **error)
{
  return map_code (args, user_data, error);
}

static void
test_map_bad_input (void)
{
  DcDetachedCode *code = map_pool (1);
  DcDetachedCode *flat = map_pool (1);
  DcDetachedCode *fds = dc_detached_code_new_with_fds (fd_code, NULL, NULL);
  Result r = { 0, };

  map_sync (code, g_variant_new ("(i)", 1), 0, NULL, &r);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  result_clear (&r);

  map_sync (code, g_variant_new_parsed ("[(handle 0,)]"), 0, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);

  map_sync (fds, commands ("double", 3, NULL, 0), 0, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);

  /* The flat marshaller: items that are not tuples of strings are
   * refused at once; results that are not, per item. */
  g_object_set (flat, "marshaller", DC_MARSHALLER_FLAT, NULL);
  map_sync (flat, commands ("double", 3, NULL, 0), 0, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);

  /* The pool still works. */
  map_sync (code, commands ("double", 3, NULL, 0), 0, NULL, &r);
  g_assert_no_error (r.error);
  result_clear (&r);

  destroy_pool (fds);
  destroy_pool (flat);
  destroy_pool (code);
}

static GVariant *
flat_code (GVariant  *args,
           gpointer   user_data,
           GError   **error)
{
  const char *text;

  g_variant_get (args, "(&s)", &text);
  if (g_str_equal (text, "int"))
    return g_variant_new ("(i)", 1);
  return g_variant_new ("(s)", text);
}

static void
test_map_flat (void)
{
  DcDetachedCode *code = dc_detached_code_new (flat_code, NULL, NULL);
  g_autofree char *printed = NULL;
  Result r = { 0, };

  g_object_set (code, "marshaller", DC_MARSHALLER_FLAT, NULL);
  map_sync (code, g_variant_new_parsed ("[('a',), ('bc',), ('',)]"), 0, NULL, &r);
  g_assert_no_error (r.error);
  printed = g_variant_print (r.value, FALSE);
  g_assert_cmpstr (printed, ==, "[<('a',)>, <('bc',)>, <('',)>]");
  result_clear (&r);

  map_sync (code, g_variant_new_parsed ("[('a',), ('int',), ('b',)]"), 0, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);
  destroy_pool (code);
}

/* max-queued: a map whose chunks would wait beyond it fails at once. */
static void
test_map_busy (void)
{
  DcDetachedCode *code = map_pool (1);
  Result r = { 0, };

  g_object_set (code, "max-queued", 3, NULL);
  g_assert_true (dc_detached_code_start (code, NULL));
  /* One chunk runs, three wait. */
  map_sync (code, commands ("double", 4, NULL, 0), 1, NULL, &r);
  g_assert_no_error (r.error);
  assert_doubled (r.value, 4);
  result_clear (&r);

  map_sync (code, commands ("double", 5, NULL, 0), 1, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_BUSY);
  g_assert_cmpuint (r.times_called, ==, 1);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  result_clear (&r);
  destroy_pool (code);
}

/* ---- another thread ---- */

typedef struct
{
  DcDetachedCode *code;
  Result          r;
  GThread        *thread_of_callback;
} ThreadMap;

static void
thread_map_cb (GObject      *source,
               GAsyncResult *res,
               gpointer      user_data)
{
  ThreadMap *tm = user_data;

  tm->thread_of_callback = g_thread_self ();
  map_result_cb (source, res, &tm->r);
}

static gpointer
thread_map_func (gpointer data)
{
  ThreadMap *tm = data;
  g_autoptr(GMainContext) context = g_main_context_new ();

  g_main_context_push_thread_default (context);
  dc_detached_code_map_async (tm->code, commands ("double", 500, NULL, 0), 0, G_PRIORITY_DEFAULT,
                              NULL, thread_map_cb, tm);
  while (!tm->r.done)
    g_main_context_iteration (context, TRUE);
  g_assert_true (tm->thread_of_callback == g_thread_self ());
  g_main_context_pop_thread_default (context);
  return NULL;
}

static gboolean
thread_done (gpointer data)
{
  ThreadMap *tm = data;

  return tm->r.done;
}

static void
test_map_thread (void)
{
  ThreadMap tm = { map_pool (2), };
  GThread *thread;

  /* The main context runs the pool; the map comes from elsewhere. */
  thread = g_thread_new ("map", thread_map_func, &tm);
  wait_until (thread_done, &tm, "a map from another thread");
  g_thread_join (thread);
  g_assert_no_error (tm.r.error);
  assert_doubled (tm.r.value, 500);
  result_clear (&tm.r);
  destroy_pool (tm.code);
}

/* ---- lies ---- */

static void
check_lie (const char *what)
{
  DcDetachedCode *code = map_pool (1);
  g_autofree char *pid_text = NULL;
  GVariantBuilder builder;
  Result r = { 0, };
  GPid pid;

  /* A first map takes serial 1; the lie answers the chunk of serial 2. */
  map_sync (code, commands ("pid", 1, NULL, 0), 0, NULL, &r);
  g_assert_no_error (r.error);
  pid = result_int (r.value, 0);
  result_clear (&r);
  pid_text = g_strdup_printf ("%d", (int) pid);

  g_variant_builder_init (&builder, G_VARIANT_TYPE ("a(sx)"));
  g_variant_builder_add (&builder, "(sx)", what, (gint64) 2);
  g_variant_builder_add (&builder, "(sx)", "double", (gint64) 1);
  g_variant_builder_add (&builder, "(sx)", "double", (gint64) 2);
  map_sync (code, g_variant_builder_end (&builder), 3, NULL, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_assert_nonnull (strstr (r.error->message, pid_text));
  g_test_message ("%s: %s", what, r.error->message);
  result_clear (&r);
  assert_process_gone (pid);

  map_sync (code, commands ("double", 10, NULL, 0), 0, NULL, &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_map_lie_count (void)
{
  check_lie ("lie-count");
}

static void
test_map_lie_index (void)
{
  check_lie ("lie-index");
}

static void
test_map_lie_size (void)
{
  check_lie ("lie-size");
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_log_set_writer_func (tolerate_threads_warning, NULL, NULL);

  g_test_add_func ("/detached-code/map/order", test_map_order);
  g_test_add_func ("/detached-code/map/fixed", test_map_fixed);
  g_test_add_func ("/detached-code/map/mixed-results", test_map_mixed_results);
  g_test_add_func ("/detached-code/map/joined-too-large", test_map_joined_too_large);
  g_test_add_func ("/detached-code/map/chunk-too-large", test_map_chunk_too_large);
  g_test_add_func ("/detached-code/map/empty", test_map_empty);
  g_test_add_func ("/detached-code/map/spread", test_map_spread);
  g_test_add_func ("/detached-code/map/lowest-failure", test_map_lowest_failure);
  g_test_add_func ("/detached-code/map/failure-drops-later", test_map_failure_drops_later);
  g_test_add_func ("/detached-code/map/worker-dies", test_map_worker_dies);
  g_test_add_func ("/detached-code/map/cancel", test_map_cancel);
  g_test_add_func ("/detached-code/map/timeout", test_map_timeout);
  g_test_add_func ("/detached-code/map/bad-input", test_map_bad_input);
  g_test_add_func ("/detached-code/map/flat", test_map_flat);
  g_test_add_func ("/detached-code/map/busy", test_map_busy);
  g_test_add_func ("/detached-code/map/thread", test_map_thread);
  g_test_add_func ("/detached-code/map/lie-count", test_map_lie_count);
  g_test_add_func ("/detached-code/map/lie-index", test_map_lie_index);
  g_test_add_func ("/detached-code/map/lie-size", test_map_lie_size);

  return g_test_run ();
}
