//! The cost of durability: provenance appends made durable with group commit (64 writers, each
//! waiting until its entry is on disk, sharing WAL syncs) against the same appends left in the
//! write-ahead log's buffers, both on the same filesystem in the same run. Also shown: one sync
//! per entry, what the node would pay without group commit.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use deltafed_node::durable::Durable;
use deltafed_node::provenance::{Provenance, Record};
use deltafed_node::store::Store;
use deltafed_protocol::provenance::{EntryKind, Evidence};
use deltafed_protocol::{SecretKey, Timestamp};

use super::{Row, Sizes};

const WRITERS: usize = 64;

fn record(i: u64) -> Record {
    Record {
        time: Timestamp(1_700_000_000_000 + i),
        kind: EntryKind::QueryServed,
        dataset: Some("bench/dataset".parse().expect("valid ref")),
        peer: Some("peer".parse().expect("valid member")),
        exchange: None,
        note: format!("grant 0123456789abcdef0123456789abcdef; purpose: benchmark; key {i}"),
        objects: vec![Evidence { kind: "query-answer".into(), bytes: vec![0x5a; 300] }],
        calls: Vec::new(),
        also: Vec::new(),
    }
}

fn open(dir: &std::path::Path, name: &str) -> Result<(Store, Arc<Provenance>)> {
    let store = Store::open(&dir.join(name))?;
    let prov = Provenance::open(store.clone(), "bench".parse()?, Some(SecretKey::from_seed([9; 32])))?;
    Ok((store, Arc::new(prov)))
}

/// Appends `n` entries from `WRITERS` tasks; `sync` says how each waits. Returns entries/s.
fn appends(rt: &tokio::runtime::Runtime, prov: Arc<Provenance>, durable: Option<Arc<Durable>>, n: u64) -> Result<f64> {
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS as u64 {
            let (prov, durable) = (prov.clone(), durable.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < n {
                    prov.append(record(i))?;
                    if let Some(d) = &durable {
                        d.sync().await?;
                    }
                    i += WRITERS as u64;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// One synced write per entry, one writer: no sharing.
fn one_sync_each(store: &Store, prov: &Provenance, n: u64) -> Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        prov.append(record(i))?;
        store.sync_wal()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    // Beside the other benchmarks' data, on the filesystem the nodes use.
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let n = (s.queries as u64 * 5).max(20_000);
    let (_, buffered) = open(dir.path(), "buffered")?;
    let unsynced = appends(&rt, buffered, None, n)?;
    let (store, grouped) = open(dir.path(), "grouped")?;
    let durable = Arc::new(Durable::new(store));
    let group = appends(&rt, grouped, Some(durable.clone()), n)?;
    let (tickets, syncs) = durable.counts();
    let (store, single) = open(dir.path(), "single")?;
    let each = one_sync_each(&store, &single, (n / 20).max(500))?;
    Ok(vec![Row {
        figure: format!("durable provenance appends, group commit ({WRITERS} writers)"),
        value: group,
        unit: "entries/s",
        baseline: Some(("the same appends, not synced".into(), unsynced)),
        target: "cost of durability (no target)".into(),
        met: true,
        note: format!(
            "{syncs} syncs for {tickets} entries ({:.0} entries per sync); one sync per entry instead: {each:.0} entries/s",
            tickets as f64 / syncs.max(1) as f64
        ),
    }])
}
