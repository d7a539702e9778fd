/* skiff: the command-line tool and local supervisor (see docs/cli.md). */
#include "cli_int.h"

int main(int argc, char **argv) { return cli_main(argc, argv); }
