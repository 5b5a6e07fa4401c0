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

static void
count_spawned (DcDetachedCode *code,
               gint            pid,
               gpointer        data)
{
  (*(guint *) data)++;
}

typedef struct
{
  Result *r;
  guint   n;
} Batch;

static gboolean
batch_done (gpointer data)
{
  Batch *b = data;
  guint i;

  for (i = 0; i < b->n; i++)
    if (!b->r[i].done)
      return FALSE;
  return TRUE;
}

static void
test_call_cancel_batch (void)
{
  DcDetachedCode *code = new_pool (2, 2);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autofree char *dir = g_dir_make_tmp ("dc-test-XXXXXX", NULL);
  g_autoptr(GDir) ran = NULL;
  g_autofree GPid *pids = NULL;
  Result r[60] = { { 0, }, };
  Batch batch = { r, G_N_ELEMENTS (r) };
  guint spawned = 0, spawned_before, n = 0, i;

  dc_detached_code_set_kill_on_cancel (code, TRUE);
  g_assert_true (dc_detached_code_start (code, NULL));
  pids = dc_detached_code_get_worker_pids (code, &n);
  g_assert_cmpuint (n, ==, 2);
  g_signal_connect (code, "worker-spawned", G_CALLBACK (count_spawned), &spawned);

  /* Two running, on both workers; the rest queued behind them, each of
   * which would leave a file if it ran. */
  for (i = 0; i < 2; i++)
    dc_detached_code_call_async (code, cmd ("sleep", g_variant_new_int32 (60000)),
                                 G_PRIORITY_DEFAULT, cancellable, result_cb, &r[i]);
  for (i = 2; i < G_N_ELEMENTS (r); i++)
    {
      g_autofree char *name = g_strdup_printf ("%s/%u", dir, i);

      dc_detached_code_call_async (code, cmd ("touch", g_variant_new_string (name)),
                                   G_PRIORITY_DEFAULT, cancellable, result_cb, &r[i]);
    }
  g_assert_cmpuint (dc_detached_code_get_n_busy (code), ==, 2);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, G_N_ELEMENTS (r) - 2);
  spawned_before = spawned;

  g_cancellable_cancel (cancellable);
  wait_until (batch_done, &batch, "a batch of cancelled calls");
  for (i = 0; i < G_N_ELEMENTS (r); i++)
    g_assert_error (r[i].error, G_IO_ERROR, G_IO_ERROR_CANCELLED);

  /* The two killed workers reaped, and whatever that sets off done. */
  assert_process_gone (pids[0]);
  assert_process_gone (pids[1]);
  while (g_main_context_iteration (NULL, FALSE))
    ;

  /* Once each, and no worker forked for a call already cancelled: at
   * most the two killed ones were replaced. */
  for (i = 0; i < G_N_ELEMENTS (r); i++)
    g_assert_cmpuint (r[i].times_called, ==, 1);
  g_test_message ("%u workers forked after the cancel", spawned - spawned_before);
  g_assert_cmpuint (spawned - spawned_before, <=, 2);
  ran = g_dir_open (dir, 0, NULL);
  g_assert_null (g_dir_read_name (ran));
  g_assert_cmpuint (dc_detached_code_get_n_busy (code), ==, 0);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);

  /* The pool goes on. */
  g_assert_cmpint (call_pid (code), >, 0);
  for (i = 0; i < G_N_ELEMENTS (r); i++)
    result_clear (&r[i]);
  g_rmdir (dir);
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

  g_assert_nonnull (value);
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

/* ---- a cancellation racing the reply ---- */

typedef struct
{
  guint    serial;
  gboolean cancel;           /* whether the other thread cancels it */
  guint    times_called;
  gboolean cancelled;        /* how it ended */
  gint     canceller_done;   /* atomic: the other thread is done with it */
} RaceCall;

typedef struct
{
  GCancellable *cancellable;   /* the other thread's reference; NULL: stop */
  RaceCall     *call;
  guint         spin;          /* iterations to wait before cancelling */
} RaceJob;

typedef struct
{
  DcDetachedCode *code;
  guint           calls_per_round;
  guint           centre;   /* of the spins: where cancels meet replies */
  guint           n_value, n_cancelled;
} RacePool;

typedef struct
{
  RaceCall *calls;
  guint     n;
} RaceRound;

static volatile guint race_spin_sink;

static void
race_cb (GObject      *source,
         GAsyncResult *res,
         gpointer      data)
{
  RaceCall *c = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), res, &error);

  c->times_called++;
  g_assert_cmpuint (c->times_called, ==, 1);
  if (value != NULL)
    {
      g_autoptr(GVariant) inner = NULL;

      g_assert_no_error (error);
      g_variant_get (value, "(v)", &inner);
      g_assert_cmpuint (g_variant_get_uint32 (inner), ==, c->serial);
    }
  else
    {
      /* Only its own cancellable, cancelled, may end a call early. */
      g_assert_error (error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
      g_assert_true (c->cancel);
      c->cancelled = TRUE;
    }
  /* The task goes as this returns, the value and error here: nothing of
   * the call is kept for a late cancellation to find. */
}

static gpointer
race_canceller (gpointer data)
{
  GAsyncQueue *jobs = data;

  for (;;)
    {
      RaceJob *job = g_async_queue_pop (jobs);
      guint i;

      if (job->cancellable == NULL)
        {
          g_free (job);
          return NULL;
        }
      for (i = 0; i < job->spin; i++)
        race_spin_sink++;
      if (job->call->cancel)
        g_cancellable_cancel (job->cancellable);
      /* Often the last reference, the call having completed. */
      g_object_unref (job->cancellable);
      g_atomic_int_set (&job->call->canceller_done, TRUE);
      g_free (job);
      g_main_context_wakeup (NULL);
    }
}

static gboolean
race_round_done (gpointer data)
{
  RaceRound *round = data;
  guint i;

  for (i = 0; i < round->n; i++)
    if (round->calls[i].times_called == 0 || !g_atomic_int_get (&round->calls[i].canceller_done))
      return FALSE;
  return TRUE;
}

static void
test_threads_cancel_vs_completion (void)
{
  /* Each round, calls to a worker that answers at once, and another thread
   * that cancels each call's cancellable about when its reply comes in:
   * the reply completes the call on the pool's context while the
   * cancellable's handler runs in the other thread.  The spin before each
   * cancel is random around a centre that follows the outcomes, so that
   * about half of the cancels come first: the two meet on any machine,
   * loaded or not.  Nothing here keeps a call's task or cancellable alive
   * past its end, so that a handler still using one is seen (under
   * AddressSanitizer, or as a crash). */
  const guint n_rounds = 15000;   /* 5,000 on each pool */
  RacePool pools[3] = {
    { new_pool (1, 1), 1, 1000, 0, 0 },
    { new_pool (2, 2), 4, 1000, 0, 0 },   /* pipelined, over two workers */
    { new_pool (1, 1), 3, 1000, 0, 0 },   /* pipelined, on one */
  };
  GAsyncQueue *jobs = g_async_queue_new ();
  RaceCall *calls = g_new0 (RaceCall, n_rounds * 4);
  guint n_calls = 0, round, i;
  RaceJob *stop;
  GThread *thread;

  dc_detached_code_set_pipeline_depth (pools[1].code, 4);
  dc_detached_code_set_pipeline_depth (pools[2].code, 8);
  /* Every worker is forked before the other thread exists. */
  for (i = 0; i < G_N_ELEMENTS (pools); i++)
    g_assert_true (dc_detached_code_start (pools[i].code, NULL));
  thread = g_thread_new ("canceller", race_canceller, jobs);

  for (round = 0; round < n_rounds; round++)
    {
      RacePool *pool = &pools[round % G_N_ELEMENTS (pools)];
      RaceRound this_round = { &calls[n_calls], pool->calls_per_round };

      for (i = 0; i < pool->calls_per_round; i++)
        {
          RaceCall *c = &calls[n_calls++];
          RaceJob *job = g_new (RaceJob, 1);

          c->serial = n_calls;
          /* Some are never cancelled: those must all succeed. */
          c->cancel = g_test_rand_int_range (0, 8) != 0;
          job->cancellable = g_cancellable_new ();
          job->call = c;
          job->spin = (guint) g_test_rand_int_range (0, 2 * pool->centre + 1);
          dc_detached_code_call_async (pool->code, cmd ("echo", g_variant_new_uint32 (c->serial)),
                                       G_PRIORITY_DEFAULT, job->cancellable, race_cb, c);
          /* Sent: the other thread may cancel it from now on. */
          g_async_queue_push (jobs, job);
        }
      wait_until (race_round_done, &this_round, "a round of calls raced by cancels");

      for (i = 0; i < this_round.n; i++)
        {
          RaceCall *c = &this_round.calls[i];

          if (c->cancelled)
            {
              pool->n_cancelled++;
              pool->centre = MIN (pool->centre + pool->centre / 16 + 1, 1 << 16);
            }
          else
            {
              pool->n_value++;
              if (c->cancel)
                pool->centre -= pool->centre / 16;
            }
        }
    }

  stop = g_new0 (RaceJob, 1);
  g_async_queue_push (jobs, stop);
  g_thread_join (thread);
  g_async_queue_unref (jobs);
  /* What the cancels left queued on the pools' context. */
  while (g_main_context_iteration (NULL, FALSE))
    ;

  /* Still once each, nothing late. */
  for (i = 0; i < n_calls; i++)
    g_assert_cmpuint (calls[i].times_called, ==, 1);
  g_free (calls);

  for (i = 0; i < G_N_ELEMENTS (pools); i++)
    {
      g_autoptr(GCancellable) unused = g_cancellable_new ();
      Result r = { 0, };

      g_test_message ("pool %u: %u calls returned their value, %u were cancelled; spin centre %u",
                      i, pools[i].n_value, pools[i].n_cancelled, pools[i].centre);
      /* The pool goes on as before. */
      dc_detached_code_call_async (pools[i].code, cmd ("pid", NULL), G_PRIORITY_DEFAULT, unused,
                                   result_cb, &r);
      wait_for_flag (&r.done, "a call after the races");
      g_assert_no_error (r.error);
      result_clear (&r);
      g_assert_cmpint (call_pid (pools[i].code), >, 0);
      destroy_pool (pools[i].code);
    }
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
  g_test_add_func ("/detached-code/call/cancel-batch", test_call_cancel_batch);
  g_test_add_func ("/detached-code/threads/cancel-vs-completion",
                   test_threads_cancel_vs_completion);

  return g_test_run ();
}
