//! The one stable hash: FNV-1a (32 and 64 bit), the same on every build and platform (std's
//! hasher is not), and the one Kubernetes and OpenKruise use for names and revision hashes
//! (`hash/fnv` `New32a`). Also the apimachinery alphabet that makes a number safe in a name.

const OFFSET_32: u32 = 0x811c_9dc5;
const PRIME_32: u32 = 0x0100_0193;
const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME_64: u64 = 0x0100_0000_01b3;

/// FNV-1a 32 of `bytes`.
pub fn fnv1a_32(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes
        .into_iter()
        .fold(OFFSET_32, |h, b| (h ^ u32::from(b)).wrapping_mul(PRIME_32))
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a_64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes
        .into_iter()
        .fold(OFFSET_64, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME_64))
}

/// apimachinery's `rand.SafeEncodeString`: each character of `s` mapped into an alphabet
/// without vowels or look-alikes, so a number printed in decimal becomes a name suffix that
/// cannot spell words (how the pod-template-hash and controller-revision-hash labels read).
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_32(*b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(*b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(*b"foobar"), 0xbf9c_f968);
        assert_eq!(fnv1a_64(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(*b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn safe_encode_as_apimachinery() {
        // `rand.SafeEncodeString("123")`: '1' = 49, 49 % 27 = 22, the 23rd letter is '5'; then
        // '6' and '7'.
        assert_eq!(safe_encode("123"), "567");
        assert_eq!(safe_encode(""), "");
    }
}
