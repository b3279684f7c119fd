/* checkpoint: the run saved to one safetensors file, and read back by
 * --resume.
 *
 * Every --checkpoint-every updates or --checkpoint-seconds the master
 * weights, the momentum ("momentum." + PyTorch's names: the checkpoint is
 * also a loadable model), and as metadata the run's counters, its recipe
 * (the flags a resume must repeat) and every worker's progress are written
 * atomically (write, fsync, rename). The metadata is driven by one table of
 * fields (checkpoint.c): each is written, read back, range-checked and
 * checksummed from its table entry. Integers are written and read as
 * decimal integers, exactly (a seed above 2^53 resumes). A CRC-32 over every
 * field, the weights and the momentum ("checksum") finds flipped bytes
 * anywhere in what a resume uses. */
#ifndef SERVER_CHECKPOINT_H
#define SERVER_CHECKPOINT_H

#include <stddef.h>

#include "state.h"

/* Writes the checkpoint to s->o->checkpoint now. 0, or -1 after logging
 * why. */
int ckpt_write(server_t *s);

/* Writes it if --checkpoint-every updates or --checkpoint-seconds have
 * passed since the last one (never with --checkpoint-every 0). */
void ckpt_maybe(server_t *s);

/* Restores the run saved in s->o->checkpoint into a new server (weights,
 * momentum, counters, every slot; each worker must register again) and
 * records the resume in the database. The file is read once; every field is
 * range-checked, the recipe must match the server's flags, the values must
 * be finite and the checksum must match: a damaged checkpoint is refused,
 * never loaded. 0, or -1 with a message in err. */
int ckpt_resume(server_t *s, char *err, size_t errlen);

/* The run is complete: removes the checkpoint and the one kept before it
 * (PATH.prev), saying so. */
void ckpt_remove(server_t *s);

/* A server group returns to an older version (a shard resumed from its
 * checkpoint): reloads the checkpoint of exactly that version, from
 * s->o->checkpoint or the one kept before it (PATH.prev; a group writes
 * both, at the same versions on every server), checked as ckpt_resume
 * checks; every slot then waits for its worker to register again and its
 * token is revoked. 0; -1 with a message in err when no intact checkpoint
 * of that version was found (nothing changed); -2 with a message when one
 * failed its checks while it was being read (the weights may be half read:
 * the server must stop). */
int ckpt_rollback(server_t *s, uint64_t version, char *err, size_t errlen);

#endif
