/* ossl_lazy.c - OpenSSL loaded on first use, for binaries that often run
 * without TLS (skiff-proxy in front of plain HTTP).
 *
 * Mapping libssl and libcrypto costs about 1.7 MB of resident memory in
 * every process that links them, before a single TLS call: the dynamic
 * linker reads libcrypto's symbol and relocation tables and relocates its
 * method tables. A proxy serving plain HTTP never needs them, so
 * skiff-proxy does not link them. Instead this file defines every OpenSSL
 * function the proxy calls (ossl_lazy_syms.h) as a one-instruction
 * trampoline, `jmp *slot`. Each slot starts out pointing at a stub that
 * saves the argument registers, dlopens libssl.so.3 (RTLD_GLOBAL, which
 * brings libcrypto.so.3), fills every slot with dlsym, restores the
 * registers and jumps to the real function. From then on a call costs one
 * indirect jump, as a PLT entry does.
 *
 * The first TLS listener, upstream TLS, identity or span exporter over
 * https loads the libraries; a proxy configured without TLS never does.
 * If libssl.so.3 or one of the functions is missing, the process stops
 * with a message naming it (TLS was asked for and cannot work).
 *
 * x86-64 Linux only (the trampolines are assembly); elsewhere CMake links
 * OpenSSL directly and this file is not built. */
#if defined(__x86_64__) && defined(__linux__)
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

void sk_ossl_lazy_load(void) __attribute__((visibility("hidden"), used));

/* The trampoline, the stub and the slot of one function. The stub passes
 * the slot's address in r11 (scratch, never an argument register). */
#define X(n)                                                                                                 \
  __asm__(".pushsection .text\n"                                                                             \
          ".globl " #n "\n"                                                                                  \
          ".type " #n ",@function\n" #n ":\n"                                                                \
          "\tjmp *sk_ossl_slot_" #n "(%rip)\n"                                                               \
          ".size " #n ",.-" #n "\n"                                                                          \
          "sk_ossl_stub_" #n ":\n"                                                                           \
          "\tleaq sk_ossl_slot_" #n "(%rip), %r11\n"                                                         \
          "\tjmp sk_ossl_lazy_common\n"                                                                      \
          ".popsection\n");                                                                                 \
  extern char sk_ossl_stub_##n[] __attribute__((visibility("hidden")));                                     \
  void *sk_ossl_slot_##n __attribute__((visibility("hidden"), used)) = sk_ossl_stub_##n;
#include "ossl_lazy_syms.h"
#undef X

/* Entered by jmp from a stub, so the stack is as the caller left it at its
 * call (rsp = 8 mod 16). Saves the integer argument registers, rax (the
 * vector count of a variadic call), r11 and xmm0-7; loads; restores; and
 * jumps through the now filled slot. */
__asm__(".pushsection .text\n"
        "sk_ossl_lazy_common:\n"
        "\tpushq %rdi\n\tpushq %rsi\n\tpushq %rdx\n\tpushq %rcx\n"
        "\tpushq %r8\n\tpushq %r9\n\tpushq %rax\n\tpushq %r11\n" /* rsp = 8 mod 16 */
        "\tsubq $136, %rsp\n"                                    /* rsp = 0 mod 16 */
        "\tmovdqu %xmm0, 0(%rsp)\n\tmovdqu %xmm1, 16(%rsp)\n"
        "\tmovdqu %xmm2, 32(%rsp)\n\tmovdqu %xmm3, 48(%rsp)\n"
        "\tmovdqu %xmm4, 64(%rsp)\n\tmovdqu %xmm5, 80(%rsp)\n"
        "\tmovdqu %xmm6, 96(%rsp)\n\tmovdqu %xmm7, 112(%rsp)\n"
        "\tcall sk_ossl_lazy_load\n"
        "\tmovdqu 0(%rsp), %xmm0\n\tmovdqu 16(%rsp), %xmm1\n"
        "\tmovdqu 32(%rsp), %xmm2\n\tmovdqu 48(%rsp), %xmm3\n"
        "\tmovdqu 64(%rsp), %xmm4\n\tmovdqu 80(%rsp), %xmm5\n"
        "\tmovdqu 96(%rsp), %xmm6\n\tmovdqu 112(%rsp), %xmm7\n"
        "\taddq $136, %rsp\n"
        "\tpopq %r11\n\tpopq %rax\n\tpopq %r9\n\tpopq %r8\n"
        "\tpopq %rcx\n\tpopq %rdx\n\tpopq %rsi\n\tpopq %rdi\n"
        "\tjmp *(%r11)\n"
        ".popsection\n");

static const struct {
  const char *name;
  void **slot;
} sk_ossl_table[] = {
#define X(n) {#n, &sk_ossl_slot_##n},
#include "ossl_lazy_syms.h"
#undef X
};

static pthread_once_t sk_ossl_once = PTHREAD_ONCE_INIT;

static void sk_ossl_lazy_load_once(void) {
  void *h = dlopen("libssl.so.3", RTLD_NOW | RTLD_GLOBAL);
  if (!h) {
    fprintf(stderr, "skiff: TLS is configured but OpenSSL cannot be loaded: %s\n", dlerror());
    abort();
  }
  for (size_t i = 0; i < sizeof sk_ossl_table / sizeof sk_ossl_table[0]; i++) {
    void *f = dlsym(h, sk_ossl_table[i].name);
    if (!f) {
      fprintf(stderr, "skiff: OpenSSL loaded from libssl.so.3 lacks %s\n", sk_ossl_table[i].name);
      abort();
    }
    __atomic_store_n(sk_ossl_table[i].slot, f, __ATOMIC_RELEASE);
  }
}

void sk_ossl_lazy_load(void) { pthread_once(&sk_ossl_once, sk_ossl_lazy_load_once); }
#endif
