/* progress: what a training process shows while it trains. On a terminal a
 * one-line progress bar on stderr, redrawn at most 10 times a second; the
 * loss every 100 batches as a plain line on stdout in every case (so logs and
 * pipes get the same record as the original study's script printed). */
#ifndef PROGRESS_H
#define PROGRESS_H

#include <stdio.h>

typedef struct {
    int tty;          /* stderr is a terminal: draw the bar */
    int epochs;       /* total epochs */
    int batches;      /* batches per epoch */
    int every;        /* print the loss every this many batches */
    double last_draw; /* clock_now() of the last bar */
    double started;   /* clock_now() at the start of the epoch */
    const char *who;  /* prefix, e.g. "worker 1" or NULL */
} progress_t;

void progress_init(progress_t *p, int epochs, int batches, const char *who);
void progress_epoch_start(progress_t *p);
/* After batch `batch` (1-based) of epoch `epoch` (1-based) with that batch's loss. */
void progress_batch(progress_t *p, int epoch, int batch, double loss);
/* Erases the bar (before printing a line of its own). */
void progress_clear(progress_t *p);

#endif
