#pragma once
// libfuse 3.12+ API: fuse_session_loop_mt takes an opaque loop config and is a
// real function (not a macro Swift cannot import). Debian 12 ships 3.14.
// Do not define _FILE_OFFSET_BITS here: struct statvfs would then differ from
// Glibc's module (off_t is 64-bit on x86_64 and aarch64 already).
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
