/*
 * agentd_sandbox.h — the only C in agentd's sandbox path.
 *
 * Why C at all: between clone3() and execve() the new process shares the
 * daemon's address space (CLONE_VM, like posix_spawn) and must not run Swift
 * code, take locks, allocate or touch errno.  Everything it needs (paths,
 * mount plan, seccomp BPF, argv/envp) is built by Swift *before* the clone;
 * the child only walks that plan making raw system calls.
 *
 * Conventions (see ARCHITECTURE.md): every function is prefixed `agentd_`,
 * returns -1 on failure and reports the errno plus the stage that failed.
 */
#ifndef AGENTD_SANDBOX_H
#define AGENTD_SANDBOX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- mount plan --------------------------------------------------------- */

enum agentd_op_kind {
    AGENTD_OP_MOUNT = 1,   /* mount(source, target, fstype, flags, data)        */
    AGENTD_OP_MKDIR = 2,   /* mkdirat(target, mode); EEXIST is not an error      */
    AGENTD_OP_MKNOD = 3,   /* mknodat(target, mode, dev)                         */
    AGENTD_OP_SYMLINK = 4, /* symlinkat(source -> target)                        */
    AGENTD_OP_MOVE_MOUNT = 5, /* move_mount(fd, "", target): attach a detached tree */
};

/* One step of the plan the child executes in order. */
struct agentd_op {
    int kind;
    int optional;          /* 1: ENOENT on the target skips the step          */
    const char *source;
    const char *target;
    const char *fstype;
    const char *data;
    unsigned long flags;
    unsigned int mode;
    unsigned long long dev;
    int fd;                /* MOVE_MOUNT: the tree, or AGENTD_FD_CLAIMED         */
};

/* In a warm shell's claim plan: the fd passed with the claim (see
 * agentd_warm_claim_begin). */
#define AGENTD_FD_CLAIMED (-2)

struct agentd_rlimit {
    int resource;
    unsigned long long soft;
    unsigned long long hard;
};

/* ---- spawning a sandbox init ------------------------------------------- */

/* Stages reported when the child fails; agentd_stage_name() names them. */
enum agentd_stage {
    AGENTD_STAGE_NONE = 0,
    AGENTD_STAGE_CLONE,
    AGENTD_STAGE_CGROUP_ATTACH,
    AGENTD_STAGE_CGROUPNS,
    AGENTD_STAGE_SYNC,
    AGENTD_STAGE_USERNS_MAP,
    AGENTD_STAGE_NETNS,
    AGENTD_STAGE_MOUNT_PRIVATE,
    AGENTD_STAGE_PLAN,          /* a plan step; err_index says which */
    AGENTD_STAGE_LOOPBACK,
    AGENTD_STAGE_HOSTNAME,
    AGENTD_STAGE_PIVOT_ROOT,
    AGENTD_STAGE_CHDIR,
    AGENTD_STAGE_RLIMIT,
    AGENTD_STAGE_FDS,
    AGENTD_STAGE_SETSID,
    AGENTD_STAGE_CAPS,
    AGENTD_STAGE_NO_NEW_PRIVS,
    AGENTD_STAGE_SECCOMP,
    AGENTD_STAGE_EXEC,
    AGENTD_STAGE_WARM,          /* a warm shell died or did not answer */
};

struct agentd_spawn_config {
    uint64_t clone_flags;      /* CLONE_NEW* flags for clone3                     */
    int cgroup_fd;             /* >= 0: CLONE_INTO_CGROUP (cgroup v2)             */
    const int *attach_fds;     /* cgroup v1: open cgroup.procs files; the child   */
    int n_attach_fds;          /*   writes "0" to each before anything else       */
    int unshare_cgroupns;      /* v1: unshare(CLONE_NEWCGROUP) after attaching    */
    int netns_fd;              /* >= 0: setns() into this (pre-made) network ns   */
    const char *uid_map;       /* user namespace maps written by the parent, or   */
    const char *gid_map;       /*   NULL when clone_flags has no CLONE_NEWUSER    */

    const struct agentd_op *ops;
    int n_ops;
    const char *new_root;      /* pivot_root() here (a mount made by the plan)   */
    int move_root;             /* instead: MS_MOVE new_root onto / and chroot;   */
                               /*   only where the old root is a warm shell's   */
                               /*   staging tmpfs (see spawn.c, child_pivot)    */
    const char *workdir;       /* chdir() after pivot, absolute in the new root   */
    const char *hostname;
    int loopback_up;           /* bring `lo` up in the new network namespace     */
    const struct agentd_rlimit *rlimits;
    int n_rlimits;
    const void *seccomp_prog;  /* struct sock_fprog *, or NULL                    */
    int last_cap;              /* highest capability number to drop              */
    int nondumpable;           /* PR_SET_DUMPABLE 0 before exec (init re-sets)    */

    int stdio[3];              /* fds for 0,1,2; -1: /dev/null of the new root    */
    const int *pass_fds;       /* become fds 3, 4, ... in the child              */
    int n_pass_fds;
    int exec_fd;               /* program to run: execveat(fd, "", AT_EMPTY_PATH) */
    const char *exec_path;     /*   or, when exec_fd < 0, this path (new root)    */
    char *const *argv;
    char *const *envp;
};

struct agentd_spawn_result {
    pid_t pid;
    int pidfd;
    int stage;                 /* enum agentd_stage on failure                    */
    int err;                   /* errno on failure                                */
    int err_index;             /* plan step index for AGENTD_STAGE_PLAN           */
};

/* Clone the sandbox init without waiting for it to set up, so that no
 * thread blocks for the ~millisecond that takes: agentd_spawn_begin clones
 * the child (in user namespace mode it also writes its id maps) and returns
 * as soon as it runs, with `report_fd`, which the caller now owns and reads
 * until end-of-file: nothing read means the child has exec'd (the pipe is
 * close-on-exec); a report means a step failed.  agentd_spawn_finish is then
 * called once with what was read (`report` NULL: abandon the start, killing
 * the child).  `cfg` must stay valid and unchanged until then: the child
 * reads it.  begin returns 0 (pid, pidfd filled in) or -1 with stage/err
 * (nothing left running); finish returns 0 (pid, pidfd) or -1 with
 * stage/err, the child killed and reaped and the pidfd closed. */
struct agentd_spawn_pending {
    pid_t pid;
    int pidfd;
    int report_fd;
    void *priv; /* the child's stack and context, freed by finish */
};
int agentd_spawn_begin(const struct agentd_spawn_config *cfg, struct agentd_spawn_pending *p,
                       struct agentd_spawn_result *res);
int agentd_spawn_finish(struct agentd_spawn_pending *p, const void *report, size_t n,
                        struct agentd_spawn_result *res);

const char *agentd_stage_name(int stage);

/* ---- warm shells --------------------------------------------------------- */

/* A warm shell is a sandbox init cloned ahead of need: its namespaces,
 * cgroup, /proc, /dev and /sys (mounted on a staging tmpfs) and its file
 * descriptors are ready, and it waits, at SCHED_IDLE, for a claim.  A claim
 * gives it a session's root: it mounts the overlay, moves the staged mounts
 * into it, pivots, drops every privilege and execs init, like a cold start.
 * It exits when the claim socket closes (agentd released it, or died). */
struct agentd_warm {
    pid_t pid;
    int pidfd;
    int claim_fd;   /* agentd's end of the claim socket                      */
    int report_fd;  /* read end of the child's report pipe                   */
    void *stack;    /* the child runs on it (CLONE_VM) until it execs/exits  */
    void *shared;   /* memory shared with the child: the claim's config      */
};

/* Clone a warm shell: `cfg` gives the clone flags, cgroup placement,
 * network namespace, the staging plan (ops), new_root (the staging tmpfs,
 * which becomes the shell's root), pass_fds, exec_fd and seccomp_prog (a
 * profile attached before the shell waits: it must allow what the claim
 * does, whose own seccomp_prog completes it); its hostname, rlimits and
 * argv are ignored (the claim brings them).
 * Blocks until the shell is ready (0) or failed (-1, res filled in, nothing
 * left running). */
int agentd_warm_start(const struct agentd_spawn_config *cfg, struct agentd_warm *w,
                      struct agentd_spawn_result *res);

/* Claim a ready shell with `cfg` (ops: the session's root plan, in the
 * shell's staging root, whose host paths are gone; new_root, workdir, hostname, rlimits, seccomp_prog,
 * last_cap, nondumpable, argv, envp), in two halves so that the caller can
 * work while the shell sets up (cfg must stay valid until the second).
 * `pass_fd` >= 0 goes to the shell with the claim; plan steps name it
 * AGENTD_FD_CLAIMED (the session's root as a detached mount).
 * begin wakes the shell (-1: it had died; `w` is spent); finish learns that
 * init has exec'd: 0 with res->pid and res->pidfd, -1 with stage/err when
 * the shell failed, or when `abandon` is set (it is then killed and reaped).
 * It reads w->report_fd to its end itself (blocking) when `report` is NULL;
 * a caller that waits without blocking takes report_fd (setting it to -1),
 * reads it to its end and passes what it read (`n` 0: end-of-file at once).
 * Either way `w` is spent after finish. */
int agentd_warm_claim_begin(struct agentd_warm *w, const struct agentd_spawn_config *cfg, int pass_fd,
                            struct agentd_spawn_result *res);
int agentd_warm_claim_finish(struct agentd_warm *w, int abandon, const void *report, size_t n,
                             struct agentd_spawn_result *res);

/* Let an unclaimed shell go: it exits, is reaped, `w` is spent. */
void agentd_warm_release(struct agentd_warm *w);

/* ---- seccomp ------------------------------------------------------------ */

enum agentd_seccomp_cmp {
    AGENTD_CMP_NONE = 0,
    AGENTD_CMP_MASKED_EQ = 1,  /* (arg & mask) == value */
};

struct agentd_seccomp_rule {
    const char *syscall;       /* by name; names unknown on an arch are skipped   */
    int err;                   /* errno to return                                 */
    int cmp;                   /* enum agentd_seccomp_cmp                         */
    unsigned int arg;
    uint64_t mask;
    uint64_t value;
};

/* Compile a deny-list filter (default allow) with libseccomp for the native
 * architecture, and its compat ones (i386, x32) when `allow_compat` is set;
 * else calls through those ABIs fail with ENOSYS.  On success *out is
 * malloc'd BPF (struct sock_filter[]) of *out_len bytes; free with free(). */
int agentd_seccomp_compile(const struct agentd_seccomp_rule *rules, int n_rules, int allow_compat,
                           unsigned char **out, size_t *out_len, int *err_out);

/* ---- small helpers the parent needs ------------------------------------ */

/* Highest capability the running kernel knows (libcap). */
int agentd_last_cap(void);

/* A user namespace with the given maps, held by the returned fd (for
 * idmapped mounts).  -1 with errno on failure. */
int agentd_userns_create(const char *uid_map, const char *gid_map);

/* A detached, read-only clone of the tree at `path`, idmapped through
 * `userns_fd` when >= 0.  -1 with errno on failure. */
int agentd_detached_tree(const char *path, int userns_fd);

/* A detached overlay mount (fsopen/fsconfig/fsmount) of `lower` under
 * `upper`, work directory `work`: the fd of its root, to be attached with
 * move_mount.  -1 with errno. */
int agentd_overlay_detached(const char *lower, const char *upper, const char *work);

/* A network namespace with `lo` up, held by the returned fd. -1/errno. */
int agentd_netns_create(void);
/* A listening TCP socket (nonblocking, cloexec) bound to addr_be:port inside
 * the network namespace of the process behind pidfd; -1 and errno on error. */
int agentd_netns_listen(int pidfd, uint32_t addr_be, uint16_t port);

/* pidfd_open(2) / pidfd_send_signal(2); -1 with errno. */
int agentd_pidfd_open(pid_t pid);
int agentd_pidfd_signal(int pidfd, int sig);

/* openat2(2) with RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS: open `path` relative
 * to the directory `rootfd`, never escaping it: a `..`, an absolute path or an
 * absolute symlink that would leave it fails (EXDEV), as do /proc magic links
 * (ELOOP).  -1 with errno. */
int agentd_open_in_root(int rootfd, const char *path, int flags, unsigned int mode);

/* Send a message with file descriptors attached (SCM_RIGHTS). */
ssize_t agentd_send_fds(int sock, const void *buf, size_t len, const int *fds, int n_fds);

/* A sealed, executable in-memory copy of `len` bytes (for the init binary). */
int agentd_sealed_memfd(const char *name, const void *data, size_t len);

/* ---- GNU shims (shims.c) -------------------------------------------------- */

int agentd_pipe2_cloexec(int fds[2]);
int agentd_open_path(const char *path, int directory);
extern const int agentd_o_path;
/* st_mode of `path` (following symlinks), or -1 with errno. */
long long agentd_stat_mode(const char *path);
/* f_type of the file system holding `fd` (statfs), or -1 with errno. */
long long agentd_fs_magic(int fd);
/* setfsgid then setfsuid on this thread; the previous ids come back. */
void agentd_set_fs_ids(unsigned uid, unsigned gid, unsigned *old_uid, unsigned *old_gid);

#ifdef __cplusplus
}
#endif

#endif
