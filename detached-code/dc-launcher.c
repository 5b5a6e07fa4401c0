/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* How a worker is made: everything it is given, prepared in the parent,
 * and the fork.  What runs in the child is in dc-worker.c. */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>

#include "dc-launcher-private.h"
#include "dc-worker-private.h"

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
};

static void
env_op_clear (EnvOp *op)
{
  g_free (op->variable);
  g_free (op->value);
}

DcLauncher *
dc_launcher_new (void)
{
  DcLauncher *launcher = g_new0 (DcLauncher, 1);

  launcher->stream = DC_STREAM_AUTO;
  launcher->setup_flags = DC_SETUP_NONE;
  launcher->env_ops = g_array_new (FALSE, FALSE, sizeof (EnvOp));
  g_array_set_clear_func (launcher->env_ops, (GDestroyNotify) env_op_clear);
  return launcher;
}

void
dc_launcher_free (DcLauncher *launcher)
{
  if (launcher->user_data_free != NULL)
    launcher->user_data_free (launcher->user_data);
  if (launcher->init_data_free != NULL)
    launcher->init_data_free (launcher->init_data);
  g_free (launcher->cwd);
  g_array_unref (launcher->env_ops);
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

/* The descriptors of a new channel: the parent's ends and the worker's,
 * none of them on 0..2, where a host that closed its stdio would write
 * into them. */
static gboolean
make_channel_fds (DcLauncher     *launcher,
                  int             parent_fds[2],
                  DcWorkerSetup  *setup,
                  GError        **error)
{
  int errsv;

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
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
               _("Cannot create a worker channel: %s"), g_strerror (errsv));
  return FALSE;
}

gboolean
dc_launcher_spawn (DcLauncher             *launcher,
                   const DcLaunchOptions  *options,
                   DcLaunched             *launched,
                   GError                **error)
{
  DcWorkerSetup setup = { 0, };
  DcWorkerCode code = { 0, };
  sigset_t all_signals, old_mask;
  int parent_fds[2];
  g_auto(GStrv) envp = NULL;
  pid_t pid;
  int errsv;

  if (launcher->cwd != NULL && !g_file_test (launcher->cwd, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot start a worker: “%s” is not a directory"), launcher->cwd);
      return FALSE;
    }

  if (!make_channel_fds (launcher, parent_fds, &setup, error))
    return FALSE;

  dc_worker_pick_targets (&setup);
  setup.flags = launcher->setup_flags;
  setup.parent_pid = getpid ();
  setup.die_with_parent = gettid () == getpid ();
  setup.cwd = launcher->cwd;
  envp = build_envp (launcher);
  setup.envp = envp;

  code.func = launcher->func;
  code.fd_func = launcher->fd_func;
  code.user_data = launcher->user_data;
  code.init_func = launcher->init_func;
  code.init_data = launcher->init_data;
  code.marshaller = options->marshaller;
  code.exit_on_die = options->exit_on_die;
  code.is_socket = dc_launcher_is_socket (launcher);
  code.memfd_threshold = options->memfd_threshold;

  /* All signals blocked across fork(): a handler of the host's must not
   * run in the child before the child resets the dispositions.  The
   * child unblocks once they are default. */
  sigfillset (&all_signals);
  pthread_sigmask (SIG_SETMASK, &all_signals, &old_mask);
  pid = fork ();
  if (pid == 0)
    dc_worker_main (&setup, &code);   /* never returns */
  errsv = errno;
  pthread_sigmask (SIG_SETMASK, &old_mask, NULL);

  close_pair (setup.read_fd, setup.write_fd);

  if (pid < 0)
    {
      close_pair (parent_fds[0], parent_fds[1]);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot fork a worker: %s"), g_strerror (errsv));
      return FALSE;
    }

  if (parent_fds[0] == parent_fds[1])
    {
      g_autoptr(GError) local_error = NULL;

      launched->channel = dc_channel_new_socket (parent_fds[0], &local_error);
      if (launched->channel == NULL)
        {
          /* It would see the end of its channel and leave; it must not
           * outlive this call unreaped. */
          kill (pid, SIGKILL);
          while (waitpid (pid, NULL, 0) < 0 && errno == EINTR)
            ;
          g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                       _("Cannot set up a worker channel: %s"), local_error->message);
          return FALSE;
        }
    }
  else
    launched->channel = dc_channel_new_pipes (parent_fds[0], parent_fds[1]);

  launched->pid = pid;
  return TRUE;
}
