/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The wire format, exercised in-process: no fork, no descriptor. */

#include "config.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "dc-sandbox-private.h"
#include "dc-template-private.h"
#include "dc-wire-private.h"

/* Feeds @data to a fresh reader in chunks of @chunk bytes and collects the
 * frames.  Returns FALSE if the reader reported corruption. */
static gboolean
feed_all (const guint8  *data,
          gsize          len,
          gsize          chunk,
          GPtrArray     *frames,
          GError       **error)
{
  DcWireReader reader;
  gboolean ok = TRUE;

  dc_wire_reader_init (&reader);
  while (ok && len > 0)
    {
      gsize n = MIN (chunk, len);
      const guint8 *p = data;
      gsize left = n;

      while (left > 0)
        {
          DcWireHeader header;
          GBytes *payload = NULL;
          DcWireReadStatus status = dc_wire_reader_feed (&reader, &p, &left, &header, &payload);

          if (status == DC_WIRE_READ_FRAME)
            {
              DcWireHeader *copy = g_new (DcWireHeader, 1);
              *copy = header;
              g_ptr_array_add (frames, copy);
              g_ptr_array_add (frames, payload);
            }
          else if (status == DC_WIRE_READ_ERROR)
            {
              dc_wire_reader_set_error (&reader, error);
              ok = FALSE;
              break;
            }
        }
      data += n;
      len -= n;
    }
  dc_wire_reader_clear (&reader);
  return ok;
}

static void
test_frames_roundtrip (void)
{
  g_autoptr(GByteArray) out = g_byte_array_new ();
  const char *payloads[] = { "", "a", "hello world", "" };
  gsize chunks[] = { 1, 3, 16, 17, 4096 };
  guint c, i;

  for (i = 0; i < G_N_ELEMENTS (payloads); i++)
    dc_wire_append_frame (out, DC_WIRE_RESULT, 100 + i, payloads[i], strlen (payloads[i]));

  /* Whatever way the bytes are split, the same frames come out. */
  for (c = 0; c < G_N_ELEMENTS (chunks); c++)
    {
      g_autoptr(GPtrArray) frames = g_ptr_array_new ();
      g_autoptr(GError) error = NULL;

      g_assert_true (feed_all (out->data, out->len, chunks[c], frames, &error));
      g_assert_no_error (error);
      g_assert_cmpuint (frames->len, ==, 2 * G_N_ELEMENTS (payloads));
      for (i = 0; i < G_N_ELEMENTS (payloads); i++)
        {
          DcWireHeader *header = frames->pdata[2 * i];
          GBytes *payload = frames->pdata[2 * i + 1];
          gsize size;
          const char *data = g_bytes_get_data (payload, &size);

          g_assert_cmpuint (header->type, ==, DC_WIRE_RESULT);
          g_assert_cmpuint (header->serial, ==, 100 + i);
          g_assert_cmpuint (size, ==, strlen (payloads[i]));
          g_assert_true (size == 0 || memcmp (data, payloads[i], size) == 0);
          g_free (header);
          g_bytes_unref (payload);
        }
    }
}

static void
test_frames_truncated (void)
{
  g_autoptr(GByteArray) out = g_byte_array_new ();
  gsize cut;

  dc_wire_append_frame (out, DC_WIRE_RESULT, 7, "0123456789", 10);

  /* A frame cut anywhere yields nothing, and no error: the rest may come. */
  for (cut = 0; cut < out->len; cut++)
    {
      g_autoptr(GPtrArray) frames = g_ptr_array_new ();
      g_autoptr(GError) error = NULL;

      g_assert_true (feed_all (out->data, cut, 5, frames, &error));
      g_assert_no_error (error);
      g_assert_cmpuint (frames->len, ==, 0);
    }
}

static void
test_frames_bad_header (void)
{
  guint8 frame[DC_WIRE_HEADER_SIZE];
  DcWireHeader header;
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) frames = g_ptr_array_new ();

  /* Unknown type. */
  memset (&header, 0, sizeof header);
  header.size = 0;
  header.type = 99;
  header.serial = 1;
  memcpy (frame, &header, sizeof header);
  g_assert_false (feed_all (frame, sizeof frame, 64, frames, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_clear_error (&error);

  header.type = 0;
  memcpy (frame, &header, sizeof header);
  g_assert_false (feed_all (frame, sizeof frame, 64, frames, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_clear_error (&error);

  /* Oversized: refused from the header alone, before any allocation. */
  header.type = DC_WIRE_RESULT;
  header.size = (guint32) DC_WIRE_MAX_PAYLOAD + 1;
  memcpy (frame, &header, sizeof header);
  g_assert_false (feed_all (frame, sizeof frame, 64, frames, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_assert_nonnull (strstr (error->message, "exceeds"));
  g_assert_cmpuint (frames->len, ==, 0);
}

static void
test_reader_stays_failed (void)
{
  DcWireReader reader;
  guint8 junk[DC_WIRE_HEADER_SIZE];
  g_autoptr(GByteArray) good = g_byte_array_new ();
  const guint8 *p = junk;
  gsize len = sizeof junk;
  DcWireHeader header;
  GBytes *payload = NULL;

  memset (junk, 0xff, sizeof junk);
  dc_wire_reader_init (&reader);
  g_assert_cmpint (dc_wire_reader_feed (&reader, &p, &len, &header, &payload), ==, DC_WIRE_READ_ERROR);

  /* A valid frame after garbage is not believed: framing is lost. */
  dc_wire_append_frame (good, DC_WIRE_RESULT, 1, "x", 1);
  p = good->data;
  len = good->len;
  g_assert_cmpint (dc_wire_reader_feed (&reader, &p, &len, &header, &payload), ==, DC_WIRE_READ_ERROR);
  g_assert_null (payload);
  dc_wire_reader_clear (&reader);
}

static void
test_reader_direct_buffer (void)
{
  DcWireReader reader;
  g_autoptr(GByteArray) out = g_byte_array_new ();
  g_autofree guint8 *big = g_malloc (300000);
  const guint8 *p;
  gsize len, space, i, pos;
  guint8 *direct;
  DcWireHeader header;
  GBytes *payload = NULL;

  for (i = 0; i < 300000; i++)
    big[i] = (guint8) (i * 7);
  dc_wire_append_frame (out, DC_WIRE_CALL, 5, big, 300000);

  dc_wire_reader_init (&reader);
  g_assert_null (dc_wire_reader_direct_buffer (&reader, &space));

  /* Header and a little payload through feed(), the rest straight in. */
  p = out->data;
  len = DC_WIRE_HEADER_SIZE + 10;
  g_assert_cmpint (dc_wire_reader_feed (&reader, &p, &len, &header, &payload), ==, DC_WIRE_READ_NEED_MORE);
  pos = DC_WIRE_HEADER_SIZE + 10;
  while (!dc_wire_reader_frame_ready (&reader))
    {
      gsize n;

      direct = dc_wire_reader_direct_buffer (&reader, &space);
      g_assert_nonnull (direct);
      n = MIN (space, 65536);
      memcpy (direct, out->data + pos, n);
      dc_wire_reader_advance (&reader, n);
      pos += n;
    }
  g_assert_cmpuint (pos, ==, out->len);
  dc_wire_reader_take_frame (&reader, &header, &payload);
  g_assert_cmpuint (header.serial, ==, 5);
  g_assert_cmpmem (g_bytes_get_data (payload, NULL), g_bytes_get_size (payload), big, 300000);
  g_bytes_unref (payload);
  dc_wire_reader_clear (&reader);
}

static void
test_variant_roundtrip (void)
{
  const char *texts[] = {
    "()",
    "(t)", /* filled below */
    "([1, 2, 3], {'a': <'b'>}, @ms nothing, 'x')",
    "'a bare string'",
    "<(1, 2.5)>",
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (texts); i++)
    {
      g_autoptr(GVariant) value = NULL;
      g_autoptr(GVariant) back = NULL;
      g_autoptr(GBytes) bytes = NULL;
      g_autoptr(GError) error = NULL;

      if (i == 1)
        value = g_variant_ref_sink (g_variant_new ("(t)", G_GUINT64_CONSTANT (123454321)));
      else
        value = g_variant_parse (NULL, texts[i], NULL, NULL, &error);
      g_assert_no_error (error);

      bytes = dc_wire_marshal (DC_MARSHALLER_VARIANT, value, &error);
      g_assert_no_error (error);
      back = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, bytes, &error);
      g_assert_no_error (error);
      g_assert_true (g_variant_equal (value, back));
    }
}

static void
test_variant_large_is_shared (void)
{
  g_autofree guint8 *data = g_malloc (1 << 20);
  g_autoptr(GVariant) value = NULL;
  g_autoptr(GVariant) back = NULL;
  g_autoptr(GVariant) child = NULL;
  g_autoptr(GBytes) bytes = NULL;
  gsize n;

  memset (data, 0x5a, 1 << 20);
  value = g_variant_ref_sink (g_variant_new ("(@ay)",
                                             g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data,
                                                                        1 << 20, 1)));
  bytes = dc_wire_marshal (DC_MARSHALLER_VARIANT, value, NULL);
  back = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, bytes, NULL);
  child = g_variant_get_child_value (back, 0);

  /* The decoded array points into the received buffer: no copy. */
  {
    const guint8 *p = g_variant_get_fixed_array (child, &n, 1);
    const guint8 *start = g_bytes_get_data (bytes, NULL);

    g_assert_cmpuint (n, ==, 1 << 20);
    g_assert_true (p >= start && p < start + g_bytes_get_size (bytes));
  }
}

static void
test_variant_garbage (void)
{
  guint seed;

  /* Any bytes at all decode to some value or to an error; never a crash.
   * (Run under ASan/UBSan in CI.) */
  for (seed = 0; seed < 2000; seed++)
    {
      GRand *rand = g_rand_new_with_seed (seed);
      gsize len = g_rand_int_range (rand, 0, 64), i;
      guint8 *buf = g_malloc (len + 1);
      g_autoptr(GBytes) bytes = NULL;
      g_autoptr(GVariant) value = NULL;
      g_autoptr(GError) error = NULL;

      for (i = 0; i < len; i++)
        buf[i] = (guint8) g_rand_int (rand);
      /* Sometimes make the tail look like a type string. */
      if (len > 3 && seed % 3 == 0)
        {
          buf[len - 3] = 0;
          buf[len - 2] = "asiv(){}"[seed % 8];
          buf[len - 1] = ")}ai"[seed % 4];
        }
      bytes = g_bytes_new_take (buf, len);
      value = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, bytes, &error);
      if (value != NULL)
        {
          g_autofree char *text = g_variant_print (value, TRUE);
          g_assert_nonnull (text);
        }
      else
        g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);

      value = NULL;
      g_clear_error (&error);
      value = dc_wire_unmarshal (DC_MARSHALLER_FLAT, bytes, &error);
      if (value != NULL)
        g_assert_true (g_variant_is_of_type (value, G_VARIANT_TYPE_TUPLE));
      else
        g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
      g_rand_free (rand);
    }
}

static void
test_flat_roundtrip (void)
{
  const char *texts[] = {
    "@() ()",
    "('one',)",
    "('a', @ms nothing, @ms 'b', '')",
    "('ünïcödé', @ms '')",
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (texts); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(GVariant) value = g_variant_parse (NULL, texts[i], NULL, NULL, &error);
      g_autoptr(GBytes) bytes = NULL;
      g_autoptr(GVariant) back = NULL;

      g_assert_no_error (error);
      bytes = dc_wire_marshal (DC_MARSHALLER_FLAT, value, &error);
      g_assert_no_error (error);
      back = dc_wire_unmarshal (DC_MARSHALLER_FLAT, bytes, &error);
      g_assert_no_error (error);
      g_assert_cmpstr (g_variant_get_type_string (back), ==, g_variant_get_type_string (value));
      g_assert_true (g_variant_equal (value, back));
    }
}

static void
test_flat_refuses (void)
{
  const char *texts[] = { "(1,)", "'bare'", "(['a'],)", "('a', 2)", "(@mi nothing,)", "((('a',),),)" };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (texts); i++)
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(GVariant) value = g_variant_parse (NULL, texts[i], NULL, NULL, &error);
      g_autoptr(GBytes) bytes = NULL;

      g_assert_no_error (error);
      bytes = dc_wire_marshal (DC_MARSHALLER_FLAT, value, &error);
      g_assert_null (bytes);
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL);
      g_assert_nonnull (strstr (error->message, g_variant_get_type_string (value)));
    }
}

static void
test_flat_corrupt (void)
{
  g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_new ("(ss)", "hello", "world"));
  g_autoptr(GBytes) good = dc_wire_marshal (DC_MARSHALLER_FLAT, value, NULL);
  gsize size, cut, i;
  const guint8 *data = g_bytes_get_data (good, &size);

  /* Every truncation is refused. */
  for (cut = 0; cut < size; cut++)
    {
      g_autoptr(GBytes) bytes = g_bytes_new (data, cut);
      g_autoptr(GError) error = NULL;
      g_autoptr(GVariant) back = dc_wire_unmarshal (DC_MARSHALLER_FLAT, bytes, &error);

      g_assert_null (back);
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
    }

  /* Trailing bytes, a lying count, a lying length, a bad tag, invalid
   * UTF-8 and an embedded NUL are refused. */
  for (i = 0; i < 6; i++)
    {
      g_autofree guint8 *copy = g_memdup2 (data, size + 1);
      gsize len = size;
      g_autoptr(GBytes) bytes = NULL;
      g_autoptr(GError) error = NULL;
      g_autoptr(GVariant) back = NULL;
      guint32 big = 0x7fffffff;

      switch (i)
        {
        case 0: copy[size] = 'x'; len = size + 1; break;
        case 1: memcpy (copy, &big, 4); break;
        case 2: memcpy (copy + 5, &big, 4); break;
        case 3: copy[4] = 9; break;
        case 4: copy[9] = 0xff; break;
        default: copy[10] = 0; break;
        }
      bytes = g_bytes_new (copy, len);
      back = dc_wire_unmarshal (DC_MARSHALLER_FLAT, bytes, &error);
      g_assert_null (back);
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
    }
}

static void
test_error_roundtrip (void)
{
  g_autoptr(GError) original = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no such thing");
  g_autoptr(GError) custom = g_error_new_literal (g_quark_from_static_string ("my-app-error-quark"),
                                                  42, "custom");
  g_autoptr(GBytes) bytes = dc_wire_encode_error (original);
  g_autoptr(GBytes) custom_bytes = dc_wire_encode_error (custom);
  g_autoptr(GError) decoded = dc_wire_decode_error (bytes, NULL);
  g_autoptr(GError) custom_decoded = dc_wire_decode_error (custom_bytes, NULL);

  g_assert_error (decoded, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_cmpstr (decoded->message, ==, "no such thing");
  g_assert_cmpstr (g_quark_to_string (custom_decoded->domain), ==, "my-app-error-quark");
  g_assert_cmpint (custom_decoded->code, ==, 42);
  g_assert_cmpstr (custom_decoded->message, ==, "custom");
}

static void
test_error_malformed (void)
{
  const guint8 junk[] = { 1, 2, 3 };
  g_autoptr(GBytes) bytes = g_bytes_new (junk, sizeof junk);
  g_autoptr(GBytes) empty = g_bytes_new (NULL, 0);
  g_autoptr(GError) error = NULL;
  g_autoptr(GError) decoded = dc_wire_decode_error (bytes, &error);

  g_assert_null (decoded);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_clear_error (&error);

  decoded = dc_wire_decode_error (empty, &error);
  g_assert_null (decoded);
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
}

static void
test_error_domains_bounded (void)
{
  guint i, kept = 0, folded = 0;

  /* A worker chooses domain names; the parent interns a bounded number
   * and folds the rest into one domain, keeping the name in the message. */
  for (i = 0; i < 600; i++)
    {
      g_autofree char *name = g_strdup_printf ("dc-test-made-up-%u-error-quark", i);
      g_autoptr(GVariant) v = g_variant_ref_sink (g_variant_new ("(sis)", name, 3, "m"));
      g_autoptr(GBytes) bytes = g_variant_get_data_as_bytes (v);
      g_autoptr(GError) decoded = dc_wire_decode_error (bytes, NULL);

      g_assert_nonnull (decoded);
      g_assert_cmpint (decoded->code, ==, 3);
      if (g_str_equal (g_quark_to_string (decoded->domain), name))
        kept++;
      else
        {
          g_assert_cmpstr (g_quark_to_string (decoded->domain), ==, "dc-unknown-remote-error-quark");
          g_assert_nonnull (strstr (decoded->message, name));
          folded++;
        }
    }
  g_assert_cmpuint (kept, <=, 256);
  g_assert_cmpuint (folded, >=, 600 - 256);
}

/* A type string that is valid but not definite ("(?)", "*") describes no
 * value: GLib would log criticals on it and leak the payload. */
static void
test_variant_indefinite (void)
{
  const char *types[] = { "*", "?", "(?)", "a*", "m?", "(r)", "a{?*}", "r" };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (types); i++)
    {
      gsize type_len = strlen (types[i]);
      gsize offset = (4 + type_len + 1 + 7) & ~(gsize) 7;
      g_autofree guint8 *data = g_malloc0 (offset + 8);
      guint32 len32 = (guint32) type_len;
      g_autoptr(GBytes) payload = NULL;
      g_autoptr(GVariant) value = NULL;
      g_autoptr(GError) error = NULL;

      memcpy (data, &len32, 4);
      memcpy (data + 4, types[i], type_len);
      payload = g_bytes_new (data, offset + 8);
      value = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, payload, &error);
      g_assert_null (value);
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
    }
}

/* A value of a fixed-size type whose data is not that size is not what the
 * other end sends: PROTOCOL, at once, however large it is (GLib would copy
 * all of it to read it as the default value).  The right size still reads. */
static void
test_variant_fixed_size (void)
{
  const struct { const char *type; gsize fixed; } cases[] = {
    { "(i)", 4 }, { "()", 1 }, { "(yt)", 16 }, { "d", 8 }, { "{ib}", 8 },
  };
  const gsize wrong[] = { 0, 3, 1024 * 1024 };
  guint i, j;

  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    for (j = 0; j <= G_N_ELEMENTS (wrong); j++)
      {
        gboolean right = j == G_N_ELEMENTS (wrong);
        gsize data_len = right ? cases[i].fixed : wrong[j];
        gsize type_len = strlen (cases[i].type);
        gsize offset = (4 + type_len + 1 + 7) & ~(gsize) 7;
        g_autofree guint8 *data = NULL;
        guint32 len32 = (guint32) type_len;
        g_autoptr(GBytes) payload = NULL;
        g_autoptr(GVariant) value = NULL;
        g_autoptr(GError) error = NULL;

        if (!right && data_len == cases[i].fixed)
          continue;
        data = g_malloc0 (offset + data_len);
        memcpy (data, &len32, 4);
        memcpy (data + 4, cases[i].type, type_len);
        payload = g_bytes_new (data, offset + data_len);
        value = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, payload, &error);
        if (right)
          {
            g_assert_no_error (error);
            g_assert_nonnull (value);
            g_assert_cmpstr (g_variant_get_type_string (value), ==, cases[i].type);
          }
        else
          {
            g_assert_null (value);
            g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
          }
      }
}

/* Payload buffers are recycled, within a bound in bytes: one a worker made
 * the parent allocate is not kept when it is large. */
static void
test_reader_cache_bounded (void)
{
  const gsize sizes[] = { 100 * 1024, 2 * 1024 * 1024, 20 * 1024 * 1024, 64 * 1024 * 1024,
                          6 * 1024 * 1024, 6 * 1024 * 1024, 6 * 1024 * 1024 };
  GPtrArray *held = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref);
  guint i, round;

  for (round = 0; round < 3; round++)
    {
      for (i = 0; i < G_N_ELEMENTS (sizes); i++)
        {
          DcWireReader reader;
          guint8 header[DC_WIRE_HEADER_SIZE];
          const guint8 *p = header;
          gsize len = sizeof header, space = 0;
          DcWireHeader h;
          GBytes *payload = NULL;

          dc_wire_reader_init (&reader);
          dc_wire_header_encode (header, DC_WIRE_RESULT, 1, sizes[i]);
          g_assert_cmpint (dc_wire_reader_feed (&reader, &p, &len, &h, &payload), ==,
                           DC_WIRE_READ_NEED_MORE);
          g_assert_nonnull (dc_wire_reader_direct_buffer (&reader, &space));
          g_assert_cmpuint (space, ==, sizes[i]);
          dc_wire_reader_advance (&reader, space);
          dc_wire_reader_take_frame (&reader, &h, &payload);
          g_ptr_array_add (held, payload);
          dc_wire_reader_clear (&reader);
        }
      /* Every message freed: what stays allocated is bounded. */
      g_ptr_array_set_size (held, 0);
      g_assert_cmpuint (dc_wire_buffer_cache_size (), <=, 16 * 1024 * 1024);
    }
  g_ptr_array_unref (held);
}

typedef struct
{
  const guint8 *data;
  gsize         len;
  gsize         chunk;
  GPtrArray    *frames;
} Source;

static gssize
source_read (gpointer  user_data,
             void     *buffer,
             gsize     size)
{
  Source *src = user_data;
  gsize n = MIN (MIN (size, src->chunk), src->len);

  if (n == 0)
    return 0;
  memcpy (buffer, src->data, n);
  src->data += n;
  src->len -= n;
  return (gssize) n;
}

static gboolean
source_frame (gpointer            user_data,
              const DcWireHeader *header,
              GBytes             *payload)
{
  Source *src = user_data;

  g_ptr_array_add (src->frames, g_bytes_ref (payload));
  return header->serial != 99;   /* serial 99: stop here */
}

/* The read loop both ends share: frames whole whatever the reads, large
 * payloads straight into their buffer, a stop honoured. */
static void
test_reader_pump (void)
{
  g_autoptr(GByteArray) stream = g_byte_array_new ();
  guint8 *big = g_malloc (300 * 1024);
  gsize chunks[] = { 1, 7, 16, 4096, 1 << 20 };
  guint i, j;

  for (i = 0; i < 300 * 1024; i++)
    big[i] = (guint8) (i * 7);
  dc_wire_append_frame (stream, DC_WIRE_RESULT, 1, "abc", 3);
  dc_wire_append_frame (stream, DC_WIRE_RESULT, 2, big, 300 * 1024);
  dc_wire_append_frame (stream, DC_WIRE_RESULT, 3, NULL, 0);
  dc_wire_append_frame (stream, DC_WIRE_RESULT, 99, "x", 1);
  dc_wire_append_frame (stream, DC_WIRE_RESULT, 4, "never", 5);

  for (j = 0; j < G_N_ELEMENTS (chunks); j++)
    {
      guint8 scratch[64 * 1024];
      DcWireReader reader;
      Source src = { stream->data, stream->len, chunks[j], g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref) };
      DcWirePumpStatus status;
      gsize n;

      dc_wire_reader_init (&reader);
      do
        status = dc_wire_reader_pump (&reader, scratch, sizeof scratch, source_read,
                                      source_frame, &src, &n);
      while (status == DC_WIRE_PUMP_READ);
      g_assert_cmpint (status, ==, DC_WIRE_PUMP_STOPPED);
      g_assert_cmpuint (src.frames->len, ==, 4);
      g_assert_cmpmem (g_bytes_get_data (src.frames->pdata[1], NULL),
                       g_bytes_get_size (src.frames->pdata[1]), big, 300 * 1024);
      g_assert_cmpuint (g_bytes_get_size (src.frames->pdata[2]), ==, 0);
      g_ptr_array_unref (src.frames);
      dc_wire_reader_clear (&reader);
    }
  g_free (big);
}

/* Descriptors go with the frame that declares them, and only those. */
static void
test_claim_fds (void)
{
  g_autoptr(GArray) fds = g_array_new (FALSE, FALSE, sizeof (int));
  g_autoptr(GBytes) payload = g_bytes_new ("abcd", 4);
  g_autoptr(GError) error = NULL;
  GUnixFDList *list = NULL;
  DcWireHeader header = { .size = 4, .type = DC_WIRE_RESULT, .n_fds = 2 };
  int p[2];

  g_assert_cmpint (pipe (p), ==, 0);
  g_array_append_vals (fds, p, 2);

  /* Too few came: a lie. */
  header.n_fds = 3;
  g_assert_false (dc_wire_claim_fds (fds, &header, &payload, &list, &error));
  g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
  g_clear_error (&error);

  header.n_fds = 2;
  g_assert_true (dc_wire_claim_fds (fds, &header, &payload, &list, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (fds->len, ==, 0);
  g_assert_cmpint (g_unix_fd_list_get_length (list), ==, 2);
  g_object_unref (list);

  /* Between frames, a reader has read nothing of the next. */
  {
    DcWireReader reader;
    guint8 head[DC_WIRE_HEADER_SIZE];
    const guint8 *q = head;
    gsize len = 3;
    DcWireHeader h;
    GBytes *out = NULL;

    dc_wire_reader_init (&reader);
    g_assert_true (dc_wire_reader_between_frames (&reader));
    dc_wire_header_encode (head, DC_WIRE_RESULT, 1, 0);
    dc_wire_reader_feed (&reader, &q, &len, &h, &out);
    g_assert_false (dc_wire_reader_between_frames (&reader));
    len = sizeof head - 3;
    g_assert_cmpint (dc_wire_reader_feed (&reader, &q, &len, &h, &out), ==, DC_WIRE_READ_FRAME);
    g_assert_true (dc_wire_reader_between_frames (&reader));
    g_bytes_unref (out);
    dc_wire_reader_clear (&reader);
  }
}

/* What the parent asks of the worker template, and what the template
 * makes of it, without forking. */
static void
test_template_request (void)
{
  char *envp[] = { "A=1", "PATH=/bin", "EMPTY=", NULL };
  char *storage[DC_TEMPLATE_MAX_ENV + 1];
  g_autoptr(GArray) no_paths = g_array_new (FALSE, FALSE, sizeof (DcSandboxPath));
  g_autoptr(GBytes) sandbox = dc_sandbox_build (DC_SANDBOX_NO_EXEC, no_paths, 0, NULL);
  g_autoptr(GBytes) request = dc_template_encode_request (DC_SETUP_SILENCE_STDERR, sandbox,
                                                          "/tmp", envp,
                                                          DC_MARSHALLER_FLAT, TRUE, 4096);
  g_autofree guint8 *copy = g_memdup2 (g_bytes_get_data (request, NULL), g_bytes_get_size (request));
  gsize size = g_bytes_get_size (request);
  DcWorkerSetup setup = { 0, };
  DcWorkerCode code = { 0, };
  int fds[2] = { 7, 8 };
  gsize cut;

  g_assert_true (dc_template_decode_request (copy, size, fds, 2, storage, &setup, &code));
  g_assert_cmpint (setup.read_fd, ==, 7);
  g_assert_cmpint (setup.write_fd, ==, 8);
  g_assert_cmpint (setup.flags, ==, DC_SETUP_SILENCE_STDERR);
  g_assert_cmpstr (setup.cwd, ==, "/tmp");
  g_assert_cmpstrv (setup.envp, envp);
  g_assert_cmpint (code.marshaller, ==, DC_MARSHALLER_FLAT);
  g_assert_true (code.exit_on_die);
  g_assert_cmpuint (code.memfd_threshold, ==, 4096);
  g_assert_false (code.is_socket);
  g_assert_nonnull (code.sandbox);
  g_assert_cmpmem (code.sandbox, code.sandbox_size,
                   g_bytes_get_data (sandbox, NULL), g_bytes_get_size (sandbox));

  /* A captured stderr: its pipe comes after the channel's ends. */
  {
    g_autoptr(GBytes) capture = dc_template_encode_request (DC_SETUP_CAPTURE_STDERR, NULL, NULL,
                                                            NULL, DC_MARSHALLER_VARIANT, FALSE, 0);
    g_autofree guint8 *capture_copy = g_memdup2 (g_bytes_get_data (capture, NULL),
                                                 g_bytes_get_size (capture));
    gsize capture_size = g_bytes_get_size (capture);
    DcWorkerSetup capture_setup = { 0, };
    DcWorkerCode capture_code = { 0, };
    int three[3] = { 7, 8, 9 };
    int four[4] = { 7, 8, 9, 10 };

    g_assert_true (dc_template_decode_request (capture_copy, capture_size, three, 3, storage,
                                               &capture_setup, &capture_code));
    g_assert_cmpint (capture_setup.read_fd, ==, 7);
    g_assert_cmpint (capture_setup.write_fd, ==, 8);
    g_assert_cmpint (capture_setup.stderr_fd, ==, 9);
    g_assert_false (capture_code.is_socket);
    g_assert_true (dc_template_decode_request (capture_copy, capture_size, three, 2, storage,
                                               &capture_setup, &capture_code));
    g_assert_cmpint (capture_setup.read_fd, ==, 7);
    g_assert_cmpint (capture_setup.write_fd, ==, 7);
    g_assert_cmpint (capture_setup.stderr_fd, ==, 8);
    g_assert_true (capture_code.is_socket);
    /* Without its pipe, or with one too many, it is refused. */
    g_assert_false (dc_template_decode_request (capture_copy, capture_size, three, 1, storage,
                                                &capture_setup, &capture_code));
    g_assert_false (dc_template_decode_request (capture_copy, capture_size, four, 4, storage,
                                                &capture_setup, &capture_code));
  }

  /* Nothing to change: the template's own directory and environment. */
  {
    g_autoptr(GBytes) plain = dc_template_encode_request (DC_SETUP_NONE, NULL, NULL, NULL,
                                                          DC_MARSHALLER_VARIANT, FALSE, 0);
    g_autofree guint8 *plain_copy = g_memdup2 (g_bytes_get_data (plain, NULL), g_bytes_get_size (plain));

    g_assert_true (dc_template_decode_request (plain_copy, g_bytes_get_size (plain), fds, 1,
                                               storage, &setup, &code));
    g_assert_null (setup.cwd);
    g_assert_null (setup.envp);
    g_assert_null (code.sandbox);
    g_assert_true (code.is_socket);
  }

  /* Every truncation, and a string without its end, is refused. */
  for (cut = 1; cut < size; cut++)
    {
      g_autofree guint8 *shorter = g_memdup2 (g_bytes_get_data (request, NULL), size);

      g_assert_false (dc_template_decode_request (shorter, size - cut, fds, 2, storage,
                                                  &setup, &code));
    }
  copy = (g_free (copy), g_memdup2 (g_bytes_get_data (request, NULL), size));
  copy[size - 1] = 'x';
  g_assert_false (dc_template_decode_request (copy, size, fds, 2, storage, &setup, &code));
  copy[size - 1] = '\0';
  g_assert_false (dc_template_decode_request (copy, size, fds, 3, storage, &setup, &code));
}

/* A large value's message in pieces, head then the value's own bytes,
 * is byte for byte the message made in one piece; below the threshold it
 * is made in one piece, and the flat marshaller always is. */
static void
test_variant_split (void)
{
  gsize sizes[] = { 100, DC_WIRE_BODY_MIN - 16, DC_WIRE_BODY_MIN, 3 << 20 };
  guint i, shape;

  for (i = 0; i < G_N_ELEMENTS (sizes); i++)
    for (shape = 0; shape < 3; shape++)
      {
        g_autofree guint8 *data = g_malloc (sizes[i]);
        g_autoptr(GVariant) value = NULL;
        g_autoptr(GVariant) body = NULL;
        g_autoptr(GBytes) whole = NULL;
        g_autoptr(GBytes) head = NULL;
        g_autoptr(GByteArray) joined = g_byte_array_new ();
        GVariant *bytes;
        gsize j;

        for (j = 0; j < sizes[i]; j++)
          data[j] = (guint8) (j * 13 + i);
        bytes = g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data, sizes[i], 1);
        /* Built from its children; with a second member; serialized. */
        if (shape == 0)
          value = g_variant_ref_sink (g_variant_new ("(@ay)", bytes));
        else if (shape == 1)
          value = g_variant_ref_sink (g_variant_new ("(u@ay)", 7, bytes));
        else
          {
            g_autoptr(GVariant) tree = g_variant_ref_sink (g_variant_new ("(@ay)", bytes));

            value = g_variant_ref_sink (g_variant_new_from_data (G_VARIANT_TYPE ("(ay)"),
                                                                 g_variant_get_data (tree),
                                                                 g_variant_get_size (tree), TRUE,
                                                                 (GDestroyNotify) g_variant_unref,
                                                                 g_variant_ref (tree)));
          }

        whole = dc_wire_marshal (DC_MARSHALLER_VARIANT, value, NULL);
        head = dc_wire_marshal_split (DC_MARSHALLER_VARIANT, value, &body, NULL);
        g_assert_nonnull (head);
        g_assert_true ((body != NULL) == (g_variant_get_size (value) >= DC_WIRE_BODY_MIN));
        g_byte_array_append (joined, g_bytes_get_data (head, NULL), g_bytes_get_size (head));
        if (body != NULL)
          g_byte_array_append (joined, g_variant_get_data (body), g_variant_get_size (body));
        g_assert_cmpmem (joined->data, joined->len,
                         g_bytes_get_data (whole, NULL), g_bytes_get_size (whole));
      }
}

static void
test_flat_never_split (void)
{
  g_autofree char *big = g_strnfill (DC_WIRE_BODY_MIN * 2, 'x');
  g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_new ("(s)", big));
  g_autoptr(GVariant) body = NULL;
  g_autoptr(GBytes) whole = dc_wire_marshal (DC_MARSHALLER_FLAT, value, NULL);
  g_autoptr(GBytes) split = dc_wire_marshal_split (DC_MARSHALLER_FLAT, value, &body, NULL);

  g_assert_null (body);
  g_assert_true (g_bytes_equal (whole, split));
}

/* ---- serialized arrays ---- */

/* @text parsed, in normal form, held. */
static GVariant *
parsed (const char *text)
{
  return g_variant_ref_sink (g_variant_new_parsed (text));
}

/* Cuts @array into views of @cut elements and joins them again: the bytes
 * must be GLib's own serialization of the same elements. */
static void
check_rejoin (const char *text,
              gsize       cut)
{
  g_autoptr(GVariant) array = parsed (text);
  const GVariantType *element = g_variant_type_element (g_variant_get_type (array));
  g_autoptr(GByteArray) out = g_byte_array_new ();
  g_autofree DcWireArray *views = NULL;
  DcWireArray all;
  gsize n, i, n_views;

  g_assert_true (dc_wire_array_init (&all, element, g_variant_get_data (array),
                                     g_variant_get_size (array)));
  n = g_variant_n_children (array);
  g_assert_cmpuint (all.n_elements, ==, n);
  n_views = (n + cut - 1) / cut;
  views = g_new (DcWireArray, MAX (n_views, 1));
  for (i = 0; i < n_views; i++)
    {
      views[i] = all;
      views[i].first = i * cut;
      views[i].n = MIN (cut, n - i * cut);
    }
  dc_wire_array_append_views (out, views, (guint) n_views);
  g_assert_cmpmem (out->data, out->len, g_variant_get_data (array), g_variant_get_size (array));

  /* And one view alone: GLib's array of those elements. */
  if (n > 2)
    {
      g_autoptr(GVariantBuilder) builder = g_variant_builder_new (g_variant_get_type (array));
      g_autoptr(GVariant) expected = NULL;
      DcWireArray middle = all;

      middle.first = 1;
      middle.n = n - 2;
      for (i = 1; i < n - 1; i++)
        {
          g_autoptr(GVariant) child = g_variant_get_child_value (array, i);

          g_variant_builder_add_value (builder, child);
        }
      expected = g_variant_ref_sink (g_variant_builder_end (builder));
      g_byte_array_set_size (out, 0);
      dc_wire_array_append_views (out, &middle, 1);
      g_assert_cmpmem (out->data, out->len, g_variant_get_data (expected),
                       g_variant_get_size (expected));
    }
}

static void
test_array_rejoin (void)
{
  g_autoptr(GString) big = g_string_new ("[");
  guint i;

  check_rejoin ("[(1, 2), (3, 4), (5, 6), (7, 8)]", 3);
  check_rejoin ("[<1>, <'two'>, <(3, 'three')>, <byte 4>]", 1);
  check_rejoin ("[('a', int64 1), ('bb', 2), ('', 3), ('dddd', 4), ('e', 5)]", 2);
  check_rejoin ("[@ay [], [byte 1], [2, 3], [4, 5, 6]]", 3);
  /* Past 255 and 65535 bytes, the table widens. */
  for (i = 0; i < 20000; i++)
    g_string_append_printf (big, "%s('%u', %u)", i ? ", " : "", i, i);
  g_string_append (big, "]");
  check_rejoin (big->str, 333);
  check_rejoin (big->str, 7);
}

static void
test_array_layout (void)
{
  static const struct { const char *type; gsize fixed, alignment; gboolean any_bytes; } cases[] = {
    { "y", 1, 1, TRUE }, { "b", 1, 1, FALSE }, { "i", 4, 4, TRUE }, { "d", 8, 8, TRUE },
    { "s", 0, 1, FALSE }, { "v", 0, 8, FALSE }, { "ai", 0, 4, TRUE }, { "as", 0, 1, FALSE },
    { "(i)", 4, 4, TRUE }, { "(yi)", 8, 4, FALSE }, { "(iy)", 8, 4, FALSE }, { "(ii)", 8, 4, TRUE },
    { "()", 1, 1, FALSE }, { "(xs)", 0, 8, FALSE }, { "{yy}", 2, 1, TRUE }, { "mi", 0, 4, FALSE },
  };
  guint i;

  for (i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GVariant) keeper = g_variant_ref_sink (
          g_variant_new_from_data (G_VARIANT_TYPE (cases[i].type), NULL, 0, FALSE, NULL, NULL));
      gsize fixed, alignment;

      dc_wire_type_layout (G_VARIANT_TYPE (cases[i].type), &fixed, &alignment);
      g_assert_cmpuint (fixed, ==, cases[i].fixed);
      /* GLib's own idea of the fixed size. */
      g_assert_cmpuint (fixed, ==, g_variant_get_size (keeper));
      g_assert_cmpuint (alignment, ==, cases[i].alignment);
      g_assert_cmpint (dc_wire_type_any_bytes_normal (G_VARIANT_TYPE (cases[i].type)), ==,
                       cases[i].any_bytes);
    }
}

/* Framing that is not GLib's normal form is refused, never read past. */
static void
test_array_malformed (void)
{
  /* ["a", "bc"]: bodies "a\0bc\0", ends 2 and 5. */
  static const guint8 good[] = { 'a', 0, 'b', 'c', 0, 2, 5 };
  static const guint8 backwards[] = { 'a', 0, 'b', 'c', 0, 5, 2 };
  static const guint8 past_end[] = { 'a', 0, 'b', 'c', 0, 2, 200 };
  static const guint8 table_past[] = { 'a', 0, 'b', 'c', 0, 9 };
  static const guint8 fixed_odd[] = { 1, 0, 0, 0, 2, 0, 0 };
  DcWireArray array;

  g_assert_true (dc_wire_array_init (&array, G_VARIANT_TYPE_STRING, good, sizeof good));
  g_assert_cmpuint (array.n_elements, ==, 2);
  g_assert_false (dc_wire_array_init (&array, G_VARIANT_TYPE_STRING, backwards, sizeof backwards));
  g_assert_false (dc_wire_array_init (&array, G_VARIANT_TYPE_STRING, past_end, sizeof past_end));
  g_assert_false (dc_wire_array_init (&array, G_VARIANT_TYPE_STRING, table_past, sizeof table_past));
  g_assert_false (dc_wire_array_init (&array, G_VARIANT_TYPE_INT32, fixed_odd, sizeof fixed_odd));
}

/* A worker's forged chunk reply: a result whose type string is empty
 * (right after its value's NUL) is refused, never handed to GLib as a
 * type, wherever it stands. */
static void
test_chunk_results_empty_type (void)
{
  static const guint8 alone[] = { 0x00, 0x01 };
  /* "(i)" 7, then the empty type: the first element is remembered. */
  static const guint8 second[] = { 7, 0, 0, 0, 0, '(', 'i', ')', 0, 0, 0, 0, 0, 0, 0, 0,
                                   0x00, 8, 17 };
  DcWireArray array;
  gboolean normal;

  g_assert_true (dc_wire_array_init (&array, G_VARIANT_TYPE_VARIANT, alone, sizeof alone));
  g_assert_false (dc_wire_chunk_results_check (&array, DC_MARSHALLER_VARIANT, &normal));
  g_assert_true (dc_wire_array_init (&array, G_VARIANT_TYPE_VARIANT, second, sizeof second));
  g_assert_cmpuint (array.n_elements, ==, 2);
  g_assert_false (dc_wire_chunk_results_check (&array, DC_MARSHALLER_VARIANT, &normal));
}

int
main (int   argc,
      char *argv[])
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/detached-code/wire/frames/round-trip", test_frames_roundtrip);
  g_test_add_func ("/detached-code/wire/frames/truncated", test_frames_truncated);
  g_test_add_func ("/detached-code/wire/frames/bad-header", test_frames_bad_header);
  g_test_add_func ("/detached-code/wire/reader/stays-failed", test_reader_stays_failed);
  g_test_add_func ("/detached-code/wire/reader/direct-buffer", test_reader_direct_buffer);
  g_test_add_func ("/detached-code/wire/variant/round-trip", test_variant_roundtrip);
  g_test_add_func ("/detached-code/wire/variant/large-is-shared", test_variant_large_is_shared);
  g_test_add_func ("/detached-code/wire/variant/split", test_variant_split);
  g_test_add_func ("/detached-code/wire/flat/never-split", test_flat_never_split);
  g_test_add_func ("/detached-code/wire/variant/garbage", test_variant_garbage);
  g_test_add_func ("/detached-code/wire/variant/indefinite", test_variant_indefinite);
  g_test_add_func ("/detached-code/wire/variant/fixed-size", test_variant_fixed_size);
  g_test_add_func ("/detached-code/wire/reader/cache-bounded", test_reader_cache_bounded);
  g_test_add_func ("/detached-code/wire/reader/pump", test_reader_pump);
  g_test_add_func ("/detached-code/wire/claim-fds", test_claim_fds);
  g_test_add_func ("/detached-code/wire/template-request", test_template_request);
  g_test_add_func ("/detached-code/wire/flat/round-trip", test_flat_roundtrip);
  g_test_add_func ("/detached-code/wire/flat/refuses", test_flat_refuses);
  g_test_add_func ("/detached-code/wire/flat/corrupt", test_flat_corrupt);
  g_test_add_func ("/detached-code/wire/error/round-trip", test_error_roundtrip);
  g_test_add_func ("/detached-code/wire/error/malformed", test_error_malformed);
  g_test_add_func ("/detached-code/wire/error/domains-bounded", test_error_domains_bounded);
  g_test_add_func ("/detached-code/wire/array/rejoin", test_array_rejoin);
  g_test_add_func ("/detached-code/wire/array/layout", test_array_layout);
  g_test_add_func ("/detached-code/wire/array/malformed", test_array_malformed);
  g_test_add_func ("/detached-code/wire/chunk-results/empty-type", test_chunk_results_empty_type);

  return g_test_run ();
}
