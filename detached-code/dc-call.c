/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* One pending call: it completes exactly once.  And the queue of calls
 * waiting for a worker. */

#include "config.h"

#include <unistd.h>

#include <glib/gi18n-lib.h>

#include "dc-call-private.h"
#include "dc-context-private.h"

/* Where a cancellable task finds its call. */
static GQuark
call_quark (void)
{
  static GQuark quark;

  if (quark == 0)
    quark = g_quark_from_static_string ("dc-call");
  return quark;
}

DcCall *
dc_call_new (GTask       *task,
             GBytes      *payload,
             GUnixFDList *fd_list,
             int          priority)
{
  DcCall *call = g_new0 (DcCall, 1);

  call->link.data = call;
  call->where = DC_CALL_NEW;
  call->task = task;
  call->payload = payload;
  call->priority = priority;
  /* The call's own copy, by reference: the frames that carry it send its
   * descriptors as they are. */
  if (fd_list != NULL && g_unix_fd_list_get_length (fd_list) > 0)
    call->fd_list = g_object_ref (fd_list);
  return call;
}

DcCallGroup *
dc_call_group_new (guint n_chunks)
{
  DcCallGroup *group = g_new0 (DcCallGroup, 1);
  guint i;

  group->ref_count = 1;
  group->drop_from = G_MAXINT;
  group->n_chunks = n_chunks;
  group->failed_at = g_new (guint, n_chunks);
  for (i = 0; i < n_chunks; i++)
    group->failed_at[i] = G_MAXUINT;
  return group;
}

DcCallGroup *
dc_call_group_ref (DcCallGroup *group)
{
  g_atomic_int_inc (&group->ref_count);
  return group;
}

void
dc_call_group_unref (DcCallGroup *group)
{
  if (!g_atomic_int_dec_and_test (&group->ref_count))
    return;
  g_free (group->failed_at);
  g_free (group);
}

void
dc_call_set_chunk (DcCall      *call,
                   DcCallGroup *group,
                   guint        index,
                   guint        n_items)
{
  g_assert (index < group->n_chunks && n_items > 0);
  call->group = dc_call_group_ref (group);
  call->group_index = index;
  call->n_items = n_items;
}

void
dc_call_chunk_failed (DcCall *call,
                      guint   item)
{
  gint index = (gint) MIN (call->group_index + 1, (guint) G_MAXINT);
  gint old;

  if (call->group == NULL)
    return;
  if (item != G_MAXUINT)
    call->group->failed_at[call->group_index] = item;
  do
    old = g_atomic_int_get (&call->group->drop_from);
  while (index < old && !g_atomic_int_compare_and_exchange (&call->group->drop_from, old, index));
}

void
dc_call_set_body (DcCall   *call,
                  GVariant *body)
{
  g_assert (call->where == DC_CALL_NEW && call->body == NULL);
  call->body = body;
}

void
dc_call_free (DcCall *call)
{
  g_assert (call->task == NULL);
  g_assert (call->batch == NULL);
  g_clear_pointer (&call->group, dc_call_group_unref);
  dc_call_clear_timeout (call);
  g_clear_pointer (&call->payload, g_bytes_unref);
  /* A frame still being written holds its own reference. */
  g_clear_pointer (&call->body, g_variant_unref);
  g_clear_object (&call->fd_list);
  g_clear_pointer (&call->progress, dc_progress_unref);
  g_clear_object (&call->memfd);
  g_assert (call->result == NULL && call->result_error == NULL);
  g_free (call);
}

gboolean
dc_call_is_pending (DcCall *call)
{
  return call->task != NULL;
}

gboolean
dc_call_is_cancelled (DcCall *call)
{
  if (call->group != NULL && call->group_index >= (guint) g_atomic_int_get (&call->group->drop_from))
    return TRUE;
  return call->cancellable != NULL && g_cancellable_is_cancelled (call->cancellable);
}

DcCall *
dc_call_from_task (GTask *task)
{
  return g_object_get_qdata (G_OBJECT (task), call_quark ());
}

void
dc_call_watch_cancellable (DcCall   *call,
                           gpointer  mailbox)
{
  GCancellable *cancellable = g_task_get_cancellable (call->task);

  g_assert (call->cancellable == NULL);
  if (cancellable == NULL)
    return;
  /* How a cancellation, which carries the task, finds the call. */
  g_object_set_qdata (G_OBJECT (call->task), call_quark (), call);
  call->cancellable = g_object_ref (cancellable);
  call->cancel_id = dc_cancel_hop_connect (mailbox, cancellable, call->task);
}

void
dc_call_clear_timeout (DcCall *call)
{
  if (call->timeout_source != NULL)
    {
      g_source_destroy (call->timeout_source);
      g_clear_pointer (&call->timeout_source, g_source_unref);
    }
}

void
dc_call_detach (DcCall *call)
{
  call->where = DC_CALL_DETACHED;
  call->worker = NULL;
  dc_call_clear_timeout (call);
}

GTask *
dc_call_steal_task (DcCall *call)
{
  GTask *task = g_steal_pointer (&call->task);

  if (task == NULL)
    return NULL;

  if (call->cancellable != NULL)
    {
      g_object_set_qdata (G_OBJECT (task), call_quark (), NULL);
      dc_cancel_hop_disconnect (call->cancellable, call->cancel_id);
      call->cancel_id = 0;
      g_clear_object (&call->cancellable);
    }
  return task;
}

void
dc_call_complete (DcCall   *call,
                  GVariant *value,
                  GError   *error)
{
  g_autoptr(GTask) task = dc_call_steal_task (call);

  g_assert ((value == NULL) != (error == NULL));

  if (error != NULL)
    dc_call_chunk_failed (call, G_MAXUINT);
  dc_call_free (call);
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

void
dc_call_deliver (DcCall *call)
{
  GVariant *value = g_steal_pointer (&call->result);
  GError *error = g_steal_pointer (&call->result_error);

  dc_call_complete (call, value, error);
}

void
dc_call_fail_all (GQueue       *calls,
                  const GError *error)
{
  GList *link;

  /* Callbacks may run a nested loop, where a cancellation looks the others
   * up: none of them may be found in a queue or on a worker by then. */
  for (link = calls->head; link != NULL; link = link->next)
    dc_call_detach (link->data);
  while ((link = g_queue_pop_head_link (calls)) != NULL)
    dc_call_complete (link->data, NULL, g_error_copy (error));
}

GError *
dc_call_cancelled_error (void)
{
  return g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, _("The call was cancelled"));
}

void
dc_call_return_cancelled (GTask *task)
{
  g_task_return_error (task, dc_call_cancelled_error ());
}

/* ---- the queue ---- */

static gint
compare_priorities (gconstpointer a,
                    gconstpointer b,
                    gpointer      user_data)
{
  int pa = GPOINTER_TO_INT (a), pb = GPOINTER_TO_INT (b);

  return pa < pb ? -1 : pa > pb;
}

static void
bucket_free (gpointer data)
{
  GQueue *bucket = data;

  g_assert (bucket->length == 0);
  g_queue_free (bucket);
}

void
dc_call_queue_init (DcCallQueue *queue)
{
  queue->buckets = g_tree_new_full (compare_priorities, NULL, NULL, bucket_free);
  queue->length = 0;
}

void
dc_call_queue_clear (DcCallQueue *queue)
{
  g_assert (queue->length == 0);
  g_clear_pointer (&queue->buckets, g_tree_unref);
}

guint
dc_call_queue_length (DcCallQueue *queue)
{
  return queue->length;
}

static GQueue *
bucket_for (DcCallQueue *queue,
            int          priority)
{
  gpointer key = GINT_TO_POINTER (priority);
  GQueue *bucket = g_tree_lookup (queue->buckets, key);

  if (bucket == NULL)
    {
      bucket = g_queue_new ();
      g_tree_insert (queue->buckets, key, bucket);
    }
  return bucket;
}

static void
bucket_unlink (DcCallQueue *queue,
               GQueue      *bucket,
               DcCall      *call)
{
  g_queue_unlink (bucket, &call->link);
  queue->length--;
  /* Priorities come and go (a random one per call, say): keep only
   * those in use. */
  if (bucket->length == 0)
    g_tree_remove (queue->buckets, GINT_TO_POINTER (call->priority));
}

void
dc_call_queue_push (DcCallQueue *queue,
                    DcCall      *call)
{
  call->where = DC_CALL_QUEUED;
  call->worker = NULL;
  g_queue_push_tail_link (bucket_for (queue, call->priority), &call->link);
  queue->length++;
}

void
dc_call_queue_push_front (DcCallQueue *queue,
                          DcCall      *call)
{
  call->where = DC_CALL_QUEUED;
  call->worker = NULL;
  g_queue_push_head_link (bucket_for (queue, call->priority), &call->link);
  queue->length++;
}

DcCall *
dc_call_queue_peek (DcCallQueue *queue)
{
  if (queue->length == 0)
    return NULL;
  return g_queue_peek_head (g_tree_node_value (g_tree_node_first (queue->buckets)));
}

DcCall *
dc_call_queue_pop (DcCallQueue *queue)
{
  DcCall *call = dc_call_queue_peek (queue);

  if (call != NULL)
    dc_call_queue_remove (queue, call);
  return call;
}

void
dc_call_queue_remove (DcCallQueue *queue,
                      DcCall      *call)
{
  g_assert (call->where == DC_CALL_QUEUED);
  bucket_unlink (queue, g_tree_lookup (queue->buckets, GINT_TO_POINTER (call->priority)), call);
}

void
dc_call_queue_take_all (DcCallQueue *queue,
                        GQueue      *calls)
{
  DcCall *call;

  while ((call = dc_call_queue_pop (queue)) != NULL)
    {
      dc_call_detach (call);
      g_queue_push_tail_link (calls, &call->link);
    }
}
