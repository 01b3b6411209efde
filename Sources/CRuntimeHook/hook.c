#include "CRuntimeHook.h"

#include <malloc.h>

extern void *swift_task_enqueueGlobal_hook;

void **agentd_swift_enqueue_global_hook(void)
{
    return &swift_task_enqueueGlobal_hook;
}

int agentd_fix_mmap_threshold(int bytes)
{
    return mallopt(M_MMAP_THRESHOLD, bytes);
}
