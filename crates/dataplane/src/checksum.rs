//! The Internet checksum (RFC 1071), for the packets pinholed builds (ping) and checks
//! (coalescing): a ones'-complement sum summed 64 bits at a time.

/// Ones'-complement sum of big-endian 16-bit words (an odd last byte padded with zero), not
/// folded: 64-bit words with the carry added back in, which folds to the same 16-bit sum.
pub fn sum_words(bytes: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut add = |v: u64| {
        let (s, carry) = acc.overflowing_add(v);
        acc = s + u64::from(carry);
    };
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        add(u64::from_be_bytes([
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
        ]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    add(u64::from_be_bytes(tail));
    acc
}

/// The 16-bit ones'-complement sum of an unfolded one.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum field's value for `bytes`; 0 over a block that carries a correct one.
pub fn checksum(bytes: &[u8]) -> u16 {
    !fold(sum_words(bytes, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wide_checksum_sum_folds_to_the_16_bit_one() {
        for len in [0usize, 1, 2, 3, 7, 8, 9, 15, 20, 40, 1379, 1380, 65535] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8 ^ 0xa5).collect();
            let mut plain: u64 = 0xfffe;
            for pair in data.chunks(2) {
                plain += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            }
            assert_eq!(fold(sum_words(&data, 0xfffe)), fold(plain), "{len} bytes");
        }
        assert_eq!(
            fold(sum_words(&[0xff; 64], u64::MAX - 1)),
            fold(0xffff * 32 + 0xfffe)
        );
    }
}
