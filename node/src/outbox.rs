//! Deliveries waiting for their member to be reachable: a grant issued while the grantee was
//! offline, a revocation, a decision. They are kept in the database (so they survive restarts)
//! and sent, in order, when the member connects; a delivery leaves the outbox only when the
//! member has acknowledged it. A delivery is queued in the same write as the change it carries,
//! before it is first sent, so a crash can never lose one.

use deltafed_protocol::wire::Delivery;
use deltafed_protocol::{Hash, MemberId, Timestamp};

use crate::access::{Error, dec, enc};
use crate::store::{Batch, Cf, Store};

const PREFIX: &[u8] = b"outbox/";

pub struct Outbox {
    store: Store,
}

fn member_prefix(member: &MemberId) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(member.as_str().as_bytes());
    k.push(0);
    k
}

impl Outbox {
    pub fn new(store: Store) -> Outbox {
        Outbox { store }
    }

    /// Queues `d` for `member`; the key orders deliveries by time and is stable for one delivery.
    pub fn push(&self, member: &MemberId, d: &Delivery, now: Timestamp) -> Result<Vec<u8>, Error> {
        let (key, b) = self.push_ops(member, d, now)?;
        self.store.write(b)?;
        Ok(key)
    }

    /// The write that queues `d` (to go in the same batch as the change it delivers), and its key.
    pub fn push_ops(&self, member: &MemberId, d: &Delivery, now: Timestamp) -> Result<(Vec<u8>, Batch), Error> {
        let bytes = enc("delivery", d)?;
        let mut key = member_prefix(member);
        key.extend_from_slice(&now.0.to_be_bytes());
        key.extend_from_slice(&Hash::of(&bytes).0[..8]);
        let mut b = Batch::default();
        b.put(Cf::Peers, key.clone(), bytes);
        Ok((key, b))
    }

    /// Everything waiting for `member`, oldest first, with the key to pass to [`Outbox::done`].
    pub fn pending(&self, member: &MemberId) -> Result<Vec<(Vec<u8>, Delivery)>, Error> {
        self.store
            .scan_prefix(Cf::Peers, &member_prefix(member))?
            .into_iter()
            .map(|(k, v)| dec("delivery", &v).map(|d| (k, d)))
            .collect()
    }

    pub fn done(&self, key: &[u8]) -> Result<(), Error> {
        let mut b = Batch::default();
        b.delete(Cf::Peers, key.to_vec());
        self.store.write(b)?;
        Ok(())
    }
}
