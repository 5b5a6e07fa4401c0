/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>
#include <glib-unix.h>

#include "dc-detached-code-private.h"
#include "dc-enum-types.h"

char **
build_envp (DcDetachedCode *self)
{
  char **envp;
  guint i;

  if (self->env_ops->len == 0)
    return NULL;

  envp = g_get_environ ();
  for (i = 0; i < self->env_ops->len; i++)
    {
      EnvOp *op = &g_array_index (self->env_ops, EnvOp, i);

      if (op->value != NULL)
        envp = g_environ_setenv (envp, op->variable, op->value, op->overwrite);
      else
        envp = g_environ_unsetenv (envp, op->variable);
    }
  return envp;
}

void
reap_only_cb (GPid     pid,
              int      status,
              gpointer data)
{
  g_spawn_close_pid (pid);
}

/* Moves descriptors on 0..2 to 3 and above, keeping close-on-exec.  A
 * socket's single descriptor is in both. */
gboolean
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

DcWorker *
spawn_worker (DcDetachedCode  *self,
              GError         **error)
{
  DcWorkerSetup setup = { 0, };
  DcWorkerCode code = { 0, };
  sigset_t all_signals, old_mask;
  int parent_read = -1, parent_write = -1;
  g_auto(GStrv) envp = NULL;
  DcWorker *worker;
  GSource *watch;
  DcChannel *channel;
  pid_t pid;
  int errsv;

  if (self->cwd != NULL && !g_file_test (self->cwd, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot start a worker: “%s” is not a directory"), self->cwd);
      return NULL;
    }

  if (self->stream == DC_STREAM_PIPE)
    {
      int to_worker[2], from_worker[2];

      if (pipe2 (to_worker, O_CLOEXEC) < 0)
        goto fail_errno;
      if (pipe2 (from_worker, O_CLOEXEC) < 0)
        {
          errsv = errno;
          close (to_worker[0]);
          close (to_worker[1]);
          errno = errsv;
          goto fail_errno;
        }
      parent_read = from_worker[0];
      parent_write = to_worker[1];
      setup.read_fd = to_worker[0];
      setup.write_fd = from_worker[1];
    }
  else
    {
      int sv[2];

      if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        goto fail_errno;
      parent_read = parent_write = sv[0];
      setup.read_fd = setup.write_fd = sv[1];
    }

  /* Channel descriptors never sit on 0..2, in the parent or the child: a
   * host that closed its stdio would otherwise write into them. */
  if (!move_above_stdio (&parent_read, &parent_write) ||
      !move_above_stdio (&setup.read_fd, &setup.write_fd))
    {
      errsv = errno;
      close (parent_read);
      if (parent_write != parent_read)
        close (parent_write);
      close (setup.read_fd);
      if (setup.write_fd != setup.read_fd)
        close (setup.write_fd);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot create a worker channel: %s"), g_strerror (errsv));
      return NULL;
    }

  dc_worker_pick_targets (&setup);
  setup.flags = self->setup_flags;
  setup.parent_pid = getpid ();
  setup.die_with_parent = gettid () == getpid ();
  setup.cwd = self->cwd;
  envp = build_envp (self);
  setup.envp = envp;

  code.func = self->func;
  code.fd_func = self->fd_func;
  code.user_data = self->user_data;
  code.init_func = self->init_func;
  code.init_data = self->init_data;
  code.marshaller = self->marshaller;
  code.exit_on_die = self->exit_on_die;
  code.is_socket = self->stream != DC_STREAM_PIPE;
  code.memfd_threshold = self->memfd_threshold;

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

  close (setup.read_fd);
  if (setup.write_fd != setup.read_fd)
    close (setup.write_fd);

  if (pid < 0)
    {
      close (parent_read);
      if (parent_write != parent_read)
        close (parent_write);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot fork a worker: %s"), g_strerror (errsv));
      return NULL;
    }

  if (parent_read == parent_write)
    {
      g_autoptr(GError) local_error = NULL;

      channel = dc_channel_new_socket (parent_read, &local_error);
      if (channel == NULL)
        {
          /* It sees EOF and leaves; reap it all the same. */
          GSource *reaper = g_child_watch_source_new (pid);

          g_source_set_callback (reaper, G_SOURCE_FUNC (reap_only_cb), NULL, NULL);
          g_source_attach (reaper, self->context);
          g_source_unref (reaper);
          g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                       _("Cannot set up a worker channel: %s"), local_error->message);
          return NULL;
        }
    }
  else
    channel = dc_channel_new_pipes (parent_read, parent_write);

  worker = g_new0 (DcWorker, 1);
  worker->ref_count = 2;   /* the pool's list, the child watch */
  worker->pool = self;
  worker->pid = pid;
  worker->state = WORKER_RUNNING;
  worker->channel = channel;
  worker->outbuf = g_byte_array_new ();
  g_queue_init (&worker->out_fds);
  worker->rx_fds = g_array_new (FALSE, FALSE, sizeof (int));
  worker->exit_on_die = self->exit_on_die;
  dc_wire_reader_init (&worker->reader);
  g_queue_init (&worker->inflight);

  worker->read_source = dc_channel_create_source (channel, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                                  worker_readable_cb, worker);
  /* Without this, GLib blocks and unblocks the source around each dispatch:
   * two more wake-ups per reply.  worker_read() refuses re-entry itself. */
  g_source_set_can_recurse (worker->read_source, TRUE);
  g_source_attach (worker->read_source, self->context);

  watch = g_child_watch_source_new (pid);
  g_source_set_callback (watch, G_SOURCE_FUNC (child_watch_cb), worker,
                         (GDestroyNotify) worker_unref);
  g_source_attach (watch, self->context);
  worker->watch = watch;   /* the source's own reference */

  self->workers = g_list_prepend (self->workers, worker);
  set_n_workers (self, self->n_workers + 1);
  worker_note_idle (worker);
  g_signal_emit (self, signals[SIGNAL_WORKER_SPAWNED], 0, (gint) pid);

  return worker;

fail_errno:
  errsv = errno;
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
               _("Cannot create a worker channel: %s"), g_strerror (errsv));
  return NULL;
}

/* ---- GObject ---- */

void
env_op_clear (EnvOp *op)
{
  g_free (op->variable);
  g_free (op->value);
}
