#include "tinyz.h"

size_t tz_compress(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned char c = in[i];
        size_t run = 1;
        while (i + run < n && in[i + run] == c && run < 255)
            run++;
        if (o + 2 > cap)
            return 0;
        out[o++] = (unsigned char)run;
        out[o++] = c;
        i += run;
    }
    return o;
}

size_t tz_decompress(const unsigned char *in, size_t n, unsigned char *out, size_t cap)
{
    size_t i, o = 0;
    if (n % 2)
        return 0;
    for (i = 0; i < n; i += 2) {
        size_t k;
        if (o + in[i] > cap)
            return 0;
        for (k = 0; k < in[i]; k++)
            out[o++] = in[i + 1];
    }
    return o;
}
