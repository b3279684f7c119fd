/* cli: TEMPORARY, to be deleted when the server split is merged. common/cli
 * was split into args.h (flag parsing), clock.h (clocks) and fs.h (mkdir -p);
 * only server/server.c still includes this file and uses the old names,
 * which the lead ports at merge. Nothing new may include it. */
#ifndef CLI_H
#define CLI_H

#include "args.h"
#include "clock.h"
#include "fs.h"

#define cli_int args_int
#define cli_u64 args_u64
#define cli_double args_double
#define cli_cpus args_cpus
#define cli_now clock_now
#define cli_wall clock_wall
#define cli_mkdirs fs_mkdirs
#define cli_mkdir_parent fs_mkdir_parent

#endif
