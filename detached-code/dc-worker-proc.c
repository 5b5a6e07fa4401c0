/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* One worker process as the parent sees it: one state machine, changed
 * only by proc_transition(), its channel I/O and its timers.  It reports
 * to its pool through DcWorkerProcCallbacks and knows nothing else of it. */

#include "config.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>
#include <glib-unix.h>

#include "dc-process-private.h"
#include "dc-sandbox-private.h"
#include "dc-wire-private.h"
#include "dc-worker-proc-private.h"
#include "dc-worker-stderr-private.h"

/* What happens to a worker process. */
typedef enum
{
  EVENT_RETIRE,        /* take no more calls; leave once idle */
  EVENT_IDLE,          /* its last call was answered */
  EVENT_WRITE_FAILED,  /* it stopped reading: no more writes, read what is left */
  EVENT_EOF,           /* its channel ended or failed */
  EVENT_KILL,          /* we kill it */
  EVENT_DETACH,        /* shut down: the pool took its calls */
  EVENT_REAPED,        /* its exit status is known */
} Event;

/* What goes out at @offset in outbuf, before the byte there: the
 * descriptors of the frame that starts there, or the bytes of a large
 * value, written from the value itself (which the mark keeps alive, even
 * after its call completed, until they are written or dropped). */
typedef struct
{
  gsize         offset;
  /* With the next byte written, the memfd first: references, not
   * copies, so that sending needs no new descriptor.  NULL once sent. */
  GUnixFDList  *memfd;
  GUnixFDList  *fds;       /* the call's list: its first @n_fds */
  guint         n_fds;
  GVariant     *value;     /* owns @data; or NULL */
  const guint8 *data;
  gsize         len;
  gsize         pos;       /* of @data, written */
} OutMark;

struct _DcWorkerProc
{
  gint                         ref_count;  /* the pool's, the child watch's, a read's */
  DcWorkerProcState            state;
  GPid                         pid;
  int                          pidfd;      /* -1 once reaped */
  GMainContext                *context;
  const DcWorkerProcSettings  *settings;   /* NULL once disowned */
  const DcWorkerProcCallbacks *callbacks;  /* NULL once disowned */
  gpointer                     user_data;
  gboolean                     exit_on_die; /* as it was when this worker was forked */

  /* Open in RUNNING and RETIRING, and in LOST until what the worker sent
   * before it stopped reading has been read. */
  DcChannel                   *channel;
  GSource                     *read_source; /* NULL while paused */
  /* Made ready by a caller that fell behind its progress values, once it
   * has caught up: reading is paused until then. */
  GSource                     *resume_source;
  GSource                     *write_source;
  DcWireReader                 reader;
  GArray                      *rx_fds;     /* received, not yet claimed by a frame */
  GByteArray                  *outbuf;     /* frames not yet written, but for ... */
  gsize                        out_pos;
  GQueue                       out_marks;  /* ... OutMark, by offset, in write order */

  GQueue                       inflight;   /* DcCall, in the order written */
  guint                        n_sent;

  /* Inside proc_read(): no second read, and an exit reported meanwhile is
   * acted upon when the read is over. */
  gboolean                     in_read;
  gboolean                     reaped;
  int                          wait_status;
  GError                      *lost_error; /* why we killed it, for its calls */

  /* Its stderr, under DC_SETUP_CAPTURE_STDERR: open until it ends or
   * the worker is finished; the last lines are kept to the end. */
  DcWorkerStderr              *err;         /* captured stderr, or NULL */

  gint64                       idle_since;
  GSource                     *idle_source;
  GSource                     *grace_source; /* LOST and not yet reaped */
  GSource                     *watch;      /* on the pidfd; owns a reference */
};

static void proc_transition (DcWorkerProc *proc, Event event, GError *reason, GQueue *calls);
static gboolean proc_read (DcWorkerProc *proc, gboolean drain);
static void proc_pause_reading (DcWorkerProc *proc, DcProgress *progress);

/* ---- life ---- */

DcWorkerProc *
dc_worker_proc_ref (DcWorkerProc *proc)
{
  proc->ref_count++;
  return proc;
}

static void
out_mark_free (OutMark *mark)
{
  g_clear_object (&mark->memfd);
  g_clear_object (&mark->fds);
  g_clear_pointer (&mark->value, g_variant_unref);
  g_free (mark);
}

void
dc_worker_proc_unref (DcWorkerProc *proc)
{
  if (--proc->ref_count > 0)
    return;

  g_assert (proc->channel == NULL);
  g_assert (proc->inflight.length == 0);
  g_assert (proc->idle_source == NULL);
  g_assert (proc->grace_source == NULL);
  dc_wire_reader_clear (&proc->reader);
  g_clear_pointer (&proc->watch, g_source_unref);
  g_clear_pointer (&proc->outbuf, g_byte_array_unref);
  g_queue_clear_full (&proc->out_marks, (GDestroyNotify) out_mark_free);
  dc_wire_close_fds (proc->rx_fds);
  g_clear_pointer (&proc->rx_fds, g_array_unref);
  g_clear_error (&proc->lost_error);
  g_clear_pointer (&proc->err, dc_worker_stderr_free);
  if (proc->pidfd >= 0)
    close (proc->pidfd);
  g_free (proc);
}

GPid
dc_worker_proc_get_pid (DcWorkerProc *proc)
{
  return proc->pid;
}

DcWorkerProcState
dc_worker_proc_get_state (DcWorkerProc *proc)
{
  return proc->state;
}

guint
dc_worker_proc_get_n_calls (DcWorkerProc *proc)
{
  return proc->inflight.length;
}

guint
dc_worker_proc_get_n_sent (DcWorkerProc *proc)
{
  return proc->n_sent;
}

gboolean
dc_worker_proc_has_output (DcWorkerProc *proc)
{
  return proc->outbuf->len > 0 || proc->out_marks.length > 0;
}

gboolean
dc_worker_proc_is_running (DcWorkerProc *proc,
                           DcCall       *call)
{
  return call->where == DC_CALL_SENT && proc->inflight.head == &call->link;
}

static void
clear_source (GSource **source)
{
  if (*source != NULL)
    {
      g_source_destroy (*source);
      g_clear_pointer (source, g_source_unref);
    }
}

/* ---- its stderr ---- */

/* An error about the worker ends with its last output, if it was
 * captured and there is some. */
static void
proc_add_last_output (DcWorkerProc *proc,
                      GError       *error)
{
  g_autofree char *output = NULL;
  g_autofree char *header = NULL;
  char *message;

  if (error == NULL || error->domain != DC_DETACHED_CODE_ERROR ||
      (error->code != DC_DETACHED_CODE_ERROR_WORKER_DIED &&
       error->code != DC_DETACHED_CODE_ERROR_TIMED_OUT &&
       error->code != DC_DETACHED_CODE_ERROR_SANDBOX))
    return;
  output = proc->err != NULL ? dc_worker_stderr_last_output (proc->err) : NULL;
  if (output == NULL)
    return;
  header = g_strdup_printf (_("--- last output of worker process %d ---"), (int) proc->pid);
  message = g_strdup_printf ("%s\n%s\n%s", error->message, header, output);
  g_free (error->message);
  error->message = message;
}

/* ---- timers ---- */

static gboolean idle_timeout_cb (gpointer data);
static gboolean lost_grace_cb (gpointer data);

/* A worker that lost its channel cannot answer; it normally exits at
 * once.  One that closed its channel and went on running would hold its
 * calls, and its place under max-workers, for as long as it liked: their
 * time limits no longer run (they fail with its death), so it gets this
 * long to exit, and is killed then. */
#define LOST_GRACE_MS 2000

static void
proc_arm_lost_grace (DcWorkerProc *proc)
{
  if (proc->reaped || proc->grace_source != NULL)
    return;
  proc->grace_source = g_timeout_source_new (LOST_GRACE_MS);
  g_source_set_callback (proc->grace_source, lost_grace_cb, proc, NULL);
  g_source_attach (proc->grace_source, proc->context);
}

static gboolean
lost_grace_cb (gpointer data)
{
  DcWorkerProc *proc = data;

  g_clear_pointer (&proc->grace_source, g_source_unref);
  if (proc->reaped)
    return G_SOURCE_REMOVE;
  if (proc->lost_error == NULL)
    proc->lost_error = g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED,
                                    _("Worker process %d closed its channel but did not exit"),
                                    (int) proc->pid);
  dc_process_signal (proc->pidfd, proc->pid, SIGKILL);
  return G_SOURCE_REMOVE;
}


/* No call in flight: count towards idle-timeout. */
static void
proc_note_idle (DcWorkerProc *proc)
{
  gint64 remaining;

  if (proc->settings == NULL || proc->settings->idle_timeout == 0 ||
      proc->state != DC_WORKER_PROC_RUNNING || proc->idle_source != NULL)
    return;

  proc->idle_since = g_get_monotonic_time ();
  remaining = (gint64) proc->settings->idle_timeout * G_TIME_SPAN_MILLISECOND;
  proc->idle_source = g_timeout_source_new ((guint) MAX (remaining / 1000, 1));
  g_source_set_callback (proc->idle_source, idle_timeout_cb, proc, NULL);
  g_source_attach (proc->idle_source, proc->context);
}

static gboolean
idle_timeout_cb (gpointer data)
{
  DcWorkerProc *proc = data;
  gint64 idle_for = g_get_monotonic_time () - proc->idle_since;

  g_clear_pointer (&proc->idle_source, g_source_unref);
  if (proc->callbacks == NULL || proc->state != DC_WORKER_PROC_RUNNING || proc->inflight.length > 0)
    return G_SOURCE_REMOVE;

  /* The limit changed meanwhile: count again from now. */
  if (idle_for < (gint64) proc->settings->idle_timeout * G_TIME_SPAN_MILLISECOND)
    {
      proc_note_idle (proc);
      return G_SOURCE_REMOVE;
    }

  proc->callbacks->idle_timeout (proc, proc->user_data);
  return G_SOURCE_REMOVE;
}

static gboolean call_timeout_cb (gpointer data);

/* A map's chunk may take call-timeout for each of its items. */
static guint
call_limit (DcWorkerProc *proc,
            DcCall       *call)
{
  guint64 limit = (guint64) proc->settings->call_timeout * MAX (call->n_items, 1);

  return (guint) MIN (limit, (guint64) G_MAXUINT);
}

/* The limit counts from when the call runs: from its write to an idle
 * worker, or, pipelined, from the reply of the call before it.  Time in
 * the queue, or behind another call, does not count. */
static void
proc_arm_timeout (DcWorkerProc *proc)
{
  DcCall *head = g_queue_peek_head (&proc->inflight);

  if (proc->settings == NULL || proc->settings->call_timeout == 0 || head == NULL ||
      head->timeout_source != NULL || proc->state == DC_WORKER_PROC_LOST)
    return;
  head->timeout_source = g_timeout_source_new (call_limit (proc, head));
  g_source_set_callback (head->timeout_source, call_timeout_cb, head, NULL);
  g_source_attach (head->timeout_source, proc->context);
}

static gboolean
call_timeout_cb (gpointer data)
{
  DcCall *call = data;
  DcWorkerProc *proc = call->worker;
  g_autoptr(GTask) task = NULL;
  guint limit;
  gboolean running;
  GPid pid;

  g_clear_pointer (&call->timeout_source, g_source_unref);
  if (call->where != DC_CALL_SENT || proc == NULL || proc->settings == NULL)
    return G_SOURCE_REMOVE;

  limit = call_limit (proc, call);
  running = dc_worker_proc_is_running (proc, call);
  pid = proc->pid;
  task = dc_call_steal_task (call);

  /* A call still waiting behind another on the same worker has not
   * started: it fails, and its reply will be dropped. */
  if (running)
    dc_worker_proc_kill_for_call (proc, call,
                                  g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED,
                                               _("Worker process %d was killed: a call it was running took longer than %u ms"),
                                               (int) pid, limit));

  if (task != NULL)
    {
      GError *error;

      if (running)
        error = g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT,
                             _("The call took longer than %u ms; worker process %d was killed"),
                             limit, (int) pid);
      else
        error = g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_TIMED_OUT,
                             _("The call did not complete within %u ms on worker process %d"),
                             limit, (int) pid);
      /* What it wrote until now, read now. */
      if (proc->err != NULL)
        dc_worker_stderr_read_now (proc->err);
      proc_add_last_output (proc, error);
      g_task_return_error (task, error);
    }
  return G_SOURCE_REMOVE;
}

/* ---- the channel ---- */

static void
proc_drop_output (DcWorkerProc *proc)
{
  g_byte_array_set_size (proc->outbuf, 0);
  proc->out_pos = 0;
  g_queue_clear_full (&proc->out_marks, (GDestroyNotify) out_mark_free);
  clear_source (&proc->write_source);
}

static void
proc_close_channel (DcWorkerProc *proc)
{
  clear_source (&proc->read_source);
  clear_source (&proc->resume_source);
  proc_drop_output (proc);
  g_clear_pointer (&proc->channel, dc_channel_free);
  dc_wire_close_fds (proc->rx_fds);
}

static gboolean writable_cb (GIOCondition condition, gpointer data);

/* The descriptors of @mark's frame, in @fds (room for DC_WIRE_MAX_FDS;
 * the pool refuses a call with more); how many. */
static guint
out_mark_peek_fds (OutMark *mark,
                   int     *fds)
{
  guint n = 0;

  if (mark->memfd != NULL)
    fds[n++] = g_unix_fd_list_peek_fds (mark->memfd, NULL)[0];
  if (mark->fds != NULL)
    {
      gint len;
      const gint *list = g_unix_fd_list_peek_fds (mark->fds, &len);

      /* The header counts the descriptors the list had when the frame
       * was made; a caller who changed it since broke its contract, and
       * the worker refuses the frame. */
      len = MIN (len, (gint) mark->n_fds);
      memcpy (fds + n, list, sizeof (int) * (gsize) len);
      n += (guint) len;
    }
  return n;
}

/* The next write, from out_pos on: the bytes of outbuf and of the marks
 * in turn, as far as the next frame with descriptors (they go with their
 * frame's first byte, so no write reaches past it). */
static guint
proc_gather (DcWorkerProc  *proc,
             GOutputVector *vectors,
             int           *fds,
             guint         *n_fds)
{
  GList *link = proc->out_marks.head;
  gsize pos = proc->out_pos;
  guint n = 0;

  *n_fds = 0;
  while (n < DC_CHANNEL_MAX_VECTORS)
    {
      OutMark *mark = link != NULL ? link->data : NULL;
      gsize end = mark != NULL ? mark->offset : proc->outbuf->len;

      if (pos < end)
        {
          vectors[n].buffer = proc->outbuf->data + pos;
          vectors[n++].size = end - pos;
          pos = end;
          continue;
        }
      if (mark == NULL)
        break;
      if (mark->memfd != NULL || mark->fds != NULL)
        {
          if (n > 0)
            break;
          *n_fds = out_mark_peek_fds (mark, fds);
        }
      if (mark->pos < mark->len)
        {
          vectors[n].buffer = mark->data + mark->pos;
          vectors[n++].size = mark->len - mark->pos;
        }
      link = link->next;
    }
  return n;
}

/* @n bytes of what proc_gather() gave were written. */
static void
proc_consume (DcWorkerProc *proc,
              gsize         n)
{
  while (n > 0)
    {
      OutMark *mark = g_queue_peek_head (&proc->out_marks);
      gsize end = mark != NULL ? mark->offset : proc->outbuf->len;
      gsize k;

      if (proc->out_pos < end)
        {
          k = MIN (n, end - proc->out_pos);
          proc->out_pos += k;
          n -= k;
          continue;
        }

      g_assert (mark != NULL);
      /* A byte after the mark went, and its descriptors with the first. */
      g_clear_object (&mark->memfd);
      g_clear_object (&mark->fds);
      k = MIN (n, mark->len - mark->pos);
      mark->pos += k;
      n -= k;
      if (mark->pos == mark->len)
        out_mark_free (g_queue_pop_head (&proc->out_marks));
    }
}

void
dc_worker_proc_flush (DcWorkerProc *proc)
{
  while (proc->channel != NULL &&
         (proc->out_pos < proc->outbuf->len || proc->out_marks.length > 0))
    {
      g_autoptr(GError) error = NULL;
      GOutputVector vectors[DC_CHANNEL_MAX_VECTORS];
      int fds[DC_WIRE_MAX_FDS];
      guint n_fds;
      guint n_vectors = proc_gather (proc, vectors, fds, &n_fds);
      gssize n;

      g_assert (n_vectors > 0);
      n = dc_channel_writev (proc->channel, vectors, n_vectors, fds, n_fds, &error);
      if (n > 0)
        {
          proc_consume (proc, (gsize) n);
          continue;
        }

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          if (proc->write_source == NULL)
            {
              proc->write_source = dc_channel_create_source (proc->channel, G_IO_OUT,
                                                             writable_cb, proc);
              g_source_attach (proc->write_source, proc->context);
            }
          return;
        }

      proc_transition (proc, EVENT_WRITE_FAILED, NULL, NULL);
      return;
    }

  if (proc->channel != NULL)
    proc_drop_output (proc);   /* all written */
}

static gboolean
writable_cb (GIOCondition condition,
             gpointer     data)
{
  DcWorkerProc *proc = data;

  dc_worker_proc_ref (proc);
  dc_worker_proc_flush (proc);
  dc_worker_proc_unref (proc);
  /* The flush destroys the source itself once everything is written. */
  return G_SOURCE_CONTINUE;
}

static void
proc_push_mark (DcWorkerProc *proc,
                OutMark      *mark)
{
  mark->offset = proc->outbuf->len;
  g_queue_push_tail (&proc->out_marks, mark);
}

/* The call's frame goes after what waits: its header and the payload (or
 * its head) copied into outbuf, large arguments by reference.  With
 * descriptors, or as a sealed memfd when it is large (socket stream
 * only), they go with the frame's first byte. */
static void
proc_append_call (DcWorkerProc *proc,
                  DcCall       *call)
{
  gsize size = g_bytes_get_size (call->payload) +
               (call->body != NULL ? g_variant_get_size (call->body) : 0);
  guint threshold = proc->settings->memfd_threshold;
  guint n_fds = call->fd_list != NULL ? (guint) g_unix_fd_list_get_length (call->fd_list) : 0;
  DcWireType type = call->n_items > 0 ? DC_WIRE_CHUNK : DC_WIRE_CALL;
  DcWireFrameHead head;

  /* Made once, and kept for a resend.  A map's chunk always travels on
   * the stream: the worker takes no descriptor with one. */
  if (dc_channel_is_socket (proc->channel) && type == DC_WIRE_CALL && call->memfd == NULL &&
      threshold > 0 && size >= threshold)
    {
      gsize head_len;
      const guint8 *head_data = g_bytes_get_data (call->payload, &head_len);
      int memfd = dc_wire_memfd_from_parts (head_data, head_len,
                                            call->body != NULL ? g_variant_get_data (call->body) : NULL,
                                            call->body != NULL ? g_variant_get_size (call->body) : 0,
                                            NULL);

      /* Without one, the payload goes on the stream. */
      if (memfd >= 0)
        call->memfd = g_unix_fd_list_new_from_array (&memfd, 1);
    }

  /* The descriptors by reference: a copy could fail for want of free
   * numbers, and a frame whose header counts descriptors that do not
   * come is one the worker must refuse. */
  if (call->memfd != NULL || n_fds > 0)
    {
      OutMark *mark = g_new0 (OutMark, 1);

      if (call->memfd != NULL)
        mark->memfd = g_object_ref (call->memfd);
      if (n_fds > 0)
        {
          mark->fds = g_object_ref (call->fd_list);
          mark->n_fds = n_fds;
        }
      proc_push_mark (proc, mark);
    }

  dc_wire_frame_head_init (&head, type, call->serial, call->payload, call->body,
                           call->memfd != NULL, n_fds);
  if (call->progress != NULL)
    dc_wire_frame_head_add_flags (&head, DC_WIRE_FLAG_PROGRESS);
  g_byte_array_append (proc->outbuf, head.bytes, head.len);
  if (head.body_len > 0)
    g_byte_array_append (proc->outbuf, head.body, head.body_len);
  if (head.tail_len > 0)
    {
      OutMark *mark = g_new0 (OutMark, 1);

      mark->value = g_variant_ref (call->body);
      mark->data = head.tail;
      mark->len = head.tail_len;
      proc_push_mark (proc, mark);
    }
}

void
dc_worker_proc_send (DcWorkerProc *proc,
                     DcCall       *call)
{
  g_assert (proc->state == DC_WORKER_PROC_RUNNING);

  clear_source (&proc->idle_source);
  call->worker = proc;
  call->where = DC_CALL_SENT;
  g_queue_push_tail_link (&proc->inflight, &call->link);
  proc->n_sent++;
  proc_arm_timeout (proc);
  proc_append_call (proc, call);
}

/* ---- reading ---- */

static GError *
protocol_error (DcWorkerProc *proc,
                const char   *why)
{
  return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                      _("Worker process %d sent a malformed message and was killed: %s"),
                      (int) proc->pid, why);
}

static GError *
marshal_failed_error (GBytes *payload)
{
  gsize size;
  const guint8 *data = g_bytes_get_data (payload, &size);
  guint32 reason;
  g_autofree char *type_string = NULL;
  GError *error = NULL;

  gboolean of_progress;

  if (size < 4)
    return NULL;
  memcpy (&reason, data, 4);
  of_progress = (reason & DC_WIRE_MARSHAL_OF_PROGRESS) != 0;
  reason &= ~DC_WIRE_MARSHAL_OF_PROGRESS;
  type_string = g_strndup ((const char *) data + 4, size - 4);
  /* A progress value carries no descriptors. */
  if ((reason != DC_WIRE_MARSHAL_BAD_TYPE && reason != DC_WIRE_MARSHAL_TOO_LARGE &&
       (of_progress || (reason != DC_WIRE_MARSHAL_NO_FDS && reason != DC_WIRE_MARSHAL_TOO_MANY_FDS))) ||
      strlen (type_string) != size - 4 ||
      !g_variant_type_string_is_valid (type_string))
    return NULL;

  dc_wire_set_marshal_error (&error, reason, type_string);
  if (of_progress)
    g_prefix_error (&error, "%s", _("A progress value could not travel, so the call’s result "
                                    "was dropped: "));
  return error;
}

static GError *
setup_failed_error (DcWorkerProc *proc,
                    GBytes       *payload)
{
  const guint32 *words = g_bytes_get_data (payload, NULL);
  const char *what;

  switch (words[0])
    {
    case DC_WIRE_SETUP_STEP_CWD:
      what = _("cannot change to the working directory");
      break;
    case DC_WIRE_SETUP_STEP_SANDBOX:
      return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                          _("Worker process %d could not start: cannot set up its sandbox: %s"),
                          (int) proc->pid, g_strerror ((int) words[1]));
    case DC_WIRE_SETUP_STEP_DESCRIPTORS:
    default:
      what = _("cannot set up its descriptors");
      break;
    }
  return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                      _("Worker process %d could not start: %s: %s"),
                      (int) proc->pid, what, g_strerror ((int) words[1]));
}

static GError *
sandbox_error (DcWorkerProc *proc,
               GBytes       *payload)
{
  const guint32 *words = g_bytes_get_data (payload, NULL);
  g_autofree char *name = dc_sandbox_syscall_name (words[0], (gint32) words[1]);

  if (name != NULL)
    return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                        _("Worker process %d was stopped by the sandbox: it called %s()"),
                        (int) proc->pid, name);
  return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                      _("Worker process %d was stopped by the sandbox: it made system call %d"),
                      (int) proc->pid, (int) words[1]);
}

typedef struct
{
  DcWorkerProc *proc;
  GQueue        completed;   /* calls answered, to be delivered after the read */
  guint         n_replies;   /* frames that made room, this read */
  DcProgress   *behind;      /* owned: a caller with too many progress values waiting */
} Read;

/* Kills the worker for a malformed message; stops the read. */
static gboolean
reject (DcWorkerProc *proc,
        const char   *why)
{
  proc_transition (proc, EVENT_KILL, protocol_error (proc, why), NULL);
  return FALSE;
}

/* The value or error a call's reply carries.  Returns why it is
 * malformed, or NULL. */
static const char *
decode_reply (DcWorkerProc  *proc,
              guint          type,
              GBytes        *payload,
              GVariant     **value,
              GError       **error)
{
  switch ((DcWireType) type)
    {
    case DC_WIRE_RESULT:
      *value = dc_wire_unmarshal_raw (proc->settings->marshaller, payload);
      if (*value == NULL)
        return proc->settings->marshaller == DC_MARSHALLER_FLAT ? _("Malformed flat message")
                                                                : _("Malformed variant message");
      return NULL;

    case DC_WIRE_ERROR:
      *error = dc_wire_decode_error (payload, NULL);
      return *error == NULL ? _("a malformed error report") : NULL;

    case DC_WIRE_NULL_RESULT:
      *error = g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED,
                                    _("The code returned no value and set no error"));
      return NULL;

    case DC_WIRE_MARSHAL_FAILED:
      *error = marshal_failed_error (payload);
      return *error == NULL ? _("a malformed marshalling report") : NULL;

    case DC_WIRE_CALL:
    case DC_WIRE_SETUP_FAILED:
    case DC_WIRE_SANDBOX_STOPPED:
    case DC_WIRE_CHUNK:
    case DC_WIRE_CHUNK_RESULT:
    case DC_WIRE_PROGRESS:
    default:
      g_assert_not_reached ();
    }
}

/* What a chunk's reply carries: the "av" of its results, or the error of
 * its first failing item, whose place is noted for the map.  Returns why
 * it is malformed, or NULL. */
static const char *
decode_chunk_reply (DcWorkerProc  *proc,
                    DcCall        *call,
                    GBytes        *payload,
                    GVariant     **value,
                    GError       **error)
{
  gsize size;
  const guint8 *data = g_bytes_get_data (payload, &size);
  g_autoptr(GBytes) body = NULL;
  DcWireChunkHead head;
  DcWireArray results;
  gboolean normal;
  const char *why;

  if (size < DC_WIRE_CHUNK_HEAD_SIZE)
    return _("a malformed chunk reply");
  memcpy (&head, data, sizeof head);
  body = g_bytes_new_from_bytes (payload, DC_WIRE_CHUNK_HEAD_SIZE, size - DC_WIRE_CHUNK_HEAD_SIZE);

  if (head.failure == 0)
    {
      if (head.index != 0 ||
          !dc_wire_array_init (&results, G_VARIANT_TYPE_VARIANT, data + DC_WIRE_CHUNK_HEAD_SIZE,
                               size - DC_WIRE_CHUNK_HEAD_SIZE) ||
          results.n_elements != call->n_items ||
          !dc_wire_chunk_results_check (&results, proc->settings->marshaller, &normal))
        return _("a chunk reply without one result per item");
      /* Its framing is as checked, and its values in normal form, or read
       * as untrusted. */
      if (!normal)
        g_atomic_int_set (&call->group->untrusted, TRUE);
      *value = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE ("av"), body, normal));
      return NULL;
    }

  if ((head.failure != DC_WIRE_ERROR && head.failure != DC_WIRE_NULL_RESULT &&
       head.failure != DC_WIRE_MARSHAL_FAILED) || head.index >= call->n_items)
    return _("a malformed chunk reply");
  why = decode_reply (proc, head.failure, body, value, error);
  if (why == NULL)
    dc_call_chunk_failed (call, head.index);
  return why;
}

static gboolean
handle_frame (gpointer            data,
              const DcWireHeader *header,
              GBytes             *payload_in)
{
  Read *read = data;
  DcWorkerProc *proc = read->proc;
  g_autoptr(GBytes) payload = g_bytes_ref (payload_in);
  g_autoptr(GUnixFDList) fd_list = NULL;
  g_autoptr(GError) fd_error = NULL;
  DcCall *call;
  GVariant *value = NULL;
  GError *error = NULL;

  /* A progress value may come in a memfd, never with descriptors. */
  if (header->n_fds > 0 && header->type != DC_WIRE_RESULT &&
      !(header->type == DC_WIRE_PROGRESS && header->n_fds == 1 && (header->flags & DC_WIRE_FLAG_MEMFD)))
    return reject (proc, _("descriptors with a message that takes none"));
  if (header->flags & DC_WIRE_FLAG_PROGRESS)
    return reject (proc, _("a flag only calls carry"));
  if (!dc_wire_claim_fds (proc->rx_fds, header, &payload, &fd_list, &fd_error))
    return reject (proc, fd_error->message);

  if (header->type == DC_WIRE_SETUP_FAILED)
    {
      if (g_bytes_get_size (payload) != 8 || proc->n_sent > proc->inflight.length)
        return reject (proc, _("a malformed set-up report"));
      /* It exits next; its calls fail with SPAWN. */
      proc_transition (proc, EVENT_KILL, setup_failed_error (proc, payload), NULL);
      return FALSE;
    }

  if (header->type == DC_WIRE_SANDBOX_STOPPED)
    {
      if (g_bytes_get_size (payload) != 8)
        return reject (proc, _("a malformed sandbox report"));
      /* It exits next; the call it ran, and those behind, fail with it. */
      proc_transition (proc, EVENT_KILL, sandbox_error (proc, payload), NULL);
      return FALSE;
    }

  call = g_queue_peek_head (&proc->inflight);
  if (call == NULL)
    return reject (proc, _("a reply without a call"));
  /* A chunk is answered by a chunk reply, a call by a call's. */
  if (header->type == DC_WIRE_CALL || header->type == DC_WIRE_CHUNK ||
      (header->type == DC_WIRE_CHUNK_RESULT) != (call->n_items > 0))
    return reject (proc, _("a message of the wrong type"));
  if (header->serial != call->serial)
    return reject (proc, _("a reply out of order"));

  if (header->type == DC_WIRE_PROGRESS)
    {
      if (call->progress == NULL)
        return reject (proc, _("progress for a call that takes none"));
      value = dc_wire_unmarshal (proc->settings->marshaller, payload, &error);
      if (value == NULL)
        {
          g_autoptr(GError) why = error;

          return reject (proc, why->message);
        }
      /* Delivered by the caller's context, never from inside this read.
       * A caller that falls behind stops the reads after this one. */
      if (!dc_progress_push (call->progress, value) && read->behind == NULL)
        read->behind = dc_progress_ref (call->progress);
      return TRUE;
    }

  if (header->type == DC_WIRE_CHUNK_RESULT)
    {
      const char *why = decode_chunk_reply (proc, call, payload, &value, &error);

      if (why != NULL)
        return reject (proc, why);
    }
  else
    {
      const char *why = decode_reply (proc, header->type, payload, &value, &error);

      if (why != NULL)
        return reject (proc, why);
    }

  g_queue_unlink (&proc->inflight, &call->link);
  dc_call_detach (call);
  call->result = value;
  call->result_error = error;
  g_queue_push_tail_link (&read->completed, &call->link);
  /* Descriptors that came back travel with the task. */
  if (fd_list != NULL && call->task != NULL)
    g_task_set_task_data (call->task, g_steal_pointer (&fd_list), g_object_unref);

  proc_arm_timeout (proc);

  /* Under exit-on-die it leaves after this reply, without reading what
   * else was written to it: those calls never ran, and go again.  So too
   * when a write found it gone before this reply was read (LOST, and not
   * by our hand): it went because of this failure. */
  if (error != NULL && proc->exit_on_die && proc->lost_error == NULL &&
      (proc->state == DC_WORKER_PROC_RUNNING || proc->state == DC_WORKER_PROC_RETIRING ||
       proc->state == DC_WORKER_PROC_LOST))
    {
      GList *link;

      if (proc->state == DC_WORKER_PROC_RUNNING)
        proc_transition (proc, EVENT_RETIRE, NULL, NULL);
      while ((link = g_queue_pop_tail_link (&proc->inflight)) != NULL)
        {
          DcCall *behind = link->data;

          dc_call_detach (behind);
          if (dc_call_is_pending (behind))
            proc->callbacks->requeue (proc, behind, proc->user_data);
          else
            dc_call_free (behind);   /* cancelled meanwhile: nobody waits */
        }
      proc_drop_output (proc);
    }

  if (proc->inflight.length == 0)
    proc_transition (proc, EVENT_IDLE, NULL, NULL);

  /* The pool hears of the room once, after the whole read. */
  read->n_replies++;
  return proc->channel != NULL;
}

static gssize
channel_read (gpointer  data,
              void     *buffer,
              gsize     size)
{
  Read *read = data;
  DcWorkerProc *proc = read->proc;
  g_autoptr(GError) error = NULL;
  gssize n;

  if (dc_channel_is_socket (proc->channel))
    n = dc_channel_read_fds (proc->channel, buffer, size, proc->rx_fds, &error);
  else
    n = dc_channel_read (proc->channel, buffer, size, &error);
  if (n < 0)
    errno = g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK) ? EAGAIN : EIO;
  return n;
}

/* Turns the replies from @link on into PROTOCOL errors. */
static void
fail_answered (DcWorkerProc *proc,
               GList        *link,
               const char   *why)
{
  for (; link != NULL; link = link->next)
    {
      DcCall *call = link->data;

      g_clear_pointer (&call->result, g_variant_unref);
      g_clear_error (&call->result_error);
      call->result_error = protocol_error (proc, why);
      if (call->task != NULL)
        g_task_set_task_data (call->task, NULL, NULL);
    }
}

/* Reads what the worker has sent, without blocking: a bounded amount, or
 * all there is when @drain.  Callbacks run from here may re-enter. */
static gboolean
proc_read (DcWorkerProc *proc,
           gboolean      drain)
{
  guint8 buf[16 * 1024];
  Read read = { proc, G_QUEUE_INIT, 0 };
  gboolean ended = FALSE, open;
  GList *link;
  guint rounds;

  if (proc->in_read || proc->channel == NULL)
    return proc->channel != NULL;

  dc_worker_proc_ref (proc);
  proc->in_read = TRUE;

  /* Bounded, so that one chatty worker cannot starve the context, nor
   * flood a caller that fell behind its progress values. */
  for (rounds = 0; proc->channel != NULL && (drain || (rounds < 64 && read.behind == NULL)); rounds++)
    {
      gsize n = 0;
      GList *answered_before = read.completed.tail;
      DcWirePumpStatus status = dc_wire_reader_pump (&proc->reader, buf, sizeof buf, channel_read,
                                                     handle_frame, &read, &n);

      /* Descriptors travel with a frame's first byte and go with it:
       * between frames, none may be left over. */
      if (proc->channel != NULL && proc->rx_fds->len > 0 &&
          (dc_wire_reader_between_frames (&proc->reader) || proc->rx_fds->len > DC_WIRE_MAX_FDS))
        {
          const char *why = _("descriptors without a message to go with");

          /* They came in this read, with one of the replies it held: none
           * of those replies can be trusted. */
          fail_answered (proc, answered_before ? answered_before->next : read.completed.head, why);
          reject (proc, why);
          break;
        }

      if (status == DC_WIRE_PUMP_READ)
        {
          /* A short read took all there was: the source says when more
           * comes, without another recv() to learn that it would block. */
          if (!drain && n < sizeof buf)
            break;
          continue;
        }
      if (status == DC_WIRE_PUMP_EOF || status == DC_WIRE_PUMP_IO_ERROR)
        ended = TRUE;
      else if (status == DC_WIRE_PUMP_CORRUPT)
        {
          g_autoptr(GError) why = NULL;

          dc_wire_reader_set_error (&proc->reader, &why);
          reject (proc, why->message);
        }
      break;
    }

  if (read.behind != NULL)
    {
      if (proc->channel != NULL && !drain)
        proc_pause_reading (proc, read.behind);
      dc_progress_unref (read.behind);
    }

  /* One dispatch for all the replies read: the next calls go out in one
   * write per worker, and before this read's callbacks, which wait until
   * the read is over: a callback may run a nested main loop, where this
   * worker must be readable again. */
  if (read.n_replies > 0 && proc->callbacks != NULL)
    proc->callbacks->ready (proc, proc->user_data);

  /* Still in the read: a worker reaped meanwhile is finished below, after
   * the replies it sent. */
  if (ended && proc->channel != NULL)
    proc_transition (proc, EVENT_EOF, NULL, NULL);
  proc->in_read = FALSE;

  while ((link = g_queue_pop_head_link (&read.completed)) != NULL)
    dc_call_deliver (link->data);

  /* Reaped while we were busy.  (A drain is the reaping's own read.) */
  if (!drain && proc->reaped && proc->state != DC_WORKER_PROC_EXITED)
    proc_transition (proc, EVENT_REAPED, NULL, NULL);

  open = proc->channel != NULL;
  dc_worker_proc_unref (proc);
  return open;
}

static gboolean
readable_cb (GIOCondition condition,
             gpointer     data)
{
  DcWorkerProc *proc = data;

  /* Paused within: this source is gone already. */
  if (!proc_read (proc, FALSE) || proc->read_source == NULL)
    return G_SOURCE_REMOVE;
  return G_SOURCE_CONTINUE;
}

static void
proc_watch_channel (DcWorkerProc *proc)
{
  proc->read_source = dc_channel_create_source (proc->channel, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                                readable_cb, proc);
  /* Without this, GLib blocks and unblocks the source around each
   * dispatch: two more wake-ups per reply.  proc_read() refuses re-entry
   * itself. */
  g_source_set_can_recurse (proc->read_source, TRUE);
  g_source_attach (proc->read_source, proc->context);
}

static gboolean
resume_dispatch (GSource     *source,
                 GSourceFunc  callback,
                 gpointer     data)
{
  return callback (data);
}

/* Ready only through its ready time. */
static GSourceFuncs resume_funcs = { NULL, NULL, resume_dispatch, NULL, NULL, NULL };

static gboolean
resume_cb (gpointer data)
{
  DcWorkerProc *proc = data;

  clear_source (&proc->resume_source);
  if (proc->channel != NULL && proc->read_source == NULL)
    proc_watch_channel (proc);
  return G_SOURCE_REMOVE;
}

/* Stops reading the worker until the caller behind @progress has taken
 * most of its values: the worker then blocks on its writes, and the
 * parent's memory stays bounded.  Its exit is still seen (through its
 * pidfd), and whatever it sent is read then. */
static void
proc_pause_reading (DcWorkerProc *proc,
                    DcProgress   *progress)
{
  if (proc->resume_source != NULL)
    return;
  clear_source (&proc->read_source);
  proc->resume_source = g_source_new (&resume_funcs, sizeof (GSource));
  g_source_set_static_name (proc->resume_source, "[detached-code] resume reading");
  g_source_set_callback (proc->resume_source, resume_cb, proc, NULL);
  g_source_attach (proc->resume_source, proc->context);
  dc_progress_wake_when_drained (progress, proc->resume_source);
}

/* ---- the state machine ---- */

char *
dc_describe_wait_status (GPid pid,
                         int  status)
{
  if (status == DC_PROCESS_STATUS_UNKNOWN)
    return g_strdup_printf (_("Worker process %d ended; its exit status is unknown (another "
                              "part of the program reaped it)"), (int) pid);
  if (WIFEXITED (status))
    return g_strdup_printf (_("Worker process %d exited with status %d"),
                            (int) pid, WEXITSTATUS (status));

  if (WIFSIGNALED (status))
    {
      int sig = WTERMSIG (status);
      const char *abbrev = sigabbrev_np (sig);
      const char *descr = sigdescr_np (sig);

      if (WCOREDUMP (status))
        return g_strdup_printf (_("Worker process %d was killed by signal %d (%s, SIG%s), core dumped"),
                                (int) pid, sig, descr ? descr : "?", abbrev ? abbrev : "?");
      return g_strdup_printf (_("Worker process %d was killed by signal %d (%s, SIG%s)"),
                              (int) pid, sig, descr ? descr : "?", abbrev ? abbrev : "?");
    }

  return g_strdup_printf (_("Worker process %d ended with wait status %d"), (int) pid, status);
}

/* Why the calls still in flight on a dead worker fail. */
static GError *
death_error (DcWorkerProc *proc)
{
  g_autofree char *status = NULL;

  if (proc->lost_error != NULL)
    return g_error_copy (proc->lost_error);

  status = dc_describe_wait_status (proc->pid, proc->wait_status);
  /* Whether an allocation failed, the parent cannot know; that it may
   * have, it says. */
  if (proc->settings != NULL && proc->settings->memory_limit > 0 &&
      proc->wait_status != DC_PROCESS_STATUS_UNKNOWN &&
      (WIFSIGNALED (proc->wait_status) || WEXITSTATUS (proc->wait_status) != 0))
    {
      g_autofree char *limit = g_format_size_full (proc->settings->memory_limit,
                                                   G_FORMAT_SIZE_IEC_UNITS);

      return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED,
                          _("%s; it ran under a memory-limit of %s, and an allocation past "
                            "it fails"), status, limit);
    }
  return g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED, status);
}

static gboolean
transition_allowed (DcWorkerProcState from,
                    DcWorkerProcState to)
{
  switch (from)
    {
    case DC_WORKER_PROC_RUNNING:
      return to == DC_WORKER_PROC_RETIRING || to == DC_WORKER_PROC_CLOSED ||
             to == DC_WORKER_PROC_LOST;
    case DC_WORKER_PROC_RETIRING:
      return to == DC_WORKER_PROC_CLOSED || to == DC_WORKER_PROC_LOST;
    case DC_WORKER_PROC_CLOSED:
      return to == DC_WORKER_PROC_LOST || to == DC_WORKER_PROC_EXITED;
    case DC_WORKER_PROC_LOST:
      return to == DC_WORKER_PROC_EXITED;
    case DC_WORKER_PROC_EXITED:
    default:
      return FALSE;
    }
}

static void
proc_set_state (DcWorkerProc      *proc,
                DcWorkerProcState  state)
{
  DcWorkerProcState old = proc->state;
  GList *l;

  if (old == state)
    return;
  g_assert (transition_allowed (old, state));
  proc->state = state;

  if (old == DC_WORKER_PROC_RUNNING)
    {
      clear_source (&proc->idle_source);
      if (proc->callbacks != NULL)
        proc->callbacks->left_service (proc, proc->user_data);
    }

  /* What it still has fails with its death, not with a time limit that
   * runs out while it is reaped. */
  if (state == DC_WORKER_PROC_LOST)
    {
      for (l = proc->inflight.head; l != NULL; l = l->next)
        dc_call_clear_timeout (l->data);
      proc_arm_lost_grace (proc);
    }
  else if (state == DC_WORKER_PROC_EXITED)
    clear_source (&proc->grace_source);
}

/* Reaped, its channel closed, no read under way: fail what it still had,
 * and tell the pool. */
static void
proc_finish (DcWorkerProc *proc)
{
  g_autoptr(GError) error = NULL;
  GQueue calls = G_QUEUE_INIT;
  DcCall *call;

  g_assert (proc->reaped && proc->channel == NULL && !proc->in_read);

  proc_set_state (proc, DC_WORKER_PROC_EXITED);
  /* Dead: all it wrote is in the pipe, read before its death is told. */
  if (proc->err != NULL)
    dc_worker_stderr_close (proc->err, TRUE);
  while (proc->inflight.length > 0)
    {
      call = g_queue_pop_head_link (&proc->inflight)->data;
      dc_call_detach (call);
      g_queue_push_tail_link (&calls, &call->link);
    }
  if (calls.length > 0)
    {
      error = death_error (proc);
      proc_add_last_output (proc, error);
    }

  if (proc->callbacks != NULL)
    proc->callbacks->exited (proc, proc->wait_status, &calls, error, proc->user_data);
  g_assert (calls.length == 0);
}

static void
proc_transition (DcWorkerProc *proc,
                 Event         event,
                 GError       *reason,
                 GQueue       *calls)
{
  DcWorkerProcState state = proc->state;

  dc_worker_proc_ref (proc);

  switch (event)
    {
    case EVENT_RETIRE:
      g_assert (state == DC_WORKER_PROC_RUNNING);
      proc_set_state (proc, DC_WORKER_PROC_RETIRING);
      if (proc->inflight.length == 0)
        proc_transition (proc, EVENT_IDLE, NULL, NULL);
      break;

    case EVENT_IDLE:
      g_assert (proc->inflight.length == 0);
      if (state == DC_WORKER_PROC_RUNNING)
        proc_note_idle (proc);
      else if (state == DC_WORKER_PROC_RETIRING)
        {
          /* It sees the end of its channel and leaves. */
          proc_close_channel (proc);
          proc_set_state (proc, DC_WORKER_PROC_CLOSED);
        }
      break;

    case EVENT_WRITE_FAILED:
      /* It stopped reading, so it is leaving: the replies it sent before
       * are still to be read, and the end of the stream comes next. */
      proc_drop_output (proc);
      if (state == DC_WORKER_PROC_RUNNING || state == DC_WORKER_PROC_RETIRING)
        proc_set_state (proc, DC_WORKER_PROC_LOST);
      break;

    case EVENT_EOF:
      proc_close_channel (proc);
      if (state == DC_WORKER_PROC_RUNNING || state == DC_WORKER_PROC_RETIRING)
        proc_set_state (proc, DC_WORKER_PROC_LOST);
      break;

    case EVENT_KILL:
      if (state == DC_WORKER_PROC_EXITED)
        {
          g_clear_error (&reason);
          break;
        }
      if (proc->lost_error == NULL)
        proc->lost_error = g_steal_pointer (&reason);
      g_clear_error (&reason);
      if (!proc->reaped)
        dc_process_signal (proc->pidfd, proc->pid, SIGKILL);
      proc_close_channel (proc);
      proc_set_state (proc, DC_WORKER_PROC_LOST);
      break;

    case EVENT_DETACH:
      {
        gboolean busy = proc->inflight.length > 0;
        DcCall *call;

        while (proc->inflight.length > 0)
          {
            call = g_queue_pop_head_link (&proc->inflight)->data;
            dc_call_detach (call);
            g_queue_push_tail_link (calls, &call->link);
          }
        /* An idle worker leaves when it reads the end of its channel; a
         * busy one would finish a call nobody waits for. */
        if (!proc->reaped && (busy || state == DC_WORKER_PROC_LOST))
          dc_process_signal (proc->pidfd, proc->pid, SIGKILL);
        proc_close_channel (proc);
        if (state == DC_WORKER_PROC_RUNNING && !busy)
          proc_set_state (proc, DC_WORKER_PROC_CLOSED);
        else if (state != DC_WORKER_PROC_CLOSED && state != DC_WORKER_PROC_EXITED)
          proc_set_state (proc, DC_WORKER_PROC_LOST);
      }
      break;

    case EVENT_REAPED:
      if (proc->in_read || state == DC_WORKER_PROC_EXITED)
        break;   /* proc_read() comes back here when it is done */
      /* The replies it sent before it went are still in the channel. */
      if (proc->channel != NULL)
        proc_read (proc, TRUE);
      /* Finished from a callback of those replies. */
      if (proc->state == DC_WORKER_PROC_EXITED)
        break;
      /* Whatever still holds the other end (a child of the worker's), the
       * worker is gone. */
      proc_close_channel (proc);
      if (proc->state == DC_WORKER_PROC_RUNNING || proc->state == DC_WORKER_PROC_RETIRING)
        proc_set_state (proc, DC_WORKER_PROC_LOST);
      proc_finish (proc);
      break;

    default:
      g_assert_not_reached ();
    }

  /* A worker reaped before it lost its channel is finished now. */
  if (event != EVENT_REAPED && proc->reaped && proc->channel == NULL && !proc->in_read &&
      proc->state != DC_WORKER_PROC_EXITED)
    proc_finish (proc);

  dc_worker_proc_unref (proc);
}

/* ---- what the pool asks ---- */

void
dc_worker_proc_retire (DcWorkerProc *proc)
{
  proc_transition (proc, EVENT_RETIRE, NULL, NULL);
}

void
dc_worker_proc_kill_for_call (DcWorkerProc *proc,
                              DcCall       *call,
                              GError       *reason)
{
  g_assert (!dc_call_is_pending (call) && call->worker == proc);

  g_queue_unlink (&proc->inflight, &call->link);
  dc_call_detach (call);
  dc_call_free (call);
  proc_transition (proc, EVENT_KILL, reason, NULL);
}

void
dc_worker_proc_detach (DcWorkerProc *proc,
                       GQueue       *calls)
{
  proc_transition (proc, EVENT_DETACH, NULL, calls);
}

int
dc_worker_proc_disown (DcWorkerProc *proc,
                       gboolean      own_reaper)
{
  int pidfd;

  g_assert (proc->channel == NULL && proc->inflight.length == 0);

  proc->callbacks = NULL;
  proc->settings = NULL;
  if (!own_reaper || proc->reaped || proc->watch == NULL)
    return -1;

  /* Asked to leave already; now for certain, and reaped by the caller
   * rather than by a watch nobody may dispatch. */
  dc_process_signal (proc->pidfd, proc->pid, SIGKILL);
  clear_source (&proc->grace_source);
  pidfd = dup (proc->pidfd);
  g_source_destroy (proc->watch);
  return pidfd;
}

static gboolean
exited_cb (gint         fd,
           GIOCondition condition,
           gpointer     data)
{
  DcWorkerProc *proc = data;
  int status;

  if (!dc_process_reap (proc->pidfd, FALSE, &status))
    return G_SOURCE_CONTINUE;
  proc->reaped = TRUE;
  proc->wait_status = status;
  /* Out of the poll before the number is closed: a callback below may run
   * a nested loop, where a reused number must not wake this source. */
  g_source_destroy (proc->watch);
  close (proc->pidfd);
  proc->pidfd = -1;
  proc_transition (proc, EVENT_REAPED, NULL, NULL);
  return G_SOURCE_REMOVE;
}

DcWorkerProc *
dc_worker_proc_new (GPid                         pid,
                    int                          pidfd,
                    DcChannel                   *channel,
                    int                          stderr_fd,
                    GMainContext                *context,
                    const DcWorkerProcSettings  *settings,
                    gboolean                     exit_on_die,
                    const DcWorkerProcCallbacks *callbacks,
                    gpointer                     user_data)
{
  DcWorkerProc *proc = g_new0 (DcWorkerProc, 1);

  proc->ref_count = 2;   /* the caller's, the watch's */
  proc->state = DC_WORKER_PROC_RUNNING;
  proc->pid = pid;
  proc->pidfd = pidfd;
  proc->context = context;
  proc->settings = settings;
  proc->callbacks = callbacks;
  proc->user_data = user_data;
  proc->exit_on_die = exit_on_die;
  proc->channel = channel;
  dc_wire_reader_init (&proc->reader);
  proc->rx_fds = g_array_new (FALSE, FALSE, sizeof (int));
  proc->outbuf = g_byte_array_new ();
  g_queue_init (&proc->out_marks);
  g_queue_init (&proc->inflight);

  proc_watch_channel (proc);

  proc->watch = g_unix_fd_source_new (pidfd, G_IO_IN);
  g_source_set_callback (proc->watch, G_SOURCE_FUNC (exited_cb), proc,
                         (GDestroyNotify) dc_worker_proc_unref);
  g_source_attach (proc->watch, context);

  if (stderr_fd >= 0)
    proc->err = dc_worker_stderr_new (stderr_fd, pid, context);

  proc_note_idle (proc);
  return proc;
}
