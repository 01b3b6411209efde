#ifndef AGENTD_CRUNTIMEHOOK_H
#define AGENTD_CRUNTIMEHOOK_H

/* The address of the Swift runtime's global-enqueue hook
 * (swift_task_enqueueGlobal_hook, in libswift_Concurrency).  SwiftNIO finds it
 * with dlsym, which works with the runtime as a shared library but not when it
 * is linked statically (as agentd ships): there the symbol is hidden from the
 * dynamic symbol table.  The static linker still resolves a reference to it,
 * which is all this does.  Swift cannot name a C variable of another library. */
void **agentd_swift_enqueue_global_hook(void);

/* Fixes glibc's mmap threshold (mallopt(M_MMAP_THRESHOLD), from malloc.h,
 * which Swift's Glibc module does not import): blocks of `bytes` and more get
 * their own mapping and return to the kernel when freed.  glibc otherwise
 * raises the threshold after the first large free, after which large request
 * bodies land in per-thread arenas that keep the memory.  Returns mallopt's
 * result (1 on success). */
int agentd_fix_mmap_threshold(int bytes);

#endif
