#pragma once
// Glibc's Swift module does not export <sys/xattr.h>; the lockfs CLI talks to
// a running mount through extended attributes (docs/design.md, "The mount").
#include <sys/xattr.h>
