/* log: what the server writes about itself: log lines stamped with the
 * run's time, refusal lines rate-limited, and every metrics write checked
 * and counted (see state.h). */
#include <stdarg.h>
#include <stdio.h>

#include "clock.h"
#include "group.h"
#include "state.h"

double srv_elapsed(const server_t *s)
{
    return s->started ? clock_now() - s->t0 : 0.0;
}

void srv_log(const server_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("[%7.2f] ", srv_elapsed(s));
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

void srv_log_refused(server_t *s, const char *fmt, ...)
{
    double now = clock_now();
    if (now - s->refusal_window >= SRV_REFUSAL_WINDOW) {
        if (s->refusals_hidden > 0)
            srv_log(s, "(%ld more refused messages in the last %.0f s were not logged)",
                    s->refusals_hidden, now - s->refusal_window);
        s->refusal_window = now;
        s->refusals_logged = s->refusals_hidden = 0;
    }
    if (s->refusals_logged >= SRV_REFUSALS_PER_WINDOW) {
        s->refusals_hidden++;
        return;
    }
    s->refusals_logged++;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    srv_log(s, "%s", line);
}

int srv_db(server_t *s, int rc)
{
    if (rc == 0)
        return 0;
    s->db_failures++;
    if (s->db_failures <= 5 || s->db_failures % 500 == 0)
        srv_log(s, "warning: a write to the metrics database failed (%ld so far): %s",
                s->db_failures, metrics_errmsg(s->db));
    return rc;
}

void srv_write_stats(server_t *s)
{
    srv_db(s, metrics_server_stats(s->db, s->run, srv_elapsed(s), s->updates, (int64_t)s->version,
                                   s->updates ? s->stale_sum / (double)s->updates : 0.0,
                                   s->stale_max));
    group_write_stats(s);
}
