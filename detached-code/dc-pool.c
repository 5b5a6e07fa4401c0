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

void
set_n_workers (DcDetachedCode *self,
               guint           n)
{
  if (self->n_workers == n)
    return;
  self->n_workers = n;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_N_WORKERS]);
}

guint
effective_max (DcDetachedCode *self)
{
  return MAX (self->min_workers, self->max_workers);
}

DcWorker *
find_idle_worker (DcDetachedCode *self)
{
  GList *l;

  for (l = self->workers; l != NULL; l = l->next)
    {
      DcWorker *worker = l->data;

      if (worker->state == WORKER_RUNNING && worker->inflight.length == 0)
        return worker;
    }
  return NULL;
}

/* With pipeline-depth > 1: the least loaded worker that has room. */
DcWorker *
find_worker_with_room (DcDetachedCode *self)
{
  DcWorker *best = NULL;
  GList *l;

  for (l = self->workers; l != NULL; l = l->next)
    {
      DcWorker *worker = l->data;

      if (worker->state == WORKER_RUNNING && worker->inflight.length < self->pipeline_depth &&
          (best == NULL || worker->inflight.length < best->inflight.length))
        best = worker;
    }
  return best;
}

void
update_stats (DcDetachedCode *self)
{
  guint n_busy = 0;
  GList *l;

  for (l = self->workers; l != NULL; l = l->next)
    if (((DcWorker *) l->data)->inflight.length > 0)
      n_busy++;

  /* Called after every reply: compare first, notify only on change. */
  if (self->n_busy != n_busy)
    {
      self->n_busy = n_busy;
      g_object_notify_by_pspec (G_OBJECT (self), props[PROP_N_BUSY]);
    }
  if (self->n_queued != self->queue.length)
    {
      self->n_queued = self->queue.length;
      g_object_notify_by_pspec (G_OBJECT (self), props[PROP_N_QUEUED]);
    }
}

/* Sends queued calls to idle workers, forking more while the pool may
 * grow.  Safe to re-enter. */
void
dispatch (DcDetachedCode *self)
{
  g_autoptr(GError) spawn_error = NULL;
  /* Workers that got a first frame this round; dispatch runs after every
   * reply, so no allocation unless the pool is large. */
  DcWorker *to_flush_local[16];
  DcWorker **to_flush = to_flush_local;
  guint n_to_flush = 0, to_flush_size = G_N_ELEMENTS (to_flush_local);
  guint i;

  /* Callbacks (of failed calls) may drop the last reference. */
  g_object_ref (self);

  while (self->queue.length > 0)
    {
      DcWorker *worker = find_idle_worker (self);
      DcCall *call;

      if (worker == NULL && self->n_workers < effective_max (self) && spawn_error == NULL)
        {
          worker = spawn_worker (self, &spawn_error);
          /* Its signals may have re-entered: shut down, taken the call. */
          if (worker != NULL && (worker->state != WORKER_RUNNING || worker->channel == NULL))
            worker = NULL;
          if (self->queue.length == 0)
            break;
        }
      /* Idle workers first, new ones next, then a place in a pipeline. */
      if (worker == NULL && self->pipeline_depth > 1)
        worker = find_worker_with_room (self);
      if (worker == NULL)
        break;

      call = g_queue_pop_head_link (&self->queue)->data;
      if (worker->outbuf->len == 0)
        {
          if (n_to_flush == to_flush_size)
            {
              to_flush_size *= 2;
              if (to_flush == to_flush_local)
                to_flush = g_memdup2 (to_flush_local, sizeof to_flush_local);
              to_flush = g_renew (DcWorker *, to_flush, to_flush_size);
            }
          to_flush[n_to_flush++] = worker_ref (worker);
        }
      send_call (worker, call);
    }

  /* Write in one go what each worker was given.  A write may re-enter
   * (a broken channel), hence the references. */
  for (i = 0; i < n_to_flush; i++)
    {
      DcWorker *worker = to_flush[i];

      if (worker->channel != NULL && worker->write_source == NULL)
        worker_flush (worker);
      worker_unref (worker);
    }
  if (to_flush != to_flush_local)
    g_free (to_flush);

  /* Queued calls never wait on a dead pool. */
  if (spawn_error != NULL && self->n_workers == 0 && self->queue.length > 0)
    {
      GQueue calls = self->queue;
      GList *l;

      g_queue_init (&self->queue);
      for (l = calls.head; l != NULL; l = l->next)
        call_detach (l->data);
      fail_calls (&calls, spawn_error);
    }

  update_stats (self);
  g_object_unref (self);
}

/* With the context acquired. */
void
submit (DcDetachedCode *self,
        DcCall         *call)
{
  GCancellable *cancellable = g_task_get_cancellable (call->task);

  self->started = TRUE;
  call->serial = self->next_serial++;

  if (cancellable != NULL)
    {
      CancelData *template;

      if (g_cancellable_is_cancelled (cancellable))
        {
          g_autoptr(GTask) task = g_steal_pointer (&call->task);

          call_free (call);
          g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "%s",
                                   _("The call was cancelled"));
          return;
        }

      call->cancellable = g_object_ref (cancellable);
      g_hash_table_insert (self->cancellable_calls, call->task, call);
      /* The template is only read by the handler; the tasks it refs are
       * the idle's.  It lives as long as the connection. */
      template = g_new (CancelData, 1);
      template->self = self;
      template->task = call->task;
      call->cancel_id = g_cancellable_connect (cancellable, G_CALLBACK (cancelled_cb),
                                               template, g_free);
    }

  queue_insert (&self->queue, call);
}

void
detach_workers (DcDetachedCode *self,
                GQueue         *calls)
{
  GList *workers = g_steal_pointer (&self->workers);
  GList *l;

  for (l = workers; l != NULL; l = l->next)
    {
      DcWorker *worker = l->data;
      gboolean busy = worker->inflight.length > 0;
      GList *link;

      while ((link = g_queue_pop_head_link (&worker->inflight)) != NULL)
        {
          call_detach (link->data);
          g_queue_push_tail_link (calls, link);
        }

      /* An idle worker leaves when it reads the end of its channel; a
       * busy one would finish a call nobody waits for, so it is killed. */
      if (!worker->exited && (busy || worker->state != WORKER_RUNNING))
        kill (worker->pid, SIGKILL);

      worker_leave_service (worker, WORKER_LOST);
      worker_close_channel (worker);
      /* Its child watch reaps it; worker-exited still comes, while the
       * pool lives. */
      if (worker->exited)
        {
          worker->pool = NULL;
          worker_unref (worker);
        }
      else
        {
          worker->departed = TRUE;
          self->departed = g_list_prepend (self->departed, worker);
        }
    }
  g_list_free (workers);
}
