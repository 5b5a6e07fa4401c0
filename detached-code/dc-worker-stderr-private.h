/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* A worker's captured stderr, read in the parent (DC_SETUP_CAPTURE_STDERR):
 * never blocking, a flooding worker bounded per dispatch, each line copied
 * to our stderr as "dc-worker[PID]: " and clean text, the last ones kept
 * for the errors about the worker. */

#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _DcWorkerStderr DcWorkerStderr;

/* Takes @fd, the non-blocking read end of the worker's stderr pipe, and
 * reads it as it becomes readable on @context. */
DcWorkerStderr *dc_worker_stderr_new         (int             fd,
                                              GPid            pid,
                                              GMainContext   *context);
/* Reads what the worker wrote until now (bounded); closes the pipe if it
 * ended. */
void            dc_worker_stderr_read_now    (DcWorkerStderr *err);
/* Closes the pipe, after reading what is left in it when @drain; a last
 * line without its newline goes out as it is.  Closed already: nothing. */
void            dc_worker_stderr_close       (DcWorkerStderr *err,
                                              gboolean        drain);
/* The kept lines, and a line not ended yet, as clean text; NULL if there
 * are none. */
char           *dc_worker_stderr_last_output (DcWorkerStderr *err);
/* Closes the pipe without reading it first. */
void            dc_worker_stderr_free        (DcWorkerStderr *err);

G_END_DECLS
