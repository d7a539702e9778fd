/* skiff-telemetry: receivers, storage and query APIs for metrics, traces
 * and logs (see docs/telemetry.md). Everything lives in the
 * skiff_telemetry library; this is the entry point. */
#include "tl_int.h"

int main(int argc, char **argv) { return sk_daemon_main(&tl_daemon_desc, argc, argv); }
