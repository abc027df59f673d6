#ifndef TINYZ_H
#define TINYZ_H
#include <stddef.h>
#include "config.h"
#if TINYZ_HAVE_STDINT
#include <stdint.h>
typedef uint32_t tz_u32;
#else
typedef unsigned int tz_u32;
#endif

/* Run-length coding: (count, byte) pairs. Returns the output length, or 0 if it does not fit. */
size_t tz_compress(const unsigned char *in, size_t n, unsigned char *out, size_t cap);
size_t tz_decompress(const unsigned char *in, size_t n, unsigned char *out, size_t cap);
tz_u32 tz_crc32(const unsigned char *data, size_t n);
#endif
