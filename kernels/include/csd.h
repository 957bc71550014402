/* csd.h: the one header csd kernels include.
 *
 * A kernel is a C file compiled with
 *   clang-19 -O2 -target bpf -ffreestanding -Ikernels/include -c NAME.c -o NAME.o
 * that defines the entry function `csd_main`. The host's loader links the object into a
 * program image (see docs/KERNEL_ABI.md); the device verifies and runs it.
 *
 * Every number here mirrors common/src/abi.rs. tests/tests/kernels/abi.rs parses this file and
 * checks it against common, so change both together.
 */
#ifndef CSD_H
#define CSD_H

#include <stddef.h>
#include <stdint.h>

/* Operation kinds (ctx->op); mirror abi::op. */
#define CSD_OP_READ_STREAM 1
#define CSD_OP_FILE_JOB 2
#define CSD_OP_WRITE_STREAM 3

/* Negative helper return values; mirror abi::err. */
#define CSD_EIO (-5)
#define CSD_EINVAL (-22)
#define CSD_ENOSPC (-28)
#define CSD_ENOTSUP (-95)

/* Helper ids; mirror abi::helper. A kernel calls helper n with `call n`. */
#define CSD_HELPER_READ 1
#define CSD_HELPER_EMIT 2
#define CSD_HELPER_SCRATCH 3
#define CSD_HELPER_LOG 4
#define CSD_HELPER_INPUT 5

/* Limits; mirror abi. */
#define CSD_STACK_BYTES 512
#define CSD_LOG_MAX_BYTES 128
#define CSD_DEFAULT_SCRATCH_BYTES 65536

/* The read-only context r1 points to at entry. Every field is a little-endian uint64_t, in
 * this order (byte offsets 0, 8, ..., 56; abi::ctx). */
struct csd_ctx {
    uint64_t op;          /* one of CSD_OP_* */
    uint64_t file_size;   /* bytes in the file snapshot */
    uint64_t offset;      /* the request's file offset */
    uint64_t len;         /* the request's length in bytes */
    uint64_t param0;      /* first user parameter */
    uint64_t param1;      /* second user parameter */
    uint64_t out_cap;     /* bytes csd_emit may append in this run */
    uint64_t scratch_len; /* bytes of scratch memory behind csd_scratch() */
};

/* Helpers, declared the Linux way: a constant function pointer whose value is the helper id,
 * so clang emits `call <id>` (src_reg 0) and no relocation. */

/* Copies up to len bytes of the file snapshot at file_off into dst. Returns the bytes read,
 * 0 at the end of the snapshot, or a negative CSD_E* code. */
static long (*const csd_read)(uint64_t file_off, void *dst, uint64_t len) = (void *)1;

/* Appends len bytes at src to the output. Returns len, or CSD_ENOSPC past out_cap (nothing is
 * appended then). */
static long (*const csd_emit)(const void *src, uint64_t len) = (void *)2;

/* The address of ctx->scratch_len bytes of zeroed scratch memory. */
static void *(*const csd_scratch)(void) = (void *)3;

/* Records a short message (at most CSD_LOG_MAX_BYTES are kept). Returns the bytes kept. */
static long (*const csd_log)(const char *msg, uint64_t len) = (void *)4;

/* Write streams only: copies up to len of the next incoming bytes into dst. Returns the bytes
 * copied, 0 when the input is exhausted, CSD_ENOTSUP outside a write stream. */
static long (*const csd_input)(void *dst, uint64_t len) = (void *)5;

/* The entry function every kernel defines. Its return value is the run's result. */
uint64_t csd_main(const struct csd_ctx *ctx);

/* Conveniences shared by the kernels. */

/* Bytes a kernel moves per helper call when it streams through scratch memory. */
#define CSD_CHUNK 4096

/* Logs a string literal (without its terminating NUL). */
#define CSD_LOG_LIT(s) csd_log((s), sizeof(s) - 1)

static inline uint64_t csd_min(uint64_t a, uint64_t b) { return a < b ? a : b; }

#endif /* CSD_H */
