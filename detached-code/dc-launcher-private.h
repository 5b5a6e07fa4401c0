/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* How a worker is made: its code, environment, working directory and
 * standard descriptors, the channel to it, and the clone itself, from the
 * worker template (the fork server) or from the parent. */

#pragma once

#include "dc-channel-private.h"
#include "dc-detached-code.h"

G_BEGIN_DECLS

typedef struct _DcLauncher DcLauncher;

/* Per spawn: what the pool's settings say now. */
typedef struct
{
  DcMarshaller  marshaller;
  gboolean      exit_on_die;
  guint         memfd_threshold;
} DcLaunchOptions;

typedef struct
{
  GPid          pid;
  int           pidfd;     /* reaps it; owned by the caller */
  DcChannel    *channel;   /* the parent's end */
  int           stderr_fd; /* with DC_SETUP_CAPTURE_STDERR, the read end of its
                            * stderr, non-blocking, owned by the caller; or -1 */
} DcLaunched;

/* The template's death is noticed on @context. */
DcLauncher   *dc_launcher_new              (GMainContext      *context);
/* Closes the template; @reap_now: reap it before returning (its context
 * may never run again). */
void          dc_launcher_free             (DcLauncher        *launcher,
                                            gboolean           reap_now);

/* Takes @user_data_free, called when the launcher is freed. */
void          dc_launcher_set_code         (DcLauncher        *launcher,
                                            DcCodeFunc         func,
                                            DcCodeFdFunc       fd_func,
                                            gpointer           user_data,
                                            GDestroyNotify     user_data_free);
gboolean      dc_launcher_has_code         (DcLauncher        *launcher);
gboolean      dc_launcher_takes_fds        (DcLauncher        *launcher);

/* Frees the previous init data. */
void          dc_launcher_set_init_func    (DcLauncher        *launcher,
                                            DcWorkerInitFunc   func,
                                            gpointer           user_data,
                                            GDestroyNotify     user_data_free);
void          dc_launcher_setenv           (DcLauncher        *launcher,
                                            const char        *variable,
                                            const char        *value,
                                            gboolean           overwrite);
void          dc_launcher_unsetenv         (DcLauncher        *launcher,
                                            const char        *variable);
void          dc_launcher_set_cwd          (DcLauncher        *launcher,
                                            const char        *cwd);
const char   *dc_launcher_get_cwd          (DcLauncher        *launcher);
void          dc_launcher_set_setup_flags  (DcLauncher        *launcher,
                                            DcSetupFlags       flags);
DcSetupFlags  dc_launcher_get_setup_flags  (DcLauncher        *launcher);
void          dc_launcher_set_stream       (DcLauncher        *launcher,
                                            DcStream           stream);
DcStream      dc_launcher_get_stream       (DcLauncher        *launcher);
gboolean      dc_launcher_is_socket        (DcLauncher        *launcher);
void          dc_launcher_set_fork_server  (DcLauncher        *launcher,
                                            gboolean           fork_server);
gboolean      dc_launcher_get_fork_server  (DcLauncher        *launcher);
void          dc_launcher_set_sandbox      (DcLauncher        *launcher,
                                            DcSandboxFlags     flags);
DcSandboxFlags dc_launcher_get_sandbox     (DcLauncher        *launcher);
void          dc_launcher_add_sandbox_path (DcLauncher        *launcher,
                                            const char        *path,
                                            DcSandboxAccess    access);
void          dc_launcher_set_memory_limit (DcLauncher        *launcher,
                                            guint64            memory_limit);
guint64       dc_launcher_get_memory_limit (DcLauncher        *launcher);

/* Checks what would make every spawn fail (a missing directory); with
 * the fork server, makes the template now if there is none. */
gboolean      dc_launcher_prepare          (DcLauncher        *launcher,
                                            GError           **error);
/* Lets the template go: the next worker comes from a new one, made from
 * the parent as it is then.  @reap_now as for dc_launcher_free(). */
void          dc_launcher_close_template   (DcLauncher        *launcher,
                                            gboolean           reap_now);
/* The template's pid, or 0. */
GPid          dc_launcher_get_template_pid (DcLauncher        *launcher);

/* Makes a worker.  FALSE with a SPAWN @error when it cannot.  Runs on the
 * pool's context. */
gboolean      dc_launcher_spawn            (DcLauncher            *launcher,
                                            const DcLaunchOptions *options,
                                            DcLaunched            *launched,
                                            GError               **error);
/* Makes up to @n workers into @launched; returns how many.  Fewer than @n
 * with a SPAWN @error.  With the template, their requests overlap. */
guint         dc_launcher_spawn_many       (DcLauncher            *launcher,
                                            const DcLaunchOptions *options,
                                            DcLaunched            *launched,
                                            guint                  n,
                                            GError               **error);

G_END_DECLS
