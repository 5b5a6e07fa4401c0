/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Processes the pool makes: cloned with a pidfd and no exit signal, so
 * that nobody but the pool reaps them (not GLib's child watches, not a
 * host's waitpid (-1), not the kernel when the host ignores SIGCHLD), and
 * reaped through that pidfd. */

#pragma once

#include <glib.h>
#include <sys/types.h>

G_BEGIN_DECLS

/* Like fork(), without fork()'s handlers: 0 in the child, the pid in the
 * parent (with its pidfd in *@pidfd, close-on-exec), -1 with errno.
 * @sibling (CLONE_PARENT): the child is the caller's parent's child and
 * inherits the caller's exit signal.  If @pid_slot is not NULL, the
 * child's pid is in it by the time the child exists (the kernel writes it
 * before clone returns, where it can), so a caller that dies at once
 * cannot lose it.  Async-signal-safe. */
pid_t     dc_process_clone        (gboolean  sibling,
                                   int      *pidfd,
                                   gint32   *pid_slot);

/* Kills and reaps @pid if it is a child of this process (of any exit
 * signal), and does nothing if it is not.  For a child whose pidfd never
 * arrived: its pid cannot have been reused, as nobody reaped it. */
void      dc_process_reap_orphan  (pid_t     pid);

/* getpid(), cached: asked of the kernel once per process.  Right in the
 * children of fork() and of dc_process_clone(). */
pid_t     dc_process_get_self_pid (void);

/* Signals the process through its pidfd, or by @pid where the kernel (or
 * valgrind) refuses pidfd_send_signal(): the caller has not reaped it, so
 * @pid is still its own.  Async-signal-safe. */
int       dc_process_signal       (int       pidfd,
                                   pid_t     pid,
                                   int       signum);

/* A wait status for a process someone else reaped: not a clean exit. */
#define DC_PROCESS_STATUS_UNKNOWN (-1)

/* Reaps the process of @pidfd: TRUE with *@wait_status (as waitpid() gives
 * it) once it has exited; FALSE if it has not (and @block is FALSE).  A
 * process that cannot be waited for any more gets
 * DC_PROCESS_STATUS_UNKNOWN. */
gboolean  dc_process_reap         (int       pidfd,
                                   gboolean  block,
                                   int      *wait_status);

/* The threads of this process, from /proc; 0 if unknown. */
guint     dc_process_count_threads (void);

G_END_DECLS
