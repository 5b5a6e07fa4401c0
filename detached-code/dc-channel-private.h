/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The parent's end of one worker channel: a non-blocking GSocket for the
 * socket stream, a pair of non-blocking GIOChannels for the pipe stream.
 * Reads and writes never block; sources report readiness on a context. */

#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>

G_BEGIN_DECLS

typedef struct _DcChannel DcChannel;

/* Return FALSE to remove the source. */
typedef gboolean (*DcChannelFunc) (GIOCondition condition,
                                   gpointer     user_data);

/* Both take ownership of the descriptors, even on failure. */
DcChannel *dc_channel_new_socket   (int            fd,
                                    GError       **error);
DcChannel *dc_channel_new_pipes    (int            read_fd,
                                    int            write_fd);

/* > 0: bytes moved; 0: end of stream (read only); -1: @error is set, and is
 * G_IO_ERROR_WOULD_BLOCK when the call would have blocked. */
gssize     dc_channel_read         (DcChannel     *channel,
                                    void          *buffer,
                                    gsize          size,
                                    GError       **error);
/* Socket stream only: descriptors received with the bytes are appended
 * to @fds (close-on-exec). */
gssize     dc_channel_read_fds     (DcChannel     *channel,
                                    void          *buffer,
                                    gsize          size,
                                    GArray        *fds,
                                    GError       **error);
/* Gathers @vectors (at most DC_CHANNEL_MAX_VECTORS) in one write.  @fds
 * (socket stream only; @n_fds at most DC_WIRE_MAX_FDS) go with the first
 * byte, as they are: the channel makes no copy of them. */
#define DC_CHANNEL_MAX_VECTORS 64
gssize     dc_channel_writev       (DcChannel           *channel,
                                    const GOutputVector *vectors,
                                    guint                n_vectors,
                                    const int           *fds,
                                    guint                n_fds,
                                    GError             **error);
gboolean   dc_channel_is_socket    (DcChannel     *channel);

GSource   *dc_channel_create_source (DcChannel    *channel,
                                     GIOCondition  condition,
                                     DcChannelFunc func,
                                     gpointer      user_data);

void       dc_channel_free         (DcChannel     *channel);

G_END_DECLS
