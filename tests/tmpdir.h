/* tmpdir: a fresh temporary directory for each cmocka test that writes
 * files, removed afterwards. A test file wraps tmpdir_setup in its own setup
 * (to name the directory and the file in it) and uses tmpdir_teardown as is:
 *
 *     static int s_setup(void **state) { return tmpdir_setup(state, "test_x", "x.db"); }
 *     cmocka_unit_test_setup_teardown(test_y, s_setup, tmpdir_teardown)
 *
 * The test's state is then a tmpdir_t. Header-only: each test is one .c. */
#ifndef TMPDIR_H
#define TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    char dir[64];   /* /tmp/NAME.XXXXXX */
    char path[128]; /* dir/FILE */
} tmpdir_t;

static int tmpdir_setup(void **state, const char *name, const char *file)
{
    tmpdir_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/%s.XXXXXX", name);
    if (!mkdtemp(t->dir)) {
        free(t);
        return -1;
    }
    snprintf(t->path, sizeof t->path, "%s/%s", t->dir, file);
    *state = t;
    return 0;
}

static int tmpdir_teardown(void **state)
{
    tmpdir_t *t = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    int rc = system(cmd);
    free(t);
    return rc == 0 ? 0 : -1;
}

#endif
