/* features: a test kernel for what the loader has to link, not a product kernel.
 *
 * Counts the set bits in offset..offset+len of the file snapshot using a nibble lookup table
 * (`static const` in .rodata, read with an index: a 64-bit immediate load the loader
 * relocates to RODATA_BASE + offset), in an out-of-line function (a bpf-to-bpf call), and logs
 * a string literal (.rodata.str1.1).
 *
 * Output: the bit count as one little-endian uint64_t (8 bytes).
 * Returns the bit count, or a negative CSD_E* code (as uint64_t) on error.
 */
#include <csd.h>

static const uint8_t nibble_bits[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

static __attribute__((noinline)) uint64_t popcount_bytes(const uint8_t *p, uint64_t n)
{
    uint64_t bits = 0;
    for (uint64_t i = 0; i < n; i++)
        bits += nibble_bits[p[i] & 0xf] + nibble_bits[p[i] >> 4];
    return bits;
}

uint64_t csd_main(const struct csd_ctx *ctx)
{
    CSD_LOG_LIT("features: counting bits");
    uint8_t *buf = csd_scratch();
    uint64_t chunk = csd_min(ctx->scratch_len, CSD_CHUNK);
    if (chunk == 0)
        return (uint64_t)CSD_EINVAL;

    uint64_t pos = ctx->offset;
    uint64_t end = ctx->len > UINT64_MAX - pos ? UINT64_MAX : pos + ctx->len;
    uint64_t bits = 0;
    while (pos < end) {
        long n = csd_read(pos, buf, csd_min(chunk, end - pos));
        if (n < 0)
            return (uint64_t)n;
        if (n == 0)
            break;
        bits += popcount_bytes(buf, (uint64_t)n);
        pos += (uint64_t)n;
    }

    long e = csd_emit(&bits, sizeof(bits));
    if (e < 0)
        return (uint64_t)e;
    return bits;
}
