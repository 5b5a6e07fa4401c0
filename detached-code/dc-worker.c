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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dc-wire-private.h"
#include "dc-worker-private.h"


/* How long a reply may wait for the replies of calls pipelined behind it. */
#define DC_WORKER_REPLY_DELAY_US 200

/* Keep the channel this far below the descriptor limit's top.  Low numbers
 * belong to the host's own state (a GMainContext's wake-up eventfd, say),
 * which user code in the worker may still write to. */
#define DC_WORKER_TARGET_CEILING 1024

void
dc_worker_pick_targets (DcWorkerSetup *setup)
{
  struct rlimit rl;
  int top = DC_WORKER_TARGET_CEILING;

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur < (rlim_t) top)
    top = (int) rl.rlim_cur;

  /* The top two numbers below the limit; never inside 0..2. */
  setup->target_write_fd = MAX (top - 1, 4);
  setup->target_read_fd = setup->read_fd == setup->write_fd
                            ? setup->target_write_fd
                            : setup->target_write_fd - 1;
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe (see signal-safety(7)): write() and _exit(). */
G_NORETURN static void
setup_fail (int             fd,
            DcWireSetupStep step,
            int             errsv)
{
  guint8 frame[DC_WIRE_HEADER_SIZE + 8];
  DcWireHeader header = { 8, DC_WIRE_SETUP_FAILED, 0 };
  guint32 words[2] = { step, (guint32) errsv };
  ssize_t n;

  memcpy (frame, &header, sizeof header);
  memcpy (frame + DC_WIRE_HEADER_SIZE, words, sizeof words);
  do
    n = write (fd, frame, sizeof frame);
  while (n < 0 && errno == EINTR);

  _exit (DC_WORKER_EXIT_SETUP);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: dup2(), fcntl(). */
static int
move_fd (int from,
         int to)
{
  int r;

  if (from == to)
    {
      /* dup2() onto itself keeps FD_CLOEXEC; clear it by hand. */
      do
        r = fcntl (from, F_SETFD, 0);
      while (r < 0 && errno == EINTR);
      return r;
    }

  do
    r = dup2 (from, to);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -1 : 0;
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: open(), dup2(), close(). */
static int
std_fd_to_dev_null (int std_fd)
{
  int null_fd, r;

  do
    null_fd = open ("/dev/null", O_RDWR | O_CLOEXEC);
  while (null_fd < 0 && errno == EINTR);
  if (null_fd < 0)
    return -1;

  r = move_fd (null_fd, std_fd);
  if (null_fd != std_fd)
    close (null_fd);
  return r;
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: sigaction(), sigprocmask(), prctl(),
 * getppid(), dup2(), fcntl(), open(), close(), close_range(), chdir(), and
 * a store to environ.  Nothing here allocates or takes a lock. */
void
dc_worker_child_setup (const DcWorkerSetup *setup)
{
  struct sigaction dfl;
  sigset_t empty;
  int rfd = setup->read_fd;
  int wfd = setup->write_fd;
  int lo, hi, sig, i;

  /* Default dispositions before unblocking: a handler the host installed
   * (GLib's SIGCHLD handler, an interpreter's wake-up fd writer) must never
   * run here. */
  memset (&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset (&dfl.sa_mask);
  for (sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP)
      sigaction (sig, &dfl, NULL);   /* EINVAL for libc-reserved numbers */
  sigemptyset (&empty);
  sigprocmask (SIG_SETMASK, &empty, NULL);

  /* Die with the parent.  The signal is tied to the forking thread's exit;
   * getppid() closes the race with a parent that died before prctl(). */
  prctl (PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid () != setup->parent_pid)
    _exit (DC_WORKER_EXIT_SETUP);

  /* Move the channel to its high numbers.  A write end sitting on the read
   * end's target must move away first. */
  if (wfd != rfd && wfd == setup->target_read_fd)
    {
      do
        wfd = fcntl (wfd, F_DUPFD_CLOEXEC, 3);
      while (wfd < 0 && errno == EINTR);
      if (wfd < 0)
        setup_fail (setup->write_fd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
    }
  if (move_fd (rfd, setup->target_read_fd) < 0)
    setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
  if (wfd != rfd && move_fd (wfd, setup->target_write_fd) < 0)
    setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
  wfd = setup->target_write_fd;

  /* 0..2: /dev/null unless inherited.  A standard number the parent had
   * closed may hold a copy of our channel; that is never inherited. */
  for (i = 0; i <= 2; i++)
    {
      gboolean inherit;

      switch (i)
        {
        case 0: inherit = (setup->flags & DC_SETUP_INHERIT_STDIN) != 0; break;
        case 1: inherit = (setup->flags & DC_SETUP_INHERIT_STDOUT) != 0; break;
        default: inherit = (setup->flags & DC_SETUP_SILENCE_STDERR) == 0; break;
        }
      if (i == setup->read_fd || i == setup->write_fd || fcntl (i, F_GETFD) < 0)
        inherit = FALSE;
      if (!inherit && std_fd_to_dev_null (i) < 0)
        setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
      if (inherit && move_fd (i, i) < 0)
        setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
    }

  /* Nothing else the parent had open survives: not its files, not its
   * main context's eventfd, not another worker's channel (which would
   * keep that worker from seeing EOF). */
  lo = MIN (setup->target_read_fd, setup->target_write_fd);
  hi = MAX (setup->target_read_fd, setup->target_write_fd);
  if (lo > 3)
    close_range (3, (unsigned int) lo - 1, 0);
  if (hi - lo > 1)
    close_range ((unsigned int) lo + 1, (unsigned int) hi - 1, 0);
  close_range ((unsigned int) hi + 1, ~0U, 0);

  if (setup->cwd != NULL && chdir (setup->cwd) < 0)
    setup_fail (wfd, DC_WIRE_SETUP_STEP_CWD, errno);

  /* The parent built this array; storing the pointer is all setenv() would
   * need, without its lock or its allocation. */
  if (setup->envp != NULL)
    environ = setup->envp;
}

/* Not async-signal-safe: runs after the user's init function. */
static gboolean
write_all (int         fd,
           const void *data,
           gsize       len)
{
  const guint8 *p = data;

  while (len > 0)
    {
      ssize_t n = write (fd, p, len);

      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      p += n;
      len -= (gsize) n;
    }
  return TRUE;
}

/* Replies wait in @out while more calls are at hand, so that a burst of
 * pipelined calls costs one write() rather than one each.  None waits
 * long: see dc_worker_serve(). */
typedef struct
{
  int         fd;
  GByteArray *out;
  gint64      first_pending;   /* when the oldest waiting reply was made */
} Replies;

/* Not async-signal-safe. */
static gboolean
replies_flush (Replies *replies)
{
  gboolean ok = write_all (replies->fd, replies->out->data, replies->out->len);

  g_byte_array_set_size (replies->out, 0);
  return ok;
}

/* Not async-signal-safe. */
static gboolean
send_frame (Replies      *replies,
            DcWireType    type,
            guint64       serial,
            const void   *payload,
            gsize         size)
{
  /* A large payload goes in its own write() rather than through a copy. */
  if (size > 64 * 1024)
    {
      guint8 header[DC_WIRE_HEADER_SIZE];

      dc_wire_header_encode (header, type, serial, size);
      return replies_flush (replies) &&
             write_all (replies->fd, header, sizeof header) &&
             write_all (replies->fd, payload, size);
    }

  if (replies->out->len == 0)
    replies->first_pending = g_get_monotonic_time ();
  dc_wire_append_frame (replies->out, type, serial, payload, size);
  return TRUE;
}

/* Not async-signal-safe: calls the user's code.  Returns FALSE when the
 * worker must leave: the channel broke, or the code failed under
 * exit-on-die. */
static gboolean
handle_call (Replies            *replies,
             const DcWorkerCode *code,
             const DcWireHeader *header,
             GBytes             *payload,
             int                *exit_status)
{
  g_autoptr(GVariant) args = NULL;
  g_autoptr(GVariant) result = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = NULL;
  DcWireMarshalStatus status;
  gint64 started;
  gboolean slow;
  gboolean ok;

  args = dc_wire_unmarshal_raw (code->marshaller, payload);
  if (args == NULL)
    {
      *exit_status = DC_WORKER_EXIT_BAD_REQUEST;
      return FALSE;
    }

  /* Replies made so far go out before code that may run long. */
  if (replies->out->len > 0 &&
      g_get_monotonic_time () - replies->first_pending > DC_WORKER_REPLY_DELAY_US &&
      !replies_flush (replies))
    {
      *exit_status = DC_WORKER_EXIT_CHANNEL;
      return FALSE;
    }

  started = g_get_monotonic_time ();
  result = code->func (args, code->user_data, &error);
  /* A slow call gains nothing from batching: its reply goes now. */
  slow = g_get_monotonic_time () - started > DC_WORKER_REPLY_DELAY_US;

  if (result != NULL)
    {
      g_clear_error (&error);   /* a value and an error: the value wins */
      g_variant_take_ref (result);
      reply = dc_wire_marshal_raw (code->marshaller, result, &status);
      if (reply != NULL)
        {
          if (send_frame (replies, DC_WIRE_RESULT, header->serial,
                          g_bytes_get_data (reply, NULL), g_bytes_get_size (reply)) &&
              (!slow || replies_flush (replies)))
            return TRUE;
          *exit_status = DC_WORKER_EXIT_CHANNEL;
          return FALSE;
        }
      else
        {
          /* The parent composes the message: no gettext in a worker. */
          const char *type_string = g_variant_get_type_string (result);
          guint32 reason = status;
          g_autoptr(GByteArray) body = g_byte_array_new ();

          g_byte_array_append (body, (const guint8 *) &reason, 4);
          g_byte_array_append (body, (const guint8 *) type_string, strlen (type_string));
          ok = send_frame (replies, DC_WIRE_MARSHAL_FAILED, header->serial,
                           body->data, body->len);
        }
    }
  else if (error != NULL)
    {
      reply = dc_wire_encode_error (error);
      ok = send_frame (replies, DC_WIRE_ERROR, header->serial,
                       g_bytes_get_data (reply, NULL), g_bytes_get_size (reply));
    }
  else
    ok = send_frame (replies, DC_WIRE_NULL_RESULT, header->serial, NULL, 0);

  /* Every path here is a failed call: under exit-on-die the worker
   * leaves next, and its reply must be out before. */
  if (ok && (slow || code->exit_on_die))
    ok = replies_flush (replies);
  if (!ok)
    {
      *exit_status = DC_WORKER_EXIT_CHANNEL;
      return FALSE;
    }
  if (code->exit_on_die)
    {
      *exit_status = DC_WORKER_EXIT_OK;
      return FALSE;
    }

  return TRUE;
}

/* Not async-signal-safe. */
int
dc_worker_serve (int                 read_fd,
                 int                 write_fd,
                 const DcWorkerCode *code)
{
  DcWireReader reader;
  g_autoptr(GByteArray) out = g_byte_array_new ();
  Replies replies = { write_fd, out, 0 };
  guint8 *buf = g_malloc (64 * 1024);
  int exit_status = DC_WORKER_EXIT_OK;

  dc_wire_reader_init (&reader);

  for (;;)
    {
      gsize space = 0;
      guint8 *direct = dc_wire_reader_direct_buffer (&reader, &space);
      ssize_t n;

      /* Nothing more at hand: what waits goes out before we block. */
      if (out->len > 0 && !replies_flush (&replies))
        {
          exit_status = DC_WORKER_EXIT_CHANNEL;
          break;
        }

      if (direct != NULL && space >= 64 * 1024)
        {
          /* A large payload is read straight into its final buffer. */
          n = read (read_fd, direct, space);
          if (n > 0)
            dc_wire_reader_advance (&reader, (gsize) n);
        }
      else
        {
          direct = NULL;
          n = read (read_fd, buf, 64 * 1024);
        }

      if (n < 0 && errno == EINTR)
        continue;
      if (n == 0)
        break;   /* the parent closed the channel: time to go */
      if (n < 0)
        {
          exit_status = DC_WORKER_EXIT_CHANNEL;
          break;
        }

      if (direct != NULL)
        {
          if (dc_wire_reader_frame_ready (&reader))
            {
              DcWireHeader header;
              g_autoptr(GBytes) payload = NULL;

              dc_wire_reader_take_frame (&reader, &header, &payload);
              if (header.type != DC_WIRE_CALL)
                {
                  exit_status = DC_WORKER_EXIT_BAD_REQUEST;
                  break;
                }
              if (!handle_call (&replies, code, &header, payload, &exit_status))
                break;
            }
          continue;
        }

      {
        const guint8 *p = buf;
        gsize len = (gsize) n;
        gboolean leave = FALSE;

        while (!leave && len > 0)
          {
            DcWireHeader header;
            g_autoptr(GBytes) payload = NULL;

            switch (dc_wire_reader_feed (&reader, &p, &len, &header, &payload))
              {
              case DC_WIRE_READ_NEED_MORE:
                break;
              case DC_WIRE_READ_FRAME:
                if (header.type != DC_WIRE_CALL)
                  {
                    exit_status = DC_WORKER_EXIT_BAD_REQUEST;
                    leave = TRUE;
                  }
                else if (!handle_call (&replies, code, &header, payload, &exit_status))
                  leave = TRUE;
                break;
              case DC_WIRE_READ_ERROR:
              default:
                exit_status = DC_WORKER_EXIT_BAD_REQUEST;
                leave = TRUE;
                break;
              }
          }
        if (leave)
          break;
      }
    }

  dc_wire_reader_clear (&reader);
  g_free (buf);
  return exit_status;
}

/* Runs in the child from fork() to _exit(). */
void
dc_worker_main (const DcWorkerSetup *setup,
                const DcWorkerCode  *code)
{
  dc_worker_child_setup (setup);

  /* From here on the user's code runs, and so may anything it may. */
  if (code->init_func != NULL)
    code->init_func (code->init_data);

  /* _exit(): the parent's atexit handlers and stdio buffers are not ours. */
  _exit (dc_worker_serve (setup->target_read_fd, setup->target_write_fd, code));
}
