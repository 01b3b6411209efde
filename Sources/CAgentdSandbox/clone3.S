/*
 * agentd_clone3_run(struct clone_args *args, size_t size, int (*fn)(void *), void *arg)
 *
 * Why assembly: clone3() with CLONE_VM starts the child on a new stack, and a
 * C function cannot survive returning twice on two stacks.  glibc's clone()
 * does the same dance but only for the legacy clone(2), which cannot place
 * the child into a cgroup (CLONE_INTO_CGROUP).  In the child this calls
 * fn(arg) and exits with its result; in the parent it returns the pid or
 * -errno, like the raw system call.
 */
#if defined(__x86_64__)
    .text
    .globl agentd_clone3_run
    .type agentd_clone3_run, @function
agentd_clone3_run:
    /* rdi = args, rsi = size, rdx = fn, rcx = arg.  syscall clobbers rcx and
       r11 only, so keep fn/arg in r8/r9, which the child inherits. */
    mov %rdx, %r8
    mov %rcx, %r9
    mov $435, %eax          /* __NR_clone3 */
    syscall
    test %rax, %rax
    jnz 1f
    /* child: rsp = args->stack + args->stack_size (16-byte aligned) */
    xor %ebp, %ebp
    mov %r9, %rdi
    call *%r8
    mov %eax, %edi
    mov $231, %eax          /* __NR_exit_group */
    syscall
    hlt
1:
    ret
    .size agentd_clone3_run, .-agentd_clone3_run
    .section .note.GNU-stack,"",@progbits

#elif defined(__aarch64__)
    .text
    .globl agentd_clone3_run
    .type agentd_clone3_run, %function
agentd_clone3_run:
    /* x0 = args, x1 = size, x2 = fn, x3 = arg; svc preserves x1-x7. */
    mov x8, #435            /* __NR_clone3 */
    svc #0
    cbnz x0, 1f
    mov x29, #0
    mov x30, #0
    mov x0, x3
    blr x2
    mov x8, #94             /* __NR_exit_group */
    svc #0
    brk #0
1:
    ret
    .size agentd_clone3_run, .-agentd_clone3_run
    .section .note.GNU-stack,"",%progbits
#else
#error "agentd supports x86_64 and aarch64"
#endif
