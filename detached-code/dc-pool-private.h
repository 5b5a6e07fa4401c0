/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Scheduling: calls are submitted here and dispatched to workers, which
 * are forked (through the launcher), pipelined, recycled and let go here.
 * The live counts are kept here.  All of it runs on the pool's context,
 * except dc_pool_post(). */

#pragma once

#include "dc-call-private.h"
#include "dc-context-private.h"
#include "dc-launcher-private.h"
#include "dc-worker-proc-private.h"

G_BEGIN_DECLS

typedef struct _DcPool DcPool;

typedef struct
{
  DcWorkerProcSettings proc;     /* what workers read as they go */
  guint                min_workers;
  guint                max_workers;
  guint                pipeline_depth;    /* >= 1 */
  guint                max_worker_calls;  /* 0 = unlimited */
  guint                max_queued;        /* 0 = unbounded; checked as calls are submitted */
  gboolean             exit_on_die;       /* for workers forked from now on */
  gboolean             kill_on_cancel;
} DcPoolSettings;

typedef enum
{
  DC_POOL_COUNT_WORKERS,
  DC_POOL_COUNT_BUSY,
  DC_POOL_COUNT_QUEUED,
} DcPoolCount;

typedef struct
{
  void (*notify)         (DcPoolCount  count,
                          gpointer     user_data);
  void (*worker_spawned) (GPid         pid,
                          gpointer     user_data);
  void (*worker_exited)  (GPid         pid,
                          int          wait_status,
                          gpointer     user_data);
} DcPoolCallbacks;

/* Made on the thread-default context of the calling thread. */
DcPool          *dc_pool_new              (const DcPoolCallbacks *callbacks,
                                           gpointer               user_data);
DcPool          *dc_pool_ref              (DcPool        *pool);
/* Any thread. */
void             dc_pool_unref            (DcPool        *pool);

DcContext       *dc_pool_get_context      (DcPool        *pool);
DcLauncher      *dc_pool_get_launcher     (DcPool        *pool);
/* The owner writes them; changes that make room call dc_pool_dispatch(). */
DcPoolSettings  *dc_pool_get_settings     (DcPool        *pool);

gboolean         dc_pool_start            (DcPool        *pool,
                                           GError       **error);
/* On the context. */
void             dc_pool_submit           (DcPool        *pool,
                                           DcCall        *call);
/* Any thread: submits and dispatches on the context when this thread may
 * enter it, else posts. */
void             dc_pool_call             (DcPool        *pool,
                                           DcCall        *call);
/* From a thread that cannot enter the context. */
void             dc_pool_post             (DcPool        *pool,
                                           DcCall        *call);
void             dc_pool_dispatch         (DcPool        *pool);
void             dc_pool_shutdown         (DcPool        *pool);
void             dc_pool_restart          (DcPool        *pool);
/* After dc_pool_shutdown(), as its owner goes: no more callbacks; workers
 * not yet reaped are reaped without it. */
void             dc_pool_disown           (DcPool        *pool);

/* Whether any worker process is alive. */
gboolean         dc_pool_has_workers      (DcPool        *pool);
/* Every process it made that is not reaped yet: workers, leaving ones
 * too, and the template.  For tests that check nothing is left behind. */
GArray          *dc_pool_list_processes   (DcPool        *pool);
/* Whether a call waits, here or on its way from another thread. */
gboolean         dc_pool_has_waiting      (DcPool        *pool);
guint            dc_pool_get_n_workers    (DcPool        *pool);
guint            dc_pool_get_n_busy       (DcPool        *pool);
guint            dc_pool_get_n_queued     (DcPool        *pool);
GPid            *dc_pool_get_worker_pids  (DcPool        *pool,
                                           guint         *n_pids);

G_END_DECLS
