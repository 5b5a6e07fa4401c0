/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Workers' stderr captured (DC_SETUP_CAPTURE_STDERR): copied to ours, and
 * its last lines in the errors about a worker. */

#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dc-test-common.h"

static void
say (const char *text)
{
  gsize len = strlen (text);

  while (len > 0)
    {
      ssize_t n = write (STDERR_FILENO, text, len);

      if (n <= 0)
        return;
      text += n;
      len -= (gsize) n;
    }
}

/* Arguments are (s v), as test_code()'s; the commands of this file. */
static GVariant *
stderr_code (GVariant  *args,
             gpointer   user_data,
             GError   **error)
{
  const char *command;
  g_autoptr(GVariant) arg = NULL;

  g_variant_get (args, "(&sv)", &command, &arg);

  if (g_str_equal (command, "say-abort"))
    {
      say (g_variant_get_string (arg, NULL));
      abort ();
    }
  if (g_str_equal (command, "bytes-abort"))
    {
      gsize len;
      const char *bytes = g_variant_get_fixed_array (arg, &len, 1);

      g_assert_cmpint (write (STDERR_FILENO, bytes, len), ==, (gssize) len);
      abort ();
    }
  if (g_str_equal (command, "say-sleep"))
    {
      say (g_variant_get_string (arg, NULL));
      g_usleep (60 * G_USEC_PER_SEC);
      return g_variant_new ("()");
    }
  if (g_str_equal (command, "say-exec"))
    {
      char *exec_argv[] = { "/bin/true", NULL };
      char *exec_envp[] = { NULL };

      say (g_variant_get_string (arg, NULL));
      execve (exec_argv[0], exec_argv, exec_envp);
      return g_variant_new ("()");
    }
  if (g_str_equal (command, "flood"))
    {
      /* Lines as fast as it can for this many ms; how much it wrote. */
      gint64 end = g_get_monotonic_time () + g_variant_get_int32 (arg) * G_TIME_SPAN_MILLISECOND;
      char line[200];
      guint64 total = 0;

      memset (line, 'x', sizeof line - 1);
      line[sizeof line - 1] = '\n';
      while (g_get_monotonic_time () < end)
        {
          guint i;

          for (i = 0; i < 64; i++)
            {
              ssize_t n = write (STDERR_FILENO, line, sizeof line);

              if (n > 0)
                total += (guint64) n;
            }
        }
      return g_variant_new ("(t)", total);
    }
  return test_code (args, user_data, error);
}

static DcDetachedCode *
capturing_pool (gboolean fork_server)
{
  DcDetachedCode *code = dc_detached_code_new (stderr_code, NULL, NULL);

  g_object_set (code, "min-workers", 1, "max-workers", 1,
                "setup-flags", DC_SETUP_CAPTURE_STDERR, "fork-server", fork_server, NULL);
  return code;
}

static void
check_abort (gboolean fork_server)
{
  g_autoptr(GVariant) fds_before = list_fds ();
  g_autoptr(GVariant) fds_after = NULL;
  DcDetachedCode *code = capturing_pool (fork_server);
  Result r = { 0, };
  GPid pid = call_pid (code);
  g_autofree char *header = g_strdup_printf ("--- last output of worker process %d ---", (int) pid);
  const char *err_target;

  g_assert_cmpint (dc_detached_code_get_setup_flags (code), ==, DC_SETUP_CAPTURE_STDERR);

  /* Its stderr is a pipe. */
  call_sync (code, cmd ("stdio", NULL), &r);
  g_assert_no_error (r.error);
  g_variant_get (r.value, "(ss&s)", NULL, NULL, &err_target);
  g_assert_true (g_str_has_prefix (err_target, "pipe:"));
  result_clear (&r);

  call_sync (code, cmd ("say-abort", g_variant_new_string ("first words\nlast words\n")), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_assert_nonnull (strstr (r.error->message, "signal 6"));
  g_assert_nonnull (strstr (r.error->message, header));
  g_assert_true (g_str_has_suffix (r.error->message, "\nfirst words\nlast words"));
  result_clear (&r);

  /* A line without its newline is there too; the next worker's error
   * holds its own output only. */
  pid = call_pid (code);
  call_sync (code, cmd ("say-abort", g_variant_new_string ("no newline")), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_assert_true (g_str_has_suffix (r.error->message, "---\nno newline"));
  g_assert_null (strstr (r.error->message, "first words"));
  result_clear (&r);

  /* The pool goes on. */
  g_assert_cmpint (call_pid (code), >, 0);
  destroy_pool (code);

  fds_after = list_fds ();
  g_assert_true (g_variant_equal (fds_before, fds_after));
}

/* Whatever bytes a worker writes, its copies and its error are text: valid
 * UTF-8 (a GError must be), with no control sequence for a terminal, and
 * a NUL stops nothing. */
static void
test_hostile_bytes (void)
{
  DcDetachedCode *code = capturing_pool (TRUE);
  g_autoptr(GString) bytes = g_string_new ("bad \xff\xfe utf-8\n"
                                           "\x1b]0;title\x07\x1b[2J\r escapes\n"
                                           "\xc2\x9b" "31m c1\n");
  Result r = { 0, };
  const char *p;
  guint i;

  g_string_append_len (bytes, "nul\0tail\n", 9);
  /* A long line of three-byte characters, cut inside one. */
  for (i = 0; i < 500; i++)
    g_string_append (bytes, "€");
  g_string_append (bytes, "\nlast\n");

  call_sync (code, cmd ("bytes-abort", g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, bytes->str,
                                                                  bytes->len, 1)), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_test_message ("%s", r.error->message);
  g_assert_true (g_utf8_validate (r.error->message, -1, NULL));
  for (p = r.error->message; *p != '\0'; p = g_utf8_next_char (p))
    {
      gunichar c = g_utf8_get_char (p);

      g_assert_false ((c < 0x20 && c != '\n' && c != '\t') || (c >= 0x7f && c < 0xa0));
    }
  g_assert_nonnull (strstr (r.error->message, "utf-8"));
  g_assert_nonnull (strstr (r.error->message, "escapes"));
  g_assert_nonnull (strstr (r.error->message, "tail"));
  g_assert_true (g_str_has_suffix (r.error->message, "\nlast"));
  result_clear (&r);
  destroy_pool (code);
}

static void
test_abort_fork_server (void)
{
  check_abort (TRUE);
}

static void
test_abort_direct (void)
{
  check_abort (FALSE);
}

static void
test_long_output (void)
{
  DcDetachedCode *code = capturing_pool (TRUE);
  g_autoptr(GString) text = g_string_new (NULL);
  g_autofree char *long_line = g_strnfill (5000, 'y');
  const char *tail;
  Result r = { 0, };
  guint i;

  /* Far more than is kept, and a line too long to keep whole. */
  for (i = 0; i < 200; i++)
    g_string_append_printf (text, "line %03u of many\n", i);
  g_string_append_printf (text, "%s\nthe end\n", long_line);
  call_sync (code, cmd ("say-abort", g_variant_new_string (text->str)), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  tail = strstr (r.error->message, "---\n");
  g_assert_nonnull (tail);
  tail += 4;
  g_assert_true (g_str_has_suffix (tail, "…\nthe end"));
  g_assert_null (strstr (tail, "line 000"));
  g_assert_cmpuint (strlen (tail), <=, 2048);
  g_assert_null (strstr (tail, long_line));
  result_clear (&r);
  destroy_pool (code);
}

static void
test_timeout (void)
{
  DcDetachedCode *code = capturing_pool (TRUE);
  Result r = { 0, };

  dc_detached_code_set_call_timeout (code, 500);
  call_sync (code, cmd ("say-sleep", g_variant_new_string ("stuck here\n")), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT);
  g_assert_nonnull (strstr (r.error->message, "500 ms"));
  g_assert_true (g_str_has_suffix (r.error->message, "---\nstuck here"));
  result_clear (&r);
  destroy_pool (code);
}

typedef struct
{
  gint64 last;
  gint64 max_gap;
  guint  ticks;
} Ticks;

static gboolean
tick_cb (gpointer data)
{
  Ticks *ticks = data;
  gint64 now = g_get_monotonic_time ();

  ticks->max_gap = MAX (ticks->max_gap, now - ticks->last);
  ticks->last = now;
  ticks->ticks++;
  return G_SOURCE_CONTINUE;
}

static guint64
resident_size (void)
{
  g_autofree char *statm = NULL;
  guint64 resident = 0;

  g_assert_true (g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL));
  g_assert_cmpint (sscanf (statm, "%*u %" G_GUINT64_FORMAT, &resident), ==, 1);
  return resident * (guint64) sysconf (_SC_PAGESIZE);
}

static int stuck_pipe[2] = { -1, -1 };

static void
check_flood (gboolean fork_server,
             gboolean stuck)
{
  DcDetachedCode *code = capturing_pool (fork_server);
  Ticks ticks = { 0, };
  Result r = { 0, };
  guint64 rss_before, rss_after, total;
  int saved_stderr, null_fd;
  guint tick;

  g_assert_cmpint (call_pid (code), >, 0);

  /* The copies go to /dev/null, not to the test's log; or to a full pipe
   * nobody reads, as a stopped terminal would be. */
  saved_stderr = dup (STDERR_FILENO);
  if (stuck)
    {
      char block[4096] = { 0, };

      g_assert_cmpint (pipe2 (stuck_pipe, O_CLOEXEC | O_NONBLOCK), ==, 0);
      while (write (stuck_pipe[1], block, sizeof block) > 0)
        ;
      g_assert_cmpint (errno, ==, EAGAIN);
      /* Blocking again, as our stderr would be. */
      g_assert_cmpint (fcntl (stuck_pipe[1], F_SETFL, 0), ==, 0);
      null_fd = stuck_pipe[1];
    }
  else
    null_fd = open ("/dev/null", O_WRONLY | O_CLOEXEC);
  g_assert_cmpint (dup2 (null_fd, STDERR_FILENO), ==, STDERR_FILENO);
  close (null_fd);

  rss_before = resident_size ();
  ticks.last = g_get_monotonic_time ();
  tick = g_timeout_add (50, tick_cb, &ticks);
  call (code, cmd ("flood", g_variant_new_int32 (3000)), &r);
  wait_for_flag (&r.done, "a call that floods its stderr");
  g_source_remove (tick);
  rss_after = resident_size ();

  g_assert_cmpint (dup2 (saved_stderr, STDERR_FILENO), ==, STDERR_FILENO);
  close (saved_stderr);
  if (stuck)
    close (stuck_pipe[0]);

  g_assert_no_error (r.error);
  g_variant_get (r.value, "(t)", &total);
  g_test_message ("flooded %" G_GUINT64_FORMAT " bytes; %u ticks, longest gap %" G_GINT64_FORMAT
                  " us; resident %" G_GUINT64_FORMAT " -> %" G_GUINT64_FORMAT " bytes",
                  total, ticks.ticks, ticks.max_gap, rss_before, rss_after);
  g_assert_cmpuint (total, >=, 1024 * 1024);
  /* 3 s at 50 ms: the main loop ran all along. */
  g_assert_cmpuint (ticks.ticks, >=, 10);
  g_assert_cmpint (ticks.max_gap, <, 2 * G_USEC_PER_SEC);
  g_assert_cmpuint (rss_after, <, rss_before + 32 * 1024 * 1024);
  result_clear (&r);

  /* The pool goes on. */
  g_assert_cmpint (call_pid (code), >, 0);
  destroy_pool (code);
}

static void
test_flood_fork_server (void)
{
  check_flood (TRUE, FALSE);
}

static void
test_flood_direct (void)
{
  check_flood (FALSE, FALSE);
}

static void
test_flood_stuck_stderr (void)
{
  check_flood (TRUE, TRUE);
}

static void
test_sandbox (void)
{
  DcDetachedCode *code = capturing_pool (TRUE);
  Result r = { 0, };

  dc_detached_code_set_sandbox (code, DC_SANDBOX_NO_EXEC);
  call_sync (code, cmd ("say-exec", g_variant_new_string ("about to exec\n")), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX);
  g_assert_nonnull (strstr (r.error->message, "execve"));
  g_assert_true (g_str_has_suffix (r.error->message, "---\nabout to exec"));
  result_clear (&r);
  g_assert_cmpint (call_pid (code), >, 0);
  destroy_pool (code);
}

static void
test_exclusive (void)
{
  DcDetachedCode *code = capturing_pool (TRUE);
  g_autoptr(GError) error = NULL;
  Result r = { 0, };

  dc_detached_code_set_setup_flags (code, DC_SETUP_CAPTURE_STDERR | DC_SETUP_SILENCE_STDERR);
  g_assert_false (dc_detached_code_start (code, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);
  g_assert_nonnull (strstr (error->message, "CAPTURE_STDERR"));

  /* A call says the same, and no worker was made. */
  g_object_set (code, "min-workers", 0, NULL);
  call_sync (code, cmd ("pid", NULL), &r);
  g_assert_error (r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN);
  g_assert_nonnull (strstr (r.error->message, "SILENCE_STDERR"));
  result_clear (&r);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  destroy_pool (code);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  /* Pools without the fork server warn once of GLib's own thread. */
  g_log_set_writer_func (tolerate_threads_warning, NULL, NULL);

  g_test_add_func ("/detached-code/stderr/flood-fork-server", test_flood_fork_server);
  g_test_add_func ("/detached-code/stderr/flood-direct", test_flood_direct);
  g_test_add_func ("/detached-code/stderr/flood-stuck-stderr", test_flood_stuck_stderr);
  g_test_add_func ("/detached-code/stderr/hostile-bytes", test_hostile_bytes);
  g_test_add_func ("/detached-code/stderr/abort-fork-server", test_abort_fork_server);
  g_test_add_func ("/detached-code/stderr/abort-direct", test_abort_direct);
  g_test_add_func ("/detached-code/stderr/long-output", test_long_output);
  g_test_add_func ("/detached-code/stderr/timeout", test_timeout);
  g_test_add_func ("/detached-code/stderr/sandbox", test_sandbox);
  g_test_add_func ("/detached-code/stderr/exclusive", test_exclusive);

  return g_test_run ();
}
