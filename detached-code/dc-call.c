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

/* ---- calls ---- */

void
call_clear_timeout (DcCall *call)
{
  if (call->timeout_source != NULL)
    {
      g_source_destroy (call->timeout_source);
      g_clear_pointer (&call->timeout_source, g_source_unref);
    }
}

void
call_free (DcCall *call)
{
  g_assert (call->task == NULL);
  call_clear_timeout (call);
  g_clear_pointer (&call->payload, g_bytes_unref);
  g_clear_object (&call->fd_list);
  if (call->memfd >= 0)
    close (call->memfd);
  g_free (call);
}

/* @call leaves its worker or the queue for a local list, to be completed
 * from there: nothing may find it where it was (a cancellation, a time
 * limit) in the meantime. */
void
call_detach (DcCall *call)
{
  call->where = CALL_LOCAL;
  call->worker = NULL;
  call_clear_timeout (call);
}

/* Detaches the task from @call, which stays behind (if in flight) only to
 * have its reply dropped. */
GTask *
call_steal_task (DcCall *call)
{
  GTask *task = g_steal_pointer (&call->task);

  if (task != NULL && call->cancellable != NULL)
    {
      DcDetachedCode *self = g_task_get_source_object (task);

      g_hash_table_remove (self->cancellable_calls, task);
      /* Not g_cancellable_disconnect(): it waits for a running emission,
       * and deadlocks when that emission is this thread's own (a
       * "cancelled" handler of the application's that shuts the pool
       * down).  The handler's data belongs to its closure, which GSignal
       * keeps until any emission in progress is over, and a handler that
       * runs late finds no call to cancel. */
      g_signal_handler_disconnect (call->cancellable, call->cancel_id);
      call->cancel_id = 0;
      g_clear_object (&call->cancellable);
    }
  return task;
}

/* Completes @call exactly once with either @value or @error (both
 * transfer full) and frees it.  A call whose task already completed
 * (cancelled) drops them.  The callback may run right here, and may
 * re-enter the pool. */
void
call_complete (DcCall   *call,
               GVariant *value,
               GError   *error)
{
  g_autoptr(GTask) task = call_steal_task (call);

  g_assert ((value == NULL) != (error == NULL));

  call_free (call);
  if (task == NULL)
    {
      g_clear_pointer (&value, g_variant_unref);
      g_clear_error (&error);
    }
  else if (value != NULL)
    g_task_return_pointer (task, value, (GDestroyNotify) g_variant_unref);
  else
    g_task_return_error (task, error);
}

/* The call at the head of a worker's in-flight list is the one it runs. */
gboolean
call_is_running (DcCall *call)
{
  return call->where == CALL_IN_FLIGHT && call->worker->inflight.head == &call->link;
}

/* Kills the worker running @call, which already completed.  Calls written
 * behind it fail with @reason: whether the worker had read them is not
 * known, and running them twice would be worse. */
void
call_kill_worker (DcCall *call,
                  GError *reason)
{
  DcWorker *worker = call->worker;

  g_queue_unlink (&worker->inflight, &call->link);
  call->where = CALL_LOCAL;
  call_free (call);
  worker_kill (worker, reason);
}

void
call_cancel (DcCall *call)
{
  g_autoptr(GTask) task = call_steal_task (call);
  DcDetachedCode *self = g_task_get_source_object (task);

  if (call->where == CALL_QUEUED)
    {
      g_queue_unlink (&self->queue, &call->link);
      call_free (call);
    }
  else if (self->kill_on_cancel && call_is_running (call))
    call_kill_worker (call, g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED,
                                         _("Worker process %d was killed: the call it was running was cancelled"),
                                         (int) call->worker->pid));
  /* Otherwise: in flight, its reply is dropped when it comes; in a local
   * list, its owner frees it. */

  g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "%s",
                           _("The call was cancelled"));
  update_stats (self);
}

void
queue_insert (GQueue *queue,
              DcCall *call)
{
  GList *sibling;

  call->link.data = call;
  call->where = CALL_QUEUED;
  call->worker = NULL;
  /* Walk from the tail: equal priorities, the common case, stop at once. */
  for (sibling = queue->tail; sibling != NULL; sibling = sibling->prev)
    if (((DcCall *) sibling->data)->priority <= call->priority)
      break;

  if (sibling == NULL)
    g_queue_push_head_link (queue, &call->link);
  else if (sibling == queue->tail)
    g_queue_push_tail_link (queue, &call->link);
  else
    {
      /* Insert after sibling. */
      GList *next = sibling->next;

      call->link.prev = sibling;
      call->link.next = next;
      sibling->next = &call->link;
      next->prev = &call->link;
      queue->length++;
    }
}

/* Fails every call in @calls (a local queue) with a copy of @error. */
void
fail_calls (GQueue       *calls,
            const GError *error)
{
  GList *link;

  /* Callbacks may run a nested loop, where a cancellation looks the
   * others up: they are in nobody's queue now. */
  for (link = calls->head; link != NULL; link = link->next)
    call_detach (link->data);
  while ((link = g_queue_pop_head_link (calls)) != NULL)
    call_complete (link->data, NULL, g_error_copy (error));
}

gboolean
call_timeout_cb (gpointer data)
{
  DcCall *call = data;
  DcWorker *worker = call->worker;

  if (call->where != CALL_IN_FLIGHT || worker == NULL || worker->pool == NULL)
    {
      g_clear_pointer (&call->timeout_source, g_source_unref);
      return G_SOURCE_REMOVE;
    }

  return call_timeout_fire (call);
}

gboolean
call_timeout_fire (DcCall *call)
{
  DcWorker *worker = call->worker;
  DcDetachedCode *self = worker->pool;
  g_autoptr(GTask) task = NULL;
  g_autoptr(GObject) keep = g_object_ref (G_OBJECT (self));
  gboolean running = call_is_running (call);
  GPid pid = worker->pid;

  g_clear_pointer (&call->timeout_source, g_source_unref);
  task = call_steal_task (call);

  /* A call still waiting behind another on the same worker has not
   * started: it fails, and its reply will be dropped. */
  if (running)
    call_kill_worker (call, g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED,
                                         _("Worker process %d was killed: a call it was running took longer than %u ms"),
                                         (int) pid, self->call_timeout));

  if (task != NULL)
    {
      if (running)
        g_task_return_new_error (task, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT,
                                 _("The call took longer than %u ms; worker process %d was killed"),
                                 self->call_timeout, (int) pid);
      else
        g_task_return_new_error (task, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT,
                                 _("The call did not complete within %u ms on worker process %d"),
                                 self->call_timeout, (int) pid);
    }
  update_stats (self);
  return G_SOURCE_REMOVE;
}
