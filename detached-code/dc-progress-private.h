/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The progress of one call: values read from its worker on the pool's
 * context wait here until the caller's context delivers them.
 *
 * The call's task completes through dc_progress_task_done(), which first
 * delivers what waits (unless the call was cancelled), then closes the
 * object, then runs the caller's callback: so every value comes before
 * the callback, and none after it.  Values are never delivered from inside
 * the read that brought them: an idle on the caller's context does it. */

#pragma once

#include "dc-detached-code.h"

G_BEGIN_DECLS

typedef struct _DcProgress DcProgress;

/* On the caller's thread: its thread-default context receives the values
 * and the callback. */
DcProgress *dc_progress_new       (DcDetachedCode      *self,
                                   GCancellable        *cancellable,
                                   DcProgressFunc       func,
                                   gpointer             data,
                                   GDestroyNotify       data_free,
                                   GAsyncReadyCallback  callback,
                                   gpointer             user_data);
/* Any thread. */
DcProgress *dc_progress_ref       (DcProgress          *progress);
void        dc_progress_unref     (DcProgress          *progress);

/* Values that may wait for the caller before the pool stops reading the
 * worker that sends them, and their serialized bytes. */
#define DC_PROGRESS_MAX_WAITING        1024
#define DC_PROGRESS_MAX_WAITING_BYTES  ((gsize) 4 << 20)

/* Any thread: queues @value (transfer full) for the caller, or drops it
 * once the call is cancelled or complete.  FALSE when the caller has
 * fallen behind: more than the bounds above wait. */
gboolean    dc_progress_push      (DcProgress          *progress,
                                   GVariant            *value);
/* Any thread: makes @resume ready (ready time 0) once a quarter of the
 * bounds or less wait, or the call is complete; at once if so now.
 * Keeps a reference to @resume until then. */
void        dc_progress_wake_when_drained (DcProgress  *progress,
                                           GSource     *resume);
/* The most values that waited for one caller in this process since the
 * last time it was asked (for tests). */
guint       dc_progress_take_peak_waiting (void);

/* The task's GAsyncReadyCallback; @data is a reference to the progress,
 * which it takes. */
void        dc_progress_task_done (GObject             *source,
                                   GAsyncResult        *result,
                                   gpointer             data);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (DcProgress, dc_progress_unref)

G_END_DECLS
