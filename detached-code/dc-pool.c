/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Scheduling: submitting calls, dispatching them to workers, growing and
 * shrinking the pool, pipelining, recycling, and the live counts. */

#include "config.h"

#include <glib/gi18n-lib.h>

#include "dc-pool-private.h"

struct _DcPool
{
  gint                   ref_count;   /* atomic: a last reference may go anywhere */
  DcContext              ctx;
  DcLauncher            *launcher;
  DcPoolSettings         settings;
  const DcPoolCallbacks *callbacks;   /* NULL once disowned */
  gpointer               user_data;

  gboolean               started;
  DcCallQueue            queue;
  GList                 *workers;     /* DcWorkerProc, one reference each, until reaped */
  guint                  n_alive;     /* those: the processes max-workers bounds */
  guint                  n_running;   /* workers taking calls */
  /* After start() or restart(): make min-workers as room comes. */
  gboolean               refill;
  guint                  n_busy;      /* last notified */
  guint                  n_queued;    /* last notified */
  guint64                next_serial;

  /* dispatch() runs, or is held off; what changes meanwhile asks it to go
   * round again. */
  gboolean               dispatching;
  guint                  held;
  gboolean               dispatch_again;

  DcMailbox              incoming;    /* calls from other threads */
  DcMailbox              cancels;     /* tasks cancelled, from any thread */
};

static const DcWorkerProcCallbacks proc_callbacks;
static void pool_refill (DcPool *pool);

static void
pool_notify (DcPool      *pool,
             DcPoolCount  count)
{
  if (pool->callbacks != NULL)
    pool->callbacks->notify (count, pool->user_data);
}

/* Called after every read of replies: compares first, notifies only on
 * change. */
static void
pool_update_stats (DcPool *pool)
{
  guint n_busy = 0;
  GList *l;

  for (l = pool->workers; l != NULL; l = l->next)
    if (dc_worker_proc_get_n_calls (l->data) > 0)
      n_busy++;

  if (pool->n_busy != n_busy)
    {
      pool->n_busy = n_busy;
      pool_notify (pool, DC_POOL_COUNT_BUSY);
    }
  if (pool->n_queued != dc_call_queue_length (&pool->queue))
    {
      pool->n_queued = dc_call_queue_length (&pool->queue);
      pool_notify (pool, DC_POOL_COUNT_QUEUED);
    }
}

static guint
effective_max (DcPool *pool)
{
  return MAX (pool->settings.min_workers, pool->settings.max_workers);
}

/* Whether one more worker process may be alive: those leaving count too,
 * until they are reaped. */
static gboolean
has_room (DcPool *pool)
{
  return pool->n_alive < effective_max (pool);
}

/* Holds dispatching off while several things change at once; the last
 * release dispatches if anything asked to. */
static void
pool_hold (DcPool *pool)
{
  pool->held++;
}

static void
pool_release (DcPool *pool)
{
  g_assert (pool->held > 0);
  if (--pool->held == 0 && pool->dispatch_again)
    dc_pool_dispatch (pool);
}

/* ---- workers ---- */

static DcLaunchOptions
launch_options (DcPool *pool)
{
  DcLaunchOptions options = {
    pool->settings.proc.marshaller,
    pool->settings.exit_on_die,
    pool->settings.proc.memfd_threshold,
  };

  return options;
}

/* Takes @launched into the pool.  Returns a new reference: the caller's,
 * beside the pool's own. */
static DcWorkerProc *
pool_adopt (DcPool     *pool,
            DcLaunched *launched)
{
  DcWorkerProc *proc;

  proc = dc_worker_proc_new (launched->pid, launched->pidfd, launched->channel,
                             launched->stderr_fd,
                             pool->ctx.main_context, &pool->settings.proc,
                             pool->settings.exit_on_die, &proc_callbacks, pool);
  pool->workers = g_list_prepend (pool->workers, dc_worker_proc_ref (proc));
  pool->n_alive++;
  pool->n_running++;
  pool_notify (pool, DC_POOL_COUNT_WORKERS);
  if (pool->callbacks != NULL)
    pool->callbacks->worker_spawned (launched->pid, pool->user_data);
  return proc;
}

/* Returns a new reference: the caller's, beside the pool's own. */
static DcWorkerProc *
pool_spawn (DcPool  *pool,
            GError **error)
{
  DcLaunchOptions options = launch_options (pool);
  DcLaunched launched;

  if (!dc_launcher_spawn (pool->launcher, &options, &launched, error))
    return NULL;
  return pool_adopt (pool, &launched);
}

/* Up to min-workers, as room allows, in one batch.  FALSE with @error if
 * a worker could not be made. */
static gboolean
pool_fill (DcPool  *pool,
           GError **error)
{
  DcLaunchOptions options = launch_options (pool);
  guint wanted, n_made, i;
  DcLaunched *launched;
  gboolean ok;

  if (pool->n_running >= pool->settings.min_workers || !has_room (pool))
    return TRUE;
  wanted = MIN (pool->settings.min_workers - pool->n_running,
                effective_max (pool) - pool->n_alive);
  launched = g_new0 (DcLaunched, wanted);
  n_made = dc_launcher_spawn_many (pool->launcher, &options, launched, wanted, error);
  ok = n_made == wanted;
  for (i = 0; i < n_made; i++)
    dc_worker_proc_unref (pool_adopt (pool, &launched[i]));
  g_free (launched);
  return ok;
}

static void
proc_left_service (DcWorkerProc *proc,
                   gpointer      data)
{
  DcPool *pool = data;

  pool->n_running--;
  pool_notify (pool, DC_POOL_COUNT_WORKERS);
  /* Room for a new worker, or calls to move on. */
  dc_pool_dispatch (pool);
}

static void
proc_ready (DcWorkerProc *proc,
            gpointer      data)
{
  dc_pool_dispatch (data);
}

static void
proc_idle_timeout (DcWorkerProc *proc,
                   gpointer      data)
{
  DcPool *pool = data;

  if (pool->n_running > pool->settings.min_workers)
    {
      dc_worker_proc_retire (proc);
      pool_update_stats (pool);
    }
}

static void
proc_requeue (DcWorkerProc *proc,
              DcCall       *call,
              gpointer      data)
{
  DcPool *pool = data;

  dc_call_queue_push_front (&pool->queue, call);
}

static void
proc_exited (DcWorkerProc *proc,
             int           wait_status,
             GQueue       *calls,
             const GError *error,
             gpointer      data)
{
  DcPool *pool = dc_pool_ref (data);
  GPid pid = dc_worker_proc_get_pid (proc);
  GQueue failed = *calls;

  g_queue_init (calls);
  pool->workers = g_list_remove (pool->workers, proc);
  pool->n_alive--;
  dc_worker_proc_unref (proc);

  if (pool->callbacks != NULL)
    pool->callbacks->worker_exited (pid, wait_status, pool->user_data);

  /* n-workers is lower already; calls queued behind get a fresh worker
   * before the failed ones' callbacks run. */
  pool_refill (pool);
  dc_pool_dispatch (pool);
  if (failed.length > 0)
    dc_call_fail_all (&failed, error);
  pool_update_stats (pool);
  dc_pool_unref (pool);
}

static const DcWorkerProcCallbacks proc_callbacks = {
  proc_left_service,
  proc_ready,
  proc_idle_timeout,
  proc_requeue,
  proc_exited,
};

/* A copy of the list, each worker held: what is done to one may re-enter
 * and change the list. */
static GList *
hold_workers (DcPool *pool)
{
  GList *copy = g_list_copy (pool->workers), *l;

  for (l = copy; l != NULL; l = l->next)
    dc_worker_proc_ref (l->data);
  return copy;
}

static DcWorkerProc *
find_idle_worker (DcPool *pool)
{
  GList *l;

  for (l = pool->workers; l != NULL; l = l->next)
    if (dc_worker_proc_get_state (l->data) == DC_WORKER_PROC_RUNNING &&
        dc_worker_proc_get_n_calls (l->data) == 0)
      return l->data;
  return NULL;
}

/* With pipeline-depth > 1: the least loaded worker that has room. */
static DcWorkerProc *
find_worker_with_room (DcPool *pool)
{
  DcWorkerProc *best = NULL;
  GList *l;

  for (l = pool->workers; l != NULL; l = l->next)
    {
      DcWorkerProc *proc = l->data;
      guint n = dc_worker_proc_get_n_calls (proc);

      if (dc_worker_proc_get_state (proc) == DC_WORKER_PROC_RUNNING &&
          n < pool->settings.pipeline_depth &&
          (best == NULL || n < dc_worker_proc_get_n_calls (best)))
        best = proc;
    }
  return best;
}

/* One round: sends queued calls to idle workers, forking more while the
 * pool may grow, then writes what each worker was given in one go. */
static void
dispatch_round (DcPool  *pool,
                GError **spawn_error)
{
  /* Workers that got a first frame this round; dispatch runs after every
   * read of replies, so no allocation unless the pool is large. */
  DcWorkerProc *to_flush_local[16];
  DcWorkerProc **to_flush = to_flush_local;
  guint n_to_flush = 0, to_flush_size = G_N_ELEMENTS (to_flush_local);
  guint i;

  while (dc_call_queue_length (&pool->queue) > 0 && pool->callbacks != NULL)
    {
      DcWorkerProc *proc;
      DcCall *call = dc_call_queue_peek (&pool->queue);

      /* Cancelled in another thread, its cancellation not here yet: it
       * reaches no worker, and makes none. */
      if (dc_call_is_cancelled (call))
        {
          g_autoptr(GTask) task = NULL;

          dc_call_queue_remove (&pool->queue, call);
          dc_call_detach (call);
          task = dc_call_steal_task (call);
          dc_call_free (call);
          dc_call_return_cancelled (task);
          continue;
        }

      proc = find_idle_worker (pool);
      if (proc == NULL && has_room (pool) && *spawn_error == NULL)
        {
          DcWorkerProc *spawned = pool_spawn (pool, spawn_error);

          /* Its signals may have re-entered: shut down, taken the call. */
          if (spawned != NULL && dc_worker_proc_get_state (spawned) == DC_WORKER_PROC_RUNNING &&
              pool->callbacks != NULL)
            proc = spawned;
          g_clear_pointer (&spawned, dc_worker_proc_unref);
          if (dc_call_queue_length (&pool->queue) == 0)
            break;
        }
      /* Idle workers first, new ones next, then a place in a pipeline. */
      if (proc == NULL && pool->settings.pipeline_depth > 1)
        proc = find_worker_with_room (pool);
      if (proc == NULL)
        break;

      call = dc_call_queue_pop (&pool->queue);
      if (!dc_worker_proc_has_output (proc))
        {
          if (n_to_flush == to_flush_size)
            {
              to_flush_size *= 2;
              if (to_flush == to_flush_local)
                to_flush = g_memdup2 (to_flush_local, sizeof to_flush_local);
              to_flush = g_renew (DcWorkerProc *, to_flush, to_flush_size);
            }
          to_flush[n_to_flush++] = dc_worker_proc_ref (proc);
        }
      dc_worker_proc_send (proc, call);

      /* Its last call: it leaves once it has answered. */
      if (pool->settings.max_worker_calls > 0 &&
          dc_worker_proc_get_n_sent (proc) >= pool->settings.max_worker_calls)
        dc_worker_proc_retire (proc);
    }

  /* A write may find the worker gone, and re-enter. */
  for (i = 0; i < n_to_flush; i++)
    {
      dc_worker_proc_flush (to_flush[i]);
      dc_worker_proc_unref (to_flush[i]);
    }
  if (to_flush != to_flush_local)
    g_free (to_flush);
}

void
dc_pool_dispatch (DcPool *pool)
{
  g_autoptr(GError) spawn_error = NULL;

  if (pool->dispatching || pool->held > 0)
    {
      pool->dispatch_again = TRUE;
      return;
    }

  /* Callbacks (of failed calls) may drop the last reference. */
  dc_pool_ref (pool);
  pool->dispatching = TRUE;
  do
    {
      pool->dispatch_again = FALSE;
      dispatch_round (pool, &spawn_error);
    }
  while (pool->dispatch_again && spawn_error == NULL);
  pool->dispatching = FALSE;

  /* Queued calls never wait on a dead pool. */
  if (spawn_error != NULL && pool->n_running == 0 && dc_call_queue_length (&pool->queue) > 0)
    {
      GQueue calls = G_QUEUE_INIT;

      dc_call_queue_take_all (&pool->queue, &calls);
      dc_call_fail_all (&calls, spawn_error);
    }

  pool_update_stats (pool);
  dc_pool_unref (pool);
}

/* ---- calls ---- */

/* Calls the workers could take now without queueing: a free place in a
 * running worker's pipeline, or in a worker the pool may still fork. */
static guint
free_places (DcPool *pool)
{
  guint depth = pool->settings.pipeline_depth, places = 0;
  GList *l;

  for (l = pool->workers; l != NULL; l = l->next)
    if (dc_worker_proc_get_state (l->data) == DC_WORKER_PROC_RUNNING &&
        dc_worker_proc_get_n_calls (l->data) < depth)
      places += depth - dc_worker_proc_get_n_calls (l->data);
  if (has_room (pool))
    places += (effective_max (pool) - pool->n_alive) * depth;
  return places;
}

/* Whether @n more calls may wait under max-queued.  At the bound, waiting
 * calls first go to any worker that has room: calls from other threads
 * are submitted as a batch before they are dispatched, and must not be
 * refused for want of a dispatch.  A map's chunks come as one: those that
 * free workers would take at once do not count. */
static gboolean
queue_has_room (DcPool *pool,
                guint   n)
{
  guint bound = pool->settings.max_queued;
  guint length = dc_call_queue_length (&pool->queue);

  if (bound == 0 || (length <= bound && n <= bound - length))
    return TRUE;
  dc_pool_dispatch (pool);
  length = dc_call_queue_length (&pool->queue);
  if (length <= bound && n <= bound - length)
    return TRUE;
  /* Waiting calls take any free place first. */
  return length == 0 && n - bound <= free_places (pool);
}

/* Moves the calls of @call's batch to the end of @calls, each detached. */
static void
take_batch (DcCall *call,
            GQueue *calls)
{
  GList *link;

  if (call->batch == NULL)
    return;
  while ((link = g_queue_pop_head_link (call->batch)) != NULL)
    {
      dc_call_detach (link->data);
      g_queue_push_tail_link (calls, link);
    }
  g_clear_pointer (&call->batch, g_queue_free);
}

/* Queues @call, with its batch, or takes them out of the pool's hands: a
 * call cancelled already, or calls the queue has no room for.  Then each
 * refused task is pushed on @refused, followed by why, for the caller to
 * complete when it is done with the pool. */
static void
pool_take (DcPool  *pool,
           DcCall  *call,
           GQueue  *refused)
{
  GCancellable *cancellable = g_task_get_cancellable (call->task);
  GQueue calls = G_QUEUE_INIT;
  GError *why = NULL;
  GList *link;

  pool->started = TRUE;
  g_queue_push_tail_link (&calls, &call->link);
  take_batch (call, &calls);

  if (cancellable != NULL && g_cancellable_is_cancelled (cancellable))
    why = dc_call_cancelled_error ();
  else if (!queue_has_room (pool, calls.length))
    why = g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_BUSY,
                       _("The pool is busy: the queue of waiting calls is full (max-queued is %u)"),
                       pool->settings.max_queued);

  while ((link = g_queue_pop_head_link (&calls)) != NULL)
    {
      DcCall *each = link->data;

      each->serial = pool->next_serial++;
      if (why == NULL)
        {
          dc_call_watch_cancellable (each, &pool->cancels);
          dc_call_queue_push (&pool->queue, each);
          continue;
        }
      g_queue_push_tail (refused, dc_call_steal_task (each));
      g_queue_push_tail (refused, calls.length > 0 ? g_error_copy (why) : why);
      dc_call_free (each);
    }
}

/* Completes the tasks pool_take() refused. */
static void
return_refused (GQueue *refused)
{
  while (!g_queue_is_empty (refused))
    {
      g_autoptr(GTask) task = g_queue_pop_head (refused);

      g_task_return_error (task, g_queue_pop_head (refused));
    }
}

void
dc_pool_submit (DcPool *pool,
                DcCall *call)
{
  GQueue refused = G_QUEUE_INIT;   /* GTask, then its GError */

  /* The tasks were made in this same dispatch of their context, so GTask
   * delivers the errors from an idle: never inside the caller's
   * call_async(). */
  pool_take (pool, call, &refused);
  return_refused (&refused);
}

void
dc_pool_post (DcPool *pool,
              DcCall *call)
{
  dc_mailbox_post (&pool->incoming, &call->link);
}

void
dc_pool_call (DcPool *pool,
              DcCall *call)
{
  if (dc_context_enter (&pool->ctx))
    {
      dc_pool_submit (pool, call);
      dc_pool_dispatch (pool);
      dc_context_leave (&pool->ctx);
    }
  else
    /* Another thread runs the pool's context: workers fork only there. */
    dc_pool_post (pool, call);
}

/* Calls made in other threads.  Their tasks are older than this dispatch,
 * so GTask runs the callback of one refused here at once: only after the
 * whole batch is in the queue, so that one which shuts the pool down or
 * restarts it finds every other call of the batch where that reaches it. */
static void
deliver_incoming (GQueue   *calls,
                  gpointer  data)
{
  DcPool *pool = dc_pool_ref (data);
  GQueue refused = G_QUEUE_INIT;   /* GTask, then its GError */
  GList *link;

  while ((link = g_queue_pop_head_link (calls)) != NULL)
    pool_take (pool, link->data, &refused);
  dc_pool_dispatch (pool);
  return_refused (&refused);
  dc_pool_unref (pool);
}

/* Returns CANCELLED to the caller now.  A queued call is gone; one in
 * flight stays on its worker until its reply comes, and is dropped then,
 * unless kill-on-cancel kills the worker that runs it. */
static void
pool_cancel (DcPool *pool,
             DcCall *call)
{
  g_autoptr(GTask) task = dc_call_steal_task (call);

  switch (call->where)
    {
    case DC_CALL_QUEUED:
      dc_call_queue_remove (&pool->queue, call);
      dc_call_detach (call);
      dc_call_free (call);
      break;
    case DC_CALL_SENT:
      if (pool->settings.kill_on_cancel && dc_worker_proc_is_running (call->worker, call))
        dc_worker_proc_kill_for_call (call->worker, call,
                                      g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED,
                                                   _("Worker process %d was killed: the call it was running was cancelled"),
                                                   (int) dc_worker_proc_get_pid (call->worker)));
      break;
    case DC_CALL_DETACHED:   /* its owner frees it */
    case DC_CALL_NEW:
    default:
      break;
    }

  dc_call_return_cancelled (task);
}

static void
deliver_cancels (GQueue   *tasks,
                 gpointer  data)
{
  DcPool *pool = dc_pool_ref (data);
  GList *link;

  /* Every cancellation at hand first: a worker killed for one is not
   * replaced for a call that is cancelled next. */
  pool_hold (pool);
  while ((link = g_queue_pop_head_link (tasks)) != NULL)
    {
      GTask *task = link->data;
      DcCall *call = dc_call_from_task (task);

      /* None: it completed already, or it is still on its way in from
       * another thread, where submission sees the cancellable. */
      if (call != NULL)
        pool_cancel (pool, call);
      g_object_unref (task);
      g_list_free_1 (link);
    }
  pool_release (pool);
  pool_update_stats (pool);
  dc_pool_unref (pool);
}

/* ---- the pool ---- */

DcPool *
dc_pool_new (const DcPoolCallbacks *callbacks,
             gpointer               user_data)
{
  DcPool *pool = g_new0 (DcPool, 1);

  pool->ref_count = 1;
  dc_context_init (&pool->ctx);
  pool->launcher = dc_launcher_new (pool->ctx.main_context);
  pool->callbacks = callbacks;
  pool->user_data = user_data;
  pool->settings.proc.marshaller = DC_MARSHALLER_VARIANT;
  pool->settings.min_workers = 1;
  pool->settings.max_workers = 1;
  pool->settings.pipeline_depth = 1;
  dc_call_queue_init (&pool->queue);
  pool->next_serial = 1;
  dc_mailbox_init (&pool->incoming, &pool->ctx, deliver_incoming, pool,
                   (gpointer (*) (gpointer)) dc_pool_ref, (GDestroyNotify) dc_pool_unref);
  dc_mailbox_init (&pool->cancels, &pool->ctx, deliver_cancels, pool,
                   (gpointer (*) (gpointer)) dc_pool_ref, (GDestroyNotify) dc_pool_unref);
  return pool;
}

DcPool *
dc_pool_ref (DcPool *pool)
{
  g_atomic_int_inc (&pool->ref_count);
  return pool;
}

void
dc_pool_unref (DcPool *pool)
{
  if (!g_atomic_int_dec_and_test (&pool->ref_count))
    return;

  /* In a worker, a copy: the processes and the context are the parent's,
   * and a thread of the parent's may have held a mailbox's lock. */
  if (dc_context_in_owner_process (&pool->ctx))
    {
      g_assert (pool->workers == NULL);
      dc_call_queue_clear (&pool->queue);
      dc_mailbox_clear (&pool->incoming);
      dc_mailbox_clear (&pool->cancels);
    }
  dc_launcher_free (pool->launcher, FALSE);
  dc_context_clear (&pool->ctx);
  g_free (pool);
}

DcContext *
dc_pool_get_context (DcPool *pool)
{
  return &pool->ctx;
}

DcLauncher *
dc_pool_get_launcher (DcPool *pool)
{
  return pool->launcher;
}

DcPoolSettings *
dc_pool_get_settings (DcPool *pool)
{
  return &pool->settings;
}

gboolean
dc_pool_start (DcPool  *pool,
               GError **error)
{
  gboolean ok;

  pool->started = TRUE;
  /* The template now, from the parent as it is at start(). */
  ok = dc_launcher_prepare (pool->launcher, error);
  /* Workers still leaving (after a shutdown) count against max-workers:
   * the rest come as they are reaped. */
  pool->refill = TRUE;
  ok = ok && pool_fill (pool, error);
  if (!ok || pool->n_running >= pool->settings.min_workers)
    pool->refill = FALSE;
  /* Calls made before may be waiting. */
  dc_pool_dispatch (pool);
  return ok;
}

/* Up to min-workers after a start() or restart(), as room allows. */
static void
pool_refill (DcPool *pool)
{
  g_autoptr(GError) error = NULL;

  if (!pool->refill || !pool->started || pool->callbacks == NULL ||
      !dc_launcher_has_code (pool->launcher))
    return;

  if (!pool_fill (pool, &error))
    {
      /* Calls fork their own worker, or fail with SPAWN. */
      g_debug ("Cannot make min-workers workers: %s", error->message);
      pool->refill = FALSE;
      return;
    }
  if (pool->n_running >= pool->settings.min_workers)
    pool->refill = FALSE;
}

void
dc_pool_shutdown (DcPool *pool)
{
  g_autoptr(GError) error = NULL;
  GQueue calls = G_QUEUE_INIT;
  GQueue incoming = G_QUEUE_INIT;
  GList *workers, *l;

  dc_pool_ref (pool);
  pool->started = FALSE;
  pool->refill = FALSE;

  /* Everything is taken before any callback runs: callbacks may call in.
   * Waiting calls first, so that no worker leaving finds one to take. */
  dc_call_queue_take_all (&pool->queue, &calls);
  dc_mailbox_take (&pool->incoming, &incoming);
  while (incoming.length > 0)
    {
      DcCall *call = g_queue_pop_head_link (&incoming)->data;

      dc_call_detach (call);
      g_queue_push_tail_link (&calls, &call->link);
      take_batch (call, &calls);
    }

  workers = hold_workers (pool);
  for (l = workers; l != NULL; l = l->next)
    {
      GQueue taken = G_QUEUE_INIT;

      dc_worker_proc_detach (l->data, &taken);
      /* Running calls fail before waiting ones. */
      while (taken.length > 0)
        {
          GList *link = g_queue_pop_tail_link (&taken);

          g_queue_push_head_link (&calls, link);
        }
    }
  g_list_free_full (workers, (GDestroyNotify) dc_worker_proc_unref);
  dc_launcher_close_template (pool->launcher, FALSE);

  pool_update_stats (pool);
  if (calls.length > 0)
    {
      error = g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SHUTDOWN,
                                   _("The pool was shut down before the call completed"));
      dc_call_fail_all (&calls, error);
    }
  dc_pool_unref (pool);
}

void
dc_pool_restart (DcPool *pool)
{
  GList *workers, *l;

  dc_pool_ref (pool);

  /* Retiring may close channels and re-enter: hold them meanwhile. */
  workers = hold_workers (pool);
  for (l = workers; l != NULL; l = l->next)
    if (dc_worker_proc_get_state (l->data) == DC_WORKER_PROC_RUNNING)
      dc_worker_proc_retire (l->data);
  g_list_free_full (workers, (GDestroyNotify) dc_worker_proc_unref);

  /* New workers come from the parent as it is now, as the old ones leave
   * (they count against max-workers until they are reaped). */
  dc_launcher_close_template (pool->launcher, FALSE);
  if (pool->started)
    {
      pool->refill = TRUE;
      pool_refill (pool);
    }
  dc_pool_dispatch (pool);
  dc_pool_unref (pool);
}

void
dc_pool_disown (DcPool *pool)
{
  /* A private context may never run again once the pool is gone, and the
   * child watches with it; the default one runs for the process's life. */
  gboolean own_reaper = pool->ctx.main_context != g_main_context_default ();
  GArray *pidfds = g_array_new (FALSE, FALSE, sizeof (int));
  GList *workers = g_steal_pointer (&pool->workers);
  GList *l;

  pool->callbacks = NULL;
  for (l = workers; l != NULL; l = l->next)
    {
      int pidfd = dc_worker_proc_disown (l->data, own_reaper);

      if (pidfd >= 0)
        g_array_append_val (pidfds, pidfd);
    }
  g_list_free_full (workers, (GDestroyNotify) dc_worker_proc_unref);
  dc_launcher_close_template (pool->launcher, own_reaper);
  dc_context_reap_in_thread (pidfds);
}

gboolean
dc_pool_has_workers (DcPool *pool)
{
  return pool->workers != NULL;
}

GArray *
dc_pool_list_processes (DcPool *pool)
{
  GArray *pids = g_array_new (FALSE, FALSE, sizeof (GPid));
  GPid template_pid = dc_launcher_get_template_pid (pool->launcher);
  GList *l;

  for (l = pool->workers; l != NULL; l = l->next)
    {
      GPid pid = dc_worker_proc_get_pid (l->data);

      g_array_append_val (pids, pid);
    }
  if (template_pid > 0)
    g_array_append_val (pids, template_pid);
  return pids;
}

gboolean
dc_pool_has_waiting (DcPool *pool)
{
  return dc_call_queue_length (&pool->queue) > 0 || !dc_mailbox_is_empty (&pool->incoming);
}

guint
dc_pool_get_n_workers (DcPool *pool)
{
  return pool->n_running;
}

guint
dc_pool_get_n_busy (DcPool *pool)
{
  return pool->n_busy;
}

guint
dc_pool_get_n_queued (DcPool *pool)
{
  return pool->n_queued;
}

GPid *
dc_pool_get_worker_pids (DcPool *pool,
                         guint  *n_pids)
{
  GPid *pids = g_new (GPid, pool->n_running + 1);
  guint n = 0;
  GList *l;

  for (l = pool->workers; l != NULL; l = l->next)
    if (dc_worker_proc_get_state (l->data) == DC_WORKER_PROC_RUNNING && n < pool->n_running)
      pids[n++] = dc_worker_proc_get_pid (l->data);

  if (n_pids != NULL)
    *n_pids = n;
  if (n == 0)
    g_clear_pointer (&pids, g_free);
  return pids;
}
