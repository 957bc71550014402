/* entropy: byte histogram of offset..offset+len of the file snapshot, the input of a Shannon
 * entropy computation on the host.
 *
 * Output: 256 little-endian uint64_t counts (2048 bytes), count[b] = occurrences of byte b.
 * Returns the number of bytes counted, or a negative CSD_E* code (as uint64_t) on error.
 *
 * The counts do not fit the 512-byte stack, so they live at the start of scratch memory; the
 * rest of scratch (up to CSD_CHUNK bytes) is the read buffer. Needs scratch_len > 2048.
 */
#include <csd.h>

#define COUNTS_BYTES (256 * sizeof(uint64_t))

/* Kept out of line on purpose: csd_main -> count_bytes is a bpf-to-bpf call the loader links. */
static __attribute__((noinline)) void count_bytes(uint64_t *counts, const uint8_t *p, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        counts[p[i]]++;
}

uint64_t csd_main(const struct csd_ctx *ctx)
{
    uint8_t *scratch = csd_scratch();
    if (ctx->scratch_len <= COUNTS_BYTES)
        return (uint64_t)CSD_EINVAL;
    uint64_t *counts = (uint64_t *)scratch;
    uint8_t *buf = scratch + COUNTS_BYTES;
    uint64_t chunk = csd_min(ctx->scratch_len - COUNTS_BYTES, CSD_CHUNK);

    for (int b = 0; b < 256; b++)
        counts[b] = 0;

    uint64_t pos = ctx->offset;
    uint64_t end = ctx->len > UINT64_MAX - pos ? UINT64_MAX : pos + ctx->len;
    uint64_t total = 0;
    while (pos < end) {
        long n = csd_read(pos, buf, csd_min(chunk, end - pos));
        if (n < 0)
            return (uint64_t)n;
        if (n == 0)
            break;
        count_bytes(counts, buf, (uint64_t)n);
        pos += (uint64_t)n;
        total += (uint64_t)n;
    }

    long e = csd_emit(counts, COUNTS_BYTES);
    if (e < 0)
        return (uint64_t)e;
    return total;
}
