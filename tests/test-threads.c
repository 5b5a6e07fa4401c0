/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Threads and cancellation: callers on other threads, cancelling, their races. */

#include "config.h"

#include <glib/gstdio.h>

#include "dc-test-common.h"

static void
test_call_cancel (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  g_autoptr(GCancellable) running = g_cancellable_new ();
  g_autoptr(GCancellable) queued = g_cancellable_new ();
  g_autoptr(GCancellable) early = g_cancellable_new ();
  g_autofree char *dir = g_dir_make_tmp ("dc-test-XXXXXX", NULL);
  g_autofree char *marker = g_build_filename (dir, "ran", NULL);
  Result r_running = { 0, }, r_queued = { 0, }, r_early = { 0, }, r_after = { 0, };
  gint64 start;
  GPid pid = call_pid (code);
  gint32 after_pid;

  /* A running call: back at once, not when the worker finishes. */
  dc_detached_code_call_async (code, cmd ("sleep", g_variant_new_int32 (8000)),
                               G_PRIORITY_DEFAULT, running, result_cb, &r_running);
  /* A queued call: never reaches a worker. */
  dc_detached_code_call_async (code, cmd ("touch", g_variant_new_string (marker)),
                               G_PRIORITY_DEFAULT, queued, result_cb, &r_queued);
  g_cancellable_cancel (queued);
  start = g_get_monotonic_time ();
  g_timeout_add (100, cancel_cb, running);
  wait_for_flag (&r_running.done, "a cancelled call");
  g_assert_error (r_running.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  /* Well before the 8 s the call would take, even on a loaded machine. */
  g_assert_cmpint (g_get_monotonic_time () - start, <, 6000 * G_TIME_SPAN_MILLISECOND);
  wait_for_flag (&r_queued.done, "a cancelled queued call");
  g_assert_error (r_queued.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* Cancelled before the call: fails, but only from the loop. */
  g_cancellable_cancel (early);
  dc_detached_code_call_async (code, cmd ("pid", NULL), G_PRIORITY_DEFAULT, early,
                               result_cb, &r_early);
  g_assert_false (r_early.done);
  wait_for_flag (&r_early.done, "a call cancelled in advance");
  g_assert_error (r_early.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* The worker finishes the abandoned call, drops its result, and serves
   * the next one. */
  call_sync (code, cmd ("pid", NULL), &r_after);
  g_assert_no_error (r_after.error);
  g_variant_get (r_after.value, "(i)", &after_pid);
  g_assert_cmpint (after_pid, ==, pid);
  g_assert_false (g_file_test (marker, G_FILE_TEST_EXISTS));
  g_assert_cmpuint (r_running.times_called + r_queued.times_called + r_early.times_called, ==, 3);

  result_clear (&r_running);
  result_clear (&r_queued);
  result_clear (&r_early);
  result_clear (&r_after);
  g_rmdir (dir);
  destroy_pool (code);
}

static void
test_call_kill_on_cancel (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Result r = { 0, };
  GPid pid = call_pid (code);

  dc_detached_code_set_kill_on_cancel (code, TRUE);
  g_assert_true (dc_detached_code_get_kill_on_cancel (code));
  dc_detached_code_call_async (code, cmd ("sleep", g_variant_new_int32 (60000)),
                               G_PRIORITY_DEFAULT, cancellable, result_cb, &r);
  g_timeout_add (100, cancel_cb, cancellable);
  wait_for_flag (&r.done, "a cancelled call");
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  result_clear (&r);

  /* Really gone, reaped, and replaced when needed. */
  assert_process_gone (pid);
  g_assert_cmpint (call_pid (code), !=, pid);
  destroy_pool (code);
}

typedef struct
{
  DcDetachedCode *code;
  guint           n_calls;
  guint           n_ok;
  gboolean        wrong_thread;
  GThread        *thread;
} ThreadCalls;

static void
thread_result_cb (GObject      *source,
                  GAsyncResult *res,
                  gpointer      data)
{
  ThreadCalls *t = data;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), res, NULL);

  /* GTask semantics: the caller's thread and context. */
  if (g_thread_self () != t->thread)
    t->wrong_thread = TRUE;
  if (value != NULL)
    t->n_ok++;
}

static gpointer
thread_calls (gpointer data)
{
  ThreadCalls *t = data;
  GMainContext *context = g_main_context_new ();
  guint i, done = 0;

  g_main_context_push_thread_default (context);
  for (i = 0; i < t->n_calls; i++)
    dc_detached_code_call_async (t->code, cmd ("index", g_variant_new_int32 ((gint32) i)),
                                 G_PRIORITY_DEFAULT, NULL, thread_result_cb, t);
  while (t->n_ok < t->n_calls && done++ < 1000000)
    g_main_context_iteration (context, TRUE);
  g_main_context_pop_thread_default (context);
  g_main_context_unref (context);
  return NULL;
}

static gboolean
threads_done (gpointer data)
{
  ThreadCalls *t = data;
  guint i;

  for (i = 0; i < 4; i++)
    if (t[i].n_ok < t[i].n_calls)
      return FALSE;
  return TRUE;
}

static void
test_call_threads (void)
{
  DcDetachedCode *code = new_pool (2, 2);
  ThreadCalls t[4];
  guint i;

  /* Fork before any thread exists. */
  g_assert_true (dc_detached_code_start (code, NULL));
  for (i = 0; i < 4; i++)
    {
      t[i].code = code;
      t[i].n_calls = 300;
      t[i].n_ok = 0;
      t[i].wrong_thread = FALSE;
      t[i].thread = g_thread_new ("caller", thread_calls, &t[i]);
    }
  /* The owner context runs the pool meanwhile. */
  wait_until (threads_done, t, "calls from threads");
  for (i = 0; i < 4; i++)
    {
      g_thread_join (t[i].thread);
      g_assert_cmpuint (t[i].n_ok, ==, t[i].n_calls);
      g_assert_false (t[i].wrong_thread);
    }
  /* No worker was forked from a caller thread. */
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 2);
  destroy_pool (code);
}

typedef struct
{
  DcDetachedCode *code;   /* the thread's reference, dropped by it */
  gboolean        done;
} LastRef;

static void
last_ref_cb (GObject      *source,
             GAsyncResult *res,
             gpointer      data)
{
  LastRef *l = data;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), res, NULL);

  g_assert_nonnull (value);
  l->done = TRUE;
}

static gpointer
last_ref_thread (gpointer data)
{
  LastRef *l = data;
  GMainContext *context = g_main_context_new ();

  g_main_context_push_thread_default (context);
  dc_detached_code_call_async (l->code, cmd ("pid", NULL), G_PRIORITY_DEFAULT, NULL,
                               last_ref_cb, l);
  /* From here on only the call's task holds the pool. */
  g_clear_object (&l->code);
  while (!l->done)
    g_main_context_iteration (context, TRUE);
  g_main_context_pop_thread_default (context);
  /* The task, and with it the pool's last reference, goes here. */
  g_main_context_unref (context);
  return NULL;
}

static void
test_call_threads_last_reference (void)
{
  LastRef l = { new_pool (1, 1), FALSE };
  g_autofree GPid *pids = NULL;
  GThread *thread;
  guint n = 0;

  g_assert_true (dc_detached_code_start (l.code, NULL));
  pids = dc_detached_code_get_worker_pids (l.code, &n);
  g_assert_cmpuint (n, ==, 1);
  thread = g_thread_new ("last-ref", last_ref_thread, &l);
  /* The pool's context runs here; the pool is disposed from the other
   * thread, and shut down here. */
  assert_process_gone (pids[0]);
  g_thread_join (thread);
  g_assert_true (l.done);
}

typedef struct
{
  DcDetachedCode *code;
  Result          inner;
  gboolean        outer_done;
} Nested;

static void
nested_outer_cb (GObject      *source,
                 GAsyncResult *res,
                 gpointer      data)
{
  Nested *n = data;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), res, NULL);

  /* A callback that waits for another call in a nested loop: the same
   * worker must be readable from inside it. */
  call (n->code, cmd ("pid", NULL), &n->inner);
  wait_for_flag (&n->inner.done, "a call from inside a callback");
  n->outer_done = TRUE;
}

static void
test_call_nested_loop (void)
{
  Nested n = { new_pool (1, 1), { 0, }, FALSE };
  Result second = { 0, };

  dc_detached_code_set_pipeline_depth (n.code, 4);
  dc_detached_code_call_async (n.code, cmd ("pid", NULL), G_PRIORITY_DEFAULT, NULL,
                               nested_outer_cb, &n);
  call (n.code, cmd ("pid", NULL), &second);
  wait_for_flag (&n.outer_done, "the outer callback");
  g_assert_no_error (n.inner.error);
  wait_for_flag (&second.done, "the second call");
  g_assert_no_error (second.error);
  result_clear (&n.inner);
  result_clear (&second);
  destroy_pool (n.code);
}

static void
shutdown_on_cancel (GCancellable   *cancellable,
                    DcDetachedCode *code)
{
  dc_detached_code_shutdown (code);
}

static void
test_call_cancel_handler_shuts_down (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Result r = { 0, };

  /* The application's own "cancelled" handler shuts the pool down while
   * the cancellable is being emitted: no deadlock, one completion. */
  dc_detached_code_call_async (code, cmd ("sleep", g_variant_new_int32 (60000)),
                               G_PRIORITY_DEFAULT, cancellable, result_cb, &r);
  g_signal_connect (cancellable, "cancelled", G_CALLBACK (shutdown_on_cancel), code);
  g_cancellable_cancel (cancellable);
  wait_for_flag (&r.done, "a call cancelled by a shutting-down handler");
  g_assert_nonnull (r.error);
  g_assert_cmpuint (r.times_called, ==, 1);
  result_clear (&r);
  destroy_pool (code);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/call/cancel", test_call_cancel);
  g_test_add_func ("/detached-code/call/threads", test_call_threads);
  g_test_add_func ("/detached-code/call/threads-last-reference", test_call_threads_last_reference);
  g_test_add_func ("/detached-code/call/nested-loop", test_call_nested_loop);
  g_test_add_func ("/detached-code/call/cancel-handler-shuts-down", test_call_cancel_handler_shuts_down);
  g_test_add_func ("/detached-code/call/kill-on-cancel", test_call_kill_on_cancel);

  return g_test_run ();
}
