/*
 * agentd-probe — a static helper that the tests copy into a sandbox image
 * (like crun's test helpers).  It asks the kernel directly what a sandboxed
 * program may do, so the tests assert on errno values rather than on what a
 * shell tool happens to print.  Not installed with agentd.
 *
 *   agentd-probe syscalls        one line "name errno-name" per forbidden call
 *   agentd-probe compat          the same through the 32-bit ABIs (x86_64 only)
 *   agentd-probe memhog MIB      allocate and touch MIB MiB, 1 MiB at a time
 *   agentd-probe forkbomb N      fork up to N sleeping children; print how many
 *   agentd-probe status          the Cap*, NoNewPrivs, Seccomp and Seccomp_filters lines
 *   agentd-probe write PATH      create PATH; print "ok" or the errno name
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errname(int e)
{
    switch (e) {
    case 0: return "OK";
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case EROFS: return "EROFS";
    case EAGAIN: return "EAGAIN";
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    case ESRCH: return "ESRCH";
    case ENOMEM: return "ENOMEM";
    default: return "OTHER";
    }
}

static void report(const char *name, long rc)
{
    printf("%s %s\n", name, rc < 0 ? errname(errno) : "OK");
}

static int syscalls(void)
{
    report("mount", mount("none", "/tmp", "tmpfs", 0, NULL));
    report("umount2", umount2("/proc", MNT_DETACH));
    report("unshare", unshare(CLONE_NEWNS));
    report("unshare_user", unshare(CLONE_NEWUSER));
    int nsfd = open("/proc/self/ns/net", O_RDONLY);
    report("setns", setns(nsfd, 0));
    report("ptrace", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    report("add_key", syscall(SYS_add_key, "user", "x", "y", 1, -3));
    report("request_key", syscall(SYS_request_key, "user", "x", NULL, 0));
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    char params[128];
    memset(params, 0, sizeof params);
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, params));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, 0));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("swapon", syscall(SYS_swapon, "/tmp/none", 0));
    report("reboot", syscall(SYS_reboot, 0, 0, 0, NULL));
    report("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
    report("acct", syscall(SYS_acct, NULL));
    report("syslog", syscall(SYS_syslog, 3, NULL, 0));
    report("pivot_root", syscall(SYS_pivot_root, "/", "/"));
    report("chroot", chroot("/"));
    report("sethostname", sethostname("probe", 5));
    report("move_mount", syscall(SYS_move_mount, -1, "", AT_FDCWD, "/tmp", 4 /* F_EMPTY_PATH */));
    report("clone_newuser", syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    /* A plain fork must still work. */
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    report("fork", pid);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return 0;
}

/* Calls through the compat ABIs of an x86_64 kernel: i386 (`int 0x80`,
 * i386 numbers, 32-bit arguments) and x32 (x86_64 numbers with bit 30 set).
 * The kernel returns -errno in rax; nothing here touches errno. */
static void report_raw(const char *name, long rc)
{
    printf("%s %s\n", name, rc < 0 && rc > -4096 ? errname((int)-rc) : "OK");
}

#if defined(__x86_64__)
static long int80(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(nr), "b"(a), "c"(b), "d"(c)
                     : "memory", "r8", "r9", "r10", "r11");
    return ret;
}

static long x32call(long nr, long a)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr | 0x40000000L), "D"(a) : "memory", "rcx", "r11");
    return ret;
}
#endif

static int compat(void)
{
#if defined(__x86_64__)
    report_raw("i386_getpid", int80(20, 0, 0, 0));
    report_raw("i386_unshare", int80(310, CLONE_NEWNS, 0, 0));
    report_raw("i386_keyctl", int80(288, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    report_raw("i386_ptrace", int80(26, PTRACE_ATTACH, 1, 0));
    report_raw("x32_unshare", x32call(SYS_unshare, CLONE_NEWNS));
    return 0;
#else
    fprintf(stderr, "compat: x86_64 only\n");
    return 2;
#endif
}

static int memhog(long mib)
{
    for (long i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("malloc failed at %ld MiB\n", i);
            return 1;
        }
        memset(p, 1, 1 << 20);
        if (i % 16 == 0) {
            printf("%ld MiB\n", i);
            fflush(stdout);
        }
    }
    printf("done %ld MiB\n", mib);
    return 0;
}

static int forkbomb(long n)
{
    long made = 0;
    int first_err = 0;
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            pause();
            _exit(0);
        }
        if (pid < 0) {
            first_err = errno;
            break;
        }
        made++;
    }
    printf("forked %ld %s\n", made, errname(first_err));
    fflush(stdout);
    kill(0, SIGKILL);
    return 0;
}

static int status(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 1;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp", 7))
            fputs(line, stdout);
    fclose(f);
    return 0;
}

static int write_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        printf("%s\n", errname(errno));
        return 1;
    }
    if (write(fd, "probe\n", 6) != 6) {
        printf("%s\n", errname(errno));
        return 1;
    }
    close(fd);
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "syscalls"))
        return syscalls();
    if (argc >= 2 && !strcmp(argv[1], "compat"))
        return compat();
    if (argc >= 3 && !strcmp(argv[1], "memhog"))
        return memhog(atol(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "forkbomb"))
        return forkbomb(atol(argv[2]));
    if (argc >= 2 && !strcmp(argv[1], "status"))
        return status();
    if (argc >= 3 && !strcmp(argv[1], "write"))
        return write_path(argv[2]);
    fprintf(stderr, "usage: agentd-probe syscalls|compat|memhog MIB|forkbomb N|status|write PATH\n");
    return 2;
}
