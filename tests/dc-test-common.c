/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Helpers shared by the pool's test programs: real workers, real fork(). */

#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dc-detached-code-private.h"
#include "dc-wire-private.h"

#include "dc-test-common.h"

/* ---- waiting, with generous deadlines ---- */

/* Generous: the machine may be loaded.  A hang fails, it never blocks CI.
 * Slow runners (meson test --setup valgrind) multiply it through
 * DC_TEST_DEADLINE_MULTIPLIER, as meson does its own timeouts. */
#define DEADLINE_SECONDS 90

static guint
deadline_seconds (void)
{
  const char *multiplier = g_getenv ("DC_TEST_DEADLINE_MULTIPLIER");
  guint64 m = 1;

  if (multiplier != NULL && !g_ascii_string_to_unsigned (multiplier, 10, 1, 100, &m, NULL))
    g_error ("DC_TEST_DEADLINE_MULTIPLIER must be a whole number from 1 to 100");
  return DEADLINE_SECONDS * (guint) m;
}

static gboolean
deadline_cb (gpointer data)
{
  g_error ("Test timed out waiting for %s", (const char *) data);
  return G_SOURCE_REMOVE;
}

/* Runs the default context until *@flag is TRUE. */
void
wait_for_flag (gboolean   *flag,
               const char *what)
{
  guint id = g_timeout_add_seconds (deadline_seconds (), deadline_cb, (gpointer) what);

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
void
wait_until (gboolean  (*check) (gpointer),
            gpointer    data,
            const char *what)
{
  guint id = g_timeout_add_seconds (deadline_seconds (), deadline_cb, (gpointer) what);
  guint tick = g_timeout_add (10, tick_cb, NULL);

  while (!check (data))
    g_main_context_iteration (NULL, TRUE);
  g_source_remove (tick);
  g_source_remove (id);
}

gboolean
process_gone (gpointer data)
{
  /* Reaped processes vanish; a zombie would still answer kill(). */
  return kill (GPOINTER_TO_INT (data), 0) < 0 && errno == ESRCH;
}

void
assert_process_gone (GPid pid)
{
  wait_until (process_gone, GINT_TO_POINTER (pid), "a worker to be reaped");
}

/* ---- descriptors of the calling process ---- */

GVariant *
list_fds (void)
{
  GVariantBuilder builder;
  DIR *dir = opendir ("/proc/self/fd");
  struct dirent *entry;
  struct rlimit rl;
  int limit = G_MAXINT;

  /* Valgrind keeps its own descriptors at and above the soft limit, which
   * it lowers (and reports) to make room for them: they are not the
   * program's, and a worker must not mistake one for its channel.  No
   * descriptor of the program's own can be there unless it lowered the
   * limit below one it holds, which no test does. */
  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < (rlim_t) G_MAXINT)
    limit = (int) rl.rlim_cur;

  g_variant_builder_init (&builder, G_VARIANT_TYPE ("ai"));
  while ((entry = readdir (dir)) != NULL)
    {
      int fd;

      if (entry->d_name[0] == '.')
        continue;
      fd = atoi (entry->d_name);
      if (fd != dirfd (dir) && fd < limit)
        g_variant_builder_add (&builder, "i", fd);
    }
  closedir (dir);
  return g_variant_builder_end (&builder);
}

char *
fd_target (int fd)
{
  g_autofree char *path = g_strdup_printf ("/proc/self/fd/%d", fd);
  char *target = g_file_read_link (path, NULL);

  return target ? target : g_strdup ("");
}

int
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

/* ---- the code the workers run ---- */

int init_runs;   /* set in each worker by its init function */
int parent_state = 1;   /* changed in the parent, seen by workers forked after */

/* Arguments are (s v): a command and its argument. */
GVariant *
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
  if (g_str_equal (command, "start-copy"))
    {
      /* user_data is another pool, copied into this worker: not its to
       * start.  The code of the refusal, or -1 if it started. */
      DcDetachedCode *other = user_data;
      g_autoptr(GError) start_error = NULL;

      if (dc_detached_code_start (other, &start_error))
        return g_variant_new ("(i)", -1);
      g_assert_true (start_error->domain == DC_DETACHED_CODE_ERROR);
      return g_variant_new ("(i)", start_error->code);
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

GVariant *
cmd (const char *command,
     GVariant   *arg)
{
  return g_variant_new ("(sv)", command, arg ? arg : g_variant_new ("()"));
}

/* ---- collecting results ---- */

static guint completion_counter;

void
result_clear (Result *r)
{
  g_clear_pointer (&r->value, g_variant_unref);
  g_clear_error (&r->error);
  memset (r, 0, sizeof *r);
}

void
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

void
call (DcDetachedCode *code,
      GVariant       *args,
      Result         *r)
{
  dc_detached_code_call_async (code, args, G_PRIORITY_DEFAULT, NULL, result_cb, r);
}

/* One call, waited for. */
void
call_sync (DcDetachedCode *code,
           GVariant       *args,
           Result         *r)
{
  call (code, args, r);
  wait_for_flag (&r->done, "a call");
}

GPid
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

DcDetachedCode *
new_pool (guint min_workers,
          guint max_workers)
{
  DcDetachedCode *code = dc_detached_code_new (test_code, NULL, NULL);

  g_object_set (code, "min-workers", min_workers, "max-workers", max_workers, NULL);
  return code;
}

GArray *
list_children (void)
{
  GArray *children = g_array_new (FALSE, FALSE, sizeof (GPid));
  GDir *dir = g_dir_open ("/proc", 0, NULL);
  const char *name;
  pid_t self = getpid ();

  while ((name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = NULL;
      g_autofree char *stat = NULL;
      const char *end;
      int ppid;
      GPid pid;

      if (!g_ascii_isdigit (name[0]))
        continue;
      path = g_build_filename ("/proc", name, "stat", NULL);
      if (!g_file_get_contents (path, &stat, NULL, NULL))
        continue;
      /* pid (comm) state ppid ...; comm may hold spaces and parentheses. */
      end = strrchr (stat, ')');
      if (end == NULL || sscanf (end + 1, " %*c %d", &ppid) != 1 || ppid != self)
        continue;
      pid = atoi (name);
      g_array_append_val (children, pid);
    }
  g_dir_close (dir);
  return children;
}

static gboolean
no_children (gpointer data)
{
  g_autoptr(GArray) children = list_children ();

  return children->len == 0;
}

void
assert_no_children (void)
{
  wait_until (no_children, NULL, "every child process (workers, template) to be reaped");
}

static gboolean
none_left (gpointer data)
{
  GArray *pids = data;
  g_autoptr(GArray) children = list_children ();
  guint i, j;

  for (i = 0; i < pids->len; i++)
    for (j = 0; j < children->len; j++)
      if (g_array_index (pids, GPid, i) == g_array_index (children, GPid, j))
        return FALSE;
  return TRUE;
}

/* Drops the pool and waits until every process it made is reaped.
 * (Other pools of the test may still have theirs.) */
void
destroy_pool (DcDetachedCode *code)
{
  g_autoptr(GArray) pids = dc_pool_list_processes (code->pool);

  g_object_unref (code);
  wait_until (none_left, pids, "the pool's processes (workers, template) to be reaped");
}

gboolean
cancel_cb (gpointer data)
{
  g_cancellable_cancel (data);
  return G_SOURCE_REMOVE;
}

GLogWriterOutput
tolerate_threads_warning (GLogLevelFlags   log_level,
                          const GLogField *fields,
                          gsize            n_fields,
                          gpointer         user_data)
{
  gsize i;

  for (i = 0; i < n_fields; i++)
    if (g_str_equal (fields[i].key, "MESSAGE") && fields[i].length < 0 &&
        g_str_has_prefix (fields[i].value, "Forking a worker from a process with "))
      return G_LOG_WRITER_HANDLED;
  return g_log_writer_default (log_level, fields, n_fields, user_data);
}
