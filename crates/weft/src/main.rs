//! The `weft` binary: parses flags and `node.toml`, turns them into validated settings, and
//! wires a node, its API and the operator commands. The only place that knows the CLI and
//! configuration files.

mod account;
mod audit;
mod config;
mod jobs;
mod keys;
mod ledger;
mod local;
mod models;
mod node_cmd;
mod objects;
mod ops;
mod pipeline;
mod repair;
mod tunnel;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// weft: a decentralized cloud of independently owned nodes.
#[derive(Parser, Debug)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    /// Node data directory [default: $WEFT_DATA, else ~/.weft/node]
    #[arg(long, global = true, env = "WEFT_DATA")]
    data: Option<PathBuf>,

    /// Account data commands act as (one in your config dir; see `weft account`)
    #[arg(long, global = true, env = "WEFT_ACCOUNT")]
    account: Option<String>,

    /// The node data commands go through: ID@HOST:PORT (its id and QUIC address: encrypted,
    /// from anywhere) or HOST:PORT (its API address, on this machine) [default: the local node]
    #[arg(long, global = true, env = "WEFT_NODE")]
    node: Option<String>,

    /// Log filter for commands that run a node (e.g. info, debug, weft_fabric=debug)
    #[arg(long, global = true, env = "WEFT_LOG")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new fabric with this node as its first (admin) node
    Init(node_cmd::InitArgs),
    /// Run the node in the foreground
    Run(node_cmd::RunArgs),
    /// Print a single-use invite for a new node (admin node only)
    Invite(ops::InviteArgs),
    /// Redeem an invite: become a member of its fabric, then run the node
    Join(node_cmd::JoinArgs),
    /// Revoke a node's membership; every node refuses it from then on (admin node only)
    Revoke(ops::RevokeArgs),
    /// The fabric's policy for accounts: open or invite-only, admit, dismiss, quotas (admin
    /// node only)
    #[command(subcommand)]
    Fabric(ops::FabricCommand),
    /// Show this node's status
    Status(JsonFlag),
    /// List the fabric's nodes as this node sees them
    Nodes(JsonFlag),
    /// Your accounts: create, recover, show, list, export a node's old account
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// Create, list or delete buckets
    #[command(subcommand)]
    Bucket(objects::BucketCommand),
    /// Store a file as BUCKET/KEY (or, without a target, get a capability for it)
    Put(objects::PutArgs),
    /// Read BUCKET/KEY or a capability
    Get(objects::GetArgs),
    /// List buckets, or the objects in BUCKET[/PREFIX]
    Ls(objects::LsArgs),
    /// Delete BUCKET/KEY
    Rm(objects::RmArgs),
    /// What your account stores, and the quota the fabric's admin set for it
    Usage(JsonFlag),
    /// Make, list or delete access keys for the S3 gateway
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Print a capability that lets anyone in the fabric read BUCKET/KEY
    Share(objects::ShareArgs),
    /// Show an object's size, coding and where each shard lives
    Stat(objects::StatArgs),
    /// Run WebAssembly jobs near their data: run, ls, status, logs, cancel
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Models as fabric objects, served by inference nodes: add, ls, place, rm
    #[command(subcommand)]
    Model(models::ModelCommand),
    /// Run a pipeline of jobs (a TOML DAG of steps) and show its steps: run, status
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// The fabric's ledger: status, your balance, history and receipts, verify it yourself
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Audit the fabric for your account: walk the whole ledger, prove where each of your
    /// objects' shards lives, and that every job you paid for has its receipts
    Audit(audit::AuditArgs),
    /// This node, as its operator sees it: earnings
    #[command(subcommand)]
    Node(ledger::NodeCommand),
    /// Self-healing: repair status, check now, scrub now
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Start a local multi-site fabric of node processes on this machine
    Up(local::UpArgs),
    /// Stop a local fabric started with `weft up`
    Down(local::DownArgs),
    /// Run a benchmark and print its figures
    #[command(subcommand)]
    Bench(weft_bench::BenchCommand),
}

#[derive(Args, Debug)]
struct JsonFlag {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`weft nodes | head`), as command-line tools do.
    // SAFETY: setting a signal disposition to the default before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let who = account::Actor {
        data: cli.data.clone(),
        node: cli.node.clone(),
        account: cli.account.clone(),
    };
    let result = match cli.command {
        Command::Init(a) => node_cmd::init(cli.data, a),
        Command::Run(a) => node_cmd::run(cli.data, cli.log, a),
        Command::Join(a) => node_cmd::join(cli.data, cli.log, a),
        Command::Invite(a) => ops::invite(cli.data, a),
        Command::Revoke(a) => ops::revoke(cli.data, a),
        Command::Fabric(c) => ops::fabric(cli.data, c),
        Command::Status(j) => ops::status(cli.data, j.json),
        Command::Nodes(j) => ops::nodes(cli.data, j.json),
        Command::Bucket(b) => objects::bucket(&who, b),
        Command::Ls(a) => objects::ls(&who, a),
        Command::Rm(a) => objects::rm(&who, a),
        Command::Usage(j) => objects::usage(&who, j.json),
        Command::Share(a) => objects::share(&who, a),
        Command::Account(a) => account::run(cli.data, a),
        Command::Key(k) => keys::run(&who, k),
        Command::Put(a) => objects::put(&who, a),
        Command::Get(a) => objects::get(&who, a),
        Command::Stat(a) => objects::stat(&who, a),
        Command::Job(j) => jobs::run(&who, j),
        Command::Pipeline(p) => pipeline::run(&who, p),
        Command::Model(m) => models::run(&who, m),
        Command::Repair(r) => repair::run(cli.data, r),
        Command::Ledger(l) => ledger::run(&who, l),
        Command::Audit(a) => audit::run(&who, a),
        Command::Node(n) => ledger::run_node(&who, n),
        Command::Up(a) => local::up(a),
        Command::Down(a) => local::down(a),
        Command::Bench(b) => weft_bench::run(b),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The data directory to use when none was given.
fn default_data_dir() -> PathBuf {
    home().join(".weft").join("node")
}

/// The user's home directory (or the current directory when $HOME is unset).
fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}
