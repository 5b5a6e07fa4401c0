/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The worker side, after fork(): the async-signal-safe set-up, then the
 * loop that reads calls, runs the user's code and writes replies. */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "dc-sandbox-private.h"
#include "dc-wire-private.h"
#include "dc-worker-private.h"


/* Keep the channel this far below the descriptor limit's top.  Low numbers
 * belong to the host's own state (a GMainContext's wake-up eventfd, say),
 * which user code in the worker may still write to. */
#define DC_WORKER_TARGET_CEILING 1024

/* Called in the parent, and in the template, where it must be
 * async-signal-safe: getrlimit() only. */
void
dc_worker_pick_targets (DcWorkerSetup *setup)
{
  DcWorkerSetup picked = { 0, };
  struct rlimit rl;
  int top = DC_WORKER_TARGET_CEILING;
  gboolean limited = getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY;

  if (limited && rl.rlim_cur < (rlim_t) top)
    top = (int) rl.rlim_cur;

  /* The top two numbers below the limit; never inside 0..2. */
  picked.fd_limit = limited && rl.rlim_cur < (rlim_t) G_MAXINT ? (int) rl.rlim_cur : 65536;
  picked.target_write_fd = MAX (top - 1, 4);
  dc_worker_copy_targets (setup, &picked);
}

/* Called in the template and hence async-signal-safe: it only writes
 * memory.  The template's descriptor limit never changes, so it reads it
 * once and gives each worker the same numbers. */
void
dc_worker_copy_targets (DcWorkerSetup       *setup,
                        const DcWorkerSetup *picked)
{
  setup->fd_limit = picked->fd_limit;
  setup->target_write_fd = picked->target_write_fd;
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
  dc_wire_write_words_frame (fd, DC_WIRE_SETUP_FAILED, step, (guint32) errsv);
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
 * must be async-signal-safe: close_range(), close().  Where close_range()
 * is refused (kernels before 5.9, some seccomp profiles), a plain loop up
 * to the descriptor limit the parent read. */
static void
close_fds (int first,
           int last,
           int limit)
{
  int fd;

  if (close_range ((unsigned int) first, last == G_MAXINT ? ~0U : (unsigned int) last, 0) == 0)
    return;
  for (fd = first; fd <= last && fd < limit; fd++)
    close (fd);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: dup3(), fcntl().  The channel keeps
 * close-on-exec: a program the user's code runs (system()) must not hold
 * it, or the parent would not see it end when the worker does. */
static int
move_channel_fd (int from,
                 int to)
{
  int r;

  do
    r = from == to ? fcntl (from, F_SETFD, FD_CLOEXEC) : dup3 (from, to, O_CLOEXEC);
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
 * must be async-signal-safe: sigaction(), sigprocmask().  Default
 * dispositions before unblocking: a handler the host installed (GLib's
 * SIGCHLD handler, an interpreter's wake-up fd writer) must never run in
 * a child. */
void
dc_worker_reset_signals (void)
{
  struct sigaction dfl;
  sigset_t empty;
  int sig;

  memset (&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset (&dfl.sa_mask);
  for (sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP)
      sigaction (sig, &dfl, NULL);   /* EINVAL for libc-reserved numbers */
  sigemptyset (&empty);
  sigprocmask (SIG_SETMASK, &empty, NULL);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: prctl(), getppid(), _exit().
 *
 * Die with the parent.  The signal comes when the forking *thread* exits
 * (for a worker made by the template, the thread that made the
 * template), so it is asked for only when that thread is the process's
 * main one; otherwise the child leaves when its channel ends.  getppid()
 * closes the race with a parent that died before prctl(). */
void
dc_worker_tie_to_parent (pid_t    parent_pid,
                         gboolean die_with_parent)
{
  if (die_with_parent)
    prctl (PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (getppid () != parent_pid)
    _exit (DC_WORKER_EXIT_SETUP);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: sigaction(), sigprocmask(), prctl(),
 * getppid(), dup2(), fcntl(), open(), close(), close_range(), chdir(), and
 * a store to environ.  Nothing here allocates or takes a lock. */
void
dc_worker_child_setup (const DcWorkerSetup *setup)
{
  int rfd = setup->read_fd;
  int wfd = setup->write_fd;
  int lo, hi, i, flags;

  int err_fd = (setup->flags & DC_SETUP_CAPTURE_STDERR) ? setup->stderr_fd : -1;

  /* A clone of the template inherits the dispositions it reset: one
   * system call per signal less in each worker. */
  if (!setup->signals_default)
    dc_worker_reset_signals ();
  dc_worker_tie_to_parent (setup->parent_pid, setup->die_with_parent);

  /* The stderr pipe must not sit where the channel goes. */
  if (err_fd >= 0 && (err_fd == setup->target_read_fd || err_fd == setup->target_write_fd))
    {
      do
        err_fd = fcntl (err_fd, F_DUPFD_CLOEXEC, 3);
      while (err_fd < 0 && errno == EINTR);
      if (err_fd < 0 || err_fd == setup->target_read_fd || err_fd == setup->target_write_fd)
        setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, err_fd < 0 ? errno : EBADF);
    }

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
  if (move_channel_fd (rfd, setup->target_read_fd) < 0)
    setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
  if (wfd != rfd && move_channel_fd (wfd, setup->target_write_fd) < 0)
    setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
  wfd = setup->target_write_fd;

  /* The captured stderr takes 2 before the rest is closed; the channel
   * has left 0..2 already. */
  if (err_fd >= 0 && move_fd (err_fd, 2) < 0)
    setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);

  /* Nothing else the parent had open survives: not its files, not its
   * main context's eventfd, not another worker's channel (which would
   * keep that worker from seeing EOF).  First: opening /dev/null below
   * needs a free number under a tight descriptor limit. */
  lo = MIN (setup->target_read_fd, setup->target_write_fd);
  hi = MAX (setup->target_read_fd, setup->target_write_fd);
  if (lo > 3)
    close_fds (3, lo - 1, setup->fd_limit);
  if (hi - lo > 1)
    close_fds (lo + 1, hi - 1, setup->fd_limit);
  close_fds (hi + 1, G_MAXINT, setup->fd_limit);

  /* 0..2: /dev/null unless inherited.  A standard number the parent had
   * closed may hold a copy of our channel; that is never inherited. */
  for (i = 0; i <= 2; i++)
    {
      gboolean inherit;

      if (i == 2 && err_fd >= 0)
        break;   /* the pipe, in place above */
      switch (i)
        {
        case 0: inherit = (setup->flags & DC_SETUP_INHERIT_STDIN) != 0; break;
        case 1: inherit = (setup->flags & DC_SETUP_INHERIT_STDOUT) != 0; break;
        default: inherit = (setup->flags & DC_SETUP_SILENCE_STDERR) == 0; break;
        }
      /* A closed number, or one holding a close-on-exec descriptor (the
       * host closed its stdio and something else landed there: a channel,
       * an eventfd), is not the host's stdio: never inherit it. */
      flags = fcntl (i, F_GETFD);
      if (i == setup->read_fd || i == setup->write_fd || flags < 0 || (flags & FD_CLOEXEC))
        inherit = FALSE;
      if (!inherit && std_fd_to_dev_null (i) < 0)
        setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
      if (inherit && move_fd (i, i) < 0)
        setup_fail (wfd, DC_WIRE_SETUP_STEP_DESCRIPTORS, errno);
    }

  if (setup->cwd != NULL && chdir (setup->cwd) < 0)
    setup_fail (wfd, DC_WIRE_SETUP_STEP_CWD, errno);

  /* The parent built this array; storing the pointer is all setenv() would
   * need, without its lock or its allocation. */
  if (setup->envp != NULL)
    environ = setup->envp;
}

/* Everything below runs after the user's init function and is not
 * async-signal-safe, no more than the user's code it calls. */

/* Replies wait in @out only while the worker handles the frames it has
 * at hand without running code (calls that fail before, or replies of
 * several kinds): they go out before any user code runs and before the
 * worker blocks on a read. */
typedef struct
{
  int                 read_fd;
  int                 write_fd;
  const DcWorkerCode *code;
  DcWireReader        reader;
  GArray             *rx_fds;          /* received, not yet claimed by a frame */
  GByteArray         *out;
  int                 exit_status;
  /* A chunk's reply as it is built, and where each result ends: kept
   * from chunk to chunk. */
  GByteArray         *chunk_out;
  GArray             *chunk_ends;
} Serve;

/* Writes every byte of @iov (which it consumes), whatever the partial
 * writes. */
static gboolean
writev_all (int           fd,
            struct iovec *iov,
            int           n_iov)
{
  while (n_iov > 0)
    {
      ssize_t n;

      if (iov->iov_len == 0)
        {
          iov++;
          n_iov--;
          continue;
        }
      n = writev (fd, iov, MIN (n_iov, IOV_MAX));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return FALSE;
      while (n > 0)
        {
          gsize k = MIN ((gsize) n, iov->iov_len);

          iov->iov_base = (guint8 *) iov->iov_base + k;
          iov->iov_len -= k;
          n -= (ssize_t) k;
          if (iov->iov_len == 0)
            {
              iov++;
              n_iov--;
            }
        }
    }
  return TRUE;
}

static gboolean
write_all (int         fd,
           const void *data,
           gsize       len)
{
  struct iovec iov = { (void *) data, len };

  return writev_all (fd, &iov, 1);
}

/* The first byte goes with the descriptors, the rest as write_all(). */
static gboolean
send_with_fds (int         fd,
               const void *data,
               gsize       len,
               const int  *fds,
               guint       n_fds)
{
  gssize n;

  g_assert (n_fds > 0 && n_fds <= DC_WIRE_MAX_FDS && len > 0);

  n = dc_wire_sendmsg (fd, data, len, fds, n_fds);
  if (n <= 0)
    return FALSE;
  return write_all (fd, (const guint8 *) data + n, len - (gsize) n);
}

/* Reads into @buf, collecting descriptors on a socket.  Blocks. */
static gssize
receive (gpointer  data,
         void     *buf,
         gsize     size)
{
  Serve *serve = data;
  union {
    char buf[CMSG_SPACE (sizeof (int) * DC_WIRE_MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct msghdr msg = { 0, };
  struct iovec iov = { buf, size };
  struct cmsghdr *cmsg;
  ssize_t n;

  if (!serve->code->is_socket)
    return read (serve->read_fd, buf, size);

  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  n = recvmsg (serve->read_fd, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0)
    return n;

  for (cmsg = CMSG_FIRSTHDR (&msg); cmsg != NULL; cmsg = CMSG_NXTHDR (&msg, cmsg))
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS)
      g_array_append_vals (serve->rx_fds, CMSG_DATA (cmsg),
                           (cmsg->cmsg_len - CMSG_LEN (0)) / sizeof (int));

  /* Dropped descriptors: the parent sends none it cannot afford. */
  if (msg.msg_flags & MSG_CTRUNC)
    {
      errno = EPROTO;
      return -1;
    }
  return n;
}

static gboolean
replies_flush (Serve *serve)
{
  gboolean ok = write_all (serve->write_fd, serve->out->data, serve->out->len);

  g_byte_array_set_size (serve->out, 0);
  return ok;
}

/* @body: the bytes of a large result after @payload (its head), as
 * dc_wire_marshal_split_raw() made them, written straight from the
 * value. */
static gboolean
send_frame (Serve        *serve,
            DcWireType    type,
            guint64       serial,
            GBytes       *payload,
            GVariant     *body,
            GUnixFDList  *fd_list)
{
  const int *list_fds = NULL;
  gint n_list = 0;
  gsize size = payload ? g_bytes_get_size (payload) : 0;
  gsize body_size = body != NULL ? g_variant_get_size (body) : 0;
  DcWireFrameHead head;
  struct iovec iov[3];
  int fds[DC_WIRE_MAX_FDS];
  guint n_fds = 0;
  int memfd = -1;
  gboolean ok;

  if (fd_list != NULL)
    list_fds = g_unix_fd_list_peek_fds (fd_list, &n_list);

  /* Large: the payload goes in a sealed memfd the parent maps. */
  if (serve->code->is_socket && serve->code->memfd_threshold > 0 &&
      size + body_size >= serve->code->memfd_threshold)
    {
      memfd = dc_wire_memfd_from_parts (payload != NULL ? g_bytes_get_data (payload, NULL) : NULL,
                                        size,
                                        body != NULL ? g_variant_get_data (body) : NULL,
                                        body_size, NULL);
      if (memfd >= 0)
        fds[n_fds++] = memfd;
    }
  if (n_list > 0)
    {
      memcpy (fds + n_fds, list_fds, sizeof (int) * (gsize) n_list);
      n_fds += (guint) n_list;
    }
  dc_wire_frame_head_init (&head, type, serial, payload, body, memfd >= 0, (guint) n_list);

  if (n_fds == 0 && head.body_len + head.tail_len <= 64 * 1024)
    {
      g_byte_array_append (serve->out, head.bytes, head.len);
      if (head.body_len > 0)
        g_byte_array_append (serve->out, head.body, head.body_len);
      if (head.tail_len > 0)
        g_byte_array_append (serve->out, head.tail, head.tail_len);
      return TRUE;
    }

  /* Descriptors, or a large payload: its own write, after what waits,
   * gathered from where the pieces are. */
  iov[0].iov_base = head.bytes;
  iov[0].iov_len = head.len;
  iov[1].iov_base = (void *) head.body;
  iov[1].iov_len = head.body_len;
  iov[2].iov_base = (void *) head.tail;
  iov[2].iov_len = head.tail_len;
  ok = replies_flush (serve);
  if (ok && n_fds > 0)
    ok = send_with_fds (serve->write_fd, head.bytes, head.len, fds, n_fds) &&
         writev_all (serve->write_fd, iov + 1, 2);
  else if (ok)
    ok = writev_all (serve->write_fd, iov, 3);

  if (memfd >= 0)
    close (memfd);
  return ok;
}

static gboolean
leave (Serve *serve,
       int    status)
{
  serve->exit_status = status;
  return FALSE;
}

/* The call whose code runs now, for dc_worker_report_progress().  Per
 * thread: the code runs in the thread that serves (a test serves in a
 * thread of its own), and a thread the code starts has no call. */
typedef struct
{
  Serve                *serve;
  guint64               serial;
  gboolean              wants_progress;  /* the CALL frame had DC_WIRE_FLAG_PROGRESS */
  gboolean              broken;          /* a write failed: the worker leaves after the code */
  DcWireMarshalStatus   failure;         /* not OK once a progress value could not travel */
  char                 *failed_type;     /* owned: that value's type string */
} CurrentCall;

static __thread CurrentCall *current_call;

/* Not async-signal-safe: it runs from the user's code. */
void
dc_worker_send_progress (GVariant *value)
{
  CurrentCall *call = current_call;
  g_autoptr(GBytes) payload = NULL;
  DcWireMarshalStatus status;

  /* After a failure the call's outcome is decided: what follows is not
   * sent, so that the caller never sees a value the code sent after one
   * it lost. */
  if (call == NULL || !call->wants_progress || call->broken || call->failure != DC_WIRE_MARSHAL_OK)
    return;

  payload = dc_wire_marshal_raw (call->serve->code->marshaller, value, &status);
  if (payload == NULL)
    {
      call->failure = status;
      call->failed_type = g_strdup (g_variant_get_type_string (value));
      return;
    }
  /* At once: the caller wants it while the code still runs. */
  if (!send_frame (call->serve, DC_WIRE_PROGRESS, call->serial, payload, NULL, NULL) ||
      !replies_flush (call->serve))
    call->broken = TRUE;
}

/* The parent composes the message: no gettext in a worker. */
static gboolean
send_marshal_failed (Serve      *serve,
                     guint64     serial,
                     guint32     reason,
                     const char *type_string)
{
  g_autoptr(GBytes) body = dc_wire_encode_marshal_failed (reason, type_string);

  return send_frame (serve, DC_WIRE_MARSHAL_FAILED, serial, body, NULL, NULL);
}

/* Runs the code on one item of a chunk and appends its result, as a
 * variant, to the chunk's reply.  On a failure, returns the type of the
 * reply the item would have had as a call, and its payload in *@failure. */
static DcWireType
run_item (Serve     *serve,
          GVariant  *items,
          gsize      i,
          GBytes   **failure)
{
  const DcWorkerCode *code = serve->code;
  GByteArray *out = serve->chunk_out;
  g_autoptr(GVariant) args = g_variant_get_child_value (items, i);
  g_autoptr(GVariant) result = NULL;
  g_autoptr(GError) error = NULL;
  const char *type_string;
  gsize type_len, size, start, end;

  result = code->func (args, code->user_data, &error);
  if (result == NULL && error != NULL)
    {
      *failure = dc_wire_encode_error (error);
      return DC_WIRE_ERROR;
    }
  if (result == NULL)
    return DC_WIRE_NULL_RESULT;
  g_variant_take_ref (result);

  type_string = g_variant_get_type_string (result);
  if (code->marshaller == DC_MARSHALLER_FLAT && !dc_wire_flat_type_ok (g_variant_get_type (result)))
    {
      *failure = dc_wire_encode_marshal_failed (DC_WIRE_MARSHAL_BAD_TYPE, type_string);
      return DC_WIRE_MARSHAL_FAILED;
    }

  /* A variant in an array: at a multiple of 8, its value, a NUL, its
   * type; written in place, with no copy of the result. */
  type_len = strlen (type_string);
  size = g_variant_get_size (result);
  dc_wire_pad (out, DC_WIRE_CHUNK_HEAD_SIZE, 8);
  start = out->len;
  /* The ends' table takes up to 8 bytes per item. */
  if (size + type_len + 8 * (serve->chunk_ends->len + 2) > DC_WIRE_MAX_PAYLOAD - start)
    {
      *failure = dc_wire_encode_marshal_failed (DC_WIRE_MARSHAL_TOO_LARGE, type_string);
      return DC_WIRE_MARSHAL_FAILED;
    }
  g_byte_array_set_size (out, start + size + 1 + type_len);
  g_variant_store (result, out->data + start);
  out->data[start + size] = '\0';
  memcpy (out->data + start + size + 1, type_string, type_len);
  end = out->len - DC_WIRE_CHUNK_HEAD_SIZE;
  g_array_append_val (serve->chunk_ends, end);
  return 0;
}

/* Runs the code once per item of a chunk, in order, and stops at the first
 * that fails: the reply carries every result, or that item's place and
 * failure.  Returns FALSE when the worker must leave, as handle_call(). */
static gboolean
handle_chunk (Serve              *serve,
              const DcWireHeader *header,
              GBytes             *payload)
{
  g_autoptr(GVariant) items = dc_wire_unmarshal_chunk (payload);
  g_autoptr(GBytes) failure = NULL;
  g_autoptr(GBytes) reply = NULL;
  DcWireChunkHead head = { 0, 0 };
  GByteArray *out = serve->chunk_out;
  gsize n, i;
  gboolean ok;

  /* The parent sends no chunk to code that takes descriptors. */
  if (items == NULL || !g_variant_is_of_type (items, G_VARIANT_TYPE_ARRAY) ||
      serve->code->func == NULL)
    return leave (serve, DC_WORKER_EXIT_BAD_REQUEST);
  n = g_variant_n_children (items);

  if (serve->out->len > 0 && !replies_flush (serve))
    return leave (serve, DC_WORKER_EXIT_CHANNEL);

  g_byte_array_set_size (out, DC_WIRE_CHUNK_HEAD_SIZE);
  g_array_set_size (serve->chunk_ends, 0);
  for (i = 0; i < n && head.failure == 0; i++)
    {
      head.failure = run_item (serve, items, i, &failure);
      head.index = head.failure != 0 ? (guint32) i : 0;
    }

  if (head.failure != 0)
    {
      g_byte_array_set_size (out, DC_WIRE_CHUNK_HEAD_SIZE);
      if (failure != NULL)
        g_byte_array_append (out, g_bytes_get_data (failure, NULL), g_bytes_get_size (failure));
    }
  else
    dc_wire_array_append_ends (out, DC_WIRE_CHUNK_HEAD_SIZE,
                               &g_array_index (serve->chunk_ends, gsize, 0), n);
  memcpy (out->data, &head, sizeof head);

  /* Written before this returns: the reply needs no copy of its own. */
  reply = g_bytes_new_static (out->data, out->len);
  ok = send_frame (serve, DC_WIRE_CHUNK_RESULT, header->serial, reply, NULL, NULL) &&
       (head.failure == 0 || !serve->code->exit_on_die || replies_flush (serve));
  /* The buffer is kept for the next chunk (filling a fresh one costs a
   * page fault per page), unless it is huge. */
  if (out->len > 16 * 1024 * 1024)
    {
      g_byte_array_unref (serve->chunk_out);
      serve->chunk_out = g_byte_array_new ();
    }
  if (!ok)
    return leave (serve, DC_WORKER_EXIT_CHANNEL);
  if (head.failure != 0 && serve->code->exit_on_die)
    return leave (serve, DC_WORKER_EXIT_OK);
  return TRUE;
}

/* Calls the user's code.  Returns FALSE when the worker must leave: the
 * channel broke, or the code failed under exit-on-die. */
static gboolean
handle_call (gpointer            data,
             const DcWireHeader *header,
             GBytes             *payload_in)
{
  Serve *serve = data;
  const DcWorkerCode *code = serve->code;
  g_autoptr(GBytes) payload = g_bytes_ref (payload_in);
  g_autoptr(GUnixFDList) fd_list = NULL;
  g_autoptr(GUnixFDList) out_fd_list = NULL;
  g_autoptr(GVariant) args = NULL;
  g_autoptr(GVariant) result = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = NULL;
  g_autoptr(GVariant) reply_body = NULL;
  DcWireMarshalStatus status;
  CurrentCall current = { 0, };
  gboolean ok;

  if ((header->type != DC_WIRE_CALL && header->type != DC_WIRE_CHUNK) ||
      !dc_wire_claim_fds (serve->rx_fds, header, &payload, &fd_list, NULL))
    return leave (serve, DC_WORKER_EXIT_BAD_REQUEST);
  if (header->type == DC_WIRE_CHUNK)
    return handle_chunk (serve, header, payload);

  args = dc_wire_unmarshal_raw (code->marshaller, payload);
  if (args == NULL)
    return leave (serve, DC_WORKER_EXIT_BAD_REQUEST);

  /* Replies made so far go out before code that may run long: a finished
   * call must never wait on the next one (its caller may have a time
   * limit).  Batching still merges each reply with the frames of the
   * calls that failed fast, and the parent reads many replies at once. */
  if (serve->out->len > 0 && !replies_flush (serve))
    return leave (serve, DC_WORKER_EXIT_CHANNEL);

  current.serve = serve;
  current.serial = header->serial;
  current.wants_progress = (header->flags & DC_WIRE_FLAG_PROGRESS) != 0;
  current_call = &current;
  if (code->fd_func != NULL)
    result = code->fd_func (args, fd_list, &out_fd_list, code->user_data, &error);
  else
    result = code->func (args, code->user_data, &error);
  current_call = NULL;

  if (current.broken)
    {
      g_free (current.failed_type);
      return leave (serve, DC_WORKER_EXIT_CHANNEL);
    }
  if (current.failure != DC_WIRE_MARSHAL_OK)
    {
      /* A progress value was lost: the call fails, whatever the code
       * returned. */
      g_autofree char *failed_type = current.failed_type;

      if (result != NULL)
        g_variant_take_ref (result);
      ok = send_marshal_failed (serve, header->serial, current.failure | DC_WIRE_MARSHAL_OF_PROGRESS,
                                failed_type);
    }
  else if (result != NULL)
    {
      guint n_out = out_fd_list != NULL ? (guint) g_unix_fd_list_get_length (out_fd_list) : 0;

      g_clear_error (&error);   /* a value and an error: the value wins */
      g_variant_take_ref (result);
      /* One descriptor of a message may be a memfd payload. */
      if (n_out > 0 && !code->is_socket)
        status = DC_WIRE_MARSHAL_NO_FDS;
      else if (n_out > DC_WIRE_MAX_FDS - 1)
        status = DC_WIRE_MARSHAL_TOO_MANY_FDS;
      else
        reply = dc_wire_marshal_split_raw (code->marshaller, result, &reply_body, &status);
      if (reply != NULL)
        {
          if (send_frame (serve, DC_WIRE_RESULT, header->serial, reply, reply_body, out_fd_list))
            return TRUE;
          return leave (serve, DC_WORKER_EXIT_CHANNEL);
        }
      else
        ok = send_marshal_failed (serve, header->serial, status, g_variant_get_type_string (result));
    }
  else if (error != NULL)
    {
      reply = dc_wire_encode_error (error);
      ok = send_frame (serve, DC_WIRE_ERROR, header->serial, reply, NULL, NULL);
    }
  else
    ok = send_frame (serve, DC_WIRE_NULL_RESULT, header->serial, NULL, NULL, NULL);

  /* Every path here is a failed call: under exit-on-die the worker
   * leaves next, and its reply must be out before. */
  if (ok && code->exit_on_die)
    ok = replies_flush (serve);
  if (!ok)
    return leave (serve, DC_WORKER_EXIT_CHANNEL);
  if (code->exit_on_die)
    return leave (serve, DC_WORKER_EXIT_OK);

  return TRUE;
}

/* What the worker reads from its channel at once. */
#define SERVE_READ_SIZE (64 * 1024)

int
dc_worker_serve (int                 read_fd,
                 int                 write_fd,
                 const DcWorkerCode *code)
{
  Serve serve = { read_fd, write_fd, code, };
  /* Not from malloc: in a fresh worker its first large request makes
   * malloc consolidate the free chunks inherited from the parent, writing
   * into, and so copying, each heap page that holds one, and then grow
   * the heap; for a read buffer, before the worker has read a byte. */
  guint8 *buf = mmap (NULL, SERVE_READ_SIZE, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  gboolean mapped = buf != MAP_FAILED;

  if (!mapped)
    buf = g_malloc (SERVE_READ_SIZE);

  dc_wire_reader_init (&serve.reader);
  serve.rx_fds = g_array_new (FALSE, FALSE, sizeof (int));
  serve.out = g_byte_array_new ();
  serve.exit_status = DC_WORKER_EXIT_OK;
  serve.chunk_out = g_byte_array_new ();
  serve.chunk_ends = g_array_new (FALSE, FALSE, sizeof (gsize));

  for (;;)
    {
      gsize n;
      DcWirePumpStatus status;

      /* Nothing more at hand: what waits goes out before we block. */
      if (serve.out->len > 0 && !replies_flush (&serve))
        {
          serve.exit_status = DC_WORKER_EXIT_CHANNEL;
          break;
        }

      status = dc_wire_reader_pump (&serve.reader, buf, SERVE_READ_SIZE, receive, handle_call,
                                    &serve, &n);
      /* The parent sends descriptors only with the frame that takes them. */
      if (status == DC_WIRE_PUMP_READ && serve.rx_fds->len > 0 &&
          dc_wire_reader_between_frames (&serve.reader))
        status = DC_WIRE_PUMP_CORRUPT;
      if (status == DC_WIRE_PUMP_READ || status == DC_WIRE_PUMP_AGAIN)
        continue;
      if (status == DC_WIRE_PUMP_IO_ERROR)
        serve.exit_status = DC_WORKER_EXIT_CHANNEL;
      else if (status == DC_WIRE_PUMP_CORRUPT)
        serve.exit_status = DC_WORKER_EXIT_BAD_REQUEST;
      /* EOF: the parent closed the channel, time to go.  STOPPED: the
       * call said why. */
      break;
    }

  dc_wire_close_fds (serve.rx_fds);
  g_array_unref (serve.rx_fds);
  g_byte_array_unref (serve.out);
  g_byte_array_unref (serve.chunk_out);
  g_array_unref (serve.chunk_ends);
  dc_wire_reader_clear (&serve.reader);
  if (mapped)
    munmap (buf, SERVE_READ_SIZE);
  else
    g_free (buf);
  return serve.exit_status;
}

/* Runs in the child from fork() to _exit(). */
void
dc_worker_main (const DcWorkerSetup *setup,
                const DcWorkerCode  *code)
{
  dc_worker_child_setup (setup);

  /* From here on the user's code runs, and so may anything it may. */
  dc_wire_forget_buffers_after_fork ();
  if (code->init_func != NULL)
    code->init_func (code->init_data);

  /* The sandbox: after init (which may open files, load models), before
   * the first call.  A worker that cannot confine itself takes no call. */
  if (code->sandbox != NULL)
    {
      int errsv = dc_sandbox_apply (code->sandbox, code->sandbox_size, setup->target_write_fd);

      if (errsv != 0)
        setup_fail (setup->target_write_fd, DC_WIRE_SETUP_STEP_SANDBOX, errsv);
    }

  /* _exit(): the parent's atexit handlers and stdio buffers are not ours. */
  _exit (dc_worker_serve (setup->target_read_fd, setup->target_write_fd, code));
}
