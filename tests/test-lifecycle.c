/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Pool and worker lifecycle: start, growth, deaths, recycling, shutdown. */

#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "dc-detached-code-private.h"

#include "dc-test-common.h"

static void
test_pool_start (void)
{
  DcDetachedCode *code = new_pool (3, 1);
  g_autoptr(GError) error = NULL;
  g_autofree GPid *pids = NULL;
  guint n = 0;

  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  g_assert_true (dc_detached_code_start (code, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 3);

  pids = dc_detached_code_get_worker_pids (code, &n);
  g_assert_cmpuint (n, ==, 3);
  g_assert_cmpint (pids[0], !=, pids[1]);
  g_assert_cmpint (pids[1], !=, pids[2]);
  g_assert_cmpint (pids[0], !=, pids[2]);
  g_assert_cmpint (pids[0], !=, getpid ());

  /* Starting twice forks nothing more. */
  g_assert_true (dc_detached_code_start (code, &error));
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 3);
  destroy_pool (code);
}

static void
test_pool_lazy_start (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };

  call (code, cmd ("pid", NULL), &r);
  /* Forked before call_async returned. */
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 1);
  wait_for_flag (&r.done, "a call");
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

/* Waits for @n calls that answered "(i)" with their worker's pid, and
 * adds the pids to @pids. */
static void
collect_pids (Result     *r,
              guint       n,
              GHashTable *pids)
{
  guint i;

  for (i = 0; i < n; i++)
    {
      gint32 pid;

      wait_for_flag (&r[i].done, "slow calls");
      g_assert_no_error (r[i].error);
      g_variant_get (r[i].value, "(i)", &pid);
      g_hash_table_add (pids, GINT_TO_POINTER (pid));
      result_clear (&r[i]);
    }
}

static void
count_spawned (DcDetachedCode *code,
               gint            pid,
               gpointer        data)
{
  (*(guint *) data)++;
}

static void
test_pool_grow (void)
{
  DcDetachedCode *code = new_pool (1, 3);
  Result r[6] = { { 0, }, };
  g_autoptr(GHashTable) pids = g_hash_table_new (NULL, NULL);
  guint spawned = 0, i;

  g_signal_connect (code, "worker-spawned", G_CALLBACK (count_spawned), &spawned);
  g_assert_true (dc_detached_code_start (code, NULL));
  g_assert_cmpuint (spawned, ==, 1);

  for (i = 0; i < 6; i++)
    call (code, cmd ("sleep", g_variant_new_int32 (200)), &r[i]);
  /* Grown to the maximum at once, and no further. */
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 3);
  collect_pids (r, 6, pids);
  g_assert_cmpuint (g_hash_table_size (pids), ==, 3);
  g_assert_cmpuint (spawned, ==, 3);
  destroy_pool (code);
}

static char *
parent_death_file (GPid test_pid)
{
  return g_strdup_printf ("%s/dc-test-parent-death-%d", g_get_tmp_dir (), (int) test_pid);
}

static void
test_pool_parent_death (void)
{
  if (g_test_subprocess ())
    {
      DcDetachedCode *code = new_pool (2, 2);
      g_autofree GPid *pids = NULL;
      g_autofree char *path = parent_death_file (getppid ());
      g_autofree char *text = NULL;
      guint n = 0;

      g_assert_true (dc_detached_code_start (code, NULL));
      pids = dc_detached_code_get_worker_pids (code, &n);
      text = g_strdup_printf ("%d %d", (int) pids[0], (int) pids[1]);
      g_assert_true (g_file_set_contents (path, text, -1, NULL));
      /* Die without any clean-up at all. */
      kill (getpid (), SIGKILL);
    }
  else
    {
      g_autofree char *path = parent_death_file (getpid ());
      g_autofree char *text = NULL;
      int a = 0, b = 0;

      g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
      g_test_trap_assert_failed ();
      g_assert_true (g_file_get_contents (path, &text, NULL, NULL));
      g_unlink (path);
      g_assert_cmpint (sscanf (text, "%d %d", &a, &b), ==, 2);
      g_assert_cmpint (a, >, 0);
      g_assert_cmpint (b, >, 0);
      /* Orphaned workers kill themselves; init reaps them. */
      assert_process_gone (a);
      assert_process_gone (b);
    }
}

static void
test_pool_inert_in_worker (void)
{
  DcDetachedCode *victim = new_pool (2, 2);
  DcDetachedCode *code = NULL;
  g_autofree GPid *before = NULL;
  g_autofree GPid *after = NULL;
  guint n_before = 0, n_after = 0;
  Result r = { 0, };

  g_assert_true (dc_detached_code_start (victim, NULL));
  before = dc_detached_code_get_worker_pids (victim, &n_before);

  /* The copy of @victim inside @code's worker is shut down and disposed
   * there: that must not touch the real pool's workers or channels. */
  code = dc_detached_code_new (test_code, victim, NULL);
  call_sync (code, cmd ("shutdown-copy", NULL), &r);
  g_assert_no_error (r.error);
  result_clear (&r);

  g_assert_cmpuint (dc_detached_code_get_n_workers (victim), ==, 2);
  after = dc_detached_code_get_worker_pids (victim, &n_after);
  g_assert_cmpuint (n_after, ==, 2);
  g_assert_cmpmem (before, n_before * sizeof (GPid), after, n_after * sizeof (GPid));
  g_assert_cmpint (kill (before[0], 0), ==, 0);
  g_assert_cmpint (call_pid (victim), >, 0);

  destroy_pool (code);
  destroy_pool (victim);
}

static void
test_pool_inert_after_fork (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  DcDetachedCode *other = NULL;
  Result r = { 0, };
  gint32 refused;
  int status;
  pid_t child;

  /* The pool's calls know their process without asking the kernel each
   * time: it has been asked by now. */
  g_assert_cmpint (call_pid (code), >, 0);

  /* A child of fork() has a copy of the pool, which must know itself a
   * copy: start() refuses there rather than fork workers of its own. */
  child = fork ();
  g_assert_cmpint (child, >=, 0);
  if (child == 0)
    {
      GError *error = NULL;
      gboolean started = dc_detached_code_start (code, &error);

      _exit (!started && g_error_matches (error, DC_DETACHED_CODE_ERROR,
                                          DC_DETACHED_CODE_ERROR_SPAWN) ? 0 : 1);
    }
  g_assert_cmpint (waitpid (child, &status, 0), ==, child);
  g_assert_true (WIFEXITED (status));
  g_assert_cmpint (WEXITSTATUS (status), ==, 0);

  /* Nor may a worker start its copy: its clone has no fork() handlers. */
  other = dc_detached_code_new (test_code, code, NULL);
  call_sync (other, cmd ("start-copy", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(i)", &refused);
  g_assert_cmpint (refused, ==, DC_DETACHED_CODE_ERROR_SPAWN);
  result_clear (&r);
  destroy_pool (other);

  /* And the parent's pool is still its own. */
  g_assert_true (dc_detached_code_start (code, NULL));
  g_assert_cmpint (call_pid (code), >, 0);
  destroy_pool (code);
}

static gboolean
n_workers_is_one (gpointer data)
{
  return dc_detached_code_get_n_workers (data) == 1;
}

static gboolean
two_of_three_gone (gpointer data)
{
  GHashTableIter iter;
  gpointer pid;
  guint gone = 0;

  g_hash_table_iter_init (&iter, data);
  while (g_hash_table_iter_next (&iter, &pid, NULL))
    if (process_gone (pid))
      gone++;
  return gone == 2;
}

static void
test_pool_idle_timeout (void)
{
  DcDetachedCode *code = new_pool (1, 3);
  Result r[3] = { { 0, }, };
  g_autoptr(GHashTable) pids = g_hash_table_new (NULL, NULL);
  guint i;

  dc_detached_code_set_idle_timeout (code, 200);
  g_assert_cmpuint (dc_detached_code_get_idle_timeout (code), ==, 200);
  for (i = 0; i < 3; i++)
    call (code, cmd ("sleep", g_variant_new_int32 (300)), &r[i]);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 3);
  collect_pids (r, 3, pids);

  /* Down to the minimum, and no lower; the two that left are reaped. */
  g_assert_cmpuint (g_hash_table_size (pids), ==, 3);
  wait_until (n_workers_is_one, code, "idle workers to leave");
  wait_until (two_of_three_gone, pids, "idle workers to be reaped");
  g_usleep (400 * G_TIME_SPAN_MILLISECOND);
  g_main_context_iteration (NULL, FALSE);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 1);
  g_assert_cmpint (call_pid (code), >, 0);
  destroy_pool (code);
}

static void
test_pool_max_worker_calls (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r[10] = { { 0, }, };
  g_autoptr(GHashTable) counts = g_hash_table_new (NULL, NULL);
  GHashTableIter iter;
  gpointer pid, count;
  guint i;

  dc_detached_code_set_max_worker_calls (code, 3);
  for (i = 0; i < 10; i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &r[i]);
  for (i = 0; i < 10; i++)
    {
      gint32 index, p;

      wait_for_flag (&r[i].done, "recycled calls");
      /* Recycling strands nothing and fails nothing. */
      g_assert_no_error (r[i].error);
      g_variant_get (r[i].value, "(ii)", &index, &p);
      g_assert_cmpint (index, ==, (gint32) i);
      g_hash_table_insert (counts, GINT_TO_POINTER (p),
                           GUINT_TO_POINTER (GPOINTER_TO_UINT (g_hash_table_lookup (counts, GINT_TO_POINTER (p))) + 1));
      result_clear (&r[i]);
    }
  g_assert_cmpuint (g_hash_table_size (counts), ==, 4);
  g_hash_table_iter_init (&iter, counts);
  while (g_hash_table_iter_next (&iter, &pid, &count))
    {
      g_assert_cmpuint (GPOINTER_TO_UINT (count), <=, 3);
      if (GPOINTER_TO_UINT (count) == 3)
        assert_process_gone (GPOINTER_TO_INT (pid));
    }
  destroy_pool (code);
}

static void
test_pool_restart (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result slow = { 0, }, r = { 0, };
  gint32 state, pid, old_pid;

  parent_state = 1;
  g_assert_true (dc_detached_code_start (code, NULL));
  call_sync (code, cmd ("parent-state", NULL), &r);
  g_variant_get (r.value, "(ii)", &state, &old_pid);
  g_assert_cmpint (state, ==, 1);
  result_clear (&r);

  /* The old worker sees the parent as it was at its fork. */
  parent_state = 2;
  call_sync (code, cmd ("parent-state", NULL), &r);
  g_variant_get (r.value, "(ii)", &state, &pid);
  g_assert_cmpint (state, ==, 1);
  result_clear (&r);

  /* A call running across the restart completes normally. */
  call (code, cmd ("sleep", g_variant_new_int32 (300)), &slow);
  dc_detached_code_restart (code);
  call_sync (code, cmd ("parent-state", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(ii)", &state, &pid);
  g_assert_cmpint (state, ==, 2);
  g_assert_cmpint (pid, !=, old_pid);
  result_clear (&r);

  wait_for_flag (&slow.done, "the call across the restart");
  g_assert_no_error (slow.error);
  g_variant_get (slow.value, "(i)", &pid);
  g_assert_cmpint (pid, ==, old_pid);
  result_clear (&slow);
  assert_process_gone (old_pid);
  parent_state = 1;
  destroy_pool (code);
}

static void
count_notify (GObject    *object,
              GParamSpec *pspec,
              gpointer    data)
{
  (*(guint *) data)++;
}

static void
test_pool_stats (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r[3] = { { 0, }, };
  guint busy_notified = 0, queued_notified = 0, i;

  g_signal_connect (code, "notify::n-busy", G_CALLBACK (count_notify), &busy_notified);
  g_signal_connect (code, "notify::n-queued", G_CALLBACK (count_notify), &queued_notified);
  g_assert_cmpuint (dc_detached_code_get_n_busy (code), ==, 0);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);

  for (i = 0; i < 3; i++)
    call (code, cmd ("sleep", g_variant_new_int32 (100)), &r[i]);
  g_assert_cmpuint (dc_detached_code_get_n_busy (code), ==, 1);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 2);
  for (i = 0; i < 3; i++)
    wait_for_flag (&r[i].done, "calls");
  g_assert_cmpuint (dc_detached_code_get_n_busy (code), ==, 0);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  g_assert_cmpuint (busy_notified, >=, 2);
  g_assert_cmpuint (queued_notified, >=, 3);
  for (i = 0; i < 3; i++)
    result_clear (&r[i]);
  destroy_pool (code);
}

typedef struct
{
  GPid pid;
  int  status;
  guint n;
} Exited;

static void
on_worker_exited (DcDetachedCode *code,
                  gint            pid,
                  gint            status,
                  gpointer        data)
{
  Exited *e = data;

  e->pid = pid;
  e->status = status;
  e->n++;
}

static gboolean
exited_twice (gpointer data)
{
  return ((Exited *) data)->n == 2;
}

static void
test_pool_signals (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Exited e = { 0, };
  guint spawned = 0;
  GPid pid;
  Result r = { 0, };

  g_signal_connect (code, "worker-spawned", G_CALLBACK (count_spawned), &spawned);
  g_signal_connect (code, "worker-exited", G_CALLBACK (on_worker_exited), &e);
  pid = call_pid (code);
  g_assert_cmpuint (spawned, ==, 1);

  call_sync (code, cmd ("segv", NULL), &r);
  result_clear (&r);
  /* Emitted before the failed call's callback. */
  g_assert_cmpuint (e.n, ==, 1);
  g_assert_cmpint (e.pid, ==, pid);
  g_assert_true (WIFSIGNALED (e.status));
  g_assert_cmpint (WTERMSIG (e.status), ==, SIGSEGV);

  /* Workers let go by shutdown() are reported too, once reaped. */
  pid = call_pid (code);
  dc_detached_code_shutdown (code);
  wait_until (exited_twice, &e, "worker-exited after shutdown");
  g_assert_cmpint (e.pid, ==, pid);
  g_assert_true (WIFEXITED (e.status));
  destroy_pool (code);
}

static void
test_pool_pipeline (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  const guint n = 2000;
  Result *r = g_new0 (Result, n);
  Result slow = { 0, }, after[3] = { { 0, }, };
  guint i, previous = 0;

  dc_detached_code_set_pipeline_depth (code, 16);
  g_assert_cmpuint (dc_detached_code_get_pipeline_depth (code), ==, 16);
  for (i = 0; i < n; i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &r[i]);
  /* Sixteen went to the worker at once; the rest wait. */
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, n - 16);
  for (i = 0; i < n; i++)
    {
      gint32 index, p;

      wait_for_flag (&r[i].done, "pipelined calls");
      g_assert_no_error (r[i].error);
      g_variant_get (r[i].value, "(ii)", &index, &p);
      g_assert_cmpint (index, ==, (gint32) i);
      /* Still in call order with one worker. */
      if (i > 0)
        g_assert_cmpuint (r[i].order, ==, previous + 1);
      previous = r[i].order;
      result_clear (&r[i]);
    }
  g_free (r);

  /* A worker killed for a timeout fails what was pipelined behind it, each
   * once, with its own error. */
  dc_detached_code_set_call_timeout (code, 300);
  call (code, cmd ("sleep", g_variant_new_int32 (60000)), &slow);
  for (i = 0; i < 3; i++)
    call (code, cmd ("pid", NULL), &after[i]);
  wait_for_flag (&slow.done, "the slow call");
  g_assert_error (slow.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT);
  for (i = 0; i < 3; i++)
    {
      wait_for_flag (&after[i].done, "calls behind the slow one");
      g_assert_cmpuint (after[i].times_called, ==, 1);
      g_assert_nonnull (after[i].error);
      g_assert_true (g_error_matches (after[i].error, DC_DETACHED_CODE_ERROR,
                                      DC_DETACHED_CODE_ERROR_WORKER_DIED) ||
                     g_error_matches (after[i].error, DC_DETACHED_CODE_ERROR,
                                      DC_DETACHED_CODE_ERROR_TIMED_OUT));
      result_clear (&after[i]);
    }
  result_clear (&slow);
  destroy_pool (code);
}

static void
test_pool_pipeline_prefers_idle (void)
{
  DcDetachedCode *code = new_pool (2, 2);
  Result r[2] = { { 0, }, };
  gint32 a, b;

  dc_detached_code_set_pipeline_depth (code, 8);
  g_assert_true (dc_detached_code_start (code, NULL));
  /* Two calls, two idle workers: one each, not both on one. */
  call (code, cmd ("sleep", g_variant_new_int32 (200)), &r[0]);
  call (code, cmd ("sleep", g_variant_new_int32 (200)), &r[1]);
  g_assert_cmpuint (dc_detached_code_get_n_busy (code), ==, 2);
  wait_for_flag (&r[0].done, "calls");
  wait_for_flag (&r[1].done, "calls");
  g_variant_get (r[0].value, "(i)", &a);
  g_variant_get (r[1].value, "(i)", &b);
  g_assert_cmpint (a, !=, b);
  result_clear (&r[0]);
  result_clear (&r[1]);
  destroy_pool (code);
}

static void
check_worker_died (DcDetachedCode *code,
                   GVariant       *args,
                   const char     *expect)
{
  Result r = { 0, };
  GPid before = call_pid (code), after;
  g_autofree char *pid_text = g_strdup_printf ("%d", (int) before);

  call_sync (code, args, &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_test_message ("%s", r.error->message);
  g_assert_nonnull (strstr (r.error->message, pid_text));
  g_assert_nonnull (strstr (r.error->message, expect));
  /* Already out of the count when the callback ran. */
  g_assert_cmpuint (r.n_workers_at_callback, ==, 0);
  result_clear (&r);
  assert_process_gone (before);

  /* Nothing is respawned until a call needs it; then one is. */
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  after = call_pid (code);
  g_assert_cmpint (after, !=, before);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 1);
}

static void
test_worker_crash (void)
{
  DcDetachedCode *code = new_pool (1, 1);

  check_worker_died (code, cmd ("segv", NULL), "signal 11");
  destroy_pool (code);
}

static void
test_worker_exit (void)
{
  DcDetachedCode *code = new_pool (1, 1);

  check_worker_died (code, cmd ("exit", g_variant_new_int32 (7)), "status 7");
  check_worker_died (code, cmd ("exit", g_variant_new_int32 (0)), "status 0");
  destroy_pool (code);
}

typedef struct
{
  DcDetachedCode *code;
  GPid            pid;
} KillData;

static gboolean
kill_worker_cb (gpointer data)
{
  KillData *k = data;

  kill (k->pid, SIGKILL);
  return G_SOURCE_REMOVE;
}

static void
test_worker_killed (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  KillData k = { code, 0 };
  Result r = { 0, };

  k.pid = call_pid (code);
  call (code, cmd ("sleep", g_variant_new_int32 (60000)), &r);
  g_timeout_add (100, kill_worker_cb, &k);
  wait_for_flag (&r.done, "the killed call");
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_assert_nonnull (strstr (r.error->message, "killed by signal 9"));
  result_clear (&r);
  assert_process_gone (k.pid);
  destroy_pool (code);
}

static void
test_worker_queued_behind_death (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result crash = { 0, };
  Result r[5] = { { 0, }, };
  guint i;

  call (code, cmd ("segv", NULL), &crash);
  for (i = 0; i < 5; i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &r[i]);
  for (i = 0; i < 5; i++)
    wait_for_flag (&r[i].done, "calls queued behind a crash");
  wait_for_flag (&crash.done, "the crashed call");

  g_assert_error (crash.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  for (i = 0; i < 5; i++)
    {
      g_assert_no_error (r[i].error);
      result_clear (&r[i]);
    }
  result_clear (&crash);
  destroy_pool (code);
}

static void
test_worker_exit_on_die (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result fail = { 0, };
  Result r[4] = { { 0, }, };
  GPid first;
  guint i;

  dc_detached_code_set_exit_on_die (code, TRUE);
  first = call_pid (code);

  /* The failing worker leaves; the calls behind it do not notice. */
  call (code, cmd ("error", g_variant_new_string ("x")), &fail);
  for (i = 0; i < 4; i++)
    call (code, cmd ("pid", NULL), &r[i]);
  wait_for_flag (&fail.done, "the failing call");
  for (i = 0; i < 4; i++)
    wait_for_flag (&r[i].done, "calls after exit-on-die");

  g_assert_error (fail.error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  for (i = 0; i < 4; i++)
    {
      gint32 pid;

      g_assert_no_error (r[i].error);
      g_variant_get (r[i].value, "(i)", &pid);
      g_assert_cmpint (pid, !=, first);
      result_clear (&r[i]);
    }
  result_clear (&fail);
  assert_process_gone (first);
  destroy_pool (code);
}

static void
test_shutdown_pending (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r[6] = { { 0, }, };
  GPid pid;
  guint i;

  pid = call_pid (code);
  call (code, cmd ("sleep", g_variant_new_int32 (60000)), &r[0]);
  for (i = 1; i < 6; i++)
    call (code, cmd ("pid", NULL), &r[i]);

  dc_detached_code_shutdown (code);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  for (i = 0; i < 6; i++)
    {
      wait_for_flag (&r[i].done, "shut-down calls");
      g_assert_error (r[i].error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SHUTDOWN);
      g_assert_cmpuint (r[i].times_called, ==, 1);
      result_clear (&r[i]);
    }
  /* The busy worker was not left running its call, nor as a zombie. */
  assert_process_gone (pid);

  /* A later call starts the pool again. */
  g_assert_cmpint (call_pid (code), !=, pid);
  destroy_pool (code);
}

static void
test_shutdown_finalize (void)
{
  DcDetachedCode *code = new_pool (3, 3);
  g_autofree GPid *pids = NULL;
  guint n = 0, i;

  g_assert_true (dc_detached_code_start (code, NULL));
  pids = dc_detached_code_get_worker_pids (code, &n);
  g_assert_cmpuint (n, ==, 3);
  g_object_unref (code);
  for (i = 0; i < n; i++)
    assert_process_gone (pids[i]);
}

static void
test_shutdown_callback_reenters (void)
{
  /* A callback that shuts the pool down while other replies are pending
   * in the same read: every call still completes exactly once. */
  DcDetachedCode *code = new_pool (2, 2);
  Result r[20] = { { 0, }, };
  guint i, n_ok = 0, n_shutdown = 0;

  for (i = 0; i < 20; i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &r[i]);
  wait_for_flag (&r[0].done, "the first call");
  dc_detached_code_shutdown (code);
  for (i = 0; i < 20; i++)
    {
      wait_for_flag (&r[i].done, "all calls");
      g_assert_cmpuint (r[i].times_called, ==, 1);
      if (r[i].error == NULL)
        n_ok++;
      else
        {
          g_assert_error (r[i].error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SHUTDOWN);
          n_shutdown++;
        }
      result_clear (&r[i]);
    }
  g_assert_cmpuint (n_ok + n_shutdown, ==, 20);
  destroy_pool (code);
}

/* Many replies in one read: the worker answers a whole pipeline while the
 * parent does not look, then the parent reads them in one go, dispatches
 * once, and runs their callbacks.  A callback in the middle of that may
 * shut the pool down, restart it, or drop the last reference the test
 * holds. */
typedef enum
{
  BATCH_NOTHING,
  BATCH_SHUTDOWN,
  BATCH_RESTART,
  BATCH_UNREF,
} BatchAction;

#define BATCH_DEPTH 32
#define BATCH_CALLS (3 * BATCH_DEPTH)
#define BATCH_ACT_AT 5

typedef struct
{
  DcDetachedCode *code;   /* the test's reference, until BATCH_UNREF drops it */
  BatchAction     action;
  Result          r[BATCH_CALLS];
} Batch;

static Batch *batch;

static void
batch_cb (GObject      *source,
          GAsyncResult *res,
          gpointer      data)
{
  Result *r = data;
  guint i = (guint) (r - batch->r);

  result_cb (source, res, data);
  if (i != BATCH_ACT_AT)
    return;

  switch (batch->action)
    {
    case BATCH_SHUTDOWN:
      dc_detached_code_shutdown (batch->code);
      break;
    case BATCH_RESTART:
      dc_detached_code_restart (batch->code);
      break;
    case BATCH_UNREF:
      /* The calls' tasks keep it until the last callback has run. */
      g_clear_object (&batch->code);
      break;
    case BATCH_NOTHING:
    default:
      break;
    }
}

static void
test_pool_read_batch (gconstpointer data)
{
  g_autoptr(GArray) processes = NULL;
  guint i, n_ok = 0;

  batch = g_new0 (Batch, 1);
  batch->action = GPOINTER_TO_INT (data);
  batch->code = new_pool (1, 1);
  dc_detached_code_set_pipeline_depth (batch->code, BATCH_DEPTH);
  g_assert_true (dc_detached_code_start (batch->code, NULL));
  processes = dc_pool_list_processes (batch->code->pool);

  for (i = 0; i < BATCH_CALLS; i++)
    dc_detached_code_call_async (batch->code, cmd ("index", g_variant_new_int32 ((gint32) i)),
                                 G_PRIORITY_DEFAULT, NULL, batch_cb, &batch->r[i]);
  g_assert_cmpuint (dc_detached_code_get_n_queued (batch->code), ==, BATCH_CALLS - BATCH_DEPTH);
  /* Time for the worker to answer all it was given before the parent
   * reads any of it. */
  g_usleep (200 * G_TIME_SPAN_MILLISECOND);

  for (i = 0; i < BATCH_CALLS; i++)
    {
      gint32 index;

      wait_for_flag (&batch->r[i].done, "the batch's calls");
      g_assert_cmpuint (batch->r[i].times_called, ==, 1);
      if (batch->r[i].error != NULL)
        {
          /* Those answered in the read went to their callbacks with
           * their values; the pool failed the rest. */
          g_assert_cmpint (batch->action, ==, BATCH_SHUTDOWN);
          g_assert_error (batch->r[i].error, DC_DETACHED_CODE_ERROR,
                          DC_DETACHED_CODE_ERROR_SHUTDOWN);
          continue;
        }
      g_variant_get (batch->r[i].value, "(ii)", &index, NULL);
      g_assert_cmpint (index, ==, (gint32) i);
      /* Answered ones come first, and complete in call order: one
       * worker at a time. */
      g_assert_cmpuint (i, ==, n_ok);
      if (i > 0)
        g_assert_cmpuint (batch->r[i].order, >, batch->r[i - 1].order);
      n_ok++;
    }
  g_test_message ("%u of %u calls completed", n_ok, BATCH_CALLS);
  if (batch->action == BATCH_SHUTDOWN)
    g_assert_cmpuint (n_ok, >, BATCH_ACT_AT);
  else
    g_assert_cmpuint (n_ok, ==, BATCH_CALLS);

  /* Drained, no callback twice, and nothing left behind. */
  g_main_context_iteration (NULL, FALSE);
  for (i = 0; i < BATCH_CALLS; i++)
    {
      g_assert_cmpuint (batch->r[i].times_called, ==, 1);
      result_clear (&batch->r[i]);
    }
  if (batch->code != NULL)
    destroy_pool (batch->code);
  for (i = 0; i < processes->len; i++)
    assert_process_gone (g_array_index (processes, GPid, i));
  g_clear_pointer (&batch, g_free);
}

static void
test_properties (void)
{
  DcDetachedCode *code = dc_detached_code_new (test_code, NULL, NULL);
  guint min_w, max_w, n_w, notified = 0, n_workers_notified = 0;
  DcStream stream;
  DcMarshaller marshaller;
  DcSetupFlags flags;
  gboolean exit_on_die;

  g_object_get (code, "min-workers", &min_w, "max-workers", &max_w, "n-workers", &n_w,
                "stream", &stream, "marshaller", &marshaller, "setup-flags", &flags,
                "exit-on-die", &exit_on_die, NULL);
  g_assert_cmpuint (min_w, ==, 1);
  g_assert_cmpuint (max_w, ==, 1);
  g_assert_cmpuint (n_w, ==, 0);
  g_assert_cmpint (stream, ==, DC_STREAM_AUTO);
  g_assert_cmpint (marshaller, ==, DC_MARSHALLER_VARIANT);
  g_assert_cmpint (flags, ==, DC_SETUP_NONE);
  g_assert_false (exit_on_die);

  /* notify on change only */
  g_signal_connect (code, "notify::max-workers", G_CALLBACK (count_notify), &notified);
  g_signal_connect (code, "notify::n-workers", G_CALLBACK (count_notify), &n_workers_notified);
  dc_detached_code_set_max_workers (code, 4);
  dc_detached_code_set_max_workers (code, 4);
  g_assert_cmpuint (notified, ==, 1);
  g_assert_cmpuint (dc_detached_code_get_max_workers (code), ==, 4);
  dc_detached_code_set_min_workers (code, 2);
  g_assert_cmpuint (dc_detached_code_get_min_workers (code), ==, 2);
  dc_detached_code_set_exit_on_die (code, TRUE);
  g_assert_true (dc_detached_code_get_exit_on_die (code));
  dc_detached_code_set_setup_flags (code, DC_SETUP_SILENCE_STDERR);
  g_assert_cmpint (dc_detached_code_get_setup_flags (code), ==, DC_SETUP_SILENCE_STDERR);

  g_assert_true (dc_detached_code_start (code, NULL));
  g_assert_cmpuint (n_workers_notified, ==, 2);

  /* These may not change while workers run. */
  g_test_expect_message (G_LOG_DOMAIN == NULL ? NULL : "DetachedCode", G_LOG_LEVEL_CRITICAL,
                         "*no worker runs*");
  dc_detached_code_set_stream (code, DC_STREAM_PIPE);
  g_test_assert_expected_messages ();
  g_assert_cmpint (dc_detached_code_get_stream (code), ==, DC_STREAM_AUTO);

  destroy_pool (code);
}

static void
test_stream_pipe (void)
{
  DcDetachedCode *code = new_pool (1, 2);
  Result r[50] = { { 0, }, };
  guint i;

  dc_detached_code_set_stream (code, DC_STREAM_PIPE);
  g_assert_cmpint (dc_detached_code_get_stream (code), ==, DC_STREAM_PIPE);
  for (i = 0; i < 50; i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &r[i]);
  for (i = 0; i < 50; i++)
    {
      gint32 index, pid;

      wait_for_flag (&r[i].done, "calls over pipes");
      g_assert_no_error (r[i].error);
      g_variant_get (r[i].value, "(ii)", &index, &pid);
      g_assert_cmpint (index, ==, (gint32) i);
      result_clear (&r[i]);
    }
  destroy_pool (code);

  /* A death is seen over pipes as well. */
  code = new_pool (1, 1);
  dc_detached_code_set_stream (code, DC_STREAM_PIPE);
  check_worker_died (code, cmd ("segv", NULL), "signal 11");
  destroy_pool (code);
}

/* ---- max-workers bounds the processes, not only the count ---- */

typedef struct
{
  DcDetachedCode *code;
  GArray         *before;      /* children that were there already */
  GHashTable     *pids;        /* of the workers that answered */
  guint           n_done;
  guint           n_ok;
  guint           most_alive;  /* worker processes seen at once */
} Bound;

/* Workers alive or not yet reaped: every child that is not the template
 * (nor older than the pool). */
static guint
count_worker_processes (Bound *b)
{
  g_autoptr(GArray) children = list_children ();
  GPid template = dc_launcher_get_template_pid (dc_pool_get_launcher (b->code->pool));
  guint i, j, n = 0;

  for (i = 0; i < children->len; i++)
    {
      GPid pid = g_array_index (children, GPid, i);
      gboolean old = FALSE;

      for (j = 0; j < b->before->len; j++)
        old = old || g_array_index (b->before, GPid, j) == pid;
      if (pid != template && !old)
        n++;
    }
  return n;
}

static void
bound_cb (GObject      *source,
          GAsyncResult *res,
          gpointer      data)
{
  Bound *b = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), res, &error);

  g_assert_no_error (error);
  if (value != NULL)
    {
      gint32 pid;

      g_variant_get (value, "(i)", &pid);
      g_hash_table_add (b->pids, GINT_TO_POINTER (pid));
      b->n_ok++;
    }
  b->n_done++;
  b->most_alive = MAX (b->most_alive, count_worker_processes (b));
}

static gboolean
bound_done (gpointer data)
{
  return ((Bound *) data)->n_done == 200;
}

static void
test_pool_max_workers_bound (void)
{
  Bound b = { new_pool (1, 2), list_children (), g_hash_table_new (NULL, NULL), 0, 0, 0 };
  guint i;

  /* Each worker answers once and leaves; the next may be forked only once
   * the one it replaces is reaped, or the processes would pile up. */
  dc_detached_code_set_max_worker_calls (b.code, 1);
  for (i = 0; i < 200; i++)
    dc_detached_code_call_async (b.code, cmd ("sleep", g_variant_new_int32 (2)), G_PRIORITY_DEFAULT,
                                 NULL, bound_cb, &b);
  g_assert_cmpuint (count_worker_processes (&b), <=, 2);
  wait_until (bound_done, &b, "200 calls, a worker each");

  g_test_message ("at most %u worker processes at once", b.most_alive);
  g_assert_cmpuint (b.n_ok, ==, 200);
  g_assert_cmpuint (g_hash_table_size (b.pids), ==, 200);
  g_assert_cmpuint (b.most_alive, >=, 1);
  g_assert_cmpuint (b.most_alive, <=, 2);
  g_hash_table_unref (b.pids);
  g_array_unref (b.before);
  destroy_pool (b.code);
}

/* ---- a host that ignores SIGCHLD ---- */


static void
check_exit_status (gboolean fork_server)
{
  DcDetachedCode *code = new_pool (1, 1);
  Exited e = { 0, };
  Result r = { 0, };
  GPid pid;

  dc_detached_code_set_fork_server (code, fork_server);
  g_signal_connect (code, "worker-exited", G_CALLBACK (on_worker_exited), &e);
  pid = call_pid (code);
  call_sync (code, cmd ("exit", g_variant_new_int32 (3)), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_test_message ("%s", r.error->message);
  g_assert_nonnull (strstr (r.error->message, "status 3"));
  g_assert_cmpuint (e.n, ==, 1);
  g_assert_cmpint (e.pid, ==, pid);
  g_assert_true (WIFEXITED (e.status));
  g_assert_cmpint (WEXITSTATUS (e.status), ==, 3);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_worker_exit_sigchld_ignored (void)
{
  /* SIG_IGN for SIGCHLD makes the kernel reap children that signal their
   * exit, their status lost: a worker must not be one of them. */
  if (g_test_subprocess ())
    {
      g_log_set_writer_func (tolerate_threads_warning, NULL, NULL);
      signal (SIGCHLD, SIG_IGN);
      check_exit_status (FALSE);
      check_exit_status (TRUE);
      return;
    }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
  g_test_trap_assert_passed ();
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/pool/start", test_pool_start);
  g_test_add_func ("/detached-code/pool/lazy-start", test_pool_lazy_start);
  g_test_add_func ("/detached-code/pool/grow", test_pool_grow);
  g_test_add_func ("/detached-code/pool/parent-death", test_pool_parent_death);
  g_test_add_func ("/detached-code/pool/inert-in-worker", test_pool_inert_in_worker);
  g_test_add_func ("/detached-code/pool/inert-after-fork", test_pool_inert_after_fork);
  g_test_add_func ("/detached-code/worker/crash", test_worker_crash);
  g_test_add_func ("/detached-code/worker/exit", test_worker_exit);
  g_test_add_func ("/detached-code/worker/killed", test_worker_killed);
  g_test_add_func ("/detached-code/worker/queued-behind-death", test_worker_queued_behind_death);
  g_test_add_func ("/detached-code/worker/exit-on-die", test_worker_exit_on_die);
  g_test_add_func ("/detached-code/worker/exit-sigchld-ignored", test_worker_exit_sigchld_ignored);
  g_test_add_func ("/detached-code/shutdown/pending", test_shutdown_pending);
  g_test_add_func ("/detached-code/shutdown/finalize", test_shutdown_finalize);
  g_test_add_func ("/detached-code/shutdown/callback-reenters", test_shutdown_callback_reenters);
  g_test_add_func ("/detached-code/stream/pipe", test_stream_pipe);
  g_test_add_func ("/detached-code/properties", test_properties);
  g_test_add_func ("/detached-code/pool/idle-timeout", test_pool_idle_timeout);
  g_test_add_func ("/detached-code/pool/max-worker-calls", test_pool_max_worker_calls);
  g_test_add_func ("/detached-code/pool/restart", test_pool_restart);
  g_test_add_func ("/detached-code/pool/stats", test_pool_stats);
  g_test_add_func ("/detached-code/pool/signals", test_pool_signals);
  g_test_add_func ("/detached-code/pool/pipeline", test_pool_pipeline);
  g_test_add_func ("/detached-code/pool/pipeline-prefers-idle", test_pool_pipeline_prefers_idle);
  g_test_add_func ("/detached-code/pool/max-workers-bound", test_pool_max_workers_bound);
  g_test_add_data_func ("/detached-code/pool/read-batch/complete",
                        GINT_TO_POINTER (BATCH_NOTHING), test_pool_read_batch);
  g_test_add_data_func ("/detached-code/pool/read-batch/shutdown",
                        GINT_TO_POINTER (BATCH_SHUTDOWN), test_pool_read_batch);
  g_test_add_data_func ("/detached-code/pool/read-batch/restart",
                        GINT_TO_POINTER (BATCH_RESTART), test_pool_read_batch);
  g_test_add_data_func ("/detached-code/pool/read-batch/unref",
                        GINT_TO_POINTER (BATCH_UNREF), test_pool_read_batch);

  return g_test_run ();
}
