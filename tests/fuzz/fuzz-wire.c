/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* libFuzzer target for what a worker can send the parent: arbitrary bytes
 * through the frame reader's read loop, and every frame's payload through
 * every payload decoder.  In-process, no fork, no descriptor.
 *
 * Chunk replies' result arrays, too: what their check lets the parent load
 * as trusted must be in normal form.
 *
 * An input is a few control bytes, then the stream:
 *
 *   guint8 scratch    the pump's scratch buffer is 1 + this many bytes, so
 *                     small inputs reach the direct-read path (taken when
 *                     the payload still wanted is at least the scratch size)
 *   guint8 n_chunks   low 4 bits: how many chunk sizes follow; bit 4: stop
 *                     the pump at the first frame (the frame callback says
 *                     no)
 *   n_chunks times guint8: the sizes of successive reads, cycled; 0 is a
 *                     read that would block (EAGAIN), 255 one that fails
 *                     (EIO).  With no non-zero size, each read takes all it
 *                     is offered.
 *   the stream        what the reads serve, then end of stream.
 *
 * make-corpus.c writes valid inputs in this layout.
 */

#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dc-wire-private.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define CONTROL_SCRATCH 0
#define CONTROL_CHUNKS  1
#define CHUNKS_MASK     0x0f
#define STOP_AT_FIRST   0x10
#define CHUNK_EAGAIN    0
#define CHUNK_EIO       255

/* A header may claim up to DC_WIRE_MAX_PAYLOAD, which the reader then
 * allocates; under ASan each such allocation costs milliseconds (its
 * shadow is poisoned on free), and the fuzzer finds such headers at once.
 * Claims beyond the stream by more than this are cut short before their
 * header completes.  It still admits sizes that take the recycled-buffer
 * path (64 KiB and up). */
#define MAX_UNBACKED_CLAIM (1024 * 1024)

typedef struct
{
  const guint8 *stream;
  gsize         stream_len;
  gsize         pos;
  const guint8 *chunks;
  gsize         n_chunks;
  gsize         next_chunk;
  gboolean      stop_at_first;
  guint         n_frames;
  DcWireReader *reader;
} Input;

static GLogWriterOutput
abort_on_warning (GLogLevelFlags   log_level,
                  const GLogField *fields,
                  gsize            n_fields,
                  gpointer         user_data)
{
  g_log_writer_default (log_level, fields, n_fields, user_data);
  /* Untrusted bytes must never make the library or GLib complain. */
  if (log_level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
    abort ();
  return G_LOG_WRITER_HANDLED;
}

int
LLVMFuzzerInitialize (int    *argc,
                      char ***argv)
{
  /* Both g_log() and structured logging end up here. */
  g_log_set_writer_func (abort_on_warning, NULL, NULL);
  return 0;
}

static gssize
input_read (gpointer  user_data,
            void     *buffer,
            gsize     size)
{
  Input *in = user_data;
  gsize n = in->stream_len - in->pos;

  if (n == 0)
    return 0;

  if (in->n_chunks > 0)
    {
      guint8 chunk = in->chunks[in->next_chunk];

      in->next_chunk = (in->next_chunk + 1) % in->n_chunks;
      if (chunk == CHUNK_EAGAIN)
        {
          errno = EAGAIN;
          return -1;
        }
      if (chunk == CHUNK_EIO)
        {
          errno = EIO;
          return -1;
        }
      n = MIN (n, chunk);
    }

  n = MIN (n, size);
  memcpy (buffer, in->stream + in->pos, n);
  in->pos += n;
  return (gssize) n;
}

static void
check_flat (GBytes *payload)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_wire_unmarshal (DC_MARSHALLER_FLAT, payload, &error);
  g_autoptr(GBytes) again = NULL;
  DcWireMarshalStatus status;

  g_assert_true ((value == NULL) != (error == NULL));
  if (value == NULL)
    {
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
      return;
    }

  /* The flat format has one encoding per value: whatever the reader
   * accepts, the writer must reproduce byte for byte. */
  again = dc_wire_marshal_raw (DC_MARSHALLER_FLAT, value, &status);
  g_assert_cmpint (status, ==, DC_WIRE_MARSHAL_OK);
  g_assert_nonnull (again);
  g_assert_true (g_bytes_equal (again, payload));
}

static void
check_variant (GBytes *payload)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) value = dc_wire_unmarshal (DC_MARSHALLER_VARIANT, payload, &error);
  g_autoptr(GBytes) again = NULL;
  g_autoptr(GVariant) back = NULL;
  DcWireMarshalStatus status;

  g_assert_true ((value == NULL) != (error == NULL));
  if (value == NULL)
    {
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
      return;
    }

  /* Untrusted data need not be in normal form, so no byte comparison;
   * but what was accepted must travel again.  (Nothing here prints or
   * compares the value: that would fuzz GLib's GVariant, not this.) */
  g_assert_true (g_variant_type_is_definite (g_variant_get_type (value)));
  again = dc_wire_marshal_raw (DC_MARSHALLER_VARIANT, value, &status);
  g_assert_cmpint (status, ==, DC_WIRE_MARSHAL_OK);
  g_assert_nonnull (again);
  back = dc_wire_unmarshal_raw (DC_MARSHALLER_VARIANT, again);
  g_assert_nonnull (back);
  g_assert_cmpstr (g_variant_get_type_string (back), ==, g_variant_get_type_string (value));
}

static void
check_error (GBytes *payload)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GError) remote = dc_wire_decode_error (payload, &error);
  g_autoptr(GBytes) encoded = NULL;
  g_autoptr(GError) back = NULL;

  g_assert_true ((remote == NULL) != (error == NULL));
  if (remote == NULL)
    {
      g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
      return;
    }

  /* The parent hands this error to the caller, who may show it or send
   * it on: it must be a proper GError, and travel again unchanged. */
  g_assert_cmpuint (remote->domain, !=, 0);
  g_assert_nonnull (remote->message);
  g_assert_true (g_utf8_validate (remote->message, -1, NULL));
  encoded = dc_wire_encode_error (remote);
  back = dc_wire_decode_error (encoded, NULL);
  g_assert_nonnull (back);
  g_assert_true (g_error_matches (back, remote->domain, remote->code));
  g_assert_cmpstr (back->message, ==, remote->message);
}

/* A chunk reply's results: what the check passes as all in normal form,
 * the parent loads as trusted, so it must be exactly that. */
static void
check_chunk_results (GBytes *payload)
{
  gsize size;
  const guint8 *data = g_bytes_get_data (payload, &size);
  DcWireArray array;
  gboolean normal;
  int m;

  if (!dc_wire_array_init (&array, G_VARIANT_TYPE_VARIANT, data, size))
    return;
  for (m = DC_MARSHALLER_VARIANT; m <= DC_MARSHALLER_FLAT; m++)
    if (dc_wire_chunk_results_check (&array, (DcMarshaller) m, &normal) && normal)
      {
        g_autoptr(GVariant) results = g_variant_ref_sink (
            g_variant_new_from_bytes (G_VARIANT_TYPE ("av"), payload, FALSE));

        g_assert_true (g_variant_is_normal_form (results));
      }
}

static gboolean
input_frame (gpointer            user_data,
             const DcWireHeader *header,
             GBytes             *payload)
{
  Input *in = user_data;

  g_assert_cmpuint (header->type, >=, DC_WIRE_CALL);
  g_assert_cmpuint (header->type, <=, DC_WIRE_LAST_TYPE);
  g_assert_cmpuint (header->size, ==, g_bytes_get_size (payload));
  /* Descriptors received now belong to the next frame. */
  g_assert_true (dc_wire_reader_between_frames (in->reader));

  /* Every decoder on every payload, whatever the frame's type: the
   * decoders must not trust the type either. */
  check_flat (payload);
  check_variant (payload);
  check_error (payload);
  check_chunk_results (payload);

  in->n_frames++;
  return !in->stop_at_first;
}

/* The length of the stream, cut before the header of the first frame
 * that claims far more than the stream holds (see MAX_UNBACKED_CLAIM). */
static gsize
bounded_stream_len (const guint8 *stream,
                    gsize         len)
{
  gsize pos = 0;

  while (len - pos >= DC_WIRE_HEADER_SIZE)
    {
      DcWireHeader header;
      gsize rest;

      if (dc_wire_header_decode (stream + pos, &header) != DC_WIRE_HEADER_OK)
        break;
      rest = len - pos - DC_WIRE_HEADER_SIZE;
      if (header.size > rest && header.size - rest > MAX_UNBACKED_CLAIM)
        return pos + DC_WIRE_HEADER_SIZE - 1;
      if (header.size > rest)
        break;
      pos += DC_WIRE_HEADER_SIZE + header.size;
    }
  return len;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data,
                        size_t         size)
{
  Input in = { 0, };
  DcWireReader reader;
  DcWirePumpStatus status;
  g_autofree guint8 *scratch = NULL;
  gsize scratch_size, i, n_read, n_again = 0;
  gboolean any_size = FALSE;

  if (size < 2)
    return -1;   /* not worth keeping in the corpus */

  scratch_size = 1 + (gsize) data[CONTROL_SCRATCH];
  in.n_chunks = MIN (data[CONTROL_CHUNKS] & CHUNKS_MASK, size - 2);
  in.stop_at_first = (data[CONTROL_CHUNKS] & STOP_AT_FIRST) != 0;
  in.chunks = data + 2;
  for (i = 0; i < in.n_chunks; i++)
    any_size |= in.chunks[i] != CHUNK_EAGAIN;
  /* Reads that always block would never end. */
  if (!any_size)
    in.n_chunks = 0;
  in.stream = data + 2 + MIN (data[CONTROL_CHUNKS] & CHUNKS_MASK, size - 2);
  in.stream_len = bounded_stream_len (in.stream, size - (gsize) (in.stream - data));

  /* Its own allocation, so ASan sees any overrun of it. */
  scratch = g_malloc (scratch_size);
  dc_wire_reader_init (&reader);
  in.reader = &reader;

  for (;;)
    {
      gsize before = in.pos;

      status = dc_wire_reader_pump (&reader, scratch, scratch_size, input_read, input_frame,
                                    &in, &n_read);
      g_assert_cmpuint (n_read, ==, in.pos - before);

      switch (status)
        {
        case DC_WIRE_PUMP_READ:
          g_assert_cmpuint (n_read, >, 0);
          continue;
        case DC_WIRE_PUMP_AGAIN:
          /* A schedule with a size serves a byte at least once a cycle. */
          g_assert_cmpuint (++n_again, <=, (in.stream_len + 1) * CHUNKS_MASK);
          continue;
        case DC_WIRE_PUMP_CORRUPT:
          {
            g_autoptr(GError) error = NULL;

            dc_wire_reader_set_error (&reader, &error);
            g_assert_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL);
            /* Once failed, the reader stays failed. */
            g_assert_cmpint (dc_wire_reader_pump (&reader, scratch, scratch_size, input_read,
                                                  input_frame, &in, &n_read),
                             ==, DC_WIRE_PUMP_CORRUPT);
          }
          break;
        case DC_WIRE_PUMP_STOPPED:
          g_assert_true (in.stop_at_first);
          break;
        case DC_WIRE_PUMP_EOF:
          g_assert_cmpuint (in.pos, ==, in.stream_len);
          break;
        case DC_WIRE_PUMP_IO_ERROR:
          g_assert_cmpint (errno, ==, EIO);
          break;
        default:
          g_assert_not_reached ();
        }
      break;
    }

  dc_wire_reader_clear (&reader);
  return 0;
}
