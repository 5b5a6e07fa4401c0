/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The pool, end to end: real workers, real fork(). */

#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include <detached-code.h>

#include "dc-wire-private.h"

/* Generous: the machine may be loaded.  A hang fails, it never blocks CI. */
#define DEADLINE_SECONDS 90

static gboolean
deadline_cb (gpointer data)
{
  g_error ("Test timed out waiting for %s", (const char *) data);
  return G_SOURCE_REMOVE;
}

/* Runs the default context until *@flag is TRUE. */
static void
wait_for_flag (gboolean   *flag,
               const char *what)
{
  guint id = g_timeout_add_seconds (DEADLINE_SECONDS, deadline_cb, (gpointer) what);

  while (!*flag)
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (id);
}

static gboolean
tick_cb (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

/* Runs the default context until @check returns TRUE. */
static void
wait_until (gboolean  (*check) (gpointer),
            gpointer    data,
            const char *what)
{
  guint id = g_timeout_add_seconds (DEADLINE_SECONDS, deadline_cb, (gpointer) what);
  guint tick = g_timeout_add (10, tick_cb, NULL);

  while (!check (data))
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (tick);
  g_source_remove (id);
}

static gboolean
process_gone (gpointer data)
{
  /* Reaped processes vanish; a zombie would still answer kill(). */
  return kill (GPOINTER_TO_INT (data), 0) < 0 && errno == ESRCH;
}

static void
assert_process_gone (GPid pid)
{
  wait_until (process_gone, GINT_TO_POINTER (pid), "a worker to be reaped");
}

/* ---- the code the workers run ---- */

static int init_runs;   /* set in each worker by its init function */
static int parent_state = 1;   /* changed in the parent, seen by workers forked after */

static void
worker_init (gpointer user_data)
{
  init_runs++;
}

static GVariant *
list_fds (void)
{
  GVariantBuilder builder;
  DIR *dir = opendir ("/proc/self/fd");
  struct dirent *entry;

  g_variant_builder_init (&builder, G_VARIANT_TYPE ("ai"));
  while ((entry = readdir (dir)) != NULL)
    {
      int fd;

      if (entry->d_name[0] == '.')
        continue;
      fd = atoi (entry->d_name);
      if (fd != dirfd (dir))
        g_variant_builder_add (&builder, "i", fd);
    }
  closedir (dir);
  return g_variant_builder_end (&builder);
}

static char *
fd_target (int fd)
{
  g_autofree char *path = g_strdup_printf ("/proc/self/fd/%d", fd);
  char *target = g_file_read_link (path, NULL);

  return target ? target : g_strdup ("");
}

static int
highest_fd (void)
{
  g_autoptr(GVariant) fds = g_variant_ref_sink (list_fds ());
  gsize i, n = g_variant_n_children (fds);
  int top = -1;

  for (i = 0; i < n; i++)
    {
      gint32 fd;
      g_variant_get_child (fds, i, "i", &fd);
      top = MAX (top, fd);
    }
  return top;
}

/* Arguments are (s v): a command and its argument. */
static GVariant *
test_code (GVariant  *args,
           gpointer   user_data,
           GError   **error)
{
  const char *command;
  g_autoptr(GVariant) arg = NULL;

  if (!g_variant_is_of_type (args, G_VARIANT_TYPE ("(sv)")))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "bad args %s",
                   g_variant_get_type_string (args));
      return NULL;
    }
  g_variant_get (args, "(&sv)", &command, &arg);

  if (g_str_equal (command, "echo"))
    return g_variant_new ("(v)", arg);
  if (g_str_equal (command, "pid"))
    return g_variant_new ("(i)", (gint32) getpid ());
  if (g_str_equal (command, "index"))
    return g_variant_new ("(ii)", g_variant_get_int32 (arg), (gint32) getpid ());
  if (g_str_equal (command, "sleep"))
    {
      g_usleep (g_variant_get_int32 (arg) * G_TIME_SPAN_MILLISECOND);
      return g_variant_new ("(i)", (gint32) getpid ());
    }
  if (g_str_equal (command, "error"))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "not found: %s",
                   g_variant_get_string (arg, NULL));
      return NULL;
    }
  if (g_str_equal (command, "custom-error"))
    {
      g_set_error_literal (error, g_quark_from_static_string ("dc-test-custom-error-quark"),
                           g_variant_get_int32 (arg), "custom failure");
      return NULL;
    }
  if (g_str_equal (command, "null"))
    return NULL;
  if (g_str_equal (command, "segv"))
    {
      /* A real fault, without undefined behaviour for the sanitizers. */
      raise (SIGSEGV);
      return NULL;
    }
  if (g_str_equal (command, "exit"))
    _exit (g_variant_get_int32 (arg));
  if (g_str_equal (command, "fds"))
    return g_variant_new ("(@ai)", list_fds ());
  if (g_str_equal (command, "stdio"))
    {
      g_autofree char *in = fd_target (0);
      g_autofree char *out = fd_target (1);
      g_autofree char *err = fd_target (2);
      return g_variant_new ("(sss)", in, out, err);
    }
  if (g_str_equal (command, "getenv"))
    return g_variant_new ("(ms)", g_getenv (g_variant_get_string (arg, NULL)));
  if (g_str_equal (command, "cwd"))
    {
      g_autofree char *cwd = g_get_current_dir ();
      return g_variant_new ("(s)", cwd);
    }
  if (g_str_equal (command, "parent-state"))
    return g_variant_new ("(ii)", parent_state, (gint32) getpid ());
  if (g_str_equal (command, "init-runs"))
    return g_variant_new ("(i)", init_runs);
  if (g_str_equal (command, "signals"))
    {
      struct sigaction usr1, chld;
      sigset_t mask;

      sigaction (SIGUSR1, NULL, &usr1);
      sigaction (SIGCHLD, NULL, &chld);
      sigprocmask (SIG_SETMASK, NULL, &mask);
      return g_variant_new ("(bbb)", usr1.sa_handler == SIG_DFL, chld.sa_handler == SIG_DFL,
                            !sigismember (&mask, SIGUSR2) && !sigismember (&mask, SIGTERM));
    }
  if (g_str_equal (command, "garbage"))
    {
      /* Writes nonsense on its own channel (the highest descriptor), then
       * answers properly: the parent must not believe the answer. */
      guint8 junk[DC_WIRE_HEADER_SIZE];
      int fd = highest_fd ();

      memset (junk, 0xab, sizeof junk);
      g_assert_cmpint (write (fd, junk, sizeof junk), ==, sizeof junk);
      return g_variant_new ("()");
    }
  if (g_str_equal (command, "oversized"))
    {
      guint8 header[DC_WIRE_HEADER_SIZE];
      DcWireHeader h = { .size = G_MAXUINT32, .type = DC_WIRE_RESULT };
      int fd = highest_fd ();

      memcpy (header, &h, sizeof h);
      g_assert_cmpint (write (fd, header, sizeof header), ==, sizeof header);
      g_usleep (G_USEC_PER_SEC * 30);   /* the parent kills us before this ends */
      return g_variant_new ("()");
    }
  if (g_str_equal (command, "big"))
    {
      gsize n = (gsize) g_variant_get_int32 (arg);
      guint8 *data = g_malloc (n);
      gsize i;

      for (i = 0; i < n; i++)
        data[i] = (guint8) (i * 31);
      return g_variant_new ("(@ay)", g_variant_new_from_data (G_VARIANT_TYPE_BYTESTRING, data, n,
                                                               TRUE, g_free, data));
    }
  if (g_str_equal (command, "touch"))
    {
      g_assert_true (g_file_set_contents (g_variant_get_string (arg, NULL), "", 0, NULL));
      return g_variant_new ("()");
    }
  if (g_str_equal (command, "shutdown-copy"))
    {
      /* user_data is another pool, copied into this worker. */
      DcDetachedCode *other = user_data;

      dc_detached_code_shutdown (other);
      g_object_run_dispose (G_OBJECT (other));
      return g_variant_new ("()");
    }

  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "unknown command %s", command);
  return NULL;
}

static GVariant *
cmd (const char *command,
     GVariant   *arg)
{
  return g_variant_new ("(sv)", command, arg ? arg : g_variant_new ("()"));
}

/* ---- collecting results ---- */

typedef struct
{
  GVariant *value;
  GError   *error;
  gboolean  done;
  guint     order;        /* completion rank */
  guint     n_workers_at_callback;
  guint     times_called;
} Result;

static guint completion_counter;

static void
result_clear (Result *r)
{
  g_clear_pointer (&r->value, g_variant_unref);
  g_clear_error (&r->error);
  memset (r, 0, sizeof *r);
}

static void
result_cb (GObject      *source,
           GAsyncResult *res,
           gpointer      user_data)
{
  Result *r = user_data;

  r->times_called++;
  g_assert_false (r->done);
  r->value = dc_detached_code_call_finish (DC_DETACHED_CODE (source), res, &r->error);
  g_assert_true ((r->value == NULL) != (r->error == NULL));
  r->order = completion_counter++;
  r->n_workers_at_callback = dc_detached_code_get_n_workers (DC_DETACHED_CODE (source));
  r->done = TRUE;
}

static void
call (DcDetachedCode *code,
      GVariant       *args,
      Result         *r)
{
  dc_detached_code_call_async (code, args, G_PRIORITY_DEFAULT, NULL, result_cb, r);
}

/* One call, waited for. */
static void
call_sync (DcDetachedCode *code,
           GVariant       *args,
           Result         *r)
{
  call (code, args, r);
  wait_for_flag (&r->done, "a call");
}

static GPid
call_pid (DcDetachedCode *code)
{
  Result r = { 0, };
  gint32 pid;

  call_sync (code, cmd ("pid", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(i)", &pid);
  result_clear (&r);
  return pid;
}

static DcDetachedCode *
new_pool (guint min_workers,
          guint max_workers)
{
  DcDetachedCode *code = dc_detached_code_new (test_code, NULL, NULL);

  g_object_set (code, "min-workers", min_workers, "max-workers", max_workers, NULL);
  return code;
}

/* Shuts down and waits until every worker is reaped. */
static void
destroy_pool (DcDetachedCode *code)
{
  g_autofree GPid *pids = NULL;
  guint n = 0, i;

  pids = dc_detached_code_get_worker_pids (code, &n);
  g_object_unref (code);
  for (i = 0; i < n; i++)
    assert_process_gone (pids[i]);
}

/* ---- tests ---- */

static GVariant *
is_prime (GVariant  *args,
          gpointer   user_data,
          GError   **error)
{
  guint64 n, d;

  g_variant_get (args, "(t)", &n);
  for (d = 2; d <= n / d; d++)
    if (n % d == 0)
      return g_variant_new ("(b)", FALSE);
  return g_variant_new ("(b)", n >= 2);
}

static void
test_call_basic (void)
{
  DcDetachedCode *code = dc_detached_code_new (is_prime, NULL, NULL);
  Result r = { 0, }, r2 = { 0, };
  gboolean prime = TRUE;

  call_sync (code, g_variant_new ("(t)", G_GUINT64_CONSTANT (123454321)), &r);
  g_assert_no_error (r.error);
  g_assert_cmpstr (g_variant_get_type_string (r.value), ==, "(b)");
  g_variant_get (r.value, "(b)", &prime);
  g_assert_false (prime);   /* 11111 squared */

  call_sync (code, g_variant_new ("(t)", G_GUINT64_CONSTANT (1000003)), &r2);
  g_variant_get (r2.value, "(b)", &prime);
  g_assert_true (prime);
  g_assert_cmpuint (r.times_called + r2.times_called, ==, 2);

  result_clear (&r);
  result_clear (&r2);
  destroy_pool (code);
}

static void
test_call_not_before_return (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };

  /* Even an argument that fails at once completes only from the loop. */
  dc_detached_code_set_marshaller (code, DC_MARSHALLER_FLAT);
  call (code, g_variant_new ("(i)", 1), &r);
  g_assert_false (r.done);
  wait_for_flag (&r.done, "a refused call");
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  result_clear (&r);

  dc_detached_code_set_marshaller (code, DC_MARSHALLER_VARIANT);
  g_assert_true (dc_detached_code_start (code, NULL));
  call (code, cmd ("pid", NULL), &r);
  g_assert_false (r.done);
  wait_for_flag (&r.done, "a call");
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_call_args_serialized (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };
  g_autofree char *buffer = g_strdup ("before");
  GVariant *arg = g_variant_new_from_data (G_VARIANT_TYPE_STRING, buffer, strlen (buffer) + 1,
                                           FALSE, NULL, NULL);
  const char *seen;

  /* Floating: the pool sinks it.  Changed right after the call: the
   * worker still sees what was passed. */
  call (code, cmd ("echo", arg), &r);
  memcpy (buffer, "AFTER!", 6);
  wait_for_flag (&r.done, "a call");
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(v)", &arg);
  seen = g_variant_get_string (arg, NULL);
  g_assert_cmpstr (seen, ==, "before");
  g_variant_unref (arg);
  result_clear (&r);
  destroy_pool (code);
}

static GVariant *
return_args (GVariant  *args,
             gpointer   user_data,
             GError   **error)
{
  return g_variant_ref (args);
}

static void
test_call_null_args (void)
{
  DcDetachedCode *code = dc_detached_code_new (return_args, NULL, NULL);
  Result r = { 0, };

  call_sync (code, NULL, &r);
  g_assert_no_error (r.error);
  g_assert_cmpstr (g_variant_get_type_string (r.value), ==, "()");
  result_clear (&r);
  destroy_pool (code);
}

static void
test_call_order_one_worker (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result results[200] = { { 0, }, };
  guint i, previous_order = 0;

  for (i = 0; i < G_N_ELEMENTS (results); i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &results[i]);
  wait_for_flag (&results[G_N_ELEMENTS (results) - 1].done, "the last call");

  for (i = 0; i < G_N_ELEMENTS (results); i++)
    {
      gint32 index, pid;

      g_assert_true (results[i].done);
      g_assert_no_error (results[i].error);
      g_variant_get (results[i].value, "(ii)", &index, &pid);
      g_assert_cmpint (index, ==, (gint32) i);
      if (i > 0)
        g_assert_cmpuint (results[i].order, ==, previous_order + 1);
      previous_order = results[i].order;
      result_clear (&results[i]);
    }
  destroy_pool (code);
}

static void
test_call_priority (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result blocker = { 0, };
  Result r[6] = { { 0, }, };
  int priorities[6] = { G_PRIORITY_LOW, G_PRIORITY_DEFAULT, G_PRIORITY_HIGH,
                        G_PRIORITY_DEFAULT, G_PRIORITY_HIGH, G_PRIORITY_LOW };
  /* expected completion: HIGH(2), HIGH(4), DEFAULT(1), DEFAULT(3), LOW(0), LOW(5) */
  guint expected[6] = { 2, 4, 1, 3, 0, 5 };
  guint i;

  g_assert_true (dc_detached_code_start (code, NULL));
  /* Occupy the only worker so the rest queue up. */
  call (code, cmd ("sleep", g_variant_new_int32 (300)), &blocker);
  for (i = 0; i < 6; i++)
    dc_detached_code_call_async (code, cmd ("index", g_variant_new_int32 ((gint32) i)),
                                 priorities[i], NULL, result_cb, &r[i]);
  for (i = 0; i < 6; i++)
    wait_for_flag (&r[i].done, "prioritised calls");

  for (i = 0; i < 6; i++)
    {
      g_assert_no_error (r[expected[i]].error);
      g_assert_cmpuint (r[expected[i]].order, ==, blocker.order + 1 + i);
    }
  result_clear (&blocker);
  for (i = 0; i < 6; i++)
    result_clear (&r[i]);
  destroy_pool (code);
}

static void
test_call_many (void)
{
  const guint n_calls = 10000;
  DcDetachedCode *code = new_pool (1, 3);
  Result *results = g_new0 (Result, n_calls);
  g_autoptr(GHashTable) pids = g_hash_table_new (NULL, NULL);
  guint i, n_pids = 0;
  g_autofree GPid *worker_pids = NULL;

  for (i = 0; i < n_calls; i++)
    call (code, cmd ("index", g_variant_new_int32 ((gint32) i)), &results[i]);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), <=, 3);

  for (i = 0; i < n_calls; i++)
    wait_for_flag (&results[i].done, "many calls");

  worker_pids = dc_detached_code_get_worker_pids (code, &n_pids);
  for (i = 0; i < n_calls; i++)
    {
      gint32 index, pid;

      /* Exactly once each, with its own answer. */
      g_assert_cmpuint (results[i].times_called, ==, 1);
      g_assert_no_error (results[i].error);
      g_variant_get (results[i].value, "(ii)", &index, &pid);
      g_assert_cmpint (index, ==, (gint32) i);
      g_assert_cmpint (pid, !=, getpid ());
      g_hash_table_add (pids, GINT_TO_POINTER (pid));
      result_clear (&results[i]);
    }
  g_assert_cmpuint (g_hash_table_size (pids), <=, 3);
  g_assert_cmpuint (g_hash_table_size (pids), >=, 1);
  g_assert_cmpuint (n_pids, ==, dc_detached_code_get_n_workers (code));
  g_free (results);
  destroy_pool (code);
}

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

static void
test_error_round_trip (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };

  call_sync (code, cmd ("error", g_variant_new_string ("the key")), &r);
  g_assert_null (r.value);
  g_assert_error (r.error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_cmpstr (r.error->message, ==, "not found: the key");
  result_clear (&r);

  /* A domain the parent never registered arrives by its name. */
  call_sync (code, cmd ("custom-error", g_variant_new_int32 (17)), &r);
  g_assert_cmpstr (g_quark_to_string (r.error->domain), ==, "dc-test-custom-error-quark");
  g_assert_cmpint (r.error->code, ==, 17);
  g_assert_cmpstr (r.error->message, ==, "custom failure");
  result_clear (&r);

  /* The worker survives its code's errors. */
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 1);
  destroy_pool (code);
}

static void
test_error_failed (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };

  call_sync (code, cmd ("null", NULL), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED);
  g_assert_nonnull (strstr (r.error->message, "no value"));
  result_clear (&r);
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

static GVariant *
flat_code (GVariant  *args,
           gpointer   user_data,
           GError   **error)
{
  const char *first = NULL;

  if (g_variant_n_children (args) > 0)
    g_variant_get_child (args, 0, "&s", &first);
  if (g_strcmp0 (first, "int") == 0)
    return g_variant_new ("(i)", 3);
  return g_variant_ref (args);
}

static void
test_marshal_flat (void)
{
  DcDetachedCode *code = dc_detached_code_new (flat_code, NULL, NULL);
  Result r = { 0, };
  g_autoptr(GVariant) args = NULL;

  dc_detached_code_set_marshaller (code, DC_MARSHALLER_FLAT);
  g_assert_cmpint (dc_detached_code_get_marshaller (code), ==, DC_MARSHALLER_FLAT);

  /* g_variant_parse() returns a full reference, not a floating one. */
  args = g_variant_parse (G_VARIANT_TYPE ("(smss)"), "('hello', @ms nothing, 'wörld')",
                          NULL, NULL, NULL);
  call_sync (code, args, &r);
  g_assert_no_error (r.error);
  g_assert_true (g_variant_equal (r.value, args));
  result_clear (&r);

  /* Refused going out... */
  call_sync (code, g_variant_new ("(si)", "x", 1), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  g_assert_nonnull (strstr (r.error->message, "(si)"));
  result_clear (&r);

  /* ...and coming back. */
  call_sync (code, g_variant_new ("(s)", "int"), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  g_assert_nonnull (strstr (r.error->message, "(i)"));
  result_clear (&r);

  /* The worker that could not send its result still serves. */
  call_sync (code, g_variant_new ("(s)", "again"), &r);
  g_assert_no_error (r.error);
  result_clear (&r);
  destroy_pool (code);
}

static void
test_marshal_variant_large (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };
  g_autoptr(GVariant) inner = NULL;
  g_autoptr(GVariant) bytes = NULL;
  const guint8 *data;
  gsize n, i;

  call_sync (code, cmd ("big", g_variant_new_int32 (5 << 20)), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(@ay)", &bytes);
  data = g_variant_get_fixed_array (bytes, &n, 1);
  g_assert_cmpuint (n, ==, 5 << 20);
  for (i = 0; i < n; i += 4099)
    g_assert_cmpuint (data[i], ==, (guint8) (i * 31));

  /* And the same bytes out and back. */
  result_clear (&r);
  call_sync (code, cmd ("echo", bytes), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(v)", &inner);
  g_assert_true (g_variant_equal (inner, bytes));
  result_clear (&r);
  destroy_pool (code);
}

static void
check_stdio (DcSetupFlags flags)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };
  const char *in, *out, *err;
  g_autofree char *parent_in = fd_target (0);
  g_autofree char *parent_out = fd_target (1);
  g_autofree char *parent_err = fd_target (2);

  dc_detached_code_set_setup_flags (code, flags);
  call_sync (code, cmd ("stdio", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(&s&s&s)", &in, &out, &err);

  if (flags & DC_SETUP_INHERIT_STDIN)
    g_assert_cmpstr (in, ==, parent_in);
  else
    g_assert_cmpstr (in, ==, "/dev/null");
  if (flags & DC_SETUP_INHERIT_STDOUT)
    g_assert_cmpstr (out, ==, parent_out);
  else
    g_assert_cmpstr (out, ==, "/dev/null");
  if (flags & DC_SETUP_SILENCE_STDERR)
    g_assert_cmpstr (err, ==, "/dev/null");
  else
    g_assert_cmpstr (err, ==, parent_err);

  result_clear (&r);
  destroy_pool (code);
}

static void
test_setup_stdio (void)
{
  check_stdio (DC_SETUP_NONE);
  check_stdio (DC_SETUP_INHERIT_STDIN | DC_SETUP_INHERIT_STDOUT);
  check_stdio (DC_SETUP_SILENCE_STDERR);
}

static void
check_fds (DcStream stream)
{
  DcDetachedCode *code = new_pool (3, 3);
  int extra[2];
  int file_fd;
  guint i;

  /* Descriptors the parent holds, some without close-on-exec. */
  g_assert_cmpint (pipe (extra), ==, 0);
  file_fd = open ("/dev/zero", O_RDONLY);
  g_assert_cmpint (file_fd, >=, 0);

  dc_detached_code_set_stream (code, stream);
  g_assert_true (dc_detached_code_start (code, NULL));

  for (i = 0; i < 3; i++)
    {
      Result r = { 0, };
      g_autoptr(GVariant) fds = NULL;
      gsize n, j;
      guint n_channel = 0;

      call_sync (code, cmd ("fds", NULL), &r);
      g_assert_no_error (r.error);
      g_variant_get (r.value, "(@ai)", &fds);
      n = g_variant_n_children (fds);
      for (j = 0; j < n; j++)
        {
          gint32 fd;

          g_variant_get_child (fds, j, "i", &fd);
          if (fd <= 2)
            continue;
          /* Anything else is the worker's own channel, kept high. */
          g_assert_cmpint (fd, >, 100);
          n_channel++;
        }
      g_assert_cmpuint (n_channel, ==, stream == DC_STREAM_PIPE ? 2 : 1);
      g_assert_cmpuint (n, ==, 3 + n_channel);
      result_clear (&r);
    }

  close (extra[0]);
  close (extra[1]);
  close (file_fd);
  destroy_pool (code);
}

static void
test_setup_fds_socket (void)
{
  check_fds (DC_STREAM_SOCKET);
}

static void
test_setup_fds_pipe (void)
{
  check_fds (DC_STREAM_PIPE);
}

static char *
worker_getenv (DcDetachedCode *code,
               const char     *name)
{
  Result r = { 0, };
  char *value = NULL;

  call_sync (code, cmd ("getenv", g_variant_new_string (name)), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(ms)", &value);
  result_clear (&r);
  return value;
}

static void
test_setup_env (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  g_autofree char *a = NULL, *b = NULL, *c = NULL, *home = NULL;

  g_setenv ("DC_TEST_KEPT", "parent", TRUE);
  g_setenv ("DC_TEST_GONE", "parent", TRUE);
  dc_detached_code_setenv (code, "DC_TEST_NEW", "worker", FALSE);
  dc_detached_code_setenv (code, "DC_TEST_KEPT", "worker", FALSE);
  dc_detached_code_unsetenv (code, "DC_TEST_GONE");

  a = worker_getenv (code, "DC_TEST_NEW");
  b = worker_getenv (code, "DC_TEST_KEPT");
  c = worker_getenv (code, "DC_TEST_GONE");
  home = worker_getenv (code, "PATH");
  g_assert_cmpstr (a, ==, "worker");
  g_assert_cmpstr (b, ==, "parent");   /* overwrite = FALSE */
  g_assert_null (c);
  g_assert_cmpstr (home, ==, g_getenv ("PATH"));

  /* The parent's own environment is untouched. */
  g_assert_null (g_getenv ("DC_TEST_NEW"));
  g_assert_cmpstr (g_getenv ("DC_TEST_GONE"), ==, "parent");
  g_unsetenv ("DC_TEST_KEPT");
  g_unsetenv ("DC_TEST_GONE");
  destroy_pool (code);
}

static void
test_setup_cwd (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  g_autofree char *before = g_get_current_dir ();
  g_autofree char *after = NULL;
  g_autofree char *dir = g_dir_make_tmp ("dc-test-XXXXXX", NULL);
  g_autofree char *real_dir = realpath (dir, NULL);
  g_autoptr(GError) error = NULL;
  Result r = { 0, };
  const char *seen;

  dc_detached_code_set_cwd (code, dir);
  g_assert_cmpstr (dc_detached_code_get_cwd (code), ==, dir);
  call_sync (code, cmd ("cwd", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(&s)", &seen);
  g_assert_cmpstr (seen, ==, real_dir);
  result_clear (&r);
  after = g_get_current_dir ();
  g_assert_cmpstr (before, ==, after);
  dc_detached_code_shutdown (code);

  /* A directory that is not there: the pool cannot start, and says so. */
  g_rmdir (dir);
  g_assert_false (dc_detached_code_start (code, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);
  g_assert_nonnull (strstr (error->message, dir));
  call_sync (code, cmd ("cwd", NULL), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);
  result_clear (&r);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  g_object_unref (code);
}

static guint init_destroyed;

static void
init_data_free (gpointer data)
{
  init_destroyed++;
}

static void
test_setup_init_func (void)
{
  DcDetachedCode *code = new_pool (2, 2);
  guint i;

  init_runs = 0;
  dc_detached_code_set_worker_init_func (code, worker_init, NULL, init_data_free);
  g_assert_true (dc_detached_code_start (code, NULL));

  /* Once per worker, before its first call, and never in the parent. */
  for (i = 0; i < 6; i++)
    {
      Result r = { 0, };
      gint32 runs;

      call_sync (code, cmd ("init-runs", NULL), &r);
      g_variant_get (r.value, "(i)", &runs);
      g_assert_cmpint (runs, ==, 1);
      result_clear (&r);
    }
  g_assert_cmpint (init_runs, ==, 0);
  destroy_pool (code);
  g_assert_cmpuint (init_destroyed, ==, 1);
}

static void
noop_handler (int sig)
{
}

static void
test_setup_signals (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  struct sigaction action = { 0, }, old_usr1;
  sigset_t block, old_mask;
  Result r = { 0, };
  gboolean usr1_default, chld_default, unmasked;

  /* The host has a handler and a blocked signal; workers have neither. */
  action.sa_handler = noop_handler;
  sigaction (SIGUSR1, &action, &old_usr1);
  sigemptyset (&block);
  sigaddset (&block, SIGUSR2);
  sigprocmask (SIG_BLOCK, &block, &old_mask);

  call_sync (code, cmd ("signals", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(bbb)", &usr1_default, &chld_default, &unmasked);
  g_assert_true (usr1_default);
  g_assert_true (chld_default);
  g_assert_true (unmasked);

  sigprocmask (SIG_SETMASK, &old_mask, NULL);
  sigaction (SIGUSR1, &old_usr1, NULL);
  result_clear (&r);
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
check_protocol_error (const char *command)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, };
  GPid pid = call_pid (code);

  call_sync (code, cmd (command, NULL), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_test_message ("%s", r.error->message);
  result_clear (&r);
  /* The liar is killed and reaped; the pool carries on. */
  assert_process_gone (pid);
  g_assert_cmpint (call_pid (code), !=, pid);
  destroy_pool (code);
}

static void
test_protocol_garbage (void)
{
  check_protocol_error ("garbage");
}

static void
test_protocol_oversized (void)
{
  check_protocol_error ("oversized");
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

static void
test_spawn_error (void)
{
  if (g_test_subprocess ())
    {
      DcDetachedCode *code = new_pool (1, 1);
      g_autoptr(GError) error = NULL;
      struct rlimit rl, saved;
      Result r = { 0, };
      g_autoptr(GArray) fillers = g_array_new (FALSE, FALSE, sizeof (int));
      guint i;
      int top, fd;

      /* GLib's own descriptors first (the main context's wake-up). */
      g_main_context_iteration (NULL, FALSE);
      top = highest_fd ();

      /* Fill every free number under a low limit, then free one: room for
       * one descriptor, not for a channel, so socketpair() fails. */
      g_assert_cmpint (getrlimit (RLIMIT_NOFILE, &saved), ==, 0);
      rl.rlim_cur = (rlim_t) top + 8;
      rl.rlim_max = saved.rlim_max;
      g_assert_cmpint (setrlimit (RLIMIT_NOFILE, &rl), ==, 0);
      while ((fd = open ("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        g_array_append_val (fillers, fd);
      g_assert_cmpuint (fillers->len, >, 0);
      close (g_array_index (fillers, int, fillers->len - 1));
      g_array_set_size (fillers, fillers->len - 1);

      g_assert_false (dc_detached_code_start (code, &error));
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);

      /* A call cannot wait on a pool with no worker: it fails. */
      call_sync (code, cmd ("pid", NULL), &r);
      g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);
      result_clear (&r);
      g_object_unref (code);
      /* Leak checkers need descriptors at exit. */
      for (i = 0; i < fillers->len; i++)
        close (g_array_index (fillers, int, i));
      setrlimit (RLIMIT_NOFILE, &saved);
      return;
    }

  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_passed ();
}

static gboolean
cancel_cb (gpointer data)
{
  g_cancellable_cancel (data);
  return G_SOURCE_REMOVE;
}

static void
test_cancel (void)
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
test_threads (void)
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

static void
test_no_func (void)
{
  /* What a binding's plain constructor makes. */
  DcDetachedCode *code = g_object_new (DC_TYPE_DETACHED_CODE, NULL);
  g_autoptr(GError) error = NULL;
  Result r = { 0, };

  g_assert_false (dc_detached_code_start (code, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED);
  call (code, cmd ("pid", NULL), &r);
  g_assert_false (r.done);
  wait_for_flag (&r.done, "a call on a pool without code");
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  result_clear (&r);
  g_object_unref (code);
}

static void
count_notify (GObject    *object,
              GParamSpec *pspec,
              gpointer    data);

/* ---- descriptors ---- */

static guint
count_fds (void)
{
  g_autoptr(GVariant) fds = g_variant_ref_sink (list_fds ());

  return (guint) g_variant_n_children (fds);
}

static int
pipe_with (const char *text)
{
  int p[2];

  g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
  g_assert_cmpint (write (p[1], text, strlen (text)), ==, (gssize) strlen (text));
  close (p[1]);
  return p[0];
}

static char *
read_fd (int fd)
{
  char buf[256];
  gssize n = read (fd, buf, sizeof buf - 1);

  g_assert_cmpint (n, >=, 0);
  buf[n] = '\0';
  return g_strdup (buf);
}

/* (sh): a command and a handle. */
static GVariant *
fd_code (GVariant     *args,
         GUnixFDList  *fd_list,
         GUnixFDList **out_fd_list,
         gpointer      user_data,
         GError      **error)
{
  const char *command;
  gint32 handle;

  g_variant_get (args, "(&sh)", &command, &handle);

  if (g_str_equal (command, "read"))
    {
      int fd = g_unix_fd_list_get (fd_list, handle, error);
      g_autofree char *text = NULL;

      if (fd < 0)
        return NULL;
      text = read_fd (fd);
      close (fd);
      /* And one back. */
      /* append() duplicates: ours is closed, the list's travels. */
      fd = pipe_with ("from the worker");
      *out_fd_list = g_unix_fd_list_new ();
      g_unix_fd_list_append (*out_fd_list, fd, NULL);
      close (fd);
      return g_variant_new ("(sh)", text, 0);
    }
  if (g_str_equal (command, "fail"))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "failed with descriptors");
      return NULL;
    }
  if (g_str_equal (command, "count"))
    return g_variant_new ("(uh)", count_fds (), -1);
  if (g_str_equal (command, "sleep"))
    {
      g_usleep (G_USEC_PER_SEC * 60);
      return g_variant_new ("(sh)", "", -1);
    }
  if (g_str_equal (command, "segv"))
    raise (SIGSEGV);
  if (g_str_equal (command, "unsealed"))
    {
      /* A memfd frame whose memfd anyone could still change. */
      guint8 frame[DC_WIRE_HEADER_SIZE + 8];
      DcWireHeader h = { .size = 8, .type = DC_WIRE_RESULT, .flags = DC_WIRE_FLAG_MEMFD, .n_fds = 1, .serial = 0 };
      guint64 size = 4096;
      int memfd = memfd_create ("liar", MFD_CLOEXEC);
      union { char buf[CMSG_SPACE (sizeof (int))]; struct cmsghdr align; } control;
      struct iovec iov = { frame, sizeof frame };
      struct msghdr msg = { 0, };
      struct cmsghdr *cmsg;

      g_assert_cmpint (ftruncate (memfd, 4096), ==, 0);
      memcpy (frame, &h, sizeof h);
      memcpy (frame + DC_WIRE_HEADER_SIZE, &size, 8);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.buf;
      msg.msg_controllen = sizeof control.buf;
      cmsg = CMSG_FIRSTHDR (&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN (sizeof (int));
      memcpy (CMSG_DATA (cmsg), &memfd, sizeof (int));
      /* The serial must match for the frame to be looked at: take it from
       * the argument. */
      g_assert_cmpint (sendmsg (highest_fd () == memfd ? memfd - 1 : highest_fd (), &msg, 0), >, 0);
      g_usleep (G_USEC_PER_SEC * 30);
      return NULL;
    }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "unknown %s", command);
  return NULL;
}

typedef struct
{
  Result       r;
  GUnixFDList *fds;
} FdResult;

static void
fd_result_cb (GObject      *source,
              GAsyncResult *res,
              gpointer      data)
{
  FdResult *f = data;

  f->r.times_called++;
  f->r.value = dc_detached_code_call_with_unix_fd_list_finish (DC_DETACHED_CODE (source), &f->fds,
                                                               res, &f->r.error);
  f->r.done = TRUE;
}

static void
fd_call (DcDetachedCode *code,
         const char     *command,
         GUnixFDList    *fds,
         GCancellable   *cancellable,
         FdResult       *f)
{
  dc_detached_code_call_with_unix_fd_list_async (code, g_variant_new ("(sh)", command, 0), fds,
                                                 G_PRIORITY_DEFAULT, cancellable, fd_result_cb, f);
}

static void
fd_result_clear (FdResult *f)
{
  g_clear_object (&f->fds);
  result_clear (&f->r);
}

static void
test_fds_round_trip (void)
{
  DcDetachedCode *code = dc_detached_code_new_with_fds (fd_code, NULL, NULL);
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new ();
  FdResult f = { { 0, }, };
  const char *text;
  gint32 handle;
  int back;
  g_autofree char *back_text = NULL;
  int ours = pipe_with ("from the parent");

  g_unix_fd_list_append (fds, ours, NULL);
  close (ours);
  fd_call (code, "read", fds, NULL, &f);
  wait_for_flag (&f.r.done, "a call with descriptors");
  g_assert_no_error (f.r.error);
  g_variant_get (f.r.value, "(&sh)", &text, &handle);
  g_assert_cmpstr (text, ==, "from the parent");
  g_assert_nonnull (f.fds);
  g_assert_cmpint (g_unix_fd_list_get_length (f.fds), ==, 1);
  back = g_unix_fd_list_get (f.fds, handle, NULL);
  back_text = read_fd (back);
  close (back);
  g_assert_cmpstr (back_text, ==, "from the worker");
  fd_result_clear (&f);
  destroy_pool (code);
}

static void
test_fds_refused (void)
{
  DcDetachedCode *plain = new_pool (1, 1);
  DcDetachedCode *piped = dc_detached_code_new_with_fds (fd_code, NULL, NULL);
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new ();
  FdResult f = { { 0, }, };

  g_unix_fd_list_append (fds, 0, NULL);

  /* A pool whose code takes none. */
  dc_detached_code_call_with_unix_fd_list_async (plain, cmd ("pid", NULL), fds, G_PRIORITY_DEFAULT,
                                                 NULL, fd_result_cb, &f);
  wait_for_flag (&f.r.done, "a refused call");
  g_assert_error (f.r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  fd_result_clear (&f);

  /* The pipe stream cannot carry them. */
  dc_detached_code_set_stream (piped, DC_STREAM_PIPE);
  fd_call (piped, "read", fds, NULL, &f);
  wait_for_flag (&f.r.done, "a refused call");
  g_assert_error (f.r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
  fd_result_clear (&f);

  g_object_unref (plain);
  g_object_unref (piped);
}

/* Every path a call with descriptors can take: a result, an error, a
 * cancel that kills, a death. */
static void
fd_paths (DcDetachedCode *code)
{
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  const char *commands[] = { "read", "fail", "sleep", "segv", "read" };
  FdResult f = { { 0, }, };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (commands); i++)
    {
      g_autoptr(GUnixFDList) fds = g_unix_fd_list_new ();
      int fd = pipe_with ("x");

      g_unix_fd_list_append (fds, fd, NULL);
      close (fd);
      fd_call (code, commands[i], fds, i == 2 ? cancellable : NULL, &f);
      if (i == 2)
        g_timeout_add (100, cancel_cb, cancellable);
      wait_for_flag (&f.r.done, "calls with descriptors");
      g_assert_true ((i == 0 || i == 4) == (f.r.error == NULL));
      fd_result_clear (&f);
    }
}

typedef struct
{
  guint n;
  guint round;   /* from 0 */
} ExitCount;

static void
count_exited (DcDetachedCode *code,
              gint            pid,
              gint            status,
              gpointer        data)
{
  ((ExitCount *) data)->n++;
}

static gboolean
two_exited_per_round (gpointer data)
{
  ExitCount *e = data;

  return e->n >= 2 * (e->round + 1);
}

static void
test_fds_no_leak (void)
{
  DcDetachedCode *code;
  ExitCount exited = { 0, 0 };
  FdResult f = { { 0, }, };
  guint before, after, worker_count;
  gint32 handle;

  /* Counting descriptors needs a process that earlier tests did not leave
   * workers (and their pidfds) in. */
  if (!g_test_subprocess ())
    {
      g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
      g_test_trap_assert_passed ();
      return;
    }

  code = dc_detached_code_new_with_fds (fd_code, NULL, NULL);

  dc_detached_code_set_kill_on_cancel (code, TRUE);
  g_assert_true (dc_detached_code_start (code, NULL));

  /* GLib makes some descriptors of its own the first time (a wake-up
   * for the cancellable machinery): count from the second round.  Each
   * round ends two workers (kill-on-cancel, a crash); a cancelled call
   * completes before its worker is reaped, so count once both are. */
  g_signal_connect (code, "worker-exited", G_CALLBACK (count_exited), &exited);
  fd_paths (code);
  wait_until (two_exited_per_round, &exited, "the workers of a round to be reaped");
  before = count_fds ();
  exited.round++;
  fd_paths (code);
  wait_until (two_exited_per_round, &exited, "the workers of a round to be reaped");
  after = count_fds ();
  g_assert_cmpuint (after, ==, before);

  /* The worker holds none after its calls. */
  fd_call (code, "count", NULL, NULL, &f);
  wait_for_flag (&f.r.done, "a count");
  g_variant_get (f.r.value, "(uh)", &worker_count, &handle);
  g_assert_cmpuint (worker_count, ==, 4);   /* 0-2 and the channel */
  fd_result_clear (&f);
  destroy_pool (code);
}

static GVariant *
where_is_payload (GVariant  *args,
                  gpointer   user_data,
                  GError   **error)
{
  g_autoptr(GVariant) bytes = g_variant_get_child_value (args, 0);
  gsize n;
  const guint8 *data = g_variant_get_fixed_array (bytes, &n, 1);
  g_autofree char *maps = NULL;
  gboolean in_memfd = FALSE;
  char **lines, **line;

  /* Which mapping holds the array? */
  g_assert_true (g_file_get_contents ("/proc/self/maps", &maps, NULL, NULL));
  lines = g_strsplit (maps, "\n", -1);
  for (line = lines; *line != NULL; line++)
    {
      guintptr lo, hi;

      if (sscanf (*line, "%" G_GINTPTR_MODIFIER "x-%" G_GINTPTR_MODIFIER "x", &lo, &hi) == 2 &&
          (guintptr) data >= lo && (guintptr) data < hi)
        in_memfd = strstr (*line, "memfd:dc-payload") != NULL;
    }
  g_strfreev (lines);
  return g_variant_new ("(b@ay)", in_memfd, bytes);
}

static void
check_memfd (guint threshold,
             gboolean expect_memfd)
{
  DcDetachedCode *code = dc_detached_code_new (where_is_payload, NULL, NULL);
  g_autofree guint8 *data = g_malloc (1 << 20);
  g_autoptr(GVariant) args = NULL;
  g_autoptr(GVariant) back = NULL;
  Result r = { 0, };
  gboolean in_memfd;
  gsize i;

  for (i = 0; i < (1 << 20); i++)
    data[i] = (guint8) (i * 13);
  args = g_variant_ref_sink (g_variant_new ("(@ay)", g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE,
                                                                               data, 1 << 20, 1)));
  dc_detached_code_set_memfd_threshold (code, threshold);
  g_assert_cmpuint (dc_detached_code_get_memfd_threshold (code), ==, threshold);
  call_sync (code, args, &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(b@ay)", &in_memfd, &back);
  g_assert_true (in_memfd == expect_memfd);
  {
    g_autoptr(GVariant) sent = g_variant_get_child_value (args, 0);
    g_assert_true (g_variant_equal (back, sent));
  }
  result_clear (&r);
  destroy_pool (code);
}

static void
test_memfd (void)
{
  check_memfd (64 * 1024, TRUE);
  check_memfd (0, FALSE);
  check_memfd (4 << 20, FALSE);
}

static void
test_memfd_unsealed (void)
{
  DcDetachedCode *code = dc_detached_code_new_with_fds (fd_code, NULL, NULL);
  FdResult f = { { 0, }, };

  /* The serial of the first call is 1: the liar's frame matches it. */
  fd_call (code, "unsealed", NULL, NULL, &f);
  wait_for_flag (&f.r.done, "a lying worker");
  g_assert_error (f.r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_test_message ("%s", f.r.error->message);
  g_assert_nonnull (strstr (f.r.error->message, "sealed"));
  fd_result_clear (&f);
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
test_call_timeout (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result r = { 0, }, a = { 0, }, b = { 0, };
  GPid pid = call_pid (code);
  g_autofree char *pid_text = g_strdup_printf ("%d", (int) pid);

  dc_detached_code_set_call_timeout (code, 300);
  g_assert_cmpuint (dc_detached_code_get_call_timeout (code), ==, 300);
  call_sync (code, cmd ("sleep", g_variant_new_int32 (60000)), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT);
  g_assert_nonnull (strstr (r.error->message, "300 ms"));
  g_assert_nonnull (strstr (r.error->message, pid_text));
  result_clear (&r);
  assert_process_gone (pid);

  /* Time in the queue does not count: each runs 3 s of a 4.5 s limit, the
   * second after waiting 3 s for the first. */
  dc_detached_code_set_call_timeout (code, 4500);
  call (code, cmd ("sleep", g_variant_new_int32 (3000)), &a);
  call (code, cmd ("sleep", g_variant_new_int32 (3000)), &b);
  wait_for_flag (&b.done, "queued calls under a time limit");
  g_assert_no_error (a.error);
  g_assert_no_error (b.error);
  result_clear (&a);
  result_clear (&b);
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
test_pool_pipeline_timeout (void)
{
  DcDetachedCode *code = new_pool (1, 1);
  Result a = { 0, }, b = { 0, };

  /* Pipelined behind another, a call's limit counts from when it runs:
   * each takes 2 s of a 3 s limit, the second 4 s after its write. */
  dc_detached_code_set_pipeline_depth (code, 4);
  dc_detached_code_set_call_timeout (code, 3000);
  g_assert_true (dc_detached_code_start (code, NULL));
  call (code, cmd ("sleep", g_variant_new_int32 (2000)), &a);
  call (code, cmd ("sleep", g_variant_new_int32 (2000)), &b);
  g_assert_cmpuint (dc_detached_code_get_n_queued (code), ==, 0);
  wait_for_flag (&b.done, "pipelined calls under a time limit");
  g_assert_no_error (a.error);
  g_assert_no_error (b.error);
  result_clear (&a);
  result_clear (&b);
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
test_threads_last_reference (void)
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
test_cancel_handler_shuts_down (void)
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

static void
count_notify (GObject    *object,
              GParamSpec *pspec,
              gpointer    data)
{
  (*(guint *) data)++;
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

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/call/basic", test_call_basic);
  g_test_add_func ("/detached-code/call/not-before-return", test_call_not_before_return);
  g_test_add_func ("/detached-code/call/args-serialized", test_call_args_serialized);
  g_test_add_func ("/detached-code/call/null-args", test_call_null_args);
  g_test_add_func ("/detached-code/call/order-one-worker", test_call_order_one_worker);
  g_test_add_func ("/detached-code/call/priority", test_call_priority);
  g_test_add_func ("/detached-code/call/many", test_call_many);
  g_test_add_func ("/detached-code/pool/start", test_pool_start);
  g_test_add_func ("/detached-code/pool/lazy-start", test_pool_lazy_start);
  g_test_add_func ("/detached-code/pool/grow", test_pool_grow);
  g_test_add_func ("/detached-code/pool/parent-death", test_pool_parent_death);
  g_test_add_func ("/detached-code/pool/inert-in-worker", test_pool_inert_in_worker);
  g_test_add_func ("/detached-code/error/round-trip", test_error_round_trip);
  g_test_add_func ("/detached-code/error/failed", test_error_failed);
  g_test_add_func ("/detached-code/error/spawn", test_spawn_error);
  g_test_add_func ("/detached-code/worker/crash", test_worker_crash);
  g_test_add_func ("/detached-code/worker/exit", test_worker_exit);
  g_test_add_func ("/detached-code/worker/killed", test_worker_killed);
  g_test_add_func ("/detached-code/worker/queued-behind-death", test_worker_queued_behind_death);
  g_test_add_func ("/detached-code/worker/exit-on-die", test_worker_exit_on_die);
  g_test_add_func ("/detached-code/marshal/flat", test_marshal_flat);
  g_test_add_func ("/detached-code/marshal/variant-large", test_marshal_variant_large);
  g_test_add_func ("/detached-code/setup/stdio", test_setup_stdio);
  g_test_add_func ("/detached-code/setup/fds-socket", test_setup_fds_socket);
  g_test_add_func ("/detached-code/setup/fds-pipe", test_setup_fds_pipe);
  g_test_add_func ("/detached-code/setup/env", test_setup_env);
  g_test_add_func ("/detached-code/setup/cwd", test_setup_cwd);
  g_test_add_func ("/detached-code/setup/init-func", test_setup_init_func);
  g_test_add_func ("/detached-code/setup/signals", test_setup_signals);
  g_test_add_func ("/detached-code/shutdown/pending", test_shutdown_pending);
  g_test_add_func ("/detached-code/shutdown/finalize", test_shutdown_finalize);
  g_test_add_func ("/detached-code/shutdown/callback-reenters", test_shutdown_callback_reenters);
  g_test_add_func ("/detached-code/protocol/garbage", test_protocol_garbage);
  g_test_add_func ("/detached-code/protocol/oversized", test_protocol_oversized);
  g_test_add_func ("/detached-code/stream/pipe", test_stream_pipe);
  g_test_add_func ("/detached-code/properties", test_properties);
  g_test_add_func ("/detached-code/call/cancel", test_cancel);
  g_test_add_func ("/detached-code/call/threads", test_threads);
  g_test_add_func ("/detached-code/call/threads-last-reference", test_threads_last_reference);
  g_test_add_func ("/detached-code/call/nested-loop", test_call_nested_loop);
  g_test_add_func ("/detached-code/call/cancel-handler-shuts-down", test_cancel_handler_shuts_down);
  g_test_add_func ("/detached-code/error/no-func", test_no_func);
  g_test_add_func ("/detached-code/pool/idle-timeout", test_pool_idle_timeout);
  g_test_add_func ("/detached-code/pool/max-worker-calls", test_pool_max_worker_calls);
  g_test_add_func ("/detached-code/pool/restart", test_pool_restart);
  g_test_add_func ("/detached-code/pool/stats", test_pool_stats);
  g_test_add_func ("/detached-code/pool/signals", test_pool_signals);
  g_test_add_func ("/detached-code/pool/pipeline", test_pool_pipeline);
  g_test_add_func ("/detached-code/pool/pipeline-prefers-idle", test_pool_pipeline_prefers_idle);
  g_test_add_func ("/detached-code/pool/pipeline-timeout", test_pool_pipeline_timeout);
  g_test_add_func ("/detached-code/call/timeout", test_call_timeout);
  g_test_add_func ("/detached-code/call/kill-on-cancel", test_call_kill_on_cancel);
  g_test_add_func ("/detached-code/fds/round-trip", test_fds_round_trip);
  g_test_add_func ("/detached-code/fds/refused", test_fds_refused);
  g_test_add_func ("/detached-code/fds/no-leak", test_fds_no_leak);
  g_test_add_func ("/detached-code/memfd/large", test_memfd);
  g_test_add_func ("/detached-code/memfd/unsealed", test_memfd_unsealed);

  return g_test_run ();
}
