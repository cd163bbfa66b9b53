//! A fetch between two provinces over an emulated inter-province link: two network namespaces
//! joined by a relay that holds each frame 10 ms each way (20 ms round trip), the rate capped at
//! 1 Gbit/s by `tbf` (testnet/src/link.rs). Needs root, as the namespaces do.

use std::time::{Duration, Instant};

use anyhow::Result;
use deltafed_testnet::Federation;
use deltafed_testnet::link::{End, Link};

mod common;
use common::*;

#[test]
fn a_fetch_over_a_20_ms_link_takes_the_data_path_and_arrives_whole() -> Result<()> {
    let link = Link::new(Duration::from_millis(20), 1000)?;
    // The link really has its latency: a TCP connect (a refused one is one round trip) from A
    // to B takes at least the 20 ms the relay adds.
    let rtt = link.in_netns(End::A, || {
        let start = Instant::now();
        let _ = std::net::TcpStream::connect_timeout(&format!("{}:9", Link::addr(End::B)).parse()?, CONNECT);
        Ok(start.elapsed())
    })?;
    assert!(rtt >= Duration::from_millis(19), "a round trip over the link took {rtt:?}");

    let mut fed = Federation::init_on(&["shanghai", "zhejiang"], &[Link::addr(End::A), Link::addr(End::B)])?;
    fed.set_netns("shanghai", &link.netns(End::A));
    fed.set_netns("zhejiang", &link.netns(End::B));
    fed.start_all()?;
    fed.wait_mesh(&["shanghai", "zhejiang"], CONNECT)?;
    let data: Vec<u8> = (0..(24u32 << 20) + 3).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let path = file(&fed, "d.bin", &data)?;
    fed.json("zhejiang", &["publish", &path, "--dataset", "d", "--title", "D"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/d@1")?;
    fed.json("zhejiang", &["grant", "d", "--to", "shanghai", "--purpose", "cross-border"])?;
    let target = out(&fed, "d.out")?;
    let res = fed.json("shanghai", &["fetch", "zhejiang/d", "--out", &target])?;
    assert_eq!(res["transport"], "direct", "{res}");
    assert!(std::fs::read(&target)? == data, "the file crossed the link intact");
    assert_eq!(link.dropped(), 0, "the relay's queue never overflowed");
    Ok(())
}
