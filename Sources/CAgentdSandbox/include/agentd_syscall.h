/*
 * agentd_syscall.h — raw system calls for code that must not touch libc:
 * the clone child (which shares the daemon's memory, errno included) and
 * agentd-init (which has no libc at all, see init.c).  Each returns the
 * kernel's result or -errno.
 */
#ifndef AGENTD_SYSCALL_H
#define AGENTD_SYSCALL_H

static inline long sc(long n, long a, long b, long c, long d, long e, long f)
{
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
#else
#error "agentd supports x86_64 and aarch64"
#endif
}

#define SC0(n) sc((n), 0, 0, 0, 0, 0, 0)
#define SC1(n, a) sc((n), (long)(a), 0, 0, 0, 0, 0)
#define SC2(n, a, b) sc((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define SC3(n, a, b, c) sc((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SC4(n, a, b, c, d) sc((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SC5(n, a, b, c, d, e) sc((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

#endif
