/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Shared by the pool's private files while it is being split. */

#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>

#include "dc-detached-code.h"
#include "dc-channel-private.h"
#include "dc-wire-private.h"
#include "dc-worker-private.h"

G_BEGIN_DECLS

typedef enum
{
  WORKER_RUNNING,    /* takes calls */
  WORKER_RETIRING,   /* takes no more calls; exits on its own */
  WORKER_LOST,       /* channel closed or worker killed; waiting for its status */
} WorkerState;

typedef struct _DcWorker DcWorker;

typedef struct _DcCall DcCall;

struct _DcCall
{
  GList           link;      /* in the pool's queue or a worker's in-flight list */
  GTask          *task;      /* owned; NULL once completed (a cancelled call
                              * stays in flight until its reply is dropped) */
  GBytes         *payload;   /* marshalled arguments, kept until completion so
                              * the call can be sent again */
  guint64         serial;
  int             priority;
  GCancellable   *cancellable;
  gulong          cancel_id;
  DcWorker       *worker;    /* unowned; set while in flight */
  enum { CALL_QUEUED, CALL_IN_FLIGHT, CALL_LOCAL } where;  /* which list holds link */
  GSource        *timeout_source;  /* call-timeout, armed when written to a worker */
  GUnixFDList    *fd_list;   /* descriptors to send with the arguments */
  int             memfd;     /* the payload in a sealed memfd, once made; or -1 */
  GVariant       *result;    /* a completion waiting to be delivered ... */
  GError         *result_error;  /* ... once the read that produced it is over */
};

struct _DcWorker
{
  gint             ref_count;   /* the pool's list and the child watch each hold one */
  DcDetachedCode  *pool;        /* unowned; NULL once the pool let go of it */
  GPid             pid;
  WorkerState      state;
  DcChannel       *channel;     /* NULL once closed */
  GSource         *read_source;
  GSource         *write_source;
  DcWireReader     reader;
  GByteArray      *outbuf;      /* frames not yet written */
  gsize            out_pos;
  GQueue           out_fds;     /* OutFds, by offset: descriptors to send with outbuf */
  GArray          *rx_fds;      /* received, not yet claimed by a frame */
  GQueue           inflight;    /* DcCall, in the order written */
  gboolean         reading;     /* inside worker_read(): no reentrant read */
  gboolean         exited;      /* the child watch has reported */
  int              wait_status;
  GError          *lost_error;  /* why we killed it, for the calls it had */
  guint32          setup_step;  /* from a SETUP_FAILED frame */
  guint32          setup_errno;
  gboolean         exit_on_die; /* as it was when this worker was forked */
  gboolean         close_when_idle; /* retired: closed once its calls are done */
  gboolean         departed;    /* let go by shutdown(): in pool->departed */
  guint            n_calls;     /* calls written to it */
  guint            n_replies;   /* frames it sent about calls */
  gint64           idle_since;  /* monotonic time it last became idle */
  GSource         *idle_source; /* idle-timeout timer */
  GSource         *watch;       /* child watch; owns a reference */
};

/* Descriptors that go with the frame starting at @offset in outbuf. */
typedef struct
{
  gsize        offset;
  GUnixFDList *fds;
} OutFds;

typedef struct
{
  char     *variable;
  char     *value;     /* NULL: unset */
  gboolean  overwrite;
} EnvOp;

struct _DcDetachedCode
{
  GObject           parent_instance;

  DcCodeFunc        func;       /* one of func and fd_func */
  DcCodeFdFunc      fd_func;
  gpointer          user_data;
  GDestroyNotify    user_data_free;
  DcWorkerInitFunc  init_func;
  gpointer          init_data;
  GDestroyNotify    init_data_free;

  /* The pool's I/O runs here: the thread-default context at construction.
   * All state below is touched only while this context is acquired. */
  GMainContext     *context;
  /* A worker is a copy of us; in any other process this object is inert. */
  pid_t             owner_pid;
  /* Forks happen only in the thread that runs (or owns) the context: a
   * worker dies with the thread that forked it (PR_SET_PDEATHSIG). */
  GThread          *owner_thread;

  guint             min_workers;
  guint             max_workers;
  DcStream          stream;
  DcMarshaller      marshaller;
  DcSetupFlags      setup_flags;
  gboolean          exit_on_die;
  gboolean          kill_on_cancel;
  guint             idle_timeout;      /* ms, 0 = never */
  guint             max_worker_calls;  /* 0 = unlimited */
  guint             call_timeout;      /* ms, 0 = none */
  guint             pipeline_depth;    /* >= 1 */
  guint             memfd_threshold;   /* bytes; 0 = never */
  guint             n_busy;            /* last notified */
  guint             n_queued;          /* last notified */
  char             *cwd;
  GArray           *env_ops;    /* EnvOp, applied in order at each fork */

  gboolean          started;
  GQueue            queue;      /* DcCall, by priority then FIFO */
  GHashTable       *cancellable_calls; /* GTask -> DcCall, for calls with a cancellable */
  GList            *workers;    /* DcWorker (one ref each), every state */
  GList            *departed;   /* DcWorker (one ref each) shut down, not yet reaped */
  guint             n_workers;  /* those RUNNING */
  guint64           next_serial;

  /* Calls made from threads that could not acquire the context. */
  GMutex            incoming_lock;
  GQueue            incoming;
  GSource          *incoming_source;
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
  N_PROPS
};

enum
{
  SIGNAL_WORKER_SPAWNED,
  SIGNAL_WORKER_EXITED,
  N_SIGNALS
};

/* ---- submission ---- */

typedef struct
{
  DcDetachedCode *self;
  GTask          *task;
} CancelData;

typedef struct
{
  DcDetachedCode *self;
  gboolean        done;
  GMutex          lock;
  GCond           cond;
} Handover;

extern GParamSpec *props[N_PROPS];
extern guint signals[N_SIGNALS];

void out_fds_free (OutFds *out);
void dc_i18n_init (void);
gboolean in_owner_process (DcDetachedCode *self);
void call_clear_timeout (DcCall *call);
void call_free (DcCall *call);
void call_detach (DcCall *call);
GTask * call_steal_task (DcCall *call);
void call_complete (DcCall   *call, GVariant *value, GError   *error);
gboolean call_is_running (DcCall *call);
void call_kill_worker (DcCall *call, GError *reason);
void call_cancel (DcCall *call);
void queue_insert (GQueue *queue, DcCall *call);
void fail_calls (GQueue       *calls, const GError *error);
DcWorker * worker_ref (DcWorker *worker);
void worker_unref (DcWorker *worker);
void set_n_workers (DcDetachedCode *self, guint           n);
void worker_leave_service (DcWorker    *worker, WorkerState  state);
void worker_drop_output (DcWorker *worker);
void worker_close_rx_fds (DcWorker *worker, guint     first);
void worker_close_channel (DcWorker *worker);
void worker_retire (DcWorker *worker);
gboolean worker_idle_timeout_cb (gpointer data);
void worker_note_idle (DcWorker *worker);
void worker_kill (DcWorker *worker, GError   *reason);
char * describe_wait_status (GPid pid, int  status);
GError * worker_death_error (DcWorker *worker);
void worker_finish (DcWorker *worker);
void worker_lost (DcWorker *worker);
void worker_check_exited (DcWorker *worker);
void child_watch_cb (GPid     pid, int      status, gpointer data);
GError * protocol_error (DcWorker   *worker, const char *why);
void requeue_inflight (DcWorker *worker);
GError * marshal_failed_error (DcWorker *worker, GBytes   *payload);
gboolean worker_claim_fds (DcWorker            *worker, const DcWireHeader  *header, GBytes             **payload, GUnixFDList        **fd_list, GError             **error);
gboolean worker_handle_frame (DcWorker           *worker, const DcWireHeader *header, GBytes             *payload_in, GQueue             *completed);
gboolean worker_read (DcWorker *worker, gboolean  drain);
gboolean worker_readable_cb (GIOCondition condition, gpointer     data);
void worker_flush (DcWorker *worker);
gboolean worker_writable_cb (GIOCondition condition, gpointer     data);
void worker_arm_timeout (DcWorker *worker);
gboolean call_timeout_cb (gpointer data);
gboolean call_timeout_fire (DcCall *call);
void send_call_with_fds (DcWorker *worker, DcCall   *call);
void send_call (DcWorker *worker, DcCall   *call);
char ** build_envp (DcDetachedCode *self);
void reap_only_cb (GPid     pid, int      status, gpointer data);
gboolean move_above_stdio (int *read_fd, int *write_fd);
DcWorker * spawn_worker (DcDetachedCode  *self, GError         **error);
guint effective_max (DcDetachedCode *self);
DcWorker * find_idle_worker (DcDetachedCode *self);
DcWorker * find_worker_with_room (DcDetachedCode *self);
void update_stats (DcDetachedCode *self);
void dispatch (DcDetachedCode *self);
void cancel_data_free (gpointer data);
gboolean cancel_idle_cb (gpointer data);
void cancelled_cb (GCancellable *cancellable, gpointer      data);
void submit (DcDetachedCode *self, DcCall         *call);
gboolean incoming_cb (gpointer data);
void env_op_clear (EnvOp *op);
void detach_workers (DcDetachedCode *self, GQueue         *calls);
gpointer reaper_thread (gpointer data);
void forget_departed (DcDetachedCode *self);
gboolean handover_cb (gpointer data);
void set_no_func_error (GError **error);
void call_internal (DcDetachedCode     *self, GVariant           *args, GUnixFDList        *fd_list, int                 io_priority, GCancellable       *cancellable, GAsyncReadyCallback callback, gpointer            user_data, gpointer            source_tag);
void add_env_op (DcDetachedCode *self, const char     *variable, const char     *value, gboolean        overwrite);
gboolean workers_alive (DcDetachedCode *self);

G_END_DECLS
