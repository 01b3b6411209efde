/*
 * seccomp.c — compile agentd's seccomp profile to BPF with libseccomp, once,
 * in the daemon.  The profile itself (which calls, which errno) is data that
 * Swift passes in; this file only translates it.  The sandbox child later
 * loads the resulting program with one seccomp(2) call.
 */
#define _GNU_SOURCE
#include "agentd_sandbox.h"

#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <sys/capability.h>
#include <sys/mman.h>
#include <unistd.h>

/* The compat architectures a 64-bit kernel also accepts (a filter that
 * forgot i386 or x32 would be bypassed through them): filtered by the same
 * rules when `allow_compat` is set. */
static int add_compat_arches(scmp_filter_ctx ctx)
{
#if defined(__x86_64__)
    int rc = seccomp_arch_add(ctx, SCMP_ARCH_X86);
    if (rc < 0 && rc != -EEXIST)
        return rc;
    rc = seccomp_arch_add(ctx, SCMP_ARCH_X32);
    if (rc < 0 && rc != -EEXIST)
        return rc;
#elif defined(__aarch64__)
    int rc = seccomp_arch_add(ctx, SCMP_ARCH_ARM);
    if (rc < 0 && rc != -EEXIST)
        return rc;
#endif
    return 0;
}

int agentd_seccomp_compile(const struct agentd_seccomp_rule *rules, int n_rules, int allow_compat,
                           unsigned char **out, size_t *out_len, int *err_out)
{
    *out = NULL;
    *out_len = 0;
    *err_out = 0;
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) {
        *err_out = ENOMEM;
        return -1;
    }
    /* Without the compat architectures, a call made through them (int 0x80,
     * x32 numbers) matches no architecture of the filter: it gets the
     * "bad architecture" action, which is ENOSYS here rather than libseccomp's
     * default kill, as if the kernel had no such ABI.  The filter is then a
     * third of the size and loads in a third of the time. */
    int rc = allow_compat ? add_compat_arches(ctx)
                          : seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS));
    /* The child sets no_new_privs itself; don't let libseccomp decide. */
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    /* A binary search over syscall numbers instead of a linear chain: fewer
     * instructions per call, and a much cheaper attach (the kernel emulates
     * the filter for every syscall number to build its allow cache). */
    if (rc == 0)
        rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
    for (int i = 0; rc == 0 && i < n_rules; i++) {
        const struct agentd_seccomp_rule *r = &rules[i];
        int nr = seccomp_syscall_resolve_name(r->syscall);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a call on this architecture */
        if (r->cmp == AGENTD_CMP_MASKED_EQ) {
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO((unsigned)r->err), nr, 1,
                                  SCMP_CMP(r->arg, SCMP_CMP_MASKED_EQ, r->mask, r->value));
        } else {
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO((unsigned)r->err), nr, 0);
        }
        /* A name that exists on one arch only is not an error. */
        if (rc == -EOPNOTSUPP || rc == -EDOM)
            rc = 0;
    }
    if (rc < 0) {
        *err_out = -rc;
        seccomp_release(ctx);
        return -1;
    }

    /* libseccomp 2.5 exports to an fd only: use a memfd and read it back. */
    int fd = memfd_create("agentd-seccomp", MFD_CLOEXEC);
    if (fd < 0) {
        *err_out = errno;
        seccomp_release(ctx);
        return -1;
    }
    rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (rc < 0) {
        *err_out = -rc;
        close(fd);
        return -1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || lseek(fd, 0, SEEK_SET) != 0) {
        *err_out = EIO;
        close(fd);
        return -1;
    }
    unsigned char *buf = malloc((size_t)size);
    if (!buf) {
        *err_out = ENOMEM;
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < (size_t)size) {
        ssize_t n = read(fd, buf + got, (size_t)size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err_out = n < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    *out = buf;
    *out_len = got;
    return 0;
}

int agentd_last_cap(void)
{
    /* libcap reads /proc/sys/kernel/cap_last_cap (or probes) for us. */
    return (int)cap_max_bits() - 1;
}
