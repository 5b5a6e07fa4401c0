/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The public type's settings: the accessors of its properties, and how
 * workers are set up (environment, directory, init function).  Like every
 * entry point but the calls, each may only be called from the thread that
 * runs the pool's context. */

#include "config.h"

#include <string.h>

#include <glib/gi18n-lib.h>

#include "dc-detached-code-private.h"

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

  if (!code_enter (self, G_STRFUNC))
    return;
  dc_launcher_setenv (code_launcher (self), variable, value, overwrite);
  code_leave (self);
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

  if (!code_enter (self, G_STRFUNC))
    return;
  dc_launcher_unsetenv (code_launcher (self), variable);
  code_leave (self);
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

  if (!code_enter (self, G_STRFUNC))
    return;
  dc_launcher_set_cwd (code_launcher (self), cwd);
  code_leave (self);
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

  return dc_launcher_get_cwd (code_launcher (self));
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

  if (!code_enter (self, G_STRFUNC))
    {
      if (user_data_free != NULL)
        user_data_free (user_data);
      return;
    }
  dc_launcher_set_init_func (code_launcher (self), func, user_data, user_data_free);
  code_leave (self);
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

  return code_settings (self)->min_workers;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->min_workers != min_workers)
    {
      code_settings (self)->min_workers = min_workers;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_MIN_WORKERS]);
    }
  code_leave (self);
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

  return code_settings (self)->max_workers;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->max_workers != max_workers)
    {
      code_settings (self)->max_workers = max_workers;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_MAX_WORKERS]);
      /* More room: calls waiting may go now. */
      dc_pool_dispatch (self->pool);
    }
  code_leave (self);
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

  return dc_launcher_get_stream (code_launcher (self));
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (dc_pool_has_workers (self->pool))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: only while no worker runs", G_STRFUNC);
  else if (dc_launcher_get_stream (code_launcher (self)) != stream)
    {
      dc_launcher_set_stream (code_launcher (self), stream);
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_STREAM]);
    }
  code_leave (self);
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

  return code_settings (self)->proc.marshaller;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (dc_pool_has_workers (self->pool) || dc_pool_has_waiting (self->pool))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: only while no worker runs and no call waits", G_STRFUNC);
  else if (code_settings (self)->proc.marshaller != marshaller)
    {
      code_settings (self)->proc.marshaller = marshaller;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_MARSHALLER]);
    }
  code_leave (self);
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

  return code_settings (self)->exit_on_die;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  exit_on_die = !!exit_on_die;
  if (code_settings (self)->exit_on_die != exit_on_die)
    {
      code_settings (self)->exit_on_die = exit_on_die;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_EXIT_ON_DIE]);
    }
  code_leave (self);
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

  return dc_launcher_get_setup_flags (code_launcher (self));
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (dc_pool_has_workers (self->pool))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: only while no worker runs", G_STRFUNC);
  else if (dc_launcher_get_setup_flags (code_launcher (self)) != flags)
    {
      dc_launcher_set_setup_flags (code_launcher (self), flags);
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_SETUP_FLAGS]);
    }
  code_leave (self);
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

  return code_settings (self)->proc.idle_timeout;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->proc.idle_timeout != idle_timeout)
    {
      code_settings (self)->proc.idle_timeout = idle_timeout;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_IDLE_TIMEOUT]);
    }
  code_leave (self);
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

  return code_settings (self)->max_worker_calls;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->max_worker_calls != max_worker_calls)
    {
      code_settings (self)->max_worker_calls = max_worker_calls;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_MAX_WORKER_CALLS]);
    }
  code_leave (self);
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

  return code_settings (self)->proc.call_timeout;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->proc.call_timeout != call_timeout)
    {
      code_settings (self)->proc.call_timeout = call_timeout;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_CALL_TIMEOUT]);
    }
  code_leave (self);
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

  return code_settings (self)->pipeline_depth;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->pipeline_depth != pipeline_depth)
    {
      code_settings (self)->pipeline_depth = pipeline_depth;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_PIPELINE_DEPTH]);
      /* More room: calls waiting may go now. */
      dc_pool_dispatch (self->pool);
    }
  code_leave (self);
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

  return code_settings (self)->kill_on_cancel;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  kill_on_cancel = !!kill_on_cancel;
  if (code_settings (self)->kill_on_cancel != kill_on_cancel)
    {
      code_settings (self)->kill_on_cancel = kill_on_cancel;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_KILL_ON_CANCEL]);
    }
  code_leave (self);
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

  return code_settings (self)->proc.memfd_threshold;
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

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->proc.memfd_threshold != memfd_threshold)
    {
      code_settings (self)->proc.memfd_threshold = memfd_threshold;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_MEMFD_THRESHOLD]);
    }
  code_leave (self);
}

/**
 * dc_detached_code_get_max_queued:
 * @self: a pool
 *
 * Gets how many calls may wait for a worker.
 *
 * Returns: the value of [property@DetachedCode:max-queued]
 *
 * Since: 1.0
 */
guint
dc_detached_code_get_max_queued (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return code_settings (self)->max_queued;
}

/**
 * dc_detached_code_set_max_queued:
 * @self: a pool
 * @max_queued: calls that may wait for a worker, or 0 for no bound
 *
 * Sets [property@DetachedCode:max-queued].  Calls already waiting stay,
 * even beyond a lower bound.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_max_queued (DcDetachedCode *self,
                                 guint           max_queued)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (!code_enter (self, G_STRFUNC))
    return;
  if (code_settings (self)->max_queued != max_queued)
    {
      code_settings (self)->max_queued = max_queued;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_MAX_QUEUED]);
    }
  code_leave (self);
}

/**
 * dc_detached_code_get_fork_server:
 * @self: a pool
 *
 * Gets whether workers are made by a worker template.
 *
 * Returns: the value of [property@DetachedCode:fork-server]
 *
 * Since: 1.0
 */
gboolean
dc_detached_code_get_fork_server (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), TRUE);

  return dc_launcher_get_fork_server (code_launcher (self));
}

/**
 * dc_detached_code_set_fork_server:
 * @self: a pool
 * @fork_server: whether workers come from a worker template
 *
 * Sets [property@DetachedCode:fork-server].  Only while no worker runs.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_fork_server (DcDetachedCode *self,
                                  gboolean        fork_server)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (!code_enter (self, G_STRFUNC))
    return;
  fork_server = !!fork_server;
  if (dc_pool_has_workers (self->pool))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: only while no worker runs", G_STRFUNC);
  else if (dc_launcher_get_fork_server (code_launcher (self)) != fork_server)
    {
      dc_launcher_set_fork_server (code_launcher (self), fork_server);
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_FORK_SERVER]);
    }
  code_leave (self);
}

/**
 * dc_detached_code_get_sandbox:
 * @self: a pool
 *
 * Gets what workers may not do once their init function has run.
 *
 * Returns: the value of [property@DetachedCode:sandbox]
 *
 * Since: 1.0
 */
DcSandboxFlags
dc_detached_code_get_sandbox (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), DC_SANDBOX_NONE);

  return dc_launcher_get_sandbox (code_launcher (self));
}

/**
 * dc_detached_code_set_sandbox:
 * @self: a pool
 * @flags: what workers may not do
 *
 * Sets [property@DetachedCode:sandbox].  Only while no worker runs.  Flags
 * this version does not know make [method@DetachedCode.start] (or the first
 * call) fail with %DC_DETACHED_CODE_ERROR_SANDBOX.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_sandbox (DcDetachedCode *self,
                              DcSandboxFlags  flags)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (!code_enter (self, G_STRFUNC))
    return;
  if (dc_pool_has_workers (self->pool))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: only while no worker runs", G_STRFUNC);
  else if (dc_launcher_get_sandbox (code_launcher (self)) != flags)
    {
      dc_launcher_set_sandbox (code_launcher (self), flags);
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_SANDBOX]);
    }
  code_leave (self);
}

/**
 * dc_detached_code_add_sandbox_path:
 * @self: a pool
 * @path: (type filename): an absolute path to a file or a directory
 * @access: what workers may do there
 *
 * Lets workers under %DC_SANDBOX_FILESYSTEM reach @path (a directory
 * covers its whole tree).  Only while no worker runs.  A relative or
 * missing path makes [method@DetachedCode.start] (or the first call) fail
 * with %DC_DETACHED_CODE_ERROR_SANDBOX.
 *
 * Since: 1.0
 */
void
dc_detached_code_add_sandbox_path (DcDetachedCode  *self,
                                   const char      *path,
                                   DcSandboxAccess  access)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));
  g_return_if_fail (path != NULL);
  g_return_if_fail (access == DC_SANDBOX_ACCESS_READ || access == DC_SANDBOX_ACCESS_READ_WRITE);

  if (!code_enter (self, G_STRFUNC))
    return;
  if (dc_pool_has_workers (self->pool))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: only while no worker runs", G_STRFUNC);
  else
    dc_launcher_add_sandbox_path (code_launcher (self), path, access);
  code_leave (self);
}

/**
 * dc_detached_code_get_memory_limit:
 * @self: a pool
 *
 * Gets the address space limit of each worker.
 *
 * Returns: the value of [property@DetachedCode:memory-limit]
 *
 * Since: 1.0
 */
guint64
dc_detached_code_get_memory_limit (DcDetachedCode *self)
{
  g_return_val_if_fail (DC_IS_DETACHED_CODE (self), 0);

  return dc_launcher_get_memory_limit (code_launcher (self));
}

/**
 * dc_detached_code_set_memory_limit:
 * @self: a pool
 * @memory_limit: bytes, or 0 for none
 *
 * Sets [property@DetachedCode:memory-limit].  Only while no worker runs.
 *
 * Since: 1.0
 */
void
dc_detached_code_set_memory_limit (DcDetachedCode *self,
                                   guint64         memory_limit)
{
  g_return_if_fail (DC_IS_DETACHED_CODE (self));

  if (!code_enter (self, G_STRFUNC))
    return;
  if (dc_pool_has_workers (self->pool))
    g_log (G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "%s: only while no worker runs", G_STRFUNC);
  else if (dc_launcher_get_memory_limit (code_launcher (self)) != memory_limit)
    {
      dc_launcher_set_memory_limit (code_launcher (self), memory_limit);
      code_settings (self)->proc.memory_limit = memory_limit;
      g_object_notify_by_pspec (G_OBJECT (self), dc_detached_code_props[PROP_MEMORY_LIMIT]);
    }
  code_leave (self);
}
