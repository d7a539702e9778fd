/* skiff-policy: admission webhook and policy engine (see docs/policy.md).
 * Everything lives in the skiff_policy library; this is the entry point. */
#include "pol_int.h"

int main(int argc, char **argv) { return sk_daemon_main(&pol_daemon_desc, argc, argv); }
