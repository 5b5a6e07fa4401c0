/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* What the pool's test programs share: waits, a worker function, results. */

#pragma once

#include <gio/gio.h>

#include <detached-code.h>

G_BEGIN_DECLS

/* ---- waiting, with generous deadlines ---- */

void     wait_for_flag       (gboolean   *flag,
                              const char *what);
void     wait_until          (gboolean  (*check) (gpointer),
                              gpointer    data,
                              const char *what);
gboolean process_gone        (gpointer    data);
void     assert_process_gone (GPid        pid);
/* The children of this process, zombies included. */
GArray  *list_children       (void);
/* Waits until this process has no child left, reaped or not. */
void     assert_no_children  (void);

/* ---- descriptors of the calling process ---- */

GVariant *list_fds   (void);
char     *fd_target  (int fd);
int       highest_fd (void);

/* ---- the code the workers run ---- */

extern int init_runs;      /* set in each worker by its init function */
extern int parent_state;   /* changed in the parent, seen by workers forked after */

GVariant *test_code (GVariant   *args,
                     gpointer    user_data,
                     GError    **error);
GVariant *cmd       (const char *command,
                     GVariant   *arg);

/* ---- collecting results ---- */

typedef struct
{
  GVariant *value;
  GError   *error;
  gboolean  done;
  guint     order;        /* completion rank */
  guint     n_workers_at_callback;
  guint     times_called;
} Result;

void            result_clear (Result         *r);
void            result_cb    (GObject        *source,
                              GAsyncResult   *res,
                              gpointer        user_data);
void            call         (DcDetachedCode *code,
                              GVariant       *args,
                              Result         *r);
void            call_sync    (DcDetachedCode *code,
                              GVariant       *args,
                              Result         *r);
GPid            call_pid     (DcDetachedCode *code);
DcDetachedCode *new_pool     (guint           min_workers,
                              guint           max_workers);
void            destroy_pool (DcDetachedCode *code);
gboolean        cancel_cb    (gpointer        cancellable);

/* A log writer that lets the warning about forking from a threaded
 * process through (GLib 2.74 starts a thread of its own with the first
 * GTask, so every pool without the fork server logs it once) and writes
 * everything else as the default writer does.  The library logs
 * structured messages, which g_test_expect_message() does not see in
 * GLib 2.74. */
GLogWriterOutput tolerate_threads_warning (GLogLevelFlags   log_level,
                                           const GLogField *fields,
                                           gsize            n_fields,
                                           gpointer         user_data);

G_END_DECLS
