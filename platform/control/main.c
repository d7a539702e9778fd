/* skiff-control: the resource API, store and watch (see docs/control.md).
 * Everything lives in the skiff_control library; this is the entry point. */
#include "ctl_int.h"

int main(int argc, char **argv) { return sk_daemon_main(&ctl_daemon_desc, argc, argv); }
