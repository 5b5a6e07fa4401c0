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
#include <time.h>
#include <unistd.h>

#include <gio/gunixfdmessage.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "dc-channel-private.h"
#include "dc-wire-private.h"

/* The parent's end of one worker channel: non-blocking reads and writes,
 * with descriptors on the socket stream, and sources that say when the
 * channel is ready.  Runs in the parent only. */

struct _DcChannel
{
  GSocket    *socket;   /* socket stream */
  GIOChannel *in;       /* pipe stream: worker -> parent */
  GIOChannel *out;      /* pipe stream: parent -> worker */
};

typedef struct
{
  DcChannelFunc func;
  gpointer      user_data;
} Trampoline;

DcChannel *
dc_channel_new_socket (int      fd,
                       GError **error)
{
  DcChannel *channel;
  GSocket *socket = g_socket_new_from_fd (fd, error);

  if (socket == NULL)
    {
      close (fd);
      return NULL;
    }

  g_socket_set_blocking (socket, FALSE);
  channel = g_new0 (DcChannel, 1);
  channel->socket = socket;
  return channel;
}

static GIOChannel *
pipe_channel_new (int fd)
{
  GIOChannel *io = g_io_channel_unix_new (fd);

  g_io_channel_set_close_on_unref (io, TRUE);
  /* Binary, unbuffered: frames go straight to read()/write(). */
  g_io_channel_set_encoding (io, NULL, NULL);
  g_io_channel_set_buffered (io, FALSE);
  g_io_channel_set_flags (io, G_IO_FLAG_NONBLOCK, NULL);
  return io;
}

DcChannel *
dc_channel_new_pipes (int read_fd,
                      int write_fd)
{
  DcChannel *channel = g_new0 (DcChannel, 1);

  channel->in = pipe_channel_new (read_fd);
  channel->out = pipe_channel_new (write_fd);
  return channel;
}

static gssize
io_status_to_result (GIOStatus  status,
                     gsize      done,
                     GError   **error,
                     GError    *io_error)
{
  switch (status)
    {
    case G_IO_STATUS_NORMAL:
      return (gssize) done;
    case G_IO_STATUS_EOF:
      return 0;
    case G_IO_STATUS_AGAIN:
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "would block");
      return -1;
    case G_IO_STATUS_ERROR:
    default:
      if (io_error != NULL)
        {
          g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE, io_error->message);
          g_error_free (io_error);
        }
      else
        g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_FAILED, "channel error");
      return -1;
    }
}

gssize
dc_channel_read (DcChannel  *channel,
                 void       *buffer,
                 gsize       size,
                 GError    **error)
{
  GError *io_error = NULL;
  GIOStatus status;
  gsize done = 0;

  if (channel->socket != NULL)
    return g_socket_receive (channel->socket, buffer, size, NULL, error);

  status = g_io_channel_read_chars (channel->in, buffer, size, &done, &io_error);
  return io_status_to_result (status, done, error, io_error);
}

static void
vectors_to_iov (const GOutputVector *vectors,
                guint                n_vectors,
                struct iovec        *iov)
{
  guint i;

  for (i = 0; i < n_vectors; i++)
    {
      iov[i].iov_base = (void *) vectors[i].buffer;
      iov[i].iov_len = vectors[i].size;
    }
}

/* What a write() gave, as the channel's functions return it. */
static gssize
write_result (ssize_t   n,
              int       errsv,
              GError  **error)
{
  if (n >= 0)
    return n;
  if (errsv == EAGAIN || errsv == EWOULDBLOCK)
    g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "would block");
  else
    g_set_error_literal (error, G_IO_ERROR, g_io_error_from_errno (errsv), g_strerror (errsv));
  return -1;
}

/* The pipe stream's writev(). */
static gssize
pipe_writev (DcChannel            *channel,
             const GOutputVector  *vectors,
             guint                 n_vectors,
             GError              **error)
{
  struct iovec iov[DC_CHANNEL_MAX_VECTORS];
  sigset_t block, old, pending;
  gboolean was_pending;
  ssize_t n;
  int errsv;

  vectors_to_iov (vectors, n_vectors, iov);

  /* A pipe has no MSG_NOSIGNAL, and the library must not change the host's
   * signal dispositions.  Block SIGPIPE in this thread for the write and
   * swallow the one the write raised, as a library writing to pipes must. */
  sigemptyset (&block);
  sigaddset (&block, SIGPIPE);
  pthread_sigmask (SIG_BLOCK, &block, &old);
  sigpending (&pending);
  was_pending = sigismember (&pending, SIGPIPE);

  do
    n = writev (g_io_channel_unix_get_fd (channel->out), iov, (int) n_vectors);
  while (n < 0 && errno == EINTR);
  errsv = errno;

  if (n < 0 && errsv == EPIPE && !was_pending)
    {
      struct timespec zero = { 0, 0 };

      sigpending (&pending);
      if (sigismember (&pending, SIGPIPE))
        sigtimedwait (&block, NULL, &zero);
    }
  pthread_sigmask (SIG_SETMASK, &old, NULL);

  return write_result (n, errsv, error);
}

gssize
dc_channel_writev (DcChannel            *channel,
                   const GOutputVector  *vectors,
                   guint                 n_vectors,
                   const int            *fds,
                   guint                 n_fds,
                   GError              **error)
{
  g_assert (n_vectors > 0 && n_vectors <= DC_CHANNEL_MAX_VECTORS);

  if (channel->socket == NULL)
    {
      g_assert (n_fds == 0);
      return pipe_writev (channel, vectors, n_vectors, error);
    }

  /* GSocket's sendmsg() takes descriptors in a GUnixFDList, which copies
   * each one, and a copy fails when the process has no free descriptor
   * number. */
  if (n_fds > 0)
    {
      struct iovec iov[DC_CHANNEL_MAX_VECTORS];
      gssize n;

      vectors_to_iov (vectors, n_vectors, iov);
      n = dc_wire_sendmsgv (g_socket_get_fd (channel->socket), iov, n_vectors, fds, n_fds);
      return write_result (n, errno, error);
    }
  /* GSocket sends with MSG_NOSIGNAL: a dead worker is EPIPE, not SIGPIPE. */
  if (n_vectors == 1)
    /* The common case of small frames, without building a message. */
    return g_socket_send (channel->socket, vectors[0].buffer, vectors[0].size, NULL, error);
  return g_socket_send_message (channel->socket, NULL, (GOutputVector *) vectors, (gint) n_vectors,
                                NULL, 0, G_SOCKET_MSG_NONE, NULL, error);
}

gboolean
dc_channel_is_socket (DcChannel *channel)
{
  return channel->socket != NULL;
}

gssize
dc_channel_read_fds (DcChannel  *channel,
                     void       *buffer,
                     gsize       size,
                     GArray     *fds,
                     GError    **error)
{
  GInputVector vector = { buffer, size };
  GSocketControlMessage **messages = NULL;
  int n_messages = 0, flags = 0, i;
  gssize n;

  g_assert (channel->socket != NULL);

  n = g_socket_receive_message (channel->socket, NULL, &vector, 1, &messages, &n_messages,
                                &flags, NULL, error);

  for (i = 0; i < n_messages; i++)
    {
      if (G_IS_UNIX_FD_MESSAGE (messages[i]))
        {
          gint n_stolen = 0;
          gint *stolen = g_unix_fd_message_steal_fds (G_UNIX_FD_MESSAGE (messages[i]), &n_stolen);

          gint j;

          /* Never into a child the host spawns later. */
          for (j = 0; j < n_stolen; j++)
            fcntl (stolen[j], F_SETFD, FD_CLOEXEC);
          g_array_append_vals (fds, stolen, (guint) n_stolen);
          g_free (stolen);
        }
      g_object_unref (messages[i]);
    }
  g_free (messages);

  /* Descriptors the kernel dropped for want of room: the stream is no
   * longer in step with its frames. */
  if (n >= 0 && (flags & MSG_CTRUNC))
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "descriptors were truncated");
      return -1;
    }
  return n;
}

static gboolean
socket_source_cb (GSocket      *socket,
                  GIOCondition  condition,
                  gpointer      data)
{
  Trampoline *t = data;
  return t->func (condition, t->user_data);
}

static gboolean
io_source_cb (GIOChannel   *io,
              GIOCondition  condition,
              gpointer      data)
{
  Trampoline *t = data;
  return t->func (condition, t->user_data);
}

GSource *
dc_channel_create_source (DcChannel     *channel,
                          GIOCondition   condition,
                          DcChannelFunc  func,
                          gpointer       user_data)
{
  Trampoline *t = g_new (Trampoline, 1);
  GSource *source;

  t->func = func;
  t->user_data = user_data;

  if (channel->socket != NULL)
    {
      source = g_socket_create_source (channel->socket, condition, NULL);
      g_source_set_callback (source, G_SOURCE_FUNC (socket_source_cb), t, g_free);
    }
  else
    {
      GIOChannel *io = (condition & G_IO_OUT) ? channel->out : channel->in;

      source = g_io_create_watch (io, condition);
      g_source_set_callback (source, G_SOURCE_FUNC (io_source_cb), t, g_free);
    }

  return source;
}

void
dc_channel_free (DcChannel *channel)
{
  if (channel == NULL)
    return;

  if (channel->socket != NULL)
    {
      g_socket_close (channel->socket, NULL);
      g_object_unref (channel->socket);
    }
  g_clear_pointer (&channel->in, g_io_channel_unref);
  g_clear_pointer (&channel->out, g_io_channel_unref);
  g_free (channel);
}
