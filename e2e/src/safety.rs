//! Safety numbers: digits two people compare (read aloud, or side by side) to know that
//! the keys their devices encrypt to are each other's and no one else's. Each person's
//! half comes from their user name and the signing keys of all their devices, so a new
//! device, or a key swapped in by whoever runs the relay, changes the number.

/// One person's half: 30 digits from their name and their devices' signing keys.
fn half(user: &str, keys: &[Vec<u8>]) -> String {
    let mut keys: Vec<&Vec<u8>> = keys.iter().collect();
    keys.sort();
    keys.dedup();
    let mut hasher = blake3::Hasher::new_derive_key("qchat 2026 safety number v1");
    hasher.update(&(user.len() as u64).to_be_bytes());
    hasher.update(user.as_bytes());
    for key in keys {
        hasher.update(&(key.len() as u64).to_be_bytes());
        hasher.update(key);
    }
    let digest = hasher.finalize();
    digest.as_bytes()[..30]
        .chunks(5)
        .map(|five| {
            let n = five.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

/// The safety number of two people (each with their devices' signing keys): the same on
/// both sides, whichever side computes it. 60 digits in twelve groups of five.
pub fn safety_number(a: (&str, &[Vec<u8>]), b: (&str, &[Vec<u8>])) -> String {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let digits = half(first.0, first.1) + &half(second.0, second.1);
    digits.as_bytes().chunks(5).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect::<Vec<_>>().join(" ")
}

/// A device's fingerprint: its signing key's hash, in groups of four hex digits.
pub fn fingerprint(signature_key: &[u8]) -> String {
    let hash = blake3::hash(signature_key);
    hash.as_bytes()[..16].chunks(2).map(|p| format!("{:02x}{:02x}", p[0], p[1])).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_get_the_same_number_and_any_key_change_shows() {
        let alice = vec![vec![1u8; 32], vec![2u8; 32]];
        let bob = vec![vec![3u8; 32]];
        let seen_by_alice = safety_number(("alice", &alice), ("bob", &bob));
        let seen_by_bob = safety_number(("bob", &bob), ("alice", &alice.iter().rev().cloned().collect::<Vec<_>>()));
        assert_eq!(seen_by_alice, seen_by_bob);
        assert_eq!(seen_by_alice.split(' ').count(), 12);
        assert!(seen_by_alice.chars().all(|c| c.is_ascii_digit() || c == ' '));
        let new_device = vec![vec![3u8; 32], vec![4u8; 32]];
        assert_ne!(safety_number(("alice", &alice), ("bob", &new_device)), seen_by_alice);
        assert_ne!(safety_number(("alice", &alice), ("bobby", &bob)), seen_by_alice);
    }
}
