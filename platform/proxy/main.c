/* skiff-proxy: the data plane (see docs/proxy.md). Everything lives in the
 * skiff_proxy library; this is the entry point. */
#include "px_int.h"

int main(int argc, char **argv) { return sk_daemon_main(&px_daemon_desc, argc, argv); }
