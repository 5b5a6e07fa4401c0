/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* A map: many items cut into chunks, each chunk one call of the pool
 * (queued, dispatched, timed, cancelled and failed as calls are), and the
 * results joined in item order. */

#pragma once

#include "dc-pool-private.h"

G_BEGIN_DECLS

/* Runs the pool's code on each element of @items (transfer full) in
 * chunks of @chunk_size (0: the pool's choice), and completes @task
 * (transfer full) with the "av" of the results, or the first failure.
 * The chunks' tasks take @task's source object, cancellable, priority and
 * context.  Any thread. */
void  dc_map_run  (DcPool   *pool,
                   GTask    *task,
                   GVariant *items,
                   guint     chunk_size);

/* The most bytes a map's joined results may take (at most, and by
 * default, G_MAXUINT); a map whose results would take more fails with
 * MARSHAL.  For tests. */
void  dc_map_set_max_joined  (gsize max_bytes);

G_END_DECLS
