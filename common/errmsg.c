/* errmsg: formats error messages into the caller's buffer (see errmsg.h). */
#include "errmsg.h"

#include <stdio.h>

void errmsg_vset(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (!err || errlen == 0)
        return;
    vsnprintf(err, errlen, fmt, ap);
}

void errmsg_set(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errmsg_vset(err, errlen, fmt, ap);
    va_end(ap);
}
