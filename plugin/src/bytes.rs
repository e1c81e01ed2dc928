//! Byte comparison for the guest: its `memcmp` and `bcmp`.
//!
//! wasm32-unknown-unknown has no libc, so `memcmp` and `bcmp`, which every `==` and every
//! ordering of strings and byte slices compiles to, come from compiler-builtins, where they
//! compare one byte at a time; and LLVM does not inline even a compare of a few constant bytes
//! for Wasm. A heartbeat that reads every group compares names, roles, states and hosts about
//! ten times a group, mostly shorter than a word: in the profile of a full read of 1000 groups
//! that byte loop was 15% of the call. These compare a word at a time instead (a Wasm load
//! needs no alignment), the ends of a run as overlapping words, never a byte at a time but for
//! runs under four bytes; the strong symbols take the place of compiler-builtins' weak ones.
//!
//! The comparison is built natively too, for its test.

/// The first `n` bytes at `a` and `b` compared as unsigned bytes, C's `memcmp`.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise, passed on.
    unsafe { compare(a, b, n) }
}

/// Zero when the first `n` bytes at `a` and `b` are equal, C's `bcmp`.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise, passed on.
    unsafe { compare(a, b, n) }
}

/// The order of the first bytes that differ, or 0. Words are read little-endian, so the
/// lowest set bit of their difference is in the first byte that differs; the words that
/// overlap at the end of a run repeat only bytes already found equal.
#[inline(always)]
unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY (every read below): offsets stay below `n`, which the caller vouches for.
    unsafe {
        let first_difference = |at: usize, x: u64, y: u64| -> i32 {
            let k = at + ((x ^ y).trailing_zeros() / 8) as usize;
            i32::from(*a.add(k)) - i32::from(*b.add(k))
        };
        let word = |p: *const u8, at: usize| p.add(at).cast::<u64>().read_unaligned();
        let half = |p: *const u8, at: usize| u64::from(p.add(at).cast::<u32>().read_unaligned());
        match n {
            0 => 0,
            1..=3 => {
                for i in 0..n {
                    let (x, y) = (*a.add(i), *b.add(i));
                    if x != y {
                        return i32::from(x) - i32::from(y);
                    }
                }
                0
            }
            4..=7 => {
                for at in [0, n - 4] {
                    let (x, y) = (half(a, at), half(b, at));
                    if x != y {
                        return first_difference(at, x, y);
                    }
                }
                0
            }
            _ => {
                let mut at = 0;
                while at + 8 < n {
                    let (x, y) = (word(a, at), word(b, at));
                    if x != y {
                        return first_difference(at, x, y);
                    }
                    at += 8;
                }
                let at = n - 8;
                let (x, y) = (word(a, at), word(b, at));
                if x != y {
                    return first_difference(at, x, y);
                }
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    fn sign(x: i32) -> std::cmp::Ordering {
        x.cmp(&0)
    }

    proptest! {
        #[test]
        fn orders_as_slices_do(
            common in proptest::collection::vec(any::<u8>(), 0..40),
            a in proptest::collection::vec(any::<u8>(), 0..12),
            b in proptest::collection::vec(any::<u8>(), 0..12),
        ) {
            let (mut x, mut y) = (common.clone(), common);
            x.extend(a);
            y.extend(b);
            let n = x.len().min(y.len());
            // SAFETY: both are at least `n` bytes long.
            let got = unsafe { super::compare(x.as_ptr(), y.as_ptr(), n) };
            prop_assert_eq!(sign(got), x[..n].cmp(&y[..n]));
        }
    }
}
