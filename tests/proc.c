/* proc: running paramserver and worker as processes under test (see proc.h). */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <zmq.h>

#include "clock.h"

#define POLL_US 20000 /* polling a child's exit or its log: no event to wait on */

proc_env_t proc_env;

int proc_group_setup(void **state)
{
    (void)state;
    proc_env_t *env = &proc_env;
    memset(env, 0, sizeof *env);
    env->data = getenv("MNIST_DIR") && *getenv("MNIST_DIR") ? getenv("MNIST_DIR") : "data";
    const char *b = getenv("BUILD") && *getenv("BUILD") ? getenv("BUILD") : "build";
    snprintf(env->server, sizeof env->server, "%s/paramserver", b);
    snprintf(env->worker, sizeof env->worker, "%s/worker", b);
    snprintf(env->tmp, sizeof env->tmp, "/tmp/%s.XXXXXX", program_invocation_short_name);
    if (!mkdtemp(env->tmp)) {
        perror("proc_group_setup: cannot make a directory in /tmp");
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int proc_group_teardown(void **state)
{
    (void)state;
    if (!getenv("KEEP_TMP")) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", proc_env.tmp);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", proc_env.tmp);
    }
    return 0;
}

double proc_time_scale(void)
{
    const char *v = getenv("TEST_TIME_SCALE");
    double x = v ? atof(v) : 1.0;
    return x >= 1.0 && x <= 100.0 ? x : 1.0;
}

pid_t proc_spawn(const char *log, const char *const *argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int proc_wait(pid_t pid, double seconds)
{
    int code;
    proc_wait_all(&pid, 1, &code, seconds);
    return code;
}

int proc_wait_all(const pid_t *pids, int n, int *codes, double seconds)
{
    double end = clock_now() + seconds;
    int left = n;
    for (int i = 0; i < n; i++)
        codes[i] = -2;
    while (left > 0 && clock_now() < end) {
        for (int i = 0; i < n; i++) {
            if (codes[i] != -2)
                continue;
            int st;
            if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
                codes[i] = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
                left--;
            }
        }
        if (left > 0)
            usleep(POLL_US);
    }
    for (int i = 0; i < n; i++)
        if (codes[i] == -2) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            codes[i] = -1;
        }
    return left == 0 ? 0 : -1;
}

/* The endpoint of the first "listening on" line after byte `from`. */
static int s_find_endpoint(const char *log, long from, const char *marker, char *ep, size_t eplen)
{
    FILE *f = fopen(log, "r");
    char line[512];
    int found = 0;
    if (f && fseek(f, from, SEEK_SET) == 0)
        while (!found && fgets(line, sizeof line, f)) {
            char *p = strstr(line, marker);
            if (p) {
                p += strlen(marker);
                snprintf(ep, eplen, "%.*s", (int)strcspn(p, " \t\r\n"), p);
                found = 1;
            }
        }
    if (f)
        fclose(f);
    return found;
}

int proc_endpoint(pid_t pid, const char *log, long from, char *ep, size_t eplen, double seconds)
{
    double end = clock_now() + seconds;
    while (clock_now() < end) {
        if (s_find_endpoint(log, from, "listening on ", ep, eplen))
            return 0;
        siginfo_t info = {.si_pid = 0};
        if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid == pid) {
            ep[0] = '\0';
            return 1;
        }
        usleep(POLL_US);
    }
    return -1;
}

int proc_reach_endpoint(const char *log, char *ep, size_t eplen, double seconds)
{
    double end = clock_now() + seconds;
    do {
        if (s_find_endpoint(log, 0, "workers reach it at ", ep, eplen))
            return 0;
        usleep(POLL_US);
    } while (clock_now() < end);
    return -1;
}

void proc_cat(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    if (!f)
        return;
    fprintf(stderr, "---- %s\n", path);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

int proc_contains(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    if (f)
        fclose(f);
    return found;
}

double proc_query(const char *db, const char *sql)
{
    sqlite3 *h;
    double v = NAN;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(h);
        return v;
    }
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(h, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_double(st, 0);
    else if (rc != SQLITE_DONE)
        fprintf(stderr, "query failed on %s: %s: %s\n", db, sql, sqlite3_errmsg(h));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

void *proc_dealer(void *ctx, const char *ep)
{
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    assert_non_null(sock);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_connect(sock, ep), 0);
    return sock;
}
