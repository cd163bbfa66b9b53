//! The network envelopes: `Gossip` (the catalog topic), RPC `Request` and `Response`, and every
//! signed object or roster they carry, checked as the node checks them. First byte modulo 3:
//! 0 = gossip, 1 = request, 2 = response.
#![no_main]

use deltafed_fuzz::{ALLOWANCE, bounded, check_wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    bounded("wire message", bytes.len(), ALLOWANCE, || check_wire(selector, bytes));
});
