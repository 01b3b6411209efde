/*
 * agentd-init — PID 1 of every Linux sandbox.  A small static program:
 *
 *   - reaps every process of the sandbox (orphans are re-parented to it);
 *   - starts commands on agentd's behalf (see agentd_init_protocol.h), each
 *     in a new session so that a timeout can kill its whole process group,
 *     and reports how each one ended on a per-command status pipe;
 *   - outlives agentd: when the control connection drops it keeps running
 *     and accepts the next agentd on its listening socket (re-adoption).
 *
 * It is exec'd by agentd's clone child after namespaces, mounts, seccomp and
 * capability drop are in place, so it holds no privilege the sandboxed
 * commands lack.  It marks itself non-dumpable so they cannot read its fds
 * through /proc/1.
 *
 * Why no libc: it is exec'd once per sandbox start, on the critical path, and
 * a static glibc spends hundreds of microseconds initialising itself (CPU
 * feature probing traps to the hypervisor on virtual machines).  Everything
 * here is a raw system call (agentd_syscall.h); it is built -nostdlib.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "../CAgentdSandbox/include/agentd_init_protocol.h"
#include "../CAgentdSandbox/include/agentd_syscall.h"

#define LISTEN_FD 3
#define FIRST_CONN_FD 4
#define MAX_EXECS 4096
#define MAX_STRINGS (AGENTD_INIT_MAX_MESSAGE / 2 + 2)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* ---- the few libc pieces the compiler may call --------------------------- */

void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

static size_t str_len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int starts_with(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

/* ---- state ------------------------------------------------------------- */

struct exec_record {
    uint64_t id;
    int pid;
    int status_fd;
};

static struct exec_record execs[MAX_EXECS];
static int n_execs;
static char message[AGENTD_INIT_MAX_MESSAGE];
static char *strings[MAX_STRINGS];

/* Kernel layout for rt_sigaction(2). */
struct k_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

static void close_fd(int fd)
{
    if (fd >= 0)
        SC1(SYS_close, fd);
}

static void close_fds(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close_fd(fds[i]);
}

static void write_status(int fd, int outcome, int code, int sig, int err, int stage)
{
    struct agentd_exec_status st = {AGENTD_INIT_MAGIC, outcome, code, sig, err, stage};
    long n;
    do {
        n = SC3(SYS_write, fd, &st, sizeof st);
    } while (n == -EINTR);
    close_fd(fd);
}

/* ---- starting a command -------------------------------------------------- */

struct child_error {
    int stage; /* 1 chdir, 2 exec */
    int err;
};

/* What the child of a command start shares with init (CLONE_VM): its
 * arguments, and how it failed if it did.  Init is suspended from the
 * clone until the child has exec'd or exited (CLONE_VFORK), so one of each
 * is enough. */
static struct {
    int in_fd, out_fd, err_fd;
    const char *cwd;
    char **argv, **envp;
    volatile struct child_error failed; /* stage 0: the exec succeeded */
} start;

/* The child's own stack: it runs in init's memory while init waits. */
static unsigned char child_stack[64 * 1024] __attribute__((aligned(16)));

/* clone(flags) with the child on `stack_top`, calling fn(arg) there and
 * exiting with 127 if fn returns; the parent gets the child's pid or
 * -errno.  Hand-written because the child must not touch the parent's
 * stack frames, which a plain clone(CLONE_VM) child returning through C
 * code would. */
long init_clone_on_stack(unsigned long flags, void *stack_top, void (*fn)(void *), void *arg);
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl init_clone_on_stack\n"
        "init_clone_on_stack:\n"
        "  and $-16, %rsi\n"
        "  sub $16, %rsi\n"
        "  mov %rdx, 0(%rsi)\n"   /* fn and arg at the top of the new stack */
        "  mov %rcx, 8(%rsi)\n"
        "  mov $56, %eax\n"       /* SYS_clone(flags, newsp, 0, 0, 0) */
        "  xor %edx, %edx\n"
        "  xor %r10d, %r10d\n"
        "  xor %r8d, %r8d\n"
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jnz 1f\n"
        "  pop %rax\n"             /* the child, on the new stack */
        "  pop %rdi\n"
        "  xor %ebp, %ebp\n"
        "  call *%rax\n"
        "  mov $127, %edi\n"
        "  mov $231, %eax\n"       /* exit_group */
        "  syscall\n"
        "  hlt\n"
        "1: ret\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl init_clone_on_stack\n"
        "init_clone_on_stack:\n"
        "  and x1, x1, #-16\n"
        "  stp x2, x3, [x1, #-16]!\n" /* fn and arg at the top of the new stack */
        "  mov x2, #0\n"
        "  mov x3, #0\n"
        "  mov x4, #0\n"
        "  mov x8, #220\n"             /* SYS_clone(flags, newsp, 0, 0, 0) */
        "  svc #0\n"
        "  cbnz x0, 1f\n"
        "  ldp x2, x0, [sp], #16\n"    /* the child, on the new stack */
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  blr x2\n"
        "  mov x0, #127\n"
        "  mov x8, #94\n"              /* exit_group */
        "  svc #0\n"
        "1: ret\n");
#endif

/* In the child (init's memory, its own stack): never returns. */
static void run_child(void *unused)
{
    (void)unused;
    int in_fd = start.in_fd, out_fd = start.out_fd, err_fd = start.err_fd;
    const char *cwd = start.cwd;
    char **argv = start.argv, **envp = start.envp;
    unsigned long empty = 0;
    struct k_sigaction dfl = {0};
    SC4(SYS_rt_sigaction, SIGPIPE, &dfl, 0, 8);
    SC4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, 0, 8);
    SC0(SYS_setsid);
    if (in_fd < 0)
        in_fd = (int)SC4(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY, 0);
    SC3(SYS_dup3, in_fd, 0, 0);
    SC3(SYS_dup3, out_fd, 1, 0);
    SC3(SYS_dup3, err_fd, 2, 0);
    struct child_error ce = {0, 0};
    long rc = cwd[0] ? SC1(SYS_chdir, cwd) : 0;
    if (rc < 0) {
        ce.stage = 1;
        ce.err = (int)-rc;
    } else {
        /* Everything else closes on exec. */
        SC3(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
        const char *name = argv[0];
        int has_slash = 0;
        for (const char *p = name; *p; p++)
            if (*p == '/')
                has_slash = 1;
        ce.stage = 2;
        if (has_slash) {
            ce.err = (int)-SC3(SYS_execve, name, argv, envp);
        } else {
            /* execvp semantics, with PATH from the command's environment. */
            const char *path = DEFAULT_PATH;
            for (char **e = envp; *e; e++)
                if (starts_with(*e, "PATH="))
                    path = *e + 5;
            size_t nlen = str_len(name);
            int seen_eacces = 0;
            ce.err = ENOENT;
            char buf[4096];
            const char *p = path;
            for (;;) {
                const char *end = p;
                while (*end && *end != ':')
                    end++;
                size_t dlen = (size_t)(end - p);
                if (dlen + 1 + nlen + 1 <= sizeof buf) {
                    size_t k = 0;
                    for (size_t i = 0; i < dlen; i++)
                        buf[k++] = p[i];
                    if (dlen > 0)
                        buf[k++] = '/';
                    for (size_t i = 0; i < nlen; i++)
                        buf[k++] = name[i];
                    buf[k] = 0;
                    long r = SC3(SYS_execve, buf, argv, envp);
                    if (r == -EACCES)
                        seen_eacces = 1;
                    else if (r != -ENOENT && r != -ENOTDIR)
                        ce.err = (int)-r;
                }
                if (!*end)
                    break;
                p = end + 1;
            }
            if (ce.err == ENOENT && seen_eacces)
                ce.err = EACCES;
        }
    }
    start.failed.err = ce.err;
    start.failed.stage = ce.stage;
    SC1(SYS_exit_group, 127);
    for (;;) {
    }
}

static void handle_exec(const struct agentd_init_header *h, char *payload, int *fds, int nfds)
{
    int has_stdin = !(h->flags & AGENTD_EXEC_NO_STDIN);
    int want = has_stdin ? 4 : 3;
    if (nfds != want || n_execs >= MAX_EXECS) {
        /* Without a status fd there is nobody to tell. */
        if (nfds >= 1)
            write_status(fds[nfds - 1], AGENTD_EXEC_FAILED, 0, 0, nfds != want ? EPROTO : EAGAIN, 3);
        close_fds(fds, nfds - 1);
        return;
    }
    int in_fd = has_stdin ? fds[0] : -1;
    int out_fd = fds[has_stdin ? 1 : 0];
    int err_fd = fds[has_stdin ? 2 : 1];
    int status_fd = fds[want - 1];

    /* Split the payload: cwd, argv..., envp... (all NUL-terminated). */
    uint64_t need = 1 + (uint64_t)h->argc + h->envc;
    if (h->argc == 0 || need + 2 > MAX_STRINGS) {
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, EINVAL, 3);
        close_fds(fds, want - 1);
        return;
    }
    char *p = payload, *end = payload + h->payload_len;
    uint64_t i = 0;
    while (i < need && p < end) {
        strings[i++] = p;
        while (p < end && *p)
            p++;
        if (p == end)
            break;
        p++;
    }
    if (i != need || p > end || (p == end && end[-1] != 0)) {
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, EINVAL, 3);
        close_fds(fds, want - 1);
        return;
    }
    /* Layout: [cwd][argv...][NULL][envp...][NULL] — shift envp up by one. */
    for (uint64_t k = need; k > 1 + h->argc; k--)
        strings[k] = strings[k - 1];
    strings[1 + h->argc] = 0;
    strings[need + 1] = 0;
    const char *cwd = strings[0];
    char **argv = &strings[1];
    char **envp = &strings[2 + h->argc];

    /* Like vfork: no copy of init's memory, and init resumes once the
     * child has exec'd (or failed and exited), which is when it would
     * otherwise learn that from a close-on-exec pipe. */
    start.in_fd = in_fd;
    start.out_fd = out_fd;
    start.err_fd = err_fd;
    start.cwd = cwd;
    start.argv = argv;
    start.envp = envp;
    start.failed.stage = 0;
    start.failed.err = 0;
    long pid = init_clone_on_stack(CLONE_VM | CLONE_VFORK | SIGCHLD, child_stack + sizeof child_stack, run_child, 0);
    close_fds(fds, want - 1);
    if (pid < 0) {
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, (int)-pid, 3);
        return;
    }
    if (start.failed.stage != 0) {
        int st;
        SC4(SYS_wait4, pid, &st, 0, 0);
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, start.failed.err, start.failed.stage);
        return;
    }
    execs[n_execs].id = h->id;
    execs[n_execs].pid = (int)pid;
    execs[n_execs].status_fd = status_fd;
    n_execs++;
}

static void handle_signal(const struct agentd_init_header *h)
{
    for (int i = 0; i < n_execs; i++) {
        if (execs[i].id == h->id) {
            if (SC2(SYS_kill, -execs[i].pid, (int)h->flags) < 0)
                SC2(SYS_kill, execs[i].pid, (int)h->flags);
            return;
        }
    }
}

/* Read one request; returns 0 to keep the connection, -1 to drop it. */
static int handle_request(int conn)
{
    struct iovec iov = {message, sizeof message};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    long n = SC3(SYS_recvmsg, conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n == -EINTR || n == -EAGAIN)
        return 0;
    if (n <= 0)
        return -1;

    int fds[8], nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                if (nfds < 8)
                    fds[nfds++] = fd;
                else
                    close_fd(fd);
            }
        }
    }

    struct agentd_init_header h;
    if ((size_t)n < sizeof h || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        close_fds(fds, nfds);
        return 0;
    }
    memcpy(&h, message, sizeof h);
    if (h.magic != AGENTD_INIT_MAGIC || h.payload_len != (size_t)n - sizeof h) {
        close_fds(fds, nfds);
        return 0;
    }
    switch (h.type) {
    case AGENTD_REQ_EXEC:
        handle_exec(&h, message + sizeof h, fds, nfds);
        break;
    case AGENTD_REQ_SIGNAL:
        close_fds(fds, nfds);
        handle_signal(&h);
        break;
    default:
        close_fds(fds, nfds);
    }
    return 0;
}

static void reap(void)
{
    for (;;) {
        int status;
        long pid = SC4(SYS_wait4, -1, &status, WNOHANG, 0);
        if (pid <= 0)
            return;
        for (int i = 0; i < n_execs; i++) {
            if (execs[i].pid != pid)
                continue;
            if (WIFEXITED(status))
                write_status(execs[i].status_fd, AGENTD_EXEC_EXITED, WEXITSTATUS(status), 0, 0, 0);
            else
                write_status(execs[i].status_fd, AGENTD_EXEC_EXITED, 0, WTERMSIG(status), 0, 0);
            execs[i] = execs[--n_execs];
            break;
        }
    }
}

static int fd_valid(int fd)
{
    return SC2(SYS_fcntl, fd, F_GETFD) >= 0;
}

int init_main(void)
{
    SC2(SYS_prctl, PR_SET_DUMPABLE, 0);
    /* exec from a memfd names us "memfd:agentd-init"; ps should say agentd-init. */
    SC2(SYS_prctl, PR_SET_NAME, "agentd-init");
    struct k_sigaction ign = {SIG_IGN, 0, 0, 0};
    SC4(SYS_rt_sigaction, SIGPIPE, &ign, 0, 8);

    unsigned long mask = (1UL << (SIGCHLD - 1)) | (1UL << (SIGTERM - 1)) | (1UL << (SIGINT - 1));
    SC4(SYS_rt_sigprocmask, SIG_BLOCK, &mask, 0, 8);
    long sigfd = SC4(SYS_signalfd4, -1, &mask, 8, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0)
        return 111;

    int conn = fd_valid(FIRST_CONN_FD) ? FIRST_CONN_FD : -1;
    int listening = fd_valid(LISTEN_FD);
    if (conn >= 0)
        SC3(SYS_fcntl, conn, F_SETFD, FD_CLOEXEC);
    if (listening)
        SC3(SYS_fcntl, LISTEN_FD, F_SETFD, FD_CLOEXEC);

    for (;;) {
        struct pollfd p[3];
        int np = 0;
        p[np++] = (struct pollfd){(int)sigfd, POLLIN, 0};
        int conn_slot = -1, listen_slot = -1;
        if (conn >= 0) {
            conn_slot = np;
            p[np++] = (struct pollfd){conn, POLLIN, 0};
        }
        if (listening) {
            listen_slot = np;
            p[np++] = (struct pollfd){LISTEN_FD, POLLIN, 0};
        }
        long rc = SC5(SYS_ppoll, p, np, 0, 0, 8);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return 112;
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            int stop = 0;
            while (SC3(SYS_read, sigfd, &si, sizeof si) == (long)sizeof si)
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                    stop = 1;
            if (stop) {
                SC2(SYS_kill, -1, SIGKILL);
                return 0;
            }
            reap();
        }
        if (conn_slot >= 0 && p[conn_slot].revents) {
            if ((p[conn_slot].revents & POLLIN) ? handle_request(conn) < 0 : 1) {
                close_fd(conn);
                conn = -1;
            }
        }
        if (listen_slot >= 0 && (p[listen_slot].revents & POLLIN)) {
            long c = SC4(SYS_accept4, LISTEN_FD, 0, 0, SOCK_CLOEXEC);
            if (c >= 0) {
                close_fd(conn);
                conn = (int)c;
            }
        }
    }
}

/* The entry point: no libc to set anything up, so call init_main and exit. */
#if defined(__x86_64__)
__asm__(".globl _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  and $-16, %rsp\n"
        "  call init_main\n"
        "  mov %eax, %edi\n"
        "  mov $231, %eax\n"
        "  syscall\n"
        "  hlt\n");
#elif defined(__aarch64__)
__asm__(".globl _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  bl init_main\n"
        "  mov x8, #94\n"
        "  svc #0\n");
#endif
