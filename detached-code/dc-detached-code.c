/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The public type: its properties, signals and documentation, the checks
 * on what callers pass, and the entry points, each of which enters the
 * pool's context through the one guard of dc-context.c.  The work is done
 * by the pool (dc-pool.c) and the launcher (dc-launcher.c). */

#include "config.h"

#include <string.h>

#include <glib/gi18n-lib.h>

#include "dc-detached-code.h"
#include "dc-enum-types.h"
#include "dc-detached-code-private.h"
#include "dc-map-private.h"
#include "dc-progress-private.h"
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

GParamSpec *dc_detached_code_props[N_PROPS];

enum
{
  SIGNAL_WORKER_SPAWNED,
  SIGNAL_WORKER_EXITED,
  N_SIGNALS
};

static guint signals[N_SIGNALS];

G_DEFINE_TYPE (DcDetachedCode, dc_detached_code, G_TYPE_OBJECT)

G_DEFINE_QUARK (dc-detached-code-error-quark, dc_detached_code_error)

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


/* ---- what the pool reports ---- */

static void
pool_notify_cb (DcPoolCount  count,
                gpointer     data)
{
  static const guint which[] = {
    [DC_POOL_COUNT_WORKERS] = PROP_N_WORKERS,
    [DC_POOL_COUNT_BUSY] = PROP_N_BUSY,
    [DC_POOL_COUNT_QUEUED] = PROP_N_QUEUED,
  };

  g_object_notify_by_pspec (G_OBJECT (data), dc_detached_code_props[which[count]]);
}

static void
pool_worker_spawned_cb (GPid     pid,
                        gpointer data)
{
  g_signal_emit (data, signals[SIGNAL_WORKER_SPAWNED], 0, (gint) pid);
}

static void
pool_worker_exited_cb (GPid     pid,
                       int      wait_status,
                       gpointer data)
{
  g_signal_emit (data, signals[SIGNAL_WORKER_EXITED], 0, (gint) pid, wait_status);
}

static const DcPoolCallbacks pool_callbacks = {
  pool_notify_cb,
  pool_worker_spawned_cb,
  pool_worker_exited_cb,
};

/* ---- GObject ---- */

static gboolean
dispose_on_context_cb (gpointer data)
{
  DcDetachedCode *self = data;

  dc_pool_shutdown (self->pool);
  dc_pool_disown (self->pool);
  return G_SOURCE_REMOVE;
}

static void
dc_detached_code_dispose (GObject *object)
{
  DcDetachedCode *self = DC_DETACHED_CODE (object);
  DcContext *ctx = dc_pool_get_context (self->pool);

  /* In a worker this is a copy of the parent's pool: the processes, the
   * descriptors and the main context are not ours to touch. */
  if (dc_context_in_owner_process (ctx))
    {
      if (dc_context_enter (ctx))
        {
          dispose_on_context_cb (self);
          dc_context_leave (ctx);
        }
      else
        /* The last reference went in a thread that cannot enter (a
         * caller's task, finalized there), while another thread runs the
         * context.  Only that one may touch the workers: ask it, and
         * wait, since the object must outlive the work.  (Taking a
         * reference for later instead races with this very unref, which
         * would then finalize without a second dispose.) */
        dc_context_run_and_wait (ctx, dispose_on_context_cb, self);
    }

  G_OBJECT_CLASS (dc_detached_code_parent_class)->dispose (object);
}

static void
dc_detached_code_finalize (GObject *object)
{
  DcDetachedCode *self = DC_DETACHED_CODE (object);

  dc_pool_unref (self->pool);

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
      g_value_set_uint (value, dc_detached_code_get_min_workers (self));
      break;
    case PROP_MAX_WORKERS:
      g_value_set_uint (value, dc_detached_code_get_max_workers (self));
      break;
    case PROP_STREAM:
      g_value_set_enum (value, dc_detached_code_get_stream (self));
      break;
    case PROP_MARSHALLER:
      g_value_set_enum (value, dc_detached_code_get_marshaller (self));
      break;
    case PROP_EXIT_ON_DIE:
      g_value_set_boolean (value, dc_detached_code_get_exit_on_die (self));
      break;
    case PROP_SETUP_FLAGS:
      g_value_set_flags (value, dc_detached_code_get_setup_flags (self));
      break;
    case PROP_N_WORKERS:
      g_value_set_uint (value, dc_detached_code_get_n_workers (self));
      break;
    case PROP_IDLE_TIMEOUT:
      g_value_set_uint (value, dc_detached_code_get_idle_timeout (self));
      break;
    case PROP_MAX_WORKER_CALLS:
      g_value_set_uint (value, dc_detached_code_get_max_worker_calls (self));
      break;
    case PROP_CALL_TIMEOUT:
      g_value_set_uint (value, dc_detached_code_get_call_timeout (self));
      break;
    case PROP_KILL_ON_CANCEL:
      g_value_set_boolean (value, dc_detached_code_get_kill_on_cancel (self));
      break;
    case PROP_PIPELINE_DEPTH:
      g_value_set_uint (value, dc_detached_code_get_pipeline_depth (self));
      break;
    case PROP_N_BUSY:
      g_value_set_uint (value, dc_detached_code_get_n_busy (self));
      break;
    case PROP_N_QUEUED:
      g_value_set_uint (value, dc_detached_code_get_n_queued (self));
      break;
    case PROP_MEMFD_THRESHOLD:
      g_value_set_uint (value, dc_detached_code_get_memfd_threshold (self));
      break;
    case PROP_FORK_SERVER:
      g_value_set_boolean (value, dc_detached_code_get_fork_server (self));
      break;
    case PROP_MAX_QUEUED:
      g_value_set_uint (value, dc_detached_code_get_max_queued (self));
      break;
    case PROP_SANDBOX:
      g_value_set_flags (value, dc_detached_code_get_sandbox (self));
      break;
    case PROP_MEMORY_LIMIT:
      g_value_set_uint64 (value, dc_detached_code_get_memory_limit (self));
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
    case PROP_FORK_SERVER:
      dc_detached_code_set_fork_server (self, g_value_get_boolean (value));
      break;
    case PROP_MAX_QUEUED:
      dc_detached_code_set_max_queued (self, g_value_get_uint (value));
      break;
    case PROP_SANDBOX:
      dc_detached_code_set_sandbox (self, g_value_get_flags (value));
      break;
    case PROP_MEMORY_LIMIT:
      dc_detached_code_set_memory_limit (self, g_value_get_uint64 (value));
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
  dc_detached_code_props[PROP_MIN_WORKERS] =
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
  dc_detached_code_props[PROP_MAX_WORKERS] =
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
  dc_detached_code_props[PROP_STREAM] =
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
  dc_detached_code_props[PROP_MARSHALLER] =
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
  dc_detached_code_props[PROP_EXIT_ON_DIE] =
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
  dc_detached_code_props[PROP_SETUP_FLAGS] =
    g_param_spec_flags ("setup-flags", NULL, NULL, DC_TYPE_SETUP_FLAGS, DC_SETUP_NONE,
                        G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:n-workers:
   *
   * How many workers are alive and taking calls.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_N_WORKERS] =
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
  dc_detached_code_props[PROP_IDLE_TIMEOUT] =
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
  dc_detached_code_props[PROP_MAX_WORKER_CALLS] =
    g_param_spec_uint ("max-worker-calls", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:call-timeout:
   *
   * Milliseconds a call may run, counted from when it starts running in
   * its worker: from its write to an idle worker, or, pipelined behind
   * another call, from that call's reply (time waiting does not count);
   * 0 is no limit.  Read as each call starts.  A call past
   * its limit fails with %DC_DETACHED_CODE_ERROR_TIMED_OUT and its worker
   * is killed.  A chunk of a map ([method@DetachedCode.map_async]) may run
   * this long for each of its items.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_CALL_TIMEOUT] =
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
  dc_detached_code_props[PROP_KILL_ON_CANCEL] =
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
  dc_detached_code_props[PROP_PIPELINE_DEPTH] =
    g_param_spec_uint ("pipeline-depth", NULL, NULL, 1, G_MAXUINT16, 1,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:n-busy:
   *
   * How many workers are running calls.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_N_BUSY] =
    g_param_spec_uint ("n-busy", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:n-queued:
   *
   * How many calls wait for a worker.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_N_QUEUED] =
    g_param_spec_uint ("n-queued", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:memfd-threshold:
   *
   * Messages of at least this many bytes travel as a sealed memfd that the
   * receiver maps read-only, rather than through the socket; 0 (the
   * default) never does that.  Socket stream only; invisible but for
   * speed.  Read for each message: calls sent from now on, and replies of
   * workers forked from now on.
   *
   * Each such message costs a new memfd, filled, sealed, mapped and
   * unmapped; on the machines measured so far that is slower than the
   * socket for every size (see `tests/bench/bench-bandwidth`), so measure
   * before turning it on.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_MEMFD_THRESHOLD] =
    g_param_spec_uint ("memfd-threshold", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:fork-server:
   *
   * Whether workers are made by a worker template rather than forked from
   * this process.  The template is forked once, by
   * [method@DetachedCode.start] (or the first call, or
   * [method@DetachedCode.restart]), and does nothing but clone workers, so
   * every worker starts as a copy of this process as it was then, with
   * only the thread that made it.  Locks that other threads of this
   * process take later (GLib's, the application's) can no longer be caught
   * held in a worker forked after a crash, a time limit, recycling or
   * growth; and the cost of a new worker no longer grows with this
   * process.  Workers are still children of this process: their pids,
   * exit statuses and signals are as without the template, which is not a
   * worker and is never counted or reported as one.
   *
   * Settings made later (environment, directory, set-up flags) still
   * apply to every worker made after them; a new worker init function
   * makes a new template.  May change only while no worker runs.  See
   * [Fork safety](fork-safety.html).
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_FORK_SERVER] =
    g_param_spec_boolean ("fork-server", NULL, NULL, TRUE,
                          G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:max-queued:
   *
   * How many calls may wait for a worker; 0 (the default) is no bound.
   *
   * A call that finds this many calls waiting, and no worker free to take
   * one, fails with %DC_DETACHED_CODE_ERROR_BUSY.  It fails through its
   * callback, like any call, never before the call function returns; the
   * pool and the calls it holds go on.  Only calls waiting in the queue
   * count, not those already sent to a worker (see
   * [property@DetachedCode:pipeline-depth]).  Calls made from other threads
   * are counted when they reach the pool's context.
   *
   * Lowering the bound refuses new calls until the queue is shorter than
   * it, and drops none of those already waiting; nor does it refuse a
   * call that goes back to the queue because its worker died before
   * running it.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_MAX_QUEUED] =
    g_param_spec_uint ("max-queued", NULL, NULL, 0, G_MAXUINT, 0,
                       G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:sandbox:
   *
   * What each worker may not do once its init function has run (which
   * may still open files, load data, start threads): the worker confines
   * itself before its first call.  A worker that makes a forbidden system
   * call is stopped, its call fails with
   * [error@DetachedCodeError.SANDBOX] naming the call, and the pool goes
   * on with a new worker.  Every sandboxed worker also gets
   * `PR_SET_NO_NEW_PRIVS`.  May change only while no worker runs.  See
   * [Sandbox](sandbox.html) for what each flag blocks and what no flag
   * can.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_SANDBOX] =
    g_param_spec_flags ("sandbox", NULL, NULL, DC_TYPE_SANDBOX_FLAGS, DC_SANDBOX_NONE,
                        G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  /**
   * DcDetachedCode:memory-limit:
   *
   * The address space (`RLIMIT_AS`) each worker may map, in bytes; 0 for
   * no limit.  Set after the init function, with the sandbox.  A worker
   * inherits the parent's mappings, so a limit at or below what this
   * process maps makes [method@DetachedCode.start] fail with
   * [error@DetachedCodeError.SANDBOX].  May change only while no worker
   * runs.
   *
   * Since: 1.0
   */
  dc_detached_code_props[PROP_MEMORY_LIMIT] =
    g_param_spec_uint64 ("memory-limit", NULL, NULL, 0, G_MAXUINT64, 0,
                         G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY);

  g_object_class_install_properties (object_class, N_PROPS, dc_detached_code_props);

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
  self->pool = dc_pool_new (&pool_callbacks, self);
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
  dc_launcher_set_code (code_launcher (self), func, NULL, user_data, user_data_free);
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
  dc_launcher_set_code (code_launcher (self), NULL, func, user_data, user_data_free);
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
 *   %DC_DETACHED_CODE_ERROR_SPAWN @error otherwise, or, when the
 *   [property@DetachedCode:sandbox] cannot be set up, a
 *   %DC_DETACHED_CODE_ERROR_SANDBOX error (`G_IO_ERROR_NOT_SUPPORTED` when
 *   %DC_SANDBOX_FILESYSTEM is asked of a kernel without Landlock)
 *
 * Since: 1.0
 */
gboolean
dc_detached_code_start (DcDetachedCode  *self,
                        GError         **error)
{
  DcContext *ctx;
  gboolean ok;

  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  ctx = dc_pool_get_context (self->pool);
  if (!dc_context_in_owner_process (ctx))
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                   _("This pool belongs to process %d"), (int) ctx->owner_pid);
      return FALSE;
    }
  if (!dc_launcher_has_code (code_launcher (self)))
    {
      set_no_func_error (error);
      return FALSE;
    }
  if (!dc_context_enter_or_warn (ctx, G_STRFUNC))
    {
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                           _("The pool's main context is running in another thread"));
      return FALSE;
    }
  ok = dc_pool_start (self->pool, error);
  dc_context_leave (ctx);

  return ok;
}

/* Whether this pool can take calls (or maps) here; if not, @task fails
 * with why. */
static gboolean
pool_takes_calls (DcDetachedCode *self,
                  GTask          *task)
{
  DcContext *ctx = dc_pool_get_context (self->pool);
  GError *error = NULL;

  if (!dc_context_in_owner_process (ctx))
    {
      g_task_return_new_error (task, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SHUTDOWN,
                               _("This pool belongs to process %d"), (int) ctx->owner_pid);
      return FALSE;
    }
  if (!dc_launcher_has_code (code_launcher (self)))
    {
      set_no_func_error (&error);
      g_task_return_error (task, error);
      return FALSE;
    }
  return TRUE;
}

/* The call's own copy of @fd_list; NULL with a MARSHAL @error. */
static GUnixFDList *
copy_fd_list (GUnixFDList  *fd_list,
              GError      **error)
{
  g_autoptr(GUnixFDList) copy = g_unix_fd_list_new ();
  g_autoptr(GError) local_error = NULL;
  gint i, n;
  const gint *fds = g_unix_fd_list_peek_fds (fd_list, &n);

  for (i = 0; i < n; i++)
    if (g_unix_fd_list_append (copy, fds[i], &local_error) < 0)
      {
        g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                     _("Cannot copy the call’s descriptors: %s"), local_error->message);
        return NULL;
      }
  return g_steal_pointer (&copy);
}

/* GLib starts its worker thread ("gmain") when the GTask type is
 * registered: GLib 2.74 attaches its task pool's manager source to the
 * worker context then.  A pool's first call may make the process's first
 * task; its worker template is forked before that, from a process that
 * may still have one thread, and not a moment after a thread was born
 * (one that holds an allocator's lock at the fork would hand it, held, to
 * every worker).  Once the type exists this costs one atomic read. */
static void
template_before_first_task (DcDetachedCode *self)
{
  static gint task_type_seen;
  DcContext *ctx = dc_pool_get_context (self->pool);

  if (g_atomic_int_get (&task_type_seen))
    return;
  if (g_type_from_name ("GTask") != 0)
    {
      g_atomic_int_set (&task_type_seen, TRUE);
      return;
    }
  if (!dc_context_in_owner_process (ctx) || !dc_launcher_has_code (code_launcher (self)))
    return;
  if (dc_context_enter (ctx))
    {
      /* A failure is the call's to report, as it dispatches. */
      dc_launcher_prepare (code_launcher (self), NULL);
      dc_context_leave (ctx);
    }
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
 * Runs the code in a worker with @args.  The call goes to an idle worker,
 * or to a newly forked one while the pool may grow; otherwise it waits in
 * the queue.
 *
 * A #GVariant is immutable, so the pool may keep a reference to @args
 * rather than a copy, and the caller may drop its own at once.  Arguments
 * under 64 KiB are serialized before this function returns (a waiting call
 * then holds that copy alone).  Larger ones are never copied into a
 * message: a waiting call holds a reference to @args, and their bytes are
 * written to the worker straight from the value's serialized data (a value
 * built from its children with g_variant_new() is serialized in place, once,
 * when it is first written; a tuple of one such member, `"(ay)"` say, is
 * written from that member).  The reference goes when the call completes,
 * or, for a call completed while its bytes were being written, once they
 * are written or the worker is gone.  Until then the bytes behind a value
 * made with g_variant_new_from_data() or g_variant_new_from_bytes() belong
 * to it: a caller that changes them changes what the worker receives,
 * which, as any change to a #GVariant's data, is the caller's bug.  A value too large for a message fails
 * the call with %DC_DETACHED_CODE_ERROR_MARSHAL all the same, checked here.
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
               DcProgress         *progress,
               GAsyncReadyCallback callback,
               gpointer            user_data,
               gpointer            source_tag)
{
  g_autoptr(GTask) task = NULL;
  g_autoptr(GVariant) owned_args = NULL;
  g_autoptr(GError) error = NULL;
  DcLauncher *l = code_launcher (self);
  GBytes *payload;
  GVariant *body = NULL;
  g_autoptr(GUnixFDList) own_fds = NULL;
  DcCall *call;

  owned_args = args != NULL ? g_variant_ref_sink (args)
                            : g_variant_ref_sink (g_variant_new ("()"));

  template_before_first_task (self);
  /* With progress, the task completes through the progress, which
   * delivers the values that wait before it runs @callback. */
  if (progress != NULL)
    task = g_task_new (self, cancellable, dc_progress_task_done, dc_progress_ref (progress));
  else
    task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, source_tag);
  g_task_set_priority (task, io_priority);

  if (!pool_takes_calls (self, task))
    return;

  if (fd_list != NULL && g_unix_fd_list_get_length (fd_list) > 0)
    {
      const char *why = NULL;

      if (!dc_launcher_takes_fds (l))
        why = _("This pool's code takes no descriptors: create it with dc_detached_code_new_with_fds()");
      else if (!dc_launcher_is_socket (l))
        why = _("Descriptors travel on the socket stream only");
      else if (g_unix_fd_list_get_length (fd_list) >= DC_WIRE_MAX_FDS)
        why = _("Too many descriptors for one call");
      if (why != NULL)
        {
          g_task_return_new_error (task, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                                   "%s", why);
          return;
        }

      /* Copied now, while a failure can still be told: the frame that
       * carries them may be written after the call completed (cancelled
       * while it was being written), and its header counts them. */
      own_fds = copy_fd_list (fd_list, &error);
      if (own_fds == NULL)
        {
          g_task_return_error (task, g_steal_pointer (&error));
          return;
        }
    }

  /* The marshaller may not change while calls wait, so the one in force
   * now is the one the workers use.  Large arguments are not copied: the
   * call keeps a reference and its frame is written from their bytes;
   * their size is checked now all the same. */
  payload = dc_wire_marshal_split (code_settings (self)->proc.marshaller, owned_args, &body,
                                   &error);
  if (payload == NULL)
    {
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }

  call = dc_call_new (g_steal_pointer (&task), payload, own_fds, io_priority);
  if (progress != NULL)
    call->progress = dc_progress_ref (progress);
  if (body != NULL)
    dc_call_set_body (call, body);
  dc_pool_call (self->pool, call);
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

  call_internal (self, args, NULL, io_priority, cancellable, NULL, callback, user_data,
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
 * The descriptors in @fd_list are copied before this function returns: the
 * caller may then close them, and change or drop the list.  A call whose
 * descriptors cannot be copied (the process has no free descriptor number,
 * or one of them is not open) fails with
 * %DC_DETACHED_CODE_ERROR_MARSHAL.
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

  call_internal (self, args, fd_list, io_priority, cancellable, NULL, callback, user_data,
                 dc_detached_code_call_with_unix_fd_list_async);
}

/**
 * dc_detached_code_call_with_progress_async:
 * @self: a pool
 * @args: (nullable): the arguments for the code; %NULL means an empty
 *   tuple.  A floating reference is sunk.
 * @io_priority: the call's place in the queue
 * @cancellable: (nullable): a #GCancellable
 * @progress_func: (scope notified) (closure progress_data) (destroy progress_data_free):
 *   receives each progress value the code sends
 * @progress_data: data for @progress_func
 * @progress_data_free: (nullable): frees @progress_data once @progress_func
 *   will not run again
 * @callback: (scope async) (closure user_data): called when the call
 *   completes
 * @user_data: data for @callback
 *
 * Like [method@DetachedCode.call_async], for code that reports its
 * progress: each value the code passes to [func@worker_report_progress]
 * while it runs reaches @progress_func.  Finish the call with
 * [method@DetachedCode.call_finish].
 *
 * The values arrive in the thread-default main context of the calling
 * thread, as the callback does, in the order the code sent them; all of
 * them before @callback, none after it.  Once @cancellable is cancelled,
 * no more arrive.  @progress_data_free runs once, in that context, after
 * the last use of @progress_data (after @callback, unless a nested main
 * loop in @progress_func completed the call; then when @progress_func
 * returns).
 *
 * A worker writes each value as it is reported: a call that reports often
 * costs a message each time.  Values wait in memory until the caller's
 * context delivers them, each about 240 bytes more than its serialized
 * size.  Should that context fall behind a worker that reports faster than
 * @progress_func takes them, the pool stops reading that worker once 1024
 * values (or 4 MiB of them) wait, until the caller has taken all but a
 * quarter of them: the worker then waits in its report, and the parent's
 * memory stays bounded (a little over 1024 values, one read's worth).
 *
 * A progress value the [property@DetachedCode:marshaller] cannot carry
 * fails the call with %DC_DETACHED_CODE_ERROR_MARSHAL: the code runs to
 * its end, its result is dropped, and no later value is sent.
 *
 * Since: 1.0
 */
void
dc_detached_code_call_with_progress_async (DcDetachedCode     *self,
                                           GVariant           *args,
                                           int                 io_priority,
                                           GCancellable       *cancellable,
                                           DcProgressFunc      progress_func,
                                           gpointer            progress_data,
                                           GDestroyNotify      progress_data_free,
                                           GAsyncReadyCallback callback,
                                           gpointer            user_data)
{
  g_autoptr(DcProgress) progress = NULL;

  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  g_return_if_fail (progress_func != NULL);

  progress = dc_progress_new (self, cancellable, progress_func, progress_data,
                              progress_data_free, callback, user_data);
  call_internal (self, args, NULL, io_priority, cancellable, progress, callback, user_data,
                 dc_detached_code_call_with_progress_async);
}

/* Invokes @closure with an object and an object or a variant. */
static void
closure_invoke_pair (GClosure *closure,
                     GType     first_type,
                     gpointer  first,
                     GType     second_type,
                     gpointer  second)
{
  GValue params[2] = { G_VALUE_INIT, G_VALUE_INIT };

  g_value_init (&params[0], first_type);
  g_value_set_object (&params[0], first);
  g_value_init (&params[1], second_type);
  if (second_type == G_TYPE_VARIANT)
    g_value_set_variant (&params[1], second);
  else
    g_value_set_object (&params[1], second);
  g_closure_invoke (closure, NULL, G_N_ELEMENTS (params), params, NULL);
  g_value_unset (&params[0]);
  g_value_unset (&params[1]);
}

static void
progress_closure_cb (DcDetachedCode *self,
                     GVariant       *progress,
                     gpointer        data)
{
  closure_invoke_pair (data, DC_TYPE_DETACHED_CODE, self, G_TYPE_VARIANT, progress);
}

static void
ready_closure_cb (GObject      *source,
                  GAsyncResult *result,
                  gpointer      data)
{
  closure_invoke_pair (data, G_TYPE_OBJECT, source, G_TYPE_ASYNC_RESULT, result);
  g_closure_unref (data);
}

/* Ours until it is unreffed; a C closure made without a marshaller gets
 * the generic one. */
static GClosure *
closure_take (GClosure *closure)
{
  g_closure_ref (closure);
  g_closure_sink (closure);
  if (G_CLOSURE_NEEDS_MARSHAL (closure))
    g_closure_set_marshal (closure, g_cclosure_marshal_generic);
  return closure;
}

/**
 * dc_detached_code_call_with_progress_async_with_closures: (rename-to dc_detached_code_call_with_progress_async)
 * @self: a pool
 * @args: (nullable): the arguments for the code; %NULL means an empty
 *   tuple.  A floating reference is sunk.
 * @io_priority: the call's place in the queue
 * @cancellable: (nullable): a #GCancellable
 * @progress_closure: invoked with the pool and each progress value, as a
 *   [callback@ProgressFunc] is
 * @ready_closure: (nullable): invoked with the pool and the
 *   [iface@Gio.AsyncResult] when the call completes, as a
 *   [callback@Gio.AsyncReadyCallback] is
 *
 * [method@DetachedCode.call_with_progress_async] with closures in place of
 * its two callbacks, for language bindings, which cannot all pass two
 * callbacks with data of their own.  It keeps @progress_closure until the
 * call has completed, and @ready_closure until it has been invoked.
 *
 * Since: 1.0
 */
void
dc_detached_code_call_with_progress_async_with_closures (DcDetachedCode *self,
                                                         GVariant       *args,
                                                         int             io_priority,
                                                         GCancellable   *cancellable,
                                                         GClosure       *progress_closure,
                                                         GClosure       *ready_closure)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));
  g_return_if_fail (progress_closure != NULL);

  dc_detached_code_call_with_progress_async (self, args, io_priority, cancellable,
                                             progress_closure_cb, closure_take (progress_closure),
                                             (GDestroyNotify) g_closure_unref,
                                             ready_closure != NULL ? ready_closure_cb : NULL,
                                             ready_closure != NULL ? closure_take (ready_closure) : NULL);
}

/**
 * dc_worker_report_progress:
 * @progress: a progress value; a floating reference is sunk
 *
 * Sends @progress to the caller of the call whose code runs now, in this
 * worker: call it from a [callback@CodeFunc] (or [callback@CodeFdFunc]),
 * in the thread that runs it.  The value reaches the progress function of
 * [method@DetachedCode.call_with_progress_async] while the code goes on.
 *
 * It does nothing for a call made without a progress function (so
 * reporting costs nothing there), outside a call, in another thread of
 * the worker, and in the parent.
 *
 * Since: 1.0
 */
void
dc_worker_report_progress (GVariant *progress)
{
  g_autoptr(GVariant) value = NULL;

  g_return_if_fail (progress != NULL);

  value = g_variant_ref_sink (progress);
  dc_worker_send_progress (value);
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
 * Finishes a call started with [method@DetachedCode.call_async] or
 * [method@DetachedCode.call_with_progress_async].
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
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == dc_detached_code_call_async ||
                        g_task_get_source_tag (G_TASK (result)) == dc_detached_code_call_with_progress_async,
                        NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return g_task_propagate_pointer (G_TASK (result), error);
}

/**
 * dc_detached_code_map_async:
 * @self: a pool
 * @items: an array: each element is the arguments of one run of the code.
 *   A floating reference is sunk.
 * @chunk_size: how many items travel to a worker in one message; 0 lets
 *   the pool choose (about four chunks per worker, as Python's
 *   `multiprocessing.Pool.map` does)
 * @io_priority: the chunks' place in the queue
 * @cancellable: (nullable): a #GCancellable
 * @callback: (scope async) (closure user_data): called when the map
 *   completes
 * @user_data: data for @callback
 *
 * Runs the code once for each element of @items, in chunks of @chunk_size
 * items.  Each chunk is one message each way and goes to the workers as a
 * call does: queued by @io_priority, spread over the workers, bounded by
 * [property@DetachedCode:max-queued] (a map whose chunks would make the
 * queue longer fails with %DC_DETACHED_CODE_ERROR_BUSY).  A worker runs the
 * items of a chunk in order.  Each item is passed to the code as a call's
 * arguments would be, without a copy of its bytes.
 *
 * [method@DetachedCode.map_finish] returns the results as an `av`, one
 * per item, in item order.  An empty array completes with an empty `av`.
 *
 * Failures:
 *
 * - the map fails with the failure of the lowest-index item that failed
 *   (an error its code set, with its domain, code and message; or
 *   %DC_DETACHED_CODE_ERROR_FAILED, or %DC_DETACHED_CODE_ERROR_MARSHAL
 *   for a result the marshaller cannot carry), as Python's `Pool.map`
 *   raises the first exception.  A worker stops a chunk at its first
 *   failing item; the map waits for the chunks before it, and drops the
 *   chunks after it (queued ones are never sent; the results of those
 *   already running are ignored);
 * - a worker that dies during a chunk fails the map with
 *   %DC_DETACHED_CODE_ERROR_WORKER_DIED, as if the chunk's first item had
 *   failed;
 * - [property@DetachedCode:call-timeout] applies to each chunk as a
 *   whole, multiplied by its number of items: a chunk of 100 items may
 *   run for 100 times the limit;
 * - cancelling @cancellable completes the map at once with
 *   %G_IO_ERROR_CANCELLED: queued chunks are never sent, and running
 *   ones are treated as cancelled calls (see
 *   [property@DetachedCode:kill-on-cancel]).
 *
 * Bad input fails the map alone: @items that is not an array fails with
 * %G_IO_ERROR_INVALID_ARGUMENT; items the
 * [property@DetachedCode:marshaller] cannot carry, items holding handles
 * (`h`), and any map on a pool made with [ctor@DetachedCode.new_with_fds]
 * (a chunk carries no descriptors) fail with
 * %DC_DETACHED_CODE_ERROR_MARSHAL.
 *
 * @callback runs in the thread-default main context of the calling thread,
 * never before this function returns.  This function may be called from
 * any thread, as [method@DetachedCode.call_async].
 *
 * Since: 1.0
 */
void
dc_detached_code_map_async (DcDetachedCode     *self,
                            GVariant           *items,
                            guint               chunk_size,
                            int                 io_priority,
                            GCancellable       *cancellable,
                            GAsyncReadyCallback callback,
                            gpointer            user_data)
{
  g_autoptr(GVariant) owned = NULL;
  GTask *task;

  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (items != NULL);
  g_return_if_fail (cancellable == NULL || G_IS_CANCELLABLE (cancellable));

  owned = g_variant_ref_sink (items);
  template_before_first_task (self);
  task = g_task_new (self, cancellable, callback, user_data);
  g_task_set_source_tag (task, dc_detached_code_map_async);
  g_task_set_priority (task, io_priority);

  if (!pool_takes_calls (self, task))
    {
      g_object_unref (task);
      return;
    }
  dc_map_run (self->pool, task, g_steal_pointer (&owned), chunk_size);
}

/**
 * dc_detached_code_map_finish:
 * @self: a pool
 * @result: the result given to the callback
 * @error: return location for an error
 *
 * Finishes a map started with [method@DetachedCode.map_async].
 *
 * Returns: (transfer full): an `av` holding the result of each item, in
 *   item order, or %NULL with @error set
 *
 * Since: 1.0
 */
GVariant *
dc_detached_code_map_finish (DcDetachedCode  *self,
                             GAsyncResult    *result,
                             GError         **error)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), NULL);
  g_return_val_if_fail (g_task_is_valid (result, self), NULL);
  g_return_val_if_fail (g_task_get_source_tag (G_TASK (result)) == dc_detached_code_map_async, NULL);
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
  DcContext *ctx;

  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  ctx = dc_pool_get_context (self->pool);
  if (!dc_context_enter_or_warn (ctx, G_STRFUNC))
    return;
  dc_pool_shutdown (self->pool);
  dc_context_leave (ctx);
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

  return dc_pool_get_n_workers (self->pool);
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
  DcContext *ctx;
  GPid *pids;

  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), NULL);

  if (n_pids != NULL)
    *n_pids = 0;
  ctx = dc_pool_get_context (self->pool);
  if (!dc_context_enter_or_warn (ctx, G_STRFUNC))
    return NULL;
  pids = dc_pool_get_worker_pids (self->pool, n_pids);
  dc_context_leave (ctx);
  return pids;
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
  DcContext *ctx;

  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  ctx = dc_pool_get_context (self->pool);
  if (!dc_context_enter_or_warn (ctx, G_STRFUNC))
    return;
  dc_pool_restart (self->pool);
  dc_context_leave (ctx);
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

  return dc_pool_get_n_busy (self->pool);
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

  return dc_pool_get_n_queued (self->pool);
}

