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
#include "dc-detached-code-private.h"

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

GParamSpec *props[N_PROPS];

guint signals[N_SIGNALS];

G_DEFINE_TYPE (DcDetachedCode, dc_detached_code, G_TYPE_OBJECT)

G_DEFINE_QUARK (dc-detached-code-error-quark, dc_detached_code_error)

void
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

gboolean
in_owner_process (DcDetachedCode *self)
{
  return self->owner_pid == getpid ();
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
void
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
void
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

void
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

gboolean
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
