/*
 * shims.c — GNU/Linux calls and constants that Swift's Glibc module does not
 * expose (it is built without _GNU_SOURCE).  One line each.
 */
#define _GNU_SOURCE
#include "agentd_sandbox.h"

#include <fcntl.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

int agentd_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int agentd_open_path(const char *path, int directory)
{
    return open(path, O_PATH | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
}

const int agentd_o_path = O_PATH;

long long agentd_stat_mode(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_mode : -1;
}

long long agentd_fs_magic(int fd)
{
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (long long)fs.f_type : -1;
}

/* This thread's ids for file access (sys/fsuid.h); the previous ones out. */
void agentd_set_fs_ids(unsigned uid, unsigned gid, unsigned *old_uid, unsigned *old_gid)
{
    *old_gid = (unsigned)setfsgid(gid);
    *old_uid = (unsigned)setfsuid(uid);
}
