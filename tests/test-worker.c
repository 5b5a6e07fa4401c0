/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The worker's serving loop, driven over a socketpair from a thread: no
 * fork.  (The post-fork set-up is covered by the pool tests.) */

#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dc-wire-private.h"
#include "dc-worker-private.h"

typedef struct
{
  int          fd;
  DcWorkerCode code;
  int          status;
} Serve;

static gpointer
serve_thread (gpointer data)
{
  Serve *serve = data;

  serve->status = dc_worker_serve (serve->fd, serve->fd, &serve->code);
  return NULL;
}

static GVariant *
echo_or_fail (GVariant  *args,
              gpointer   user_data,
              GError   **error)
{
  const char *what = NULL;

  if (g_variant_is_of_type (args, G_VARIANT_TYPE ("(s)")))
    g_variant_get (args, "(&s)", &what);

  if (g_strcmp0 (what, "error") == 0)
    {
      g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED, "denied");
      return NULL;
    }
  if (g_strcmp0 (what, "null") == 0)
    return NULL;
  if (g_strcmp0 (what, "int") == 0)
    return g_variant_new ("(i)", 5);
  return g_variant_ref (args);
}

typedef struct
{
  int       fd;
  Serve     serve;
  GThread  *thread;
  DcWireReader reader;
} Fixture;

static void
fixture_start (Fixture      *f,
               DcMarshaller  marshaller,
               gboolean      exit_on_die)
{
  int sv[2];

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
  f->fd = sv[0];
  f->serve.fd = sv[1];
  f->serve.code.func = echo_or_fail;
  f->serve.code.marshaller = marshaller;
  f->serve.code.exit_on_die = exit_on_die;
  f->serve.status = -1;
  dc_wire_reader_init (&f->reader);
  f->thread = g_thread_new ("serve", serve_thread, &f->serve);
}

static int
fixture_stop (Fixture *f)
{
  close (f->fd);
  g_thread_join (f->thread);
  close (f->serve.fd);
  dc_wire_reader_clear (&f->reader);
  return f->serve.status;
}

static void
send_raw (Fixture    *f,
          const void *data,
          gsize       len)
{
  const guint8 *p = data;

  while (len > 0)
    {
      ssize_t n = write (f->fd, p, len);
      g_assert_cmpint (n, >, 0);
      p += n;
      len -= (gsize) n;
    }
}

static void
send_call (Fixture      *f,
           DcMarshaller  marshaller,
           guint64       serial,
           GVariant     *args)
{
  /* Takes a floating reference or the caller's own. */
  g_autoptr(GVariant) owned = g_variant_take_ref (args);
  g_autoptr(GBytes) payload = dc_wire_marshal (marshaller, owned, NULL);
  g_autoptr(GByteArray) frame = g_byte_array_new ();

  dc_wire_append_frame (frame, DC_WIRE_CALL, serial, g_bytes_get_data (payload, NULL),
                        g_bytes_get_size (payload));
  send_raw (f, frame->data, frame->len);
}

/* Blocks for the next frame, or returns FALSE at the end of the stream. */
static gboolean
next_frame (Fixture      *f,
            DcWireHeader *header,
            GBytes      **payload)
{
  for (;;)
    {
      guint8 buf[4096];
      const guint8 *p = buf;
      ssize_t n = recv (f->fd, buf, sizeof buf, MSG_PEEK);
      gsize len;

      /* A socket closed with our bytes unread in it reports ECONNRESET
       * rather than the end: the same thing here. */
      if (n == 0 || (n < 0 && errno == ECONNRESET))
        return FALSE;
      g_assert_cmpint (n, >, 0);
      /* Consume exactly what the reader takes, so frames stay separate. */
      len = (gsize) n;
      switch (dc_wire_reader_feed (&f->reader, &p, &len, header, payload))
        {
        case DC_WIRE_READ_FRAME:
          g_assert_cmpint (recv (f->fd, buf, (gsize) n - len, 0), ==, (gssize) ((gsize) n - len));
          return TRUE;
        case DC_WIRE_READ_NEED_MORE:
          g_assert_cmpint (recv (f->fd, buf, (gsize) n, 0), ==, n);
          break;
        case DC_WIRE_READ_ERROR:
        default:
          g_assert_not_reached ();
        }
    }
}

static void
test_serve_calls (void)
{
  Fixture f = { 0, };
  DcWireHeader header;
  g_autoptr(GBytes) payload = NULL;
  g_autoptr(GVariant) value = NULL;
  g_autoptr(GError) error = NULL;

  fixture_start (&f, DC_MARSHALLER_VARIANT, FALSE);

  /* Several calls written at once are answered in order. */
  send_call (&f, DC_MARSHALLER_VARIANT, 10, g_variant_new ("(s)", "one"));
  send_call (&f, DC_MARSHALLER_VARIANT, 11, g_variant_new ("(s)", "error"));
  send_call (&f, DC_MARSHALLER_VARIANT, 12, g_variant_new ("(s)", "null"));
  send_call (&f, DC_MARSHALLER_VARIANT, 13, g_variant_new ("(s)", "four"));

  g_assert_true (next_frame (&f, &header, &payload));
  g_assert_cmpuint (header.type, ==, DC_WIRE_RESULT);
  g_assert_cmpuint (header.serial, ==, 10);
  value = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, payload, NULL);
  g_assert_cmpstr (g_variant_get_type_string (value), ==, "(s)");
  g_clear_pointer (&value, g_variant_unref);
  g_clear_pointer (&payload, g_bytes_unref);

  g_assert_true (next_frame (&f, &header, &payload));
  g_assert_cmpuint (header.type, ==, DC_WIRE_ERROR);
  g_assert_cmpuint (header.serial, ==, 11);
  error = dc_wire_decode_error (payload, NULL);
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED);
  g_assert_cmpstr (error->message, ==, "denied");
  g_clear_pointer (&payload, g_bytes_unref);

  g_assert_true (next_frame (&f, &header, &payload));
  g_assert_cmpuint (header.type, ==, DC_WIRE_NULL_RESULT);
  g_assert_cmpuint (header.serial, ==, 12);
  g_clear_pointer (&payload, g_bytes_unref);

  g_assert_true (next_frame (&f, &header, &payload));
  g_assert_cmpuint (header.type, ==, DC_WIRE_RESULT);
  g_assert_cmpuint (header.serial, ==, 13);
  g_clear_pointer (&payload, g_bytes_unref);

  /* The end of the channel ends the worker, cleanly. */
  g_assert_cmpint (fixture_stop (&f), ==, DC_WORKER_EXIT_OK);
}

static void
test_serve_flat_refuses_result (void)
{
  Fixture f = { 0, };
  DcWireHeader header;
  g_autoptr(GBytes) payload = NULL;
  gsize size;
  const guint8 *data;
  guint32 reason;

  fixture_start (&f, DC_MARSHALLER_FLAT, FALSE);
  send_call (&f, DC_MARSHALLER_FLAT, 1, g_variant_new ("(s)", "int"));
  g_assert_true (next_frame (&f, &header, &payload));

  /* The worker reports the type; the parent composes the message. */
  g_assert_cmpuint (header.type, ==, DC_WIRE_MARSHAL_FAILED);
  data = g_bytes_get_data (payload, &size);
  g_assert_cmpuint (size, ==, 4 + strlen ("(i)"));
  memcpy (&reason, data, 4);
  g_assert_cmpuint (reason, ==, DC_WIRE_MARSHAL_BAD_TYPE);
  g_assert_cmpmem (data + 4, size - 4, "(i)", 3);

  g_assert_cmpint (fixture_stop (&f), ==, DC_WORKER_EXIT_OK);
}

static void
test_serve_exit_on_die (void)
{
  Fixture f = { 0, };
  DcWireHeader header;
  g_autoptr(GBytes) payload = NULL;

  fixture_start (&f, DC_MARSHALLER_VARIANT, TRUE);
  send_call (&f, DC_MARSHALLER_VARIANT, 1, g_variant_new ("(s)", "fine"));
  send_call (&f, DC_MARSHALLER_VARIANT, 2, g_variant_new ("(s)", "error"));
  send_call (&f, DC_MARSHALLER_VARIANT, 3, g_variant_new ("(s)", "never read"));

  g_assert_true (next_frame (&f, &header, &payload));
  g_assert_cmpuint (header.type, ==, DC_WIRE_RESULT);
  g_clear_pointer (&payload, g_bytes_unref);
  g_assert_true (next_frame (&f, &header, &payload));
  g_assert_cmpuint (header.type, ==, DC_WIRE_ERROR);
  g_clear_pointer (&payload, g_bytes_unref);

  /* It left after the failed call without answering the third. */
  g_thread_join (f.thread);
  f.thread = NULL;
  g_assert_cmpint (f.serve.status, ==, DC_WORKER_EXIT_OK);
  close (f.serve.fd);
  g_assert_false (next_frame (&f, &header, &payload));
  close (f.fd);
  dc_wire_reader_clear (&f.reader);
}

static void
test_serve_garbage (void)
{
  Fixture f = { 0, };
  guint8 junk[64];

  fixture_start (&f, DC_MARSHALLER_VARIANT, FALSE);
  memset (junk, 0xee, sizeof junk);
  send_raw (&f, junk, sizeof junk);
  g_assert_cmpint (fixture_stop (&f), ==, DC_WORKER_EXIT_BAD_REQUEST);
}

static void
test_serve_large (void)
{
  Fixture f = { 0, };
  DcWireHeader header;
  g_autoptr(GBytes) payload = NULL;
  g_autoptr(GVariant) value = NULL;
  g_autoptr(GVariant) sent = NULL;
  g_autofree guint8 *data = g_malloc (3 << 20);
  gsize i;

  for (i = 0; i < (3 << 20); i++)
    data[i] = (guint8) (i ^ (i >> 8));
  sent = g_variant_ref_sink (g_variant_new ("(@ay)",
                                            g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data,
                                                                       3 << 20, 1)));

  fixture_start (&f, DC_MARSHALLER_VARIANT, FALSE);
  /* 3 MiB does not fit the socket buffer; the worker reads the whole
   * request (straight into its buffer) before it writes a byte. */
  send_call (&f, DC_MARSHALLER_VARIANT, 1, g_variant_ref (sent));
  g_assert_true (next_frame (&f, &header, &payload));
  g_assert_cmpuint (header.type, ==, DC_WIRE_RESULT);
  value = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, payload, NULL);
  g_assert_true (g_variant_equal (value, sent));
  g_assert_cmpint (fixture_stop (&f), ==, DC_WORKER_EXIT_OK);
}

static void
test_pick_targets (void)
{
  DcWorkerSetup setup = { 0, };

  setup.read_fd = setup.write_fd = 5;
  dc_worker_pick_targets (&setup);
  g_assert_cmpint (setup.target_read_fd, ==, setup.target_write_fd);
  g_assert_cmpint (setup.target_read_fd, >, 100);

  setup.read_fd = 5;
  setup.write_fd = 6;
  dc_worker_pick_targets (&setup);
  g_assert_cmpint (setup.target_read_fd, ==, setup.target_write_fd - 1);
  g_assert_cmpint (setup.target_read_fd, >, 100);
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/worker/serve/calls", test_serve_calls);
  g_test_add_func ("/detached-code/worker/serve/flat-refuses-result", test_serve_flat_refuses_result);
  g_test_add_func ("/detached-code/worker/serve/exit-on-die", test_serve_exit_on_die);
  g_test_add_func ("/detached-code/worker/serve/garbage", test_serve_garbage);
  g_test_add_func ("/detached-code/worker/serve/large", test_serve_large);
  g_test_add_func ("/detached-code/worker/pick-targets", test_pick_targets);

  return g_test_run ();
}
