//! CPU time accounting, to say where a CPU-bound figure's cores went and what the unavoidable
//! parts of the work cost on this machine.

use anyhow::{Context, Result};
use deltafed_protocol::{Kind, SecretKey};

/// Linux reports process CPU time in clock ticks of USER_HZ, which is 100 on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) a process has used so far; `None` means this one.
pub fn seconds(pid: Option<u32>) -> Result<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name (which is in parentheses and may hold spaces): utime and
    // stime are fields 14 and 15 of the line, so 12 and 13 after the closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat line")?.parse::<u64>().context("bad /proc stat field")? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / USER_HZ)
}

/// Microseconds of one core that the signatures of one record query cost here: the requester
/// signs the request, the provider verifies it and signs the answer, the requester verifies the
/// answer (strict verification, as the node does), over bodies of realistic size.
pub fn query_signatures_us(rounds: usize) -> f64 {
    let key = SecretKey::from_seed([9; 32]);
    let public = key.public();
    let request = vec![0x11u8; 160];
    let answer = vec![0x22u8; 230];
    let start = std::time::Instant::now();
    let mut ok = 0usize;
    for _ in 0..rounds {
        let s1 = key.sign(Kind::QueryRequest, &request);
        ok += usize::from(public.verify(Kind::QueryRequest, &request, &s1).is_ok());
        let s2 = key.sign(Kind::QueryAnswer, &answer);
        ok += usize::from(public.verify(Kind::QueryAnswer, &answer, &s2).is_ok());
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / rounds.max(1) as f64;
    // Used, so the loop is not optimized away; always 2 per round.
    if ok != 2 * rounds { f64::NAN } else { us }
}
