/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* max-queued: calls beyond the bound fail with BUSY, through their
 * callback and once; the pool and the calls it holds go on. */

#include "config.h"

#include <glib/gstdio.h>

#include "dc-test-common.h"

/* ---- the code: a gate the test opens ---- */

/* ("gate", path) waits in the worker until @path exists, so that a worker
 * stays busy exactly as long as the test wants; ("value", i) returns i. */
static GVariant *
gate_code (GVariant  *args,
           gpointer   user_data,
           GError   **error)
{
  const char *command;
  g_autoptr(GVariant) arg = NULL;

  g_variant_get (args, "(&sv)", &command, &arg);
  if (g_str_equal (command, "gate"))
    {
      const char *path = g_variant_get_string (arg, NULL);

      while (!g_file_test (path, G_FILE_TEST_EXISTS))
        g_usleep (5 * G_TIME_SPAN_MILLISECOND);
      return g_variant_new ("(i)", -1);
    }
  if (g_str_equal (command, "value"))
    return g_variant_new ("(i)", g_variant_get_int32 (arg));

  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "unknown command %s", command);
  return NULL;
}

typedef struct
{
  char *dir;
  char *path;
} Gate;

static void
gate_init (Gate *gate)
{
  gate->dir = g_dir_make_tmp ("dc-test-XXXXXX", NULL);
  g_assert_nonnull (gate->dir);
  gate->path = g_build_filename (gate->dir, "open", NULL);
}

static void
gate_open (Gate *gate)
{
  g_assert_true (g_file_set_contents (gate->path, "", 0, NULL));
}

static void
gate_clear (Gate *gate)
{
  g_unlink (gate->path);
  g_rmdir (gate->dir);
  g_clear_pointer (&gate->path, g_free);
  g_clear_pointer (&gate->dir, g_free);
}

static GVariant *
gate_args (Gate *gate)
{
  return g_variant_new ("(sv)", "gate", g_variant_new_string (gate->path));
}

static GVariant *
value_args (gint32 i)
{
  return g_variant_new ("(sv)", "value", g_variant_new_int32 (i));
}

static DcDetachedCode *
new_bound_pool (guint max_workers,
                guint max_queued)
{
  DcDetachedCode *code = dc_detached_code_new (gate_code, NULL, NULL);

  g_object_set (code, "min-workers", max_workers, "max-workers", max_workers,
                "max-queued", max_queued, NULL);
  g_assert_true (dc_detached_code_start (code, NULL));
  return code;
}

static void
assert_value (Result *r,
              gint32  expected)
{
  gint32 got;

  g_assert_no_error (r->error);
  g_variant_get (r->value, "(i)", &got);
  g_assert_cmpint (got, ==, expected);
}

static void
assert_busy (Result *r)
{
  g_assert_error (r->error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_BUSY);
  g_assert_nonnull (strstr (r->error->message, "max-queued"));
  g_assert_null (r->value);
}

static gboolean
quit_cb (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

/* Runs the loop a little longer: a second callback would come now. */
static void
settle (void)
{
  gboolean done = FALSE;

  g_timeout_add (100, quit_cb, &done);
  wait_for_flag (&done, "the loop to settle");
}

/* ---- tests ---- */

static void
count_notify_cb (GObject    *object,
                 GParamSpec *pspec,
                 gpointer    data)
{
  (*(guint *) data)++;
}

static void
test_bound_property (void)
{
  DcDetachedCode *code = dc_detached_code_new (gate_code, NULL, NULL);
  guint n_notify = 0;
  guint value = 99;

  g_assert_cmpuint (dc_detached_code_get_max_queued (code), ==, 0);
  g_signal_connect (code, "notify::max-queued", G_CALLBACK (count_notify_cb), &n_notify);
  dc_detached_code_set_max_queued (code, 5);
  g_assert_cmpuint (dc_detached_code_get_max_queued (code), ==, 5);
  g_assert_cmpuint (n_notify, ==, 1);
  /* Unchanged: no notify. */
  dc_detached_code_set_max_queued (code, 5);
  g_assert_cmpuint (n_notify, ==, 1);
  g_object_set (code, "max-queued", 7, NULL);
  g_object_get (code, "max-queued", &value, NULL);
  g_assert_cmpuint (value, ==, 7);
  g_assert_cmpuint (n_notify, ==, 2);
  g_object_unref (code);
}

/* One worker held at the gate, two calls queued, the rest refused: not
 * inside call_async(), once each, whatever their priority; the queue
 * never grows past the bound, and the pool goes on. */
static void
test_bound_busy (void)
{
  DcDetachedCode *code = new_bound_pool (1, 2);
  Gate gate;
  Result running = { 0, }, queued[2] = { { 0, }, }, refused[3] = { { 0, }, };
  Result after[3] = { { 0, }, };
  guint i;

  gate_init (&gate);
  call (code, gate_args (&gate), &running);
  for (i = 0; i < 2; i++)
    call (code, value_args (i), &queued[i]);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 2);
  for (i = 0; i < 3; i++)
    {
      /* A better priority does not jump a full queue. */
      dc_detached_code_call_async (code, value_args (10 + i),
                                   i == 0 ? G_PRIORITY_HIGH : G_PRIORITY_DEFAULT,
                                   NULL, result_cb, &refused[i]);
      g_assert_false (refused[i].done);
    }
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 2);

  /* The refusals come first: the other calls wait for the gate. */
  for (i = 0; i < 3; i++)
    {
      wait_for_flag (&refused[i].done, "a refused call");
      assert_busy (&refused[i]);
    }
  g_assert_false (running.done);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 2);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 1);

  gate_open (&gate);
  wait_for_flag (&running.done, "the gated call");
  assert_value (&running, -1);
  for (i = 0; i < 2; i++)
    {
      wait_for_flag (&queued[i].done, "a queued call");
      assert_value (&queued[i], i);
    }

  /* The queue has room again: a full load is taken. */
  for (i = 0; i < 3; i++)
    call (code, value_args (20 + i), &after[i]);
  for (i = 0; i < 3; i++)
    {
      wait_for_flag (&after[i].done, "a call after the refusals");
      assert_value (&after[i], 20 + i);
    }

  settle ();
  g_assert_cmpuint (running.times_called, ==, 1);
  for (i = 0; i < 2; i++)
    g_assert_cmpuint (queued[i].times_called, ==, 1);
  for (i = 0; i < 3; i++)
    {
      g_assert_cmpuint (refused[i].times_called, ==, 1);
      g_assert_cmpuint (after[i].times_called, ==, 1);
    }

  result_clear (&running);
  for (i = 0; i < 2; i++)
    result_clear (&queued[i]);
  for (i = 0; i < 3; i++)
    {
      result_clear (&refused[i]);
      result_clear (&after[i]);
    }
  gate_clear (&gate);
  destroy_pool (code);
}

/* Calls that go straight to a worker do not count: with two idle workers
 * and a bound of 1, three calls are taken (two sent, one queued). */
static void
test_bound_sent_not_counted (void)
{
  DcDetachedCode *code = new_bound_pool (2, 1);
  Gate gate;
  Result r[4] = { { 0, }, };
  guint i;

  gate_init (&gate);
  call (code, gate_args (&gate), &r[0]);
  call (code, gate_args (&gate), &r[1]);
  call (code, value_args (2), &r[2]);
  call (code, value_args (3), &r[3]);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 1);
  wait_for_flag (&r[3].done, "a refused call");
  assert_busy (&r[3]);

  gate_open (&gate);
  for (i = 0; i < 3; i++)
    {
      wait_for_flag (&r[i].done, "a call");
      assert_value (&r[i], i < 2 ? -1 : 2);
    }
  settle ();
  for (i = 0; i < 4; i++)
    {
      g_assert_cmpuint (r[i].times_called, ==, 1);
      result_clear (&r[i]);
    }
  gate_clear (&gate);
  destroy_pool (code);
}

/* Lowering the bound below the queue's length drops nothing; new calls
 * are refused until the queue is shorter than the bound.  0 lifts it. */
static void
test_bound_lower (void)
{
  DcDetachedCode *code = new_bound_pool (1, 4);
  Gate gate;
  Result running = { 0, }, queued[4] = { { 0, }, }, refused = { 0, }, unbounded[6] = { { 0, }, };
  Gate gate2;
  Result running2 = { 0, };
  guint i;

  gate_init (&gate);
  call (code, gate_args (&gate), &running);
  for (i = 0; i < 4; i++)
    call (code, value_args (i), &queued[i]);
  dc_detached_code_set_max_queued (code, 1);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 4);
  call (code, value_args (99), &refused);
  wait_for_flag (&refused.done, "a refused call");
  assert_busy (&refused);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 4);

  gate_open (&gate);
  wait_for_flag (&running.done, "the gated call");
  assert_value (&running, -1);
  for (i = 0; i < 4; i++)
    {
      wait_for_flag (&queued[i].done, "a queued call");
      assert_value (&queued[i], i);
    }

  /* No bound: a worker held, six calls wait. */
  dc_detached_code_set_max_queued (code, 0);
  gate_init (&gate2);
  call (code, gate_args (&gate2), &running2);
  for (i = 0; i < 6; i++)
    call (code, value_args (i), &unbounded[i]);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 6);
  gate_open (&gate2);
  wait_for_flag (&running2.done, "the gated call");
  for (i = 0; i < 6; i++)
    {
      wait_for_flag (&unbounded[i].done, "an unbounded call");
      assert_value (&unbounded[i], i);
    }

  settle ();
  g_assert_cmpuint (running.times_called + running2.times_called + refused.times_called, ==, 3);
  for (i = 0; i < 4; i++)
    g_assert_cmpuint (queued[i].times_called, ==, 1);
  for (i = 0; i < 6; i++)
    g_assert_cmpuint (unbounded[i].times_called, ==, 1);

  result_clear (&running);
  result_clear (&running2);
  result_clear (&refused);
  for (i = 0; i < 4; i++)
    result_clear (&queued[i]);
  for (i = 0; i < 6; i++)
    result_clear (&unbounded[i]);
  gate_clear (&gate);
  gate_clear (&gate2);
  destroy_pool (code);
}

/* A cancelled queued call makes room for the next one. */
static void
test_bound_cancel_makes_room (void)
{
  DcDetachedCode *code = new_bound_pool (1, 1);
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  Gate gate;
  Result running = { 0, }, queued = { 0, }, next = { 0, };

  gate_init (&gate);
  call (code, gate_args (&gate), &running);
  dc_detached_code_call_async (code, value_args (1), G_PRIORITY_DEFAULT, cancellable,
                               result_cb, &queued);
  g_cancellable_cancel (cancellable);
  wait_for_flag (&queued.done, "a cancelled queued call");
  g_assert_error (queued.error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);

  call (code, value_args (2), &next);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 1);
  gate_open (&gate);
  wait_for_flag (&next.done, "the call after the cancelled one");
  assert_value (&next, 2);
  wait_for_flag (&running.done, "the gated call");

  settle ();
  g_assert_cmpuint (running.times_called + queued.times_called + next.times_called, ==, 3);
  result_clear (&running);
  result_clear (&queued);
  result_clear (&next);
  gate_clear (&gate);
  destroy_pool (code);
}

/* Calls from another thread obey the bound too, and their callbacks,
 * refusals included, run once each in that thread's context. */
typedef struct
{
  DcDetachedCode *code;
  GMainContext   *context;
  guint           n_calls;
  guint           n_ok;
  guint           n_busy;
  guint           n_other;
  gint            n_done;      /* atomic: read by the pool's thread */
  gboolean        wrong_context;
  gint            posted;      /* atomic */
} ThreadCalls;

static void
thread_result_cb (GObject      *source,
                  GAsyncResult *res,
                  gpointer      data)
{
  ThreadCalls *t = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), res,
                                                            &error);

  if (g_main_context_get_thread_default () != t->context)
    t->wrong_context = TRUE;
  if (value != NULL)
    t->n_ok++;
  else if (g_error_matches (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_BUSY))
    t->n_busy++;
  else
    t->n_other++;
  g_atomic_int_inc (&t->n_done);
}

static gpointer
thread_calls (gpointer data)
{
  ThreadCalls *t = data;
  guint i;

  g_main_context_push_thread_default (t->context);
  for (i = 0; i < t->n_calls; i++)
    dc_detached_code_call_async (t->code, value_args ((gint32) i), G_PRIORITY_DEFAULT, NULL,
                                 thread_result_cb, t);
  g_atomic_int_set (&t->posted, TRUE);
  while (g_atomic_int_get (&t->n_done) < (gint) t->n_calls)
    g_main_context_iteration (t->context, TRUE);
  g_main_context_pop_thread_default (t->context);
  return NULL;
}

/* Every call but those the queue holds was refused (and the refusal
 * reached the thread), so all of them reached the pool's context. */
static gboolean
thread_refusals_seen (gpointer data)
{
  ThreadCalls *t = data;

  return g_atomic_int_get (&t->posted) &&
         g_atomic_int_get (&t->n_done) == (gint) t->n_calls - 3;
}

static gboolean
thread_done (gpointer data)
{
  ThreadCalls *t = data;

  return g_atomic_int_get (&t->n_done) == (gint) t->n_calls;
}

static void
test_bound_threads (void)
{
  DcDetachedCode *code = new_bound_pool (1, 3);
  Gate gate;
  Result running = { 0, };
  ThreadCalls t = { code, g_main_context_new (), 20, 0, 0, 0, 0, FALSE, FALSE };
  GThread *thread;

  gate_init (&gate);
  call (code, gate_args (&gate), &running);
  thread = g_thread_new ("caller", thread_calls, &t);
  /* This thread runs the pool's context: the calls arrive here. */
  wait_until (thread_refusals_seen, &t, "calls from a thread to be queued");
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 3);
  gate_open (&gate);
  wait_until (thread_done, &t, "the thread's calls");
  g_thread_join (thread);

  g_assert_cmpuint (t.n_ok, ==, 3);
  g_assert_cmpuint (t.n_busy, ==, 17);
  g_assert_cmpuint (t.n_other, ==, 0);
  g_assert_false (t.wrong_context);
  wait_for_flag (&running.done, "the gated call");
  assert_value (&running, -1);
  settle ();
  g_assert_cmpuint (running.times_called, ==, 1);

  result_clear (&running);
  g_main_context_unref (t.context);
  gate_clear (&gate);
  destroy_pool (code);
}

/* A batch from another thread reaches the pool's context at once, while
 * both workers are idle: the calls that workers can take are not refused
 * for having arrived together.  Two go to the workers and one waits. */
typedef struct
{
  DcDetachedCode *code;
  GMainContext   *context;
  Gate           *gate;
  Result          r[4];
  gint            posted;   /* atomic */
  gint            finished; /* atomic */
} Batch;

static gpointer
batch_thread (gpointer data)
{
  Batch *b = data;
  guint i;

  g_main_context_push_thread_default (b->context);
  dc_detached_code_call_async (b->code, gate_args (b->gate), G_PRIORITY_DEFAULT, NULL,
                               result_cb, &b->r[0]);
  dc_detached_code_call_async (b->code, gate_args (b->gate), G_PRIORITY_DEFAULT, NULL,
                               result_cb, &b->r[1]);
  dc_detached_code_call_async (b->code, value_args (2), G_PRIORITY_DEFAULT, NULL,
                               result_cb, &b->r[2]);
  dc_detached_code_call_async (b->code, value_args (3), G_PRIORITY_DEFAULT, NULL,
                               result_cb, &b->r[3]);
  g_atomic_int_set (&b->posted, TRUE);
  for (i = 0; i < 4; i++)
    while (!b->r[i].done)
      g_main_context_iteration (b->context, TRUE);
  g_main_context_pop_thread_default (b->context);
  g_atomic_int_set (&b->finished, TRUE);
  return NULL;
}

static gboolean
batch_finished (gpointer data)
{
  Batch *b = data;

  return g_atomic_int_get (&b->finished);
}

static gboolean
batch_queued (gpointer data)
{
  return dc_detached_code_get_n_queued (data) == 1;
}

static void
test_bound_thread_batch (void)
{
  DcDetachedCode *code = new_bound_pool (2, 1);
  Gate gate;
  Batch b = { code, g_main_context_new (), &gate, { { 0, }, }, FALSE, FALSE };
  GThread *thread;
  guint i;

  gate_init (&gate);
  thread = g_thread_new ("caller", batch_thread, &b);
  /* The pool's context does not run until all four are posted. */
  while (!g_atomic_int_get (&b.posted))
    g_usleep (G_TIME_SPAN_MILLISECOND);
  wait_until (batch_queued, code, "the batch to be queued");
  gate_open (&gate);
  /* The replies are read here, on the pool's context. */
  wait_until (batch_finished, &b, "the thread's calls");
  g_thread_join (thread);

  for (i = 0; i < 3; i++)
    assert_value (&b.r[i], i < 2 ? -1 : 2);
  assert_busy (&b.r[3]);
  for (i = 0; i < 4; i++)
    {
      g_assert_cmpuint (b.r[i].times_called, ==, 1);
      result_clear (&b.r[i]);
    }
  g_main_context_unref (b.context);
  gate_clear (&gate);
  destroy_pool (code);
}

/* Calls from a thread with no context of its own: their callbacks run in
 * the pool's context, and a refused one's at once, as GTask sees a task
 * made before this dispatch.  The first refusal shuts the pool down: every
 * other call of the batch must get SHUTDOWN (or BUSY), none may run, and
 * nothing may start the pool again. */
#define N_BATCH 6

typedef struct
{
  DcDetachedCode *code;
  Gate           *gate;
  Result          r[N_BATCH];
  gint            posted;   /* atomic */
  gboolean        shut_down;
} Shutdown;

static Shutdown *shutdown_test;

static void
shutdown_on_busy_cb (GObject      *source,
                     GAsyncResult *res,
                     gpointer      user_data)
{
  Result *r = user_data;

  result_cb (source, res, user_data);
  if (!shutdown_test->shut_down &&
      g_error_matches (r->error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_BUSY))
    {
      shutdown_test->shut_down = TRUE;
      dc_detached_code_shutdown (DC_DETACHED_CODE (source));
    }
}

static gpointer
shutdown_thread (gpointer data)
{
  Shutdown *t = data;
  guint i;

  for (i = 0; i < N_BATCH; i++)
    dc_detached_code_call_async (t->code, i == 0 ? gate_args (t->gate) : value_args ((gint32) i),
                                 G_PRIORITY_DEFAULT, NULL, shutdown_on_busy_cb, &t->r[i]);
  g_atomic_int_set (&t->posted, TRUE);
  return NULL;
}

static gboolean
shutdown_all_done (gpointer data)
{
  Shutdown *t = data;
  guint i;

  for (i = 0; i < N_BATCH; i++)
    if (!t->r[i].done)
      return FALSE;
  return TRUE;
}

static void
test_bound_busy_shuts_down (void)
{
  DcDetachedCode *code = new_bound_pool (1, 1);
  Gate gate;
  Shutdown t = { code, &gate, { { 0, }, }, FALSE, FALSE };
  GThread *thread;
  guint i, n_busy = 0;

  gate_init (&gate);
  shutdown_test = &t;
  thread = g_thread_new ("caller", shutdown_thread, &t);
  g_thread_join (thread);
  g_assert_true (g_atomic_int_get (&t.posted));

  wait_until (shutdown_all_done, &t, "the batch's callbacks");
  gate_open (&gate);
  settle ();
  g_assert_true (t.shut_down);
  for (i = 0; i < N_BATCH; i++)
    {
      g_assert_cmpuint (t.r[i].times_called, ==, 1);
      g_assert_null (t.r[i].value);
      if (g_error_matches (t.r[i].error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_BUSY))
        n_busy++;
      else
        g_assert_error (t.r[i].error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SHUTDOWN);
      result_clear (&t.r[i]);
    }
  /* One runs, one waits; the rest are refused. */
  g_assert_cmpuint (n_busy, ==, N_BATCH - 2);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  shutdown_test = NULL;
  gate_clear (&gate);
  destroy_pool (code);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/queue-bound/property", test_bound_property);
  g_test_add_func ("/detached-code/queue-bound/busy", test_bound_busy);
  g_test_add_func ("/detached-code/queue-bound/sent-not-counted", test_bound_sent_not_counted);
  g_test_add_func ("/detached-code/queue-bound/lower", test_bound_lower);
  g_test_add_func ("/detached-code/queue-bound/cancel-makes-room", test_bound_cancel_makes_room);
  g_test_add_func ("/detached-code/queue-bound/threads", test_bound_threads);
  g_test_add_func ("/detached-code/queue-bound/thread-batch", test_bound_thread_batch);
  g_test_add_func ("/detached-code/queue-bound/busy-shuts-down", test_bound_busy_shuts_down);

  return g_test_run ();
}
