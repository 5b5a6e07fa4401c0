/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* Writes the seed corpus of fuzz-wire: frames of every type, made by the
 * library's own encoders, so the fuzzer starts from what the two ends
 * really exchange rather than having to discover the format.  The output
 * is deterministic; it is committed, and written again only when the
 * format changes:
 *
 *   ./make-corpus tests/fuzz/corpus
 *
 * Each file starts with fuzz-wire's control bytes (see fuzz-wire.c). */

#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dc-wire-private.h"

#define STOP_AT_FIRST 0x10
#define CHUNK_EAGAIN  0
#define CHUNK_EIO     255
#define MAX_SEED_SIZE 4096

typedef struct
{
  guint8 scratch;      /* scratch buffer of 1 + this many bytes */
  guint8 flags;        /* STOP_AT_FIRST, or 0 */
  const guint8 *chunks;
  gsize n_chunks;
} Control;

/* Large scratch, every read takes all it is offered. */
static const Control whole = { 255, 0, NULL, 0 };

static const char *out_dir;
static guint n_written;

static void
write_seed (const char    *name,
            const Control *control,
            GByteArray    *stream)
{
  g_autoptr(GByteArray) seed = g_byte_array_new ();
  g_autofree char *path = g_build_filename (out_dir, name, NULL);
  g_autoptr(GError) error = NULL;
  guint8 n_chunks = (guint8) control->n_chunks | control->flags;

  g_assert (control->n_chunks <= 15);
  g_byte_array_append (seed, &control->scratch, 1);
  g_byte_array_append (seed, &n_chunks, 1);
  if (control->n_chunks > 0)
    g_byte_array_append (seed, control->chunks, (guint) control->n_chunks);
  g_byte_array_append (seed, stream->data, stream->len);

  /* Small seeds keep the fuzzer fast, and libFuzzer's -max_len at its
   * default. */
  g_assert (seed->len < MAX_SEED_SIZE);
  if (!g_file_set_contents (path, (const char *) seed->data, seed->len, &error))
    g_error ("%s", error->message);
  n_written++;
}

static void
append_bytes (GByteArray *stream,
              DcWireType  type,
              guint64     serial,
              GBytes     *payload)
{
  gsize size;
  const void *data = g_bytes_get_data (payload, &size);

  dc_wire_append_frame (stream, type, serial, data, size);
}

static GByteArray *
frame (DcWireType  type,
       guint64     serial,
       GBytes     *payload)
{
  GByteArray *stream = g_byte_array_new ();

  if (payload != NULL)
    append_bytes (stream, type, serial, payload);
  else
    dc_wire_append_frame (stream, type, serial, NULL, 0);
  return stream;
}

static GBytes *
marshal (DcMarshaller  marshaller,
         const char   *text)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = g_variant_ref_sink (g_variant_parse (NULL, text, NULL, NULL, &error));
  GBytes *bytes;

  g_assert_no_error (error);
  bytes = dc_wire_marshal (marshaller, value, &error);
  g_assert_no_error (error);
  return bytes;
}

static void
seed_marshalled (const char   *name,
                 DcMarshaller  marshaller,
                 DcWireType    type,
                 const char   *text)
{
  g_autoptr(GBytes) payload = marshal (marshaller, text);
  g_autoptr(GByteArray) stream = frame (type, 1, payload);

  write_seed (name, &whole, stream);
}

static void
seed_error (const char *name,
            const char *domain,
            gint        code,
            const char *message)
{
  g_autoptr(GError) error = g_error_new_literal (g_quark_from_string (domain), code, message);
  g_autoptr(GBytes) payload = dc_wire_encode_error (error);
  g_autoptr(GByteArray) stream = frame (DC_WIRE_ERROR, 7, payload);

  write_seed (name, &whole, stream);
}

static void
seed_header (const char *name,
             DcWireType  type,
             guint       flags,
             guint       n_fds,
             guint32     size,
             const void *payload,
             gsize       payload_len)
{
  g_autoptr(GByteArray) stream = g_byte_array_new ();
  DcWireHeader header = { size, type, flags, n_fds, 3 };

  /* By hand: the encoder refuses what these headers claim. */
  g_byte_array_append (stream, (const guint8 *) &header, sizeof header);
  if (payload_len > 0)
    g_byte_array_append (stream, payload, (guint) payload_len);
  write_seed (name, &whole, stream);
}

int
main (int   argc,
      char *argv[])
{
  static const char *variants[][2] = {
    { "variant-sv-echo", "('echo', <'hello'>)" },
    { "variant-unit", "()" },
    { "variant-i", "(int32 42,)" },
    { "variant-ii", "(7, 12345)" },
    { "variant-ms-nothing", "(@ms nothing,)" },
    { "variant-ms-just", "(@ms 'x',)" },
    { "variant-ay", "(b'binary\\x01\\x02',)" },
    { "variant-ai", "([0, 1, 2, 1023],)" },
    { "variant-as", "(['a', '', 'ünïcödé'],)" },
    { "variant-asv", "({'n': <int32 1>, 's': <'v'>, 'b': <true>, 'd': <3.5>},)" },
    { "variant-nested-v", "(<<<(byte 1, int16 -2, uint16 3)>>>,)" },
    { "variant-tuple-mixed", "(true, byte 255, int64 -1, uint64 18446744073709551615, 'o', "
                             "objectpath '/a/b', signature 'a{sv}', handle 0)" },
    { "variant-maybe-array", "(@mai [1, 2], @mmb just nothing)" },
    { "variant-dict-array", "({'k': ['x', 'y']}, @a(ii) [(1, 2), (3, 4)])" },
    { "variant-bare-s", "'not a tuple'" },
    { "variant-bare-u", "uint32 7" },
  };
  static const char *flats[][2] = {
    { "flat-unit", "()" },
    { "flat-s", "('hello',)" },
    { "flat-s-empty", "('',)" },
    { "flat-ms", "(@ms 'just', @ms nothing)" },
    { "flat-mixed", "('a', @ms nothing, 'ünïcödé', @ms '')" },
  };
  guint8 big[3000];
  guint i;

  if (argc != 2)
    {
      g_printerr ("Usage: %s OUTPUT-DIRECTORY\n", argv[0]);
      return 2;
    }
  out_dir = argv[1];
  if (g_mkdir_with_parents (out_dir, 0755) < 0)
    g_error ("%s: %s", out_dir, g_strerror (errno));

  /* The two marshallers, as call arguments and as results. */
  for (i = 0; i < G_N_ELEMENTS (variants); i++)
    {
      g_autofree char *call = g_strdup_printf ("call-%s", variants[i][0]);
      g_autofree char *result = g_strdup_printf ("result-%s", variants[i][0]);

      seed_marshalled (call, DC_MARSHALLER_VARIANT, DC_WIRE_CALL, variants[i][1]);
      if (i < 6)
        seed_marshalled (result, DC_MARSHALLER_VARIANT, DC_WIRE_RESULT, variants[i][1]);
    }
  for (i = 0; i < G_N_ELEMENTS (flats); i++)
    {
      g_autofree char *call = g_strdup_printf ("call-%s", flats[i][0]);
      g_autofree char *result = g_strdup_printf ("result-%s", flats[i][0]);

      seed_marshalled (call, DC_MARSHALLER_FLAT, DC_WIRE_CALL, flats[i][1]);
      seed_marshalled (result, DC_MARSHALLER_FLAT, DC_WIRE_RESULT, flats[i][1]);
    }

  /* Errors: a domain the parent knows, one it must intern, one too long
   * to intern. */
  seed_error ("error-gio", "g-io-error-quark", G_IO_ERROR_NOT_FOUND, "not found: x");
  seed_error ("error-custom", "dc-test-custom-error-quark", -3, "custom failure");
  seed_error ("error-empty-message", "dc-fuzz-error-quark", 0, "");
  {
    g_autofree char *domain = g_strnfill (300, 'q');

    seed_error ("error-long-domain", domain, 1, "the domain reaches the caller in here");
  }

  /* The payload-less and the small fixed payloads. */
  {
    g_autoptr(GByteArray) stream = frame (DC_WIRE_NULL_RESULT, 2, NULL);
    guint32 setup[2] = { DC_WIRE_SETUP_STEP_CWD, ENOENT };
    g_autoptr(GBytes) type = g_bytes_new_static ("(h)", 3);
    g_autoptr(GByteArray) failed = frame (DC_WIRE_MARSHAL_FAILED, 4, type);

    write_seed ("null-result", &whole, stream);
    write_seed ("marshal-failed", &whole, failed);
    seed_header ("setup-failed", DC_WIRE_SETUP_FAILED, 0, 0, sizeof setup, setup, sizeof setup);
  }

  /* Descriptors and memfd payloads, as headers declare them (the
   * descriptors themselves do not reach the fuzzer). */
  {
    guint64 size = 100 * 1024 * 1024;

    seed_header ("result-memfd", DC_WIRE_RESULT, DC_WIRE_FLAG_MEMFD, 1, 8, &size, 8);
    seed_header ("result-memfd-fds", DC_WIRE_RESULT, DC_WIRE_FLAG_MEMFD, 3, 8, &size, 8);
    seed_header ("call-fds", DC_WIRE_CALL, 0, DC_WIRE_MAX_FDS, 4, "\0\0\0\0", 4);
  }

  /* Headers the reader must refuse, and claims the stream does not keep. */
  seed_header ("bad-type", 99, 0, 0, 0, NULL, 0);
  seed_header ("bad-flags", DC_WIRE_RESULT, 0x80, 0, 0, NULL, 0);
  seed_header ("bad-memfd-size", DC_WIRE_RESULT, DC_WIRE_FLAG_MEMFD, 1, 4, "abcd", 4);
  seed_header ("too-many-fds", DC_WIRE_RESULT, 0, DC_WIRE_MAX_FDS + 1, 0, NULL, 0);
  seed_header ("too-large", DC_WIRE_RESULT, 0, 0, (guint32) DC_WIRE_MAX_PAYLOAD + 1, NULL, 0);
  seed_header ("truncated", DC_WIRE_RESULT, 0, 0, 100, "only a few", 10);
  seed_header ("claims-cached-buffer", DC_WIRE_RESULT, 0, 0, 100 * 1024, "x", 1);

  /* Several frames in one stream, read in various ways: byte by byte, in
   * odd sizes with reads that would block, straight into the payload
   * (small scratch), stopped at the first frame, and failing. */
  {
    g_autoptr(GByteArray) stream = g_byte_array_new ();
    g_autoptr(GBytes) call = marshal (DC_MARSHALLER_VARIANT, "('echo', <(1, 'two')>)");
    g_autoptr(GBytes) flat = marshal (DC_MARSHALLER_FLAT, "('a', @ms 'b')");
    g_autoptr(GError) error = g_error_new_literal (G_IO_ERROR, G_IO_ERROR_FAILED, "failed");
    g_autoptr(GBytes) err = dc_wire_encode_error (error);
    static const guint8 one[] = { 1 };
    static const guint8 odd[] = { 3, CHUNK_EAGAIN, 7, 16, 1, 40 };
    static const guint8 failing[] = { 20, CHUNK_EIO };
    const Control bytewise = { 255, 0, one, G_N_ELEMENTS (one) };
    const Control odd_sizes = { 255, 0, odd, G_N_ELEMENTS (odd) };
    const Control direct = { 7, 0, NULL, 0 };
    const Control tiny_scratch = { 0, 0, NULL, 0 };
    const Control stop = { 255, STOP_AT_FIRST, NULL, 0 };
    const Control fail = { 255, 0, failing, G_N_ELEMENTS (failing) };

    append_bytes (stream, DC_WIRE_CALL, 10, call);
    append_bytes (stream, DC_WIRE_RESULT, 10, flat);
    dc_wire_append_frame (stream, DC_WIRE_NULL_RESULT, 11, NULL, 0);
    append_bytes (stream, DC_WIRE_ERROR, 12, err);
    append_bytes (stream, DC_WIRE_RESULT, 13, call);

    write_seed ("stream-whole", &whole, stream);
    write_seed ("stream-bytewise", &bytewise, stream);
    write_seed ("stream-odd-reads", &odd_sizes, stream);
    write_seed ("stream-direct", &direct, stream);
    write_seed ("stream-tiny-scratch", &tiny_scratch, stream);
    write_seed ("stream-stop", &stop, stream);
    write_seed ("stream-io-error", &fail, stream);
  }

  /* A payload larger than the scratch buffer, read straight in. */
  {
    g_autoptr(GByteArray) stream = g_byte_array_new ();
    g_autoptr(GVariant) value = NULL;
    g_autoptr(GBytes) payload = NULL;
    const Control direct = { 63, 0, NULL, 0 };

    for (i = 0; i < sizeof big; i++)
      big[i] = (guint8) (i * 7);
    value = g_variant_ref_sink (g_variant_new ("(@ay)", g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, big, sizeof big, 1)));
    payload = dc_wire_marshal (DC_MARSHALLER_VARIANT, value, NULL);
    append_bytes (stream, DC_WIRE_RESULT, 20, payload);
    write_seed ("result-large-direct", &direct, stream);
  }

  /* A valid frame, then garbage: the reader fails and stays failed. */
  {
    g_autoptr(GByteArray) stream = frame (DC_WIRE_NULL_RESULT, 1, NULL);
    guint8 junk[DC_WIRE_HEADER_SIZE];

    memset (junk, 0xab, sizeof junk);
    g_byte_array_append (stream, junk, sizeof junk);
    dc_wire_append_frame (stream, DC_WIRE_NULL_RESULT, 2, NULL, 0);
    write_seed ("garbage-after-frame", &whole, stream);
  }

  g_print ("%u seeds in %s\n", n_written, out_dir);
  return 0;
}
