/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The progress of one call, from the pool's context to the caller's. */

#include "config.h"

#include "dc-progress-private.h"

struct _DcProgress
{
  gint                 ref_count;   /* atomic: the task's, the call's, an idle's */
  DcDetachedCode      *self;        /* unowned: the task keeps it alive until done */
  GCancellable        *cancellable; /* owned, or NULL */
  GMainContext        *context;     /* owned: the caller's */

  /* The caller's thread only. */
  DcProgressFunc       func;
  gpointer             data;
  GDestroyNotify       data_free;   /* NULL once run */
  GAsyncReadyCallback  callback;
  gpointer             user_data;
  guint                delivering;  /* func calls under way (a nested loop may
                                     * complete the call meanwhile) */

  GMutex               lock;        /* guards what follows */
  GQueue               values;      /* GVariant, in the order sent */
  gsize                n_bytes;     /* their serialized sizes */
  GSource             *resume;      /* owned: to make ready once they drain */
  GSource             *idle;        /* due to deliver them, or NULL */
  gboolean             done;        /* the callback ran or runs: no more values */
};

DcProgress *
dc_progress_new (DcDetachedCode      *self,
                 GCancellable        *cancellable,
                 DcProgressFunc       func,
                 gpointer             data,
                 GDestroyNotify       data_free,
                 GAsyncReadyCallback  callback,
                 gpointer             user_data)
{
  DcProgress *progress = g_new0 (DcProgress, 1);

  progress->ref_count = 1;
  progress->self = self;
  progress->cancellable = cancellable != NULL ? g_object_ref (cancellable) : NULL;
  progress->context = g_main_context_ref_thread_default ();
  progress->func = func;
  progress->data = data;
  progress->data_free = data_free;
  progress->callback = callback;
  progress->user_data = user_data;
  g_mutex_init (&progress->lock);
  g_queue_init (&progress->values);
  return progress;
}

static void progress_release_data (DcProgress *progress);

DcProgress *
dc_progress_ref (DcProgress *progress)
{
  g_atomic_int_inc (&progress->ref_count);
  return progress;
}

void
dc_progress_unref (DcProgress *progress)
{
  if (!g_atomic_int_dec_and_test (&progress->ref_count))
    return;

  /* dc_progress_task_done() ran the data's destroy function already,
   * unless the task never completed (its context never ran again). */
  g_assert (progress->idle == NULL);
  progress_release_data (progress);
  g_clear_pointer (&progress->resume, g_source_unref);
  g_queue_clear_full (&progress->values, (GDestroyNotify) g_variant_unref);
  g_mutex_clear (&progress->lock);
  g_clear_object (&progress->cancellable);
  g_main_context_unref (progress->context);
  g_free (progress);
}

static guint peak_waiting;

guint
dc_progress_take_peak_waiting (void)
{
  return (guint) g_atomic_int_exchange (&peak_waiting, 0);
}

static gboolean
progress_is_cancelled (DcProgress *progress)
{
  return progress->cancellable != NULL && g_cancellable_is_cancelled (progress->cancellable);
}

/* Runs the data's destroy function once nothing uses the data any more:
 * not while a nested loop in the progress function completed the call. */
static void
progress_release_data (DcProgress *progress)
{
  GDestroyNotify data_free = g_steal_pointer (&progress->data_free);

  progress->func = NULL;
  if (data_free != NULL)
    data_free (progress->data);
}

/* With the lock held: the resume source, taken, if it is due. */
static GSource *
progress_take_resume (DcProgress *progress)
{
  if (progress->done ||
      (progress->values.length <= DC_PROGRESS_MAX_WAITING / 4 &&
       progress->n_bytes <= DC_PROGRESS_MAX_WAITING_BYTES / 4))
    return g_steal_pointer (&progress->resume);
  return NULL;
}

static void
progress_wake (GSource *resume)
{
  if (resume != NULL)
    {
      g_source_set_ready_time (resume, 0);
      g_source_unref (resume);
    }
}

void
dc_progress_wake_when_drained (DcProgress *progress,
                               GSource    *resume)
{
  GSource *due;

  g_mutex_lock (&progress->lock);
  g_assert (progress->resume == NULL);
  progress->resume = g_source_ref (resume);
  due = progress_take_resume (progress);
  g_mutex_unlock (&progress->lock);
  progress_wake (due);
}

/* On the caller's context.  One value at a time, the lock never held
 * while the function runs: it may cancel the call, or run a nested loop. */
static void
progress_deliver (DcProgress *progress)
{
  for (;;)
    {
      g_autoptr(GVariant) value = NULL;
      GSource *resume = NULL;

      g_mutex_lock (&progress->lock);
      if (!progress->done && !progress_is_cancelled (progress))
        value = g_queue_pop_head (&progress->values);
      if (value != NULL)
        {
          progress->n_bytes -= g_variant_get_size (value);
          resume = progress_take_resume (progress);
        }
      g_mutex_unlock (&progress->lock);
      progress_wake (resume);
      if (value == NULL || progress->func == NULL)
        return;

      progress->delivering++;
      progress->func (progress->self, value, progress->data);
      progress->delivering--;
    }
}

static gboolean
progress_idle_cb (gpointer data)
{
  DcProgress *progress = data;

  g_mutex_lock (&progress->lock);
  g_clear_pointer (&progress->idle, g_source_unref);
  g_mutex_unlock (&progress->lock);

  progress_deliver (progress);
  if (progress->done && progress->delivering == 0)
    progress_release_data (progress);
  return G_SOURCE_REMOVE;
}

gboolean
dc_progress_push (DcProgress *progress,
                  GVariant   *value)
{
  GSource *idle;
  guint peak;
  gboolean room;

  g_mutex_lock (&progress->lock);
  if (progress->done || progress_is_cancelled (progress))
    {
      g_mutex_unlock (&progress->lock);
      g_variant_unref (value);
      return TRUE;
    }
  g_queue_push_tail (&progress->values, value);
  progress->n_bytes += g_variant_get_size (value);
  room = progress->values.length <= DC_PROGRESS_MAX_WAITING &&
         progress->n_bytes <= DC_PROGRESS_MAX_WAITING_BYTES;
  peak = g_atomic_int_get (&peak_waiting);
  while (progress->values.length > peak &&
         !g_atomic_int_compare_and_exchange (&peak_waiting, peak, progress->values.length))
    peak = g_atomic_int_get (&peak_waiting);
  if (progress->idle == NULL)
    {
      idle = g_idle_source_new ();
      /* As the pool's reads: a worker that floods cannot starve it. */
      g_source_set_priority (idle, G_PRIORITY_DEFAULT);
      g_source_set_static_name (idle, "[detached-code] progress");
      g_source_set_callback (idle, progress_idle_cb, dc_progress_ref (progress),
                             (GDestroyNotify) dc_progress_unref);
      /* Under the lock: dc_progress_task_done() may destroy it as soon
       * as it is seen, and only an attached source can be destroyed. */
      g_source_attach (idle, progress->context);
      progress->idle = idle;
    }
  g_mutex_unlock (&progress->lock);
  return room;
}

void
dc_progress_task_done (GObject      *source,
                       GAsyncResult *result,
                       gpointer      data)
{
  g_autoptr(DcProgress) progress = data;
  GSource *idle, *resume;

  /* All that was sent came before the result, and waits here now. */
  progress_deliver (progress);

  g_mutex_lock (&progress->lock);
  progress->done = TRUE;
  idle = g_steal_pointer (&progress->idle);
  g_queue_clear_full (&progress->values, (GDestroyNotify) g_variant_unref);
  progress->n_bytes = 0;
  resume = progress_take_resume (progress);
  g_mutex_unlock (&progress->lock);
  /* A cancelled call's values were never taken: its worker may read on. */
  progress_wake (resume);
  if (idle != NULL)
    {
      g_source_destroy (idle);
      g_source_unref (idle);
    }

  if (progress->callback != NULL)
    progress->callback (source, result, progress->user_data);
  if (progress->delivering == 0)
    progress_release_data (progress);
}
