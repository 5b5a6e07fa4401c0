/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The workers' setup, descriptors passed with calls, and memfd payloads. */

#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "dc-wire-private.h"

#include "dc-test-common.h"

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

static void
worker_init (gpointer user_data)
{
  init_runs++;
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

static GPid
only_worker_pid (DcDetachedCode *code)
{
  guint n;
  g_autofree GPid *pids = dc_detached_code_get_worker_pids (code, &n);

  g_assert_cmpuint (n, ==, 1);
  return pids[0];
}

/* Descriptors are copied when the call is made: with no descriptor
 * number free the call fails with MARSHAL, and the worker, sent nothing it
 * must refuse, takes the next call.  The caller may close its own at once. */
static void
test_fds_at_limit (void)
{
  DcDetachedCode *code = dc_detached_code_new_with_fds (fd_code, NULL, NULL);
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new ();
  g_autofree gint *stolen = NULL;
  FdResult f = { { 0, }, };
  struct rlimit rl, old;
  int fill[64], n = 0, lowest, ours;
  GPid pids[2];
  const char *text;
  guint i;

  for (i = 0; i < 2; i++)
    {
      fd_call (code, "count", NULL, NULL, &f);
      wait_for_flag (&f.r.done, "a call without descriptors");
      g_assert_no_error (f.r.error);
      fd_result_clear (&f);
      memset (&f, 0, sizeof f);
      pids[i] = only_worker_pid (code);
      if (i == 1)
        break;

      /* Every number below the limit taken. */
      lowest = open ("/dev/null", O_RDONLY | O_CLOEXEC);
      g_assert_cmpint (lowest, >=, 0);
      close (lowest);
      g_assert_cmpint (getrlimit (RLIMIT_NOFILE, &old), ==, 0);
      rl = old;
      rl.rlim_cur = (rlim_t) lowest + G_N_ELEMENTS (fill) / 2;
      g_assert_cmpint (setrlimit (RLIMIT_NOFILE, &rl), ==, 0);
      while (n < (int) G_N_ELEMENTS (fill) &&
             (fill[n] = open ("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        n++;
      g_assert_cmpint (n, <, G_N_ELEMENTS (fill));
      g_unix_fd_list_append (fds, 0, NULL);   /* fails: the list stays empty */
      close (fill[--n]);
      g_assert_cmpint (g_unix_fd_list_append (fds, 0, NULL), ==, 0);

      fd_call (code, "count", fds, NULL, &f);
      wait_for_flag (&f.r.done, "a call at the limit");
      g_assert_error (f.r.error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
      fd_result_clear (&f);
      memset (&f, 0, sizeof f);

      g_clear_object (&fds);
      while (n > 0)
        close (fill[--n]);
      g_assert_cmpint (setrlimit (RLIMIT_NOFILE, &old), ==, 0);
    }
  g_assert_cmpint (pids[0], ==, pids[1]);

  /* Ours closed, and the list emptied, as soon as the call is made. */
  fds = g_unix_fd_list_new ();
  ours = pipe_with ("from the parent");
  g_unix_fd_list_append (fds, ours, NULL);
  close (ours);
  fd_call (code, "read", fds, NULL, &f);
  stolen = g_unix_fd_list_steal_fds (fds, NULL);
  close (stolen[0]);
  wait_for_flag (&f.r.done, "a call whose descriptors the caller closed");
  g_assert_no_error (f.r.error);
  g_variant_get (f.r.value, "(&sh)", &text, NULL);
  g_assert_cmpstr (text, ==, "from the parent");
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
test_memfd_large (void)
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

/* ---- a low descriptor limit ---- */


static void
check_low_fd_limit (gboolean fork_server)
{
  DcDetachedCode *code = new_pool (1, 1);
  struct rlimit old, low;
  Result r = { 0, };
  guint i;

  /* Workers keep their channel just under the limit, and the template
   * its own below theirs: with little room above the descriptors in use,
   * those numbers must still be ones the processes may have. */
  g_assert_cmpint (getrlimit (RLIMIT_NOFILE, &old), ==, 0);
  low = old;
  low.rlim_cur = (rlim_t) highest_fd () + 5;
  g_assert_cmpint (setrlimit (RLIMIT_NOFILE, &low), ==, 0);

  /* A fresh worker each call: the later ones forked once the previous
   * one is gone, from the same template. */
  dc_detached_code_set_fork_server (code, fork_server);
  dc_detached_code_set_max_worker_calls (code, 1);
  for (i = 0; i < 3; i++)
    {
      call_sync (code, cmd ("pid", NULL), &r);
      g_assert_no_error (r.error);
      result_clear (&r);
    }
  destroy_pool (code);

  g_assert_cmpint (setrlimit (RLIMIT_NOFILE, &old), ==, 0);
}

static void
test_setup_low_fd_limit (void)
{
  if (g_test_subprocess ())
    {
      g_log_set_writer_func (tolerate_threads_warning, NULL, NULL);
      check_low_fd_limit (FALSE);
      check_low_fd_limit (TRUE);
      return;
    }
  /* The limit, and the descriptors in use, of a process of its own. */
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
  g_test_trap_assert_passed ();
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/setup/stdio", test_setup_stdio);
  g_test_add_func ("/detached-code/setup/fds-socket", test_setup_fds_socket);
  g_test_add_func ("/detached-code/setup/fds-pipe", test_setup_fds_pipe);
  g_test_add_func ("/detached-code/setup/env", test_setup_env);
  g_test_add_func ("/detached-code/setup/cwd", test_setup_cwd);
  g_test_add_func ("/detached-code/setup/init-func", test_setup_init_func);
  g_test_add_func ("/detached-code/setup/signals", test_setup_signals);
  g_test_add_func ("/detached-code/setup/low-fd-limit", test_setup_low_fd_limit);
  g_test_add_func ("/detached-code/fds/round-trip", test_fds_round_trip);
  g_test_add_func ("/detached-code/fds/refused", test_fds_refused);
  g_test_add_func ("/detached-code/fds/at-limit", test_fds_at_limit);
  g_test_add_func ("/detached-code/fds/no-leak", test_fds_no_leak);
  g_test_add_func ("/detached-code/memfd/large", test_memfd_large);
  g_test_add_func ("/detached-code/memfd/unsealed", test_memfd_unsealed);

  return g_test_run ();
}
