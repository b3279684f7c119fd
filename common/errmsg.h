/* errmsg: the error convention of this code, and its one helper.
 *
 * A function that can fail because of something outside the process (a
 * file, a flag, bytes from the network) returns 0 or -1 (a pointer: NULL)
 * and, when the caller passes a buffer (char *err, size_t errlen), writes
 * one line there saying what was wrong, where (the path, flag, address or
 * byte position) and, when it is not obvious, what to do about it. A NULL
 * or zero-length buffer is allowed: the message is then dropped. Programmer
 * mistakes (a NULL that may not be NULL) are asserts, not errors. */
#ifndef ERRMSG_H
#define ERRMSG_H

#include <stdarg.h>
#include <stddef.h>

/* printf into the caller's error buffer; does nothing when err is NULL or
 * errlen is 0. */
void errmsg_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void errmsg_vset(char *err, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
