//! Bearer secrets (application tokens, dashboard login secrets, session ids): 32 random bytes
//! shown once as `PREFIX` + 64 hex characters, stored only as a BLAKE3 hash derived under a
//! context of their own (a stored hash is useless as any other kind's hash).

/// Random bytes in a secret.
pub const BYTES: usize = 32;

/// The stored form of `secret` under `context`.
pub fn hash(context: &str, secret: &str) -> [u8; 32] {
    blake3::derive_key(context, secret.as_bytes())
}

/// A new secret and its hash.
pub fn new(prefix: &str, context: &str) -> Result<(String, [u8; 32]), getrandom::Error> {
    let mut b = [0u8; BYTES];
    getrandom::fill(&mut b)?;
    let secret = format!("{prefix}{}", hex::encode(b));
    let h = hash(context, &secret);
    Ok((secret, h))
}

/// Whether `s` is shaped like a secret of `prefix` (anything else is not looked up at all).
pub fn well_formed(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|h| h.len() == 2 * BYTES && h.bytes().all(|b| b.is_ascii_hexdigit()))
}
