//! `weft init`, `weft join`, `weft run`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use weft_core::{Invite, Placement};
use weft_node::{DataDir, Node};

use crate::config::{NodeFile, parse_addr};

/// Where a node is.
#[derive(Args, Debug, Clone, Default)]
pub struct PlacementArgs {
    /// Site (failure domain), e.g. a building or an operator
    #[arg(long)]
    pub site: Option<String>,
    /// Region, e.g. eu or us-east
    #[arg(long)]
    pub region: Option<String>,
    /// Jurisdiction (ISO country code), e.g. DE
    #[arg(long)]
    pub jurisdiction: Option<String>,
}

impl PlacementArgs {
    fn placement(&self) -> Result<Placement> {
        let clean = |what: &str, v: &Option<String>| -> Result<String> {
            let v = v.clone().unwrap_or_default();
            if v.len() > 64
                || v.chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            {
                bail!("--{what} {v:?}: use at most 64 letters, digits, '-', '_' or '.'");
            }
            Ok(v)
        };
        Ok(Placement {
            site: clean("site", &self.site)?,
            region: clean("region", &self.region)?,
            jurisdiction: clean("jurisdiction", &self.jurisdiction)?.to_ascii_uppercase(),
        })
    }
}

/// Network flags written to `node.toml`.
#[derive(Args, Debug, Clone, Default)]
pub struct NetArgs {
    /// UDP address for QUIC [default: 127.0.0.1:7400]
    #[arg(long)]
    pub listen: Option<String>,
    /// Address other nodes reach this one on (required when listening on 0.0.0.0)
    #[arg(long)]
    pub advertise: Option<String>,
    /// Local API address [default: 127.0.0.1:0]
    #[arg(long)]
    pub api: Option<String>,
    /// S3 gateway address, or "off" [default: 127.0.0.1:0]
    #[arg(long)]
    pub s3: Option<String>,
    /// OpenAI-compatible API address, or "off" [default: 127.0.0.1:0]
    #[arg(long)]
    pub openai: Option<String>,
}

/// `weft init`.
#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    placement: PlacementArgs,
    #[command(flatten)]
    net: NetArgs,
}

/// `weft join`.
#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The invite text printed by `weft invite`
    invite: String,
    #[command(flatten)]
    placement: PlacementArgs,
    #[command(flatten)]
    net: NetArgs,
    /// Only redeem the invite; do not start the node
    #[arg(long)]
    no_start: bool,
}

/// `weft run`.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Override the QUIC listen address from node.toml
    #[arg(long)]
    listen: Option<String>,
    /// Override the API address from node.toml
    #[arg(long)]
    api: Option<String>,
    /// Override the S3 gateway address from node.toml ("off" disables it)
    #[arg(long)]
    s3: Option<String>,
    /// Override the OpenAI-compatible API address from node.toml ("off" disables it)
    #[arg(long)]
    openai: Option<String>,
}

fn data_dir(data: Option<PathBuf>) -> PathBuf {
    data.unwrap_or_else(crate::default_data_dir)
}

fn write_config(dir: &Path, net: &NetArgs, extra: impl FnOnce(&mut NodeFile)) -> Result<()> {
    let mut file = NodeFile::load(dir)?;
    if let Some(l) = &net.listen {
        parse_addr("--listen", l)?;
        file.listen = Some(l.clone());
    }
    if let Some(a) = &net.advertise {
        parse_addr("--advertise", a)?;
        file.advertise = Some(a.clone());
    }
    if let Some(a) = &net.api {
        parse_addr("--api", a)?;
        file.api = Some(a.clone());
    }
    if let Some(a) = &net.s3 {
        if a != "off" {
            parse_addr("--s3", a)?;
        }
        file.s3.listen = Some(a.clone());
    }
    if let Some(a) = &net.openai {
        if a != "off" {
            parse_addr("--openai", a)?;
        }
        file.openai.listen = Some(a.clone());
    }
    extra(&mut file);
    file.settings(dir)?;
    file.save(dir)
}

/// Create a fabric.
pub fn init(data: Option<PathBuf>, args: InitArgs) -> Result<()> {
    let root = data_dir(data);
    let placement = args.placement.placement()?;
    let dir = DataDir::open(&root)?;
    dir.ensure_not_member()?;
    write_config(&root, &args.net, |_| {})?;
    let (fabric, cert) = weft_node::init_fabric(&dir, placement, weft_net::now_ms())?;
    println!("created fabric {fabric}");
    println!(
        "  admin node {} (site {:?})",
        cert.body.node, cert.body.placement.site
    );
    println!("  data in {}", root.display());
    println!(
        "next: `weft --data {} run`, then `weft invite` to add nodes",
        root.display()
    );
    Ok(())
}

/// Redeem an invite, then run unless `--no-start`.
pub fn join(data: Option<PathBuf>, log: Option<String>, args: JoinArgs) -> Result<()> {
    let root = data_dir(data);
    let invite = Invite::from_text(&args.invite)?;
    let placement = args.placement.placement()?;
    let dir = DataDir::open(&root)?;
    dir.ensure_not_member()?;
    write_config(&root, &args.net, |_| {})?;
    let key = dir.node_key()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cert = runtime.block_on(weft_node::redeem(&invite, &key, placement))?;
    dir.save_membership(&invite.body.admin, &invite.body.bootstrap, &cert)?;
    let p = &cert.body.placement;
    println!(
        "joined fabric {} as node {} (site {:?}, region {:?}, jurisdiction {:?})",
        cert.body.fabric, cert.body.node, p.site, p.region, p.jurisdiction
    );
    drop(runtime);
    if args.no_start {
        return Ok(());
    }
    run(Some(root), log, RunArgs::default())
}

/// Run the node until interrupted, revoked, or asked to stop.
pub fn run(data: Option<PathBuf>, log: Option<String>, args: RunArgs) -> Result<()> {
    let root = data_dir(data);
    let mut file = NodeFile::load(&root)?;
    if let Some(l) = args.listen {
        file.listen = Some(l);
    }
    if let Some(a) = args.api {
        file.api = Some(a);
    }
    if let Some(a) = args.s3 {
        file.s3.listen = Some(a);
    }
    if let Some(a) = args.openai {
        file.openai.listen = Some(a);
    }
    let settings = file.settings(&root)?;
    let api_addr = file.api_addr()?;
    let s3 = file.s3()?;
    let openai = file.openai()?;
    let queue = file.inference_queue()?;
    init_logging(log.or(file.log.clone()).as_deref().unwrap_or("info"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let node = Node::start(settings).await?;
        let token = node.data_dir().api_token()?;
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot bind the API on {api_addr}"))?;
        let bound = listener.local_addr()?;
        node.data_dir()
            .write_atomic(weft_api::API_ADDR_FILE, bound.to_string().as_bytes())?;
        // Clients elsewhere reach the API through the node's QUIC port (`--node ID@ADDR`).
        node.serve_api_tunnel(bound);
        node.data_dir()
            .write_atomic("node.pid", std::process::id().to_string().as_bytes())?;
        let gateway = match s3 {
            Some((addr, cfg)) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind the S3 gateway on {addr}"))?;
                let s3_bound = listener.local_addr()?;
                node.data_dir()
                    .write_atomic(weft_s3::S3_ADDR_FILE, s3_bound.to_string().as_bytes())?;
                let n = node.clone();
                node.spawn_service(async move {
                    if let Err(e) = weft_s3::serve(n, listener, cfg).await {
                        tracing::error!(error = %e, "S3 gateway failed");
                    }
                });
                Some(s3_bound)
            }
            None => None,
        };
        node.inference().set_queue(queue);
        let openai = match openai {
            Some((addr, cfg)) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot bind the OpenAI API on {addr}"))?;
                let bound = listener.local_addr()?;
                node.data_dir()
                    .write_atomic(weft_openai::OPENAI_ADDR_FILE, bound.to_string().as_bytes())?;
                let n = node.clone();
                node.spawn_service(async move {
                    if let Err(e) = weft_openai::serve(n, listener, cfg).await {
                        tracing::error!(error = %e, "OpenAI API failed");
                    }
                });
                Some(bound)
            }
            None => None,
        };
        println!(
            "node {} running: quic {} api http://{bound}{}{}",
            node.id(),
            node.addr(),
            gateway
                .as_ref()
                .map(|a| format!(" s3 http://{a}"))
                .unwrap_or_default(),
            openai
                .as_ref()
                .map(|a| format!(" openai http://{a}/v1"))
                .unwrap_or_default()
        );
        let n = node.clone();
        node.spawn_service(async move {
            if let Err(e) = weft_api::serve(n, listener, token).await {
                tracing::error!(error = %e, "API server failed");
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = node.stopped() => {}
        }
        // Stops the API and the S3 gateway too (they are the node's services) and frees
        // their ports.
        node.shutdown().await;
        if gateway.is_some() {
            let _ = std::fs::remove_file(node.data_dir().path(weft_s3::S3_ADDR_FILE));
        }
        if openai.is_some() {
            let _ = std::fs::remove_file(node.data_dir().path(weft_openai::OPENAI_ADDR_FILE));
        }
        let _ = std::fs::remove_file(node.data_dir().path(weft_api::API_ADDR_FILE));
        let _ = std::fs::remove_file(node.data_dir().path("node.pid"));
        if node.fabric().is_revoked() {
            bail!("this node's membership was revoked by the fabric admin");
        }
        Ok(())
    });
    // Whatever still runs on a blocking thread (a job's module stops within a tick of its
    // runner's shutdown) is not waited for past this.
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?}"))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    Ok(())
}
