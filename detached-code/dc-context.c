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
cancel_data_free (gpointer data)
{
  CancelData *cancel = data;

  g_object_unref (cancel->task);
  g_object_unref (cancel->self);
  g_free (cancel);
}

/* On the pool's context. */
gboolean
cancel_idle_cb (gpointer data)
{
  CancelData *cancel = data;
  DcCall *call = g_hash_table_lookup (cancel->self->cancellable_calls, cancel->task);

  /* Not there: it completed already, or it is still on its way in from
   * another thread, and submit() will see the cancellable. */
  if (call != NULL)
    call_cancel (call);
  return G_SOURCE_REMOVE;
}

/* In whichever thread cancelled: hand over to the pool's context. */
void
cancelled_cb (GCancellable *cancellable,
              gpointer      data)
{
  CancelData *template = data;
  CancelData *cancel = g_new (CancelData, 1);
  GSource *source = g_idle_source_new ();

  cancel->self = g_object_ref (template->self);
  cancel->task = g_object_ref (template->task);
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, cancel_idle_cb, cancel, cancel_data_free);
  g_source_attach (source, cancel->self->context);
  g_source_unref (source);
}

gboolean
incoming_cb (gpointer data)
{
  DcDetachedCode *self = data;
  GQueue calls;
  GList *link;

  g_mutex_lock (&self->incoming_lock);
  calls = self->incoming;
  g_queue_init (&self->incoming);
  g_clear_pointer (&self->incoming_source, g_source_unref);
  g_mutex_unlock (&self->incoming_lock);

  while ((link = g_queue_pop_head_link (&calls)) != NULL)
    submit (self, link->data);
  dispatch (self);

  return G_SOURCE_REMOVE;
}

/* The pool goes: nobody is left to tell of the departed workers' exits,
 * but their child watches still reap them. */
gpointer
reaper_thread (gpointer data)
{
  GArray *pids = data;
  guint i;

  for (i = 0; i < pids->len; i++)
    while (waitpid (g_array_index (pids, GPid, i), NULL, 0) < 0 && errno == EINTR)
      ;
  g_array_unref (pids);
  return NULL;
}

void
forget_departed (DcDetachedCode *self)
{
  GList *departed = g_steal_pointer (&self->departed);
  /* A private context may never run again once the pool is gone, and its
   * child watches with it: the default one runs for the process's life. */
  gboolean own_reaper = self->context != g_main_context_default ();
  GArray *pids = g_array_new (FALSE, FALSE, sizeof (GPid));
  GList *l;

  for (l = departed; l != NULL; l = l->next)
    {
      DcWorker *worker = l->data;

      worker->pool = NULL;
      if (own_reaper && !worker->exited && worker->watch != NULL)
        {
          /* Asked to leave already; now for certain, and reaped by us
           * rather than by a watch nobody may dispatch. */
          kill (worker->pid, SIGKILL);
          g_array_append_val (pids, worker->pid);
          g_source_destroy (worker->watch);
        }
      worker_unref (worker);
    }
  g_list_free (departed);

  if (pids->len > 0)
    g_thread_unref (g_thread_new ("dc-reaper", reaper_thread, g_steal_pointer (&pids)));
  g_clear_pointer (&pids, g_array_unref);
}

/* In the thread that runs the pool's context, for a dispose elsewhere. */
gboolean
handover_cb (gpointer data)
{
  Handover *handover = data;

  dc_detached_code_shutdown (handover->self);
  forget_departed (handover->self);

  g_mutex_lock (&handover->lock);
  handover->done = TRUE;
  g_cond_signal (&handover->cond);
  g_mutex_unlock (&handover->lock);
  return G_SOURCE_REMOVE;
}
