//! `weft-rogue INVITE DIR [ROUNDS] [PAUSE_SECS]`: a malicious member for attack campaigns
//! against a real fabric (`scripts/rogue-campaign.sh`). It redeems the invite like any joiner,
//! runs weft's node code as a member, and makes every attack of [`weft_cluster::attacks`]
//! `ROUNDS` times (default 5), `PAUSE_SECS` apart (default 5), printing what each round tried
//! and what honest nodes accepted. Never run it against a fabric you care about.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weft_cluster::Rogue;
use weft_core::{Invite, Placement};
use weft_node::{DataDir, Node, NodeSettings};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [invite, dir, rest @ ..] = args.as_slice() else {
        bail!("usage: weft-rogue INVITE DIR [ROUNDS] [PAUSE_SECS]");
    };
    let rounds: u32 = rest.first().map_or(Ok(5), |r| r.parse())?;
    let pause: u64 = rest.get(1).map_or(Ok(5), |p| p.parse())?;
    let invite = Invite::from_text(invite).context("not an invite")?;
    let path = PathBuf::from(dir);
    let data = DataDir::open(&path)?;
    let key = data.node_key()?;
    let cert = weft_node::redeem(&invite, &key, Placement::default())
        .await
        .context("the invite was not redeemed")?;
    data.save_membership(&invite.body.admin, &invite.body.bootstrap, &cert)?;
    let node = Node::start(NodeSettings {
        data_dir: path,
        listen: "127.0.0.1:0".parse()?,
        advertise: None,
        labels: Default::default(),
        capacity: Default::default(),
        wan: None,
        heal: Default::default(),
        timing: Default::default(),
        jobs: Default::default(),
        prices: Default::default(),
    })
    .await?;
    println!("weft-rogue: member {} joined", node.id());
    // Let membership and records settle: the attacks aim at what the rogue can see.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rogue = Rogue::new(&node);
    for round in 1..=rounds {
        let report = rogue.campaign().await;
        println!("weft-rogue: round {round}: {report:?}");
        tokio::time::sleep(Duration::from_secs(pause)).await;
    }
    node.shutdown().await;
    Ok(())
}
