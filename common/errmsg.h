/* errmsg: the error convention of this code, and its one helper.
 *
 * A function that can fail because of something outside the process (a
 * file, a flag, bytes from the network) returns 0 or -1 (a pointer: NULL)
 * and, when the caller passes a buffer (char *err, size_t errlen), writes
 * one line there saying what was wrong, where (the path, flag, address or
 * byte position) and, when it is not obvious, what to do about it. A NULL
 * or zero-length buffer is allowed: the message is then dropped. Programmer
 * mistakes (a NULL that may not be NULL) are asserts, not errors.
 *
 * The few deliberate variants, each stated in its header:
 *   - an object that lives long (metrics_t) keeps its last message, read
 *     with its *_errmsg() function, instead of taking a buffer each call;
 *   - thin wrappers of system calls (fs.h) return -1 with errno set, like
 *     the calls they wrap; the caller's message names the path;
 *   - wire_recv returns the protocol's Error code (> 0) for a refused
 *     message, so the server can send it back;
 *   - the flag parsers (args.h) and the programs' main functions are where
 *     messages end: they print "error: ..." on stderr themselves.
 * No failure is ignored: one that stops the work is an error; one that
 * does not (a metrics row not written) is printed as "warning: ...".
 * Programs exit 0 on success, 1 on failure, 2 on a bad command line. */
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
