//! Spread: the time from a publish returning to the manifest being in every catalog, for the
//! 4-province testnet and for a larger local federation (one node per city of the Delta).

use std::time::{Duration, Instant};

use anyhow::Result;
use deltafed_node::admin::api::{CatalogItem, Request};
use deltafed_node::admin::client::Client;

use super::{Row, Sizes};
use crate::{Federation, path_str};

/// The 41 prefecture-level cities of Shanghai, Jiangsu, Zhejiang and Anhui.
const CITIES: [&str; 41] = [
    "shanghai",
    "nanjing",
    "wuxi",
    "xuzhou",
    "changzhou",
    "suzhou",
    "nantong",
    "lianyungang",
    "huaian",
    "yancheng",
    "yangzhou",
    "zhenjiang",
    "taizhou-js",
    "suqian",
    "hangzhou",
    "ningbo",
    "wenzhou",
    "jiaxing",
    "huzhou",
    "shaoxing",
    "jinhua",
    "quzhou",
    "zhoushan",
    "taizhou-zj",
    "lishui",
    "hefei",
    "huaibei",
    "bozhou",
    "suzhou-ah",
    "bengbu",
    "fuyang",
    "huainan",
    "chuzhou",
    "luan",
    "maanshan",
    "wuhu",
    "xuancheng",
    "tongling",
    "chizhou",
    "anqing",
    "huangshan",
];

fn spread(members: &[&str]) -> Result<(f64, f64)> {
    let mut fed = Federation::init(members)?;
    fed.start_all()?;
    fed.wait_mesh(members, Duration::from_secs(120))?;
    let src = fed.root().join("m.csv");
    std::fs::write(&src, "id,v\n1,2\n")?;
    let publisher = members[0];
    // Baseline: a publish of another dataset, which is all local work (import, sign, store).
    let t0 = Instant::now();
    fed.json(publisher, &["publish", path_str(&src)?, "--dataset", "warmup", "--title", "W"])?;
    let local_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut clients = Vec::new();
    for m in members {
        let d = fed.data_dir(m);
        clients.push(Client::connect(&d, &d.join("admin.sock"))?);
    }
    let mut pc = Client::connect(&fed.data_dir(publisher), &fed.data_dir(publisher).join("admin.sock"))?;
    let req = Request::Publish(deltafed_node::admin::api::PublishRequest {
        path: src.clone(),
        dataset: "spread".parse()?,
        title: "Spread".into(),
        description: String::new(),
        classification: deltafed_protocol::manifest::Classification::General,
        sharing: deltafed_protocol::manifest::Sharing::Conditional,
        key_field: None,
        format: None,
    });
    let start = Instant::now();
    pc.call_value(&req)?;
    let deadline = start + Duration::from_secs(30);
    let mut pending: Vec<usize> = (0..members.len()).collect();
    let query = Request::Catalog { publisher: Some(publisher.parse()?), query: Some("spread".into()) };
    while !pending.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the manifest did not reach {} node(s) in 30 s", pending.len());
        let mut still = Vec::new();
        for i in pending {
            let items: Vec<CatalogItem> = clients[i].call(&query)?;
            if items.is_empty() {
                still.push(i);
            }
        }
        pending = still;
    }
    Ok((start.elapsed().as_secs_f64() * 1e3, local_ms))
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let four = ["shanghai", "jiangsu", "zhejiang", "anhui"];
    let (ms4, local4) = spread(&four)?;
    let big = &CITIES[..s.big_federation.min(CITIES.len())];
    let (msb, localb) = spread(big)?;
    Ok(vec![
        Row {
            figure: "manifest in every catalog, 4 nodes".into(),
            value: ms4,
            unit: "ms",
            baseline: Some(("local publish".into(), local4)),
            target: "< 1000".into(),
            met: ms4 < 1000.0,
            note: "includes polling every catalog through the local API".into(),
        },
        Row {
            figure: format!("manifest in every catalog, {} nodes", big.len()),
            value: msb,
            unit: "ms",
            baseline: Some(("local publish".into(), localb)),
            target: "< 3000".into(),
            met: msb < 3000.0,
            note: if big.len() < 41 {
                "quick mode: fewer nodes than the 41 of the full figure".into()
            } else {
                String::new()
            },
        },
    ])
}
