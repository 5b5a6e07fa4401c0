/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Reaching the pool's main context from other threads.
 *
 * A pool belongs to one GMainContext (the thread-default one when it was
 * made) and to the thread that runs it.  Its state is touched only there;
 * dc_context_enter() is the one test of "may this thread touch it now",
 * and every entry point of the library goes through it.  What other
 * threads hand over travels through a DcMailbox.
 */

#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

typedef struct
{
  GMainContext *main_context;
  /* The thread that made the pool: it may enter while nobody else runs
   * the context.  Workers fork only from a thread that entered. */
  GThread      *owner_thread;
  /* A worker is a copy of the parent, pool objects included: in any other
   * process the pool is inert. */
  pid_t         owner_pid;
} DcContext;

void      dc_context_init              (DcContext   *ctx);
void      dc_context_clear             (DcContext   *ctx);

gboolean  dc_context_in_owner_process  (const DcContext *ctx);

/* TRUE when this thread may touch the pool now: it owns the context, or
 * made the pool and nobody else runs the context.  The context is then
 * acquired; dc_context_leave() releases it.  FALSE in a worker's copy. */
gboolean  dc_context_enter             (DcContext   *ctx);
void      dc_context_leave             (DcContext   *ctx);

/* dc_context_enter() for the entry points that only the pool's thread may
 * call: a critical names @function when another thread tries. */
gboolean  dc_context_enter_or_warn     (DcContext   *ctx,
                                        const char  *function);

/* Runs @func on the pool's context and waits until it has run: for a
 * last reference dropped in a thread that cannot enter. */
void      dc_context_run_and_wait      (DcContext   *ctx,
                                        GSourceFunc  func,
                                        gpointer     data);

/* Items posted from any thread, delivered in one batch on the context. */
typedef void (*DcMailboxFunc) (GQueue   *items,
                               gpointer  user_data);

typedef struct
{
  GMutex         lock;
  GQueue         items;
  GSource       *source;
  DcContext     *ctx;
  DcMailboxFunc  deliver;
  gpointer       user_data;
  gpointer     (*ref) (gpointer);
  GDestroyNotify unref;
} DcMailbox;

/* @ref and @unref keep @user_data alive while a delivery is due. */
void      dc_mailbox_init              (DcMailbox     *mailbox,
                                        DcContext     *ctx,
                                        DcMailboxFunc  deliver,
                                        gpointer       user_data,
                                        gpointer     (*ref) (gpointer),
                                        GDestroyNotify unref);
/* Any thread.  @link's data is the item. */
void      dc_mailbox_post              (DcMailbox     *mailbox,
                                        GList         *link);
/* On the context: takes what waits, without delivering it. */
void      dc_mailbox_take              (DcMailbox     *mailbox,
                                        GQueue        *items);
gboolean  dc_mailbox_is_empty          (DcMailbox     *mailbox);
void      dc_mailbox_clear             (DcMailbox     *mailbox);

/* Cancellation from any thread: the handler posts its task to @mailbox.
 * The handler's data is a strong reference to @task, released when the
 * handler is disconnected and no emission runs it any more. */
gulong    dc_cancel_hop_connect        (DcMailbox     *mailbox,
                                        GCancellable  *cancellable,
                                        GTask         *task);
void      dc_cancel_hop_disconnect     (GCancellable  *cancellable,
                                        gulong         handler_id);

/* Reaps, in a thread of its own, processes that no context will reap
 * (their pool's private context may never run again): takes @pidfds and
 * closes them. */
void      dc_context_reap_in_thread    (GArray        *pidfds);

G_END_DECLS
