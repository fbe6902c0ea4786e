/*
 * XXH3 compiled for AVX-512 (AVX512F), called only where the CPU has it; see xxh_avx2.c.
 */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f")
#define XXH_NAMESPACE avscan_avx512_
#define XXH_INLINE_ALL
#define XXH_VECTOR 3 /* XXH_AVX512 */
#include <stddef.h>
#include "xxhash.h"
#include "xxh_avx2.h"

unsigned long long
avscan_avx512_xxh3_64(const void *p, size_t n, unsigned long long seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

void
avscan_avx512_xxh3_128(const void *p, size_t n, unsigned long long seed, unsigned char out[16])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(p, n, seed));
    for (int i = 0; i < 16; i++)
        out[i] = c.digest[i];
}
#endif
