/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gi18n-lib.h>

#include "dc-wire-private.h"

/* The wire format, shared by both ends: frames, the two marshallers,
 * errors, the frame reader and its read loop, descriptors and memfd
 * payloads.  Nothing here forks, so all of it can be tested and fuzzed
 * in-process.
 *
 * In a worker it runs after the user's init function, like the user's
 * code, so it may allocate; none of it is part of the async-signal-safe
 * set-up in dc-worker.c. */

/* ---- large buffers ----
 *
 * A large payload buffer freed and allocated again costs page faults and
 * zeroing each time (glibc gives big blocks back to the kernel), more than
 * the copy itself.  A few are kept for the next message, within a bound
 * in bytes: a worker can make the parent allocate up to the frame limit,
 * which must not stay allocated after the message is freed.  Payloads end
 * up in GBytes that any thread may free, hence the lock.
 *
 * Only received frames use these buffers: a large value is never
 * marshalled into one (dc_wire_marshal_split_raw() writes it from its own
 * bytes), so however many large calls wait, none holds a buffer.  A reader
 * assembles one frame at a time, and its buffer comes back when the
 * caller drops the result: in the steady state each worker's channel has
 * one out at a time, and a few slots cover a pool on a small machine
 * without keeping more than the byte bound from the system.
 */

#define BUFFER_CACHE_MIN   (64 * 1024)
#define BUFFER_CACHE_SLOTS 4
/* Larger buffers go back to the system at once. */
#define BUFFER_CACHE_MAX   (8 * 1024 * 1024)
/* All those kept. */
#define BUFFER_CACHE_BYTES (16 * 1024 * 1024)

typedef struct
{
  gpointer data;
  gsize    capacity;
} Buffer;

static GMutex buffer_cache_lock;
static Buffer buffer_cache[BUFFER_CACHE_SLOTS];
static guint  buffer_cache_len;
static gsize  buffer_cache_bytes;

/* Never NULL unless @try_only and the allocation failed. */
static gpointer
buffer_alloc (gsize     size,
              gboolean  try_only,
              gsize    *capacity)
{
  gpointer data = NULL;
  guint i;

  *capacity = size;
  if (size < BUFFER_CACHE_MIN)
    return try_only ? g_try_malloc (MAX (size, 1)) : g_malloc (MAX (size, 1));

  g_mutex_lock (&buffer_cache_lock);
  for (i = 0; i < buffer_cache_len; i++)
    /* Big enough, and not wastefully so. */
    if (buffer_cache[i].capacity >= size && buffer_cache[i].capacity / 2 <= size)
      {
        data = buffer_cache[i].data;
        *capacity = buffer_cache[i].capacity;
        buffer_cache_bytes -= buffer_cache[i].capacity;
        buffer_cache[i] = buffer_cache[--buffer_cache_len];
        break;
      }
  g_mutex_unlock (&buffer_cache_lock);

  if (data == NULL)
    data = try_only ? g_try_malloc (size) : g_malloc (size);
  return data;
}

static void
buffer_release (gpointer data)
{
  Buffer *buffer = data;

  if (buffer->capacity >= BUFFER_CACHE_MIN && buffer->capacity <= BUFFER_CACHE_MAX)
    {
      g_mutex_lock (&buffer_cache_lock);
      if (buffer_cache_len < BUFFER_CACHE_SLOTS &&
          buffer_cache_bytes + buffer->capacity <= BUFFER_CACHE_BYTES)
        {
          buffer_cache[buffer_cache_len++] = *buffer;
          buffer_cache_bytes += buffer->capacity;
          buffer->data = NULL;
        }
      g_mutex_unlock (&buffer_cache_lock);
    }
  g_free (buffer->data);
  g_free (buffer);
}

static GBytes *
buffer_to_bytes (gpointer data,
                 gsize    size,
                 gsize    capacity)
{
  Buffer *buffer;

  if (capacity < BUFFER_CACHE_MIN)
    return g_bytes_new_take (data, size);

  buffer = g_new (Buffer, 1);
  buffer->data = data;
  buffer->capacity = capacity;
  return g_bytes_new_with_free_func (data, size, buffer_release, buffer);
}

gsize
dc_wire_buffer_cache_size (void)
{
  gsize bytes;

  g_mutex_lock (&buffer_cache_lock);
  bytes = buffer_cache_bytes;
  g_mutex_unlock (&buffer_cache_lock);
  return bytes;
}

/* Called in a worker before its first call, not async-signal-safe: a
 * thread of the parent may have held the lock at the fork, and the
 * buffers are the parent's to forget. */
void
dc_wire_forget_buffers_after_fork (void)
{
  g_mutex_init (&buffer_cache_lock);
  buffer_cache_len = 0;
  buffer_cache_bytes = 0;
}

void
dc_wire_header_encode_full (guint8     *buf,
                            DcWireType  type,
                            guint       flags,
                            guint       n_fds,
                            guint64     serial,
                            gsize       size)
{
  DcWireHeader header;

  g_assert (size <= DC_WIRE_MAX_PAYLOAD);
  g_assert (n_fds <= DC_WIRE_MAX_FDS);
  header.size = (guint32) size;
  header.type = (guint8) type;
  header.flags = (guint8) flags;
  header.n_fds = (guint16) n_fds;
  header.serial = serial;
  memcpy (buf, &header, sizeof header);
}

/* This function is called between fork() and the user's code, and in a
 * signal handler, and hence must be async-signal-safe: memcpy() and
 * write(). */
void
dc_wire_write_words_frame (int        fd,
                           DcWireType type,
                           guint32    first,
                           guint32    second)
{
  guint8 frame[DC_WIRE_HEADER_SIZE + 8];
  DcWireHeader header = { .size = 8, .type = (guint8) type };
  guint32 words[2] = { first, second };
  ssize_t n;

  memcpy (frame, &header, sizeof header);
  memcpy (frame + DC_WIRE_HEADER_SIZE, words, sizeof words);
  do
    n = write (fd, frame, sizeof frame);
  while (n < 0 && errno == EINTR);
}

void
dc_wire_header_encode (guint8     *buf,
                       DcWireType  type,
                       guint64     serial,
                       gsize       size)
{
  dc_wire_header_encode_full (buf, type, 0, 0, serial, size);
}

DcWireHeaderStatus
dc_wire_header_decode (const guint8  *buf,
                       DcWireHeader  *header)
{
  memcpy (header, buf, sizeof *header);

  if (header->type < DC_WIRE_CALL || header->type > DC_WIRE_LAST_TYPE)
    return DC_WIRE_HEADER_BAD_TYPE;
  if (header->size > DC_WIRE_MAX_PAYLOAD)
    return DC_WIRE_HEADER_TOO_LARGE;
  if ((header->flags & ~DC_WIRE_KNOWN_FLAGS) != 0 ||
      ((header->flags & DC_WIRE_FLAG_MEMFD) && (header->n_fds < 1 || header->size != 8)))
    return DC_WIRE_HEADER_BAD_FLAGS;
  if (header->n_fds > DC_WIRE_MAX_FDS)
    return DC_WIRE_HEADER_TOO_MANY_FDS;
  return DC_WIRE_HEADER_OK;
}

void
dc_wire_set_header_error (GError             **error,
                          DcWireHeaderStatus   status,
                          const DcWireHeader  *header)
{
  switch (status)
    {
    case DC_WIRE_HEADER_BAD_TYPE:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                   _("Unknown message type %u"), header->type);
      break;
    case DC_WIRE_HEADER_TOO_LARGE:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                   _("Message of %u bytes exceeds the limit of %u MiB"),
                   header->size, (guint) (DC_WIRE_MAX_PAYLOAD >> 20));
      break;
    case DC_WIRE_HEADER_NO_MEMORY:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                   _("Cannot allocate %u bytes for a message"), header->size);
      break;
    case DC_WIRE_HEADER_BAD_FLAGS:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                   _("Message with unknown or inconsistent flags %u"), header->flags);
      break;
    case DC_WIRE_HEADER_TOO_MANY_FDS:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                   _("Message with %u descriptors, more than %u"), header->n_fds, DC_WIRE_MAX_FDS);
      break;
    case DC_WIRE_HEADER_OK:
    default:
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                           _("The message stream is corrupt"));
      break;
    }
}

void
dc_wire_append_frame (GByteArray *out,
                      DcWireType  type,
                      guint64     serial,
                      const void *payload,
                      gsize       size)
{
  guint8 header[DC_WIRE_HEADER_SIZE];

  dc_wire_header_encode (header, type, serial, size);
  g_byte_array_append (out, header, sizeof header);
  if (size > 0)
    g_byte_array_append (out, payload, size);
}

/* ---- the flat marshaller ----
 *
 *   guint32 n_items
 *   n_items times: guint8 tag, guint32 length, length bytes (no NUL)
 *
 * tag: 0 = "ms" holding nothing, 1 = "ms" holding a string, 2 = "s".
 */

enum { FLAT_NOTHING, FLAT_JUST, FLAT_STRING };

gboolean
dc_wire_flat_type_ok (const GVariantType *type)
{
  const GVariantType *item;

  if (!g_variant_type_is_tuple (type))
    return FALSE;

  for (item = g_variant_type_first (type); item; item = g_variant_type_next (item))
    {
      if (!g_variant_type_equal (item, G_VARIANT_TYPE_STRING) &&
          !g_variant_type_equal (item, G_VARIANT_TYPE ("ms")))
        return FALSE;
    }

  return TRUE;
}

static GBytes *
flat_marshal (GVariant            *value,
              DcWireMarshalStatus *status)
{
  GByteArray *out;
  gsize n_items, i;
  guint32 n32;

  if (!dc_wire_flat_type_ok (g_variant_get_type (value)))
    {
      *status = DC_WIRE_MARSHAL_BAD_TYPE;
      return NULL;
    }

  n_items = g_variant_n_children (value);
  out = g_byte_array_sized_new (4 + 16 * n_items);
  n32 = (guint32) n_items;
  g_byte_array_append (out, (const guint8 *) &n32, 4);

  for (i = 0; i < n_items; i++)
    {
      g_autoptr(GVariant) item = g_variant_get_child_value (value, i);
      g_autoptr(GVariant) inner = NULL;
      guint8 tag = FLAT_STRING;
      const char *str = NULL;
      gsize len = 0;
      guint32 len32;

      if (g_variant_is_of_type (item, G_VARIANT_TYPE ("ms")))
        {
          inner = g_variant_get_maybe (item);
          tag = inner ? FLAT_JUST : FLAT_NOTHING;
          if (inner)
            str = g_variant_get_string (inner, &len);
        }
      else
        str = g_variant_get_string (item, &len);

      if (len > G_MAXUINT32 || out->len + len > DC_WIRE_MAX_PAYLOAD)
        {
          *status = DC_WIRE_MARSHAL_TOO_LARGE;
          g_byte_array_unref (out);
          return NULL;
        }

      len32 = (guint32) len;
      g_byte_array_append (out, &tag, 1);
      g_byte_array_append (out, (const guint8 *) &len32, 4);
      if (len > 0)
        g_byte_array_append (out, (const guint8 *) str, len);
    }

  *status = DC_WIRE_MARSHAL_OK;
  return g_byte_array_free_to_bytes (out);
}

static GVariant *
flat_unmarshal (GBytes *payload)
{
  gsize size, pos = 0;
  const guint8 *data = g_bytes_get_data (payload, &size);
  g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func ((GDestroyNotify) g_variant_unref);
  guint32 n_items, i;

  if (size < 4)
    goto corrupt;
  memcpy (&n_items, data, 4);
  pos = 4;

  /* Each item takes at least five bytes, so a lying count fails here
   * rather than after a huge allocation. */
  if (n_items > (size - pos) / 5)
    goto corrupt;

  for (i = 0; i < n_items; i++)
    {
      guint8 tag;
      guint32 len;
      GVariant *str = NULL;

      if (size - pos < 5)
        goto corrupt;
      tag = data[pos];
      memcpy (&len, data + pos + 1, 4);
      pos += 5;

      if (len > size - pos || tag > FLAT_STRING || (tag == FLAT_NOTHING && len != 0))
        goto corrupt;
      /* GVariant strings are UTF-8 without NUL; g_utf8_validate_len()
       * refuses both bad sequences and NUL bytes. */
      if (!g_utf8_validate_len ((const char *) data + pos, len, NULL))
        goto corrupt;

      if (tag != FLAT_NOTHING)
        str = g_variant_new_take_string (g_strndup ((const char *) data + pos, len));
      pos += len;

      if (tag == FLAT_STRING)
        g_ptr_array_add (items, g_variant_ref_sink (str));
      else
        g_ptr_array_add (items, g_variant_ref_sink (g_variant_new_maybe (G_VARIANT_TYPE_STRING, str)));
    }

  if (pos != size)
    goto corrupt;

  return g_variant_ref_sink (g_variant_new_tuple ((GVariant **) items->pdata, items->len));

corrupt:
  return NULL;
}

/* ---- the variant marshaller ----
 *
 *   guint32 type_len
 *   type string, NUL, NUL padding up to a multiple of 8 bytes from the start
 *   the value's serialized data
 *
 * The data starts 8-aligned in the received buffer, so it is loaded in
 * place (no copy, whatever its size) as an untrusted variant.  One type
 * lookup each way; no boxing "v".
 */

static gsize
variant_data_offset (gsize type_len)
{
  return (4 + type_len + 1 + 7) & ~(gsize) 7;
}

/* Writes the head of a variant message for @type_string (type length,
 * type string, padding) at @buf, variant_data_offset() bytes. */
static void
variant_head_write (guint8     *buf,
                    const char *type_string,
                    gsize       type_len)
{
  guint32 type_len32 = (guint32) type_len;

  memcpy (buf, &type_len32, 4);
  memcpy (buf + 4, type_string, type_len);
  memset (buf + 4 + type_len, 0, variant_data_offset (type_len) - 4 - type_len);
}

void
dc_wire_append_variant_head (GByteArray *out,
                             const char *type_string)
{
  gsize type_len = strlen (type_string);
  gsize start = out->len;

  g_assert (start % 8 == 0);
  g_byte_array_set_size (out, start + variant_data_offset (type_len));
  variant_head_write (out->data + start, type_string, type_len);
}

/* The head of a variant message in @buf, which has room for
 * variant_data_offset() bytes.  FALSE when the whole message would exceed
 * the limit. */
static gboolean
variant_head_encode (GVariant *value,
                     guint8   *buf,
                     gsize    *offset_out)
{
  const char *type_string = g_variant_get_type_string (value);
  gsize type_len = strlen (type_string);
  gsize offset = variant_data_offset (type_len);

  *offset_out = offset;
  if (g_variant_get_size (value) > DC_WIRE_MAX_PAYLOAD - offset)
    return FALSE;
  if (buf != NULL)
    variant_head_write (buf, type_string, type_len);
  return TRUE;
}

static GBytes *
variant_marshal (GVariant            *value,
                 DcWireMarshalStatus *status)
{
  gsize size = g_variant_get_size (value);
  gsize offset, capacity;
  guint8 *data;

  if (!variant_head_encode (value, NULL, &offset))
    {
      *status = DC_WIRE_MARSHAL_TOO_LARGE;
      return NULL;
    }

  *status = DC_WIRE_MARSHAL_OK;
  data = buffer_alloc (offset + size, FALSE, &capacity);
  variant_head_encode (value, data, &offset);
  g_variant_store (value, data + offset);
  return buffer_to_bytes (data, offset + size, capacity);
}

/* The bytes of a value as g_variant_get_data() would give them, without
 * serializing a value built from its children into a fresh copy where
 * that can be helped: a tuple of one member of variable size serializes
 * as that member's bytes alone (the GVariant format puts the first member
 * at offset 0 and gives the last one no framing offset), so its child,
 * typically an "ay" made from the caller's bytes, stands for it. */
static GVariant *
variant_body (GVariant *value)
{
  if (g_variant_is_of_type (value, G_VARIANT_TYPE_TUPLE) &&
      g_variant_n_children (value) == 1)
    {
      GVariant *child = g_variant_get_child_value (value, 0);

      /* Equal sizes: no padding either, so equal bytes. */
      if (g_variant_get_size (child) == g_variant_get_size (value))
        return child;
      g_variant_unref (child);
    }
  return g_variant_ref (value);
}

/* @trusted: the bytes come from the parent, which sends only values in
 * normal form. */
static GVariant *
variant_unmarshal (GBytes   *payload,
                   gboolean  trusted)
{
  gsize size, offset;
  const guint8 *data = g_bytes_get_data (payload, &size);
  const char *type_string;
  guint32 type_len;

  if (size < 4)
    return NULL;
  memcpy (&type_len, data, 4);
  if (type_len == 0 || type_len > size)
    return NULL;
  offset = variant_data_offset (type_len);
  if (offset > size)
    return NULL;

  /* The string must end at its stated length and be a complete type:
   * anything else is a corrupt or hostile message. */
  type_string = (const char *) data + 4;
  if (type_string[type_len] != '\0' || strlen (type_string) != type_len ||
      !g_variant_type_string_is_valid (type_string) ||
      !g_variant_type_is_definite (G_VARIANT_TYPE (type_string)))
    return NULL;

  /* GLib 2.74 frees a type's description when its last value goes and
   * builds it again for the next: for a stream of values of one type,
   * keep one alive.  (Per thread: the parent and each worker have one.) */
  {
    static GPrivate keeper_key = G_PRIVATE_INIT ((GDestroyNotify) g_variant_unref);
    GVariant *keeper = g_private_get (&keeper_key);
    gsize fixed_size;

    if (keeper == NULL || strcmp (g_variant_get_type_string (keeper), type_string) != 0)
      {
        keeper = g_variant_ref_sink (g_variant_new_from_data (G_VARIANT_TYPE (type_string),
                                                              NULL, 0, FALSE, NULL, NULL));
        g_private_replace (&keeper_key, keeper);
      }

    /* The keeper has no data: its size is the type's fixed size, or 0 for
     * a type of variable size.  A fixed-size value of any other size is
     * not what the other end's g_variant_get_data() gives, and GLib would
     * copy all of it (a gigabyte, on the parent's main loop) to read it
     * as the default value. */
    fixed_size = g_variant_get_size (keeper);
    if (fixed_size != 0 && fixed_size != size - offset)
      return NULL;
  }

  return g_variant_ref_sink (g_variant_new_from_data (G_VARIANT_TYPE (type_string),
                                                      data + offset, size - offset, trusted,
                                                      (GDestroyNotify) g_bytes_unref,
                                                      g_bytes_ref (payload)));
}

GBytes *
dc_wire_marshal_raw (DcMarshaller         marshaller,
                     GVariant            *value,
                     DcWireMarshalStatus *status)
{
  switch (marshaller)
    {
    case DC_MARSHALLER_FLAT:
      return flat_marshal (value, status);
    case DC_MARSHALLER_VARIANT:
    default:
      return variant_marshal (value, status);
    }
}

GVariant *
dc_wire_unmarshal_raw (DcMarshaller  marshaller,
                       GBytes       *payload)
{
  switch (marshaller)
    {
    case DC_MARSHALLER_FLAT:
      return flat_unmarshal (payload);
    case DC_MARSHALLER_VARIANT:
    default:
      return variant_unmarshal (payload, FALSE);
    }
}

GVariant *
dc_wire_unmarshal_chunk (GBytes *payload)
{
  return variant_unmarshal (payload, TRUE);
}

void
dc_wire_set_marshal_error (GError              **error,
                           DcWireMarshalStatus   status,
                           const char           *type_string)
{
  switch (status)
    {
    case DC_WIRE_MARSHAL_BAD_TYPE:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                   _("The flat marshaller carries only tuples of strings or maybe-strings, "
                     "not a value of type “%s”"), type_string);
      break;
    case DC_WIRE_MARSHAL_TOO_LARGE:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                   _("A value of type “%s” is larger than the limit of %u MiB"),
                   type_string, (guint) (DC_WIRE_MAX_PAYLOAD >> 20));
      break;
    case DC_WIRE_MARSHAL_NO_FDS:
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                           _("The code returned descriptors, which travel on the socket stream only"));
      break;
    case DC_WIRE_MARSHAL_TOO_MANY_FDS:
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
                   _("The code returned more than %u descriptors"), DC_WIRE_MAX_FDS - 1);
      break;
    case DC_WIRE_MARSHAL_OK:
    default:
      g_assert_not_reached ();
    }
}

GBytes *
dc_wire_marshal_split_raw (DcMarshaller         marshaller,
                           GVariant            *value,
                           GVariant           **body,
                           DcWireMarshalStatus *status)
{
  gsize offset;
  guint8 *data;

  *body = NULL;
  if (marshaller != DC_MARSHALLER_VARIANT || g_variant_get_size (value) < DC_WIRE_BODY_MIN)
    return dc_wire_marshal_raw (marshaller, value, status);

  if (!variant_head_encode (value, NULL, &offset))
    {
      *status = DC_WIRE_MARSHAL_TOO_LARGE;
      return NULL;
    }

  /* A value of fixed size made from data of the wrong size (or taken
   * from a broken container) reads as zeros but has no bytes: its
   * g_variant_get_data() is NULL.  g_variant_store() writes its zeros.
   * Only a type without the letters of variable size has a fixed size. */
  if (strpbrk (g_variant_get_type_string (value), "asogvm") == NULL &&
      g_variant_get_data (value) == NULL)
    return dc_wire_marshal_raw (marshaller, value, status);

  *status = DC_WIRE_MARSHAL_OK;
  data = g_malloc (offset);
  variant_head_encode (value, data, &offset);
  *body = variant_body (value);
  return g_bytes_new_take (data, offset);
}

GBytes *
dc_wire_marshal_split (DcMarshaller   marshaller,
                       GVariant      *value,
                       GVariant     **body,
                       GError       **error)
{
  DcWireMarshalStatus status;
  GBytes *bytes = dc_wire_marshal_split_raw (marshaller, value, body, &status);

  if (bytes == NULL)
    dc_wire_set_marshal_error (error, status, g_variant_get_type_string (value));
  return bytes;
}

GBytes *
dc_wire_marshal (DcMarshaller   marshaller,
                 GVariant      *value,
                 GError       **error)
{
  DcWireMarshalStatus status;
  GBytes *bytes = dc_wire_marshal_raw (marshaller, value, &status);

  if (bytes == NULL)
    dc_wire_set_marshal_error (error, status, g_variant_get_type_string (value));
  return bytes;
}

GVariant *
dc_wire_unmarshal (DcMarshaller   marshaller,
                   GBytes        *payload,
                   GError       **error)
{
  GVariant *value = dc_wire_unmarshal_raw (marshaller, payload);

  if (value == NULL)
    g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                         marshaller == DC_MARSHALLER_FLAT ? _("Malformed flat message")
                                                          : _("Malformed variant message"));
  return value;
}

GBytes *
dc_wire_encode_marshal_failed (DcWireMarshalStatus  status,
                               const char          *type_string)
{
  gsize len = strlen (type_string);
  guint32 reason = status;
  guint8 *body = g_malloc (4 + len);

  memcpy (body, &reason, 4);
  memcpy (body + 4, type_string, len);
  return g_bytes_new_take (body, 4 + len);
}

/* ---- errors ---- */

GBytes *
dc_wire_encode_error (const GError *error)
{
  /* The domain travels by its name: a quark's number means nothing in
   * another process. */
  g_autoptr(GVariant) v = g_variant_ref_sink (g_variant_new ("(sis)",
                                                             g_quark_to_string (error->domain),
                                                             error->code,
                                                             error->message ? error->message : ""));
  return g_variant_get_data_as_bytes (v);
}

/* Quarks are never freed, and a worker chooses the names: intern a
 * bounded number of domains the parent did not know, then keep the
 * rest apart.  (A domain any code of the parent's has used is known.) */
#define MAX_NEW_DOMAINS 256
#define MAX_DOMAIN_LENGTH 256

static GQuark
remote_domain (const char *domain)
{
  static gint new_domains = 0;
  GQuark quark = g_quark_try_string (domain);

  if (quark != 0)
    return quark;
  if (strlen (domain) <= MAX_DOMAIN_LENGTH &&
      g_atomic_int_add (&new_domains, 1) < MAX_NEW_DOMAINS)
    return g_quark_from_string (domain);
  return 0;
}

GError *
dc_wire_decode_error (GBytes  *payload,
                      GError **error)
{
  g_autoptr(GVariant) v = NULL;
  const char *domain, *message;
  GQuark quark;
  gint32 code;

  v = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE ("(sis)"), payload, FALSE));
  /* Untrusted bytes that are not in normal form read back as "" and 0 on
   * the bad parts; an empty domain is the sign. */
  g_variant_get (v, "(&si&s)", &domain, &code, &message);

  if (domain[0] == '\0')
    {
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                           _("Malformed error message"));
      return NULL;
    }

  quark = remote_domain (domain);
  if (quark == 0)
    /* The name still reaches the caller, in the message. */
    return g_error_new (g_quark_from_static_string ("dc-unknown-remote-error-quark"), code,
                        "%.256s: %s", domain, message);
  return g_error_new_literal (quark, code, message);
}

/* ---- the frame reader ---- */

void
dc_wire_reader_init (DcWireReader *reader)
{
  memset (reader, 0, sizeof *reader);
  reader->status = DC_WIRE_HEADER_OK;
}

void
dc_wire_reader_clear (DcWireReader *reader)
{
  g_clear_pointer (&reader->payload, g_free);
  reader->header_len = 0;
  reader->payload_len = 0;
}

static gboolean
reader_in_payload (DcWireReader *reader)
{
  return reader->header_len == DC_WIRE_HEADER_SIZE;
}

gboolean
dc_wire_reader_between_frames (DcWireReader *reader)
{
  return reader->header_len == 0;
}

gboolean
dc_wire_reader_frame_ready (DcWireReader *reader)
{
  return reader_in_payload (reader) && reader->payload_len == reader->header.size;
}

void
dc_wire_reader_take_frame (DcWireReader  *reader,
                           DcWireHeader  *header,
                           GBytes       **payload)
{
  g_assert (dc_wire_reader_frame_ready (reader));

  *header = reader->header;
  if (reader->payload != NULL)
    *payload = buffer_to_bytes (g_steal_pointer (&reader->payload), reader->payload_len,
                                reader->payload_capacity);
  else
    *payload = g_bytes_new_static ("", 0);
  reader->header_len = 0;
  reader->payload_len = 0;
}

guint8 *
dc_wire_reader_direct_buffer (DcWireReader *reader,
                              gsize        *space)
{
  if (reader->status != DC_WIRE_HEADER_OK || !reader_in_payload (reader) || reader->payload == NULL)
    {
      *space = 0;
      return NULL;
    }

  *space = reader->header.size - reader->payload_len;
  return reader->payload + reader->payload_len;
}

void
dc_wire_reader_advance (DcWireReader *reader,
                        gsize         n)
{
  g_assert (reader_in_payload (reader));
  g_assert (n <= reader->header.size - reader->payload_len);
  reader->payload_len += n;
}

void
dc_wire_reader_set_error (DcWireReader  *reader,
                          GError       **error)
{
  dc_wire_set_header_error (error, reader->status, &reader->header);
}

DcWireReadStatus
dc_wire_reader_feed (DcWireReader   *reader,
                     const guint8  **data,
                     gsize          *len,
                     DcWireHeader   *header,
                     GBytes        **payload)
{
  if (reader->status != DC_WIRE_HEADER_OK)
    return DC_WIRE_READ_ERROR;

  if (!reader_in_payload (reader))
    {
      gsize want = DC_WIRE_HEADER_SIZE - reader->header_len;
      gsize take = MIN (want, *len);

      memcpy (reader->header_buf + reader->header_len, *data, take);
      reader->header_len += take;
      *data += take;
      *len -= take;

      if (!reader_in_payload (reader))
        return DC_WIRE_READ_NEED_MORE;

      reader->status = dc_wire_header_decode (reader->header_buf, &reader->header);
      if (reader->status != DC_WIRE_HEADER_OK)
        return DC_WIRE_READ_ERROR;

      reader->payload_len = 0;
      /* g_try_malloc: a size under the limit may still be more than this
       * machine can give, and that must fail the worker, not the parent. */
      if (reader->header.size > 0)
        {
          reader->payload = buffer_alloc (reader->header.size, TRUE, &reader->payload_capacity);
          if (reader->payload == NULL)
            {
              reader->status = DC_WIRE_HEADER_NO_MEMORY;
              return DC_WIRE_READ_ERROR;
            }
        }
    }

  if (reader->payload_len < reader->header.size)
    {
      gsize take = MIN (reader->header.size - reader->payload_len, *len);

      memcpy (reader->payload + reader->payload_len, *data, take);
      reader->payload_len += take;
      *data += take;
      *len -= take;
    }

  if (!dc_wire_reader_frame_ready (reader))
    return DC_WIRE_READ_NEED_MORE;

  dc_wire_reader_take_frame (reader, header, payload);
  return DC_WIRE_READ_FRAME;
}

DcWirePumpStatus
dc_wire_reader_pump (DcWireReader    *reader,
                     guint8          *scratch,
                     gsize            scratch_size,
                     DcWireReadFunc   read_func,
                     DcWireFrameFunc  frame_func,
                     gpointer         user_data,
                     gsize           *n_read)
{
  gsize space = 0;
  guint8 *direct = dc_wire_reader_direct_buffer (reader, &space);
  const guint8 *p;
  gsize len;
  gssize n;

  *n_read = 0;
  if (reader->status != DC_WIRE_HEADER_OK)
    return DC_WIRE_PUMP_CORRUPT;

  /* A large payload is read straight into its final buffer. */
  if (direct == NULL || space < scratch_size)
    direct = NULL;
  n = read_func (user_data, direct ? direct : scratch, direct ? space : scratch_size);
  if (n < 0)
    return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? DC_WIRE_PUMP_AGAIN
                                                                       : DC_WIRE_PUMP_IO_ERROR;
  if (n == 0)
    return DC_WIRE_PUMP_EOF;
  *n_read = (gsize) n;

  if (direct != NULL)
    {
      dc_wire_reader_advance (reader, (gsize) n);
      if (dc_wire_reader_frame_ready (reader))
        {
          DcWireHeader header;
          g_autoptr(GBytes) payload = NULL;

          dc_wire_reader_take_frame (reader, &header, &payload);
          if (!frame_func (user_data, &header, payload))
            return DC_WIRE_PUMP_STOPPED;
        }
      return DC_WIRE_PUMP_READ;
    }

  p = scratch;
  len = (gsize) n;
  while (len > 0)
    {
      DcWireHeader header;
      g_autoptr(GBytes) payload = NULL;

      switch (dc_wire_reader_feed (reader, &p, &len, &header, &payload))
        {
        case DC_WIRE_READ_FRAME:
          if (!frame_func (user_data, &header, payload))
            return DC_WIRE_PUMP_STOPPED;
          break;
        case DC_WIRE_READ_ERROR:
          return DC_WIRE_PUMP_CORRUPT;
        case DC_WIRE_READ_NEED_MORE:
        default:
          break;
        }
    }
  return DC_WIRE_PUMP_READ;
}

/* ---- descriptors ---- */

void
dc_wire_close_fds (GArray *fds)
{
  guint i;

  for (i = 0; i < fds->len; i++)
    close (g_array_index (fds, int, i));
  g_array_set_size (fds, 0);
}

static void
close_first_fds (GArray *fds,
                 guint   n)
{
  guint i;

  for (i = 0; i < n; i++)
    close (g_array_index (fds, int, i));
  g_array_remove_range (fds, 0, n);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: dc_wire_sendmsgv() only. */
gssize
dc_wire_sendmsg (int         fd,
                 const void *data,
                 gsize       len,
                 const int  *fds,
                 guint       n_fds)
{
  struct iovec iov = { (void *) data, len };

  return dc_wire_sendmsgv (fd, &iov, 1, fds, n_fds);
}

/* This function is called between fork() and the user's code and hence
 * must be async-signal-safe: sendmsg(), memset() and memcpy() only. */
gssize
dc_wire_sendmsgv (int                 fd,
                  const struct iovec *iov,
                  gsize               n_iov,
                  const int          *fds,
                  guint               n_fds)
{
  union {
    char buf[CMSG_SPACE (sizeof (int) * DC_WIRE_MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct msghdr msg = { 0, };
  ssize_t n;

  if (n_fds > DC_WIRE_MAX_FDS)
    {
      errno = EINVAL;
      return -1;
    }
  msg.msg_iov = (struct iovec *) iov;
  msg.msg_iovlen = n_iov;
  if (n_fds > 0)
    {
      struct cmsghdr *cmsg;

      msg.msg_control = control.buf;
      msg.msg_controllen = CMSG_SPACE (sizeof (int) * n_fds);
      /* The padding after an odd number of descriptors goes to the kernel
       * too; memset() is async-signal-safe. */
      memset (control.buf, 0, msg.msg_controllen);
      cmsg = CMSG_FIRSTHDR (&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN (sizeof (int) * n_fds);
      memcpy (CMSG_DATA (cmsg), fds, sizeof (int) * n_fds);
    }

  do
    n = sendmsg (fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n;
}

gboolean
dc_wire_claim_fds (GArray             *rx_fds,
                   const DcWireHeader *header,
                   GBytes            **payload,
                   GUnixFDList       **fd_list,
                   GError            **error)
{
  guint n = header->n_fds;

  if (rx_fds->len < n)
    {
      if (error != NULL)
        g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                             _("a message without its descriptors"));
      return FALSE;
    }

  if (header->flags & DC_WIRE_FLAG_MEMFD)
    {
      guint64 size;
      GBytes *mapped;

      /* The header check promised one descriptor and an 8-byte body. */
      g_assert (n >= 1 && g_bytes_get_size (*payload) == 8);
      memcpy (&size, g_bytes_get_data (*payload, NULL), 8);
      mapped = dc_wire_bytes_from_memfd (g_array_index (rx_fds, int, 0), size, error);
      g_array_remove_range (rx_fds, 0, 1);
      n--;
      if (mapped == NULL)
        {
          close_first_fds (rx_fds, n);
          return FALSE;
        }
      g_bytes_unref (*payload);
      *payload = mapped;
    }

  if (n > 0)
    {
      /* The list owns them from here. */
      *fd_list = g_unix_fd_list_new_from_array (&g_array_index (rx_fds, gint, 0), (gint) n);
      g_array_remove_range (rx_fds, 0, n);
    }
  return TRUE;
}

void
dc_wire_frame_head_init (DcWireFrameHead *head,
                         DcWireType       type,
                         guint64          serial,
                         GBytes          *payload,
                         GVariant        *body,
                         gboolean         in_memfd,
                         guint            n_fds)
{
  gsize size = 0;
  const guint8 *data = payload != NULL ? g_bytes_get_data (payload, &size) : NULL;
  gsize tail_len = body != NULL ? g_variant_get_size (body) : 0;

  /* The split marshaller checked the sum against the limit. */
  g_assert (tail_len <= DC_WIRE_MAX_PAYLOAD - size);

  if (in_memfd)
    {
      guint64 size64 = size + tail_len;

      dc_wire_header_encode_full (head->bytes, type, DC_WIRE_FLAG_MEMFD, n_fds + 1, serial, 8);
      memcpy (head->bytes + DC_WIRE_HEADER_SIZE, &size64, 8);
      head->len = DC_WIRE_HEADER_SIZE + 8;
      head->body = NULL;
      head->body_len = 0;
      head->tail = NULL;
      head->tail_len = 0;
      return;
    }

  dc_wire_header_encode_full (head->bytes, type, 0, n_fds, serial, size + tail_len);
  head->len = DC_WIRE_HEADER_SIZE;
  head->body = size > 0 ? data : NULL;
  head->body_len = size;
  /* A value built from its children is serialized here, once, and kept
   * in it: at write time, not while the call waited. */
  head->tail = tail_len > 0 ? g_variant_get_data (body) : NULL;
  head->tail_len = tail_len;
}

void
dc_wire_frame_head_add_flags (DcWireFrameHead *head,
                              guint            flags)
{
  head->bytes[G_STRUCT_OFFSET (DcWireHeader, flags)] |= (guint8) flags;
}

/* ---- large payloads in memfds ---- */

static void
munmap_bytes (gpointer data)
{
  gsize *mapping = data;   /* [0] = length, then the address */

  munmap ((void *) mapping[1], mapping[0]);
  g_free (mapping);
}

int
dc_wire_memfd_from_parts (const guint8  *head,
                          gsize          head_len,
                          const guint8  *tail,
                          gsize          tail_len,
                          GError       **error)
{
  gsize size = head_len + tail_len;
  guint8 *map;
  int fd, errsv;

  fd = memfd_create ("dc-payload", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    goto fail;
  if (ftruncate (fd, (off_t) size) < 0)
    goto fail;
  if (size > 0)
    {
      map = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (map == MAP_FAILED)
        goto fail;
      if (head_len > 0)
        memcpy (map, head, head_len);
      if (tail_len > 0)
        memcpy (map + head_len, tail, tail_len);
      munmap (map, size);
    }

  /* Sealed: the receiver maps what it checked, and nobody can shrink it
   * under the mapping (SIGBUS) or change it after the check. */
  if (fcntl (fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
    goto fail;
  return fd;

fail:
  errsv = errno;
  if (fd >= 0)
    close (fd);
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_MARSHAL,
               _("Cannot put a message in shared memory: %s"), g_strerror (errsv));
  return -1;
}

GBytes *
dc_wire_bytes_from_memfd (int       fd,
                          guint64   size,
                          GError  **error)
{
  const int needed = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
  struct stat st;
  gsize *mapping;
  void *map;
  int seals;

  seals = fcntl (fd, F_GET_SEALS);
  if (seals < 0 || (seals & needed) != needed || fstat (fd, &st) < 0 ||
      (guint64) st.st_size != size || size > DC_WIRE_MAX_PAYLOAD)
    {
      close (fd);
      g_set_error_literal (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                           _("A shared-memory message is not sealed or not of its stated size"));
      return NULL;
    }

  if (size == 0)
    {
      close (fd);
      return g_bytes_new (NULL, 0);
    }

  map = mmap (NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  close (fd);
  if (map == MAP_FAILED)
    {
      int errsv = errno;
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_PROTOCOL,
                   _("Cannot map a shared-memory message: %s"), g_strerror (errsv));
      return NULL;
    }

  mapping = g_new (gsize, 2);
  mapping[0] = size;
  mapping[1] = (gsize) map;
  return g_bytes_new_with_free_func (map, size, munmap_bytes, mapping);
}
