/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The wire format between the parent and its workers.
 *
 * Every message is a frame: a 16-byte header followed by @size bytes of
 * payload.  Both ends are the same program on the same machine, so the
 * header is in host byte order.
 *
 *   guint32 size     payload bytes, at most DC_WIRE_MAX_PAYLOAD
 *   guint8  type     a DcWireType
 *   guint8  flags    DcWireFlags
 *   guint16 n_fds    descriptors that travel with the frame (SCM_RIGHTS on
 *                    the socket stream; they arrive no later than the
 *                    frame's first byte, in frame order)
 *   guint64 serial   the call's serial number, echoed back in the reply
 *
 * Nothing here forks or touches a descriptor, so it can be tested and fuzzed
 * in-process.  The parent never trusts what a worker sends: every decoder
 * checks every length against the bytes it has.
 */

#pragma once

#include <sys/uio.h>

#include <gio/gunixfdlist.h>

#include "dc-detached-code.h"

G_BEGIN_DECLS

#define DC_WIRE_HEADER_SIZE 16
/* Bounds what a worker can make the parent allocate. */
#define DC_WIRE_MAX_PAYLOAD ((gsize) 1 << 30)

typedef enum
{
  /* parent -> worker */
  DC_WIRE_CALL = 1,          /* payload: the marshalled arguments */
  /* worker -> parent */
  DC_WIRE_RESULT,            /* payload: the marshalled result */
  DC_WIRE_ERROR,             /* payload: "(sis)" domain, code, message */
  DC_WIRE_NULL_RESULT,       /* no payload: the code returned NULL without an error */
  DC_WIRE_MARSHAL_FAILED,    /* payload: type string of the value that could not travel */
  DC_WIRE_SETUP_FAILED,      /* payload: guint32 step, guint32 errno */
  DC_WIRE_SANDBOX_STOPPED,   /* payload: guint32 audit arch, gint32 system call number */
  /* Progress: only for a call whose frame had DC_WIRE_FLAG_PROGRESS, with
   * its serial, while it runs; no descriptor but a memfd payload. */
  DC_WIRE_PROGRESS,          /* payload: the marshalled progress value */
  /* Maps: one frame per chunk of items, each way. */
  DC_WIRE_CHUNK,             /* parent -> worker; payload: the chunk's items, an "aT"
                              * array laid out as the variant marshaller does */
  DC_WIRE_CHUNK_RESULT,      /* worker -> parent; payload: DC_WIRE_CHUNK_HEAD_SIZE bytes
                              * (see DcWireChunkHead), then the "av" of the results or
                              * the failing item's reply */
  DC_WIRE_LAST_TYPE = DC_WIRE_CHUNK_RESULT,
} DcWireType;

typedef enum
{
  /* The payload is 8 bytes, the size of the real payload, which is in a
   * sealed memfd: the frame's first descriptor. */
  DC_WIRE_FLAG_MEMFD = 1 << 0,
  /* On a CALL frame: the caller takes progress values.  Without it the
   * worker sends none, and the parent takes none. */
  DC_WIRE_FLAG_PROGRESS = 1 << 1,
  DC_WIRE_KNOWN_FLAGS = DC_WIRE_FLAG_MEMFD | DC_WIRE_FLAG_PROGRESS,
} DcWireFlags;

/* The start of a DC_WIRE_CHUNK_RESULT payload.  @failure is 0 when every
 * item succeeded: the "av" of their results follows.  Otherwise it is the
 * type of the reply the first failing item would have had as a call
 * (DC_WIRE_ERROR, _NULL_RESULT or _MARSHAL_FAILED), @index is that item's
 * place in the chunk, and that reply's payload follows.  8 bytes, so that
 * what follows stays 8-aligned. */
typedef struct
{
  guint32 failure;
  guint32 index;
} DcWireChunkHead;

#define DC_WIRE_CHUNK_HEAD_SIZE 8
G_STATIC_ASSERT (sizeof (DcWireChunkHead) == DC_WIRE_CHUNK_HEAD_SIZE);

/* At most what one sendmsg() may carry (SCM_MAX_FD). */
#define DC_WIRE_MAX_FDS 253

/* Set-up steps a worker can report in a DC_WIRE_SETUP_FAILED frame. */
typedef enum
{
  DC_WIRE_SETUP_STEP_DESCRIPTORS = 1,
  DC_WIRE_SETUP_STEP_CWD,
  DC_WIRE_SETUP_STEP_PARENT_GONE,
  DC_WIRE_SETUP_STEP_SANDBOX,
} DcWireSetupStep;

typedef struct
{
  guint32 size;
  guint8  type;
  guint8  flags;
  guint16 n_fds;
  guint64 serial;
} DcWireHeader;

G_STATIC_ASSERT (sizeof (DcWireHeader) == DC_WIRE_HEADER_SIZE);

void      dc_wire_header_encode          (guint8             *buf,
                                          DcWireType          type,
                                          guint64             serial,
                                          gsize               size);
/* Writes a frame of @type whose payload is two 32-bit words (set-up
 * failed, stopped by the sandbox) on @fd, with write() alone: it runs in
 * a worker between fork() and the user's code, and in a signal handler,
 * so it is async-signal-safe.  A failure is ignored: the worker leaves
 * next, and its exit says the rest. */
void      dc_wire_write_words_frame      (int                 fd,
                                          DcWireType          type,
                                          guint32             first,
                                          guint32             second);
void      dc_wire_header_encode_full     (guint8             *buf,
                                          DcWireType          type,
                                          guint               flags,
                                          guint               n_fds,
                                          guint64             serial,
                                          gsize               size);
typedef enum
{
  DC_WIRE_HEADER_OK,
  DC_WIRE_HEADER_BAD_TYPE,
  DC_WIRE_HEADER_TOO_LARGE,
  DC_WIRE_HEADER_NO_MEMORY,
  DC_WIRE_HEADER_BAD_FLAGS,
  DC_WIRE_HEADER_TOO_MANY_FDS,
} DcWireHeaderStatus;

DcWireHeaderStatus dc_wire_header_decode (const guint8       *buf,
                                          DcWireHeader       *header);
void      dc_wire_set_header_error       (GError            **error,
                                          DcWireHeaderStatus  status,
                                          const DcWireHeader *header);

/* Appends a whole frame (header and payload) to @out. */
void      dc_wire_append_frame           (GByteArray         *out,
                                          DcWireType          type,
                                          guint64             serial,
                                          const void         *payload,
                                          gsize               size);

/* Marshalling.  The _raw variants compose no message (a worker never calls
 * gettext); the parent turns their status into a GError. */
typedef enum
{
  DC_WIRE_MARSHAL_OK,
  DC_WIRE_MARSHAL_BAD_TYPE,     /* the flat marshaller cannot carry this type */
  DC_WIRE_MARSHAL_TOO_LARGE,    /* larger than DC_WIRE_MAX_PAYLOAD */
  DC_WIRE_MARSHAL_NO_FDS,       /* descriptors, where none can travel (pipes) */
  DC_WIRE_MARSHAL_TOO_MANY_FDS, /* more descriptors than one message carries */
} DcWireMarshalStatus;

/* Set in the reason word of a DC_WIRE_MARSHAL_FAILED frame: what could
 * not travel was a progress value (the call's result was dropped). */
#define DC_WIRE_MARSHAL_OF_PROGRESS ((guint32) 1 << 31)

GBytes   *dc_wire_marshal_raw            (DcMarshaller         marshaller,
                                          GVariant            *value,
                                          DcWireMarshalStatus *status);
/* Returns NULL on a malformed payload. */
GVariant *dc_wire_unmarshal_raw          (DcMarshaller         marshaller,
                                          GBytes              *payload);
void      dc_wire_set_marshal_error      (GError             **error,
                                          DcWireMarshalStatus  status,
                                          const char          *type_string);

/* Values of the variant marshaller at least this large are not copied
 * into their message: dc_wire_marshal_split_raw() gives the message's
 * head alone, and the value's own bytes follow it on the wire.  Below it,
 * one copy costs less than keeping the value alive while the call waits
 * (a small value's serialized bytes may be much smaller than the tree of
 * a value built from its children). */
#define DC_WIRE_BODY_MIN (64 * 1024)

/* Like dc_wire_marshal_raw(), except for a value of the variant
 * marshaller of DC_WIRE_BODY_MIN bytes or more: then the result is only
 * the message's head, and *@body (transfer full) a value whose
 * g_variant_get_data() is the rest of the message.  *@body is NULL
 * otherwise.  The size limit is checked here, for the whole message. */
GBytes   *dc_wire_marshal_split_raw      (DcMarshaller         marshaller,
                                          GVariant            *value,
                                          GVariant           **body,
                                          DcWireMarshalStatus *status);
GBytes   *dc_wire_marshal_split          (DcMarshaller         marshaller,
                                          GVariant            *value,
                                          GVariant           **body,
                                          GError             **error);
/* Whether the flat marshaller carries values of @type. */
gboolean  dc_wire_flat_type_ok           (const GVariantType  *type);

/* The payload of a DC_WIRE_MARSHAL_FAILED reply: the reason, then the
 * type string of the value that could not travel. */
GBytes   *dc_wire_encode_marshal_failed  (DcWireMarshalStatus  status,
                                          const char          *type_string);

/* Set DC_DETACHED_CODE_ERROR_MARSHAL (marshal) or _PROTOCOL (unmarshal). */
GBytes   *dc_wire_marshal                (DcMarshaller        marshaller,
                                          GVariant           *value,
                                          GError            **error);
GVariant *dc_wire_unmarshal              (DcMarshaller        marshaller,
                                          GBytes             *payload,
                                          GError            **error);

/* A GError as "(sis)": its domain's quark string, its code, its message. */
GBytes   *dc_wire_encode_error           (const GError       *error);
/* Returns the error the payload carries, or NULL and sets a PROTOCOL @error. */
GError   *dc_wire_decode_error           (GBytes             *payload,
                                          GError            **error);

/* Incremental frame decoder.  Feed it bytes as they arrive; it hands out
 * complete frames.  A payload is assembled in its own buffer, which becomes
 * the frame's GBytes without a further copy.
 */
typedef struct
{
  guint8       header_buf[DC_WIRE_HEADER_SIZE];
  gsize        header_len;
  DcWireHeader header;
  guint8      *payload;       /* allocated once the header is complete */
  gsize        payload_len;
  gsize        payload_capacity;
  DcWireHeaderStatus status;  /* not OK once the stream is corrupt */
} DcWireReader;

typedef enum
{
  DC_WIRE_READ_NEED_MORE,   /* every byte fed was consumed, no complete frame */
  DC_WIRE_READ_FRAME,       /* a frame is complete; more bytes may remain */
  DC_WIRE_READ_ERROR,       /* the stream is corrupt; the reader stays failed,
                             * dc_wire_reader_set_error() tells why */
} DcWireReadStatus;

void              dc_wire_reader_init    (DcWireReader       *reader);
void              dc_wire_reader_clear   (DcWireReader       *reader);
/* Consumes bytes from *@data (advancing it and reducing *@len) until a frame
 * is complete or the bytes run out.  On DC_WIRE_READ_FRAME, @header and
 * @payload (transfer full, never NULL) describe the frame. */
DcWireReadStatus  dc_wire_reader_feed    (DcWireReader       *reader,
                                          const guint8      **data,
                                          gsize              *len,
                                          DcWireHeader       *header,
                                          GBytes            **payload);
void              dc_wire_reader_set_error (DcWireReader     *reader,
                                            GError          **error);
/* Where the next bytes may be read straight into, to skip a copy while a
 * large payload is being assembled; NULL when the reader wants a header.
 * After reading n bytes there, call dc_wire_reader_advance(). */
guint8           *dc_wire_reader_direct_buffer (DcWireReader *reader,
                                                gsize        *space);
void              dc_wire_reader_advance (DcWireReader       *reader,
                                          gsize               n);
gboolean          dc_wire_reader_frame_ready (DcWireReader   *reader);
/* No byte of a frame read yet: descriptors received now belong to none
 * (they travel with a frame's first byte). */
gboolean          dc_wire_reader_between_frames (DcWireReader *reader);
void              dc_wire_reader_take_frame (DcWireReader    *reader,
                                             DcWireHeader    *header,
                                             GBytes         **payload);

/* The one read loop of both ends: one read with @read_func, straight into
 * the payload being assembled when it is large, then every complete frame
 * to @frame_func in order. */
typedef enum
{
  DC_WIRE_PUMP_READ,       /* bytes came, and their frames were handed out */
  DC_WIRE_PUMP_AGAIN,      /* nothing to read now (or an EINTR) */
  DC_WIRE_PUMP_EOF,        /* the other end closed the channel */
  DC_WIRE_PUMP_IO_ERROR,   /* errno tells why */
  DC_WIRE_PUMP_CORRUPT,    /* the reader failed: dc_wire_reader_set_error() */
  DC_WIRE_PUMP_STOPPED,    /* @frame_func returned FALSE */
} DcWirePumpStatus;

/* > 0: bytes read; 0: end of stream; -1: errno set (EAGAIN: would block). */
typedef gssize   (*DcWireReadFunc)  (gpointer            user_data,
                                     void               *buffer,
                                     gsize               size);
/* Return FALSE to stop reading. */
typedef gboolean (*DcWireFrameFunc) (gpointer            user_data,
                                     const DcWireHeader *header,
                                     GBytes             *payload);

DcWirePumpStatus  dc_wire_reader_pump   (DcWireReader      *reader,
                                         guint8            *scratch,
                                         gsize              scratch_size,
                                         DcWireReadFunc     read_func,
                                         DcWireFrameFunc    frame_func,
                                         gpointer           user_data,
                                         gsize             *n_read);

/* Takes the descriptors of the frame @header describes from @rx_fds (those
 * received so far, in order): a memfd payload replaces *@payload, the rest
 * go to *@fd_list (untouched when there are none).  FALSE with a PROTOCOL
 * @error if too few came or the memfd is not what it claims; the frame's
 * descriptors are closed then.  @error may be NULL (in a worker, which
 * composes no message). */
/* One sendmsg() of @data, with @n_fds (at most DC_WIRE_MAX_FDS, maybe 0)
 * descriptors on its first byte; retried on EINTR, never raising SIGPIPE.
 * Returns what sendmsg() did.  Async-signal-safe: the template and the
 * worker call it after fork(). */
gssize    dc_wire_sendmsg                (int                 fd,
                                          const void         *data,
                                          gsize               len,
                                          const int          *fds,
                                          guint               n_fds);
/* The same, gathered from @n_iov vectors. */
gssize    dc_wire_sendmsgv               (int                 fd,
                                          const struct iovec *iov,
                                          gsize               n_iov,
                                          const int          *fds,
                                          guint               n_fds);
gboolean  dc_wire_claim_fds              (GArray             *rx_fds,
                                          const DcWireHeader *header,
                                          GBytes            **payload,
                                          GUnixFDList       **fd_list,
                                          GError            **error);
/* Closes every descriptor in @fds and empties it. */
void      dc_wire_close_fds              (GArray             *fds);

/* A frame in up to three pieces: its header (and for a payload that
 * travels in a memfd, the 8-byte size that stands for it), the payload
 * or its head, and the bytes of a large value that follow the head.  The
 * pieces point into the payload and the value: keep both alive until
 * they are written. */
typedef struct
{
  guint8        bytes[DC_WIRE_HEADER_SIZE + 8];
  gsize         len;
  const guint8 *body;       /* the payload, or NULL */
  gsize         body_len;
  const guint8 *tail;       /* the value's bytes after it, or NULL */
  gsize         tail_len;
} DcWireFrameHead;

/* @body: as dc_wire_marshal_split() gave it, or NULL.  @in_memfd: the
 * payload (and @body) go as the frame's first descriptor; @n_fds more
 * descriptors follow it.  Not async-signal-safe: @body may be serialized
 * here. */
void      dc_wire_frame_head_init        (DcWireFrameHead    *head,
                                          DcWireType          type,
                                          guint64             serial,
                                          GBytes             *payload,
                                          GVariant           *body,
                                          gboolean            in_memfd,
                                          guint               n_fds);

/* Adds DcWireFlags to the header in @head. */
void      dc_wire_frame_head_add_flags   (DcWireFrameHead    *head,
                                          guint               flags);
/* ---- serialized arrays ----
 *
 * A map's items travel, and its results come back, as serialized GVariant
 * arrays cut and joined without a GVariant per element: an array's bytes
 * are its elements (each at its type's alignment) and, for elements of
 * variable size, a table of where each ends, whose width depends on the
 * whole array's size.  A view is a range of the elements of one array. */
typedef struct
{
  const guint8 *data;        /* the whole array */
  gsize         size;
  gsize         fixed_size;  /* of an element; 0 for a variable size */
  gsize         alignment;   /* of an element: 1, 2, 4 or 8 */
  gsize         offset_size; /* of the end table; 0 for fixed-size elements */
  gsize         n_elements;  /* in the whole array */
  gsize         first;       /* the view */
  gsize         n;
} DcWireArray;

/* Whether each element of @array, a chunk reply's "av", is a variant the
 * parent may read back safely (the rules are at the definition); FALSE
 * for a reply a worker forged.  *@normal: every value is in normal form. */
gboolean  dc_wire_chunk_results_check    (const DcWireArray  *array,
                                          DcMarshaller        marshaller,
                                          gboolean           *normal);
/* The layout of @element_type: its fixed size (0 for a variable size) and
 * its alignment. */
void      dc_wire_type_layout            (const GVariantType *element_type,
                                          gsize              *fixed_size,
                                          gsize              *alignment);
/* Whether every string of bytes of @type's size (for a fixed size; for an
 * array of such, of a multiple of it) is a value in normal form: no
 * boolean, no padding, no variable-size part to frame. */
gboolean  dc_wire_type_any_bytes_normal  (const GVariantType *type);
/* A chunk's items: trusted, since the parent sends them in normal form. */
GVariant *dc_wire_unmarshal_chunk        (GBytes             *payload);
/* A view of all the elements of the serialized array at @data.  FALSE if
 * its framing is not in normal form (ends out of order or out of bounds,
 * a size that is not a multiple of the element's): such bytes may come from
 * a worker, or be a caller's untrusted variant. */
gboolean  dc_wire_array_init             (DcWireArray        *array,
                                          const GVariantType *element_type,
                                          const guint8       *data,
                                          gsize               size);
/* Where element @i (of the whole array) lies. */
void      dc_wire_array_element          (const DcWireArray  *array,
                                          gsize               i,
                                          gsize              *start,
                                          gsize              *end);
/* Appends to @out, whose length must be a multiple of 8, the serialized
 * array of the elements of @views, in order.  They must share one element
 * type.  Per element, only an end is rewritten: no allocation. */
void      dc_wire_array_append_views     (GByteArray         *out,
                                          const DcWireArray  *views,
                                          guint               n_views);
/* Zero padding at the end of @out up to @alignment, counted from @base. */
void      dc_wire_pad                    (GByteArray         *out,
                                          gsize               base,
                                          gsize               alignment);
/* Ends an array of variable-size elements whose bodies were appended to
 * @out from @body_start on: appends the table of @ends (relative to
 * @body_start). */
void      dc_wire_array_append_ends      (GByteArray         *out,
                                          gsize               body_start,
                                          const gsize        *ends,
                                          gsize               n);
/* The start of a variant-marshalled payload for a value of @type_string:
 * what dc_wire_unmarshal_raw() expects before the serialized data.
 * Leaves @out's length a multiple of 8. */
void      dc_wire_append_variant_head    (GByteArray         *out,
                                          const char         *type_string);

/* Bytes held in recycled payload buffers (for tests). */
gsize     dc_wire_buffer_cache_size      (void);

/* In a worker, before its first call. */
void      dc_wire_forget_buffers_after_fork (void);

/* Large payloads: a sealed memfd the receiver maps read-only, holding a
 * message in two pieces, @head then @tail (maybe NULL). */
int       dc_wire_memfd_from_parts       (const guint8       *head,
                                          gsize               head_len,
                                          const guint8       *tail,
                                          gsize               tail_len,
                                          GError            **error);
/* Takes ownership of @fd.  Checks the seals (no write, no shrink, no
 * grow) and the size, and returns the mapping as bytes. */
GBytes   *dc_wire_bytes_from_memfd       (int                 fd,
                                          guint64             size,
                                          GError            **error);

G_END_DECLS
