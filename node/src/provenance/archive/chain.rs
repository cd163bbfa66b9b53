//! Verifying segments: the newest one against the live log's record of it (plain `verify`),
//! or a whole directory of them in order (`verify --archive DIR`), the entries of each going
//! through the same chain walker as the live log.

use std::path::Path;

use deltafed_protocol::provenance::Checkpoint;
use deltafed_protocol::{Hash, MemberId, PublicKey, Signed};

use super::segment::{self, Reader};
use super::{ArchivedThrough, checkpoint_problem};
use crate::provenance::verify::{Problems, VerifyReport, Walker};

/// Where a walk over segments ended.
#[derive(Debug, Default)]
pub struct ChainEnd {
    pub segments: u64,
    pub entries: u64,
    pub last: Option<SegmentEnd>,
}

#[derive(Debug)]
pub struct SegmentEnd {
    pub seq: u64,
    pub hash: Hash,
    pub name: String,
}

/// The previous segment, as the next one must name it.
struct Before {
    name: String,
    file_hash: Hash,
    last: u64,
    head: Hash,
}

/// Walks every segment in `dir`, oldest first, feeding their entries to `walker` and reporting
/// through it what is wrong with each file and with the links between them.
pub fn walk_segments(dir: &Path, member: &MemberId, signer: Option<&PublicKey>, walker: &mut Walker<'_>) -> ChainEnd {
    let mut end = ChainEnd::default();
    let files = match segment::list(dir) {
        Ok(f) => f,
        Err(e) => {
            walker.problem(format!("cannot list the archive directory {}: {e}", dir.display()));
            return end;
        }
    };
    // Offline without a roster, the first checkpoint's key stands for the member's: the rest
    // must at least agree with it.
    let mut signer = signer.copied();
    let mut before: Option<Before> = None;
    // After a file that could not be read, the next one cannot be linked to it.
    let mut lost = false;
    let mut buf = Vec::new();
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let at = |what: String| format!("segment {name}: {what}");
        let mut r = match Reader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                walker.problem(at(e.to_string()));
                lost = true;
                continue;
            }
        };
        let h = r.header.clone();
        if h.member != *member {
            walker.problem(at(format!("it is {}'s, not {member}'s", h.member)));
            lost = true;
            continue;
        }
        if h.first > h.last {
            walker.problem(at(format!("its header says it holds entries {} to {}", h.first, h.last)));
            lost = true;
            continue;
        }
        if h.file_name() != name {
            walker.problem(at(format!(
                "its header says it holds entries {} to {}, which is file {} (renamed, or files swapped?)",
                h.first,
                h.last,
                h.file_name()
            )));
        }
        match Signed::<Checkpoint>::decode(&r.checkpoint) {
            Err(e) => walker.problem(at(format!("its checkpoint is not a valid signed checkpoint: {e}"))),
            Ok(cp) => {
                let key = *signer.get_or_insert(*cp.signer());
                if let Some(p) = checkpoint_problem(&cp, member, Some(&key)) {
                    walker.problem(at(p));
                } else if cp.body().seq != h.last || cp.body().head != h.head {
                    walker.problem(at(format!(
                        "its checkpoint covers entry {} with hash {}, not its last entry {} with hash {}",
                        cp.body().seq,
                        cp.body().head,
                        h.last,
                        h.head
                    )));
                }
            }
        }
        link_to_before(&h, before.as_ref(), lost, dir, walker, &at);
        walker.place = format!("segment {name}: ");
        let (mut seq, mut times) = (h.first, None);
        let read = loop {
            match r.next_entry(&mut buf) {
                Ok(false) => break Ok(()),
                Ok(true) => {}
                Err(e) => break Err(e),
            }
            if let Some(l) = walker.entry(seq, &buf) {
                if seq == h.first && l.prev != h.prev.0 {
                    walker.problem(at(format!("its first entry's prev is not the hash its header names ({})", h.prev)));
                }
                let (lo, hi) = times.get_or_insert((l.time, l.time));
                *lo = (*lo).min(l.time);
                *hi = (*hi).max(l.time);
            }
            seq = seq.saturating_add(1);
        };
        walker.place = String::new();
        let count = seq - h.first;
        if let Err(e) = read {
            walker.problem(at(e.to_string()));
        } else if seq != h.last.saturating_add(1) {
            walker.problem(at(if seq <= h.last {
                format!(
                    "it ends after entry {}, its header says its last entry is {} (truncated?)",
                    seq.saturating_sub(1),
                    h.last
                )
            } else {
                format!("it holds entries up to {}, past the last its header names ({})", seq - 1, h.last)
            }));
        } else if let Some((last_seq, last_hash)) = walker.last()
            && last_seq == h.last
            && last_hash != h.head
        {
            walker.problem(at(format!(
                "its last entry {} has hash {last_hash}, its header and checkpoint say {} (altered?)",
                h.last, h.head
            )));
        }
        if let Some((lo, hi)) = times
            && (lo, hi) != (h.min_time, h.max_time)
        {
            walker.problem(at(format!(
                "its header gives the entries' times as {} to {}, they are {lo} to {hi}",
                h.min_time, h.max_time
            )));
        }
        end.segments += 1;
        end.entries += count;
        end.last = Some(SegmentEnd { seq: h.last, hash: h.head, name: name.clone() });
        before = Some(Before { name, file_hash: r.file_hash(), last: h.last, head: h.head });
        lost = false;
    }
    end
}

/// Checks that segment `h` continues `before` (or starts the log, when it is the first).
fn link_to_before(
    h: &segment::Header,
    before: Option<&Before>,
    lost: bool,
    dir: &Path,
    walker: &mut Walker<'_>,
    at: &dyn Fn(String) -> String,
) {
    let zero = Hash([0; 32]);
    let Some(b) = before else {
        if lost {
            walker.jump_to(h.first);
        } else if h.first != 0 {
            walker.problem(at(format!(
                "it is the oldest segment in {} but starts at entry {}: the segments before it (from entry 0) are missing",
                dir.display(),
                h.first
            )));
            walker.jump_to(h.first);
        } else if h.previous != zero {
            walker.problem(at(format!(
                "it starts the log but names a previous segment (hash {}); only the first segment names none",
                h.previous
            )));
        }
        return;
    };
    if lost {
        walker.jump_to(h.first);
        return;
    }
    let next = b.last.saturating_add(1);
    if h.first > next {
        walker.problem(at(format!(
            "entries {next} to {} are missing between segments {} and this one (a segment dropped?)",
            h.first - 1,
            b.name
        )));
        walker.jump_to(h.first);
    } else if h.first < next {
        walker.problem(at(format!(
            "it starts at entry {}, inside segment {} (which ends at entry {}): segments overlap or are out of order",
            h.first, b.name, b.last
        )));
        walker.jump_to(h.first);
    } else if h.prev != b.head {
        walker.problem(at(format!(
            "its first entry's prev ({}) is not the hash of the last entry of {} ({})",
            h.prev, b.name, b.head
        )));
    }
    if h.previous != b.file_hash {
        walker.problem(at(format!(
            "it names the previous segment file's hash as {}, but {} hashes to {} (altered, replaced or reordered)",
            h.previous, b.name, b.file_hash
        )));
    }
}

/// What is wrong with the newest segment, for the plain verify.
pub enum NewestProblem {
    Missing,
    Bad(String),
}

/// The newest segment is the file the log recorded: same name and last entry, its checkpoint
/// the member's and covering that entry, and the same file hash.
pub fn check_newest(
    path: &Path,
    a: &ArchivedThrough,
    member: &MemberId,
    signer: Option<&PublicKey>,
) -> Result<(), NewestProblem> {
    let mut r = match Reader::open(path) {
        Ok(r) => r,
        Err(segment::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NewestProblem::Missing);
        }
        Err(e) => return Err(NewestProblem::Bad(e.to_string())),
    };
    let h = r.header.clone();
    if h.member != *member || h.last != a.seq || h.head != a.hash {
        return Err(NewestProblem::Bad(format!(
            "it holds {}'s entries up to {} (hash {}), the live log continues {member}'s entry {} (hash {})",
            h.member, h.last, h.head, a.seq, a.hash
        )));
    }
    match Signed::<Checkpoint>::decode(&r.checkpoint) {
        Err(e) => return Err(NewestProblem::Bad(format!("its checkpoint is not a valid signed checkpoint: {e}"))),
        Ok(cp) => {
            if let Some(p) = checkpoint_problem(&cp, member, signer) {
                return Err(NewestProblem::Bad(p));
            }
            if cp.body().seq != h.last || cp.body().head != h.head {
                return Err(NewestProblem::Bad(format!(
                    "its checkpoint covers entry {}, not its last entry {}",
                    cp.body().seq,
                    h.last
                )));
            }
        }
    }
    let mut buf = Vec::new();
    loop {
        match r.next_entry(&mut buf) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(NewestProblem::Bad(e.to_string())),
        }
    }
    if r.file_hash() != a.segment_hash {
        return Err(NewestProblem::Bad(format!(
            "the file hashes to {}, not {} as the log recorded when it was written (altered or replaced)",
            r.file_hash(),
            a.segment_hash
        )));
    }
    Ok(())
}

/// Checks the segments in `dir` with nothing else: no live log, so the end of the chain is
/// whatever its newest segment says (an auditor holding the archive alone). `member` defaults
/// to the oldest segment's; `key` is the member's key from the roster (without it, checkpoints
/// must at least all carry one key).
pub fn verify_segments(dir: &Path, member: Option<&MemberId>, key: Option<&PublicKey>) -> VerifyReport {
    let mut problems = Problems::default();
    let member = match member.cloned().or_else(|| first_member(dir)) {
        Some(m) => m,
        None => {
            problems.push(format!("{} holds no readable segment files (*.{})", dir.display(), segment::EXTENSION));
            return VerifyReport::from_parts(problems, 0, None, ChainEnd::default());
        }
    };
    let mut walker = Walker::without_claims(&mut problems);
    let end = walk_segments(dir, &member, key, &mut walker);
    let last = walker.last();
    drop(walker);
    if end.segments == 0 {
        problems.push(format!("{} holds no segment files (*.{})", dir.display(), segment::EXTENSION));
    }
    VerifyReport::from_parts(problems, 0, last, end)
}

/// Whose segments `dir` holds (the oldest readable one's member).
pub fn segment_member(dir: &Path) -> Option<MemberId> {
    first_member(dir)
}

fn first_member(dir: &Path) -> Option<MemberId> {
    segment::list(dir).ok()?.iter().find_map(|p| Reader::open(p).ok().map(|r| r.header.member))
}
