/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The worker template: its requests, and its life, which clones workers.
 * Everything but the encoder runs in the template and is async-signal-safe. */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dc-process-private.h"
#include "dc-sandbox-private.h"
#include "dc-template-private.h"
#include "dc-wire-private.h"

GBytes *
dc_template_encode_request (DcSetupFlags   flags,
                            GBytes        *sandbox,
                            const char    *cwd,
                            char         **envp,
                            DcMarshaller   marshaller,
                            gboolean       exit_on_die,
                            guint          memfd_threshold)
{
  DcTemplateRequest request = { DC_TEMPLATE_MAGIC, };
  GByteArray *bytes = g_byte_array_new ();
  guint i;

  g_byte_array_append (bytes, (const guint8 *) &request, sizeof request);
  if (sandbox != NULL)
    {
      if (g_bytes_get_size (sandbox) > DC_SANDBOX_MAX_SIZE)
        {
          g_byte_array_unref (bytes);
          return NULL;
        }
      request.sandbox_len = (guint32) g_bytes_get_size (sandbox);
      g_byte_array_append (bytes, g_bytes_get_data (sandbox, NULL), request.sandbox_len);
    }
  if (cwd != NULL)
    {
      request.cwd_len = (guint32) strlen (cwd) + 1;
      g_byte_array_append (bytes, (const guint8 *) cwd, request.cwd_len);
    }
  for (i = 0; envp != NULL && envp[i] != NULL; i++)
    {
      gsize len = strlen (envp[i]) + 1;

      g_byte_array_append (bytes, (const guint8 *) envp[i], (guint) len);
      request.env_len += (guint32) len;
      request.n_env++;
    }
  if (bytes->len > DC_TEMPLATE_MAX_REQUEST || request.n_env > DC_TEMPLATE_MAX_ENV)
    {
      g_byte_array_unref (bytes);
      return NULL;
    }

  request.size = bytes->len;
  request.setup_flags = flags;
  request.marshaller = marshaller;
  request.exit_on_die = !!exit_on_die;
  request.memfd_threshold = memfd_threshold;
  memcpy (bytes->data, &request, sizeof request);
  return g_byte_array_free_to_bytes (bytes);
}

void
dc_template_request_set_slot (guint8 *request,
                              guint   slot)
{
  guint32 slot32 = slot;

  g_assert (slot < DC_TEMPLATE_N_SLOTS);
  memcpy (request + G_STRUCT_OFFSET (DcTemplateRequest, slot), &slot32, sizeof slot32);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: it only reads and writes memory. */
gboolean
dc_template_decode_request (guint8         *data,
                            gsize           size,
                            const int      *channel_fds,
                            guint           n_channel_fds,
                            char          **envp_storage,
                            DcWorkerSetup  *setup,
                            DcWorkerCode   *code)
{
  DcTemplateRequest request;
  gsize pos, end;
  guint i, n_stderr;

  if (size < sizeof request)
    return FALSE;
  memcpy (&request, data, sizeof request);
  /* The stderr pipe comes last, when the flags ask for it. */
  n_stderr = (request.setup_flags & DC_SETUP_CAPTURE_STDERR) ? 1 : 0;
  if (request.magic != DC_TEMPLATE_MAGIC || request.size != size ||
      (n_channel_fds != 1 + n_stderr && n_channel_fds != 2 + n_stderr) ||
      (request.marshaller != DC_MARSHALLER_VARIANT && request.marshaller != DC_MARSHALLER_FLAT) ||
      request.exit_on_die > 1 || request.n_env > DC_TEMPLATE_MAX_ENV ||
      request.slot >= DC_TEMPLATE_N_SLOTS ||
      request.sandbox_len > size - sizeof request ||
      request.cwd_len > size - sizeof request - request.sandbox_len ||
      request.env_len != size - sizeof request - request.sandbox_len - request.cwd_len)
    return FALSE;

  pos = sizeof request;
  code->sandbox = NULL;
  code->sandbox_size = 0;
  if (request.sandbox_len > 0)
    {
      if (!dc_sandbox_check (data + pos, request.sandbox_len))
        return FALSE;
      code->sandbox = data + pos;
      code->sandbox_size = request.sandbox_len;
      pos += request.sandbox_len;
    }
  setup->cwd = NULL;
  if (request.cwd_len > 0)
    {
      if (data[pos + request.cwd_len - 1] != '\0' ||
          memchr (data + pos, '\0', request.cwd_len - 1) != NULL)
        return FALSE;
      setup->cwd = (const char *) data + pos;
      pos += request.cwd_len;
    }

  /* Each string ends with its NUL, and the last one with the request. */
  setup->envp = NULL;
  if (request.n_env > 0 || request.env_len > 0)
    {
      end = size;
      if (request.n_env == 0 || data[end - 1] != '\0')
        return FALSE;
      for (i = 0; i < request.n_env; i++)
        {
          const guint8 *nul;

          if (pos >= end)
            return FALSE;
          nul = memchr (data + pos, '\0', end - pos);
          envp_storage[i] = (char *) data + pos;
          pos = (gsize) (nul - data) + 1;
        }
      if (pos != end)
        return FALSE;
      envp_storage[request.n_env] = NULL;
      setup->envp = envp_storage;
    }

  n_channel_fds -= n_stderr;
  setup->read_fd = channel_fds[0];
  setup->write_fd = channel_fds[n_channel_fds - 1];
  setup->stderr_fd = n_stderr ? channel_fds[n_channel_fds] : -1;
  setup->flags = request.setup_flags;
  code->marshaller = request.marshaller;
  code->exit_on_die = request.exit_on_die;
  code->memfd_threshold = request.memfd_threshold;
  code->is_socket = n_channel_fds == 1;
  return TRUE;
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: sendmsg(). */
static void
reply (int   fd,
       pid_t pid,
       int   errsv,
       int   pidfd)
{
  DcTemplateReply answer = { DC_TEMPLATE_MAGIC, pid, errsv, 0 };

  /* The parent sees a lost reply as the template's failure. */
  (void) dc_wire_sendmsg (fd, &answer, sizeof answer, &pidfd, pidfd >= 0 ? 1 : 0);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: it takes what recvmsg() brought, no more than
 * three descriptors (the channel's ends and the stderr pipe), closing any
 * others.  Returns how many it kept. */
static guint
take_fds (struct msghdr *msg,
          int            fds[3])
{
  struct cmsghdr *cmsg;
  guint n = 0;

  for (cmsg = CMSG_FIRSTHDR (msg); cmsg != NULL; cmsg = CMSG_NXTHDR (msg, cmsg))
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS)
      {
        gsize i, count = (cmsg->cmsg_len - CMSG_LEN (0)) / sizeof (int);

        for (i = 0; i < count; i++)
          {
            int fd;

            memcpy (&fd, CMSG_DATA (cmsg) + i * sizeof (int), sizeof (int));
            if (n < 3)
              fds[n++] = fd;
            else
              close (fd);
          }
      }
  return n;
}

/* The request being served, and its environment: static, since the
 * template allocates nothing.  (In the parent they are untouched and cost
 * no memory.) */
static guint8 request_buf[DC_TEMPLATE_MAX_REQUEST];
static char *request_envp[DC_TEMPLATE_MAX_ENV + 1];

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: recvmsg(), sendmsg(), close(), fcntl(),
 * dup3(), close_range(), and the clone of a worker, which unmaps the pid
 * slots and then runs dc_worker_main(). */
void
dc_template_main (const DcTemplateSetup *tsetup,
                  const DcWorkerCode    *code_template)
{
  int chan = tsetup->channel_target;
  int r;

  dc_worker_reset_signals ();
  dc_worker_tie_to_parent (tsetup->parent_pid, tsetup->die_with_parent);

  /* Its channel on a high number; nothing else of the parent's but stdio,
   * which workers inherit or replace as each request says. */
  do
    r = tsetup->channel_fd == chan ? fcntl (chan, F_SETFD, FD_CLOEXEC)
                                   : dup3 (tsetup->channel_fd, chan, O_CLOEXEC);
  while (r < 0 && errno == EINTR);
  if (r < 0)
    _exit (DC_WORKER_EXIT_SETUP);
  if (close_range (3, (unsigned int) chan - 1, 0) < 0 ||
      close_range ((unsigned int) chan + 1, ~0U, 0) < 0)
    {
      int fd;

      for (fd = 3; fd < tsetup->targets.fd_limit; fd++)
        if (fd != chan)
          close (fd);
    }

  for (;;)
    {
      union {
        char buf[CMSG_SPACE (sizeof (int) * 4)];
        struct cmsghdr align;
      } control;
      struct iovec iov = { request_buf, sizeof request_buf };
      struct msghdr msg = { 0, };
      DcWorkerSetup setup = { 0, };
      DcWorkerCode code = *code_template;
      int fds[3] = { -1, -1, -1 };
      guint n_fds;
      ssize_t n;
      pid_t pid;
      int pidfd = -1;

      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control.buf;
      msg.msg_controllen = sizeof control.buf;
      n = recvmsg (chan, &msg, MSG_CMSG_CLOEXEC);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        _exit (n == 0 ? DC_WORKER_EXIT_OK : DC_WORKER_EXIT_CHANNEL);

      n_fds = take_fds (&msg, fds);
      if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
          !dc_template_decode_request (request_buf, (gsize) n, fds, n_fds, request_envp,
                                       &setup, &code))
        {
          reply (chan, -1, EINVAL, -1);
          goto done;
        }

      setup.parent_pid = tsetup->parent_pid;
      setup.die_with_parent = tsetup->die_with_parent;
      setup.signals_default = TRUE;
      dc_worker_copy_targets (&setup, &tsetup->targets);

      {
        DcTemplateRequest request;

        memcpy (&request, request_buf, sizeof request);
        pid = dc_process_clone (TRUE, &pidfd, &tsetup->slots[request.slot]);
      }
      if (pid == 0)
        {
          /* The slots are the parent's and the template's: a worker's code
           * must not write a pid there that the parent would kill. */
          munmap (tsetup->slots, DC_TEMPLATE_SLOTS_SIZE);
          dc_worker_main (&setup, &code);   /* never returns */
        }
      reply (chan, pid, pid < 0 ? errno : 0, pid > 0 ? pidfd : -1);
      if (pidfd >= 0)
        close (pidfd);

    done:
      if (fds[0] >= 0)
        close (fds[0]);
      if (fds[1] >= 0)
        close (fds[1]);
      if (fds[2] >= 0)
        close (fds[2]);
    }
}
