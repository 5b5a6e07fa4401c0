/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The worker side: what runs in the child after fork().
 *
 * dc_worker_child_setup() runs first and is async-signal-safe: the parent
 * may have had other threads, whose locks stay locked in the child.  It
 * only makes system calls and reads memory the parent prepared.
 *
 * dc_worker_serve() runs after the user's init function and is not
 * async-signal-safe, no more than the user's code it calls.  It takes plain
 * descriptors and returns, so it can be tested in a thread over a
 * socketpair without forking.
 */

#pragma once

#include "dc-detached-code.h"

G_BEGIN_DECLS

/* Everything the child needs to set itself up, prepared by the parent
 * before fork() so that the child allocates nothing. */
typedef struct
{
  int          read_fd;          /* the worker's ends, as numbered in the parent */
  int          write_fd;         /* == read_fd for a socket */
  int          target_read_fd;   /* where they go in the worker: high numbers */
  int          target_write_fd;
  int          fd_limit;         /* RLIMIT_NOFILE, for closing without close_range() */
  DcSetupFlags flags;
  int          stderr_fd;        /* with DC_SETUP_CAPTURE_STDERR: the write end of
                                  * the pipe that becomes its stderr, as numbered
                                  * in the parent */
  pid_t        parent_pid;
  gboolean     die_with_parent;  /* forked from the main thread: PR_SET_PDEATHSIG */
  gboolean     signals_default;  /* every signal at its default disposition and
                                  * none blocked already (cloned from the
                                  * template, which reset them and installs
                                  * no handler) */
  const char  *cwd;              /* NULL: keep the parent's */
  char       **envp;             /* NULL: keep the parent's */
} DcWorkerSetup;

typedef struct
{
  DcCodeFunc        func;       /* one of func and fd_func */
  DcCodeFdFunc      fd_func;
  gpointer          user_data;
  DcWorkerInitFunc  init_func;
  gpointer          init_data;
  DcMarshaller      marshaller;
  gboolean          exit_on_die;
  gboolean          is_socket;        /* descriptors can travel */
  gsize             memfd_threshold;  /* 0: never */
  guint8           *sandbox;          /* a program of dc-sandbox-private.h, or NULL; the
                                       * worker writes into its own copy */
  gsize             sandbox_size;
} DcWorkerCode;

/* Exit statuses a worker may leave with of its own accord. */
enum
{
  DC_WORKER_EXIT_OK = 0,            /* the parent closed the channel, or exit-on-die */
  DC_WORKER_EXIT_CHANNEL = 120,     /* read or write on the channel failed */
  DC_WORKER_EXIT_BAD_REQUEST = 121, /* the parent sent something undecodable */
  DC_WORKER_EXIT_SETUP = 122,       /* set-up failed (a SETUP_FAILED frame was sent) */
  DC_WORKER_EXIT_SANDBOX = 123,     /* a forbidden system call (a SANDBOX_STOPPED frame was sent) */
};

/* Picks the high descriptor numbers the channel takes in a worker: the top
 * two below the descriptor limit (or 1024).  Async-signal-safe. */
void      dc_worker_pick_targets  (DcWorkerSetup       *setup);
/* Async-signal-safe, no system call: @setup's targets for its own ends,
 * from the limit and numbers dc_worker_pick_targets() put in @picked. */
void      dc_worker_copy_targets  (DcWorkerSetup       *setup,
                                   const DcWorkerSetup *picked);

/* Async-signal-safe: every signal at its default disposition, none
 * blocked. */
void      dc_worker_reset_signals (void);
/* Async-signal-safe: dies with the parent (PR_SET_PDEATHSIG when
 * @die_with_parent), and _exit()s now if the parent is gone already. */
void      dc_worker_tie_to_parent (pid_t                parent_pid,
                                   gboolean             die_with_parent);

/* Async-signal-safe.  On failure it reports a DC_WIRE_SETUP_FAILED frame
 * on the channel and _exit()s. */
void      dc_worker_child_setup   (const DcWorkerSetup *setup);

/* Not async-signal-safe.  Serves calls until the channel closes; returns
 * the exit status the worker should leave with. */
int       dc_worker_serve         (int                  read_fd,
                                   int                  write_fd,
                                   const DcWorkerCode  *code);

/* Not async-signal-safe.  Sends @value (not floating) as a progress value
 * of the call whose code runs in this thread, if its caller takes
 * progress; else does nothing. */
void      dc_worker_send_progress (GVariant            *value);

/* The whole life of a worker: set-up, init function, serving, _exit(). */
G_NORETURN
void      dc_worker_main          (const DcWorkerSetup *setup,
                                   const DcWorkerCode  *code);

G_END_DECLS
