/*
 * Copyright (C) 2026 The libdetached-code authors
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */

/* The sandbox: its program, built in the parent with libseccomp, and its
 * application in a worker, with raw system calls. */

#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>

#include <glib/gi18n-lib.h>

#include "dc-sandbox-private.h"
#include "dc-wire-private.h"
#include "dc-worker-private.h"

/* Newer than the kernel headers this may be built with. */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif

/* What a file (not a directory) may be given: the rest are rights over a
 * directory's entries. */
#define FS_FILE_RIGHTS (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | \
                        LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE | \
                        LANDLOCK_ACCESS_FS_IOCTL_DEV)
#define FS_READ_RIGHTS (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | \
                        LANDLOCK_ACCESS_FS_READ_DIR)

G_STATIC_ASSERT (sizeof (DcSandboxHeader) % 8 == 0);
G_STATIC_ASSERT (sizeof (struct sock_filter) == 8);

void
dc_sandbox_path_clear (DcSandboxPath *path)
{
  g_free (path->path);
}

/* ---- in the parent ---- */

static void
set_build_error (GError     **error,
                 const char  *what,
                 int          errsv)
{
  g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
               _("Cannot build the worker sandbox: %s: %s"), what, g_strerror (errsv));
}

/* A rule that traps @name, if this architecture has it (clone3, say, or
 * fork, which some lack). */
static int
trap (scmp_filter_ctx      ctx,
      const char          *name,
      guint                n_args,
      struct scmp_arg_cmp  arg)
{
  int nr = seccomp_syscall_resolve_name (name);

  if (nr == __NR_SCMP_ERROR || nr < 0)
    return 0;
  return n_args > 0 ? seccomp_rule_add (ctx, SCMP_ACT_TRAP, nr, 1, arg)
                    : seccomp_rule_add (ctx, SCMP_ACT_TRAP, nr, 0);
}

/* Traps @name when its argument @arg, an unsigned int command the kernel
 * reads from the low 32 bits only, is @value: a compare of all 64 bits
 * would let a command with high bits set through. */
static int
trap_command (scmp_filter_ctx  ctx,
              const char      *name,
              guint            arg,
              guint32          value)
{
  return trap (ctx, name, 1, SCMP_CMP (arg, SCMP_CMP_MASKED_EQ, 0xffffffffu, value));
}

/* Traps @name unless its first argument is 0, which means the caller
 * itself; the argument is a pid_t, so high bits trap too. */
static int
trap_unless_zero (scmp_filter_ctx  ctx,
                  const char      *name)
{
  return trap (ctx, name, 1, SCMP_A0 (SCMP_CMP_NE, 0));
}

/* Traps @name unless its first argument is the worker's own pid. */
static int
trap_unless_self (scmp_filter_ctx  ctx,
                  const char      *name)
{
  return trap (ctx, name, 1, SCMP_A0 (SCMP_CMP_NE, DC_SANDBOX_SELF_PID));
}

/* The filter for @flags, as BPF instructions, exported by libseccomp into
 * a memfd and read back; NULL with @error. */
static GBytes *
build_filter (DcSandboxFlags   flags,
              GError         **error)
{
  scmp_filter_ctx ctx;
  int r = 0, memfd = -1, errsv;
  off_t size;
  g_autofree guint8 *bpf = NULL;
  gsize done = 0, i, n_self = 0;

  ctx = seccomp_init (SCMP_ACT_ALLOW);
  if (ctx == NULL)
    {
      set_build_error (error, "seccomp_init()", ENOMEM);
      return NULL;
    }
  /* The worker sets it itself, before it loads the filter. */
  seccomp_attr_set (ctx, SCMP_FLTATR_CTL_NNP, 0);
  /* A system call of another ABI (int 0x80 in an x86-64 worker) would
   * bypass rules written for this one: stopped, and reported. */
  seccomp_attr_set (ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_TRAP);

  if (flags & DC_SANDBOX_NO_EXEC)
    {
      r = r < 0 ? r : trap (ctx, "execve", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      r = r < 0 ? r : trap (ctx, "execveat", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      /* Keystrokes pushed into the terminal the worker shares with its
       * parent run as commands once the parent's shell reads them. */
      r = r < 0 ? r : trap_command (ctx, "ioctl", 1, TIOCSTI);
      r = r < 0 ? r : trap_command (ctx, "ioctl", 1, TIOCLINUX);
    }
  if (flags & DC_SANDBOX_NO_NETWORK)
    {
      r = r < 0 ? r : trap (ctx, "socket", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      /* io_uring makes sockets (and more) without a system call the
       * filter sees. */
      r = r < 0 ? r : trap (ctx, "io_uring_setup", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      r = r < 0 ? r : trap (ctx, "io_uring_enter", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      r = r < 0 ? r : trap (ctx, "io_uring_register", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
    }
  if (flags & DC_SANDBOX_NO_SPAWN)
    {
      r = r < 0 ? r : trap (ctx, "fork", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      r = r < 0 ? r : trap (ctx, "vfork", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      /* A clone that makes a process, not a thread. */
      r = r < 0 ? r : trap (ctx, "clone", 1, SCMP_A0 (SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
      /* clone3 passes its flags in memory, which the filter cannot read:
       * ENOSYS makes libc fall back to clone. */
      if (r >= 0 && seccomp_syscall_resolve_name ("clone3") >= 0)
        r = seccomp_rule_add (ctx, SCMP_ACT_ERRNO (ENOSYS),
                              seccomp_syscall_resolve_name ("clone3"), 0);
    }
  if (flags & DC_SANDBOX_NO_PROCESS_ACCESS)
    {
      r = r < 0 ? r : trap_unless_self (ctx, "kill");
      r = r < 0 ? r : trap_unless_self (ctx, "tkill");
      r = r < 0 ? r : trap_unless_self (ctx, "tgkill");
      r = r < 0 ? r : trap_unless_self (ctx, "rt_sigqueueinfo");
      r = r < 0 ? r : trap_unless_self (ctx, "rt_tgsigqueueinfo");
      r = r < 0 ? r : trap_unless_self (ctx, "process_vm_readv");
      r = r < 0 ? r : trap_unless_self (ctx, "process_vm_writev");
      r = r < 0 ? r : trap_unless_self (ctx, "pidfd_open");
      /* A pidfd, or a /proc/<pid> directory: whose, the filter cannot tell. */
      r = r < 0 ? r : trap (ctx, "pidfd_send_signal", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      r = r < 0 ? r : trap (ctx, "process_madvise", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      r = r < 0 ? r : trap (ctx, "ptrace", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      /* A pidfd of the parent comes without pidfd_open() (SO_PEERPIDFD on
       * the channel): taking its descriptors is stopped instead. */
      r = r < 0 ? r : trap (ctx, "pidfd_getfd", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      r = r < 0 ? r : trap (ctx, "kcmp", 0, SCMP_A0 (SCMP_CMP_EQ, 0));
      /* Signals sent by the kernel for I/O on a descriptor: to the
       * parent, SIGKILL as well as any other. */
      r = r < 0 ? r : trap_command (ctx, "fcntl", 1, F_SETOWN);
      r = r < 0 ? r : trap_command (ctx, "fcntl", 1, F_SETOWN_EX);
      r = r < 0 ? r : trap_command (ctx, "fcntl", 1, F_SETSIG);
      /* Another process's limits and scheduling; 0, the worker itself,
       * is what libc passes for its own. */
      r = r < 0 ? r : trap_unless_zero (ctx, "prlimit64");
      r = r < 0 ? r : trap_unless_zero (ctx, "sched_setaffinity");
      r = r < 0 ? r : trap_unless_zero (ctx, "sched_setscheduler");
      r = r < 0 ? r : trap_unless_zero (ctx, "sched_setparam");
      r = r < 0 ? r : trap_unless_zero (ctx, "sched_setattr");
      r = r < 0 ? r : trap (ctx, "setpriority", 1, SCMP_A0 (SCMP_CMP_NE, PRIO_PROCESS));
      r = r < 0 ? r : trap (ctx, "setpriority", 1, SCMP_A1 (SCMP_CMP_NE, 0));
      r = r < 0 ? r : trap (ctx, "ioprio_set", 1, SCMP_A0 (SCMP_CMP_NE, 1 /* IOPRIO_WHO_PROCESS */));
      r = r < 0 ? r : trap (ctx, "ioprio_set", 1, SCMP_A1 (SCMP_CMP_NE, 0));
    }
  if (flags & DC_SANDBOX_FILESYSTEM)
    {
      static const char *const metadata[] = {
        "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat",
        "utime", "utimes", "futimesat", "utimensat",
        "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
      };
      gsize m;

      /* Landlock rules opening, not a file's mode, owner, times or
       * attributes: those changes are stopped, inside the listed paths
       * too. */
      for (m = 0; m < G_N_ELEMENTS (metadata); m++)
        r = r < 0 ? r : trap (ctx, metadata[m], 0, SCMP_A0 (SCMP_CMP_EQ, 0));
    }
  if (r < 0)
    {
      seccomp_release (ctx);
      set_build_error (error, "seccomp_rule_add()", -r);
      return NULL;
    }

  memfd = memfd_create ("dc-sandbox", MFD_CLOEXEC);
  if (memfd < 0)
    {
      errsv = errno;
      seccomp_release (ctx);
      set_build_error (error, "memfd_create()", errsv);
      return NULL;
    }
  r = seccomp_export_bpf (ctx, memfd);
  seccomp_release (ctx);
  size = lseek (memfd, 0, SEEK_END);
  if (r < 0 || size <= 0 || size % sizeof (struct sock_filter) != 0 ||
      size > BPF_MAXINSNS * (off_t) sizeof (struct sock_filter))
    {
      close (memfd);
      set_build_error (error, "seccomp_export_bpf()", r < 0 ? -r : EINVAL);
      return NULL;
    }
  bpf = g_malloc ((gsize) size);
  while (done < (gsize) size)
    {
      ssize_t n = pread (memfd, bpf + done, (gsize) size - done, (off_t) done);

      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        {
          errsv = n < 0 ? errno : EIO;
          close (memfd);
          set_build_error (error, "read()", errsv);
          return NULL;
        }
      done += (gsize) n;
    }
  close (memfd);

  /* The pid placeholder: only in comparisons, which the worker patches. */
  for (i = 0; i < (gsize) size; i += sizeof (struct sock_filter))
    {
      struct sock_filter insn;

      memcpy (&insn, bpf + i, sizeof insn);
      if (insn.k != DC_SANDBOX_SELF_PID)
        continue;
      if (insn.code != (BPF_JMP | BPF_JEQ | BPF_K))
        {
          set_build_error (error, "seccomp_export_bpf()", EINVAL);
          return NULL;
        }
      n_self++;
    }
  if ((flags & DC_SANDBOX_NO_PROCESS_ACCESS) && n_self == 0)
    {
      set_build_error (error, "seccomp_export_bpf()", EINVAL);
      return NULL;
    }

  return g_bytes_new_take (g_steal_pointer (&bpf), (gsize) size);
}

/* The Landlock ABI of this kernel, or 0 without Landlock. */
static int
landlock_abi (void)
{
  long abi = syscall (__NR_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);

  return abi > 0 ? (int) abi : 0;
}

static guint64
landlock_handled_rights (int abi)
{
  guint64 rights = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;   /* ABI 1 */

  if (abi >= 2)
    rights |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3)
    rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
  if (abi >= 5)
    rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  return rights;
}

GBytes *
dc_sandbox_build (DcSandboxFlags   flags,
                  GArray          *paths,
                  guint64          memory_limit,
                  GError         **error)
{
  DcSandboxHeader header = { DC_SANDBOX_MAGIC, };
  g_autoptr(GByteArray) program = g_byte_array_new ();
  g_autoptr(GBytes) filter = NULL;
  guint i;

  if (flags & ~DC_SANDBOX_ALL)
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                   _("Unknown sandbox flags 0x%x"), (guint) (flags & ~DC_SANDBOX_ALL));
      return NULL;
    }

  header.flags = flags;
  header.memory_limit = memory_limit;
  g_byte_array_append (program, (const guint8 *) &header, sizeof header);

  if (flags & DC_SANDBOX_ALL)
    {
      filter = build_filter (flags, error);
      if (filter == NULL)
        return NULL;
      header.n_insns = (guint32) (g_bytes_get_size (filter) / sizeof (struct sock_filter));
      g_byte_array_append (program, g_bytes_get_data (filter, NULL),
                           (guint) g_bytes_get_size (filter));
    }

  if (flags & DC_SANDBOX_FILESYSTEM)
    {
      int abi = landlock_abi ();

      if (abi == 0)
        {
          g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                               _("The filesystem sandbox needs Landlock, which this kernel "
                                 "does not offer"));
          return NULL;
        }
      header.landlock_handled = landlock_handled_rights (abi);

      if (paths->len > DC_SANDBOX_MAX_PATHS)
        {
          g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                       _("More than %u sandbox paths"), DC_SANDBOX_MAX_PATHS);
          return NULL;
        }
      for (i = 0; i < paths->len; i++)
        {
          const DcSandboxPath *p = &g_array_index (paths, DcSandboxPath, i);
          guint32 words[2];
          guint64 access = p->access == DC_SANDBOX_ACCESS_READ_WRITE
                             ? header.landlock_handled : FS_READ_RIGHTS;
          static const guint8 pad[4] = { 0, };

          if (!g_path_is_absolute (p->path))
            {
              g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                           _("The sandbox path “%s” is not absolute"), p->path);
              return NULL;
            }
          if (!g_file_test (p->path, G_FILE_TEST_EXISTS))
            {
              g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                           _("The sandbox path “%s” does not exist"), p->path);
              return NULL;
            }
          if (!g_file_test (p->path, G_FILE_TEST_IS_DIR))
            access &= FS_FILE_RIGHTS;
          /* Only rights the ruleset handles may be granted. */
          words[0] = (guint32) (access & header.landlock_handled);
          words[1] = (guint32) strlen (p->path) + 1;
          g_byte_array_append (program, (const guint8 *) words, sizeof words);
          g_byte_array_append (program, (const guint8 *) p->path, words[1]);
          g_byte_array_append (program, pad, (4 - words[1] % 4) % 4);
        }
      header.n_paths = paths->len;
    }

  if (program->len > DC_SANDBOX_MAX_SIZE)
    {
      g_set_error (error, DC_DETACHED_CODE_ERROR, DC_DETACHED_CODE_ERROR_SANDBOX,
                   _("The worker sandbox is larger than %u KiB"), DC_SANDBOX_MAX_SIZE / 1024);
      return NULL;
    }
  memcpy (program->data, &header, sizeof header);
  g_assert (dc_sandbox_check (program->data, program->len));
  return g_byte_array_free_to_bytes (g_steal_pointer (&program));
}

char *
dc_sandbox_syscall_name (guint32 arch,
                         gint32  nr)
{
  char *name, *copy;

  /* x32 calls come with the x86-64 architecture and a bit of their own. */
  if (arch == SCMP_ARCH_X86_64 && (nr & 0x40000000) != 0)
    arch = SCMP_ARCH_X32;
  name = seccomp_syscall_resolve_num_arch (arch, nr);
  copy = g_strdup (name);

  free (name);
  return copy;
}

/* ---- in the worker ---- */

/* This function is called in a worker before the user's calls and in the
 * template, and hence must be async-signal-safe: it only reads memory. */
gboolean
dc_sandbox_check (const guint8 *data,
                  gsize         size)
{
  DcSandboxHeader header;
  gsize pos;
  guint i;

  if (size < sizeof header || size > DC_SANDBOX_MAX_SIZE)
    return FALSE;
  memcpy (&header, data, sizeof header);
  if (header.magic != DC_SANDBOX_MAGIC || (header.flags & ~DC_SANDBOX_ALL) ||
      header.n_insns > BPF_MAXINSNS || header.n_paths > DC_SANDBOX_MAX_PATHS)
    return FALSE;

  pos = sizeof header + (gsize) header.n_insns * sizeof (struct sock_filter);
  if (pos > size)
    return FALSE;
  for (i = 0; i < header.n_paths; i++)
    {
      guint32 words[2];

      if (size - pos < sizeof words)
        return FALSE;
      memcpy (words, data + pos, sizeof words);
      pos += sizeof words;
      if (words[1] == 0 || words[1] > size - pos || data[pos + words[1] - 1] != '\0' ||
          memchr (data + pos, '\0', words[1] - 1) != NULL)
        return FALSE;
      pos += words[1] + (4 - words[1] % 4) % 4;
      if (pos > size)
        return FALSE;
    }
  return pos == size;
}

/* Where a trapped worker reports; set once, before the filter loads. */
static int sandbox_channel_fd = -1;

/* A signal handler, hence async-signal-safe: write() and _exit().  The
 * frame is small enough for one write; if another thread of the worker is
 * writing a reply meanwhile, the parent sees a garbled channel and
 * reports a protocol error instead. */
static void
sigsys_handler (int        sig,
                siginfo_t *info,
                void      *context)
{
  dc_wire_write_words_frame (sandbox_channel_fd, DC_WIRE_SANDBOX_STOPPED, info->si_arch,
                             (guint32) info->si_syscall);
  _exit (DC_WORKER_EXIT_SANDBOX);
}

/* This function is called between fork() and the user's calls and hence
 * must be async-signal-safe: open(), close() and the Landlock system
 * calls.  Only the calling thread is restricted (Landlock's rule). */
static int
apply_landlock (const DcSandboxHeader *header,
                const guint8          *paths)
{
  struct landlock_ruleset_attr attr = { .handled_access_fs = header->landlock_handled };
  int ruleset, errsv = 0;
  gsize pos = 0;
  guint i;

  ruleset = (int) syscall (__NR_landlock_create_ruleset, &attr, sizeof attr, 0);
  if (ruleset < 0)
    return errno;

  for (i = 0; i < header->n_paths && errsv == 0; i++)
    {
      struct landlock_path_beneath_attr beneath = { 0, };
      guint32 words[2];
      int fd;

      memcpy (words, paths + pos, sizeof words);
      do
        fd = open ((const char *) paths + pos + sizeof words, O_PATH | O_CLOEXEC);
      while (fd < 0 && errno == EINTR);
      if (fd < 0)
        errsv = errno;
      else
        {
          beneath.allowed_access = words[0];
          beneath.parent_fd = fd;
          if (syscall (__NR_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                       &beneath, 0) < 0)
            errsv = errno;
          close (fd);
        }
      pos += sizeof words + words[1] + (4 - words[1] % 4) % 4;
    }

  if (errsv == 0 && syscall (__NR_landlock_restrict_self, ruleset, 0) < 0)
    errsv = errno;
  close (ruleset);
  return errsv;
}

/* This function is called between fork() and the user's calls and hence
 * must be async-signal-safe: getpid(), setrlimit(), prctl(), sigaction(),
 * the seccomp and Landlock system calls, and stores into the worker's own
 * copy of the program. */
int
dc_sandbox_apply (guint8 *data,
                  gsize   size,
                  int     channel_fd)
{
  DcSandboxHeader header;
  guint8 *insns = data + sizeof header;
  guint32 self = (guint32) getpid ();
  gsize i;

  memcpy (&header, data, sizeof header);

  if (header.memory_limit > 0)
    {
      struct rlimit rl = { header.memory_limit, header.memory_limit };

      if (setrlimit (RLIMIT_AS, &rl) < 0)
        return errno;
    }

  if (header.flags == DC_SANDBOX_NONE)
    return 0;

  /* No set-uid program or file capability gives back what is taken. */
  if (prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
    return errno;

  if ((header.flags & DC_SANDBOX_FILESYSTEM))
    {
      int errsv = apply_landlock (&header, insns + (gsize) header.n_insns * sizeof (struct sock_filter));

      if (errsv != 0)
        return errsv;
    }

  if (header.n_insns > 0)
    {
      struct sigaction sa;
      struct sock_fprog prog;
      sigset_t sigsys;

      /* The pid placeholder becomes this worker's pid. */
      for (i = 0; i < header.n_insns; i++)
        {
          struct sock_filter insn;

          memcpy (&insn, insns + i * sizeof insn, sizeof insn);
          if (insn.code == (BPF_JMP | BPF_JEQ | BPF_K) && insn.k == DC_SANDBOX_SELF_PID)
            {
              insn.k = self;
              memcpy (insns + i * sizeof insn, &insn, sizeof insn);
            }
        }

      sandbox_channel_fd = channel_fd;
      memset (&sa, 0, sizeof sa);
      sa.sa_sigaction = sigsys_handler;
      sa.sa_flags = SA_SIGINFO;
      sigfillset (&sa.sa_mask);
      if (sigaction (SIGSYS, &sa, NULL) < 0)
        return errno;
      sigemptyset (&sigsys);
      sigaddset (&sigsys, SIGSYS);
      sigprocmask (SIG_UNBLOCK, &sigsys, NULL);

      prog.len = (unsigned short) header.n_insns;
      prog.filter = (struct sock_filter *) (gpointer) insns;
      /* Every thread the init function started, too. */
      if (syscall (__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
        return errno != 0 ? errno : EBUSY;
    }

  return 0;
}
