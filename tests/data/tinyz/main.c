#include <stdio.h>
#include <string.h>
#include "tinyz.h"

int main(int argc, char **argv)
{
    static unsigned char in[1 << 16], out[1 << 17];
    size_t n = fread(in, 1, sizeof in, stdin), m;
    if (argc != 2 || (strcmp(argv[1], "-c") && strcmp(argv[1], "-d"))) {
        fprintf(stderr, "usage: tinyz -c|-d < in > out\n");
        return 2;
    }
    m = argv[1][1] == 'c' ? tz_compress(in, n, out, sizeof out) : tz_decompress(in, n, out, sizeof out);
    if (n && !m)
        return 1;
    fwrite(out, 1, m, stdout);
    return 0;
}
