/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

#pragma once

#if !defined(DC_INSIDE) && !defined(DC_COMPILATION)
#error "Only <detached-code.h> can be included directly."
#endif

#include <gio/gio.h>
#include <gio/gunixfdlist.h>

#include "dc-version-macros.h"

G_BEGIN_DECLS

/**
 * DC_DETACHED_CODE_ERROR:
 *
 * The error domain of [class@DetachedCode] for failures of the pool itself
 * (errors raised by the code keep their own domain).
 *
 * Since: 1.0
 */
#define DC_DETACHED_CODE_ERROR (dc_detached_code_error_quark ())

/**
 * DcDetachedCodeError:
 * @DC_DETACHED_CODE_ERROR_FAILED: the code returned %NULL without setting an error
 * @DC_DETACHED_CODE_ERROR_WORKER_DIED: the worker exited, was killed, or closed its
 *   stream during the call; the message names the pid and the exit status or signal
 * @DC_DETACHED_CODE_ERROR_SHUTDOWN: the pool was shut down (or finalized) before the
 *   call completed
 * @DC_DETACHED_CODE_ERROR_MARSHAL: a value the marshaller cannot carry, in either
 *   direction
 * @DC_DETACHED_CODE_ERROR_PROTOCOL: a malformed or oversized message came from a
 *   worker; that worker was killed
 * @DC_DETACHED_CODE_ERROR_TIMED_OUT: the call ran past its time limit
 * @DC_DETACHED_CODE_ERROR_SPAWN: a worker could not be created (socketpair, pipe or
 *   fork failed, or the worker could not set itself up)
 * @DC_DETACHED_CODE_ERROR_BUSY: the call was refused because
 *   [property@DetachedCode:max-queued] calls already wait for a worker
 * @DC_DETACHED_CODE_ERROR_SANDBOX: the worker made a system call its
 *   [property@DetachedCode:sandbox] forbids and was stopped; the message names
 *   the call.  Also: the sandbox asked for cannot be set up (see
 *   [Sandbox](sandbox.html))
 *
 * Error codes of the %DC_DETACHED_CODE_ERROR domain.
 *
 * Since: 1.0
 */
typedef enum
{
  DC_DETACHED_CODE_ERROR_FAILED,
  DC_DETACHED_CODE_ERROR_WORKER_DIED,
  DC_DETACHED_CODE_ERROR_SHUTDOWN,
  DC_DETACHED_CODE_ERROR_MARSHAL,
  DC_DETACHED_CODE_ERROR_PROTOCOL,
  DC_DETACHED_CODE_ERROR_TIMED_OUT,
  DC_DETACHED_CODE_ERROR_SPAWN,
  DC_DETACHED_CODE_ERROR_BUSY,
  DC_DETACHED_CODE_ERROR_SANDBOX,
} DcDetachedCodeError;

/**
 * DcStream:
 * @DC_STREAM_AUTO: the best the platform offers (a socket pair on Linux)
 * @DC_STREAM_SOCKET: one socket pair per worker: one descriptor in the parent
 * @DC_STREAM_PIPE: two pipes per worker: two descriptors in the parent
 *
 * The kind of channel between the parent and each worker.
 *
 * Since: 1.0
 */
typedef enum
{
  DC_STREAM_AUTO,
  DC_STREAM_SOCKET,
  DC_STREAM_PIPE,
} DcStream;

/**
 * DcMarshaller:
 * @DC_MARSHALLER_VARIANT: carries any [struct@GLib.Variant], in its serialized form
 * @DC_MARSHALLER_FLAT: carries only tuples whose members are strings (`s`) or
 *   maybe-strings (`ms`); small and fast, and refuses anything else with
 *   %DC_DETACHED_CODE_ERROR_MARSHAL
 *
 * How arguments and results travel between the parent and the workers.
 *
 * Since: 1.0
 */
typedef enum
{
  DC_MARSHALLER_VARIANT,
  DC_MARSHALLER_FLAT,
} DcMarshaller;

/**
 * DcSetupFlags:
 * @DC_SETUP_NONE: a worker's stdin and stdout are `/dev/null`; stderr is inherited
 * @DC_SETUP_INHERIT_STDIN: the worker shares the parent's stdin
 * @DC_SETUP_INHERIT_STDOUT: the worker shares the parent's stdout
 * @DC_SETUP_SILENCE_STDERR: the worker's stderr is `/dev/null`
 * @DC_SETUP_CAPTURE_STDERR: the worker's stderr is a pipe to this process,
 *   which copies it line by line to its own stderr, each line prefixed with
 *   `dc-worker[PID]: `, and keeps the last 2 KiB of it per worker: a
 *   %DC_DETACHED_CODE_ERROR_WORKER_DIED, %DC_DETACHED_CODE_ERROR_TIMED_OUT or
 *   %DC_DETACHED_CODE_ERROR_SANDBOX error about that worker ends with its
 *   last lines.  Not together with %DC_SETUP_SILENCE_STDERR.
 *
 * How the standard descriptors of a worker are set up.
 *
 * Since: 1.0
 */
typedef enum /*< flags >*/
{
  DC_SETUP_NONE           = 0,
  DC_SETUP_INHERIT_STDIN  = 1 << 0,
  DC_SETUP_INHERIT_STDOUT = 1 << 1,
  DC_SETUP_SILENCE_STDERR = 1 << 2,
  DC_SETUP_CAPTURE_STDERR = 1 << 3,
} DcSetupFlags;

/**
 * DcSandboxFlags:
 * @DC_SANDBOX_NONE: no sandbox
 * @DC_SANDBOX_NO_EXEC: no `execve()` or `execveat()`
 * @DC_SANDBOX_NO_NETWORK: no `socket()` of any family (`socketpair()` stays allowed)
 * @DC_SANDBOX_NO_SPAWN: no new process: `fork()`, `vfork()`, and `clone()` without
 *   `CLONE_THREAD` (threads stay allowed)
 * @DC_SANDBOX_NO_PROCESS_ACCESS: no signal, trace or memory access aimed at any
 *   process but the worker itself: `kill()`, `tkill()`, `tgkill()`,
 *   `rt_sigqueueinfo()`, `rt_tgsigqueueinfo()`, `process_vm_readv()` and
 *   `process_vm_writev()` are allowed on the worker's own pid only;
 *   `pidfd_open()` likewise; `pidfd_send_signal()` and `ptrace()` never
 * @DC_SANDBOX_FILESYSTEM: the worker opens only the paths listed with
 *   [method@DetachedCode.add_sandbox_path] (Landlock); anything else fails
 *   with `EACCES`
 * @DC_SANDBOX_ALL: all of the above
 *
 * What a worker may not do once its init function has run.  A worker that
 * makes a forbidden system call (all flags but %DC_SANDBOX_FILESYSTEM) is
 * stopped, and its call fails with %DC_DETACHED_CODE_ERROR_SANDBOX.  See
 * [Sandbox](sandbox.html).
 *
 * Since: 1.0
 */
typedef enum /*< flags >*/
{
  DC_SANDBOX_NONE              = 0,
  DC_SANDBOX_NO_EXEC           = 1 << 0,
  DC_SANDBOX_NO_NETWORK        = 1 << 1,
  DC_SANDBOX_NO_SPAWN          = 1 << 2,
  DC_SANDBOX_NO_PROCESS_ACCESS = 1 << 3,
  DC_SANDBOX_FILESYSTEM        = 1 << 4,
  DC_SANDBOX_ALL               = (1 << 5) - 1,
} DcSandboxFlags;

/**
 * DcSandboxAccess:
 * @DC_SANDBOX_ACCESS_READ: read files and list directories
 * @DC_SANDBOX_ACCESS_READ_WRITE: also write, create, remove and rename
 *
 * What a worker under %DC_SANDBOX_FILESYSTEM may do under a path given to
 * [method@DetachedCode.add_sandbox_path].
 *
 * Since: 1.0
 */
typedef enum
{
  DC_SANDBOX_ACCESS_READ,
  DC_SANDBOX_ACCESS_READ_WRITE,
} DcSandboxAccess;

/**
 * DcCodeFunc:
 * @args: the arguments given to [method@DetachedCode.call_async]
 * @user_data: the data given to [ctor@DetachedCode.new]
 * @error: return location for an error
 *
 * The code a [class@DetachedCode] runs.  It runs inside a worker process,
 * a copy of the parent made by `fork()`: nothing it changes is seen by the
 * parent, and everything it needs must travel in @args.
 *
 * Returns: (transfer full) (nullable): the result, a new or floating variant,
 *   or %NULL with @error set
 *
 * Since: 1.0
 */
typedef GVariant *(*DcCodeFunc) (GVariant  *args,
                                 gpointer   user_data,
                                 GError   **error);

/**
 * DcCodeFdFunc:
 * @args: the arguments given to
 *   [method@DetachedCode.call_with_unix_fd_list_async]
 * @fd_list: (nullable): the descriptors that came with the call, as in
 *   GDBus: `h` values in @args are indices into it; %NULL if none came
 * @out_fd_list: (out) (optional) (nullable) (transfer full): return location
 *   for descriptors to send back with the result
 * @user_data: the data given to [ctor@DetachedCode.new_with_fds]
 * @error: return location for an error
 *
 * The code of a pool that passes descriptors.  Like [callback@CodeFunc],
 * it runs inside a worker process; the descriptors it receives are its
 * own copies, closed when @fd_list is freed.
 *
 * Returns: (transfer full) (nullable): the result, a new or floating variant,
 *   or %NULL with @error set
 *
 * Since: 1.0
 */
typedef GVariant *(*DcCodeFdFunc) (GVariant     *args,
                                   GUnixFDList  *fd_list,
                                   GUnixFDList **out_fd_list,
                                   gpointer      user_data,
                                   GError      **error);

/**
 * DcWorkerInitFunc:
 * @user_data: the data given to [method@DetachedCode.set_worker_init_func]
 *
 * Runs once in each worker process, after its set-up and before its
 * first call.
 *
 * Since: 1.0
 */
typedef void (*DcWorkerInitFunc) (gpointer user_data);

#define DC_TYPE_DETACHED_CODE (dc_detached_code_get_type ())

DC_AVAILABLE_IN_ALL
G_DECLARE_FINAL_TYPE (DcDetachedCode, dc_detached_code, DC, DETACHED_CODE, GObject)

/**
 * DcProgressFunc:
 * @self: the pool the call was made on
 * @progress: a value the code sent with [func@worker_report_progress]
 * @user_data: the data given with the function
 *
 * Receives the progress values of a call made with
 * [method@DetachedCode.call_with_progress_async], in the caller's
 * thread-default main context, in the order the code sent them, all of
 * them before the call's callback.
 *
 * Since: 1.0
 */
typedef void (*DcProgressFunc) (DcDetachedCode *self,
                                GVariant       *progress,
                                gpointer        user_data);

DC_AVAILABLE_IN_ALL
GQuark          dc_detached_code_error_quark       (void);

DC_AVAILABLE_IN_ALL
DcDetachedCode *dc_detached_code_new               (DcCodeFunc          func,
                                                    gpointer            user_data,
                                                    GDestroyNotify      user_data_free) G_GNUC_WARN_UNUSED_RESULT;
DC_AVAILABLE_IN_ALL
DcDetachedCode *dc_detached_code_new_with_fds      (DcCodeFdFunc        func,
                                                    gpointer            user_data,
                                                    GDestroyNotify      user_data_free) G_GNUC_WARN_UNUSED_RESULT;
DC_AVAILABLE_IN_ALL
void            dc_detached_code_call_with_unix_fd_list_async (DcDetachedCode     *self,
                                                    GVariant           *args,
                                                    GUnixFDList        *fd_list,
                                                    int                 io_priority,
                                                    GCancellable       *cancellable,
                                                    GAsyncReadyCallback callback,
                                                    gpointer            user_data);
DC_AVAILABLE_IN_ALL
GVariant       *dc_detached_code_call_with_unix_fd_list_finish (DcDetachedCode *self,
                                                    GUnixFDList       **out_fd_list,
                                                    GAsyncResult       *result,
                                                    GError            **error);
DC_AVAILABLE_IN_ALL
gboolean        dc_detached_code_start             (DcDetachedCode     *self,
                                                    GError            **error);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_call_async        (DcDetachedCode     *self,
                                                    GVariant           *args,
                                                    int                 io_priority,
                                                    GCancellable       *cancellable,
                                                    GAsyncReadyCallback callback,
                                                    gpointer            user_data);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_call_with_progress_async (DcDetachedCode *self,
                                                    GVariant           *args,
                                                    int                 io_priority,
                                                    GCancellable       *cancellable,
                                                    DcProgressFunc      progress_func,
                                                    gpointer            progress_data,
                                                    GDestroyNotify      progress_data_free,
                                                    GAsyncReadyCallback callback,
                                                    gpointer            user_data);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_call_with_progress_async_with_closures (DcDetachedCode *self,
                                                    GVariant           *args,
                                                    int                 io_priority,
                                                    GCancellable       *cancellable,
                                                    GClosure           *progress_closure,
                                                    GClosure           *ready_closure);
DC_AVAILABLE_IN_ALL
GVariant       *dc_detached_code_call_finish       (DcDetachedCode     *self,
                                                    GAsyncResult       *result,
                                                    GError            **error);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_map_async         (DcDetachedCode     *self,
                                                    GVariant           *items,
                                                    guint               chunk_size,
                                                    int                 io_priority,
                                                    GCancellable       *cancellable,
                                                    GAsyncReadyCallback callback,
                                                    gpointer            user_data);
DC_AVAILABLE_IN_ALL
GVariant       *dc_detached_code_map_finish        (DcDetachedCode     *self,
                                                    GAsyncResult       *result,
                                                    GError            **error);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_shutdown          (DcDetachedCode     *self);

DC_AVAILABLE_IN_ALL
void            dc_worker_report_progress          (GVariant           *progress);

DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_n_workers     (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
GPid           *dc_detached_code_get_worker_pids   (DcDetachedCode     *self,
                                                    guint              *n_pids);

DC_AVAILABLE_IN_ALL
void            dc_detached_code_setenv            (DcDetachedCode     *self,
                                                    const char         *variable,
                                                    const char         *value,
                                                    gboolean            overwrite);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_unsetenv          (DcDetachedCode     *self,
                                                    const char         *variable);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_cwd           (DcDetachedCode     *self,
                                                    const char         *cwd);
DC_AVAILABLE_IN_ALL
const char     *dc_detached_code_get_cwd           (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_worker_init_func (DcDetachedCode  *self,
                                                    DcWorkerInitFunc    func,
                                                    gpointer            user_data,
                                                    GDestroyNotify      user_data_free);

DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_min_workers   (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_min_workers   (DcDetachedCode     *self,
                                                    guint               min_workers);
DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_max_workers   (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_max_workers   (DcDetachedCode     *self,
                                                    guint               max_workers);
DC_AVAILABLE_IN_ALL
DcStream        dc_detached_code_get_stream        (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_stream        (DcDetachedCode     *self,
                                                    DcStream            stream);
DC_AVAILABLE_IN_ALL
DcMarshaller    dc_detached_code_get_marshaller    (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_marshaller    (DcDetachedCode     *self,
                                                    DcMarshaller        marshaller);
DC_AVAILABLE_IN_ALL
gboolean        dc_detached_code_get_exit_on_die   (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_exit_on_die   (DcDetachedCode     *self,
                                                    gboolean            exit_on_die);
DC_AVAILABLE_IN_ALL
DcSetupFlags    dc_detached_code_get_setup_flags   (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_setup_flags   (DcDetachedCode     *self,
                                                    DcSetupFlags        flags);

DC_AVAILABLE_IN_ALL
void            dc_detached_code_restart           (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_n_busy        (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_n_queued      (DcDetachedCode     *self);

DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_idle_timeout  (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_idle_timeout  (DcDetachedCode     *self,
                                                    guint               idle_timeout);
DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_max_worker_calls (DcDetachedCode  *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_max_worker_calls (DcDetachedCode  *self,
                                                    guint               max_worker_calls);
DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_call_timeout  (DcDetachedCode     *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_call_timeout  (DcDetachedCode     *self,
                                                    guint               call_timeout);
DC_AVAILABLE_IN_ALL
gboolean        dc_detached_code_get_kill_on_cancel (DcDetachedCode    *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_kill_on_cancel (DcDetachedCode    *self,
                                                    gboolean            kill_on_cancel);
DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_pipeline_depth (DcDetachedCode    *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_pipeline_depth (DcDetachedCode    *self,
                                                    guint               pipeline_depth);

DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_memfd_threshold (DcDetachedCode   *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_memfd_threshold (DcDetachedCode   *self,
                                                    guint               memfd_threshold);

DC_AVAILABLE_IN_ALL
guint           dc_detached_code_get_max_queued     (DcDetachedCode    *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_max_queued     (DcDetachedCode    *self,
                                                    guint               max_queued);

DC_AVAILABLE_IN_ALL
gboolean        dc_detached_code_get_fork_server    (DcDetachedCode    *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_fork_server    (DcDetachedCode    *self,
                                                    gboolean            fork_server);

DC_AVAILABLE_IN_ALL
DcSandboxFlags  dc_detached_code_get_sandbox        (DcDetachedCode    *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_sandbox        (DcDetachedCode    *self,
                                                    DcSandboxFlags      flags);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_add_sandbox_path   (DcDetachedCode    *self,
                                                    const char         *path,
                                                    DcSandboxAccess     access);
DC_AVAILABLE_IN_ALL
guint64         dc_detached_code_get_memory_limit   (DcDetachedCode    *self);
DC_AVAILABLE_IN_ALL
void            dc_detached_code_set_memory_limit   (DcDetachedCode    *self,
                                                    guint64             memory_limit);

G_END_DECLS
