//! The Merkle tree over the calls of one batch (and over their results), in the shape of
//! RFC 6962 §2.1 with BLAKE3: a leaf is `H(0x00 || tag || 0x00 || bytes)` and an inner node
//! `H(0x01 || left || right)`, so no leaf can pass for a node or a node for a leaf; a tree of n
//! leaves splits at the largest power of two below n. One signature over the root covers every
//! call, and an inclusion proof (the audit path) shows one call to be in a signed batch without
//! showing any other.

use crate::crypto::{Hash, Kind};

/// The hash of one leaf: an object of `kind` in its canonical bytes.
pub fn leaf(kind: Kind, bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(kind.tag().as_bytes());
    h.update(&[0]);
    h.update(bytes);
    h.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(&left.0);
    h.update(&right.0);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root over `leaves` (leaf hashes, in order). The empty tree's root is the hash of nothing.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::of(&[]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index`: the sibling hashes from the leaf up to the root.
pub fn proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut i) = (0, leaves.len(), index);
    // Walk down from the root, remembering the sibling subtree at each level.
    let mut siblings = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if i < k {
            siblings.push(root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            siblings.push(root(&leaves[lo..lo + k]));
            lo += k;
            i -= k;
        }
    }
    while let Some(s) = siblings.pop() {
        path.push(s);
    }
    Some(path)
}

/// Whether `leaf` is leaf `index` of a tree of `size` leaves with root `root`, by `path`
/// (RFC 9162 §2.1.3.2, the verification of an inclusion proof).
pub fn verify(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf(Kind::Call, &(i as u64).to_be_bytes())).collect()
    }

    #[test]
    fn every_leaf_of_every_small_tree_is_proven_and_nothing_else() {
        for n in 1..=33 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = proof(&l, i).expect("in range");
                assert!(verify(&l[i], i as u64, n as u64, &p, &r), "leaf {i} of {n}");
                // The same proof fails for another index, another size, another leaf or root.
                if n > 1 {
                    assert!(!verify(&l[i], ((i + 1) % n) as u64, n as u64, &p, &r), "index moved {i}/{n}");
                    assert!(!verify(&l[(i + 1) % n], i as u64, n as u64, &p, &r), "other leaf {i}/{n}");
                }
                assert!(!verify(&l[i], i as u64, n as u64, &p, &Hash([9; 32])), "root {i}/{n}");
            }
            assert!(proof(&l, n).is_none());
        }
    }

    #[test]
    fn a_leaf_never_passes_for_an_inner_node() {
        let l = leaves(2);
        let r = root(&l);
        // A one-leaf "tree" whose leaf is the root: verifies trivially only as the root itself,
        // and the two-leaf root is not the leaf hash of the concatenation.
        let mut both = Vec::new();
        both.extend_from_slice(&l[0].0);
        both.extend_from_slice(&l[1].0);
        assert_ne!(leaf(Kind::Call, &both), r);
        assert_ne!(root(&l[..1]), r);
    }

    #[test]
    fn the_shape_is_rfc_6962() {
        let l = leaves(3);
        assert_eq!(root(&l), node(&node(&l[0], &l[1]), &l[2]));
        let l = leaves(5);
        assert_eq!(root(&l), node(&node(&node(&l[0], &l[1]), &node(&l[2], &l[3])), &l[4]));
    }
}
