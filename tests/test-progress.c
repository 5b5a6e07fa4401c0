/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Calls that report progress: the values reach the caller's context, in
 * order, all before the callback and none after; cancellation stops
 * them; a value that cannot travel fails the call; a worker that sends
 * progress nobody asked for, or malformed, is killed. */

#include "config.h"

#include <string.h>
#include <unistd.h>

#include "dc-progress-private.h"
#include "dc-wire-private.h"

#include "dc-test-common.h"

/* ---- the code ---- */

/* Writes a raw frame on the worker's channel, its highest descriptor. */
static void
forge (DcWireType    type,
       guint         flags,
       guint         n_fds,
       guint64       serial,
       const guint8 *payload,
       gsize         size,
       const int    *fds)
{
  g_autoptr(GByteArray) frame = g_byte_array_new ();
  guint8 header[DC_WIRE_HEADER_SIZE];

  dc_wire_header_encode_full (header, type, flags, n_fds, serial, size);
  g_byte_array_append (frame, header, sizeof header);
  g_byte_array_append (frame, payload, (guint) size);
  g_assert_cmpint (dc_wire_sendmsg (highest_fd (), frame->data, frame->len, fds, n_fds), ==,
                   (gssize) frame->len);
}

static void
forge_progress (guint    flags,
                guint    n_fds,
                guint64  serial,
                const int *fds)
{
  g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_new ("(u)", 1));
  DcWireMarshalStatus status;
  g_autoptr(GBytes) bytes = dc_wire_marshal_raw (DC_MARSHALLER_VARIANT, value, &status);

  forge (DC_WIRE_PROGRESS, flags, n_fds, serial, g_bytes_get_data (bytes, NULL),
         g_bytes_get_size (bytes), fds);
}

/* Runs in the worker: ("what", "argument", "serial of this call"); every
 * member a string, so that the flat marshaller carries it too. */
static GVariant *
progress_code (GVariant  *args,
               gpointer   user_data,
               GError   **error)
{
  const char *what, *arg, *serial_text;
  guint64 serial, n, i;
  int fd = 0;

  g_variant_get (args, "(&s&s&s)", &what, &arg, &serial_text);
  serial = g_ascii_strtoull (serial_text, NULL, 10);
  n = g_ascii_strtoull (arg, NULL, 10);

  if (g_str_equal (what, "pid"))
    return g_variant_new ("(s)", "");
  if (g_str_equal (what, "count") || g_str_equal (what, "slow"))
    {
      for (i = 0; i < n; i++)
        {
          dc_worker_report_progress (g_variant_new ("(u)", (guint32) i));
          if (g_str_equal (what, "slow"))
            g_usleep (20 * 1000);
        }
      return g_variant_new ("(u)", (guint32) n);
    }
  if (g_str_equal (what, "large"))
    {
      g_autofree guint8 *data = g_malloc (n);

      memset (data, 'p', n);
      dc_worker_report_progress (g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data, n, 1));
      return g_variant_new ("(s)", "large");
    }
  if (g_str_equal (what, "flat-lost"))
    {
      /* The second cannot travel on the flat marshaller; the third is
       * never sent. */
      dc_worker_report_progress (g_variant_new ("(s)", "first"));
      dc_worker_report_progress (g_variant_new ("(i)", 7));
      dc_worker_report_progress (g_variant_new ("(s)", "third"));
      return g_variant_new ("(s)", "dropped");
    }

  /* Hostile: a lie, then a wait to be killed. */
  if (g_str_equal (what, "unasked") || g_str_equal (what, "own-serial"))
    forge_progress (0, 0, serial, NULL);
  else if (g_str_equal (what, "other-serial"))
    forge_progress (0, 0, serial + 1, NULL);
  else if (g_str_equal (what, "fds"))
    forge_progress (0, 1, serial, &fd);
  else if (g_str_equal (what, "call-flag"))
    forge_progress (DC_WIRE_FLAG_PROGRESS, 0, serial, NULL);
  else if (g_str_equal (what, "malformed"))
    forge (DC_WIRE_PROGRESS, 0, 0, serial, (const guint8 *) "\x07", 1, NULL);
  else if (g_str_equal (what, "progress-fds-report"))
    {
      guint32 reason = DC_WIRE_MARSHAL_NO_FDS | DC_WIRE_MARSHAL_OF_PROGRESS;
      guint8 payload[4 + 3];

      memcpy (payload, &reason, 4);
      memcpy (payload + 4, "(h)", 3);
      forge (DC_WIRE_MARSHAL_FAILED, 0, 0, serial, payload, sizeof payload, NULL);
    }
  g_usleep (60 * G_USEC_PER_SEC);
  return g_variant_new ("(s)", "late");
}

/* ---- collecting ---- */

typedef struct
{
  GPtrArray    *values;        /* GVariant, as delivered */
  GMainContext *context;       /* where they must arrive */
  GCancellable *cancellable;
  guint         cancel_after;  /* cancel on this many values; 0: never */
  gboolean      cancelled;
  guint         n_freed;
  Result        result;
  guint         values_at_callback;
} Progress;

static void
progress_init (Progress *p)
{
  memset (p, 0, sizeof *p);
  p->values = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  p->context = g_main_context_ref_thread_default ();
}

static void
progress_clear (Progress *p)
{
  g_ptr_array_unref (p->values);
  g_main_context_unref (p->context);
  g_clear_object (&p->cancellable);
  result_clear (&p->result);
}

static void
progress_cb (DcDetachedCode *self,
             GVariant       *value,
             gpointer        data)
{
  Progress *p = data;

  g_assert_true (DC_IS_DETACHED_CODE (self));
  g_assert_true (g_main_context_get_thread_default () == p->context ||
                 (g_main_context_get_thread_default () == NULL &&
                  p->context == g_main_context_default ()));
  g_assert_false (p->result.done);
  g_assert_false (p->cancelled);
  g_assert_cmpuint (p->n_freed, ==, 0);
  g_ptr_array_add (p->values, g_variant_ref (value));

  if (p->cancel_after > 0 && p->values->len == p->cancel_after)
    {
      p->cancelled = TRUE;
      g_cancellable_cancel (p->cancellable);
    }
}

static void
progress_free_cb (gpointer data)
{
  Progress *p = data;

  /* After the last use, which is the callback's draining at the latest. */
  g_assert_true (p->result.done);
  p->n_freed++;
}

static void
progress_done_cb (GObject      *source,
                  GAsyncResult *res,
                  gpointer      data)
{
  Progress *p = data;

  g_assert_cmpuint (p->n_freed, ==, 0);
  p->values_at_callback = p->values->len;
  result_cb (source, res, &p->result);
}

static void
call_progress (DcDetachedCode *code,
               GVariant       *args,
               Progress       *p)
{
  dc_detached_code_call_with_progress_async (code, args, G_PRIORITY_DEFAULT, p->cancellable,
                                             progress_cb, p, progress_free_cb,
                                             progress_done_cb, p);
}

static GVariant *
what (const char *command,
      const char *arg,
      guint64     serial)
{
  g_autofree char *serial_text = g_strdup_printf ("%" G_GUINT64_FORMAT, serial);

  return g_variant_new ("(sss)", command, arg, serial_text);
}

static gboolean
freed (gpointer data)
{
  return ((Progress *) data)->n_freed > 0;
}

/* Runs the context a while longer: anything late would show now. */
static void
settle (DcDetachedCode *code)
{
  Result r = { 0, };

  call_sync (code, what ("count", "0", 0), &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

static void
assert_counting (Progress *p,
                 guint     n)
{
  guint i;

  for (i = 0; i < n; i++)
    {
      guint32 value;

      g_variant_get (g_ptr_array_index (p->values, i), "(u)", &value);
      g_assert_cmpuint (value, ==, i);
    }
}

/* ---- tests ---- */

static void
check_order (DcStream stream)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  Progress p;
  guint32 n;

  dc_detached_code_set_stream (code, stream);
  progress_init (&p);
  call_progress (code, what ("count", "500", 0), &p);
  wait_for_flag (&p.result.done, "a call with progress");
  g_assert_no_error (p.result.error);
  g_variant_get (p.result.value, "(u)", &n);
  g_assert_cmpuint (n, ==, 500);

  /* All of them, in order, before the callback. */
  g_assert_cmpuint (p.values_at_callback, ==, 500);
  assert_counting (&p, 500);
  g_assert_cmpuint (p.result.times_called, ==, 1);
  g_assert_cmpuint (p.n_freed, ==, 1);

  /* None after. */
  settle (code);
  g_assert_cmpuint (p.values->len, ==, 500);
  g_assert_cmpuint (p.n_freed, ==, 1);

  progress_clear (&p);
  destroy_pool (code);
}

static void
test_progress_order (void)
{
  check_order (DC_STREAM_SOCKET);
  check_order (DC_STREAM_PIPE);
}

static void
test_progress_large (void)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  gsize size = 0;
  const guint8 *data;
  Progress p;

  /* A large value travels in a memfd, as a large result does. */
  dc_detached_code_set_memfd_threshold (code, 4096);
  progress_init (&p);
  call_progress (code, what ("large", "1000000", 0), &p);
  wait_for_flag (&p.result.done, "a call with a large progress value");
  g_assert_no_error (p.result.error);
  g_assert_cmpuint (p.values->len, ==, 1);
  data = g_variant_get_fixed_array (g_ptr_array_index (p.values, 0), &size, 1);
  g_assert_cmpuint (size, ==, 1000000);
  g_assert_cmpuint (data[0], ==, 'p');
  g_assert_cmpuint (data[size - 1], ==, 'p');
  wait_until (freed, &p, "the progress data to be freed");

  progress_clear (&p);
  destroy_pool (code);
}

static void
test_progress_cancel (void)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  Progress p;
  guint n_at_cancel;

  progress_init (&p);
  p.cancellable = g_cancellable_new ();
  p.cancel_after = 3;
  call_progress (code, what ("slow", "100", 0), &p);
  wait_for_flag (&p.result.done, "a cancelled call with progress");
  g_assert_error (p.result.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_true (p.cancelled);
  n_at_cancel = p.values->len;
  g_assert_cmpuint (n_at_cancel, ==, 3);
  assert_counting (&p, 3);
  g_assert_cmpuint (p.n_freed, ==, 1);

  /* The code runs on, and reports on: none of it arrives. */
  g_usleep (200 * 1000);
  settle (code);
  g_assert_cmpuint (p.values->len, ==, n_at_cancel);
  g_assert_cmpuint (p.n_freed, ==, 1);

  progress_clear (&p);
  destroy_pool (code);
}

static void
test_progress_cancelled_before (void)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  Progress p;

  progress_init (&p);
  p.cancellable = g_cancellable_new ();
  g_cancellable_cancel (p.cancellable);
  call_progress (code, what ("count", "10", 0), &p);
  wait_for_flag (&p.result.done, "a call cancelled before it was made");
  g_assert_error (p.result.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpuint (p.values->len, ==, 0);
  g_assert_cmpuint (p.n_freed, ==, 1);

  progress_clear (&p);
  destroy_pool (code);
}

static GPid
first_worker (DcDetachedCode *code)
{
  guint n = 0;
  g_autofree GPid *pids = dc_detached_code_get_worker_pids (code, &n);

  g_assert_cmpuint (n, ==, 1);
  return pids[0];
}

/* A caller whose context does not run while its call floods it. */
typedef struct
{
  DcDetachedCode *code;
  Progress        p;
  const char     *n_values;
  gboolean        cancel;
  gint            called;   /* the call is made */
  gint            go;       /* the caller may take its values now */
  gint            done;
} SlowCaller;

static gpointer
slow_caller (gpointer data)
{
  SlowCaller *s = data;
  GMainContext *context = g_main_context_new ();

  g_main_context_push_thread_default (context);
  progress_init (&s->p);
  s->p.cancellable = g_cancellable_new ();
  call_progress (s->code, what ("count", s->n_values, 0), &s->p);
  g_atomic_int_set (&s->called, TRUE);
  while (!g_atomic_int_get (&s->go))
    g_usleep (1000);
  if (s->cancel)
    g_cancellable_cancel (s->p.cancellable);
  while (!s->p.result.done || s->p.n_freed == 0)
    g_main_context_iteration (context, TRUE);

  g_main_context_pop_thread_default (context);
  g_main_context_unref (context);
  g_atomic_int_set (&s->done, TRUE);
  return NULL;
}

static gboolean
slow_caller_called (gpointer data)
{
  return g_atomic_int_get (&((SlowCaller *) data)->called) &&
         dc_detached_code_get_n_busy (((SlowCaller *) data)->code) == 1;
}

static gboolean
slow_caller_done (gpointer data)
{
  return g_atomic_int_get (&((SlowCaller *) data)->done);
}

static gboolean
peak_reached (gpointer data)
{
  guint *peak = data;

  guint now = dc_progress_take_peak_waiting ();

  *peak = MAX (*peak, now);
  return *peak >= DC_PROGRESS_MAX_WAITING;
}

/* The pool stops reading a worker whose caller has too many values
 * waiting, and reads on once the caller has caught up, or cancelled. */
static void
check_flood (gboolean cancel)
{
  SlowCaller s = { 0, };
  GThread *thread;
  guint peak = 0, i;

  s.code = dc_detached_code_new (progress_code, NULL, NULL);
  /* 2.4 MB of messages: far more than the channel holds. */
  s.n_values = "100000";
  s.cancel = cancel;
  dc_detached_code_start (s.code, NULL);
  dc_progress_take_peak_waiting ();
  thread = g_thread_new ("slow-caller", slow_caller, &s);
  wait_until (slow_caller_called, &s, "the call to start");
  wait_until (peak_reached, &peak, "the values to pile up");

  /* The pool's context runs on: were it still reading, the worker would
   * finish and the values pile up past the bound (one read over it at
   * most: 16 KiB of messages). */
  for (i = 0; i < 50; i++)
    {
      while (g_main_context_iteration (NULL, FALSE))
        ;
      g_usleep (10 * 1000);
    }
  peak_reached (&peak);
  g_test_message ("at most %u values waited", peak);
  g_assert_cmpuint (peak, <=, DC_PROGRESS_MAX_WAITING + 16 * 1024 / 24);
  g_assert_cmpuint (dc_detached_code_get_n_busy (s.code), ==, 1);

  /* The caller catches up, or cancels: the worker is read again. */
  g_atomic_int_set (&s.go, TRUE);
  wait_until (slow_caller_done, &s, "the flooded call to complete");
  g_thread_join (thread);
  if (cancel)
    g_assert_error (s.p.result.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  else
    {
      g_assert_no_error (s.p.result.error);
      g_assert_cmpuint (s.p.values_at_callback, ==, 100000);
      assert_counting (&s.p, 100000);
    }
  g_assert_cmpuint (s.p.n_freed, ==, 1);
  progress_clear (&s.p);

  /* The same worker goes on. */
  call_sync (s.code, what ("count", "3", 0), &s.p.result);
  g_assert_no_error (s.p.result.error);
  result_clear (&s.p.result);
  g_assert_cmpuint (dc_detached_code_get_n_workers (s.code), ==, 1);
  destroy_pool (s.code);
}

/* The values go to the context of the thread that made the call, while
 * the pool's context runs here. */
static void
test_progress_other_thread (void)
{
  SlowCaller s = { 0, };
  GThread *thread;

  s.code = dc_detached_code_new (progress_code, NULL, NULL);
  s.n_values = "200";
  s.go = TRUE;
  dc_detached_code_start (s.code, NULL);
  thread = g_thread_new ("caller", slow_caller, &s);
  wait_until (slow_caller_done, &s, "a call with progress from another thread");
  g_thread_join (thread);

  g_assert_no_error (s.p.result.error);
  g_assert_cmpuint (s.p.values_at_callback, ==, 200);
  assert_counting (&s.p, 200);
  g_assert_cmpuint (s.p.n_freed, ==, 1);
  progress_clear (&s.p);
  destroy_pool (s.code);
}

static void
test_progress_flood (void)
{
  check_flood (FALSE);
}

static void
test_progress_flood_cancel (void)
{
  check_flood (TRUE);
}

static void
test_progress_marshal (void)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  GPid pid;
  Progress p;
  Result r = { 0, };

  dc_detached_code_set_marshaller (code, DC_MARSHALLER_FLAT);
  progress_init (&p);
  call_progress (code, what ("flat-lost", "", 0), &p);
  wait_for_flag (&p.result.done, "a call whose progress cannot travel");
  g_assert_error (p.result.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  g_test_message ("%s", p.result.error->message);
  g_assert_nonnull (strstr (p.result.error->message, "progress"));
  g_assert_nonnull (strstr (p.result.error->message, "“(i)”"));
  /* What went before arrived; nothing after. */
  g_assert_cmpuint (p.values->len, ==, 1);
  g_assert_cmpstr (g_variant_get_type_string (g_ptr_array_index (p.values, 0)), ==, "(s)");
  g_assert_cmpuint (p.n_freed, ==, 1);
  progress_clear (&p);

  /* The worker goes on. */
  pid = first_worker (code);
  call_sync (code, what ("pid", "", 0), &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  g_assert_cmpint (first_worker (code), ==, pid);

  destroy_pool (code);
}

static void
test_progress_plain_call (void)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  Result r = { 0, };
  guint32 n;

  /* In the parent it does nothing. */
  dc_worker_report_progress (g_variant_new ("(u)", 1));

  /* A plain call: the worker sends nothing (the parent would take a
   * progress message as a protocol error). */
  call_sync (code, what ("count", "100", 0), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(u)", &n);
  g_assert_cmpuint (n, ==, 100);
  result_clear (&r);

  destroy_pool (code);
}

static void
closure_progress_cb (DcDetachedCode *self,
                     GVariant       *value,
                     gpointer        data)
{
  progress_cb (self, value, data);
}

static void
closure_done_cb (GObject      *source,
                 GAsyncResult *res,
                 gpointer      data)
{
  progress_done_cb (source, res, data);
}

static void
closure_notify_cb (gpointer  data,
                   GClosure *closure)
{
  progress_free_cb (data);
}

/* The form for bindings, from C: closures without a marshaller of their
 * own get the generic one. */
static void
test_progress_closures (void)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  GClosure *on_progress, *on_done;
  Progress p;

  progress_init (&p);
  on_progress = g_cclosure_new (G_CALLBACK (closure_progress_cb), &p, closure_notify_cb);
  on_done = g_cclosure_new (G_CALLBACK (closure_done_cb), &p, closure_notify_cb);
  dc_detached_code_call_with_progress_async_with_closures (code, what ("count", "20", 0),
                                                           G_PRIORITY_DEFAULT, NULL,
                                                           on_progress, on_done);
  wait_for_flag (&p.result.done, "a call with progress closures");
  g_assert_no_error (p.result.error);
  g_assert_cmpuint (p.values_at_callback, ==, 20);
  assert_counting (&p, 20);
  /* Both closures were let go of, after the callback. */
  g_assert_cmpuint (p.n_freed, ==, 2);

  progress_clear (&p);
  destroy_pool (code);
}

/* The lie costs its call a PROTOCOL error naming the pid, and the liar
 * its life; the pool goes on. */
static void
check_hostile (const char *command,
               gboolean    with_progress)
{
  DcDetachedCode *code = dc_detached_code_new (progress_code, NULL, NULL);
  g_autofree char *pid_text = NULL;
  GPid pid;
  Progress p;
  Result r = { 0, };

  /* Serials count from 1 in a new pool. */
  call_sync (code, what ("pid", "", 1), &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  pid = first_worker (code);
  pid_text = g_strdup_printf ("%d", (int) pid);

  progress_init (&p);
  if (with_progress)
    {
      call_progress (code, what (command, "", 2), &p);
      wait_for_flag (&p.result.done, command);
    }
  else
    call_sync (code, what (command, "", 2), &p.result);
  g_assert_error (p.result.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_assert_nonnull (strstr (p.result.error->message, pid_text));
  g_test_message ("%s: %s", command, p.result.error->message);
  g_assert_cmpuint (p.values->len, ==, 0);
  progress_clear (&p);
  assert_process_gone (pid);

  call_sync (code, what ("count", "2", 3), &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_progress_hostile (void)
{
  check_hostile ("unasked", FALSE);
  check_hostile ("other-serial", TRUE);
  check_hostile ("fds", TRUE);
  check_hostile ("call-flag", TRUE);
  check_hostile ("malformed", TRUE);
  check_hostile ("progress-fds-report", TRUE);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/progress/order", test_progress_order);
  g_test_add_func ("/detached-code/progress/large", test_progress_large);
  g_test_add_func ("/detached-code/progress/cancel", test_progress_cancel);
  g_test_add_func ("/detached-code/progress/cancelled-before", test_progress_cancelled_before);
  g_test_add_func ("/detached-code/progress/other-thread", test_progress_other_thread);
  g_test_add_func ("/detached-code/progress/flood", test_progress_flood);
  g_test_add_func ("/detached-code/progress/flood-cancel", test_progress_flood_cancel);
  g_test_add_func ("/detached-code/progress/marshal", test_progress_marshal);
  g_test_add_func ("/detached-code/progress/plain-call", test_progress_plain_call);
  g_test_add_func ("/detached-code/progress/closures", test_progress_closures);
  g_test_add_func ("/detached-code/progress/hostile", test_progress_hostile);

  return g_test_run ();
}
