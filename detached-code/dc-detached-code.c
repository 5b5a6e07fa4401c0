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

#include "dc-detached-code.h"
#include "dc-enum-types.h"
#include "dc-channel-private.h"
#include "dc-wire-private.h"
#include "dc-worker-private.h"

/**
 * DcDetachedCode:
 *
 * Runs a C function in a pool of worker processes made with `fork()`, and
 * hands each result back asynchronously on the main context.
 *
 * The function, a [callback@CodeFunc], takes a [struct@GLib.Variant] of
 * arguments and returns a variant (or sets a [struct@GLib.Error]).  Each
 * [method@DetachedCode.call_async] serializes its arguments, sends them to
 * an idle worker (forking one if the pool may grow, queueing the call
 * otherwise) and completes when the worker answers.
 *
 * ```c
 * static GVariant *
 * is_prime (GVariant *args, gpointer user_data, GError **error)
 * {
 *   guint64 n, d;
 *
 *   g_variant_get (args, "(t)", &n);
 *   for (d = 2; d * d <= n; d++)
 *     if (n % d == 0)
 *       return g_variant_new ("(b)", FALSE);
 *   return g_variant_new ("(b)", n >= 2);
 * }
 *
 * static void
 * on_result (GObject *source, GAsyncResult *result, gpointer user_data)
 * {
 *   g_autoptr(GError) error = NULL;
 *   g_autoptr(GVariant) value = dc_detached_code_call_finish (DC_DETACHED_CODE (source),
 *                                                             result, &error);
 *   gboolean prime;
 *
 *   if (value == NULL)
 *     g_printerr ("Cannot determine if it's prime - %s\n", error->message);
 *   else
 *     {
 *       g_variant_get (value, "(b)", &prime);
 *       g_print ("123454321 %s a prime number\n", prime ? "is" : "is not");
 *     }
 * }
 *
 * DcDetachedCode *code = dc_detached_code_new (is_prime, NULL, NULL);
 * dc_detached_code_start (code, NULL);   // early: before the program makes threads
 * dc_detached_code_call_async (code, g_variant_new ("(t)", (guint64) 123454321),
 *                              G_PRIORITY_DEFAULT, NULL, on_result, NULL);
 * ```
 *
 * A worker is a copy of the parent: the function sees the parent's memory
 * as it was at the fork, and nothing it changes reaches the parent.  A
 * worker that crashes costs its call a [error@DetachedCodeError.WORKER_DIED]
 * error and nothing else; the pool forks a new worker when a call needs one.
 *
 * Because workers are forked without exec, start the pool early, before
 * the program creates threads: a lock held by another thread at the moment
 * of the fork stays locked in the worker.
 *
 * Since: 1.0
 */

typedef enum
{
  WORKER_RUNNING,    /* takes calls */
  WORKER_RETIRING,   /* takes no more calls; exits on its own */
  WORKER_LOST,       /* channel closed or worker killed; waiting for its status */
} WorkerState;

typedef struct _DcWorker DcWorker;
typedef struct _DcCall DcCall;

struct _DcCall
{
  GList           link;      /* in the pool's queue or a worker's in-flight list */
  GTask          *task;      /* owned; NULL once completed (a cancelled call
                              * stays in flight until its reply is dropped) */
  GBytes         *payload;   /* marshalled arguments, kept until completion so
                              * the call can be sent again */
  guint64         serial;
  int             priority;
  GCancellable   *cancellable;
  gulong          cancel_id;
  DcWorker       *worker;    /* unowned; set while in flight */
  enum { CALL_QUEUED, CALL_IN_FLIGHT, CALL_LOCAL } where;  /* which list holds link */
  GSource        *timeout_source;  /* call-timeout, armed when written to a worker */
  GUnixFDList    *fd_list;   /* descriptors to send with the arguments */
  int             memfd;     /* the payload in a sealed memfd, once made; or -1 */
  GVariant       *result;    /* a completion waiting to be delivered ... */
  GError         *result_error;  /* ... once the read that produced it is over */
};

struct _DcWorker
{
  gint             ref_count;   /* the pool's list and the child watch each hold one */
  DcDetachedCode  *pool;        /* unowned; NULL once the pool let go of it */
  GPid             pid;
  WorkerState      state;
  DcChannel       *channel;     /* NULL once closed */
  GSource         *read_source;
  GSource         *write_source;
  DcWireReader     reader;
  GByteArray      *outbuf;      /* frames not yet written */
  gsize            out_pos;
  GQueue           out_fds;     /* OutFds, by offset: descriptors to send with outbuf */
  GArray          *rx_fds;      /* received, not yet claimed by a frame */
  GQueue           inflight;    /* DcCall, in the order written */
  gboolean         reading;     /* inside worker_read(): no reentrant read */
  gboolean         exited;      /* the child watch has reported */
  int              wait_status;
  GError          *lost_error;  /* why we killed it, for the calls it had */
  guint32          setup_step;  /* from a SETUP_FAILED frame */
  guint32          setup_errno;
  gboolean         exit_on_die; /* as it was when this worker was forked */
  gboolean         close_when_idle; /* retired: closed once its calls are done */
  gboolean         departed;    /* let go by shutdown(): in pool->departed */
  guint            n_calls;     /* calls written to it */
  guint            n_replies;   /* frames it sent about calls */
  gint64           idle_since;  /* monotonic time it last became idle */
  GSource         *idle_source; /* idle-timeout timer */
  GSource         *watch;       /* child watch; owns a reference */
};

/* Descriptors that go with the frame starting at @offset in outbuf. */
typedef struct
{
  gsize        offset;
  GUnixFDList *fds;
} OutFds;

static void
out_fds_free (OutFds *out)
{
  g_object_unref (out->fds);
  g_free (out);
}

typedef struct
{
  char     *variable;
  char     *value;     /* NULL: unset */
  gboolean  overwrite;
} EnvOp;

struct _DcDetachedCode
{
  GObject           parent_instance;

  DcCodeFunc        func;       /* one of func and fd_func */
  DcCodeFdFunc      fd_func;
  gpointer          user_data;
  GDestroyNotify    user_data_free;
  DcWorkerInitFunc  init_func;
  gpointer          init_data;
  GDestroyNotify    init_data_free;

  /* The pool's I/O runs here: the thread-default context at construction.
   * All state below is touched only while this context is acquired. */
  GMainContext     *context;
  /* A worker is a copy of us; in any other process this object is inert. */
  pid_t             owner_pid;
  /* Forks happen only in the thread that runs (or owns) the context: a
   * worker dies with the thread that forked it (PR_SET_PDEATHSIG). */
  GThread          *owner_thread;

  guint             min_workers;
  guint             max_workers;
  DcStream          stream;
  DcMarshaller      marshaller;
  DcSetupFlags      setup_flags;
  gboolean          exit_on_die;
  gboolean          kill_on_cancel;
  guint             idle_timeout;      /* ms, 0 = never */
  guint             max_worker_calls;  /* 0 = unlimited */
  guint             call_timeout;      /* ms, 0 = none */
  guint             pipeline_depth;    /* >= 1 */
  guint             memfd_threshold;   /* bytes; 0 = never */
  guint             n_busy;            /* last notified */
  guint             n_queued;          /* last notified */
  char             *cwd;
  GArray           *env_ops;    /* EnvOp, applied in order at each fork */

  gboolean          started;
  GQueue            queue;      /* DcCall, by priority then FIFO */
  GHashTable       *cancellable_calls; /* GTask -> DcCall, for calls with a cancellable */
  GList            *workers;    /* DcWorker (one ref each), every state */
  GList            *departed;   /* DcWorker (one ref each) shut down, not yet reaped */
  guint             n_workers;  /* those RUNNING */
  guint64           next_serial;

  /* Calls made from threads that could not acquire the context. */
  GMutex            incoming_lock;
  GQueue            incoming;
  GSource          *incoming_source;
};

enum
{
  PROP_0,
  PROP_MIN_WORKERS,
  PROP_MAX_WORKERS,
  PROP_STREAM,
  PROP_MARSHALLER,
  PROP_EXIT_ON_DIE,
  PROP_SETUP_FLAGS,
  PROP_N_WORKERS,
  PROP_IDLE_TIMEOUT,
  PROP_MAX_WORKER_CALLS,
  PROP_CALL_TIMEOUT,
  PROP_KILL_ON_CANCEL,
  PROP_PIPELINE_DEPTH,
  PROP_N_BUSY,
  PROP_N_QUEUED,
  PROP_MEMFD_THRESHOLD,
  N_PROPS
};

static GParamSpec *props[N_PROPS];

enum
{
  SIGNAL_WORKER_SPAWNED,
  SIGNAL_WORKER_EXITED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

G_DEFINE_TYPE (DcDetachedCode, dc_detached_code, G_TYPE_OBJECT)

G_DEFINE_QUARK (dc-detached-code-error-quark, dc_detached_code_error)

static void dispatch (DcDetachedCode *self);
static void worker_arm_timeout (DcWorker *worker);
static void worker_lost (DcWorker *worker);
static void worker_finish (DcWorker *worker);
static gboolean worker_read (DcWorker *worker, gboolean drain);

static void
dc_i18n_init (void)
{
  static gsize initialized = 0;

  if (g_once_init_enter (&initialized))
    {
      bindtextdomain (GETTEXT_PACKAGE, LOCALEDIR);
      bind_textdomain_codeset (GETTEXT_PACKAGE, "UTF-8");
      g_once_init_leave (&initialized, 1);
    }
}

static gboolean
in_owner_process (DcDetachedCode *self)
{
  return self->owner_pid == getpid ();
}

/* ---- calls ---- */

static void
call_clear_timeout (DcCall *call)
{
  if (call->timeout_source != NULL)
    {
      g_source_destroy (call->timeout_source);
      g_clear_pointer (&call->timeout_source, g_source_unref);
    }
}

static void
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
static void
call_detach (DcCall *call)
{
  call->where = CALL_LOCAL;
  call->worker = NULL;
  call_clear_timeout (call);
}

/* Detaches the task from @call, which stays behind (if in flight) only to
 * have its reply dropped. */
static GTask *
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
static void
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

/* Returns CANCELLED to @call's caller now.  A queued call is gone; one in
 * flight stays on its worker until the reply comes, and is dropped then. */
static void worker_kill (DcWorker *worker, GError *reason);
static void update_stats (DcDetachedCode *self);

/* The call at the head of a worker's in-flight list is the one it runs. */
static gboolean
call_is_running (DcCall *call)
{
  return call->where == CALL_IN_FLIGHT && call->worker->inflight.head == &call->link;
}

/* Kills the worker running @call, which already completed.  Calls written
 * behind it fail with @reason: whether the worker had read them is not
 * known, and running them twice would be worse. */
static void
call_kill_worker (DcCall *call,
                  GError *reason)
{
  DcWorker *worker = call->worker;

  g_queue_unlink (&worker->inflight, &call->link);
  call->where = CALL_LOCAL;
  call_free (call);
  worker_kill (worker, reason);
}

static void
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

static void
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
static void
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

/* ---- workers ---- */

static DcWorker *
worker_ref (DcWorker *worker)
{
  worker->ref_count++;
  return worker;
}

static void
worker_unref (DcWorker *worker)
{
  if (--worker->ref_count > 0)
    return;

  g_assert (worker->channel == NULL);
  g_assert (worker->inflight.length == 0);
  dc_wire_reader_clear (&worker->reader);
  g_clear_pointer (&worker->watch, g_source_unref);
  g_clear_pointer (&worker->outbuf, g_byte_array_unref);
  g_clear_pointer (&worker->rx_fds, g_array_unref);
  g_clear_error (&worker->lost_error);
  g_free (worker);
}

static void
set_n_workers (DcDetachedCode *self,
               guint           n)
{
  if (self->n_workers == n)
    return;
  self->n_workers = n;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_N_WORKERS]);
}

/* Takes @worker out of service: no new calls go to it. */
static void
worker_leave_service (DcWorker    *worker,
                      WorkerState  state)
{
  DcDetachedCode *self = worker->pool;
  WorkerState old = worker->state;

  worker->state = state;
  if (old == WORKER_RUNNING && self != NULL)
    set_n_workers (self, self->n_workers - 1);
}

/* Forgets what was not written yet. */
static void
worker_drop_output (DcWorker *worker)
{
  OutFds *out;

  g_byte_array_set_size (worker->outbuf, 0);
  worker->out_pos = 0;
  while ((out = g_queue_pop_head (&worker->out_fds)) != NULL)
    out_fds_free (out);
}

/* Closes received descriptors from @first on. */
static void
worker_close_rx_fds (DcWorker *worker,
                     guint     first)
{
  guint i;

  for (i = first; i < worker->rx_fds->len; i++)
    close (g_array_index (worker->rx_fds, int, i));
  g_array_set_size (worker->rx_fds, first);
}

static void
worker_close_channel (DcWorker *worker)
{
  if (worker->idle_source != NULL)
    {
      g_source_destroy (worker->idle_source);
      g_clear_pointer (&worker->idle_source, g_source_unref);
    }
  if (worker->read_source != NULL)
    {
      g_source_destroy (worker->read_source);
      g_clear_pointer (&worker->read_source, g_source_unref);
    }
  if (worker->write_source != NULL)
    {
      g_source_destroy (worker->write_source);
      g_clear_pointer (&worker->write_source, g_source_unref);
    }
  g_clear_pointer (&worker->channel, dc_channel_free);
  worker_drop_output (worker);
  worker_close_rx_fds (worker, 0);
}

/* Takes @worker out of service for good: it finishes the calls it has,
 * then its channel is closed and it leaves on its own. */
static void
worker_retire (DcWorker *worker)
{
  worker_leave_service (worker, WORKER_RETIRING);
  worker->close_when_idle = TRUE;
  if (worker->inflight.length == 0)
    worker_close_channel (worker);
}

static void worker_note_idle (DcWorker *worker);

static gboolean
worker_idle_timeout_cb (gpointer data)
{
  DcWorker *worker = data;
  DcDetachedCode *self = worker->pool;

  g_clear_pointer (&worker->idle_source, g_source_unref);

  if (self == NULL || worker->state != WORKER_RUNNING || worker->inflight.length > 0)
    return G_SOURCE_REMOVE;

  /* Busy and idle again meanwhile: wait out the rest. */
  if (g_get_monotonic_time () - worker->idle_since <
      (gint64) self->idle_timeout * G_TIME_SPAN_MILLISECOND)
    {
      worker_note_idle (worker);
      return G_SOURCE_REMOVE;
    }

  if (self->n_workers > self->min_workers)
    {
      worker_retire (worker);
      update_stats (self);
    }
  return G_SOURCE_REMOVE;
}

/* @worker has no call: start counting towards idle-timeout. */
static void
worker_note_idle (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  gint64 remaining;

  if (self == NULL || self->idle_timeout == 0 || worker->state != WORKER_RUNNING)
    return;

  if (worker->idle_source == NULL)
    worker->idle_since = g_get_monotonic_time ();
  else
    return;

  remaining = (gint64) self->idle_timeout * G_TIME_SPAN_MILLISECOND -
              (g_get_monotonic_time () - worker->idle_since);
  worker->idle_source = g_timeout_source_new ((guint) MAX (remaining / 1000, 1));
  g_source_set_callback (worker->idle_source, worker_idle_timeout_cb, worker, NULL);
  g_source_attach (worker->idle_source, self->context);
}

/* Kills @worker for a reason of ours; its in-flight calls will fail with
 * @reason (transfer full) once it is reaped. */
static void
worker_kill (DcWorker *worker,
             GError   *reason)
{
  if (worker->lost_error == NULL)
    worker->lost_error = reason;
  else
    g_error_free (reason);

  if (!worker->exited)
    kill (worker->pid, SIGKILL);
  worker_lost (worker);
}

static char *
describe_wait_status (GPid pid,
                      int  status)
{
  if (WIFEXITED (status))
    return g_strdup_printf (_("Worker process %d exited with status %d"),
                            (int) pid, WEXITSTATUS (status));

  if (WIFSIGNALED (status))
    {
      int sig = WTERMSIG (status);
      const char *abbrev = sigabbrev_np (sig);
      const char *descr = sigdescr_np (sig);

      if (WCOREDUMP (status))
        return g_strdup_printf (_("Worker process %d was killed by signal %d (%s, SIG%s), core dumped"),
                                (int) pid, sig, descr ? descr : "?", abbrev ? abbrev : "?");
      return g_strdup_printf (_("Worker process %d was killed by signal %d (%s, SIG%s)"),
                              (int) pid, sig, descr ? descr : "?", abbrev ? abbrev : "?");
    }

  return g_strdup_printf (_("Worker process %d ended with wait status %d"), (int) pid, status);
}

/* Why the calls still in flight on a dead worker failed. */
static GError *
worker_death_error (DcWorker *worker)
{
  g_autofree char *status = NULL;

  if (worker->lost_error != NULL)
    return g_error_copy (worker->lost_error);

  if (worker->setup_step != 0)
    {
      const char *what;

      switch (worker->setup_step)
        {
        case DC_WIRE_SETUP_STEP_CWD:
          what = _("cannot change to the working directory");
          break;
        case DC_WIRE_SETUP_STEP_DESCRIPTORS:
        default:
          what = _("cannot set up its descriptors");
          break;
        }
      return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                          _("Worker process %d could not start: %s: %s"),
                          (int) worker->pid, what, g_strerror ((int) worker->setup_errno));
    }

  status = describe_wait_status (worker->pid, worker->wait_status);
  return g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED, status);
}

/* The worker is gone and reaped: fail what it still had, forget it. */
static void
worker_finish (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  g_autoptr(GError) error = NULL;
  GQueue calls = G_QUEUE_INIT;
  GList *l;

  g_assert (worker->exited);
  g_assert (worker->channel == NULL);

  if (self == NULL)
    return;

  worker->pool = NULL;

  /* Shut down: it had no calls left, only its exit to report. */
  if (worker->departed)
    {
      self->departed = g_list_remove (self->departed, worker);
      g_object_ref (self);
      g_signal_emit (self, signals[SIGNAL_WORKER_EXITED], 0, (gint) worker->pid, worker->wait_status);
      worker_unref (worker);
      g_object_unref (self);
      return;
    }

  self->workers = g_list_remove (self->workers, worker);

  calls = worker->inflight;
  g_queue_init (&worker->inflight);
  for (l = calls.head; l != NULL; l = l->next)
    call_detach (l->data);
  if (calls.length > 0)
    error = worker_death_error (worker);

  g_object_ref (self);
  g_signal_emit (self, signals[SIGNAL_WORKER_EXITED], 0, (gint) worker->pid, worker->wait_status);
  worker_unref (worker);   /* the pool's reference */

  /* n-workers is already lower; calls queued behind get a fresh worker
   * before the failed ones' callbacks run. */
  dispatch (self);
  if (error != NULL)
    fail_calls (&calls, error);
  update_stats (self);
  g_object_unref (self);
}

/* The channel broke, or we killed the worker.  It stops taking calls now;
 * its calls fail once its exit status is known. */
static void
worker_lost (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  GList *l;

  worker_leave_service (worker, WORKER_LOST);
  worker_close_channel (worker);

  /* What it still had fails with its death, not with a time limit that
   * runs out while it is reaped. */
  for (l = worker->inflight.head; l != NULL; l = l->next)
    call_clear_timeout (l->data);

  if (worker->exited && !worker->reading)
    worker_finish (worker);
  else if (self != NULL)
    dispatch (self);
}

/* Once the worker is reaped: read the replies it sent before it went
 * (they are still in the channel), then fail what is left. */
static void
worker_check_exited (DcWorker *worker)
{
  if (!worker->exited || worker->reading || worker->pool == NULL)
    return;

  if (worker->channel != NULL)
    worker_read (worker, TRUE);
  if (worker->pool == NULL)
    return;   /* finished from a callback */
  if (worker->channel != NULL)
    worker_lost (worker);
  else
    worker_finish (worker);
}

static void
child_watch_cb (GPid     pid,
                int      status,
                gpointer data)
{
  DcWorker *worker = data;

  worker->exited = TRUE;
  worker->wait_status = status;
  g_spawn_close_pid (pid);

  worker_ref (worker);
  worker_check_exited (worker);
  worker_unref (worker);
}

static GError *
protocol_error (DcWorker   *worker,
                const char *why)
{
  return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                      _("Worker process %d sent a malformed message and was killed: %s"),
                      (int) worker->pid, why);
}

/* Puts calls written to a worker that will never run them back at the
 * head of the queue, in their order. */
static void
requeue_inflight (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  GList *link;

  /* A call keeps its payload until it completes, so it can be sent
   * again as it is. */
  while ((link = g_queue_pop_tail_link (&worker->inflight)) != NULL)
    {
      DcCall *call = link->data;

      call->worker = NULL;
      call->where = CALL_QUEUED;
      call_clear_timeout (call);
      if (call->task == NULL)
        call_free (call);   /* cancelled meanwhile: nobody waits for it */
      else
        g_queue_push_head_link (&self->queue, link);
    }
  worker_drop_output (worker);
}

static GError *
marshal_failed_error (DcWorker *worker,
                      GBytes   *payload)
{
  gsize size;
  const guint8 *data = g_bytes_get_data (payload, &size);
  guint32 reason;
  g_autofree char *type_string = NULL;
  GError *error = NULL;

  if (size < 4)
    return NULL;
  memcpy (&reason, data, 4);
  type_string = g_strndup ((const char *) data + 4, size - 4);
  if ((reason != DC_WIRE_MARSHAL_BAD_TYPE && reason != DC_WIRE_MARSHAL_TOO_LARGE &&
       reason != DC_WIRE_MARSHAL_NO_FDS && reason != DC_WIRE_MARSHAL_TOO_MANY_FDS) ||
      strlen (type_string) != size - 4 ||
      !g_variant_type_string_is_valid (type_string))
    return NULL;

  dc_wire_set_marshal_error (&error, reason, type_string);
  return error;
}

/* Handles one frame.  Returns FALSE if the worker can no longer be read. */
/* Takes the frame's descriptors from those received: a memfd payload
 * replaces @payload, the rest go to @fd_list.  FALSE if the worker lied. */
static gboolean
worker_claim_fds (DcWorker            *worker,
                  const DcWireHeader  *header,
                  GBytes             **payload,
                  GUnixFDList        **fd_list,
                  GError             **error)
{
  guint n = header->n_fds;

  if (worker->rx_fds->len < n)
    {
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                           _("a message without its descriptors"));
      return FALSE;
    }
  if (n > 0 && header->type != DC_WIRE_RESULT)
    {
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                           _("descriptors with a message that takes none"));
      return FALSE;
    }

  if (header->flags & DC_WIRE_FLAG_MEMFD)
    {
      guint64 size;
      GBytes *mapped;

      memcpy (&size, g_bytes_get_data (*payload, NULL), 8);
      mapped = dc_wire_bytes_from_memfd (g_array_index (worker->rx_fds, int, 0), size, error);
      g_array_remove_range (worker->rx_fds, 0, 1);
      n--;
      if (mapped == NULL)
        return FALSE;
      g_bytes_unref (*payload);
      *payload = mapped;
    }

  if (n > 0)
    {
      *fd_list = g_unix_fd_list_new_from_array ((const gint *) worker->rx_fds->data, (gint) n);
      g_array_remove_range (worker->rx_fds, 0, n);
    }
  return TRUE;
}

static gboolean
worker_handle_frame (DcWorker           *worker,
                     const DcWireHeader *header,
                     GBytes             *payload_in,
                     GQueue             *completed)
{
  DcDetachedCode *self = worker->pool;
  g_autoptr(GBytes) payload = g_bytes_ref (payload_in);
  g_autoptr(GUnixFDList) fd_list = NULL;
  g_autoptr(GError) fd_error = NULL;
  DcCall *call;
  GVariant *value = NULL;
  GError *error = NULL;
  gboolean failed = TRUE;

  if (!worker_claim_fds (worker, header, &payload, &fd_list, &fd_error))
    {
      worker_kill (worker, protocol_error (worker, fd_error->message));
      return FALSE;
    }

  if (header->type == DC_WIRE_SETUP_FAILED)
    {
      const guint32 *words = g_bytes_get_data (payload, NULL);

      /* Only ever the first thing a worker sends. */
      if (g_bytes_get_size (payload) != 8 || worker->setup_step != 0 || worker->n_replies > 0)
        {
          worker_kill (worker, protocol_error (worker, _("a malformed set-up report")));
          return FALSE;
        }
      worker->setup_step = MAX (words[0], 1);
      worker->setup_errno = words[1];
      /* It exits next; its calls fail with SPAWN when it is reaped. */
      worker_leave_service (worker, WORKER_RETIRING);
      return TRUE;
    }

  worker->n_replies++;
  call = g_queue_peek_head (&worker->inflight);
  if (call == NULL || header->serial != call->serial || header->type == DC_WIRE_CALL)
    {
      worker_kill (worker, protocol_error (worker, call == NULL ? _("a reply without a call")
                                                   : header->type == DC_WIRE_CALL ? _("a message of the wrong type")
                                                   : _("a reply out of order")));
      return FALSE;
    }

  switch ((DcWireType) header->type)
    {
    case DC_WIRE_RESULT:
      value = dc_wire_unmarshal (self->marshaller, payload, &error);
      failed = FALSE;
      if (value == NULL)
        {
          worker_kill (worker, protocol_error (worker, error->message));
          g_clear_error (&error);
          return FALSE;
        }
      break;

    case DC_WIRE_ERROR:
      error = dc_wire_decode_error (payload, NULL);
      if (error == NULL)
        {
          worker_kill (worker, protocol_error (worker, _("a malformed error report")));
          return FALSE;
        }
      break;

    case DC_WIRE_NULL_RESULT:
      error = g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED,
                                   _("The code returned no value and set no error"));
      break;

    case DC_WIRE_MARSHAL_FAILED:
      error = marshal_failed_error (worker, payload);
      if (error == NULL)
        {
          worker_kill (worker, protocol_error (worker, _("a malformed marshalling report")));
          return FALSE;
        }
      break;

    case DC_WIRE_CALL:
    case DC_WIRE_SETUP_FAILED:
    default:
      g_assert_not_reached ();
    }

  g_queue_unlink (&worker->inflight, &call->link);
  worker_arm_timeout (worker);

  if (failed && worker->exit_on_die)
    {
      /* It exits after this reply, without reading what else we wrote. */
      worker_leave_service (worker, WORKER_RETIRING);
      requeue_inflight (worker);
    }

  if (worker->inflight.length == 0 && worker->close_when_idle)
    worker_close_channel (worker);   /* retired: it sees the end and leaves */

  /* Descriptors that came back travel with the task. */
  if (fd_list != NULL && call->task != NULL)
    g_task_set_task_data (call->task, g_steal_pointer (&fd_list), g_object_unref);

  /* Give the worker its next call before running this one's callback,
   * which waits until the read is over: a callback may run a nested main
   * loop, where this worker must be readable again. */
  dispatch (self);
  if (worker->inflight.length == 0 && worker->channel != NULL)
    worker_note_idle (worker);
  call_detach (call);
  call->result = value;
  call->result_error = error;
  g_queue_push_tail_link (completed, &call->link);

  return worker->channel != NULL;
}

/* Reads what the worker has sent, without blocking: a bounded amount, or
 * everything there is when @drain.  Returns FALSE when the channel is gone.
 * Callbacks run from here may re-enter the pool. */
static gboolean
worker_read (DcWorker *worker,
             gboolean  drain)
{
  guint8 buf[16 * 1024];
  gboolean keep = TRUE;
  GQueue completed = G_QUEUE_INIT;
  DcDetachedCode *self;
  GList *link;
  guint rounds;

  if (worker->reading || worker->channel == NULL)
    return worker->channel != NULL;

  /* Callbacks may drop the last reference to the pool. */
  self = worker->pool ? g_object_ref (worker->pool) : NULL;
  worker_ref (worker);
  worker->reading = TRUE;

  /* Bounded, so that one chatty worker cannot starve the context. */
  for (rounds = 0; keep && (drain || rounds < 64); rounds++)
    {
      g_autoptr(GError) error = NULL;
      gsize space = 0;
      guint8 *direct = dc_wire_reader_direct_buffer (&worker->reader, &space);
      const guint8 *p;
      gsize len;
      gssize n;

      /* A large payload is read straight into its final buffer. */
      if (direct == NULL || space < sizeof buf)
        direct = NULL;
      if (dc_channel_is_socket (worker->channel))
        n = dc_channel_read_fds (worker->channel, direct ? direct : buf,
                                 direct ? space : sizeof buf, worker->rx_fds, &error);
      else
        n = dc_channel_read (worker->channel, direct ? direct : buf,
                             direct ? space : sizeof buf, &error);

      /* Descriptors nobody claims pile up: a worker sending them is lying. */
      if (worker->rx_fds->len > DC_WIRE_MAX_FDS)
        {
          worker_kill (worker, protocol_error (worker, _("descriptors without messages")));
          keep = FALSE;
          break;
        }

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        break;
      if (n <= 0)
        {
          worker_lost (worker);
          keep = FALSE;
          break;
        }

      if (direct != NULL)
        {
          dc_wire_reader_advance (&worker->reader, (gsize) n);
          if (dc_wire_reader_frame_ready (&worker->reader))
            {
              DcWireHeader header;
              g_autoptr(GBytes) payload = NULL;

              dc_wire_reader_take_frame (&worker->reader, &header, &payload);
              keep = worker_handle_frame (worker, &header, payload, &completed);
            }
          continue;
        }

      p = buf;
      len = (gsize) n;
      while (keep && len > 0)
        {
          DcWireHeader header;
          g_autoptr(GBytes) payload = NULL;
          g_autoptr(GError) why = NULL;

          switch (dc_wire_reader_feed (&worker->reader, &p, &len, &header, &payload))
            {
            case DC_WIRE_READ_FRAME:
              keep = worker_handle_frame (worker, &header, payload, &completed);
              break;
            case DC_WIRE_READ_ERROR:
              dc_wire_reader_set_error (&worker->reader, &why);
              worker_kill (worker, protocol_error (worker, why->message));
              keep = FALSE;
              break;
            case DC_WIRE_READ_NEED_MORE:
            default:
              break;
            }
        }

      /* A short read took all there was: the source says when more comes,
       * without another recv() to learn that it would block. */
      if (!drain && (gsize) n < sizeof buf)
        break;
    }

  worker->reading = FALSE;

  while ((link = g_queue_pop_head_link (&completed)) != NULL)
    {
      DcCall *call = link->data;

      call_complete (call, g_steal_pointer (&call->result), g_steal_pointer (&call->result_error));
    }
  keep = keep && worker->channel != NULL;

  /* The child watch fired while we were busy. */
  worker_check_exited (worker);

  if (self != NULL)
    g_object_unref (self);
  worker_unref (worker);
  return keep;
}

static gboolean
worker_readable_cb (GIOCondition condition,
                    gpointer     data)
{
  DcWorker *worker = data;

  return worker_read (worker, FALSE) ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

static gboolean worker_writable_cb (GIOCondition condition, gpointer data);

/* Writes what can be written now; waits for the channel otherwise. */
static void
worker_flush (DcWorker *worker)
{
  while (worker->channel != NULL && worker->out_pos < worker->outbuf->len)
    {
      g_autoptr(GError) error = NULL;
      OutFds *next = g_queue_peek_head (&worker->out_fds);
      gsize end = worker->outbuf->len;
      gssize n;

      /* A frame's descriptors go with its first byte, in one sendmsg()
       * that reaches no further than the next frame with descriptors. */
      if (next != NULL && next->offset == worker->out_pos)
        {
          OutFds *after = g_queue_peek_nth (&worker->out_fds, 1);

          if (after != NULL)
            end = after->offset;
          n = dc_channel_write_fds (worker->channel, worker->outbuf->data + worker->out_pos,
                                    end - worker->out_pos, next->fds, &error);
          if (n > 0)
            out_fds_free (g_queue_pop_head (&worker->out_fds));
        }
      else
        {
          if (next != NULL)
            end = next->offset;
          n = dc_channel_write (worker->channel, worker->outbuf->data + worker->out_pos,
                                end - worker->out_pos, &error);
        }

      if (n > 0)
        {
          worker->out_pos += (gsize) n;
          continue;
        }

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          if (worker->write_source == NULL)
            {
              worker->write_source = dc_channel_create_source (worker->channel, G_IO_OUT,
                                                               worker_writable_cb, worker);
              g_source_attach (worker->write_source, worker->pool->context);
            }
          return;
        }

      /* Broken: the worker is gone.  Stop writing, and keep reading: the
       * replies it sent before it went are still to be read, and the end
       * of the stream comes next. */
      worker_leave_service (worker, WORKER_LOST);
      break;
    }

  if (worker->channel == NULL)
    return;

  /* Drained, or broken. */
  worker_drop_output (worker);
  if (worker->write_source != NULL)
    {
      g_source_destroy (worker->write_source);
      g_clear_pointer (&worker->write_source, g_source_unref);
    }
}

static gboolean
worker_writable_cb (GIOCondition condition,
                    gpointer     data)
{
  DcWorker *worker = data;

  worker_ref (worker);
  worker_flush (worker);
  worker_unref (worker);
  /* worker_flush() destroys the source itself once drained. */
  return G_SOURCE_CONTINUE;
}

static gboolean call_timeout_fire (DcCall *call);
static gboolean call_timeout_cb (gpointer data);

/* The limit counts from when the call runs: from its write to an idle
 * worker, or, pipelined, from the reply of the call before it.  Time in
 * the queue, or behind another call, does not count. */
static void
worker_arm_timeout (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  DcCall *head = g_queue_peek_head (&worker->inflight);

  if (self == NULL || self->call_timeout == 0 || head == NULL || head->timeout_source != NULL)
    return;
  head->timeout_source = g_timeout_source_new (self->call_timeout);
  g_source_set_callback (head->timeout_source, call_timeout_cb, head, NULL);
  g_source_attach (head->timeout_source, self->context);
}

static gboolean
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

static gboolean
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

/* A call whose frame carries descriptors: its own, and the payload as a
 * sealed memfd when it is large.  Socket stream only. */
static void
send_call_with_fds (DcWorker *worker,
                    DcCall   *call)
{
  DcDetachedCode *self = worker->pool;
  gsize size;
  const guint8 *data = g_bytes_get_data (call->payload, &size);
  guint8 header[DC_WIRE_HEADER_SIZE];
  OutFds *out = g_new0 (OutFds, 1);
  guint flags = 0;
  guint64 size64 = size;

  out->offset = worker->outbuf->len;
  out->fds = g_unix_fd_list_new ();

  /* Made once, and kept for a resend. */
  if (call->memfd < 0 && self->memfd_threshold > 0 && size >= self->memfd_threshold)
    call->memfd = dc_wire_memfd_from_bytes (call->payload, NULL);
  if (call->memfd >= 0)
    {
      flags |= DC_WIRE_FLAG_MEMFD;
      g_unix_fd_list_append (out->fds, call->memfd, NULL);
      data = (const guint8 *) &size64;
      size = 8;
    }
  if (call->fd_list != NULL)
    {
      gint i, n;
      const gint *fds = g_unix_fd_list_peek_fds (call->fd_list, &n);

      for (i = 0; i < n; i++)
        g_unix_fd_list_append (out->fds, fds[i], NULL);
    }

  dc_wire_header_encode_full (header, DC_WIRE_CALL, flags,
                              (guint) g_unix_fd_list_get_length (out->fds), call->serial, size);
  g_byte_array_append (worker->outbuf, header, sizeof header);
  g_byte_array_append (worker->outbuf, data, size);
  g_queue_push_tail (&worker->out_fds, out);
}

static void
send_call (DcWorker *worker,
           DcCall   *call)
{
  DcDetachedCode *self = worker->pool;
  gsize size;
  const guint8 *data = g_bytes_get_data (call->payload, &size);

  if (worker->idle_source != NULL)
    {
      g_source_destroy (worker->idle_source);
      g_clear_pointer (&worker->idle_source, g_source_unref);
    }

  call->worker = worker;
  call->where = CALL_IN_FLIGHT;
  g_queue_push_tail_link (&worker->inflight, &call->link);
  worker_arm_timeout (worker);

  if (call->fd_list == NULL && (self->memfd_threshold == 0 || size < self->memfd_threshold ||
                                !dc_channel_is_socket (worker->channel)))
    dc_wire_append_frame (worker->outbuf, DC_WIRE_CALL, call->serial, data, size);
  else
    send_call_with_fds (worker, call);

  /* Its last call: a replacement may fork at once, while it finishes. */
  if (self->max_worker_calls > 0 && ++worker->n_calls >= self->max_worker_calls)
    worker_retire (worker);
}

static char **
build_envp (DcDetachedCode *self)
{
  char **envp;
  guint i;

  if (self->env_ops->len == 0)
    return NULL;

  envp = g_get_environ ();
  for (i = 0; i < self->env_ops->len; i++)
    {
      EnvOp *op = &g_array_index (self->env_ops, EnvOp, i);

      if (op->value != NULL)
        envp = g_environ_setenv (envp, op->variable, op->value, op->overwrite);
      else
        envp = g_environ_unsetenv (envp, op->variable);
    }
  return envp;
}

static void
reap_only_cb (GPid     pid,
              int      status,
              gpointer data)
{
  g_spawn_close_pid (pid);
}

/* Moves descriptors on 0..2 to 3 and above, keeping close-on-exec.  A
 * socket's single descriptor is in both. */
static gboolean
move_above_stdio (int *read_fd,
                  int *write_fd)
{
  int *fds[2] = { read_fd, write_fd };
  guint i;

  for (i = 0; i < 2; i++)
    if (*fds[i] <= 2)
      {
        int old = *fds[i];
        int moved = fcntl (old, F_DUPFD_CLOEXEC, 3);

        if (moved < 0)
          return FALSE;
        close (old);
        if (*read_fd == old)
          *read_fd = moved;
        if (*write_fd == old)
          *write_fd = moved;
      }
  return TRUE;
}

static DcWorker *
spawn_worker (DcDetachedCode  *self,
              GError         **error)
{
  DcWorkerSetup setup = { 0, };
  DcWorkerCode code = { 0, };
  sigset_t all_signals, old_mask;
  int parent_read = -1, parent_write = -1;
  g_auto(GStrv) envp = NULL;
  DcWorker *worker;
  GSource *watch;
  DcChannel *channel;
  pid_t pid;
  int errsv;

  if (self->cwd != NULL && !g_file_test (self->cwd, G_FILE_TEST_IS_DIR))
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot start a worker: “%s” is not a directory"), self->cwd);
      return NULL;
    }

  if (self->stream == DC_STREAM_PIPE)
    {
      int to_worker[2], from_worker[2];

      if (pipe2 (to_worker, O_CLOEXEC) < 0)
        goto fail_errno;
      if (pipe2 (from_worker, O_CLOEXEC) < 0)
        {
          errsv = errno;
          close (to_worker[0]);
          close (to_worker[1]);
          errno = errsv;
          goto fail_errno;
        }
      parent_read = from_worker[0];
      parent_write = to_worker[1];
      setup.read_fd = to_worker[0];
      setup.write_fd = from_worker[1];
    }
  else
    {
      int sv[2];

      if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        goto fail_errno;
      parent_read = parent_write = sv[0];
      setup.read_fd = setup.write_fd = sv[1];
    }

  /* Channel descriptors never sit on 0..2, in the parent or the child: a
   * host that closed its stdio would otherwise write into them. */
  if (!move_above_stdio (&parent_read, &parent_write) ||
      !move_above_stdio (&setup.read_fd, &setup.write_fd))
    {
      errsv = errno;
      close (parent_read);
      if (parent_write != parent_read)
        close (parent_write);
      close (setup.read_fd);
      if (setup.write_fd != setup.read_fd)
        close (setup.write_fd);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot create a worker channel: %s"), g_strerror (errsv));
      return NULL;
    }

  dc_worker_pick_targets (&setup);
  setup.flags = self->setup_flags;
  setup.parent_pid = getpid ();
  setup.die_with_parent = gettid () == getpid ();
  setup.cwd = self->cwd;
  envp = build_envp (self);
  setup.envp = envp;

  code.func = self->func;
  code.fd_func = self->fd_func;
  code.user_data = self->user_data;
  code.init_func = self->init_func;
  code.init_data = self->init_data;
  code.marshaller = self->marshaller;
  code.exit_on_die = self->exit_on_die;
  code.is_socket = self->stream != DC_STREAM_PIPE;
  code.memfd_threshold = self->memfd_threshold;

  /* All signals blocked across fork(): a handler of the host's must not
   * run in the child before the child resets the dispositions.  The
   * child unblocks once they are default. */
  sigfillset (&all_signals);
  pthread_sigmask (SIG_SETMASK, &all_signals, &old_mask);
  pid = fork ();
  if (pid == 0)
    dc_worker_main (&setup, &code);   /* never returns */
  errsv = errno;
  pthread_sigmask (SIG_SETMASK, &old_mask, NULL);

  close (setup.read_fd);
  if (setup.write_fd != setup.read_fd)
    close (setup.write_fd);

  if (pid < 0)
    {
      close (parent_read);
      if (parent_write != parent_read)
        close (parent_write);
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("Cannot fork a worker: %s"), g_strerror (errsv));
      return NULL;
    }

  if (parent_read == parent_write)
    {
      g_autoptr(GError) local_error = NULL;

      channel = dc_channel_new_socket (parent_read, &local_error);
      if (channel == NULL)
        {
          /* It sees EOF and leaves; reap it all the same. */
          GSource *reaper = g_child_watch_source_new (pid);

          g_source_set_callback (reaper, G_SOURCE_FUNC (reap_only_cb), NULL, NULL);
          g_source_attach (reaper, self->context);
          g_source_unref (reaper);
          g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                       _("Cannot set up a worker channel: %s"), local_error->message);
          return NULL;
        }
    }
  else
    channel = dc_channel_new_pipes (parent_read, parent_write);

  worker = g_new0 (DcWorker, 1);
  worker->ref_count = 2;   /* the pool's list, the child watch */
  worker->pool = self;
  worker->pid = pid;
  worker->state = WORKER_RUNNING;
  worker->channel = channel;
  worker->outbuf = g_byte_array_new ();
  g_queue_init (&worker->out_fds);
  worker->rx_fds = g_array_new (FALSE, FALSE, sizeof (int));
  worker->exit_on_die = self->exit_on_die;
  dc_wire_reader_init (&worker->reader);
  g_queue_init (&worker->inflight);

  worker->read_source = dc_channel_create_source (channel, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                                  worker_readable_cb, worker);
  /* Without this, GLib blocks and unblocks the source around each dispatch:
   * two more wake-ups per reply.  worker_read() refuses re-entry itself. */
  g_source_set_can_recurse (worker->read_source, TRUE);
  g_source_attach (worker->read_source, self->context);

  watch = g_child_watch_source_new (pid);
  g_source_set_callback (watch, G_SOURCE_FUNC (child_watch_cb), worker,
                         (GDestroyNotify) worker_unref);
  g_source_attach (watch, self->context);
  worker->watch = watch;   /* the source's own reference */

  self->workers = g_list_prepend (self->workers, worker);
  set_n_workers (self, self->n_workers + 1);
  worker_note_idle (worker);
  g_signal_emit (self, signals[SIGNAL_WORKER_SPAWNED], 0, (gint) pid);

  return worker;

fail_errno:
  errsv = errno;
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
               _("Cannot create a worker channel: %s"), g_strerror (errsv));
  return NULL;
}

static guint
effective_max (DcDetachedCode *self)
{
  return MAX (self->min_workers, self->max_workers);
}

static DcWorker *
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
static DcWorker *
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

static void
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
static void
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

/* ---- submission ---- */

typedef struct
{
  DcDetachedCode *self;
  GTask          *task;
} CancelData;

static void
cancel_data_free (gpointer data)
{
  CancelData *cancel = data;

  g_object_unref (cancel->task);
  g_object_unref (cancel->self);
  g_free (cancel);
}

/* On the pool's context. */
static gboolean
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
static void
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

/* With the context acquired. */
static void
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

static gboolean
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

/* ---- GObject ---- */

static void
env_op_clear (EnvOp *op)
{
  g_free (op->variable);
  g_free (op->value);
}

static void
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

/* The pool goes: nobody is left to tell of the departed workers' exits,
 * but their child watches still reap them. */
static gpointer
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

static void
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

typedef struct
{
  DcDetachedCode *self;
  gboolean        done;
  GMutex          lock;
  GCond           cond;
} Handover;

/* In the thread that runs the pool's context, for a dispose elsewhere. */
static gboolean
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

static void
dc_detached_code_dispose (GObject *object)
{
  DcDetachedCode *self = DC_DETACHED_CODE (object);

  /* In a worker this is a copy of the parent's pool: the processes, the
   * descriptors and the main context are not ours to touch. */
  if (in_owner_process (self))
    {
      if (g_main_context_acquire (self->context))
        {
          dc_detached_code_shutdown (self);
          forget_departed (self);
          g_main_context_release (self->context);
        }
      else
        {
          /* The last reference went in a thread that does not run the
           * pool's context (a caller's task, finalized there), while
           * another thread does.  Only that one may touch the workers:
           * ask it, and wait, since the object must outlive the work.
           * (Taking a reference for later instead races with this very
           * unref, which would then finalize without a second dispose.) */
          Handover handover = { self, FALSE, };
          GSource *source = g_idle_source_new ();

          g_mutex_init (&handover.lock);
          g_cond_init (&handover.cond);
          g_source_set_priority (source, G_PRIORITY_HIGH);
          g_source_set_callback (source, handover_cb, &handover, NULL);
          g_source_attach (source, self->context);
          g_source_unref (source);

          g_mutex_lock (&handover.lock);
          while (!handover.done)
            g_cond_wait (&handover.cond, &handover.lock);
          g_mutex_unlock (&handover.lock);
          g_mutex_clear (&handover.lock);
          g_cond_clear (&handover.cond);
        }
    }

  G_OBJECT_CLASS (dc_detached_code_parent_class)->dispose (object);
}

static void
dc_detached_code_finalize (GObject *object)
{
  DcDetachedCode *self = DC_DETACHED_CODE (object);

  if (self->user_data_free != NULL)
    self->user_data_free (self->user_data);
  if (self->init_data_free != NULL)
    self->init_data_free (self->init_data);

  if (in_owner_process (self))
    {
      if (self->incoming_source != NULL)
        {
          g_source_destroy (self->incoming_source);
          g_source_unref (self->incoming_source);
        }
      g_main_context_unref (self->context);
    }

  g_free (self->cwd);
  g_array_unref (self->env_ops);
  g_hash_table_unref (self->cancellable_calls);
  /* In a worker, a thread of the parent's may have held it at the fork. */
  if (in_owner_process (self))
    g_mutex_clear (&self->incoming_lock);

  G_OBJECT_CLASS (dc_detached_code_parent_class)->finalize (object);
}

static void
dc_detached_code_get_property (GObject    *object,
                               guint       prop_id,
                               GValue     *value,
                               GParamSpec *pspec)
{
  DcDetachedCode *self = DC_DETACHED_CODE (object);

  switch (prop_id)
    {
    case PROP_MIN_WORKERS:
      g_value_set_uint (value, self->min_workers);
      break;
    case PROP_MAX_WORKERS:
      g_value_set_uint (value, self->max_workers);
      break;
    case PROP_STREAM:
      g_value_set_enum (value, self->stream);
      break;
    case PROP_MARSHALLER:
      g_value_set_enum (value, self->marshaller);
      break;
    case PROP_EXIT_ON_DIE:
      g_value_set_boolean (value, self->exit_on_die);
      break;
    case PROP_SETUP_FLAGS:
      g_value_set_flags (value, self->setup_flags);
      break;
    case PROP_N_WORKERS:
      g_value_set_uint (value, self->n_workers);
      break;
    case PROP_IDLE_TIMEOUT:
      g_value_set_uint (value, self->idle_timeout);
      break;
    case PROP_MAX_WORKER_CALLS:
      g_value_set_uint (value, self->max_worker_calls);
      break;
    case PROP_CALL_TIMEOUT:
      g_value_set_uint (value, self->call_timeout);
      break;
    case PROP_KILL_ON_CANCEL:
      g_value_set_boolean (value, self->kill_on_cancel);
      break;
    case PROP_PIPELINE_DEPTH:
      g_value_set_uint (value, self->pipeline_depth);
      break;
    case PROP_N_BUSY:
      g_value_set_uint (value, self->n_busy);
      break;
    case PROP_N_QUEUED:
      g_value_set_uint (value, self->n_queued);
      break;
    case PROP_MEMFD_THRESHOLD:
      g_value_set_uint (value, self->memfd_threshold);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
dc_detached_code_set_property (GObject      *object,
                               guint         prop_id,
                               const GValue *value,
                               GParamSpec   *pspec)
{
  DcDetachedCode *self = DC_DETACHED_CODE (object);

  switch (prop_id)
    {
    case PROP_MIN_WORKERS:
      dc_detached_code_set_min_workers (self, g_value_get_uint (value));
      break;
    case PROP_MAX_WORKERS:
      dc_detached_code_set_max_workers (self, g_value_get_uint (value));
      break;
    case PROP_STREAM:
      dc_detached_code_set_stream (self, g_value_get_enum (value));
      break;
    case PROP_MARSHALLER:
      dc_detached_code_set_marshaller (self, g_value_get_enum (value));
      break;
    case PROP_EXIT_ON_DIE:
      dc_detached_code_set_exit_on_die (self, g_value_get_boolean (value));
      break;
    case PROP_SETUP_FLAGS:
      dc_detached_code_set_setup_flags (self, g_value_get_flags (value));
      break;
    case PROP_IDLE_TIMEOUT:
      dc_detached_code_set_idle_timeout (self, g_value_get_uint (value));
      break;
    case PROP_MAX_WORKER_CALLS:
      dc_detached_code_set_max_worker_calls (self, g_value_get_uint (value));
      break;
    case PROP_CALL_TIMEOUT:
      dc_detached_code_set_call_timeout (self, g_value_get_uint (value));
      break;
    case PROP_KILL_ON_CANCEL:
      dc_detached_code_set_kill_on_cancel (self, g_value_get_boolean (value));
      break;
    case PROP_PIPELINE_DEPTH:
      dc_detached_code_set_pipeline_depth (self, g_value_get_uint (value));
      break;
    case PROP_MEMFD_THRESHOLD:
      dc_detached_code_set_memfd_threshold (self, g_value_get_uint (value));
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID (object, prop_id, pspec);
    }
}

static void
dc_detached_code_class_init (DcDetachedCodeClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);

  dc_i18n_init ();

  object_class->dispose = dc_detached_code_dispose;
  object_class->finalize = dc_detached_code_finalize;
  object_class->get_property = dc_detached_code_get_property;
  object_class->set_property = dc_detached_code_set_property;

  /**
   * DcDetachedCode:min-workers:
   *
   * Workers forked by [method@DetachedCode.start] and kept while idle.
   *
   * Since: 1.0
   */
  props[PROP_MIN_WORKERS] =
    g_param_spec_uint ("min-workers", NULL, NULL, 0, G_MAXUINT16, 1,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:max-workers:
   *
   * How many workers the pool may grow to when calls wait.  The bound in
   * force is the larger of this and [property@DetachedCode:min-workers].
   *
   * Since: 1.0
   */
  props[PROP_MAX_WORKERS] =
    g_param_spec_uint ("max-workers", NULL, NULL, 1, G_MAXUINT16, 1,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:stream:
   *
   * The kind of channel to each worker.  May change only while no worker
   * runs.
   *
   * Since: 1.0
   */
  props[PROP_STREAM] =
    g_param_spec_enum ("stream", NULL, NULL, DC_TYPE_STREAM, DC_STREAM_AUTO,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:marshaller:
   *
   * How arguments and results travel.  May change only while no worker
   * runs and no call waits.
   *
   * Since: 1.0
   */
  props[PROP_MARSHALLER] =
    g_param_spec_enum ("marshaller", NULL, NULL, DC_TYPE_MARSHALLER, DC_MARSHALLER_VARIANT,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:exit-on-die:
   *
   * Whether a worker whose code failed (returned an error, or no value)
   * exits after replying.  No other call fails because of that exit: calls
   * go to another worker, or to a fresh one.
   *
   * Since: 1.0
   */
  props[PROP_EXIT_ON_DIE] =
    g_param_spec_boolean ("exit-on-die", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:setup-flags:
   *
   * How each worker's standard descriptors are set up.  May change only
   * while no worker runs.
   *
   * Since: 1.0
   */
  props[PROP_SETUP_FLAGS] =
    g_param_spec_flags ("setup-flags", NULL, NULL, DC_TYPE_SETUP_FLAGS, DC_SETUP_NONE,
                        G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:n-workers:
   *
   * How many workers are alive and taking calls.
   *
   * Since: 1.0
   */
  props[PROP_N_WORKERS] =
    g_param_spec_uint ("n-workers", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:idle-timeout:
   *
   * Milliseconds after which an idle worker above
   * [property@DetachedCode:min-workers] exits; 0 keeps idle workers.
   *
   * Since: 1.0
   */
  props[PROP_IDLE_TIMEOUT] =
    g_param_spec_uint ("idle-timeout", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:max-worker-calls:
   *
   * How many calls a worker serves before it exits, to bound what long
   * runs leak or fragment; 0 is unlimited.  A replacement is forked as
   * soon as calls need it, while the old worker finishes.
   *
   * Since: 1.0
   */
  props[PROP_MAX_WORKER_CALLS] =
    g_param_spec_uint ("max-worker-calls", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:call-timeout:
   *
   * Milliseconds a call may run, counted from when it is written to an
   * idle worker, or, pipelined behind another call, from that call's
   * reply (time waiting does not count); 0 is no limit.  A call past
   * its limit fails with %DC_DETACHED_CODE_ERROR_TIMED_OUT and its worker
   * is killed.
   *
   * Since: 1.0
   */
  props[PROP_CALL_TIMEOUT] =
    g_param_spec_uint ("call-timeout", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:kill-on-cancel:
   *
   * Whether cancelling a running call kills its worker.  Either way the
   * call completes at once with %G_IO_ERROR_CANCELLED; without this, the
   * worker finishes the call and its result is dropped.
   *
   * Since: 1.0
   */
  props[PROP_KILL_ON_CANCEL] =
    g_param_spec_boolean ("kill-on-cancel", NULL, NULL, FALSE,
                          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:pipeline-depth:
   *
   * How many calls may be outstanding on one worker.  Idle workers are
   * always chosen first, then new workers while the pool may grow, then
   * the least loaded.  Deeper pipelines trade fairness for throughput of
   * many small calls.
   *
   * Since: 1.0
   */
  props[PROP_PIPELINE_DEPTH] =
    g_param_spec_uint ("pipeline-depth", NULL, NULL, 1, G_MAXUINT16, 1,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:n-busy:
   *
   * How many workers are running calls.
   *
   * Since: 1.0
   */
  props[PROP_N_BUSY] =
    g_param_spec_uint ("n-busy", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:n-queued:
   *
   * How many calls wait for a worker.
   *
   * Since: 1.0
   */
  props[PROP_N_QUEUED] =
    g_param_spec_uint ("n-queued", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:memfd-threshold:
   *
   * Messages of at least this many bytes travel as a sealed memfd that the
   * receiver maps read-only, rather than through the socket; 0 (the
   * default) never does that.  Socket stream only; invisible but for
   * speed.  Applies to workers forked from now on.
   *
   * Each such message costs a new memfd, filled, sealed, mapped and
   * unmapped; on the machines measured so far that is slower than the
   * socket for every size (see `tests/bench/bench-bandwidth`), so measure
   * before turning it on.
   *
   * Since: 1.0
   */
  props[PROP_MEMFD_THRESHOLD] =
    g_param_spec_uint ("memfd-threshold", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  g_object_class_install_properties (object_class, N_PROPS, props);

  /**
   * DcDetachedCode::worker-spawned:
   * @self: the pool
   * @pid: the new worker's process id
   *
   * Emitted in the parent after a worker was forked.
   *
   * Since: 1.0
   */
  signals[SIGNAL_WORKER_SPAWNED] =
    g_signal_new ("worker-spawned", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_INT);

  /**
   * DcDetachedCode::worker-exited:
   * @self: the pool
   * @pid: the worker's process id
   * @wait_status: its wait status, as `waitpid()` gives it; see
   *   [func@GLib.spawn_check_wait_status]
   *
   * Emitted in the parent after a worker was reaped, before the calls it
   * still had fail.
   *
   * Since: 1.0
   */
  signals[SIGNAL_WORKER_EXITED] =
    g_signal_new ("worker-exited", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST,
                  0, NULL, NULL, NULL, G_TYPE_NONE, 2, G_TYPE_INT, G_TYPE_INT);
}

static void
dc_detached_code_init (DcDetachedCode *self)
{
  self->context = g_main_context_ref_thread_default ();
  self->owner_pid = getpid ();
  self->owner_thread = g_thread_self ();
  self->cancellable_calls = g_hash_table_new (NULL, NULL);
  self->min_workers = 1;
  self->max_workers = 1;
  self->stream = DC_STREAM_AUTO;
  self->marshaller = DC_MARSHALLER_VARIANT;
  self->setup_flags = DC_SETUP_NONE;
  self->pipeline_depth = 1;
  /* Off: measured on Linux 6.x with 2 cores, a fresh sealed memfd per
   * message (create, fill, seal, map, unmap) moved 1 MiB at a quarter of
   * the socket's speed (tests/bench/bench-bandwidth). */
  self->memfd_threshold = 0;
  self->env_ops = g_array_new (FALSE, FALSE, sizeof (EnvOp));
  g_array_set_clear_func (self->env_ops, (GDestroyNotify) env_op_clear);
  g_queue_init (&self->queue);
  g_mutex_init (&self->incoming_lock);
  g_queue_init (&self->incoming);
  self->next_serial = 1;
}

/* ---- public API ---- */

/* A pool made with g_object_new() (as a binding's plain constructor does)
 * has no code to run: refuse, rather than fork workers that crash. */
static void
set_no_func_error (GError **error)
{
  g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED,
                       _("This pool has no code to run: create it with dc_detached_code_new()"));
}

/**
 * dc_detached_code_new: (constructor)
 * @func: (scope notified) (closure user_data) (destroy user_data_free): the
 *   code to run in the workers
 * @user_data: data for @func, seen by each worker as it was at the fork
 * @user_data_free: (nullable): frees @user_data when the pool is finalized
 *
 * Creates a pool that runs @func in worker processes.  No process is
 * forked until [method@DetachedCode.start] or the first call.
 *
 * The pool does its I/O on the thread-default main context of the thread
 * that creates it, which must be running for calls to complete.
 *
 * Returns: (transfer full): a new pool
 *
 * Since: 1.0
 */
DcDetachedCode *
dc_detached_code_new (DcCodeFunc     func,
                      gpointer       user_data,
                      GDestroyNotify user_data_free)
{
  DcDetachedCode *self;

  g_return_val_if_fail (func != NULL, NULL);

  self = g_object_new (DC_TYPE_DETACHED_CODE, NULL);
  self->func = func;
  self->user_data = user_data;
  self->user_data_free = user_data_free;
  return self;
}

/**
 * dc_detached_code_new_with_fds: (constructor)
 * @func: (scope notified) (closure user_data) (destroy user_data_free): the
 *   code to run in the workers
 * @user_data: data for @func, seen by each worker as it was at the fork
 * @user_data_free: (nullable): frees @user_data when the pool is finalized
 *
 * Creates a pool whose code receives and returns descriptors: see
 * [method@DetachedCode.call_with_unix_fd_list_async].  Descriptors travel
 * on the socket stream only.
 *
 * Returns: (transfer full): a new pool
 *
 * Since: 1.0
 */
DcDetachedCode *
dc_detached_code_new_with_fds (DcCodeFdFunc   func,
                               gpointer       user_data,
                               GDestroyNotify user_data_free)
{
  DcDetachedCode *self;

  g_return_val_if_fail (func != NULL, NULL);

  self = g_object_new (DC_TYPE_DETACHED_CODE, NULL);
  self->fd_func = func;
  self->user_data = user_data;
  self->user_data_free = user_data_free;
  return self;
}

/**
 * dc_detached_code_start:
 * @self: a pool
 * @error: return location for an error
 *
 * Forks [property@DetachedCode:min-workers] workers now.  Call it early,
 * before the program creates threads: see [Fork safety](fork-safety.html).  Calls
 * start the pool by themselves when nobody did.
 *
 * Returns: %TRUE if the workers were forked; %FALSE with a
 *   %DC_DETACHED_CODE_ERROR_SPAWN @error otherwise
 *
 * Since: 1.0
 */
gboolean
dc_detached_code_start (DcDetachedCode  *self,
                        GError         **error)
{
  gboolean ok = TRUE;
  gboolean acquired;

  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (!in_owner_process (self))
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("This pool belongs to process %d"), (int) self->owner_pid);
      return FALSE;
    }
  if (self->func == NULL && self->fd_func == NULL)
    {
      set_no_func_error (error);
      return FALSE;
    }

  /* Pool state belongs to whoever runs the pool's context. */
  acquired = g_main_context_acquire (self->context);
  if (!acquired)
    {
      g_critical ("%s: call it from the thread that runs the pool's main context", G_STRFUNC);
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                           _("The pool's main context is running in another thread"));
      return FALSE;
    }
  self->started = TRUE;
  while (ok && self->n_workers < self->min_workers)
    ok = spawn_worker (self, error) != NULL;
  /* Calls made before start() may be waiting. */
  dispatch (self);
  g_main_context_release (self->context);

  return ok;
}

/**
 * dc_detached_code_call_async:
 * @self: a pool
 * @args: (nullable): the arguments for the code; %NULL means an empty
 *   tuple.  A floating reference is sunk.
 * @io_priority: the call's place in the queue: lower values go first,
 *   equal values in call order
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async) (closure user_data): called when the call
 *   completes
 * @user_data: data for @callback
 *
 * Runs the code in a worker with @args.  The arguments are serialized
 * before this function returns, so @args may change afterwards.  The call
 * goes to an idle worker, or to a newly forked one while the pool may
 * grow; otherwise it waits in the queue.
 *
 * @callback runs in the thread-default main context of the calling thread,
 * never before this function returns.  Call
 * [method@DetachedCode.call_finish] from it.
 *
 * This function may be called from any thread.  The call's task holds a
 * reference to the pool; if the last reference goes in another thread
 * while a third runs the pool's context, that thread waits until the
 * context's thread has shut the pool down, so never make the context's
 * thread wait for it then.
 *
 * Since: 1.0
 */
static void
call_internal (DcDetachedCode     *self,
               GVariant           *args,
               GUnixFDList        *fd_list,
               int                 io_priority,
               GCancellable       *cancellable,
               GAsyncReadyCallback callback,
               gpointer            user_data,
               gpointer            source_tag)
{
  g_autoptr(GTask) task = NULL;
  g_autoptr(GVariant) owned_args = NULL;
  g_autoptr(GError) error = NULL;
  GBytes *payload;
  DcCall *call;
  gboolean need_source = FALSE;

  owned_args = args != NULL ? g_variant_ref_sink (args)
                            : g_variant_ref_sink (g_variant_new ("()"));

  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, source_tag);
  g_task_set_priority (task, io_priority);

  if (!in_owner_process (self))
    {
      g_task_return_new_error (task, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SHUTDOWN,
                               _("This pool belongs to process %d"), (int) self->owner_pid);
      return;
    }
  if (self->func == NULL && self->fd_func == NULL)
    {
      set_no_func_error (&error);
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }

  if (fd_list != NULL && g_unix_fd_list_get_length (fd_list) > 0)
    {
      const char *why = NULL;

      if (self->fd_func == NULL)
        why = _("This pool's code takes no descriptors: create it with dc_detached_code_new_with_fds()");
      else if (self->stream == DC_STREAM_PIPE)
        why = _("Descriptors travel on the socket stream only");
      else if (g_unix_fd_list_get_length (fd_list) >= DC_WIRE_MAX_FDS)
        why = _("Too many descriptors for one call");
      if (why != NULL)
        {
          g_task_return_new_error (task, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                                   "%s", why);
          return;
        }
    }

  /* The marshaller may not change while calls wait, so the one in force
   * now is the one the workers use. */
  payload = dc_wire_marshal (self->marshaller, owned_args, &error);
  if (payload == NULL)
    {
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }

  call = g_new0 (DcCall, 1);
  call->task = g_steal_pointer (&task);
  call->payload = payload;
  call->priority = io_priority;
  call->memfd = -1;
  /* The caller's list, by reference: its descriptors are only read. */
  if (fd_list != NULL && g_unix_fd_list_get_length (fd_list) > 0)
    call->fd_list = g_object_ref (fd_list);

  if ((g_thread_self () == self->owner_thread || g_main_context_is_owner (self->context)) &&
      g_main_context_acquire (self->context))
    {
      submit (self, call);
      dispatch (self);
      g_main_context_release (self->context);
      return;
    }

  /* Another thread runs (or owns) the pool's context: hand the call over,
   * so that workers are forked only there. */
  g_mutex_lock (&self->incoming_lock);
  call->link.data = call;
  g_queue_push_tail_link (&self->incoming, &call->link);
  if (self->incoming_source == NULL)
    {
      self->incoming_source = g_idle_source_new ();
      g_source_set_priority (self->incoming_source, G_PRIORITY_DEFAULT);
      g_source_set_callback (self->incoming_source, incoming_cb,
                             g_object_ref (self), g_object_unref);
      need_source = TRUE;
    }
  if (need_source)
    g_source_attach (self->incoming_source, self->context);
  g_mutex_unlock (&self->incoming_lock);
}

void
dc_detached_code_call_async (DcDetachedCode     *self,
                             GVariant           *args,
                             int                 io_priority,
                             GCancellable       *cancellable,
                             GAsyncReadyCallback callback,
                             gpointer            user_data)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  call_internal (self, args, NULL, io_priority, cancellable, callback, user_data,
                 dc_detached_code_call_async);
}

/**
 * dc_detached_code_call_with_unix_fd_list_async:
 * @self: a pool made with [ctor@DetachedCode.new_with_fds]
 * @args: (nullable): the arguments for the code; %NULL means an empty
 *   tuple.  A floating reference is sunk.
 * @fd_list: (nullable): descriptors to send with the arguments; `h` values
 *   in @args index into it, as in GDBus
 * @io_priority: the call's place in the queue
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async) (closure user_data): called when the call
 *   completes
 * @user_data: data for @callback
 *
 * Like [method@DetachedCode.call_async], with descriptors: the worker's
 * [callback@CodeFdFunc] receives copies of those in @fd_list, and may send
 * descriptors back.  They travel with `SCM_RIGHTS` on the socket stream; on
 * the pipe stream, or to a pool made with [ctor@DetachedCode.new], a call
 * with descriptors fails with %DC_DETACHED_CODE_ERROR_MARSHAL.
 *
 * @fd_list is kept until the call completes and is not modified; the
 * caller may close its own descriptors once this function returns only if
 * it drops its reference to the list too.
 *
 * Since: 1.0
 */
void
dc_detached_code_call_with_unix_fd_list_async (DcDetachedCode     *self,
                                               GVariant           *args,
                                               GUnixFDList        *fd_list,
                                               int                 io_priority,
                                               GCancellable       *cancellable,
                                               GAsyncReadyCallback callback,
                                               gpointer            user_data)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (fd_list == NULL || G_IS_UNIX_FD_LIST (fd_list));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  call_internal (self, args, fd_list, io_priority, cancellable, callback, user_data,
                 dc_detached_code_call_with_unix_fd_list_async);
}

/**
 * dc_detached_code_call_with_unix_fd_list_finish:
 * @self: a pool
 * @out_fd_list: (out) (optional) (nullable) (transfer full): return location
 *   for the descriptors the code sent back, or %NULL
 * @result: the result given to the callback
 * @error: return location for an error
 *
 * Finishes a call started with
 * [method@DetachedCode.call_with_unix_fd_list_async].
 *
 * Returns: (transfer full): the value the code returned, or %NULL with
 *   @error set
 *
 * Since: 1.0
 */
GVariant *
dc_detached_code_call_with_unix_fd_list_finish (DcDetachedCode  *self,
                                                GUnixFDList    **out_fd_list,
                                                GAsyncResult    *result,
                                                GError         **error)
{
  GVariant *value;
  GUnixFDList *fds;

  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), NULL);
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == dc_detached_code_call_with_unix_fd_list_async, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  value = g_task_propagate_pointer (G_TASK (result), error);
  fds = g_task_get_task_data (G_TASK (result));
  if (out_fd_list != NULL)
    *out_fd_list = (value != NULL && fds != NULL) ? g_object_ref (fds) : NULL;
  return value;
}

/**
 * dc_detached_code_call_finish:
 * @self: a pool
 * @result: the result given to the callback
 * @error: return location for an error
 *
 * Finishes a call started with [method@DetachedCode.call_async].
 *
 * An error the code set arrives with its own domain, code and message.
 * Failures of the pool itself are in the %DC_DETACHED_CODE_ERROR domain.
 *
 * Returns: (transfer full): the value the code returned, or %NULL with
 *   @error set
 *
 * Since: 1.0
 */
GVariant *
dc_detached_code_call_finish (DcDetachedCode  *self,
                              GAsyncResult    *result,
                              GError         **error)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), NULL);
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == dc_detached_code_call_async, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}

/**
 * dc_detached_code_shutdown:
 * @self: a pool
 *
 * Fails every waiting and running call with
 * %DC_DETACHED_CODE_ERROR_SHUTDOWN, asks the workers to exit (killing
 * those still running a call) and reaps them as the main context runs.
 * Finalizing the pool does the same.
 *
 * A later call starts the pool again.
 *
 * Since: 1.0
 */
void
dc_detached_code_shutdown (DcDetachedCode *self)
{
  g_autoptr(GError) error = NULL;
  GQueue calls = G_QUEUE_INIT;
  GList *link;
  gboolean acquired;

  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (!in_owner_process (self))
    return;

  acquired = g_main_context_acquire (self->context);
  /* Dispose may run in any thread; the pool's lists may not be touched
   * from one that does not run its context. */
  g_return_if_fail (acquired);
  g_object_ref (self);

  self->started = FALSE;

  g_mutex_lock (&self->incoming_lock);
  while ((link = g_queue_pop_head_link (&self->incoming)) != NULL)
    queue_insert (&self->queue, link->data);
  g_mutex_unlock (&self->incoming_lock);

  /* Take everything first: callbacks may call back in. */
  detach_workers (self, &calls);
  while ((link = g_queue_pop_head_link (&self->queue)) != NULL)
    {
      call_detach (link->data);
      g_queue_push_tail_link (&calls, link);
    }
  set_n_workers (self, 0);

  update_stats (self);
  if (calls.length > 0)
    {
      error = g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SHUTDOWN,
                                   _("The pool was shut down before the call completed"));
      fail_calls (&calls, error);
    }

  g_main_context_release (self->context);
  g_object_unref (self);
}

/**
 * dc_detached_code_get_n_workers:
 * @self: a pool
 *
 * Gets how many workers are alive and taking calls, the value of
 * [property@DetachedCode:n-workers].
 *
 * Returns: how many workers are alive and taking calls
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_n_workers (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->n_workers;
}

/**
 * dc_detached_code_get_worker_pids:
 * @self: a pool
 * @n_pids: (out) (optional): the number of pids returned
 *
 * Lists the process ids of the workers that are alive and taking calls.
 *
 * Returns: (array length=n_pids) (transfer container) (nullable): the pids,
 *   %NULL when there is none
 *
 * Since: 1.0
 */
GPid *
dc_detached_code_get_worker_pids (DcDetachedCode *self,
                                  guint          *n_pids)
{
  GPid *pids;
  GList *l;
  guint n = 0;

  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), NULL);

  pids = g_new (GPid, self->n_workers + 1);
  for (l = self->workers; l != NULL; l = l->next)
    {
      DcWorker *worker = l->data;

      if (worker->state == WORKER_RUNNING && n < self->n_workers)
        pids[n++] = worker->pid;
    }

  if (n_pids != NULL)
    *n_pids = n;
  if (n == 0)
    g_clear_pointer (&pids, g_free);
  return pids;
}

static void
add_env_op (DcDetachedCode *self,
            const char     *variable,
            const char     *value,
            gboolean        overwrite)
{
  EnvOp op = { g_strdup (variable), g_strdup (value), overwrite };

  g_array_append_val (self->env_ops, op);
}

/**
 * dc_detached_code_setenv:
 * @self: a pool
 * @variable: (type filename): the variable to set; must not contain `=`
 * @value: (type filename): its value
 * @overwrite: whether to replace a value the worker would inherit
 *
 * Sets an environment variable in workers forked from now on.  The
 * parent's environment does not change.
 *
 * Since: 1.0
 */
void
dc_detached_code_setenv (DcDetachedCode *self,
                         const char     *variable,
                         const char     *value,
                         gboolean        overwrite)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (variable != NULL && *variable != '\0' && strchr (variable, '=') == NULL);
  g_return_if_fail (value != NULL);

  add_env_op (self, variable, value, overwrite);
}

/**
 * dc_detached_code_unsetenv:
 * @self: a pool
 * @variable: (type filename): the variable to remove; must not contain `=`
 *
 * Removes an environment variable from workers forked from now on.  The
 * parent's environment does not change.
 *
 * Since: 1.0
 */
void
dc_detached_code_unsetenv (DcDetachedCode *self,
                           const char     *variable)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (variable != NULL && *variable != '\0' && strchr (variable, '=') == NULL);

  add_env_op (self, variable, NULL, TRUE);
}

/**
 * dc_detached_code_set_cwd:
 * @self: a pool
 * @cwd: (type filename) (nullable): the directory workers forked from now on
 *   start in, or %NULL for the parent's
 *
 * Sets the working directory of new workers.  The parent's does not change.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_cwd (DcDetachedCode *self,
                          const char     *cwd)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  g_free (self->cwd);
  self->cwd = g_strdup (cwd);
}

/**
 * dc_detached_code_get_cwd:
 * @self: a pool
 *
 * Gets the working directory that workers forked from now on start in.
 *
 * Returns: (type filename) (nullable): the working directory set with
 *   [method@DetachedCode.set_cwd]
 *
 * Since: 1.0
 */
const char *
dc_detached_code_get_cwd (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), NULL);

  return self->cwd;
}

/**
 * dc_detached_code_set_worker_init_func:
 * @self: a pool
 * @func: (scope notified) (closure user_data) (destroy user_data_free) (nullable):
 *   runs once in each worker before its first call
 * @user_data: data for @func
 * @user_data_free: (nullable): frees @user_data when replaced or when the
 *   pool is finalized
 *
 * Sets a function that each worker forked from now on runs once, after
 * its set-up and before its first call: a place to open what every call
 * will use.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_worker_init_func (DcDetachedCode   *self,
                                       DcWorkerInitFunc  func,
                                       gpointer          user_data,
                                       GDestroyNotify    user_data_free)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (self->init_data_free != NULL)
    self->init_data_free (self->init_data);
  self->init_func = func;
  self->init_data = user_data;
  self->init_data_free = user_data_free;
}

static gboolean
workers_alive (DcDetachedCode *self)
{
  return self->workers != NULL;
}

/**
 * dc_detached_code_get_min_workers:
 * @self: a pool
 *
 * Gets the number of workers forked by [method@DetachedCode.start] and
 * kept while idle.
 *
 * Returns: the value of [property@DetachedCode:min-workers]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_min_workers (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->min_workers;
}

/**
 * dc_detached_code_set_min_workers:
 * @self: a pool
 * @min_workers: the number of workers to keep
 *
 * Sets [property@DetachedCode:min-workers].  A started pool forks up to
 * the new minimum as calls come.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_min_workers (DcDetachedCode *self,
                                  guint           min_workers)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (self->min_workers == min_workers)
    return;
  self->min_workers = min_workers;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_MIN_WORKERS]);
}

/**
 * dc_detached_code_get_max_workers:
 * @self: a pool
 *
 * Gets the number of workers the pool may grow to while calls wait.
 *
 * Returns: the value of [property@DetachedCode:max-workers]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_max_workers (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->max_workers;
}

/**
 * dc_detached_code_set_max_workers:
 * @self: a pool
 * @max_workers: the most workers the pool may grow to, at least 1
 *
 * Sets [property@DetachedCode:max-workers].
 *
 * Since: 1.0
 */
void
dc_detached_code_set_max_workers (DcDetachedCode *self,
                                  guint           max_workers)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (max_workers >= 1);

  if (self->max_workers == max_workers)
    return;
  self->max_workers = max_workers;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_MAX_WORKERS]);

  /* More room: calls waiting may go now. */
  if (in_owner_process (self) && g_main_context_acquire (self->context))
    {
      dispatch (self);
      g_main_context_release (self->context);
    }
}

/**
 * dc_detached_code_get_stream:
 * @self: a pool
 *
 * Gets the kind of channel used between the parent and each worker.
 *
 * Returns: the value of [property@DetachedCode:stream]
 *
 * Since: 1.0
 */
DcStream
dc_detached_code_get_stream (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), DC_STREAM_AUTO);

  return self->stream;
}

/**
 * dc_detached_code_set_stream:
 * @self: a pool
 * @stream: the kind of channel
 *
 * Sets [property@DetachedCode:stream].  Only while no worker runs.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_stream (DcDetachedCode *self,
                             DcStream        stream)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (stream == DC_STREAM_AUTO || stream == DC_STREAM_SOCKET || stream == DC_STREAM_PIPE);
  g_return_if_fail (!workers_alive (self));

  if (self->stream == stream)
    return;
  self->stream = stream;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_STREAM]);
}

/**
 * dc_detached_code_get_marshaller:
 * @self: a pool
 *
 * Gets how arguments and results travel between the parent and the workers.
 *
 * Returns: the value of [property@DetachedCode:marshaller]
 *
 * Since: 1.0
 */
DcMarshaller
dc_detached_code_get_marshaller (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), DC_MARSHALLER_VARIANT);

  return self->marshaller;
}

/**
 * dc_detached_code_set_marshaller:
 * @self: a pool
 * @marshaller: how values travel
 *
 * Sets [property@DetachedCode:marshaller].  Only while no worker runs and
 * no call waits.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_marshaller (DcDetachedCode *self,
                                 DcMarshaller    marshaller)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (marshaller == DC_MARSHALLER_VARIANT || marshaller == DC_MARSHALLER_FLAT);
  g_return_if_fail (!workers_alive (self) && self->queue.length == 0 &&
                    g_atomic_pointer_get (&self->incoming.head) == NULL);

  if (self->marshaller == marshaller)
    return;
  self->marshaller = marshaller;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_MARSHALLER]);
}

/**
 * dc_detached_code_get_exit_on_die:
 * @self: a pool
 *
 * Gets whether a worker whose code failed exits after replying.
 *
 * Returns: the value of [property@DetachedCode:exit-on-die]
 *
 * Since: 1.0
 */
gboolean
dc_detached_code_get_exit_on_die (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), FALSE);

  return self->exit_on_die;
}

/**
 * dc_detached_code_set_exit_on_die:
 * @self: a pool
 * @exit_on_die: whether a worker exits after its code failed
 *
 * Sets [property@DetachedCode:exit-on-die], for workers forked from now on.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_exit_on_die (DcDetachedCode *self,
                                  gboolean        exit_on_die)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  exit_on_die = !!exit_on_die;
  if (self->exit_on_die == exit_on_die)
    return;
  self->exit_on_die = exit_on_die;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_EXIT_ON_DIE]);
}

/**
 * dc_detached_code_get_setup_flags:
 * @self: a pool
 *
 * Gets how the standard descriptors of each worker are set up.
 *
 * Returns: the value of [property@DetachedCode:setup-flags]
 *
 * Since: 1.0
 */
DcSetupFlags
dc_detached_code_get_setup_flags (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), DC_SETUP_NONE);

  return self->setup_flags;
}

/**
 * dc_detached_code_set_setup_flags:
 * @self: a pool
 * @flags: how the workers' standard descriptors are set up
 *
 * Sets [property@DetachedCode:setup-flags].  Only while no worker runs.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_setup_flags (DcDetachedCode *self,
                                  DcSetupFlags    flags)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (!workers_alive (self));

  if (self->setup_flags == flags)
    return;
  self->setup_flags = flags;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_SETUP_FLAGS]);
}

/**
 * dc_detached_code_restart:
 * @self: a pool
 *
 * Replaces every worker: each finishes the calls it has and exits, and new
 * workers fork from the parent as it is now, so that state the parent
 * changed since the workers were forked is seen by later calls.  No call
 * fails because of a restart.
 *
 * Since: 1.0
 */
void
dc_detached_code_restart (DcDetachedCode *self)
{
  g_autoptr(GError) error = NULL;
  GList *l, *workers;
  gboolean acquired;

  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (!in_owner_process (self))
    return;

  acquired = g_main_context_acquire (self->context);
  g_return_if_fail (acquired);
  g_object_ref (self);

  /* Retiring may close channels; hold them meanwhile. */
  workers = g_list_copy (self->workers);
  for (l = workers; l != NULL; l = l->next)
    worker_ref (l->data);
  for (l = workers; l != NULL; l = l->next)
    {
      DcWorker *worker = l->data;

      if (worker->state == WORKER_RUNNING)
        worker_retire (worker);
    }
  g_list_free_full (workers, (GDestroyNotify) worker_unref);

  if (self->started && (self->func != NULL || self->fd_func != NULL))
    while (self->n_workers < self->min_workers)
      if (spawn_worker (self, &error) == NULL)
        {
          /* Calls fork their own worker, or fail with SPAWN. */
          g_debug ("restart: %s", error->message);
          break;
        }
  dispatch (self);

  g_main_context_release (self->context);
  g_object_unref (self);
}

/**
 * dc_detached_code_get_n_busy:
 * @self: a pool
 *
 * Gets how many workers are running calls, the value of
 * [property@DetachedCode:n-busy].
 *
 * Returns: the number of busy workers
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_n_busy (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->n_busy;
}

/**
 * dc_detached_code_get_n_queued:
 * @self: a pool
 *
 * Gets how many calls wait for a worker, the value of
 * [property@DetachedCode:n-queued].
 *
 * Returns: the number of queued calls
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_n_queued (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->n_queued;
}

/**
 * dc_detached_code_get_idle_timeout:
 * @self: a pool
 *
 * Gets how long, in milliseconds, a worker above the minimum stays idle before it exits.
 *
 * Returns: the value of [property@DetachedCode:idle-timeout]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_idle_timeout (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->idle_timeout;
}

/**
 * dc_detached_code_set_idle_timeout:
 * @self: a pool
 * @idle_timeout: milliseconds, or 0 to keep idle workers
 *
 * Sets [property@DetachedCode:idle-timeout].
 *
 * Since: 1.0
 */
void
dc_detached_code_set_idle_timeout (DcDetachedCode *self,
                                   guint           idle_timeout)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (self->idle_timeout == idle_timeout)
    return;
  self->idle_timeout = idle_timeout;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_IDLE_TIMEOUT]);
}

/**
 * dc_detached_code_get_max_worker_calls:
 * @self: a pool
 *
 * Gets how many calls a worker serves before it exits.
 *
 * Returns: the value of [property@DetachedCode:max-worker-calls]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_max_worker_calls (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->max_worker_calls;
}

/**
 * dc_detached_code_set_max_worker_calls:
 * @self: a pool
 * @max_worker_calls: calls per worker, or 0 for no limit
 *
 * Sets [property@DetachedCode:max-worker-calls].
 *
 * Since: 1.0
 */
void
dc_detached_code_set_max_worker_calls (DcDetachedCode *self,
                                       guint           max_worker_calls)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (self->max_worker_calls == max_worker_calls)
    return;
  self->max_worker_calls = max_worker_calls;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_MAX_WORKER_CALLS]);
}

/**
 * dc_detached_code_get_call_timeout:
 * @self: a pool
 *
 * Gets how long, in milliseconds, a call may run on its worker.
 *
 * Returns: the value of [property@DetachedCode:call-timeout]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_call_timeout (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->call_timeout;
}

/**
 * dc_detached_code_set_call_timeout:
 * @self: a pool
 * @call_timeout: milliseconds from the write to the worker, or 0 for no limit; applies to calls written from now on
 *
 * Sets [property@DetachedCode:call-timeout].
 *
 * Since: 1.0
 */
void
dc_detached_code_set_call_timeout (DcDetachedCode *self,
                                   guint           call_timeout)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (self->call_timeout == call_timeout)
    return;
  self->call_timeout = call_timeout;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_CALL_TIMEOUT]);
}

/**
 * dc_detached_code_get_pipeline_depth:
 * @self: a pool
 *
 * Gets how many calls may be outstanding on one worker.
 *
 * Returns: the value of [property@DetachedCode:pipeline-depth]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_pipeline_depth (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->pipeline_depth;
}

/**
 * dc_detached_code_set_pipeline_depth:
 * @self: a pool
 * @pipeline_depth: calls per worker, at least 1
 *
 * Sets [property@DetachedCode:pipeline-depth].
 *
 * Since: 1.0
 */
void
dc_detached_code_set_pipeline_depth (DcDetachedCode *self,
                                     guint           pipeline_depth)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (pipeline_depth >= 1);

  if (self->pipeline_depth == pipeline_depth)
    return;
  self->pipeline_depth = pipeline_depth;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_PIPELINE_DEPTH]);

  /* More room: calls waiting may go now. */
  if (in_owner_process (self) && g_main_context_acquire (self->context))
    {
      dispatch (self);
      g_main_context_release (self->context);
    }
}

/**
 * dc_detached_code_get_kill_on_cancel:
 * @self: a pool
 *
 * Gets whether cancelling a running call kills its worker.
 *
 * Returns: the value of [property@DetachedCode:kill-on-cancel]
 *
 * Since: 1.0
 */
gboolean
dc_detached_code_get_kill_on_cancel (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), FALSE);

  return self->kill_on_cancel;
}

/**
 * dc_detached_code_set_kill_on_cancel:
 * @self: a pool
 * @kill_on_cancel: whether cancelling a running call kills its worker
 *
 * Sets [property@DetachedCode:kill-on-cancel].
 *
 * Since: 1.0
 */
void
dc_detached_code_set_kill_on_cancel (DcDetachedCode *self,
                                     gboolean        kill_on_cancel)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  kill_on_cancel = !!kill_on_cancel;
  if (self->kill_on_cancel == kill_on_cancel)
    return;
  self->kill_on_cancel = kill_on_cancel;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_KILL_ON_CANCEL]);
}

/**
 * dc_detached_code_get_memfd_threshold:
 * @self: a pool
 *
 * Gets the size from which messages travel in shared memory.
 *
 * Returns: the value of [property@DetachedCode:memfd-threshold]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_memfd_threshold (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return self->memfd_threshold;
}

/**
 * dc_detached_code_set_memfd_threshold:
 * @self: a pool
 * @memfd_threshold: bytes, or 0 to always copy through the channel
 *
 * Sets [property@DetachedCode:memfd-threshold].
 *
 * Since: 1.0
 */
void
dc_detached_code_set_memfd_threshold (DcDetachedCode *self,
                                      guint           memfd_threshold)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (self->memfd_threshold == memfd_threshold)
    return;
  self->memfd_threshold = memfd_threshold;
  g_object_notify_by_pspec (G_OBJECT (self), props[PROP_MEMFD_THRESHOLD]);
}
