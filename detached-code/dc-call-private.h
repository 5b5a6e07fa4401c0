/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* One pending call, from call_async() to its callback, and the queue that
 * orders waiting calls.  A call completes exactly once: the first of its
 * result, its failure or its cancellation takes its task; whatever comes
 * after finds no task and is dropped. */

#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>

#include "dc-progress-private.h"

G_BEGIN_DECLS

typedef struct _DcCall DcCall;
typedef struct _DcWorkerProc DcWorkerProc;

/* The chunks of one map: a failure of one drops those after it that have
 * not been sent yet.  Shared by the map and its chunks' calls; the chunk
 * calls may outlive the map (a reply still due), hence the count. */
typedef struct
{
  gint     ref_count;   /* atomic */
  gint     drop_from;   /* atomic: chunks from this index on are not sent */
  guint    n_chunks;
  /* Per chunk, written on the pool's context before its task returns:
   * the index in the chunk of the item that failed, or G_MAXUINT. */
  guint   *failed_at;
  /* Set when a chunk's results are not all in normal form: the results
   * are then read as untrusted. */
  gint     untrusted;   /* atomic */
} DcCallGroup;

DcCallGroup *dc_call_group_new   (guint        n_chunks);
DcCallGroup *dc_call_group_ref   (DcCallGroup *group);
void         dc_call_group_unref (DcCallGroup *group);

typedef enum
{
  DC_CALL_NEW,       /* made, not yet submitted (maybe on its way from another thread) */
  DC_CALL_QUEUED,    /* in the pool's queue */
  DC_CALL_SENT,      /* in a worker's in-flight list */
  DC_CALL_DETACHED,  /* taken out of both, to be completed from a local list */
} DcCallWhere;

struct _DcCall
{
  GList          link;           /* in the queue, a worker's list or a local one */
  DcCallWhere    where;
  GTask         *task;           /* owned; NULL once completed */
  GBytes        *payload;        /* the marshalled arguments (or their head, with
                                  * @body), kept until the call is freed so
                                  * that it can be sent again */
  GVariant      *body;           /* large arguments, written from their own
                                  * bytes after @payload; or NULL */
  GUnixFDList   *fd_list;        /* descriptors to send with the arguments */
  GUnixFDList   *memfd;          /* the payload in a sealed memfd, once made, its
                                  * only descriptor; or NULL */
  guint64        serial;
  int            priority;
  GCancellable  *cancellable;    /* while the task is ours and can be cancelled */
  gulong         cancel_id;
  DcWorkerProc  *worker;         /* unowned; while SENT */
  GSource       *timeout_source; /* call-timeout, while it runs on its worker */
  GVariant      *result;         /* a completion waiting to be delivered ... */
  GError        *result_error;   /* ... once the read that produced it is over */
  DcProgress    *progress;       /* owned; the caller takes progress values */
  /* A map's chunk: its items (its time limit is call-timeout times this,
   * and its reply must carry as many results), its group and its place
   * there.  0 and NULL for a call. */
  guint          n_items;
  DcCallGroup   *group;
  guint          group_index;
  /* Calls submitted with this one, as one: all are queued or none. */
  GQueue        *batch;
};

/* Takes @task, @payload (both transfer full) and a reference to @fd_list. */
DcCall   *dc_call_new             (GTask        *task,
                                   GBytes       *payload,
                                   GUnixFDList  *fd_list,
                                   int           priority);
/* Large arguments: @body (transfer full) follows the payload, which is
 * only the head of the message, as dc_wire_marshal_split() made them.
 * Before the call is submitted. */
void      dc_call_set_body        (DcCall       *call,
                                   GVariant     *body);
/* Makes @call chunk @index of @group (a reference is taken), of @n_items
 * items. */
void      dc_call_set_chunk       (DcCall       *call,
                                   DcCallGroup  *group,
                                   guint         index,
                                   guint         n_items);
/* A chunk failed (at item @item of it, or G_MAXUINT for the chunk as a
 * whole): the chunks after it are not sent. */
void      dc_call_chunk_failed    (DcCall       *call,
                                   guint         item);
/* Only once the call has completed. */
void      dc_call_free            (DcCall       *call);

/* Whether the caller still waits for it. */
gboolean  dc_call_is_pending      (DcCall       *call);
/* Whether its cancellable was cancelled (any thread may have done it), or
 * an earlier chunk of its map failed. */
gboolean  dc_call_is_cancelled    (DcCall       *call);

void      dc_call_clear_timeout   (DcCall       *call);

/* Takes the call out of the queue or its worker, for a local list: no
 * cancellation or time limit will find it there. */
void      dc_call_detach          (DcCall       *call);

/* Takes the task, for a completion of the caller's own making; the call
 * stays, if in flight, only to have its reply dropped. */
GTask    *dc_call_steal_task      (DcCall       *call);

/* Completes @call with @value or @error (transfer full, exactly one of
 * them) and frees it.  A call already completed drops them.  The callback
 * may run here and may re-enter the pool. */
void      dc_call_complete        (DcCall       *call,
                                   GVariant     *value,
                                   GError       *error);
/* Completes it with what it kept in result / result_error. */
void      dc_call_deliver         (DcCall       *call);
/* Detaches every call of @calls (a local list) first, then fails each with
 * a copy of @error. */
void      dc_call_fail_all        (GQueue       *calls,
                                   const GError *error);

void      dc_call_return_cancelled (GTask       *task);
/* The error of a cancelled call. */
GError   *dc_call_cancelled_error  (void);

/* The pending call a task belongs to, or NULL once it has completed.  On
 * the pool's context. */
DcCall   *dc_call_from_task       (GTask        *task);
/* Watches @cancellable (the task's) through @mailbox: see
 * dc_cancel_hop_connect(). */
void      dc_call_watch_cancellable (DcCall     *call,
                                     gpointer    mailbox);

/* Waiting calls, by io_priority (lower first), FIFO among equals: one
 * FIFO per priority in use, the priorities in a balanced tree.  A push or
 * a removal costs O(1) among equal priorities and O(log p) for p distinct
 * ones. */
typedef struct
{
  GTree   *buckets;   /* GINT_TO_POINTER (priority) -> GQueue of DcCall */
  guint    length;
} DcCallQueue;

void      dc_call_queue_init      (DcCallQueue  *queue);
void      dc_call_queue_clear     (DcCallQueue  *queue);
guint     dc_call_queue_length    (DcCallQueue  *queue);
void      dc_call_queue_push      (DcCallQueue  *queue,
                                   DcCall       *call);
/* Back at the head of its priority: a call sent to a worker that will
 * never run it goes again before those that came after it. */
void      dc_call_queue_push_front (DcCallQueue *queue,
                                    DcCall      *call);
DcCall   *dc_call_queue_peek      (DcCallQueue  *queue);
DcCall   *dc_call_queue_pop       (DcCallQueue  *queue);
void      dc_call_queue_remove    (DcCallQueue  *queue,
                                   DcCall       *call);
/* Empties the queue into @calls, in queue order, each call detached. */
void      dc_call_queue_take_all  (DcCallQueue  *queue,
                                   GQueue       *calls);

G_END_DECLS
