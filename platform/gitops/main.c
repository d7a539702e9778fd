/* skiff-gitops: the GitOps reconciler (see docs/gitops.md). Everything
 * lives in the skiff_gitops library; this is the entry point. */
#include "gitops.h"

int main(int argc, char **argv) { return sk_daemon_main(&gx_daemon_desc, argc, argv); }
