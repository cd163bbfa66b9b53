//! Every signed object kind (and the provenance entry), as a node decodes it from a peer, a
//! file or its admin socket. The first byte picks the kind (low 7 bits, modulo the 13 kinds of
//! `deltafed_fuzz::KINDS`) and the mode (high bit): 0 = the rest is a whole `Signed` envelope;
//! 1 = the rest is a body, which the target signs itself so mutations reach past the signature.
#![no_main]

use deltafed_fuzz::{ALLOWANCE, KINDS, bounded, check_kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let kind = usize::from(selector & 0x7f) % KINDS.len();
    let body_mode = selector & 0x80 != 0;
    bounded(KINDS[kind], bytes.len(), ALLOWANCE, || check_kind(kind, body_mode, bytes));
});
