/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The workers' sandbox: each flag stops what it forbids, naming the
 * system call, lets its neighbours be, and the pool goes on. */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "dc-wire-private.h"

#include "dc-test-common.h"

/* Where allocations escape, so that no compiler elides them. */
static char *volatile allocation_sink;

/* A socket the init function made, before the sandbox. */
static int init_socket = -1;

static void
init_with_socket (gpointer data)
{
  init_socket = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

static gpointer
thread_func (gpointer data)
{
  return GINT_TO_POINTER (42);
}

/* A thread the init function starts, before the sandbox: it makes a
 * socket when a byte comes on its pipe. */
static int init_thread_pipe[2] = { -1, -1 };

static gpointer
init_thread_func (gpointer data)
{
  char byte;

  while (read (init_thread_pipe[0], &byte, 1) == 1)
    {
      int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

      if (fd >= 0)
        close (fd);
    }
  return NULL;
}

static void
init_with_thread (gpointer data)
{
  g_assert_cmpint (pipe2 (init_thread_pipe, O_CLOEXEC), ==, 0);
  g_thread_unref (g_thread_new ("made-by-init", init_thread_func, NULL));
}

/* A report of a sandbox that stopped nothing: what a hostile worker may
 * send.  The channel is the worker's highest descriptor. */
static void
forge_report (const guint32 *words,
              gsize          size)
{
  guint8 frame[DC_WIRE_HEADER_SIZE + 8];

  dc_wire_header_encode (frame, DC_WIRE_SANDBOX_STOPPED, 0, size);
  memcpy (frame + DC_WIRE_HEADER_SIZE, words, size);
  g_assert_cmpint (write (highest_fd (), frame, DC_WIRE_HEADER_SIZE + size), ==,
                   (gssize) (DC_WIRE_HEADER_SIZE + size));
}

/* "(ss)": what to do, and a path for the actions that take one.  Returns
 * "(i)": 0 or a positive result, or -errno. */
static GVariant *
sandbox_code (GVariant  *args,
              gpointer   user_data,
              GError   **error)
{
  const char *what, *path;
  long r = 0;

  g_variant_get (args, "(&s&s)", &what, &path);

  if (g_str_equal (what, "pid"))
    r = getpid ();
  else if (g_str_equal (what, "exec"))
    {
      char *argv[] = { "/bin/true", NULL };
      char *envp[] = { NULL };

      r = execve (argv[0], argv, envp);
    }
  else if (g_str_equal (what, "socket"))
    {
      int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

      r = fd < 0 ? -errno : 0;
      if (fd >= 0)
        close (fd);
    }
  else if (g_str_equal (what, "socketpair"))
    {
      int sv[2];

      r = socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ? -errno : 0;
      if (r == 0)
        {
          close (sv[0]);
          close (sv[1]);
        }
    }
  else if (g_str_equal (what, "init-socket"))
    r = init_socket;
  else if (g_str_equal (what, "fork"))
    {
      pid_t pid = fork ();

      if (pid == 0)
        _exit (0);
      if (pid > 0)
        waitpid (pid, NULL, 0);
      r = pid < 0 ? -errno : 0;
    }
  else if (g_str_equal (what, "thread"))
    r = GPOINTER_TO_INT (g_thread_join (g_thread_new ("sandboxed", thread_func, NULL)));
  else if (g_str_equal (what, "signal-parent"))
    r = kill (getppid (), 0) < 0 ? -errno : 0;   /* signal 0: harmless if allowed */
  else if (g_str_equal (what, "signal-self"))
    {
      r = kill (getpid (), 0) < 0 ? -errno : 0;
      if (r == 0)
        r = syscall (SYS_tgkill, getpid (), gettid (), 0) < 0 ? -errno : 0;
      if (r == 0)
        {
          /* raise() goes through tgkill() with the worker's own pid. */
          signal (SIGUSR1, SIG_IGN);
          r = raise (SIGUSR1) != 0 ? -errno : 0;
          signal (SIGUSR1, SIG_DFL);
        }
    }
  else if (g_str_equal (what, "g-alloc"))
    {
      /* g_malloc() aborts when it cannot. */
      allocation_sink = g_malloc ((gsize) g_ascii_strtoull (path, NULL, 10) << 20);
      r = allocation_sink != NULL;
      g_free (allocation_sink);
    }
  else if (g_str_equal (what, "socket-in-init-thread"))
    {
      /* The init function's thread is under the filter too: the worker
       * is stopped while this call waits. */
      g_assert_cmpint (write (init_thread_pipe[1], "x", 1), ==, 1);
      g_usleep (60 * G_USEC_PER_SEC);
    }
  else if (g_str_equal (what, "forge-short"))
    {
      guint32 words[2] = { 0, 59 };

      forge_report (words, 4);
      g_usleep (60 * G_USEC_PER_SEC);
    }
  else if (g_str_equal (what, "forge-unknown"))
    {
      guint32 words[2] = { 0, 99999 };

      forge_report (words, 8);
      g_usleep (60 * G_USEC_PER_SEC);
    }
  else if (g_str_equal (what, "io-uring"))
    {
      /* Its parameters: 120 bytes, zeroed. */
      guint8 params[120] = { 0, };
      long fd = syscall (__NR_io_uring_setup, 1, params);

      r = fd < 0 ? -errno : 0;
      if (fd >= 0)
        close ((int) fd);
    }
  else if (g_str_equal (what, "setown-parent"))
    {
      int sv[2];

      g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
      /* Nothing is written, so no signal would come even if allowed. */
      r = fcntl (sv[0], F_SETOWN, (int) getppid ()) < 0 ? -errno : 0;
      close (sv[0]);
      close (sv[1]);
    }
  else if (g_str_equal (what, "prlimit-parent"))
    {
      struct rlimit old;

      r = prlimit (getppid (), RLIMIT_NOFILE, NULL, &old) < 0 ? -errno : 0;
    }
  else if (g_str_equal (what, "prlimit-self"))
    {
      struct rlimit old;

      r = getrlimit (RLIMIT_NOFILE, &old) < 0 ? -errno : 0;
      if (r == 0)
        r = setrlimit (RLIMIT_NOFILE, &old) < 0 ? -errno : 0;
    }
  else if (g_str_equal (what, "renice-parent"))
    {
      /* To the nice value it has: harmless if allowed. */
      errno = 0;
      r = getpriority (PRIO_PROCESS, (id_t) getppid ());
      r = errno != 0 ? -errno
                     : setpriority (PRIO_PROCESS, (id_t) getppid (), (int) r) < 0 ? -errno : 0;
    }
  else if (g_str_equal (what, "renice-self"))
    {
      errno = 0;
      r = getpriority (PRIO_PROCESS, 0);
      r = errno != 0 ? -errno : setpriority (PRIO_PROCESS, 0, (int) r) < 0 ? -errno : 0;
    }
  else if (g_str_equal (what, "pidfd-getfd"))
    r = syscall (__NR_pidfd_getfd, -1, 0, 0) < 0 ? -errno : 0;
  else if (g_str_equal (what, "tiocsti"))
    {
      /* On no descriptor: harmless if allowed. */
      char c = 0;

      r = ioctl (-1, TIOCSTI, &c) < 0 ? -errno : 0;
    }
  else if (g_str_equal (what, "chmod"))
    {
      /* A path that does not exist: harmless if allowed. */
      r = syscall (__NR_fchmodat, AT_FDCWD, "/nonexistent/dc-sandbox", 0600) < 0 ? -errno : 0;
    }
  else if (g_str_equal (what, "abort"))
    abort ();
  else if (g_str_equal (what, "ptrace"))
    r = ptrace (PTRACE_PEEKDATA, getppid (), NULL, NULL) < 0 ? -errno : 0;
  else if (g_str_equal (what, "read"))
    {
      int fd = open (path, O_RDONLY | O_CLOEXEC);

      r = fd < 0 ? -errno : 0;
      if (fd >= 0)
        close (fd);
    }
  else if (g_str_equal (what, "write"))
    {
      int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

      r = fd < 0 ? -errno : 0;
      if (fd >= 0)
        close (fd);
    }
  else if (g_str_equal (what, "alloc"))
    {
      /* @path is a size in MiB; every page touched. */
      gsize size = (gsize) g_ascii_strtoull (path, NULL, 10) << 20;
      char *p = malloc (size);

      allocation_sink = p;
      r = p != NULL;
      if (p != NULL)
        memset (p, 1, size);
      free (allocation_sink);
    }
  else
    g_assert_not_reached ();

  return g_variant_new ("(i)", (gint32) r);
}

static DcDetachedCode *
new_sandboxed (DcSandboxFlags flags,
               gboolean       fork_server)
{
  DcDetachedCode *code = dc_detached_code_new (sandbox_code, NULL, NULL);

  g_object_set (code, "min-workers", 1, "max-workers", 1, "sandbox", flags,
                "fork-server", fork_server, NULL);
  return code;
}

/* Runs @what in a worker: its result, or -1000 with @error set. */
static int
run (DcDetachedCode  *code,
     const char      *what,
     const char      *path,
     GError         **error)
{
  Result r = { 0, };
  gint32 value = -1000;

  call_sync (code, g_variant_new ("(ss)", what, path ? path : ""), &r);
  if (r.error != NULL)
    g_propagate_error (error, g_steal_pointer (&r.error));
  else
    g_variant_get (r.value, "(i)", &value);
  result_clear (&r);
  return value;
}

static int
run_ok (DcDetachedCode *code,
        const char     *what,
        const char     *path)
{
  g_autoptr(GError) error = NULL;
  int value = run (code, what, path, &error);

  g_assert_no_error (error);
  return value;
}

/* @what stops the worker; the message names @syscall; the pool goes on
 * with a new worker. */
static void
assert_stopped (DcDetachedCode *code,
                const char     *what,
                const char     *syscall_name)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *pattern = g_strdup_printf ("Worker process * was stopped by the sandbox: "
                                              "it called %s()", syscall_name);
  int before = run_ok (code, "pid", NULL);

  run (code, what, NULL, &error);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX);
  if (!g_pattern_match_simple (pattern, error->message))
    g_error ("“%s” does not match “%s”", error->message, pattern);

  /* The next call works, in a new worker. */
  g_assert_cmpint (run_ok (code, "pid", NULL), !=, before);
}

static void
test_property (void)
{
  DcDetachedCode *code = dc_detached_code_new (sandbox_code, NULL, NULL);
  guint notified = 0;
  DcSandboxFlags flags;
  guint64 limit;

  g_signal_connect_swapped (code, "notify::sandbox", G_CALLBACK (g_atomic_int_inc), &notified);
  g_signal_connect_swapped (code, "notify::memory-limit", G_CALLBACK (g_atomic_int_inc), &notified);

  g_assert_cmpint (dc_detached_code_get_sandbox (code), ==, DC_SANDBOX_NONE);
  g_assert_cmpuint (dc_detached_code_get_memory_limit (code), ==, 0);
  dc_detached_code_set_sandbox (code, DC_SANDBOX_NO_EXEC | DC_SANDBOX_NO_NETWORK);
  g_assert_cmpuint (notified, ==, 1);
  dc_detached_code_set_sandbox (code, DC_SANDBOX_NO_EXEC | DC_SANDBOX_NO_NETWORK);
  g_assert_cmpuint (notified, ==, 1);
  g_object_set (code, "memory-limit", (guint64) 1 << 40, NULL);
  g_object_set (code, "memory-limit", (guint64) 1 << 40, NULL);
  g_assert_cmpuint (notified, ==, 2);
  g_object_get (code, "sandbox", &flags, "memory-limit", &limit, NULL);
  g_assert_cmpint (flags, ==, DC_SANDBOX_NO_EXEC | DC_SANDBOX_NO_NETWORK);
  g_assert_cmpuint (limit, ==, (guint64) 1 << 40);
  g_assert_cmpint (DC_SANDBOX_ALL, ==, DC_SANDBOX_NO_EXEC | DC_SANDBOX_NO_NETWORK |
                   DC_SANDBOX_NO_SPAWN | DC_SANDBOX_NO_PROCESS_ACCESS | DC_SANDBOX_FILESYSTEM);
  /* Appended: after BUSY, the code before it. */
  g_assert_cmpint (DC_DETACHED_CODE_ERROR_SANDBOX, ==, DC_DETACHED_CODE_ERROR_BUSY + 1);

  g_object_unref (code);
}

static void
test_no_exec (gconstpointer data)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_NO_EXEC, GPOINTER_TO_INT (data));

  assert_stopped (code, "exec", "execve");
  /* Typing into the terminal, for its shell to run. */
  assert_stopped (code, "tiocsti", "ioctl");
  /* Its neighbours still work. */
  g_assert_cmpint (run_ok (code, "socket", NULL), ==, 0);
  g_assert_cmpint (run_ok (code, "thread", NULL), ==, 42);
  destroy_pool (code);
}

/* The report travels on the pipe stream as well. */
static void
test_pipe_stream (void)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_NO_EXEC, TRUE);

  dc_detached_code_set_stream (code, DC_STREAM_PIPE);
  assert_stopped (code, "exec", "execve");
  destroy_pool (code);
}

static void
test_no_network (gconstpointer data)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_NO_NETWORK, GPOINTER_TO_INT (data));
  int init_fd;

  /* Before the sandbox, the init function may open one. */
  dc_detached_code_set_worker_init_func (code, init_with_socket, NULL, NULL);
  init_fd = run_ok (code, "init-socket", NULL);
  g_assert_cmpint (init_fd, >=, 0);

  assert_stopped (code, "socket", "socket");
  /* io_uring would make one unseen. */
  assert_stopped (code, "io-uring", "io_uring_setup");
  g_assert_cmpint (run_ok (code, "socketpair", NULL), ==, 0);
  destroy_pool (code);
}

static void
test_init_thread (gconstpointer data)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_NO_NETWORK, GPOINTER_TO_INT (data));

  dc_detached_code_set_worker_init_func (code, init_with_thread, NULL, NULL);
  assert_stopped (code, "socket-in-init-thread", "socket");
  destroy_pool (code);
}

/* A worker that lies about being stopped is killed all the same; a
 * malformed report is a protocol error. */
static void
test_forged_report (void)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_NONE, TRUE);
  g_autoptr(GError) error = NULL;

  run (code, "forge-short", NULL, &error);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_assert_nonnull (strstr (error->message, "a malformed sandbox report"));
  g_clear_error (&error);

  run (code, "forge-unknown", NULL, &error);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX);
  if (!g_pattern_match_simple ("Worker process * was stopped by the sandbox: it made system "
                               "call 99999", error->message))
    g_error ("unexpected message: %s", error->message);

  g_assert_cmpint (run_ok (code, "pid", NULL), >, 0);
  destroy_pool (code);
}

static void
test_no_spawn (gconstpointer data)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_NO_SPAWN, GPOINTER_TO_INT (data));

  /* fork() is a clone() without CLONE_THREAD. */
  assert_stopped (code, "fork", "clone");
  g_assert_cmpint (run_ok (code, "thread", NULL), ==, 42);
  g_assert_cmpint (run_ok (code, "thread", NULL), ==, 42);
  destroy_pool (code);
}

static void
test_no_process_access (gconstpointer data)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_NO_PROCESS_ACCESS, GPOINTER_TO_INT (data));
  g_autoptr(GError) error = NULL;

  assert_stopped (code, "signal-parent", "kill");
  assert_stopped (code, "ptrace", "ptrace");
  /* Signals the kernel would send it, its limits and its scheduling, its
   * descriptors. */
  assert_stopped (code, "setown-parent", "fcntl");
  assert_stopped (code, "prlimit-parent", "prlimit64");
  assert_stopped (code, "renice-parent", "setpriority");
  assert_stopped (code, "pidfd-getfd", "pidfd_getfd");
  /* The same for itself is allowed. */
  g_assert_cmpint (run_ok (code, "prlimit-self", NULL), ==, 0);
  g_assert_cmpint (run_ok (code, "renice-self", NULL), ==, 0);
  /* Signalling itself is allowed, and abort() still kills it. */
  g_assert_cmpint (run_ok (code, "signal-self", NULL), ==, 0);
  run (code, "abort", NULL, &error);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  g_assert_nonnull (strstr (error->message, "SIGABRT"));
  g_assert_cmpint (run_ok (code, "signal-self", NULL), ==, 0);
  destroy_pool (code);
}

static void
test_filesystem (gconstpointer data)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_FILESYSTEM, GPOINTER_TO_INT (data));
  g_autofree char *top = g_dir_make_tmp ("dc-sandbox-XXXXXX", NULL);
  g_autofree char *dir = g_build_filename (top, "rw", NULL);
  g_autofree char *inside = g_build_filename (dir, "inside", NULL);
  g_autofree char *readable = g_build_filename (top, "readable", NULL);
  g_autofree char *parent_mem = g_strdup_printf ("/proc/%d/mem", (int) getpid ());

  g_assert_nonnull (top);
  g_assert_cmpint (g_mkdir (dir, 0700), ==, 0);
  g_assert_true (g_file_set_contents (readable, "data", -1, NULL));
  dc_detached_code_add_sandbox_path (code, readable, DC_SANDBOX_ACCESS_READ);
  dc_detached_code_add_sandbox_path (code, dir, DC_SANDBOX_ACCESS_READ_WRITE);

  g_assert_cmpint (run_ok (code, "read", readable), ==, 0);
  g_assert_cmpint (run_ok (code, "write", inside), ==, 0);
  g_assert_true (g_file_test (inside, G_FILE_TEST_EXISTS));
  g_assert_cmpint (run_ok (code, "read", inside), ==, 0);
  /* Elsewhere: EACCES, and the worker lives. */
  g_assert_cmpint (run_ok (code, "read", "/etc/passwd"), ==, -EACCES);
  g_assert_cmpint (run_ok (code, "read", parent_mem), ==, -EACCES);
  g_assert_cmpint (run_ok (code, "write", "/tmp/dc-sandbox-outside"), ==, -EACCES);
  g_assert_false (g_file_test ("/tmp/dc-sandbox-outside", G_FILE_TEST_EXISTS));
  /* Read only where read was asked. */
  g_assert_cmpint (run_ok (code, "write", readable), ==, -EACCES);
  /* A file's mode, which Landlock does not rule. */
  assert_stopped (code, "chmod", "fchmodat");

  destroy_pool (code);
  g_unlink (inside);
  g_unlink (readable);
  g_rmdir (dir);
  g_rmdir (top);
}

static void
test_all (gconstpointer data)
{
  DcDetachedCode *code = new_sandboxed (DC_SANDBOX_ALL, GPOINTER_TO_INT (data));

  g_assert_cmpint (run_ok (code, "thread", NULL), ==, 42);
  g_assert_cmpint (run_ok (code, "read", "/etc/passwd"), ==, -EACCES);
  assert_stopped (code, "exec", "execve");
  assert_stopped (code, "socket", "socket");
  g_assert_cmpint (run_ok (code, "signal-self", NULL), ==, 0);
  destroy_pool (code);
}

/* Settings that cannot work fail start() and the first call, with no
 * worker made. */
static void
assert_refused (DcDetachedCode *code,
                GQuark          domain,
                int             error_code,
                const char     *pattern)
{
  g_autoptr(GError) error = NULL;

  g_assert_false (dc_detached_code_start (code, &error));
  g_assert_error (error, domain, error_code);
  if (!g_pattern_match_simple (pattern, error->message))
    g_error ("“%s” does not match “%s”", error->message, pattern);
  g_clear_error (&error);

  run (code, "pid", NULL, &error);
  g_assert_error (error, domain, error_code);
  g_assert_cmpuint (dc_detached_code_get_n_workers (code), ==, 0);
  destroy_pool (code);
  assert_no_children ();
}

static void
test_bad_input (void)
{
  DcDetachedCode *code;

  code = new_sandboxed (DC_SANDBOX_NONE, TRUE);
  dc_detached_code_set_sandbox (code, DC_SANDBOX_NO_EXEC | (1 << 12));
  assert_refused (code, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                  "Unknown sandbox flags 0x1000");

  code = new_sandboxed (DC_SANDBOX_FILESYSTEM, TRUE);
  dc_detached_code_add_sandbox_path (code, "relative/dir", DC_SANDBOX_ACCESS_READ);
  assert_refused (code, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                  "*“relative/dir” is not absolute");

  code = new_sandboxed (DC_SANDBOX_FILESYSTEM, FALSE);
  dc_detached_code_add_sandbox_path (code, "/nonexistent/dc-sandbox", DC_SANDBOX_ACCESS_READ);
  assert_refused (code, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                  "*“/nonexistent/dc-sandbox” does not exist");

  code = new_sandboxed (DC_SANDBOX_NONE, TRUE);
  dc_detached_code_set_memory_limit (code, 1 << 20);
  assert_refused (code, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                  "The memory-limit of 1.0?MiB is too small*");
}

/* The worker's g_error() text is expected noise. */
static void
silence_stderr (gpointer data)
{
  int fd = open ("/dev/null", O_WRONLY | O_CLOEXEC);

  dup2 (fd, 2);
  close (fd);
}

static guint64
mapped_now (void)
{
  g_autofree char *statm = NULL;

  g_assert_true (g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL));
  return g_ascii_strtoull (statm, NULL, 10) * (guint64) sysconf (_SC_PAGESIZE);
}

static void
test_memory_limit (gconstpointer data)
{
  DcDetachedCode *code;
  guint64 mapped = mapped_now ();
  g_autoptr(GError) error = NULL;

  /* A sanitizer reserves terabytes of address space up front. */
  if (mapped > ((guint64) 1 << 40))
    {
      g_test_skip ("the address space is reserved by a sanitizer");
      return;
    }

  code = new_sandboxed (DC_SANDBOX_NONE, GPOINTER_TO_INT (data));
  dc_detached_code_set_memory_limit (code, mapped + ((guint64) 256 << 20));
  dc_detached_code_set_worker_init_func (code, silence_stderr, NULL, NULL);
  g_assert_cmpint (run_ok (code, "alloc", "16"), ==, 1);
  g_assert_cmpint (run_ok (code, "alloc", "1024"), ==, 0);
  g_assert_cmpint (run_ok (code, "alloc", "16"), ==, 1);

  /* A worker that dies under the limit says it ran under one. */
  run (code, "g-alloc", "1024", &error);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED);
  if (!g_pattern_match_simple ("Worker process * was killed by signal *; it ran under a "
                               "memory-limit of *MiB, and an allocation past it fails",
                               error->message))
    g_error ("unexpected message: %s", error->message);
  g_assert_cmpint (run_ok (code, "alloc", "16"), ==, 1);
  destroy_pool (code);
}


static void
add_both (const char    *path,
          GTestDataFunc  func)
{
  g_autofree char *with_template = g_strconcat (path, "/fork-server", NULL);
  g_autofree char *direct = g_strconcat (path, "/direct", NULL);

  g_test_add_data_func (with_template, GINT_TO_POINTER (TRUE), func);
  g_test_add_data_func (direct, GINT_TO_POINTER (FALSE), func);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);
  g_log_set_writer_func (tolerate_threads_warning, NULL, NULL);

  g_test_add_func ("/detached-code/sandbox/property", test_property);
  add_both ("/detached-code/sandbox/no-exec", test_no_exec);
  add_both ("/detached-code/sandbox/no-network", test_no_network);
  add_both ("/detached-code/sandbox/no-spawn", test_no_spawn);
  add_both ("/detached-code/sandbox/init-thread", test_init_thread);
  g_test_add_func ("/detached-code/sandbox/forged-report", test_forged_report);
  g_test_add_func ("/detached-code/sandbox/pipe-stream", test_pipe_stream);
  add_both ("/detached-code/sandbox/no-process-access", test_no_process_access);
  add_both ("/detached-code/sandbox/filesystem", test_filesystem);
  add_both ("/detached-code/sandbox/all", test_all);
  add_both ("/detached-code/sandbox/memory-limit", test_memory_limit);
  g_test_add_func ("/detached-code/sandbox/bad-input", test_bad_input);

  return g_test_run ();
}
