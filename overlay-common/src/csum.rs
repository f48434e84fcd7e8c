//! Internet checksum (RFC 1071) over small fixed headers.

/// Ones'-complement sum of big-endian 16-bit words, folded, not inverted.
#[inline(always)]
pub fn sum16(bytes: &[u8], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        acc += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    if i < bytes.len() {
        acc += u32::from(bytes[i]) << 8;
    }
    acc
}

/// Folds a 32-bit accumulator into 16 bits and inverts it: the checksum field value.
#[inline(always)]
pub fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// Checksum of an IPv4 header whose checksum field (bytes 10..12) is zero.
#[inline(always)]
pub fn ipv4_header(header: &[u8; 20]) -> u16 {
    fold(sum16(header, 0))
}

/// True when a header including its checksum field sums to all ones.
pub fn verifies(header: &[u8]) -> bool {
    fold(sum16(header, 0)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ipv4_header() {
        // Example from RFC 1071 discussions / Wikipedia: checksum 0xb861.
        let mut h: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verifies(&h));
        h[3] ^= 1;
        assert!(!verifies(&h));
    }

    #[test]
    fn odd_length() {
        assert_eq!(sum16(&[0x01, 0x02, 0x03], 0), 0x0102 + 0x0300);
    }
}
