/* xor: a write-stream transform. Reads the incoming bytes with csd_input in chunks, XORs every
 * byte with param0 & 0xff and emits the result, so the bytes stored are the transformed ones.
 *
 * Output: as many bytes as came in.
 * Returns the number of bytes emitted, or a negative CSD_E* code (as uint64_t) on error
 * (CSD_ENOTSUP when run outside a write stream).
 * Uses up to CSD_CHUNK bytes of scratch memory as its buffer (needs scratch_len >= 8).
 */
#include <csd.h>

uint64_t csd_main(const struct csd_ctx *ctx)
{
    uint8_t *buf = csd_scratch();
    /* A multiple of 8 so the buffer can be processed a word at a time. */
    uint64_t chunk = csd_min(ctx->scratch_len, CSD_CHUNK) & ~(uint64_t)7;
    if (chunk == 0)
        return (uint64_t)CSD_EINVAL;
    uint8_t key = (uint8_t)(ctx->param0 & 0xff);
    uint64_t key64 = key * 0x0101010101010101ULL;

    uint64_t total = 0;
    for (;;) {
        long n = csd_input(buf, chunk);
        if (n < 0)
            return (uint64_t)n;
        if (n == 0)
            break;
        uint64_t words = (uint64_t)n / 8;
        uint64_t *w = (uint64_t *)buf;
        for (uint64_t i = 0; i < words; i++)
            w[i] ^= key64;
        for (uint64_t i = words * 8; i < (uint64_t)n; i++)
            buf[i] ^= key;
        long e = csd_emit(buf, (uint64_t)n);
        if (e < 0)
            return (uint64_t)e;
        total += (uint64_t)n;
    }
    return total;
}
