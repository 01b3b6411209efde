/*
 * agentd_init_protocol.h — the wire format between agentd and agentd-init,
 * the static PID 1 of every Linux sandbox.  Shared by both sides so the two
 * can never disagree about a layout.
 *
 * Transport: a SOCK_SEQPACKET unix socket, one request per message.
 *   - fd 3 of init: a listening socket bound under agentd's run directory
 *     (reachable from the host only), accepted again when agentd restarts;
 *   - fd 4 of init: the first connection (one end of a socketpair).
 *
 * EXEC  header + "cwd\0" + argv strings + env strings; SCM_RIGHTS carries
 *       [stdin, stdout, stderr, status] (stdin may be omitted: nfds == 3 + 1
 *       with AGENTD_EXEC_NO_STDIN).  Init spawns the command in a new session
 *       and, when it is gone, writes one agentd_exec_status to `status`.
 * SIGNAL  header with id = the exec to signal, flags = signal number; the
 *       signal goes to the command's whole process group.
 */
#ifndef AGENTD_INIT_PROTOCOL_H
#define AGENTD_INIT_PROTOCOL_H

#include <stdint.h>

#define AGENTD_INIT_MAGIC 0x61676e74u /* "agnt" */
#define AGENTD_INIT_MAX_MESSAGE (256 * 1024)

enum agentd_init_request {
    AGENTD_REQ_EXEC = 1,
    AGENTD_REQ_SIGNAL = 2,
};

#define AGENTD_EXEC_NO_STDIN 0x1u

struct agentd_init_header {
    uint32_t magic;
    uint32_t type;
    uint64_t id;
    uint32_t flags;
    uint32_t argc;
    uint32_t envc;
    uint32_t payload_len; /* bytes of strings following the header */
};

enum agentd_exec_outcome {
    AGENTD_EXEC_EXITED = 1,   /* code or signal is set        */
    AGENTD_EXEC_FAILED = 2,   /* err: the command never ran   */
};

struct agentd_exec_status {
    uint32_t magic;
    int32_t outcome;
    int32_t code;   /* exit code, when it exited          */
    int32_t signal; /* terminating signal, or 0           */
    int32_t err;    /* errno of a failed spawn            */
    int32_t stage;  /* 1 chdir, 2 exec, 3 other           */
};

#endif
