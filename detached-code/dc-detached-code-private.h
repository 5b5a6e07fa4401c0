/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* What the two files of the public type share. */

#pragma once

#include "dc-detached-code.h"
#include "dc-pool-private.h"

G_BEGIN_DECLS

struct _DcDetachedCode
{
  GObject  parent_instance;
  DcPool  *pool;
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
  PROP_FORK_SERVER,
  PROP_MAX_QUEUED,
  PROP_SANDBOX,
  PROP_MEMORY_LIMIT,
  N_PROPS
};

extern GParamSpec *dc_detached_code_props[N_PROPS];

static inline DcPoolSettings *
code_settings (DcDetachedCode *self)
{
  return dc_pool_get_settings (self->pool);
}

static inline DcLauncher *
code_launcher (DcDetachedCode *self)
{
  return dc_pool_get_launcher (self->pool);
}

/* The guard of every entry point but the calls: see dc-context.c. */
static inline gboolean
code_enter (DcDetachedCode *self,
            const char     *function)
{
  return dc_context_enter_or_warn (dc_pool_get_context (self->pool), function);
}

static inline void
code_leave (DcDetachedCode *self)
{
  dc_context_leave (dc_pool_get_context (self->pool));
}

G_END_DECLS
