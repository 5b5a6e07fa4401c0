/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Reaching the pool's main context from other threads: the one guard,
 * the mailboxes that carry calls and cancellations over, a dispose that
 * must wait for the context's thread, and reaping no context will do. */

#include "config.h"

#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc-context-private.h"
#include "dc-process-private.h"

void
dc_context_init (DcContext *ctx)
{
  ctx->main_context = g_main_context_ref_thread_default ();
  ctx->owner_thread = g_thread_self ();
  ctx->owner_pid = dc_process_get_self_pid ();
}

void
dc_context_clear (DcContext *ctx)
{
  /* A worker's copy never touches the parent's context. */
  if (dc_context_in_owner_process (ctx))
    g_main_context_unref (ctx->main_context);
  ctx->main_context = NULL;
}

/* On every call of the pool: no system call. */
gboolean
dc_context_in_owner_process (const DcContext *ctx)
{
  return ctx->owner_pid == dc_process_get_self_pid ();
}

gboolean
dc_context_enter (DcContext *ctx)
{
  if (!dc_context_in_owner_process (ctx))
    return FALSE;

  /* The maker of the pool may enter a context nobody runs; any other
   * thread only the one it runs itself.  A worker dies with the thread
   * that forked it, so forks stay with these threads. */
  if (g_thread_self () != ctx->owner_thread && !g_main_context_is_owner (ctx->main_context))
    return FALSE;
  return g_main_context_acquire (ctx->main_context);
}

void
dc_context_leave (DcContext *ctx)
{
  g_main_context_release (ctx->main_context);
}

gboolean
dc_context_enter_or_warn (DcContext  *ctx,
                          const char *function)
{
  if (dc_context_enter (ctx))
    return TRUE;
  /* In a worker the pool is a copy, inert by design: no warning. */
  /* g_log(), not g_critical(): with structured logging, only it reaches
   * g_test_expect_message(). */
  if (dc_context_in_owner_process (ctx))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: called from a thread that does not run the pool's main context; "
                "only calls may be made from other threads", function);
  return FALSE;
}

typedef struct
{
  GSourceFunc func;
  gpointer    data;
  gboolean    done;
  GMutex      lock;
  GCond       cond;
} Wait;

static gboolean
run_and_signal_cb (gpointer data)
{
  Wait *wait = data;

  wait->func (wait->data);

  g_mutex_lock (&wait->lock);
  wait->done = TRUE;
  g_cond_signal (&wait->cond);
  g_mutex_unlock (&wait->lock);
  return G_SOURCE_REMOVE;
}

void
dc_context_run_and_wait (DcContext   *ctx,
                         GSourceFunc  func,
                         gpointer     data)
{
  Wait wait = { func, data, FALSE, };
  GSource *source = g_idle_source_new ();

  g_mutex_init (&wait.lock);
  g_cond_init (&wait.cond);
  g_source_set_priority (source, G_PRIORITY_HIGH);
  g_source_set_callback (source, run_and_signal_cb, &wait, NULL);
  g_source_attach (source, ctx->main_context);
  g_source_unref (source);

  g_mutex_lock (&wait.lock);
  while (!wait.done)
    g_cond_wait (&wait.cond, &wait.lock);
  g_mutex_unlock (&wait.lock);
  g_mutex_clear (&wait.lock);
  g_cond_clear (&wait.cond);
}

/* ---- mailboxes ---- */

void
dc_mailbox_init (DcMailbox      *mailbox,
                 DcContext      *ctx,
                 DcMailboxFunc   deliver,
                 gpointer        user_data,
                 gpointer      (*ref) (gpointer),
                 GDestroyNotify  unref)
{
  g_mutex_init (&mailbox->lock);
  g_queue_init (&mailbox->items);
  mailbox->source = NULL;
  mailbox->ctx = ctx;
  mailbox->deliver = deliver;
  mailbox->user_data = user_data;
  mailbox->ref = ref;
  mailbox->unref = unref;
}

static gboolean
mailbox_deliver_cb (gpointer data)
{
  DcMailbox *mailbox = data;
  GQueue items = G_QUEUE_INIT;

  dc_mailbox_take (mailbox, &items);
  if (items.length > 0)
    mailbox->deliver (&items, mailbox->user_data);
  return G_SOURCE_REMOVE;
}

static void
mailbox_source_done (gpointer data)
{
  DcMailbox *mailbox = data;

  mailbox->unref (mailbox->user_data);
}

void
dc_mailbox_post (DcMailbox *mailbox,
                 GList     *link)
{
  GSource *source = NULL;

  g_mutex_lock (&mailbox->lock);
  g_queue_push_tail_link (&mailbox->items, link);
  if (mailbox->source == NULL)
    {
      /* The source holds the mailbox's owner until it has delivered. */
      source = mailbox->source = g_idle_source_new ();
      g_source_set_priority (source, G_PRIORITY_DEFAULT);
      g_source_set_callback (source, mailbox_deliver_cb, mailbox, mailbox_source_done);
      mailbox->ref (mailbox->user_data);
      g_source_attach (source, mailbox->ctx->main_context);
    }
  g_mutex_unlock (&mailbox->lock);
}

void
dc_mailbox_take (DcMailbox *mailbox,
                 GQueue    *items)
{
  GSource *source;

  g_mutex_lock (&mailbox->lock);
  *items = mailbox->items;
  g_queue_init (&mailbox->items);
  source = g_steal_pointer (&mailbox->source);
  g_mutex_unlock (&mailbox->lock);

  /* Taken by hand (a shutdown): the source has nothing left to do. */
  if (source != NULL)
    {
      g_source_destroy (source);
      g_source_unref (source);
    }
}

gboolean
dc_mailbox_is_empty (DcMailbox *mailbox)
{
  gboolean empty;

  g_mutex_lock (&mailbox->lock);
  empty = mailbox->items.length == 0;
  g_mutex_unlock (&mailbox->lock);
  return empty;
}

void
dc_mailbox_clear (DcMailbox *mailbox)
{
  g_assert (mailbox->items.length == 0);
  g_assert (mailbox->source == NULL);
  g_mutex_clear (&mailbox->lock);
}

/* ---- cancellation ---- */

typedef struct
{
  DcMailbox *mailbox;
  GTask     *task;    /* strong: an emission may outlive the call */
} CancelHop;

static void
cancel_hop_free (gpointer data)
{
  CancelHop *hop = data;

  g_object_unref (hop->task);
  g_free (hop);
}

/* In whichever thread cancelled. */
static void
cancelled_cb (GCancellable *cancellable,
              gpointer      data)
{
  CancelHop *hop = data;
  GList *link = g_list_alloc ();

  /* The task keeps its pool, and so the mailbox, alive. */
  link->data = g_object_ref (hop->task);
  dc_mailbox_post (hop->mailbox, link);
}

gulong
dc_cancel_hop_connect (DcMailbox    *mailbox,
                       GCancellable *cancellable,
                       GTask        *task)
{
  CancelHop *hop = g_new (CancelHop, 1);

  hop->mailbox = mailbox;
  hop->task = g_object_ref (task);
  /* Already cancelled: the handler runs here and now, and 0 comes back. */
  return g_cancellable_connect (cancellable, G_CALLBACK (cancelled_cb), hop, cancel_hop_free);
}

void
dc_cancel_hop_disconnect (GCancellable *cancellable,
                          gulong        handler_id)
{
  /* Not g_cancellable_disconnect(): it waits for a running emission, and
   * deadlocks when that emission is this thread's own (a "cancelled"
   * handler of the application's that shuts the pool down).  GSignal
   * keeps the handler's data until any emission in progress is over, and
   * a handler that runs late posts a task nobody looks for any more. */
  if (handler_id != 0)
    g_signal_handler_disconnect (cancellable, handler_id);
}

/* ---- reaping ---- */

static gpointer
reaper_thread (gpointer data)
{
  GArray *pidfds = data;
  guint i;

  for (i = 0; i < pidfds->len; i++)
    {
      int pidfd = g_array_index (pidfds, int, i);
      int status;

      dc_process_reap (pidfd, TRUE, &status);
      close (pidfd);
    }
  g_array_unref (pidfds);
  return NULL;
}

void
dc_context_reap_in_thread (GArray *pidfds)
{
  if (pidfds->len == 0)
    {
      g_array_unref (pidfds);
      return;
    }
  g_thread_unref (g_thread_new ("dc-reaper", reaper_thread, pidfds));
}
