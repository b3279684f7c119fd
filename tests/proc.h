/* proc: what the process-level tests (test_distributed, test_hostile) share
 * to run paramserver and worker as real processes: the test's temporary
 * directory and program paths, starting a program with its output in a log,
 * waiting for it with a deadline (killing it past it), reading the endpoint
 * the server logs, and reading what it left behind (its log, its database).
 * Also the raw DEALER socket the tests use to play a worker themselves.
 * Every wait here has a deadline. Failures of the test's own set-up are
 * cmocka failures; the process's results are return values to assert on. */
#ifndef PROC_H
#define PROC_H

#include <stddef.h>
#include <sys/types.h>

/* The environment of one test program, filled by proc_group_setup. */
typedef struct {
    char tmp[256];                 /* /tmp/PROGRAM.XXXXXX, removed by teardown */
    const char *data;              /* $MNIST_DIR, default data */
    char server[256], worker[256]; /* $BUILD/paramserver, $BUILD/worker (default build) */
} proc_env_t;

extern proc_env_t proc_env;

/* cmocka group set-up: fills proc_env (reads $MNIST_DIR and $BUILD, makes
 * the temporary directory, named after the program) and ignores SIGPIPE (a
 * test may write to a server that has gone). 0, or -1 with a message. */
int proc_group_setup(void **state);
/* cmocka group teardown: removes the temporary directory, unless $KEEP_TMP
 * is set (to look at the logs of a failed run). Always 0: a directory left
 * behind is reported. */
int proc_group_teardown(void **state);

/* TEST_TIME_SCALE (default 1, at most 100): how much to stretch deadlines
 * for slow builds (`make asan` sets 4: sanitized code trains several times
 * slower). */
double proc_time_scale(void);

/* Starts argv (argv[0] a path, NULL-terminated) with its stdout and stderr
 * appended to `log` (created when missing; a restarted server appends to
 * the log of its first start). Returns the pid. */
pid_t proc_spawn(const char *log, const char *const *argv);

/* Waits for pid until `seconds` have passed, then kills it (SIGKILL). Its exit
 * status, or -1 when it was killed or died of a signal. */
int proc_wait(pid_t pid, double seconds);

/* Waits for all n pids until `seconds` have passed, then kills those left.
 * Exit statuses into codes[] (-1 for killed or signalled). 0 when all ended
 * in time, -1 when the deadline passed. */
int proc_wait_all(const pid_t *pids, int n, int *codes, double seconds);

/* Waits up to `seconds` for the server `pid` to log "listening on EP" after
 * byte `from` of its log, and copies EP to ep. 0 when found; 1 when the server
 * exited first (it is not reaped: proc_wait still gets its status); -1 when
 * the deadline passed. */
int proc_endpoint(pid_t pid, const char *log, long from, char *ep, size_t eplen, double seconds);

/* Waits up to `seconds` (at least one look) for a shard's or standby's log
 * to say where "workers reach it at EP", and copies the first such EP to
 * ep. 0 when found, else -1. */
int proc_reach_endpoint(const char *log, char *ep, size_t eplen, double seconds);

/* Copies a file (a log) to stderr under a "---- PATH" line, so that a failed
 * test shows what the program said; nothing when it cannot be read. */
void proc_cat(const char *path);

/* Does a line of the file contain `text`? 0 also when it cannot be read. */
int proc_contains(const char *path, const char *text);

/* The first column of the first row of a query on the SQLite database at db,
 * opened read-only; NAN when there is no such row, the database cannot be
 * opened (yet) or the query fails (then with a message on stderr). */
double proc_query(const char *db, const char *sql);

/* A DEALER socket in the ZeroMQ context ctx, connected to ep, that drops
 * unsent messages on close: a test client playing a worker. The caller
 * closes it. */
void *proc_dealer(void *ctx, const char *ep);

#endif
