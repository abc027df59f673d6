#include <stdio.h>
#include <string.h>
#include "tinyz.h"

int main(void)
{
    const unsigned char text[] = "hello, hello, helloooooooooooo world";
    unsigned char packed[128], unpacked[128];
    size_t n = tz_compress(text, sizeof text, packed, sizeof packed);
    size_t m = tz_decompress(packed, n, unpacked, sizeof unpacked);
    if (m != sizeof text || memcmp(text, unpacked, m)) {
        puts("round trip FAILED");
        return 1;
    }
    if (tz_crc32((const unsigned char *)"123456789", 9) != 0xCBF43926u) {
        puts("crc32 FAILED");
        return 1;
    }
    printf("round trip and crc32 ok (%zu -> %zu bytes)\n", sizeof text, n);
    return 0;
}
