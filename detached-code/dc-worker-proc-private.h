/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* One worker process as the parent sees it: its life as one state
 * machine, its channel I/O, its timers.  It knows nothing of the pool: it
 * reports through a callbacks struct.
 *
 *   RUNNING ──retire──▶ RETIRING ──idle──▶ CLOSED ──reaped──▶ EXITED
 *      │                    │                   │                 ▲
 *      │ broken, killed     │ broken, killed    │ killed          │
 *      ▼                    ▼                   ▼                 │
 *     LOST ◀────────────────┴───────────────────┘       reaped ───┘
 *                                                  (from LOST)
 *
 * RUNNING takes calls.  RETIRING takes none and finishes those it has;
 * then its channel is closed (CLOSED) and it leaves on its own; an idle
 * worker shut down goes to CLOSED at once.  LOST: its
 * channel broke or we killed it; the calls it still had fail once its
 * exit status is known.  EXITED: reaped; terminal.
 */

#pragma once

#include "dc-call-private.h"
#include "dc-channel-private.h"
#include "dc-detached-code.h"

G_BEGIN_DECLS

typedef enum
{
  DC_WORKER_PROC_RUNNING,
  DC_WORKER_PROC_RETIRING,
  DC_WORKER_PROC_CLOSED,
  DC_WORKER_PROC_LOST,
  DC_WORKER_PROC_EXITED,
} DcWorkerProcState;

/* What a worker reads of the pool's settings, as they are when it needs
 * them. */
typedef struct
{
  DcMarshaller  marshaller;
  guint         memfd_threshold;   /* bytes; 0 = never; read per call */
  guint         call_timeout;      /* ms; 0 = none; read as a call starts */
  guint         idle_timeout;      /* ms; 0 = never */
  guint64       memory_limit;      /* bytes; 0 = none; only while no worker runs */
} DcWorkerProcSettings;

typedef struct
{
  /* It stopped taking calls. */
  void (*left_service) (DcWorkerProc *proc,
                        gpointer      user_data);
  /* Replies came: it may have room.  Once per read, however many replies
   * it held, and before their callbacks. */
  void (*ready)        (DcWorkerProc *proc,
                        gpointer      user_data);
  /* It has been idle for idle-timeout. */
  void (*idle_timeout) (DcWorkerProc *proc,
                        gpointer      user_data);
  /* Calls written to it that it will never read (exit-on-die), last
   * first: to be sent again. */
  void (*requeue)      (DcWorkerProc *proc,
                        DcCall       *call,
                        gpointer      user_data);
  /* Reaped.  @calls (detached) are what it still had, to fail with
   * @error; the callback takes them.  The pool lets go of it here. */
  void (*exited)       (DcWorkerProc *proc,
                        int           wait_status,
                        GQueue       *calls,
                        const GError *error,
                        gpointer      user_data);
} DcWorkerProcCallbacks;

/* Takes @pidfd, @channel and @stderr_fd (the read end of the worker's
 * captured stderr, non-blocking, or -1).  Reaps the worker through
 * @pidfd. */
DcWorkerProc      *dc_worker_proc_new           (GPid                          pid,
                                                 int                           pidfd,
                                                 DcChannel                    *channel,
                                                 int                           stderr_fd,
                                                 GMainContext                 *context,
                                                 const DcWorkerProcSettings   *settings,
                                                 gboolean                      exit_on_die,
                                                 const DcWorkerProcCallbacks  *callbacks,
                                                 gpointer                      user_data);
DcWorkerProc      *dc_worker_proc_ref           (DcWorkerProc  *proc);
void               dc_worker_proc_unref         (DcWorkerProc  *proc);

GPid               dc_worker_proc_get_pid       (DcWorkerProc  *proc);
DcWorkerProcState  dc_worker_proc_get_state     (DcWorkerProc  *proc);
guint              dc_worker_proc_get_n_calls   (DcWorkerProc  *proc);   /* in flight */
guint              dc_worker_proc_get_n_sent    (DcWorkerProc  *proc);   /* ever written */
gboolean           dc_worker_proc_has_output    (DcWorkerProc  *proc);

/* Writes @call (SENT from now on) after what waits; dc_worker_proc_flush()
 * sends.  RUNNING only. */
void               dc_worker_proc_send          (DcWorkerProc  *proc,
                                                 DcCall        *call);
void               dc_worker_proc_flush         (DcWorkerProc  *proc);

/* Whether @call is the one it runs now (the first it has not answered). */
gboolean           dc_worker_proc_is_running    (DcWorkerProc  *proc,
                                                 DcCall        *call);

/* RUNNING → RETIRING: no more calls; it leaves once it has answered those
 * it has. */
void               dc_worker_proc_retire        (DcWorkerProc  *proc);
/* Kills it for @call (which completed already, as timed out or
 * cancelled): the calls written behind fail with @reason. */
void               dc_worker_proc_kill_for_call (DcWorkerProc  *proc,
                                                 DcCall        *call,
                                                 GError        *reason);
/* Shut down: its calls go to @calls (detached); an idle worker is closed
 * and leaves, a busy one is killed.  It is still reaped and reported. */
void               dc_worker_proc_detach        (DcWorkerProc  *proc,
                                                 GQueue        *calls);
/* The pool goes: no more callbacks.  With @own_reaper (its context may
 * never run again), a worker not reaped yet is killed and a pidfd to reap
 * it with is returned (the caller's); otherwise -1. */
int                dc_worker_proc_disown        (DcWorkerProc  *proc,
                                                 gboolean       own_reaper);

char              *dc_describe_wait_status      (GPid           pid,
                                                 int            status);

G_END_DECLS
