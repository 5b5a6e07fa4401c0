/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* A worker's captured stderr, in the parent: each line copied to our own
 * stderr with the worker's pid, cleaned, and the last ones kept for the
 * errors that say the worker died or ran out of time. */

#include "config.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include <glib-unix.h>

#include "dc-worker-stderr-private.h"

/* What is kept of a worker's stderr for its errors. */
#define ERR_KEEP 2048
/* A longer line is cut there. */
#define ERR_LINE_MAX 1024
/* Read per dispatch: a worker that floods its stderr gets no more of
 * the context than this. */
#define ERR_READ_PER_DISPATCH (64 * 1024)
/* Read when the worker is gone, or a time limit runs out: more than a
 * pipe holds, and bounded, should a child of the worker go on writing. */
#define ERR_READ_LEFT (1024 * 1024)

struct _DcWorkerStderr
{
  GPid      pid;
  int       fd;        /* -1 once closed */
  GSource  *source;
  char     *line;      /* the line being read, ERR_LINE_MAX */
  gsize     line_len;
  gboolean  cutting;   /* dropping the rest of a long line */
  char     *ring;      /* the last ERR_KEEP bytes of whole lines */
  gsize     ring_end;
  gsize     ring_len;
};

static void
err_keep (DcWorkerStderr *err,
          const char     *text,
          gsize           len)
{
  gsize i;

  for (i = 0; i < len; i++)
    {
      err->ring[err->ring_end] = text[i];
      err->ring_end = (err->ring_end + 1) % ERR_KEEP;
    }
  err->ring_len = MIN (err->ring_len + len, ERR_KEEP);
}

/* Writes @len bytes of worker output into @dest (room for 3 × @len + 1)
 * as text that may be printed and put in a GError: valid UTF-8 (a cut may
 * have split a character, and a worker writes whatever its input made it
 * write), each invalid byte as U+FFFD, and every control character a
 * terminal would act on as '?': C0 but tab (and newline, if @newlines),
 * NUL too, DEL, C1.  Returns the length written, NUL not counted.  No
 * allocation: it runs for every line of a flood. */
static gsize
err_clean (char       *dest,
           const char *data,
           gsize       len,
           gboolean    newlines)
{
  static const char replacement[] = "\xef\xbf\xbd";
  const char *p = data, *end = data + len;
  char *out = dest;

  while (p < end)
    {
      gunichar c = g_utf8_get_char_validated (p, end - p);

      if (c == (gunichar) -1 || c == (gunichar) -2)
        {
          memcpy (out, replacement, sizeof replacement - 1);
          out += sizeof replacement - 1;
          p++;
          continue;
        }
      if ((c < 0x20 && c != '\t' && !(newlines && c == '\n')) || (c >= 0x7f && c < 0xa0))
        *out++ = '?';
      else
        {
          gsize n = (gsize) (g_utf8_next_char (p) - p);

          memcpy (out, p, n);
          out += n;
        }
      p = c == 0 ? p + 1 : g_utf8_next_char (p);
    }
  *out = '\0';
  return (gsize) (out - dest);
}

/* Copies the line read so far to our stderr, prefixed with the worker's
 * pid, and keeps it. */
static void
err_emit_line (DcWorkerStderr *err)
{
  static const char cut[] = "…";
  char out[64 + 3 * ERR_LINE_MAX + sizeof cut + 1];
  const char *line;
  gsize prefix, len;
  struct pollfd pfd = { STDERR_FILENO, POLLOUT, 0 };

  prefix = (gsize) g_snprintf (out, 64, "dc-worker[%d]: ", (int) err->pid);
  len = prefix + err_clean (out + prefix, err->line, err->line_len, FALSE);
  line = out + prefix;
  if (err->cutting)
    {
      memcpy (out + len, cut, sizeof cut - 1);
      len += sizeof cut - 1;
    }
  out[len++] = '\n';

  /* Our stderr may be a pipe nobody reads, or a stopped terminal: a write
   * that would block would stop the pool's context, and the application's
   * with it.  A line that does not fit now is lost there, not here; one
   * that does (at most about 4 KiB: within PIPE_BUF) goes in one write. */
  if (poll (&pfd, 1, 0) == 1 && (pfd.revents & POLLOUT) &&
      write (STDERR_FILENO, out, len) < 0)
    {
      /* Lost too. */
    }

  /* The line, its cut mark and its newline, as written. */
  err_keep (err, line, len - prefix);
  err->line_len = 0;
}

static void
err_take (DcWorkerStderr *err,
          const char     *data,
          gsize           len)
{
  while (len > 0)
    {
      const char *nl = memchr (data, '\n', len);
      gsize line = nl != NULL ? (gsize) (nl - data) : len;
      gsize room = ERR_LINE_MAX - err->line_len;

      if (!err->cutting)
        {
          memcpy (err->line + err->line_len, data, MIN (line, room));
          err->line_len += MIN (line, room);
          /* Too long: out now, cut; the rest of it is dropped. */
          if (line > room)
            {
              err->cutting = TRUE;
              err_emit_line (err);
            }
        }
      if (nl == NULL)
        break;
      if (!err->cutting)
        err_emit_line (err);
      err->cutting = FALSE;
      data = nl + 1;
      len -= line + 1;
    }
}

/* Reads at most @budget bytes of the worker's stderr without blocking.
 * FALSE once it ended. */
static gboolean
err_read (DcWorkerStderr *err,
          gsize           budget)
{
  char buf[16 * 1024];

  while (budget > 0)
    {
      ssize_t n = read (err->fd, buf, MIN (sizeof buf, budget));

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return TRUE;
      if (n <= 0)
        return FALSE;
      err_take (err, buf, (gsize) n);
      budget -= (gsize) n;
    }
  return TRUE;
}

static gboolean
err_readable_cb (gint         fd,
                 GIOCondition condition,
                 gpointer     data)
{
  DcWorkerStderr *err = data;

  if (err_read (err, ERR_READ_PER_DISPATCH))
    return G_SOURCE_CONTINUE;
  /* Ended: the worker is going; nothing more comes. */
  g_clear_pointer (&err->source, g_source_unref);
  close (err->fd);
  err->fd = -1;
  if (err->line_len > 0)
    err_emit_line (err);
  return G_SOURCE_REMOVE;
}

DcWorkerStderr *
dc_worker_stderr_new (int           fd,
                      GPid          pid,
                      GMainContext *context)
{
  DcWorkerStderr *err = g_new0 (DcWorkerStderr, 1);

  err->pid = pid;
  err->fd = fd;
  err->line = g_malloc (ERR_LINE_MAX);
  err->ring = g_malloc (ERR_KEEP);
  err->source = g_unix_fd_source_new (fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_callback (err->source, G_SOURCE_FUNC (err_readable_cb), err, NULL);
  g_source_attach (err->source, context);
  return err;
}

void
dc_worker_stderr_read_now (DcWorkerStderr *err)
{
  if (err->fd >= 0 && !err_read (err, ERR_READ_LEFT))
    dc_worker_stderr_close (err, FALSE);
}

void
dc_worker_stderr_close (DcWorkerStderr *err,
                        gboolean        drain)
{
  if (err->fd < 0)
    return;
  if (drain)
    err_read (err, ERR_READ_LEFT);
  if (err->source != NULL)
    g_source_destroy (err->source);
  g_clear_pointer (&err->source, g_source_unref);
  close (err->fd);
  err->fd = -1;
  if (err->line_len > 0)
    err_emit_line (err);
}

void
dc_worker_stderr_free (DcWorkerStderr *err)
{
  dc_worker_stderr_close (err, FALSE);
  g_free (err->line);
  g_free (err->ring);
  g_free (err);
}

char *
dc_worker_stderr_last_output (DcWorkerStderr *err)
{
  GString *text;
  char *cleaned;
  gsize start, i;

  if (err->ring_len == 0 && err->line_len == 0)
    return NULL;

  text = g_string_sized_new (ERR_KEEP + ERR_LINE_MAX);
  start = (err->ring_end + ERR_KEEP - err->ring_len) % ERR_KEEP;
  for (i = 0; i < err->ring_len; i++)
    g_string_append_c (text, err->ring[(start + i) % ERR_KEEP]);
  /* Full: it starts inside a line, which is dropped. */
  if (err->ring_len == ERR_KEEP)
    {
      const char *nl = memchr (text->str, '\n', text->len);

      g_string_erase (text, 0, nl != NULL ? nl - text->str + 1 : (gssize) text->len);
    }
  g_string_append_len (text, err->line, (gssize) err->line_len);
  while (text->len > 0 && text->str[text->len - 1] == '\n')
    g_string_truncate (text, text->len - 1);
  if (text->len == 0)
    {
      g_string_free (text, TRUE);
      return NULL;
    }
  /* The line not ended yet is raw, and the ring may start inside a
   * character. */
  cleaned = g_malloc (3 * text->len + 1);
  err_clean (cleaned, text->str, text->len, TRUE);
  g_string_free (text, TRUE);
  return cleaned;
}
