/* skiff-echo: a small upstream for demos and tests (see docs/echo.md).
 * Everything lives in the skiff_echo library; this is the entry point. */
#include "echo_int.h"

int main(int argc, char **argv) { return sk_daemon_main(&echo_daemon_desc, argc, argv); }
