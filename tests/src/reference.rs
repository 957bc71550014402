//! Plain-Rust reference implementations of the C kernels in `kernels/`: what each kernel must
//! output for a given input, for the end-to-end tests to compare the device's results against.
//!
//! Each function takes the bytes the kernel sees (the snapshot's `offset..offset+len`, clipped
//! at the end of the file: see [`file_range`]) and the kernel's parameters.

/// The bytes of `file` a read kernel sees for a request of `offset..offset+len`: clipped at
/// the end of the file, and empty past it (the kernels saturate `offset + len` at `u64::MAX`).
pub fn file_range(file: &[u8], offset: u64, len: u64) -> &[u8] {
    let size = file.len() as u64;
    let start = offset.min(size);
    let end = offset.saturating_add(len).min(size);
    &file[start as usize..end as usize]
}

/// `passthrough.c`: the output is the bytes themselves.
pub fn passthrough(data: &[u8]) -> Vec<u8> {
    data.to_vec()
}

/// `entropy.c`: `counts[b]` is how many times byte `b` occurs in `data`.
pub fn entropy_histogram(data: &[u8]) -> [u64; 256] {
    let mut counts = [0u64; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    counts
}

/// The 2048 bytes `entropy.c` emits for `counts`: 256 little-endian `u64`.
pub fn histogram_bytes(counts: &[u64; 256]) -> Vec<u8> {
    counts.iter().flat_map(|c| c.to_le_bytes()).collect()
}

/// Shannon entropy in bits per byte (0.0 to 8.0) of a byte histogram; 0.0 when it is empty.
pub fn shannon_entropy(counts: &[u64; 256]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.log2()
        })
        .sum()
}

/// `filter_u32.c`: how many little-endian `u32` values at `data[0..4]`, `data[4..8]`, ... are
/// greater than `threshold` (compared as `u64`); a trailing partial value is ignored.
pub fn filter_u32_count(data: &[u8], threshold: u64) -> u64 {
    data.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .filter(|&v| u64::from(v) > threshold)
        .count() as u64
}

/// `kernels/rust/csv_filter`: the records (lines, newline included) whose field `field`
/// (0-based, comma-separated; line ends not part of it) is the decimal `value`, and how many.
/// Records longer than 1024 bytes (newline included) are left out.
pub fn csv_filter(data: &[u8], field: u64, value: u64) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let mut count = 0;
    for record in data.split_inclusive(|&b| b == b'\n') {
        if record.len() > 1024 {
            continue;
        }
        let text = String::from_utf8_lossy(record);
        let fields: Vec<&str> = text.trim_end_matches(['\r', '\n']).split(',').collect();
        let hit = fields.get(field as usize).is_some_and(|f| {
            let f = f.replace('\r', "");
            !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) && f.parse::<u64>() == Ok(value)
        });
        if hit {
            out.extend_from_slice(record);
            count += 1;
        }
    }
    (out, count)
}

/// `pattern.c`: occurrences (overlapping) of the `len`-byte pattern whose byte `i` is
/// `(pattern >> 8*i) & 0xff`. `None` when `len` is not in `1..=8` (the kernel then returns
/// `CSD_EINVAL` and emits nothing).
pub fn pattern_count(data: &[u8], pattern: u64, len: u64) -> Option<u64> {
    if !(1..=8).contains(&len) {
        return None;
    }
    let needle = &pattern.to_le_bytes()[..len as usize];
    Some(data.windows(needle.len()).filter(|w| *w == needle).count() as u64)
}

/// `xor.c`: every byte XORed with `param0 & 0xff`.
pub fn xor(data: &[u8], param0: u64) -> Vec<u8> {
    let key = param0.to_le_bytes()[0];
    data.iter().map(|b| b ^ key).collect()
}

/// `kernels/tests/features.c`: the number of set bits in `data`.
pub fn popcount(data: &[u8]) -> u64 {
    data.iter().map(|b| u64::from(b.count_ones())).sum()
}

/// An 8-byte output (filter_u32, pattern, features) as the kernel emits it.
pub fn u64_output(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// Text-like sample data: words of a small vocabulary from a fixed-seed generator, so the
/// entropy is well below 8 bits per byte and the same on every run.
pub fn sample_text(len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "storage ", "zone ", "append ", "kernel ", "device ", "flash ", "block ", "page ", "the ",
        "of ", "and ", "data ", "near ", "compute ", "link ", "bytes\n",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(WORDS[(state % 16) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are clipped at the end of the file and saturate instead of overflowing.
    #[test]
    fn file_range_clips() {
        let file = b"0123456789";
        assert_eq!(file_range(file, 2, 3), b"234");
        assert_eq!(file_range(file, 8, 100), b"89");
        assert_eq!(file_range(file, 20, 5), b"");
        assert_eq!(file_range(file, 3, u64::MAX), b"3456789");
        assert_eq!(passthrough(file_range(file, 0, 4)), b"0123".to_vec());
    }

    /// The histogram counts each byte value; its encoding is 256 LE u64.
    #[test]
    fn histogram_by_hand() {
        let counts = entropy_histogram(b"abracadabra\x00\xff\xff");
        assert_eq!(counts[usize::from(b'a')], 5);
        assert_eq!(counts[usize::from(b'b')], 2);
        assert_eq!(counts[usize::from(b'r')], 2);
        assert_eq!(counts[usize::from(b'c')], 1);
        assert_eq!(counts[usize::from(b'd')], 1);
        assert_eq!(counts[0], 1);
        assert_eq!(counts[255], 2);
        assert_eq!(counts.iter().sum::<u64>(), 14);
        let bytes = histogram_bytes(&counts);
        assert_eq!(bytes.len(), 2048);
        assert_eq!(&bytes[8 * 97..8 * 98], &[5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[8 * 255..], &[2, 0, 0, 0, 0, 0, 0, 0]);
    }

    /// Entropy: 0 for one repeated byte, 1 bit for two equally frequent bytes, 8 for all.
    #[test]
    fn entropy_by_hand() {
        assert_eq!(shannon_entropy(&entropy_histogram(b"")), 0.0);
        assert_eq!(shannon_entropy(&entropy_histogram(b"aaaa")), 0.0);
        assert!((shannon_entropy(&entropy_histogram(b"abab")) - 1.0).abs() < 1e-12);
        let all: Vec<u8> = (0..=255).collect();
        assert!((shannon_entropy(&entropy_histogram(&all)) - 8.0).abs() < 1e-12);
    }

    /// Values are little-endian, compared strictly and unsigned; a partial tail is ignored.
    #[test]
    fn filter_by_hand() {
        let mut data = Vec::new();
        for v in [1u32, 10, 11, 0xffff_ffff, 10] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&[0xff, 0xff, 0xff]); // partial
        assert_eq!(filter_u32_count(&data, 10), 2); // 11 and 0xffffffff
        assert_eq!(filter_u32_count(&data, 0), 5);
        assert_eq!(filter_u32_count(&data, 0xffff_ffff), 0);
        assert_eq!(filter_u32_count(&data, 1 << 40), 0);
        assert_eq!(filter_u32_count(&[0x00, 0x01, 0x00, 0x00], 255), 1); // 256 > 255
    }

    /// Matches overlap, the pattern is little-endian in param0, bad lengths are None.
    #[test]
    fn pattern_by_hand() {
        assert_eq!(pattern_count(b"aaaa", u64::from(b'a') * 0x0101, 2), Some(3));
        // "ab" = 0x6261 little-endian.
        assert_eq!(pattern_count(b"abcabcab", 0x6261, 2), Some(3));
        // Bits above the length are ignored.
        assert_eq!(pattern_count(b"abcabcab", 0xffff_0000_6261, 2), Some(3));
        assert_eq!(pattern_count(b"xyz", 0x7a, 1), Some(1));
        assert_eq!(pattern_count(b"ab", 0x6261, 3), Some(0));
        let eight = u64::from_le_bytes(*b"12345678");
        assert_eq!(pattern_count(b"0123456789012345678", eight, 8), Some(2));
        assert_eq!(pattern_count(b"abc", 0x61, 0), None);
        assert_eq!(pattern_count(b"abc", 0x61, 9), None);
    }

    /// XOR uses only the low byte of param0 and is its own inverse.
    #[test]
    fn xor_by_hand() {
        assert_eq!(xor(&[0x00, 0xff, 0x0f], 0x1_23), vec![0x23, 0xdc, 0x2c]);
        let data = b"hello, device";
        assert_eq!(xor(&xor(data, 0x5a), 0x5a), data.to_vec());
        assert_eq!(xor(data, 0x100), data.to_vec());
    }

    /// Popcount and the 8-byte output encoding.
    #[test]
    fn popcount_and_u64_output() {
        assert_eq!(popcount(&[0x00, 0xff, 0x0f, 0x81]), 14);
        assert_eq!(u64_output(0x0102), vec![2, 1, 0, 0, 0, 0, 0, 0]);
    }
}
