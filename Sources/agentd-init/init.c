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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../CAgentdSandbox/include/agentd_init_protocol.h"

#define LISTEN_FD 3
#define FIRST_CONN_FD 4
#define MAX_EXECS 4096
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct exec_record {
    uint64_t id;
    pid_t pid;
    int status_fd;
};

static struct exec_record execs[MAX_EXECS];
static int n_execs;
static char message[AGENTD_INIT_MAX_MESSAGE];

static void write_status(int fd, int outcome, int code, int sig, int err, int stage)
{
    struct agentd_exec_status st = {AGENTD_INIT_MAGIC, outcome, code, sig, err, stage};
    ssize_t n;
    do {
        n = write(fd, &st, sizeof st);
    } while (n < 0 && errno == EINTR);
    close(fd);
}

/* Find argv0 on PATH taken from the command's own environment. */
static int resolve_command(const char *name, char *const *envp, char *out, size_t outlen)
{
    if (strchr(name, '/')) {
        if (strlen(name) >= outlen)
            return ENAMETOOLONG;
        strcpy(out, name);
        return access(out, X_OK) == 0 ? 0 : errno;
    }
    const char *path = DEFAULT_PATH;
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    int result = ENOENT;
    const char *p = path;
    while (*p) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len + 1 + strlen(name) + 1 <= outlen) {
            if (len == 0) {
                strcpy(out, name);
            } else {
                memcpy(out, p, len);
                out[len] = '/';
                strcpy(out + len + 1, name);
            }
            struct stat sb;
            if (stat(out, &sb) == 0 && S_ISREG(sb.st_mode)) {
                if (access(out, X_OK) == 0)
                    return 0;
                result = EACCES;
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    return result;
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static void handle_exec(const struct agentd_init_header *h, const char *payload, int *fds, int nfds)
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
    uint32_t need = 1 + h->argc + h->envc;
    if (h->argc == 0 || h->argc > 65536 || h->envc > 65536) {
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, EINVAL, 3);
        close_fds(fds, want - 1);
        return;
    }
    char **strings = calloc(need + 2, sizeof(char *));
    if (!strings) {
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, ENOMEM, 3);
        close_fds(fds, want - 1);
        return;
    }
    const char *p = payload, *end = payload + h->payload_len;
    uint32_t i = 0;
    while (i < need && p < end) {
        const char *nul = memchr(p, 0, (size_t)(end - p));
        if (!nul)
            break;
        strings[i++] = (char *)p;
        p = nul + 1;
    }
    if (i != need) {
        free(strings);
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, EINVAL, 3);
        close_fds(fds, want - 1);
        return;
    }
    const char *cwd = strings[0];
    char **argv = &strings[1];
    /* argv is followed by envp; terminate both lists. */
    char **envp = calloc(h->envc + 1, sizeof(char *));
    if (!envp) {
        free(strings);
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, ENOMEM, 3);
        close_fds(fds, want - 1);
        return;
    }
    for (uint32_t k = 0; k < h->envc; k++)
        envp[k] = strings[1 + h->argc + k];
    argv[h->argc] = NULL; /* overwrites envp[0]'s slot, already copied */

    struct stat sb;
    if (cwd[0]) {
        int e = 0;
        if (stat(cwd, &sb) != 0)
            e = errno;
        else if (!S_ISDIR(sb.st_mode))
            e = ENOTDIR;
        if (e) {
            write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, e, 1);
            goto done;
        }
    }

    char resolved[4096];
    int rc = resolve_command(argv[0], envp, resolved, sizeof resolved);
    if (rc != 0) {
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, rc, 2);
        goto done;
    }

    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&fa);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (in_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    if (cwd[0])
        posix_spawn_file_actions_addchdir_np(&fa, cwd);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);

    pid_t pid;
    rc = posix_spawn(&pid, resolved, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        write_status(status_fd, AGENTD_EXEC_FAILED, 0, 0, rc, 2);
        goto done;
    }
    execs[n_execs].id = h->id;
    execs[n_execs].pid = pid;
    execs[n_execs].status_fd = status_fd;
    n_execs++;

done:
    free(envp);
    free(strings);
    close_fds(fds, want - 1);
}

static void handle_signal(const struct agentd_init_header *h)
{
    for (int i = 0; i < n_execs; i++) {
        if (execs[i].id == h->id) {
            if (kill(-execs[i].pid, (int)h->flags) < 0)
                kill(execs[i].pid, (int)h->flags);
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
    ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0)
        return (errno == EINTR || errno == EAGAIN) ? 0 : -1;
    if (n == 0)
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
                    close(fd);
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
        pid_t pid = waitpid(-1, &status, WNOHANG);
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

int main(void)
{
    prctl(PR_SET_DUMPABLE, 0);
    signal(SIGPIPE, SIG_IGN);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sigfd < 0)
        return 111;

    int conn = FIRST_CONN_FD;
    int listening = fcntl(LISTEN_FD, F_GETFD) >= 0;
    if (fcntl(conn, F_GETFD) < 0)
        conn = -1;
    if (conn >= 0)
        fcntl(conn, F_SETFD, FD_CLOEXEC);
    if (listening)
        fcntl(LISTEN_FD, F_SETFD, FD_CLOEXEC);

    for (;;) {
        struct pollfd p[3];
        int np = 0;
        p[np++] = (struct pollfd){sigfd, POLLIN, 0};
        int conn_slot = -1, listen_slot = -1;
        if (conn >= 0) {
            conn_slot = np;
            p[np++] = (struct pollfd){conn, POLLIN, 0};
        }
        if (listening) {
            listen_slot = np;
            p[np++] = (struct pollfd){LISTEN_FD, POLLIN, 0};
        }
        if (poll(p, (nfds_t)np, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 112;
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            int stop = 0;
            while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si)
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                    stop = 1;
            if (stop) {
                kill(-1, SIGKILL);
                return 0;
            }
            reap();
        }
        if (conn_slot >= 0 && p[conn_slot].revents) {
            if ((p[conn_slot].revents & POLLIN) ? handle_request(conn) < 0 : 1) {
                close(conn);
                conn = -1;
            }
        }
        if (listen_slot >= 0 && (p[listen_slot].revents & POLLIN)) {
            int c = accept4(LISTEN_FD, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                if (conn >= 0)
                    close(conn);
                conn = c;
            }
        }
    }
}
