/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* How a worker is made: everything it is given, prepared in the parent,
 * and the clone, asked of the worker template or done here.  What runs in
 * the template is in dc-template.c, what runs in a worker in dc-worker.c. */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>
#include <glib-unix.h>

#include "dc-launcher-private.h"
#include "dc-process-private.h"
#include "dc-sandbox-private.h"
#include "dc-template-private.h"
#include "dc-wire-private.h"
#include "dc-worker-private.h"

/* How long a spawn waits for the template's answer before it gives the
 * template up: it answers in well under a millisecond unless it is
 * stopped or swapped out. */
#define TEMPLATE_TIMEOUT_MS 10000

typedef struct _DcTemplate DcTemplate;

typedef struct
{
  char     *variable;
  char     *value;     /* NULL: unset */
  gboolean  overwrite;
} EnvOp;

struct _DcLauncher
{
  DcCodeFunc        func;       /* one of func and fd_func */
  DcCodeFdFunc      fd_func;
  gpointer          user_data;
  GDestroyNotify    user_data_free;
  DcWorkerInitFunc  init_func;
  gpointer          init_data;
  GDestroyNotify    init_data_free;

  DcStream          stream;
  DcSetupFlags      setup_flags;
  char             *cwd;
  GArray           *env_ops;    /* EnvOp, applied in order at each fork */
  DcSandboxFlags    sandbox_flags;
  GArray           *sandbox_paths;  /* DcSandboxPath */
  guint64           memory_limit;
  GBytes           *sandbox;    /* the program for the above; NULL until built */

  GMainContext     *context;
  gboolean          fork_server;
  DcTemplate       *template;   /* NULL until needed, or once let go */
  gboolean          warned_threads;
};

/* The template as the parent sees it.  Its pidfd watch owns it: it
 * outlives the launcher until it is reaped. */
struct _DcTemplate
{
  DcLauncher *launcher;   /* NULL once let go */
  GPid        pid;
  int         pidfd;
  int         fd;         /* the channel; -1 once let go */
  GSource    *watch;
  gint32     *slots;      /* the pid slots, shared with it */
};

static void
env_op_clear (EnvOp *op)
{
  g_free (op->variable);
  g_free (op->value);
}

DcLauncher *
dc_launcher_new (GMainContext *context)
{
  DcLauncher *launcher = g_new0 (DcLauncher, 1);

  launcher->context = context;
  launcher->fork_server = TRUE;
  launcher->stream = DC_STREAM_AUTO;
  launcher->setup_flags = DC_SETUP_NONE;
  launcher->env_ops = g_array_new (FALSE, FALSE, sizeof (EnvOp));
  g_array_set_clear_func (launcher->env_ops, (GDestroyNotify) env_op_clear);
  launcher->sandbox_paths = g_array_new (FALSE, FALSE, sizeof (DcSandboxPath));
  g_array_set_clear_func (launcher->sandbox_paths, (GDestroyNotify) dc_sandbox_path_clear);
  return launcher;
}

void
dc_launcher_free (DcLauncher *launcher,
                  gboolean    reap_now)
{
  dc_launcher_close_template (launcher, reap_now);
  if (launcher->user_data_free != NULL)
    launcher->user_data_free (launcher->user_data);
  if (launcher->init_data_free != NULL)
    launcher->init_data_free (launcher->init_data);
  g_free (launcher->cwd);
  g_array_unref (launcher->env_ops);
  g_array_unref (launcher->sandbox_paths);
  g_clear_pointer (&launcher->sandbox, g_bytes_unref);
  g_free (launcher);
}

void
dc_launcher_set_code (DcLauncher     *launcher,
                      DcCodeFunc      func,
                      DcCodeFdFunc    fd_func,
                      gpointer        user_data,
                      GDestroyNotify  user_data_free)
{
  g_assert (!dc_launcher_has_code (launcher));
  launcher->func = func;
  launcher->fd_func = fd_func;
  launcher->user_data = user_data;
  launcher->user_data_free = user_data_free;
}

gboolean
dc_launcher_has_code (DcLauncher *launcher)
{
  return launcher->func != NULL || launcher->fd_func != NULL;
}

gboolean
dc_launcher_takes_fds (DcLauncher *launcher)
{
  return launcher->fd_func != NULL;
}

void
dc_launcher_set_init_func (DcLauncher       *launcher,
                           DcWorkerInitFunc  func,
                           gpointer          user_data,
                           GDestroyNotify    user_data_free)
{
  if (launcher->init_data_free != NULL)
    launcher->init_data_free (launcher->init_data);
  launcher->init_func = func;
  launcher->init_data = user_data;
  launcher->init_data_free = user_data_free;
  /* The template holds the old function and data, and the new data may
   * not exist in its memory: the next worker comes from a new one. */
  dc_launcher_close_template (launcher, FALSE);
}

void
dc_launcher_setenv (DcLauncher *launcher,
                    const char *variable,
                    const char *value,
                    gboolean    overwrite)
{
  EnvOp op = { g_strdup (variable), g_strdup (value), overwrite };

  g_array_append_val (launcher->env_ops, op);
}

void
dc_launcher_unsetenv (DcLauncher *launcher,
                      const char *variable)
{
  dc_launcher_setenv (launcher, variable, NULL, TRUE);
}

void
dc_launcher_set_cwd (DcLauncher *launcher,
                     const char *cwd)
{
  g_free (launcher->cwd);
  launcher->cwd = g_strdup (cwd);
}

const char *
dc_launcher_get_cwd (DcLauncher *launcher)
{
  return launcher->cwd;
}

void
dc_launcher_set_setup_flags (DcLauncher   *launcher,
                             DcSetupFlags  flags)
{
  launcher->setup_flags = flags;
}

DcSetupFlags
dc_launcher_get_setup_flags (DcLauncher *launcher)
{
  return launcher->setup_flags;
}

void
dc_launcher_set_stream (DcLauncher *launcher,
                        DcStream    stream)
{
  launcher->stream = stream;
}

DcStream
dc_launcher_get_stream (DcLauncher *launcher)
{
  return launcher->stream;
}

gboolean
dc_launcher_is_socket (DcLauncher *launcher)
{
  return launcher->stream != DC_STREAM_PIPE;
}

void
dc_launcher_set_fork_server (DcLauncher *launcher,
                             gboolean    fork_server)
{
  launcher->fork_server = fork_server;
  if (!fork_server)
    dc_launcher_close_template (launcher, FALSE);
}

gboolean
dc_launcher_get_fork_server (DcLauncher *launcher)
{
  return launcher->fork_server;
}

void
dc_launcher_set_sandbox (DcLauncher     *launcher,
                         DcSandboxFlags  flags)
{
  launcher->sandbox_flags = flags;
  g_clear_pointer (&launcher->sandbox, g_bytes_unref);
}

DcSandboxFlags
dc_launcher_get_sandbox (DcLauncher *launcher)
{
  return launcher->sandbox_flags;
}

void
dc_launcher_add_sandbox_path (DcLauncher      *launcher,
                              const char      *path,
                              DcSandboxAccess  access)
{
  DcSandboxPath p = { g_strdup (path), access };

  g_array_append_val (launcher->sandbox_paths, p);
  g_clear_pointer (&launcher->sandbox, g_bytes_unref);
}

void
dc_launcher_set_memory_limit (DcLauncher *launcher,
                              guint64     memory_limit)
{
  launcher->memory_limit = memory_limit;
  g_clear_pointer (&launcher->sandbox, g_bytes_unref);
}

guint64
dc_launcher_get_memory_limit (DcLauncher *launcher)
{
  return launcher->memory_limit;
}

/* The child stores this array; it builds nothing itself. */
static char **
build_envp (DcLauncher *launcher)
{
  char **envp;
  guint i;

  if (launcher->env_ops->len == 0)
    return NULL;

  envp = g_get_environ ();
  for (i = 0; i < launcher->env_ops->len; i++)
    {
      EnvOp *op = &g_array_index (launcher->env_ops, EnvOp, i);

      if (op->value != NULL)
        envp = g_environ_setenv (envp, op->variable, op->value, op->overwrite);
      else
        envp = g_environ_unsetenv (envp, op->variable);
    }
  return envp;
}

/* Moves descriptors on 0..2 to 3 and above, keeping close-on-exec.  A
 * socket's single descriptor is in both. */
static gboolean
move_above_stdio (int *read_fd,
                  int *write_fd)
{
  int *fds[2] = { read_fd, write_fd };
  guint i;

  for (i = 0; i < 2; i++)
    if (*fds[i] <= 2)
      {
        int old = *fds[i];
        int moved = fcntl (old, F_DUPFD_CLOEXEC, 3);

        if (moved < 0)
          return FALSE;
        close (old);
        if (*read_fd == old)
          *read_fd = moved;
        if (*write_fd == old)
          *write_fd = moved;
      }
  return TRUE;
}

static void
close_pair (int read_fd,
            int write_fd)
{
  if (read_fd >= 0)
    close (read_fd);
  if (write_fd >= 0 && write_fd != read_fd)
    close (write_fd);
}

/* Under DC_SETUP_CAPTURE_STDERR, the pipe that becomes the worker's
 * stderr: the parent's end non-blocking, neither on 0..2. */
static gboolean
make_stderr_pipe (DcLauncher     *launcher,
                  int            *parent_fd,
                  DcWorkerSetup  *setup,
                  GError        **error)
{
  int fds[2], errsv;

  *parent_fd = -1;
  setup->stderr_fd = -1;
  if (!(launcher->setup_flags & DC_SETUP_CAPTURE_STDERR))
    return TRUE;
  if (pipe2 (fds, O_CLOEXEC) == 0)
    {
      if (move_above_stdio (&fds[0], &fds[0]) && move_above_stdio (&fds[1], &fds[1]) &&
          fcntl (fds[0], F_SETFL, O_NONBLOCK) == 0)
        {
          *parent_fd = fds[0];
          setup->stderr_fd = fds[1];
          return TRUE;
        }
      errsv = errno;
      close_pair (fds[0], fds[1]);
      errno = errsv;
    }
  errsv = errno;
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
               _("Cannot create a pipe for a worker’s stderr: %s"), g_strerror (errsv));
  return FALSE;
}

/* The descriptors of a new channel: the parent's ends and the worker's,
 * none of them on 0..2, where a host that closed its stdio would write
 * into them; and the stderr pipe, if asked (@parent_fds[2]). */
static gboolean
make_channel_fds (DcLauncher     *launcher,
                  int             parent_fds[3],
                  DcWorkerSetup  *setup,
                  GError        **error)
{
  int errsv;

  if (!make_stderr_pipe (launcher, &parent_fds[2], setup, error))
    return FALSE;

  if (launcher->stream == DC_STREAM_PIPE)
    {
      int to_worker[2], from_worker[2];

      if (pipe2 (to_worker, O_CLOEXEC) < 0)
        goto fail;
      if (pipe2 (from_worker, O_CLOEXEC) < 0)
        {
          errsv = errno;
          close_pair (to_worker[0], to_worker[1]);
          errno = errsv;
          goto fail;
        }
      parent_fds[0] = from_worker[0];
      parent_fds[1] = to_worker[1];
      setup->read_fd = to_worker[0];
      setup->write_fd = from_worker[1];
    }
  else
    {
      int sv[2];

      if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        goto fail;
      parent_fds[0] = parent_fds[1] = sv[0];
      setup->read_fd = setup->write_fd = sv[1];
    }

  if (move_above_stdio (&parent_fds[0], &parent_fds[1]) &&
      move_above_stdio (&setup->read_fd, &setup->write_fd))
    return TRUE;

  errsv = errno;
  close_pair (parent_fds[0], parent_fds[1]);
  close_pair (setup->read_fd, setup->write_fd);
  errno = errsv;

fail:
  errsv = errno;
  close_pair (parent_fds[2], setup->stderr_fd);
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
               _("Cannot create a worker channel: %s"), g_strerror (errsv));
  return FALSE;
}

/* The worker's code, as the launcher holds it now; the per-spawn parts
 * from @options. */
static void
fill_code (DcLauncher            *launcher,
           const DcLaunchOptions *options,
           DcWorkerCode          *code)
{
  memset (code, 0, sizeof *code);
  code->func = launcher->func;
  code->fd_func = launcher->fd_func;
  code->user_data = launcher->user_data;
  code->init_func = launcher->init_func;
  code->init_data = launcher->init_data;
  code->is_socket = dc_launcher_is_socket (launcher);
  /* The worker writes its pid into its own copy of the program. */
  if (launcher->sandbox != NULL)
    code->sandbox = (guint8 *) g_bytes_get_data (launcher->sandbox, &code->sandbox_size);
  if (options != NULL)
    {
      code->marshaller = options->marshaller;
      code->exit_on_die = options->exit_on_die;
      code->memfd_threshold = options->memfd_threshold;
    }
}

/* Clones with every signal blocked: a handler of the host's must not run
 * in the child before the child resets the dispositions.  The child
 * unblocks once they are default. */
static pid_t
clone_blocked (int *pidfd)
{
  sigset_t all_signals, old_mask;
  pid_t pid;
  int errsv;

  sigfillset (&all_signals);
  pthread_sigmask (SIG_SETMASK, &all_signals, &old_mask);
  pid = dc_process_clone (FALSE, pidfd, NULL);
  if (pid == 0)
    return 0;
  errsv = errno;
  pthread_sigmask (SIG_SETMASK, &old_mask, NULL);
  errno = errsv;
  return pid;
}

/* The parent's end of a channel no worker got. */
static void
drop_channel (DcLaunched *launched)
{
  g_clear_pointer (&launched->channel, dc_channel_free);
  close_pair (launched->stderr_fd, -1);
  launched->stderr_fd = -1;
}

/* A new channel: the worker's ends in @ends, to be closed once it has
 * them; the parent's made into @launched's DcChannel before the worker
 * exists, so that nothing can fail once it does. */
static gboolean
make_channel (DcLauncher     *launcher,
              DcLaunched     *launched,
              DcWorkerSetup  *ends,
              GError        **error)
{
  g_autoptr(GError) local_error = NULL;
  int parent_fds[3];

  if (!make_channel_fds (launcher, parent_fds, ends, error))
    return FALSE;

  launched->pid = 0;
  launched->pidfd = -1;
  launched->stderr_fd = parent_fds[2];
  if (parent_fds[0] != parent_fds[1])
    {
      launched->channel = dc_channel_new_pipes (parent_fds[0], parent_fds[1]);
      return TRUE;
    }
  launched->channel = dc_channel_new_socket (parent_fds[0], &local_error);
  if (launched->channel != NULL)
    return TRUE;

  close_pair (ends->read_fd, ends->write_fd);
  close_pair (ends->stderr_fd, -1);
  drop_channel (launched);
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
               _("Cannot set up a worker channel: %s"), local_error->message);
  return FALSE;
}

/* ---- the template ---- */

static void
template_free (gpointer data)
{
  DcTemplate *template = data;

  g_assert (template->launcher == NULL);
  if (template->fd >= 0)
    close (template->fd);
  close (template->pidfd);
  munmap (template->slots, DC_TEMPLATE_SLOTS_SIZE);
  g_free (template);
}

/* Reaped: says why, unless we asked it to go. */
static void
template_reaped (DcTemplate *template,
                 int         status)
{
  if (template->launcher != NULL)
    {
      if (WIFEXITED (status))
        g_warning ("The worker template (process %d) exited with status %d; the next worker "
                   "comes from a new one, made from this process as it is now",
                   (int) template->pid, WEXITSTATUS (status));
      else
        g_warning ("The worker template (process %d) was killed by signal %d (SIG%s); the next "
                   "worker comes from a new one, made from this process as it is now",
                   (int) template->pid, WTERMSIG (status),
                   sigabbrev_np (WTERMSIG (status)) ? sigabbrev_np (WTERMSIG (status)) : "?");
      template->launcher->template = NULL;
      template->launcher = NULL;
    }
}

static gboolean
template_exited_cb (gint         fd,
                    GIOCondition condition,
                    gpointer     data)
{
  DcTemplate *template = data;
  int status;

  if (!dc_process_reap (template->pidfd, FALSE, &status))
    return G_SOURCE_CONTINUE;
  template_reaped (template, status);
  return G_SOURCE_REMOVE;
}

/* It stopped answering or died: kill it, reap it, say why.  The requests
 * in @unanswered (a bit per slot) may have made workers it never told of:
 * children of ours nobody else knows, killed and reaped here. */
static void
template_lost (DcLauncher *launcher,
               guint       unanswered)
{
  DcTemplate *template = launcher->template;
  guint slot;
  int status;

  dc_process_signal (template->pidfd, template->pid, SIGKILL);
  dc_process_reap (template->pidfd, TRUE, &status);
  /* Dead: it writes no slot any more. */
  for (slot = 0; slot < DC_TEMPLATE_N_SLOTS; slot++)
    if (unanswered & (1u << slot))
      dc_process_reap_orphan (__atomic_load_n (&template->slots[slot], __ATOMIC_SEQ_CST));
  template_reaped (template, status);
  g_source_destroy (template->watch);
}

void
dc_launcher_close_template (DcLauncher *launcher,
                            gboolean    reap_now)
{
  DcTemplate *template = g_steal_pointer (&launcher->template);
  int status;

  if (template == NULL)
    return;

  /* It reads the end of its channel and leaves. */
  template->launcher = NULL;
  close (template->fd);
  template->fd = -1;
  if (reap_now)
    {
      dc_process_signal (template->pidfd, template->pid, SIGKILL);
      dc_process_reap (template->pidfd, TRUE, &status);
      g_source_destroy (template->watch);
    }
}

GPid
dc_launcher_get_template_pid (DcLauncher *launcher)
{
  return launcher->template != NULL ? launcher->template->pid : 0;
}

static gboolean
template_start (DcLauncher  *launcher,
                GError     **error)
{
  DcTemplateSetup tsetup = { 0, };
  DcWorkerCode code;
  DcTemplate *template;
  gint32 *slots;
  int sv[2], pidfd = -1, errsv;
  pid_t pid;

  slots = mmap (NULL, DC_TEMPLATE_SLOTS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                -1, 0);
  if (slots == MAP_FAILED)
    {
      errsv = errno;
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot create the worker template's channel: %s"), g_strerror (errsv));
      return FALSE;
    }
  if (socketpair (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
    sv[0] = sv[1] = -1;
  if (sv[0] < 0 || !move_above_stdio (&sv[0], &sv[0]) || !move_above_stdio (&sv[1], &sv[1]))
    {
      errsv = errno;
      close_pair (sv[0], -1);
      close_pair (sv[1], -1);
      munmap (slots, DC_TEMPLATE_SLOTS_SIZE);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot create the worker template's channel: %s"), g_strerror (errsv));
      return FALSE;
    }

  /* Below the two numbers its workers' channels take. */
  dc_worker_pick_targets (&tsetup.targets);
  tsetup.channel_fd = sv[1];
  tsetup.channel_target = MAX (tsetup.targets.target_write_fd - 2, 3);
  tsetup.parent_pid = getpid ();
  tsetup.die_with_parent = gettid () == getpid ();
  tsetup.slots = slots;
  fill_code (launcher, NULL, &code);
  /* Each request brings the sandbox of the settings it was made with. */
  code.sandbox = NULL;
  code.sandbox_size = 0;

  pid = clone_blocked (&pidfd);
  if (pid == 0)
    dc_template_main (&tsetup, &code);   /* never returns */
  errsv = errno;
  close (sv[1]);
  /* The template has its copy; nothing forked from here later gets one. */
  madvise (slots, DC_TEMPLATE_SLOTS_SIZE, MADV_DONTFORK);
  if (pid < 0)
    {
      munmap (slots, DC_TEMPLATE_SLOTS_SIZE);
      close (sv[0]);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot fork the worker template: %s"), g_strerror (errsv));
      return FALSE;
    }

  template = g_new0 (DcTemplate, 1);
  template->launcher = launcher;
  template->pid = pid;
  template->pidfd = pidfd;
  template->fd = sv[0];
  template->slots = slots;
  template->watch = g_unix_fd_source_new (pidfd, G_IO_IN);
  g_source_set_callback (template->watch, G_SOURCE_FUNC (template_exited_cb), template,
                         template_free);
  g_source_attach (template->watch, launcher->context);
  g_source_unref (template->watch);   /* attached: the context holds it */
  launcher->template = template;
  return TRUE;
}

/* The address space this process maps now, which a worker inherits;
 * 0 if unknown. */
static guint64
mapped_size (void)
{
  g_autofree char *statm = NULL;
  guint64 pages;

  if (!g_file_get_contents ("/proc/self/statm", &statm, NULL, NULL))
    return 0;
  pages = g_ascii_strtoull (statm, NULL, 10);
  return pages * (guint64) sysconf (_SC_PAGESIZE);
}

/* The sandbox program, built once per settings. */
static gboolean
build_sandbox (DcLauncher  *launcher,
               GError     **error)
{
  guint64 mapped;

  if (launcher->sandbox != NULL ||
      (launcher->sandbox_flags == DC_SANDBOX_NONE && launcher->memory_limit == 0))
    return TRUE;

  /* A worker starts with all of this mapped: under a lower limit it
   * could not allocate a byte. */
  mapped = mapped_size ();
  if (launcher->memory_limit > 0 && launcher->memory_limit <= mapped)
    {
      g_autofree char *limit = g_format_size_full (launcher->memory_limit, G_FORMAT_SIZE_IEC_UNITS);
      g_autofree char *have = g_format_size_full (mapped, G_FORMAT_SIZE_IEC_UNITS);

      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                   _("The memory-limit of %s is too small: a worker starts with the %s "
                     "this process maps"), limit, have);
      return FALSE;
    }

  launcher->sandbox = dc_sandbox_build (launcher->sandbox_flags, launcher->sandbox_paths,
                                        launcher->memory_limit, error);
  return launcher->sandbox != NULL;
}

/* What would make every spawn fail, told before any is tried. */
static gboolean
check_settings (DcLauncher  *launcher,
                GError     **error)
{
  if ((launcher->setup_flags & DC_SETUP_CAPTURE_STDERR) &&
      (launcher->setup_flags & DC_SETUP_SILENCE_STDERR))
    {
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                           _("Cannot start a worker: the setup-flags CAPTURE_STDERR and "
                             "SILENCE_STDERR exclude each other"));
      return FALSE;
    }
  if (!build_sandbox (launcher, error))
    return FALSE;
  if (launcher->cwd != NULL && !g_file_test (launcher->cwd, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot start a worker: “%s” is not a directory"), launcher->cwd);
      return FALSE;
    }
  return TRUE;
}

gboolean
dc_launcher_prepare (DcLauncher  *launcher,
                     GError     **error)
{
  if (!check_settings (launcher, error))
    return FALSE;
  if (!launcher->fork_server || launcher->template != NULL)
    return TRUE;
  return template_start (launcher, error);
}

/* Sends @request (@size bytes) for pid slot @slot, with the worker's ends
 * of its channel. */
static gboolean
template_send (DcTemplate *template,
               guint8     *request,
               gsize       size,
               guint       slot,
               const int  *fds,
               guint       n_fds)
{
  __atomic_store_n (&template->slots[slot], 0, __ATOMIC_SEQ_CST);
  dc_template_request_set_slot (request, slot);
  return dc_wire_sendmsg (template->fd, request, size, fds, n_fds) == (gssize) size;
}

typedef enum
{
  ANSWER_OK,
  ANSWER_REFUSED,    /* it could not clone: errno in the reply */
  ANSWER_GONE,       /* it died */
  ANSWER_SILENT,     /* it did not answer in time */
} Answer;

static Answer
template_receive (DcTemplate      *template,
                  DcTemplateReply *reply,
                  int             *pidfd)
{
  union {
    char buf[CMSG_SPACE (sizeof (int) * 2)];
    struct cmsghdr align;
  } control;
  struct pollfd pfd = { template->fd, POLLIN, 0 };
  struct iovec iov = { reply, sizeof *reply };
  struct msghdr msg = { 0, };
  struct cmsghdr *cmsg;
  gint64 deadline = g_get_monotonic_time () + TEMPLATE_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
  ssize_t n;
  int r;

  /* A blocking wait, on purpose: the worker is wanted now, and the
   * template answers at once. */
  do
    {
      gint64 left = (deadline - g_get_monotonic_time ()) / G_TIME_SPAN_MILLISECOND;

      r = poll (&pfd, 1, (int) MAX (left, 0));
    }
  while (r < 0 && errno == EINTR);
  if (r == 0)
    return ANSWER_SILENT;

  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  do
    n = recvmsg (template->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n != sizeof *reply || reply->magic != DC_TEMPLATE_MAGIC)
    return ANSWER_GONE;

  *pidfd = -1;
  for (cmsg = CMSG_FIRSTHDR (&msg); cmsg != NULL; cmsg = CMSG_NXTHDR (&msg, cmsg))
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS)
      {
        gsize i, count = (cmsg->cmsg_len - CMSG_LEN (0)) / sizeof (int);

        for (i = 0; i < count; i++)
          {
            int fd;

            memcpy (&fd, CMSG_DATA (cmsg) + i * sizeof (int), sizeof (int));
            if (*pidfd < 0)
              *pidfd = fd;
            else
              close (fd);
          }
      }
  if (reply->pid <= 0 || *pidfd < 0)
    {
      if (*pidfd >= 0)
        close (*pidfd);
      return reply->pid > 0 ? ANSWER_GONE : ANSWER_REFUSED;
    }
  return ANSWER_OK;
}

/* Requests sent before the first answer is read: the template clones
 * while the parent sets up the next channel.  One pid slot each. */
#define SPAWN_BATCH DC_TEMPLATE_N_SLOTS

/* Sends up to SPAWN_BATCH requests, then reads their answers in order.
 * Returns how many workers it made; *@answer is ANSWER_GONE or
 * ANSWER_SILENT if the template was lost on the way, with the slots of
 * the requests it did not answer in *@unanswered, and @error holds the
 * first other failure. */
static guint
template_round (DcLauncher       *launcher,
                GBytes           *request,
                DcLaunched       *launched,
                guint             n,
                Answer           *answer,
                guint            *unanswered,
                GError          **error)
{
  DcLaunched prepared[SPAWN_BATCH];
  guint n_sent = 0, n_made = 0, i;
  gsize size;
  g_autofree guint8 *copy = g_bytes_unref_to_data (g_bytes_ref (request), &size);

  *answer = ANSWER_OK;
  *unanswered = 0;
  n = MIN (n, SPAWN_BATCH);
  for (i = 0; i < n; i++)
    {
      DcWorkerSetup ends = { 0, };
      int worker_fds[3];
      guint n_fds = 0;
      gboolean sent;

      if (!make_channel (launcher, &prepared[i], &ends, error))
        break;
      /* The channel's ends, then the stderr pipe's, as the request's
       * flags say. */
      worker_fds[n_fds++] = ends.read_fd;
      if (ends.write_fd != ends.read_fd)
        worker_fds[n_fds++] = ends.write_fd;
      if (ends.stderr_fd >= 0)
        worker_fds[n_fds++] = ends.stderr_fd;
      sent = template_send (launcher->template, copy, size, i, worker_fds, n_fds);
      close_pair (ends.read_fd, ends.write_fd);
      close_pair (ends.stderr_fd, -1);
      if (!sent)
        {
          drop_channel (&prepared[i]);
          *answer = ANSWER_GONE;
          break;
        }
      n_sent++;
    }

  /* Answers to what was sent may have come even if a later send failed. */
  for (i = 0; i < n_sent; i++)
    {
      DcTemplateReply reply;
      int pidfd = -1;
      Answer a = template_receive (launcher->template, &reply, &pidfd);

      if (a == ANSWER_OK)
        {
          launched[n_made] = prepared[i];
          launched[n_made].pid = reply.pid;
          launched[n_made].pidfd = pidfd;
          n_made++;
          continue;
        }

      drop_channel (&prepared[i]);
      if (a == ANSWER_REFUSED)
        {
          if (error != NULL && *error == NULL)
            g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                         _("Cannot fork a worker: %s"), g_strerror (reply.error));
          continue;
        }
      /* Lost: the rest of the answers will not come. */
      *answer = a;
      *unanswered |= 1u << i;
      for (i++; i < n_sent; i++)
        {
          drop_channel (&prepared[i]);
          *unanswered |= 1u << i;
        }
    }
  return n_made;
}

static guint
spawn_from_template (DcLauncher             *launcher,
                     const DcLaunchOptions  *options,
                     DcLaunched             *launched,
                     guint                   n,
                     GError                **error)
{
  g_auto(GStrv) envp = build_envp (launcher);
  g_autoptr(GBytes) request = NULL;
  guint n_made = 0, deaths = 0;

  request = dc_template_encode_request (launcher->setup_flags, launcher->sandbox,
                                        launcher->cwd, envp,
                                        options->marshaller, options->exit_on_die,
                                        options->memfd_threshold);
  if (request == NULL)
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot start a worker: its environment is larger than %u KiB"),
                   DC_TEMPLATE_MAX_REQUEST / 1024);
      return 0;
    }

  while (n_made < n)
    {
      g_autoptr(GError) local_error = NULL;
      Answer answer;
      guint unanswered;

      if (!dc_launcher_prepare (launcher, error))
        return n_made;
      n_made += template_round (launcher, request, launched + n_made, n - n_made, &answer,
                                &unanswered, &local_error);
      if (answer == ANSWER_OK)
        {
          if (local_error != NULL)
            {
              g_propagate_error (error, g_steal_pointer (&local_error));
              return n_made;
            }
          continue;
        }

      /* A template found dead is replaced once, from the parent as it is. */
      template_lost (launcher, unanswered);
      if (answer == ANSWER_SILENT)
        {
          g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                       _("Cannot start a worker: the worker template did not answer within %u s"),
                       TEMPLATE_TIMEOUT_MS / 1000);
          return n_made;
        }
      if (++deaths == 2)
        {
          g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                               _("Cannot start a worker: the worker template keeps dying"));
          return n_made;
        }
    }
  return n_made;
}

/* Without the fork server: a clone of the parent as it is now. */
static gboolean
spawn_directly (DcLauncher             *launcher,
                const DcLaunchOptions  *options,
                DcLaunched             *launched,
                GError                **error)
{
  DcWorkerSetup setup = { 0, };
  DcWorkerCode code;
  int pidfd = -1;
  g_auto(GStrv) envp = NULL;
  pid_t pid;
  int errsv;

  /* A lock another thread holds now stays locked in the worker. */
  if (!launcher->warned_threads)
    {
      guint n_threads = dc_process_count_threads ();

      if (n_threads > 1)
        {
          g_warning ("Forking a worker from a process with %u threads: a lock another thread "
                     "holds at the fork stays locked in the worker, which may hang.  The "
                     "fork-server property (on by default) avoids this.", n_threads);
          launcher->warned_threads = TRUE;
        }
    }

  if (!make_channel (launcher, launched, &setup, error))
    return FALSE;

  dc_worker_pick_targets (&setup);
  setup.flags = launcher->setup_flags;
  setup.parent_pid = getpid ();
  setup.die_with_parent = gettid () == getpid ();
  setup.cwd = launcher->cwd;
  envp = build_envp (launcher);
  setup.envp = envp;
  fill_code (launcher, options, &code);

  pid = clone_blocked (&pidfd);
  if (pid == 0)
    dc_worker_main (&setup, &code);   /* never returns */
  errsv = errno;
  close_pair (setup.read_fd, setup.write_fd);
  close_pair (setup.stderr_fd, -1);

  if (pid < 0)
    {
      drop_channel (launched);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot fork a worker: %s"), g_strerror (errsv));
      return FALSE;
    }
  launched->pid = pid;
  launched->pidfd = pidfd;
  return TRUE;
}

guint
dc_launcher_spawn_many (DcLauncher             *launcher,
                        const DcLaunchOptions  *options,
                        DcLaunched             *launched,
                        guint                   n,
                        GError                **error)
{
  guint n_made = 0;

  if (!check_settings (launcher, error))
    return 0;
  if (launcher->fork_server)
    return spawn_from_template (launcher, options, launched, n, error);
  while (n_made < n && spawn_directly (launcher, options, &launched[n_made], error))
    n_made++;
  return n_made;
}

gboolean
dc_launcher_spawn (DcLauncher             *launcher,
                   const DcLaunchOptions  *options,
                   DcLaunched             *launched,
                   GError                **error)
{
  return dc_launcher_spawn_many (launcher, options, launched, 1, error) == 1;
}
