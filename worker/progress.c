/* progress: the progress bar and the periodic loss lines; see progress.h. */
#include "progress.h"

#include <unistd.h>

#include "clock.h"

void progress_init(progress_t *p, int epochs, int batches, const char *who)
{
    *p = (progress_t){.tty = isatty(STDERR_FILENO),
                      .epochs = epochs,
                      .batches = batches,
                      .every = 100,
                      .who = who};
}

void progress_epoch_start(progress_t *p)
{
    p->started = clock_now();
}

void progress_clear(progress_t *p)
{
    if (p->tty)
        fprintf(stderr, "\r\033[K");
}

void progress_batch(progress_t *p, int epoch, int batch, double loss)
{
    const char *who = p->who ? p->who : "";
    const char *sep = p->who ? ": " : "";
    if (batch % p->every == 0 || batch == p->batches) {
        progress_clear(p);
        printf("%s%sepoch %d/%d batch %d/%d loss %.4f\n", who, sep, epoch, p->epochs, batch,
               p->batches, loss);
        fflush(stdout);
    }
    if (!p->tty)
        return;
    double now = clock_now();
    if (now - p->last_draw < 0.1 && batch != p->batches)
        return;
    p->last_draw = now;
    int width = 30, filled = (int)((long)width * batch / p->batches);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    double rate = now > p->started ? batch / (now - p->started) : 0.0;
    double eta = rate > 0 ? (p->batches - batch) / rate : 0.0;
    fprintf(stderr, "\r%s%sepoch %d/%d [%s] %3d%% loss %.4f  %.0f batch/s  eta %.0fs\033[K", who,
            sep, epoch, p->epochs, bar, (int)(100L * batch / p->batches), loss, rate, eta);
    fflush(stderr);
}
