/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>
#include <glib-unix.h>

#include "dc-detached-code-private.h"
#include "dc-enum-types.h"

void
out_fds_free (OutFds *out)
{
  g_object_unref (out->fds);
  g_free (out);
}

/* ---- workers ---- */

DcWorker *
worker_ref (DcWorker *worker)
{
  worker->ref_count++;
  return worker;
}

void
worker_unref (DcWorker *worker)
{
  if (--worker->ref_count > 0)
    return;

  g_assert (worker->channel == NULL);
  g_assert (worker->inflight.length == 0);
  dc_wire_reader_clear (&worker->reader);
  g_clear_pointer (&worker->watch, g_source_unref);
  g_clear_pointer (&worker->outbuf, g_byte_array_unref);
  g_clear_pointer (&worker->rx_fds, g_array_unref);
  g_clear_error (&worker->lost_error);
  g_free (worker);
}

/* Takes @worker out of service: no new calls go to it. */
void
worker_leave_service (DcWorker    *worker,
                      WorkerState  state)
{
  DcDetachedCode *self = worker->pool;
  WorkerState old = worker->state;

  worker->state = state;
  if (old == WORKER_RUNNING && self != NULL)
    set_n_workers (self, self->n_workers - 1);
}

/* Forgets what was not written yet. */
void
worker_drop_output (DcWorker *worker)
{
  OutFds *out;

  g_byte_array_set_size (worker->outbuf, 0);
  worker->out_pos = 0;
  while ((out = g_queue_pop_head (&worker->out_fds)) != NULL)
    out_fds_free (out);
}

/* Closes received descriptors from @first on. */
void
worker_close_rx_fds (DcWorker *worker,
                     guint     first)
{
  guint i;

  for (i = first; i < worker->rx_fds->len; i++)
    close (g_array_index (worker->rx_fds, int, i));
  g_array_set_size (worker->rx_fds, first);
}

void
worker_close_channel (DcWorker *worker)
{
  if (worker->idle_source != NULL)
    {
      g_source_destroy (worker->idle_source);
      g_clear_pointer (&worker->idle_source, g_source_unref);
    }
  if (worker->read_source != NULL)
    {
      g_source_destroy (worker->read_source);
      g_clear_pointer (&worker->read_source, g_source_unref);
    }
  if (worker->write_source != NULL)
    {
      g_source_destroy (worker->write_source);
      g_clear_pointer (&worker->write_source, g_source_unref);
    }
  g_clear_pointer (&worker->channel, dc_channel_free);
  worker_drop_output (worker);
  worker_close_rx_fds (worker, 0);
}

/* Takes @worker out of service for good: it finishes the calls it has,
 * then its channel is closed and it leaves on its own. */
void
worker_retire (DcWorker *worker)
{
  worker_leave_service (worker, WORKER_RETIRING);
  worker->close_when_idle = TRUE;
  if (worker->inflight.length == 0)
    worker_close_channel (worker);
}

gboolean
worker_idle_timeout_cb (gpointer data)
{
  DcWorker *worker = data;
  DcDetachedCode *self = worker->pool;

  g_clear_pointer (&worker->idle_source, g_source_unref);

  if (self == NULL || worker->state != WORKER_RUNNING || worker->inflight.length > 0)
    return G_SOURCE_REMOVE;

  /* Busy and idle again meanwhile: wait out the rest. */
  if (g_get_monotonic_time () - worker->idle_since <
      (gint64) self->idle_timeout * G_TIME_SPAN_MILLISECOND)
    {
      worker_note_idle (worker);
      return G_SOURCE_REMOVE;
    }

  if (self->n_workers > self->min_workers)
    {
      worker_retire (worker);
      update_stats (self);
    }
  return G_SOURCE_REMOVE;
}

/* @worker has no call: start counting towards idle-timeout. */
void
worker_note_idle (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  gint64 remaining;

  if (self == NULL || self->idle_timeout == 0 || worker->state != WORKER_RUNNING)
    return;

  if (worker->idle_source == NULL)
    worker->idle_since = g_get_monotonic_time ();
  else
    return;

  remaining = (gint64) self->idle_timeout * G_TIME_SPAN_MILLISECOND -
              (g_get_monotonic_time () - worker->idle_since);
  worker->idle_source = g_timeout_source_new ((guint) MAX (remaining / 1000, 1));
  g_source_set_callback (worker->idle_source, worker_idle_timeout_cb, worker, NULL);
  g_source_attach (worker->idle_source, self->context);
}

/* Kills @worker for a reason of ours; its in-flight calls will fail with
 * @reason (transfer full) once it is reaped. */
void
worker_kill (DcWorker *worker,
             GError   *reason)
{
  if (worker->lost_error == NULL)
    worker->lost_error = reason;
  else
    g_error_free (reason);

  if (!worker->exited)
    kill (worker->pid, SIGKILL);
  worker_lost (worker);
}

char *
describe_wait_status (GPid pid,
                      int  status)
{
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

/* Why the calls still in flight on a dead worker failed. */
GError *
worker_death_error (DcWorker *worker)
{
  g_autofree char *status = NULL;

  if (worker->lost_error != NULL)
    return g_error_copy (worker->lost_error);

  if (worker->setup_step != 0)
    {
      const char *what;

      switch (worker->setup_step)
        {
        case DC_WIRE_SETUP_STEP_CWD:
          what = _("cannot change to the working directory");
          break;
        case DC_WIRE_SETUP_STEP_DESCRIPTORS:
        default:
          what = _("cannot set up its descriptors");
          break;
        }
      return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SPAWN,
                          _("Worker process %d could not start: %s: %s"),
                          (int) worker->pid, what, g_strerror ((int) worker->setup_errno));
    }

  status = describe_wait_status (worker->pid, worker->wait_status);
  return g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_WORKER_DIED, status);
}

/* The worker is gone and reaped: fail what it still had, forget it. */
void
worker_finish (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  g_autoptr(GError) error = NULL;
  GQueue calls = G_QUEUE_INIT;
  GList *l;

  g_assert (worker->exited);
  g_assert (worker->channel == NULL);

  if (self == NULL)
    return;

  worker->pool = NULL;

  /* Shut down: it had no calls left, only its exit to report. */
  if (worker->departed)
    {
      self->departed = g_list_remove (self->departed, worker);
      g_object_ref (self);
      g_signal_emit (self, signals[SIGNAL_WORKER_EXITED], 0, (gint) worker->pid, worker->wait_status);
      worker_unref (worker);
      g_object_unref (self);
      return;
    }

  self->workers = g_list_remove (self->workers, worker);

  calls = worker->inflight;
  g_queue_init (&worker->inflight);
  for (l = calls.head; l != NULL; l = l->next)
    call_detach (l->data);
  if (calls.length > 0)
    error = worker_death_error (worker);

  g_object_ref (self);
  g_signal_emit (self, signals[SIGNAL_WORKER_EXITED], 0, (gint) worker->pid, worker->wait_status);
  worker_unref (worker);   /* the pool's reference */

  /* n-workers is already lower; calls queued behind get a fresh worker
   * before the failed ones' callbacks run. */
  dispatch (self);
  if (error != NULL)
    fail_calls (&calls, error);
  update_stats (self);
  g_object_unref (self);
}

/* The channel broke, or we killed the worker.  It stops taking calls now;
 * its calls fail once its exit status is known. */
void
worker_lost (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  GList *l;

  worker_leave_service (worker, WORKER_LOST);
  worker_close_channel (worker);

  /* What it still had fails with its death, not with a time limit that
   * runs out while it is reaped. */
  for (l = worker->inflight.head; l != NULL; l = l->next)
    call_clear_timeout (l->data);

  if (worker->exited && !worker->reading)
    worker_finish (worker);
  else if (self != NULL)
    dispatch (self);
}

/* Once the worker is reaped: read the replies it sent before it went
 * (they are still in the channel), then fail what is left. */
void
worker_check_exited (DcWorker *worker)
{
  if (!worker->exited || worker->reading || worker->pool == NULL)
    return;

  if (worker->channel != NULL)
    worker_read (worker, TRUE);
  if (worker->pool == NULL)
    return;   /* finished from a callback */
  if (worker->channel != NULL)
    worker_lost (worker);
  else
    worker_finish (worker);
}

void
child_watch_cb (GPid     pid,
                int      status,
                gpointer data)
{
  DcWorker *worker = data;

  worker->exited = TRUE;
  worker->wait_status = status;
  g_spawn_close_pid (pid);

  worker_ref (worker);
  worker_check_exited (worker);
  worker_unref (worker);
}

GError *
protocol_error (DcWorker   *worker,
                const char *why)
{
  return g_error_new (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                      _("Worker process %d sent a malformed message and was killed: %s"),
                      (int) worker->pid, why);
}

/* Puts calls written to a worker that will never run them back at the
 * head of the queue, in their order. */
void
requeue_inflight (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  GList *link;

  /* A call keeps its payload until it completes, so it can be sent
   * again as it is. */
  while ((link = g_queue_pop_tail_link (&worker->inflight)) != NULL)
    {
      DcCall *call = link->data;

      call->worker = NULL;
      call->where = CALL_QUEUED;
      call_clear_timeout (call);
      if (call->task == NULL)
        call_free (call);   /* cancelled meanwhile: nobody waits for it */
      else
        g_queue_push_head_link (&self->queue, link);
    }
  worker_drop_output (worker);
}

GError *
marshal_failed_error (DcWorker *worker,
                      GBytes   *payload)
{
  gsize size;
  const guint8 *data = g_bytes_get_data (payload, &size);
  guint32 reason;
  g_autofree char *type_string = NULL;
  GError *error = NULL;

  if (size < 4)
    return NULL;
  memcpy (&reason, data, 4);
  type_string = g_strndup ((const char *) data + 4, size - 4);
  if ((reason != DC_WIRE_MARSHAL_BAD_TYPE && reason != DC_WIRE_MARSHAL_TOO_LARGE &&
       reason != DC_WIRE_MARSHAL_NO_FDS && reason != DC_WIRE_MARSHAL_TOO_MANY_FDS) ||
      strlen (type_string) != size - 4 ||
      !g_variant_type_string_is_valid (type_string))
    return NULL;

  dc_wire_set_marshal_error (&error, reason, type_string);
  return error;
}

/* Handles one frame.  Returns FALSE if the worker can no longer be read. */
/* Takes the frame's descriptors from those received: a memfd payload
 * replaces @payload, the rest go to @fd_list.  FALSE if the worker lied. */
gboolean
worker_claim_fds (DcWorker            *worker,
                  const DcWireHeader  *header,
                  GBytes             **payload,
                  GUnixFDList        **fd_list,
                  GError             **error)
{
  guint n = header->n_fds;

  if (worker->rx_fds->len < n)
    {
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                           _("a message without its descriptors"));
      return FALSE;
    }
  if (n > 0 && header->type != DC_WIRE_RESULT)
    {
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                           _("descriptors with a message that takes none"));
      return FALSE;
    }

  if (header->flags & DC_WIRE_FLAG_MEMFD)
    {
      guint64 size;
      GBytes *mapped;

      memcpy (&size, g_bytes_get_data (*payload, NULL), 8);
      mapped = dc_wire_bytes_from_memfd (g_array_index (worker->rx_fds, int, 0), size, error);
      g_array_remove_range (worker->rx_fds, 0, 1);
      n--;
      if (mapped == NULL)
        return FALSE;
      g_bytes_unref (*payload);
      *payload = mapped;
    }

  if (n > 0)
    {
      *fd_list = g_unix_fd_list_new_from_array ((const gint *) worker->rx_fds->data, (gint) n);
      g_array_remove_range (worker->rx_fds, 0, n);
    }
  return TRUE;
}

gboolean
worker_handle_frame (DcWorker           *worker,
                     const DcWireHeader *header,
                     GBytes             *payload_in,
                     GQueue             *completed)
{
  DcDetachedCode *self = worker->pool;
  g_autoptr(GBytes) payload = g_bytes_ref (payload_in);
  g_autoptr(GUnixFDList) fd_list = NULL;
  g_autoptr(GError) fd_error = NULL;
  DcCall *call;
  GVariant *value = NULL;
  GError *error = NULL;
  gboolean failed = TRUE;

  if (!worker_claim_fds (worker, header, &payload, &fd_list, &fd_error))
    {
      worker_kill (worker, protocol_error (worker, fd_error->message));
      return FALSE;
    }

  if (header->type == DC_WIRE_SETUP_FAILED)
    {
      const guint32 *words = g_bytes_get_data (payload, NULL);

      /* Only ever the first thing a worker sends. */
      if (g_bytes_get_size (payload) != 8 || worker->setup_step != 0 || worker->n_replies > 0)
        {
          worker_kill (worker, protocol_error (worker, _("a malformed set-up report")));
          return FALSE;
        }
      worker->setup_step = MAX (words[0], 1);
      worker->setup_errno = words[1];
      /* It exits next; its calls fail with SPAWN when it is reaped. */
      worker_leave_service (worker, WORKER_RETIRING);
      return TRUE;
    }

  worker->n_replies++;
  call = g_queue_peek_head (&worker->inflight);
  if (call == NULL || header->serial != call->serial || header->type == DC_WIRE_CALL)
    {
      worker_kill (worker, protocol_error (worker, call == NULL ? _("a reply without a call")
                                                   : header->type == DC_WIRE_CALL ? _("a message of the wrong type")
                                                   : _("a reply out of order")));
      return FALSE;
    }

  switch ((DcWireType) header->type)
    {
    case DC_WIRE_RESULT:
      value = dc_wire_unmarshal (self->marshaller, payload, &error);
      failed = FALSE;
      if (value == NULL)
        {
          worker_kill (worker, protocol_error (worker, error->message));
          g_clear_error (&error);
          return FALSE;
        }
      break;

    case DC_WIRE_ERROR:
      error = dc_wire_decode_error (payload, NULL);
      if (error == NULL)
        {
          worker_kill (worker, protocol_error (worker, _("a malformed error report")));
          return FALSE;
        }
      break;

    case DC_WIRE_NULL_RESULT:
      error = g_error_new_literal (DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_FAILED,
                                   _("The code returned no value and set no error"));
      break;

    case DC_WIRE_MARSHAL_FAILED:
      error = marshal_failed_error (worker, payload);
      if (error == NULL)
        {
          worker_kill (worker, protocol_error (worker, _("a malformed marshalling report")));
          return FALSE;
        }
      break;

    case DC_WIRE_CALL:
    case DC_WIRE_SETUP_FAILED:
    default:
      g_assert_not_reached ();
    }

  g_queue_unlink (&worker->inflight, &call->link);
  worker_arm_timeout (worker);

  if (failed && worker->exit_on_die)
    {
      /* It exits after this reply, without reading what else we wrote. */
      worker_leave_service (worker, WORKER_RETIRING);
      requeue_inflight (worker);
    }

  if (worker->inflight.length == 0 && worker->close_when_idle)
    worker_close_channel (worker);   /* retired: it sees the end and leaves */

  /* Descriptors that came back travel with the task. */
  if (fd_list != NULL && call->task != NULL)
    g_task_set_task_data (call->task, g_steal_pointer (&fd_list), g_object_unref);

  /* Give the worker its next call before running this one's callback,
   * which waits until the read is over: a callback may run a nested main
   * loop, where this worker must be readable again. */
  dispatch (self);
  if (worker->inflight.length == 0 && worker->channel != NULL)
    worker_note_idle (worker);
  call_detach (call);
  call->result = value;
  call->result_error = error;
  g_queue_push_tail_link (completed, &call->link);

  return worker->channel != NULL;
}

/* Reads what the worker has sent, without blocking: a bounded amount, or
 * everything there is when @drain.  Returns FALSE when the channel is gone.
 * Callbacks run from here may re-enter the pool. */
gboolean
worker_read (DcWorker *worker,
             gboolean  drain)
{
  guint8 buf[16 * 1024];
  gboolean keep = TRUE;
  GQueue completed = G_QUEUE_INIT;
  DcDetachedCode *self;
  GList *link;
  guint rounds;

  if (worker->reading || worker->channel == NULL)
    return worker->channel != NULL;

  /* Callbacks may drop the last reference to the pool. */
  self = worker->pool ? g_object_ref (worker->pool) : NULL;
  worker_ref (worker);
  worker->reading = TRUE;

  /* Bounded, so that one chatty worker cannot starve the context. */
  for (rounds = 0; keep && (drain || rounds < 64); rounds++)
    {
      g_autoptr(GError) error = NULL;
      gsize space = 0;
      guint8 *direct = dc_wire_reader_direct_buffer (&worker->reader, &space);
      const guint8 *p;
      gsize len;
      gssize n;

      /* A large payload is read straight into its final buffer. */
      if (direct == NULL || space < sizeof buf)
        direct = NULL;
      if (dc_channel_is_socket (worker->channel))
        n = dc_channel_read_fds (worker->channel, direct ? direct : buf,
                                 direct ? space : sizeof buf, worker->rx_fds, &error);
      else
        n = dc_channel_read (worker->channel, direct ? direct : buf,
                             direct ? space : sizeof buf, &error);

      /* Descriptors nobody claims pile up: a worker sending them is lying. */
      if (worker->rx_fds->len > DC_WIRE_MAX_FDS)
        {
          worker_kill (worker, protocol_error (worker, _("descriptors without messages")));
          keep = FALSE;
          break;
        }

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        break;
      if (n <= 0)
        {
          worker_lost (worker);
          keep = FALSE;
          break;
        }

      if (direct != NULL)
        {
          dc_wire_reader_advance (&worker->reader, (gsize) n);
          if (dc_wire_reader_frame_ready (&worker->reader))
            {
              DcWireHeader header;
              g_autoptr(GBytes) payload = NULL;

              dc_wire_reader_take_frame (&worker->reader, &header, &payload);
              keep = worker_handle_frame (worker, &header, payload, &completed);
            }
          continue;
        }

      p = buf;
      len = (gsize) n;
      while (keep && len > 0)
        {
          DcWireHeader header;
          g_autoptr(GBytes) payload = NULL;
          g_autoptr(GError) why = NULL;

          switch (dc_wire_reader_feed (&worker->reader, &p, &len, &header, &payload))
            {
            case DC_WIRE_READ_FRAME:
              keep = worker_handle_frame (worker, &header, payload, &completed);
              break;
            case DC_WIRE_READ_ERROR:
              dc_wire_reader_set_error (&worker->reader, &why);
              worker_kill (worker, protocol_error (worker, why->message));
              keep = FALSE;
              break;
            case DC_WIRE_READ_NEED_MORE:
            default:
              break;
            }
        }

      /* A short read took all there was: the source says when more comes,
       * without another recv() to learn that it would block. */
      if (!drain && (gsize) n < sizeof buf)
        break;
    }

  worker->reading = FALSE;

  while ((link = g_queue_pop_head_link (&completed)) != NULL)
    {
      DcCall *call = link->data;

      call_complete (call, g_steal_pointer (&call->result), g_steal_pointer (&call->result_error));
    }
  keep = keep && worker->channel != NULL;

  /* The child watch fired while we were busy. */
  worker_check_exited (worker);

  if (self != NULL)
    g_object_unref (self);
  worker_unref (worker);
  return keep;
}

gboolean
worker_readable_cb (GIOCondition condition,
                    gpointer     data)
{
  DcWorker *worker = data;

  return worker_read (worker, FALSE) ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* Writes what can be written now; waits for the channel otherwise. */
void
worker_flush (DcWorker *worker)
{
  while (worker->channel != NULL && worker->out_pos < worker->outbuf->len)
    {
      g_autoptr(GError) error = NULL;
      OutFds *next = g_queue_peek_head (&worker->out_fds);
      gsize end = worker->outbuf->len;
      gssize n;

      /* A frame's descriptors go with its first byte, in one sendmsg()
       * that reaches no further than the next frame with descriptors. */
      if (next != NULL && next->offset == worker->out_pos)
        {
          OutFds *after = g_queue_peek_nth (&worker->out_fds, 1);

          if (after != NULL)
            end = after->offset;
          n = dc_channel_write_fds (worker->channel, worker->outbuf->data + worker->out_pos,
                                    end - worker->out_pos, next->fds, &error);
          if (n > 0)
            out_fds_free (g_queue_pop_head (&worker->out_fds));
        }
      else
        {
          if (next != NULL)
            end = next->offset;
          n = dc_channel_write (worker->channel, worker->outbuf->data + worker->out_pos,
                                end - worker->out_pos, &error);
        }

      if (n > 0)
        {
          worker->out_pos += (gsize) n;
          continue;
        }

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        {
          if (worker->write_source == NULL)
            {
              worker->write_source = dc_channel_create_source (worker->channel, G_IO_OUT,
                                                               worker_writable_cb, worker);
              g_source_attach (worker->write_source, worker->pool->context);
            }
          return;
        }

      /* Broken: the worker is gone.  Stop writing, and keep reading: the
       * replies it sent before it went are still to be read, and the end
       * of the stream comes next. */
      worker_leave_service (worker, WORKER_LOST);
      break;
    }

  if (worker->channel == NULL)
    return;

  /* Drained, or broken. */
  worker_drop_output (worker);
  if (worker->write_source != NULL)
    {
      g_source_destroy (worker->write_source);
      g_clear_pointer (&worker->write_source, g_source_unref);
    }
}

gboolean
worker_writable_cb (GIOCondition condition,
                    gpointer     data)
{
  DcWorker *worker = data;

  worker_ref (worker);
  worker_flush (worker);
  worker_unref (worker);
  /* worker_flush() destroys the source itself once drained. */
  return G_SOURCE_CONTINUE;
}

/* The limit counts from when the call runs: from its write to an idle
 * worker, or, pipelined, from the reply of the call before it.  Time in
 * the queue, or behind another call, does not count. */
void
worker_arm_timeout (DcWorker *worker)
{
  DcDetachedCode *self = worker->pool;
  DcCall *head = g_queue_peek_head (&worker->inflight);

  if (self == NULL || self->call_timeout == 0 || head == NULL || head->timeout_source != NULL)
    return;
  head->timeout_source = g_timeout_source_new (self->call_timeout);
  g_source_set_callback (head->timeout_source, call_timeout_cb, head, NULL);
  g_source_attach (head->timeout_source, self->context);
}

/* A call whose frame carries descriptors: its own, and the payload as a
 * sealed memfd when it is large.  Socket stream only. */
void
send_call_with_fds (DcWorker *worker,
                    DcCall   *call)
{
  DcDetachedCode *self = worker->pool;
  gsize size;
  const guint8 *data = g_bytes_get_data (call->payload, &size);
  guint8 header[DC_WIRE_HEADER_SIZE];
  OutFds *out = g_new0 (OutFds, 1);
  guint flags = 0;
  guint64 size64 = size;

  out->offset = worker->outbuf->len;
  out->fds = g_unix_fd_list_new ();

  /* Made once, and kept for a resend. */
  if (call->memfd < 0 && self->memfd_threshold > 0 && size >= self->memfd_threshold)
    call->memfd = dc_wire_memfd_from_bytes (call->payload, NULL);
  if (call->memfd >= 0)
    {
      flags |= DC_WIRE_FLAG_MEMFD;
      g_unix_fd_list_append (out->fds, call->memfd, NULL);
      data = (const guint8 *) &size64;
      size = 8;
    }
  if (call->fd_list != NULL)
    {
      gint i, n;
      const gint *fds = g_unix_fd_list_peek_fds (call->fd_list, &n);

      for (i = 0; i < n; i++)
        g_unix_fd_list_append (out->fds, fds[i], NULL);
    }

  dc_wire_header_encode_full (header, DC_WIRE_CALL, flags,
                              (guint) g_unix_fd_list_get_length (out->fds), call->serial, size);
  g_byte_array_append (worker->outbuf, header, sizeof header);
  g_byte_array_append (worker->outbuf, data, size);
  g_queue_push_tail (&worker->out_fds, out);
}

void
send_call (DcWorker *worker,
           DcCall   *call)
{
  DcDetachedCode *self = worker->pool;
  gsize size;
  const guint8 *data = g_bytes_get_data (call->payload, &size);

  if (worker->idle_source != NULL)
    {
      g_source_destroy (worker->idle_source);
      g_clear_pointer (&worker->idle_source, g_source_unref);
    }

  call->worker = worker;
  call->where = CALL_IN_FLIGHT;
  g_queue_push_tail_link (&worker->inflight, &call->link);
  worker_arm_timeout (worker);

  if (call->fd_list == NULL && (self->memfd_threshold == 0 || size < self->memfd_threshold ||
                                !dc_channel_is_socket (worker->channel)))
    dc_wire_append_frame (worker->outbuf, DC_WIRE_CALL, call->serial, data, size);
  else
    send_call_with_fds (worker, call);

  /* Its last call: a replacement may fork at once, while it finishes. */
  if (self->max_worker_calls > 0 && ++worker->n_calls >= self->max_worker_calls)
    worker_retire (worker);
}
