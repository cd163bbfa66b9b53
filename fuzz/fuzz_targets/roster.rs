//! The roster: `roster.cbor`, the `roster` gossip message and the roster in a sync answer.
//! First byte, bit 0: 0 = the rest is a `SignedRoster`; 1 = the rest is a `Roster` body, which
//! the target signs with the vectors' keys chosen by bits 1-4 (bit 5 adds a second signature by
//! the first key) and then decodes and validates like a received one.
#![no_main]

use deltafed_fuzz::{ALLOWANCE, bounded, check_roster, check_unsigned, key};
use deltafed_protocol::roster::{MAX_ROSTER_SIZE, Roster, SignedRoster};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    bounded("roster", bytes.len(), ALLOWANCE, || {
        if selector & 1 == 0 {
            check_roster(bytes);
            return;
        }
        let Some(roster) = check_unsigned::<Roster>(bytes) else {
            return;
        };
        let mut signed = SignedRoster::unsigned(roster);
        for i in 1..=4u8 {
            if selector & (1 << i) != 0 {
                signed.add_signature(&key(i)).expect("a decoded roster signs");
            }
        }
        if selector & 0x20 != 0 {
            signed.add_signature(&key(1)).expect("a decoded roster signs");
        }
        let encoded = signed.encode().expect("a signed roster encodes");
        if encoded.len() <= MAX_ROSTER_SIZE {
            let back = check_roster(&encoded).unwrap_or_else(|| {
                panic!("roster: a roster signed here is refused: {:?}", SignedRoster::decode(&encoded))
            });
            assert_eq!(back, signed, "roster: signing and decoding changed it");
        }
    });
});
