/* The AVX2 and AVX-512 builds of XXH3 (xxh_avx2.c, xxh_avx512.c); only on x86-64 with GCC or Clang. */
#ifndef AVSCAN_XXH_AVX2_H
#define AVSCAN_XXH_AVX2_H
#include <stddef.h>
#if defined(__x86_64__) && defined(__GNUC__)
#define AVSCAN_HAVE_AVX2_BUILD 1
unsigned long long avscan_avx2_xxh3_64(const void *p, size_t n, unsigned long long seed);
void avscan_avx2_xxh3_128(const void *p, size_t n, unsigned long long seed, unsigned char out[16]);
unsigned long long avscan_avx512_xxh3_64(const void *p, size_t n, unsigned long long seed);
void avscan_avx512_xxh3_128(const void *p, size_t n, unsigned long long seed, unsigned char out[16]);
#endif
#endif
