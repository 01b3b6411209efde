/*
 * spawn.c — clone the sandbox's init into its namespaces and cgroup, set up
 * its root filesystem from a prepared plan, drop every privilege, exec.
 *
 * The child is created with clone3(CLONE_VM): it runs on its own stack in the
 * daemon's address space until execve() replaces it, which is why it
 *   - makes raw system calls only (no errno, no locks, no allocation),
 *   - reads nothing that the parent might change (the config is immutable
 *     until agentd_spawn_finish() has been called, which is after the exec),
 *   - reports failures as {stage, errno, step} over a close-on-exec pipe;
 *     end-of-file on that pipe means the exec succeeded.
 */
#define _GNU_SOURCE
#include "agentd_sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <linux/securebits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

#include "agentd_syscall.h"

extern long agentd_clone3_run(struct clone_args *args, size_t size, int (*fn)(void *), void *arg);

/* What the child sends back when a step fails. */
struct child_report {
    int stage;
    int err;
    int index;
};

struct child_ctx {
    const struct agentd_spawn_config *cfg;
    int report_fd;
    int sync_fd;
    int sync_write_fd; /* the parent's end: ours is closed so EOF can reach us */
    int claimed_fd;    /* a warm shell: the fd that came with its claim, or -1 */
};

/* Kernel layout of struct sigaction for rt_sigaction(2). */
struct k_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

static void child_fail(int fd, int stage, long rc, int index)
{
    struct child_report r = {stage, (int)-rc, index};
    SC3(SYS_write, fd, &r, sizeof r);
    SC1(SYS_exit_group, 127);
}

#define CHECK(call, stage, index)                                  \
    do {                                                           \
        long _rc = (call);                                         \
        if (_rc < 0)                                               \
            child_fail(ctx->report_fd, (stage), _rc, (index));     \
    } while (0)

/* Steps shared by a cold start and a warm shell's preparation: signals,
 * cgroup, user and network namespaces, private mounts. */
static void child_enter(struct child_ctx *ctx, const struct agentd_spawn_config *cfg)
{
    /* Signal handlers are the daemon's: make every disposition default so
     * no Swift handler can run here and nothing stays ignored after exec. */
    struct k_sigaction dfl = {0};
    for (int sig = 1; sig < 65; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            SC4(SYS_rt_sigaction, sig, &dfl, 0, 8);

    /* Threads of the daemon can carry a nice value (Swift task priorities
     * map to it): sandboxes start from a neutral one. */
    SC3(SYS_setpriority, PRIO_PROCESS, 0, 0);

    /* cgroup v1: move ourselves into each controller's cgroup first, so all
     * that follows is accounted there. */
    for (int i = 0; i < cfg->n_attach_fds; i++)
        CHECK(SC3(SYS_write, cfg->attach_fds[i], "0", 1), AGENTD_STAGE_CGROUP_ATTACH, i);
    if (cfg->unshare_cgroupns)
        CHECK(SC1(SYS_unshare, CLONE_NEWCGROUP), AGENTD_STAGE_CGROUPNS, 0);

    /* user namespace: wait until the parent has written our id maps. */
    if (ctx->sync_fd >= 0) {
        char c;
        SC1(SYS_close, ctx->sync_write_fd);
        long n = SC3(SYS_read, ctx->sync_fd, &c, 1);
        if (n != 1)
            child_fail(ctx->report_fd, AGENTD_STAGE_SYNC, n < 0 ? n : -EPIPE, 0);
        SC1(SYS_close, ctx->sync_fd);
        /* Become the namespace's root (host uid base): until now we were the
         * daemon's unmapped uid 0, which owns nothing in here. */
        CHECK(SC3(SYS_setresgid, 0, 0, 0), AGENTD_STAGE_USERNS_MAP, 1);
        CHECK(SC2(SYS_setgroups, 0, 0), AGENTD_STAGE_USERNS_MAP, 2);
        CHECK(SC3(SYS_setresuid, 0, 0, 0), AGENTD_STAGE_USERNS_MAP, 3);
    }

    if (cfg->netns_fd >= 0)
        CHECK(SC2(SYS_setns, cfg->netns_fd, CLONE_NEWNET), AGENTD_STAGE_NETNS, 0);

    /* Nothing we mount may propagate back to the host. */
    CHECK(SC5(SYS_mount, 0, "/", 0, MS_REC | MS_PRIVATE, 0), AGENTD_STAGE_MOUNT_PRIVATE, 0);

    if (cfg->loopback_up) {
        long s = SC3(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        CHECK(s, AGENTD_STAGE_LOOPBACK, 0);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        ifr.ifr_name[0] = 'l';
        ifr.ifr_name[1] = 'o';
        CHECK(SC3(SYS_ioctl, s, SIOCGIFFLAGS, &ifr), AGENTD_STAGE_LOOPBACK, 1);
        ifr.ifr_flags |= IFF_UP;
        CHECK(SC3(SYS_ioctl, s, SIOCSIFFLAGS, &ifr), AGENTD_STAGE_LOOPBACK, 2);
        SC1(SYS_close, s);
    }
}

/* Walk the mount plan. */
static void child_plan(struct child_ctx *ctx, const struct agentd_spawn_config *cfg)
{
    /* The plan sets modes exactly (device nodes are 0666). */
    SC1(SYS_umask, 0);
    for (int i = 0; i < cfg->n_ops; i++) {
        const struct agentd_op *op = &cfg->ops[i];
        long rc = 0;
        switch (op->kind) {
        case AGENTD_OP_MOUNT:
            rc = SC5(SYS_mount, op->source, op->target, op->fstype, op->flags, op->data);
            break;
        case AGENTD_OP_MKDIR:
            rc = SC3(SYS_mkdirat, AT_FDCWD, op->target, op->mode);
            if (rc == -EEXIST)
                rc = 0;
            break;
        case AGENTD_OP_MKNOD:
            rc = SC4(SYS_mknodat, AT_FDCWD, op->target, op->mode, op->dev);
            break;
        case AGENTD_OP_SYMLINK:
            rc = SC3(SYS_symlinkat, op->source, AT_FDCWD, op->target);
            if (rc == -EEXIST)
                rc = 0;
            break;
        case AGENTD_OP_MOVE_MOUNT: {
            int fd = op->fd == AGENTD_FD_CLAIMED ? ctx->claimed_fd : op->fd;
            rc = SC5(SYS_move_mount, fd, "", AT_FDCWD, op->target, MOVE_MOUNT_F_EMPTY_PATH);
            break;
        }
        default:
            rc = -EINVAL;
        }
        if (rc == -ENOENT && op->optional)
            continue;
        if (rc < 0)
            child_fail(ctx->report_fd, AGENTD_STAGE_PLAN, rc, i);
    }
    SC1(SYS_umask, 022);
}

/* The new root: hostname, pivot_root, working directory. */
static void child_pivot(struct child_ctx *ctx, const struct agentd_spawn_config *cfg)
{
    if (cfg->hostname)
        CHECK(SC2(SYS_sethostname, cfg->hostname, strlen(cfg->hostname)), AGENTD_STAGE_HOSTNAME, 0);

    CHECK(SC1(SYS_chdir, cfg->new_root), AGENTD_STAGE_PIVOT_ROOT, 0);
    if (cfg->move_root) {
        /* A claimed warm shell: its root is its staging tmpfs, the host's
         * tree having been dropped with a pivot_root before the claim, and
         * the staged mounts moved out of it into the new root.  Unmounting
         * it would cost an RCU grace period (~0.1 ms); instead the new root
         * is moved over it and made this process's root, as switch_root
         * does.  What lies beneath is four empty directories on a 16 KiB
         * tmpfs, unreachable without CAP_SYS_CHROOT, and not in mountinfo
         * (mounts outside a reader's root are not shown). */
        CHECK(SC5(SYS_mount, ".", "/", 0, MS_MOVE, 0), AGENTD_STAGE_PIVOT_ROOT, 3);
        CHECK(SC1(SYS_chroot, "."), AGENTD_STAGE_PIVOT_ROOT, 4);
    } else {
        /* pivot_root(".", ".") stacks the old root on top of the new one;
         * the lazy unmount then drops the whole old tree from this
         * namespace. */
        CHECK(SC2(SYS_pivot_root, ".", "."), AGENTD_STAGE_PIVOT_ROOT, 1);
        CHECK(SC2(SYS_umount2, ".", MNT_DETACH), AGENTD_STAGE_PIVOT_ROOT, 2);
    }
    CHECK(SC1(SYS_chdir, "/"), AGENTD_STAGE_CHDIR, 0);
    if (cfg->workdir)
        CHECK(SC1(SYS_chdir, cfg->workdir), AGENTD_STAGE_CHDIR, 1);
}

/* File descriptors: first lift every fd we keep above all targets, then
 * place them (stdio, pass_fds at 3.., the report pipe, the program, and
 * `extra_fd` when >= 0, the last three close-on-exec), then close the rest
 * of the daemon's table.  Returns the program's new fd (or -1); the extra
 * fd lands right after it. */
static int child_place_fds(struct child_ctx *ctx, const struct agentd_spawn_config *cfg, int extra_fd)
{
    int n = cfg->n_pass_fds;
    int base = 3 + n + 3;
    int highest = ctx->report_fd;
    for (int i = 0; i < 3; i++)
        if (cfg->stdio[i] > highest)
            highest = cfg->stdio[i];
    for (int i = 0; i < n; i++)
        if (cfg->pass_fds[i] > highest)
            highest = cfg->pass_fds[i];
    if (cfg->exec_fd > highest)
        highest = cfg->exec_fd;
    if (extra_fd > highest)
        highest = extra_fd;
    if (highest + 1 > base)
        base = highest + 1;

    int hi_stdio[3], hi_pass[64], hi_report, hi_exec = -1, hi_extra = -1;
    if (n > 64)
        child_fail(ctx->report_fd, AGENTD_STAGE_FDS, -EINVAL, 0);
    for (int i = 0; i < 3; i++) {
        hi_stdio[i] = -1;
        if (cfg->stdio[i] >= 0) {
            long fd = SC3(SYS_fcntl, cfg->stdio[i], F_DUPFD_CLOEXEC, base);
            CHECK(fd, AGENTD_STAGE_FDS, 1);
            hi_stdio[i] = (int)fd;
        }
    }
    for (int i = 0; i < n; i++) {
        long fd = SC3(SYS_fcntl, cfg->pass_fds[i], F_DUPFD_CLOEXEC, base);
        CHECK(fd, AGENTD_STAGE_FDS, 2);
        hi_pass[i] = (int)fd;
    }
    {
        long fd = SC3(SYS_fcntl, ctx->report_fd, F_DUPFD_CLOEXEC, base);
        CHECK(fd, AGENTD_STAGE_FDS, 3);
        hi_report = (int)fd;
        ctx->report_fd = hi_report;
    }
    if (cfg->exec_fd >= 0) {
        long fd = SC3(SYS_fcntl, cfg->exec_fd, F_DUPFD_CLOEXEC, base);
        CHECK(fd, AGENTD_STAGE_FDS, 4);
        hi_exec = (int)fd;
    }
    if (extra_fd >= 0) {
        long fd = SC3(SYS_fcntl, extra_fd, F_DUPFD_CLOEXEC, base);
        CHECK(fd, AGENTD_STAGE_FDS, 12);
        hi_extra = (int)fd;
    }
    for (int i = 0; i < 3; i++) {
        if (hi_stdio[i] >= 0) {
            CHECK(SC3(SYS_dup3, hi_stdio[i], i, 0), AGENTD_STAGE_FDS, 5);
        } else {
            long fd = SC4(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC, 0);
            CHECK(fd, AGENTD_STAGE_FDS, 6);
            CHECK(SC3(SYS_dup3, fd, i, 0), AGENTD_STAGE_FDS, 7);
        }
    }
    for (int i = 0; i < n; i++)
        CHECK(SC3(SYS_dup3, hi_pass[i], 3 + i, 0), AGENTD_STAGE_FDS, 8);
    CHECK(SC3(SYS_dup3, hi_report, 3 + n, O_CLOEXEC), AGENTD_STAGE_FDS, 9);
    ctx->report_fd = 3 + n;
    int exec_fd = -1;
    if (hi_exec >= 0) {
        CHECK(SC3(SYS_dup3, hi_exec, 4 + n, O_CLOEXEC), AGENTD_STAGE_FDS, 10);
        exec_fd = 4 + n;
    }
    if (hi_extra >= 0)
        CHECK(SC3(SYS_dup3, hi_extra, 5 + n, O_CLOEXEC), AGENTD_STAGE_FDS, 13);
    CHECK(SC3(SYS_close_range, hi_extra >= 0 ? 6 + n : 5 + n, ~0U, 0), AGENTD_STAGE_FDS, 11);
    return exec_fd;
}

/* Lock root out of capability gains and empty the bounding and ambient
 * sets: what the program exec'd will be limited to.  The capabilities this
 * process holds now are untouched (mounts still need them). */
static void child_drop_bounding(struct child_ctx *ctx, const struct agentd_spawn_config *cfg)
{
    CHECK(SC2(SYS_prctl, PR_SET_SECUREBITS,
              SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                  SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED),
          AGENTD_STAGE_CAPS, 0);
    for (int cap = 0; cap <= cfg->last_cap; cap++)
        CHECK(SC2(SYS_prctl, PR_CAPBSET_DROP, cap), AGENTD_STAGE_CAPS, 1);
    CHECK(SC5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), AGENTD_STAGE_CAPS, 2);
}

/* The last steps: limits, a new session, no privileges, seccomp, exec.
 * `bounded`: child_drop_bounding() already ran (a warm shell's). */
static void child_exec(struct child_ctx *ctx, const struct agentd_spawn_config *cfg, int exec_fd, int bounded)
{
    for (int i = 0; i < cfg->n_rlimits; i++) {
        struct rlimit64 {
            unsigned long long cur, max;
        } lim = {cfg->rlimits[i].soft, cfg->rlimits[i].hard};
        CHECK(SC4(SYS_prlimit64, 0, cfg->rlimits[i].resource, &lim, 0), AGENTD_STAGE_RLIMIT, i);
    }

    /* A new session: no controlling terminal to inject input into (TIOCSTI).
     * (A warm shell already made one while it waited.) */
    long sid = SC0(SYS_setsid);
    if (sid < 0 && sid != -EPERM)
        child_fail(ctx->report_fd, AGENTD_STAGE_SETSID, sid, 0);

    /* Privileges: the bounding and ambient sets, then every remaining set. */
    if (!bounded)
        child_drop_bounding(ctx, cfg);
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    CHECK(SC2(SYS_capset, &hdr, data), AGENTD_STAGE_CAPS, 3);
    if (cfg->nondumpable)
        CHECK(SC2(SYS_prctl, PR_SET_DUMPABLE, 0), AGENTD_STAGE_CAPS, 4);
    CHECK(SC5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), AGENTD_STAGE_NO_NEW_PRIVS, 0);

    if (cfg->seccomp_prog)
        CHECK(SC3(SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, cfg->seccomp_prog),
              AGENTD_STAGE_SECCOMP, 0);

    unsigned long empty = 0;
    SC4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, 0, 8);

    long rc;
    if (exec_fd >= 0)
        rc = sc(SYS_execveat, exec_fd, (long)"", (long)cfg->argv, (long)cfg->envp, AT_EMPTY_PATH, 0);
    else
        rc = SC3(SYS_execve, cfg->exec_path, cfg->argv, cfg->envp);
    child_fail(ctx->report_fd, AGENTD_STAGE_EXEC, rc, 0);
}

static int child_main(void *arg)
{
    struct child_ctx *ctx = arg;
    const struct agentd_spawn_config *cfg = ctx->cfg;
    child_enter(ctx, cfg);
    child_plan(ctx, cfg);
    child_pivot(ctx, cfg);
    /* After the pivot: stdio left unset opens the new root's /dev/null. */
    int exec_fd = child_place_fds(ctx, cfg, -1);
    child_exec(ctx, cfg, exec_fd, 0);
    return 127;
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    int saved = errno;
    close(fd);
    if (n != (ssize_t)len) {
        errno = n < 0 ? saved : EIO;
        return -1;
    }
    return 0;
}

static int write_maps(pid_t pid, const char *uid_map, const char *gid_map)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
    if (write_file(path, uid_map) < 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
    return write_file(path, gid_map);
}

#define CHILD_STACK (256 * 1024)

/* The child's stack: mapped before the clone, with a guard page below. */
static void *stack_alloc(void)
{
    void *p = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    mprotect(p, 4096, PROT_NONE);
    return p;
}

static long clone_child(struct clone_args *args, void *stack, int (*fn)(void *), void *arg)
{
    args->stack = (uint64_t)(uintptr_t)stack;
    args->stack_size = CHILD_STACK;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long pid = agentd_clone3_run(args, sizeof *args, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pid;
}

/* What a cold child runs on and reads until it execs: its context and
 * stack, in memory that outlives agentd_spawn_begin's frame. */
struct cold_child {
    struct child_ctx ctx;
    void *stack;
};

/* SIGKILL a child that has not exec'd (through its pidfd when there is
 * one), reap it, and close the pidfd. */
static void kill_and_reap(pid_t pid, int *pidfd)
{
    if (*pidfd >= 0)
        syscall(SYS_pidfd_send_signal, *pidfd, SIGKILL, NULL, 0);
    int status;
    while (waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
    }
    if (*pidfd >= 0)
        close(*pidfd);
    *pidfd = -1;
}

/* Kill and reap a child (if it is still there) and free what it used. */
static void cold_release(struct agentd_spawn_pending *p, int kill_child)
{
    struct cold_child *cc = p->priv;
    if (kill_child)
        kill_and_reap(p->pid, &p->pidfd);
    munmap(cc->stack, CHILD_STACK);
    free(cc);
    p->priv = NULL;
}

int agentd_spawn_begin(const struct agentd_spawn_config *cfg, struct agentd_spawn_pending *p,
                       struct agentd_spawn_result *res)
{
    memset(res, 0, sizeof *res);
    res->pid = -1;
    res->pidfd = -1;
    p->pid = -1;
    p->pidfd = -1;
    p->report_fd = -1;
    p->priv = NULL;

    int report[2], sync[2] = {-1, -1};
    int userns = (cfg->clone_flags & CLONE_NEWUSER) != 0;
    struct cold_child *cc = calloc(1, sizeof *cc);
    if (!cc) {
        res->stage = AGENTD_STAGE_CLONE;
        res->err = ENOMEM;
        return -1;
    }
    if (pipe2(report, O_CLOEXEC) < 0) {
        res->stage = AGENTD_STAGE_CLONE;
        res->err = errno;
        free(cc);
        return -1;
    }
    if (userns && pipe2(sync, O_CLOEXEC) < 0) {
        res->stage = AGENTD_STAGE_CLONE;
        res->err = errno;
        close(report[0]);
        close(report[1]);
        free(cc);
        return -1;
    }
    cc->stack = stack_alloc();
    if (!cc->stack) {
        res->stage = AGENTD_STAGE_CLONE;
        res->err = errno;
        close(report[0]);
        close(report[1]);
        if (userns) {
            close(sync[0]);
            close(sync[1]);
        }
        free(cc);
        return -1;
    }

    cc->ctx = (struct child_ctx){cfg, report[1], sync[0], sync[1], -1};
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_PIDFD | cfg->clone_flags;
    if (cfg->cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cfg->cgroup_fd;
    }
    args.pidfd = (uint64_t)(uintptr_t)&p->pidfd;
    args.exit_signal = SIGCHLD;

    long pid = clone_child(&args, cc->stack, child_main, &cc->ctx);
    close(report[1]);
    if (userns)
        close(sync[0]);
    if (pid < 0) {
        res->stage = AGENTD_STAGE_CLONE;
        res->err = (int)-pid;
        close(report[0]);
        if (userns)
            close(sync[1]);
        munmap(cc->stack, CHILD_STACK);
        free(cc);
        return -1;
    }
    p->pid = (pid_t)pid;
    p->priv = cc;

    if (userns) {
        int failed = 0;
        if (write_maps((pid_t)pid, cfg->uid_map, cfg->gid_map) < 0) {
            res->stage = AGENTD_STAGE_USERNS_MAP;
            res->err = errno;
            failed = 1;
            /* closing sync without writing makes the child exit */
        } else if (write(sync[1], "x", 1) != 1) {
            res->stage = AGENTD_STAGE_SYNC;
            res->err = errno;
            failed = 1;
        }
        close(sync[1]);
        if (failed) {
            close(report[0]);
            cold_release(p, 1);
            return -1;
        }
    }
    p->report_fd = report[0];
    res->pid = p->pid;
    res->pidfd = p->pidfd;
    return 0;
}

int agentd_spawn_finish(struct agentd_spawn_pending *p, const void *report, size_t n,
                        struct agentd_spawn_result *res)
{
    memset(res, 0, sizeof *res);
    res->pid = -1;
    res->pidfd = -1;
    if (!p->priv) {
        res->stage = AGENTD_STAGE_CLONE;
        res->err = EINVAL;
        return -1;
    }
    if (!report) {
        res->stage = AGENTD_STAGE_EXEC;
        res->err = ECANCELED;
        cold_release(p, 1);
        return -1;
    }
    if (n == 0) {
        /* End-of-file with nothing said: the child has exec'd (the pipe
         * is close-on-exec) and no longer runs on our stack. */
        cold_release(p, 0);
        res->pid = p->pid;
        res->pidfd = p->pidfd;
        return 0;
    }
    struct child_report rep;
    if (n == sizeof rep) {
        memcpy(&rep, report, sizeof rep);
        res->stage = rep.stage;
        res->err = rep.err;
        res->err_index = rep.index;
    } else {
        res->stage = AGENTD_STAGE_EXEC;
        res->err = EPROTO;
    }
    cold_release(p, 1);
    return -1;
}

const char *agentd_stage_name(int stage)
{
    switch (stage) {
    case AGENTD_STAGE_CLONE: return "clone3";
    case AGENTD_STAGE_CGROUP_ATTACH: return "cgroup attach";
    case AGENTD_STAGE_CGROUPNS: return "cgroup namespace";
    case AGENTD_STAGE_SYNC: return "user namespace sync";
    case AGENTD_STAGE_USERNS_MAP: return "user namespace id maps";
    case AGENTD_STAGE_NETNS: return "network namespace";
    case AGENTD_STAGE_MOUNT_PRIVATE: return "make mounts private";
    case AGENTD_STAGE_PLAN: return "mount plan";
    case AGENTD_STAGE_LOOPBACK: return "loopback up";
    case AGENTD_STAGE_HOSTNAME: return "sethostname";
    case AGENTD_STAGE_PIVOT_ROOT: return "pivot_root";
    case AGENTD_STAGE_CHDIR: return "chdir";
    case AGENTD_STAGE_RLIMIT: return "setrlimit";
    case AGENTD_STAGE_FDS: return "file descriptors";
    case AGENTD_STAGE_SETSID: return "setsid";
    case AGENTD_STAGE_CAPS: return "drop capabilities";
    case AGENTD_STAGE_NO_NEW_PRIVS: return "no_new_privs";
    case AGENTD_STAGE_SECCOMP: return "seccomp";
    case AGENTD_STAGE_EXEC: return "exec";
    case AGENTD_STAGE_WARM: return "warm shell";
    default: return "unknown";
    }
}

/* ---- warm shells ------------------------------------------------------------ */

/* Memory shared by agentd and one warm shell (the child runs CLONE_VM in our
 * address space): malloc'd, freed once the shell has exec'd or exited. */
struct warm_shared {
    struct child_ctx ctx;
    int claim_fd; /* the child's end of the claim socket, before placement */
    /* The claim's config: stored (release) before the claim byte is sent,
     * loaded (acquire) after it was received. */
    const struct agentd_spawn_config *claim;
};

static int warm_main(void *arg)
{
    struct warm_shared *sh = arg;
    struct child_ctx *ctx = &sh->ctx;
    const struct agentd_spawn_config *cfg = ctx->cfg;
    int param = 0; /* struct sched_param: one int */

    /* Preparing and waiting is background work: it only takes a CPU that
     * nothing else wants. */
    SC3(SYS_sched_setscheduler, 0, SCHED_IDLE, &param);
    child_enter(ctx, cfg);
    child_plan(ctx, cfg);
    /* Into the staging tmpfs (new_root): the host's mount tree is dropped
     * now rather than on the claim's pivot, which then only drops this
     * tmpfs, and the stdio opened below is the staged /dev/null. */
    child_pivot(ctx, cfg);
    int exec_fd = child_place_fds(ctx, cfg, sh->claim_fd);
    int claim = 5 + cfg->n_pass_fds;
    SC0(SYS_setsid);
    child_drop_bounding(ctx, cfg);
    /* The profile minus the calls the claim still makes (the claim's
     * config brings a seal of those): attaching the whole profile is the
     * costliest step after the mounts, and it is done here, ahead of need.
     * Only this code runs until the claim. */
    CHECK(SC5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), AGENTD_STAGE_NO_NEW_PRIVS, 0);
    if (cfg->seccomp_prog)
        CHECK(SC3(SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, cfg->seccomp_prog), AGENTD_STAGE_SECCOMP, 0);

    struct child_report ready = {AGENTD_STAGE_NONE, 0, 0};
    SC3(SYS_write, ctx->report_fd, &ready, sizeof ready);
    /* The claim: one byte, and maybe the session's root as a detached
     * mount (SCM_RIGHTS). */
    char c;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {&c, 1};
    struct msghdr msg;
    long got;
    do {
        memset(&msg, 0, sizeof msg);
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = u.buf;
        msg.msg_controllen = sizeof u.buf;
        got = SC3(SYS_recvmsg, claim, &msg, MSG_CMSG_CLOEXEC);
    } while (got == -EINTR);
    if (got != 1) /* released, or agentd is gone */
        SC1(SYS_exit_group, 0);
    SC1(SYS_close, claim);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
        cm->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(&ctx->claimed_fd, CMSG_DATA(cm), sizeof(int));

    /* Claimed: from here on this is a cold start's second half. */
    const struct agentd_spawn_config *cl = __atomic_load_n(&sh->claim, __ATOMIC_ACQUIRE);
    SC3(SYS_sched_setscheduler, 0, SCHED_OTHER, &param);
    child_plan(ctx, cl);
    if (ctx->claimed_fd >= 0)
        SC1(SYS_close, ctx->claimed_fd);
    child_pivot(ctx, cl);
    /* stdio was the staging /dev/null: the new root's now. */
    long null = SC4(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC, 0);
    CHECK(null, AGENTD_STAGE_FDS, 6);
    for (int i = 0; i < 3; i++)
        CHECK(SC3(SYS_dup3, null, i, 0), AGENTD_STAGE_FDS, 7);
    SC1(SYS_close, null);
    child_exec(ctx, cl, exec_fd, 1);
    return 127;
}

static void warm_spend(struct agentd_warm *w, int kill)
{
    if (w->claim_fd >= 0)
        close(w->claim_fd);
    if (w->report_fd >= 0)
        close(w->report_fd);
    if (kill && w->pid > 0)
        kill_and_reap(w->pid, &w->pidfd);
    /* Only now that the child has exec'd or is reaped: it ran on these. */
    if (w->stack)
        munmap(w->stack, CHILD_STACK);
    free(w->shared);
    w->pid = -1;
    w->pidfd = w->claim_fd = w->report_fd = -1;
    w->stack = w->shared = NULL;
}

int agentd_warm_start(const struct agentd_spawn_config *cfg, struct agentd_warm *w,
                      struct agentd_spawn_result *res)
{
    memset(res, 0, sizeof *res);
    res->pid = -1;
    res->pidfd = -1;
    memset(w, 0, sizeof *w);
    w->pid = -1;
    w->pidfd = w->claim_fd = w->report_fd = -1;
    res->stage = AGENTD_STAGE_CLONE;
    if (cfg->clone_flags & CLONE_NEWUSER) { /* user namespace mode starts cold */
        res->err = EINVAL;
        return -1;
    }
    int report[2] = {-1, -1}, claim[2] = {-1, -1};
    struct warm_shared *sh = calloc(1, sizeof *sh);
    void *stack = NULL;
    if (!sh || pipe2(report, O_CLOEXEC) < 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, claim) < 0 || !(stack = stack_alloc())) {
        res->err = errno;
        for (int i = 0; i < 2; i++) {
            if (report[i] >= 0)
                close(report[i]);
            if (claim[i] >= 0)
                close(claim[i]);
        }
        free(sh);
        return -1;
    }
    sh->ctx.cfg = cfg;
    sh->ctx.report_fd = report[1];
    sh->ctx.sync_fd = -1;
    sh->ctx.sync_write_fd = -1;
    sh->ctx.claimed_fd = -1;
    sh->claim_fd = claim[1];

    int pidfd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_PIDFD | cfg->clone_flags;
    if (cfg->cgroup_fd >= 0) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = (uint64_t)cfg->cgroup_fd;
    }
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;
    long pid = clone_child(&args, stack, warm_main, sh);
    close(report[1]);
    close(claim[1]);
    w->claim_fd = claim[0];
    w->report_fd = report[0];
    w->stack = stack;
    w->shared = sh;
    if (pid < 0) {
        res->err = (int)-pid;
        warm_spend(w, 0);
        return -1;
    }
    w->pid = (pid_t)pid;
    w->pidfd = pidfd;

    struct child_report rep;
    ssize_t got;
    do {
        got = read(report[0], &rep, sizeof rep);
    } while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof rep && rep.stage == AGENTD_STAGE_NONE)
        return 0;
    if (got == (ssize_t)sizeof rep) {
        res->stage = rep.stage;
        res->err = rep.err;
        res->err_index = rep.index;
    } else {
        res->stage = AGENTD_STAGE_WARM;
        res->err = got < 0 ? errno : EPROTO;
    }
    warm_spend(w, 1);
    return -1;
}

int agentd_warm_claim_begin(struct agentd_warm *w, const struct agentd_spawn_config *cfg, int pass_fd,
                            struct agentd_spawn_result *res)
{
    memset(res, 0, sizeof *res);
    res->pid = -1;
    res->pidfd = -1;
    struct warm_shared *sh = w->shared;
    if (!sh || w->pid <= 0) {
        res->stage = AGENTD_STAGE_WARM;
        res->err = EINVAL;
        return -1;
    }
    __atomic_store_n(&sh->claim, cfg, __ATOMIC_RELEASE);
    /* Back to the normal policy before it is woken: at SCHED_IDLE it would
     * wait for a CPU nothing else wants (the child sets it again itself, in
     * case this fails). */
    struct sched_param normal = {0};
    sched_setscheduler(w->pid, SCHED_OTHER, &normal);
    ssize_t n = agentd_send_fds(w->claim_fd, "c", 1, &pass_fd, pass_fd >= 0 ? 1 : 0);
    if (n != 1) {
        res->stage = AGENTD_STAGE_WARM; /* EPIPE: the shell had died */
        res->err = n < 0 ? errno : EIO;
        warm_spend(w, 1);
        return -1;
    }
    return 0;
}

int agentd_warm_claim_finish(struct agentd_warm *w, int abandon, const void *report, size_t n,
                             struct agentd_spawn_result *res)
{
    memset(res, 0, sizeof *res);
    res->pid = -1;
    res->pidfd = -1;
    if (!w->shared || w->pid <= 0) {
        res->stage = AGENTD_STAGE_WARM;
        res->err = EINVAL;
        return -1;
    }
    int failed = 0;
    struct child_report rep;
    ssize_t got;
    if (report) {
        got = n > sizeof rep ? -1 : (ssize_t)n;
        if (n == sizeof rep)
            memcpy(&rep, report, sizeof rep);
        errno = EPROTO;
    } else {
        do {
            got = read(w->report_fd, &rep, sizeof rep);
        } while (got < 0 && errno == EINTR);
    }
    if (got == (ssize_t)sizeof rep) {
        res->stage = rep.stage;
        res->err = rep.err;
        res->err_index = rep.index;
        failed = 1;
    } else if (got != 0) {
        res->stage = AGENTD_STAGE_WARM;
        res->err = got < 0 ? errno : EPROTO;
        failed = 1;
    } else {
        /* End of file: exec'd, or died (killed while it waited). */
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (syscall(SYS_waitid, 3 /* P_PIDFD */, w->pidfd, &si, WEXITED | WNOHANG | WNOWAIT, NULL) == 0 &&
            si.si_pid != 0) {
            res->stage = AGENTD_STAGE_WARM;
            res->err = ECHILD;
            failed = 1;
        }
    }
    if (failed || abandon) {
        if (!failed) {
            res->stage = AGENTD_STAGE_WARM;
            res->err = ECANCELED;
        }
        warm_spend(w, 1);
        return -1;
    }
    res->pid = w->pid;
    res->pidfd = w->pidfd;
    w->pidfd = -1; /* the caller's now */
    warm_spend(w, 0);
    return 0;
}

void agentd_warm_release(struct agentd_warm *w)
{
    warm_spend(w, 1);
}

/* ---- helper namespaces ---------------------------------------------------- */

struct holder_ctx {
    int sync_fd;
    int sync_write_fd;
    int report_fd;
    int out_fd; /* netns: the child opens its namespace into the shared table */
};

/* User namespace holder: waits until the parent has written maps and opened
 * /proc/PID/ns/user, then exits; the fd keeps the namespace. */
static int userns_holder(void *arg)
{
    struct holder_ctx *h = arg;
    char c;
    SC1(SYS_close, h->sync_write_fd);
    SC3(SYS_read, h->sync_fd, &c, 1);
    return 0;
}

int agentd_userns_create(const char *uid_map, const char *gid_map)
{
    int sync[2];
    if (pipe2(sync, O_CLOEXEC) < 0)
        return -1;
    void *stack = stack_alloc();
    if (!stack) {
        close(sync[0]);
        close(sync[1]);
        return -1;
    }
    struct holder_ctx h = {sync[0], sync[1], -1, -1};
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    long pid = clone_child(&args, stack, userns_holder, &h);
    if (pid < 0) {
        errno = (int)-pid;
        close(sync[0]);
        close(sync[1]);
        munmap(stack, CHILD_STACK);
        return -1;
    }
    int fd = -1, saved = 0;
    if (write_maps((pid_t)pid, uid_map, gid_map) == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    saved = errno;
    close(sync[1]);
    int status;
    while (waitpid((pid_t)pid, &status, __WALL) < 0 && errno == EINTR) {
    }
    close(sync[0]);
    munmap(stack, CHILD_STACK);
    errno = saved;
    return fd;
}

/* Run fn(arg) in a CLONE_VM|CLONE_VFORK|CLONE_FILES child (plus `extra`
 * flags) on its own stack and wait for it: the child shares memory and the
 * fd table, so what it opens is ours.  Returns its wait status, or -1 with
 * errno when it could not be started. */
static int run_shared_child(unsigned long extra, int (*fn)(void *), void *arg)
{
    void *stack = stack_alloc();
    if (!stack)
        return -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_VFORK | CLONE_FILES | extra;
    args.exit_signal = SIGCHLD;
    long pid = clone_child(&args, stack, fn, arg);
    if (pid < 0) {
        munmap(stack, CHILD_STACK);
        errno = (int)-pid;
        return -1;
    }
    int status = 0;
    while (waitpid((pid_t)pid, &status, __WALL) < 0 && errno == EINTR) {
    }
    munmap(stack, CHILD_STACK);
    return status;
}

/* Network namespace holder (CLONE_FILES|CLONE_VFORK): makes the namespace
 * (unshare, so that the kernel's work runs at the holder's priority), brings
 * lo up, opens the namespace into the shared fd table and exits. */
static int netns_holder(void *arg)
{
    struct holder_ctx *h = arg;
    /* Pool refills are background work: at SCHED_IDLE the namespace's
     * creation (~0.5 ms of kernel time) only takes a CPU nothing else wants,
     * instead of competing with the sandboxes being started. */
    int priority = 0; /* struct sched_param: one int */
    SC3(SYS_sched_setscheduler, 0, SCHED_IDLE, &priority);
    if (SC1(SYS_unshare, CLONE_NEWNET) < 0)
        return 5;
    long s = SC3(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return 1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_name[0] = 'l';
    ifr.ifr_name[1] = 'o';
    if (SC3(SYS_ioctl, s, SIOCGIFFLAGS, &ifr) < 0)
        return 2;
    ifr.ifr_flags |= IFF_UP;
    if (SC3(SYS_ioctl, s, SIOCSIFFLAGS, &ifr) < 0)
        return 3;
    SC1(SYS_close, s);
    long fd = SC4(SYS_openat, AT_FDCWD, "/proc/self/ns/net", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 4;
    h->out_fd = (int)fd;
    return 0;
}

int agentd_netns_create(void)
{
    struct holder_ctx h = {-1, -1, -1, -1};
    int status = run_shared_child(0, netns_holder, &h);
    if (status < 0)
        return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || h.out_fd < 0) {
        if (h.out_fd >= 0)
            close(h.out_fd);
        errno = EIO;
        return -1;
    }
    return h.out_fd;
}

/* A TCP listener inside a sandbox's network namespace.  A CLONE_VM|
 * CLONE_VFORK|CLONE_FILES child joins the namespace (setns on the init's
 * pidfd), creates the socket there, and leaves it in the shared fd table:
 * agentd's own threads never change namespace, and the socket stays bound
 * to the sandbox's loopback for as long as agentd holds it. */
struct listen_ctx {
    int pidfd;
    uint32_t addr; /* network byte order */
    uint16_t port; /* host byte order */
    int out_fd;
    int err;
};

static int netns_listener(void *arg)
{
    struct listen_ctx *c = arg;
    long r = SC2(SYS_setns, c->pidfd, CLONE_NEWNET);
    if (r < 0) {
        c->err = (int)-r;
        return 1;
    }
    long s = SC3(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
        c->err = (int)-s;
        return 2;
    }
    int one = 1;
    SC5(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = (uint16_t)((c->port >> 8) | (c->port << 8));
    sa.sin_addr.s_addr = c->addr;
    r = SC3(SYS_bind, s, &sa, sizeof sa);
    if (r == 0)
        r = SC2(SYS_listen, s, 128);
    if (r < 0) {
        c->err = (int)-r;
        SC1(SYS_close, s);
        return 3;
    }
    c->out_fd = (int)s;
    return 0;
}

int agentd_netns_listen(int pidfd, uint32_t addr_be, uint16_t port)
{
    struct listen_ctx c = {pidfd, addr_be, port, -1, 0};
    if (run_shared_child(0, netns_listener, &c) < 0)
        return -1;
    if (c.out_fd < 0) {
        errno = c.err ? c.err : EIO;
        return -1;
    }
    return c.out_fd;
}

/* ---- small wrappers ---------------------------------------------------------- */

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif

struct agentd_mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};

int agentd_detached_tree(const char *path, int userns_fd)
{
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path,
                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0)
        return -1;
    struct agentd_mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if (userns_fd >= 0) {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = (uint64_t)userns_fd;
    }
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

#ifndef FSCONFIG_SET_STRING
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#endif
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#define FSMOUNT_CLOEXEC 0x00000001
#endif

int agentd_overlay_detached(const char *lower, const char *upper, const char *work)
{
    int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return -1;
    int mnt = -1;
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir", lower, 0) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", work, 0) == 0 &&
        syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
        mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0);
    int saved = errno;
    close(fs);
    errno = saved;
    return mnt;
}

int agentd_pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int agentd_pidfd_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

#ifndef RESOLVE_NO_MAGICLINKS
#define RESOLVE_NO_XDEV 0x01
#define RESOLVE_NO_MAGICLINKS 0x02
#define RESOLVE_NO_SYMLINKS 0x04
#define RESOLVE_BENEATH 0x08
#define RESOLVE_IN_ROOT 0x10
#endif

struct agentd_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

int agentd_open_in_root(int rootfd, const char *path, int flags, unsigned int mode)
{
    struct agentd_open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    if (flags & (O_CREAT | O_TMPFILE))
        how.mode = mode;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    long fd;
    do {
        fd = syscall(SYS_openat2, rootfd, path, &how, sizeof how);
    } while (fd < 0 && errno == EAGAIN);
    return (int)fd;
}

ssize_t agentd_send_fds(int sock, const void *buf, size_t len, const int *fds, int n_fds)
{
    struct iovec iov = {(void *)buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 16)];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (n_fds > 16) {
        errno = EINVAL;
        return -1;
    }
    if (n_fds > 0) {
        memset(&u, 0, sizeof u);
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n_fds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n_fds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n_fds);
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

int agentd_sealed_memfd(const char *name, const void *data, size_t len)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL)
        fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}
