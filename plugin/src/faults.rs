//! Deliberate misbehaviour, compiled in only for the host's sandbox tests (cargo features
//! `fault-*`); a normal build has none of it and these are empty functions.

/// `fault-loop`: spin forever on the heartbeat; `fault-alloc`: allocate until memory runs out;
/// `fault-trap-heartbeat`: trap on every heartbeat (and nowhere else).
pub fn on_heartbeat() {
    if cfg!(feature = "fault-trap-heartbeat") {
        panic!("fault-trap-heartbeat test build");
    }
    if cfg!(feature = "fault-loop") {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if cfg!(feature = "fault-alloc") {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

/// `fault-trap-warmup`: trap on the host's warm-up call.
pub fn on_warmup() {
    if cfg!(feature = "fault-trap-warmup") {
        panic!("fault-trap-warmup test build");
    }
}
