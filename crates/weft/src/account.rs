//! `weft account`: accounts held by the people who use a fabric, and the sessions through which
//! any node acts for them.
//!
//! An account key lives in the user's config dir (`$WEFT_CONFIG`, else
//! `$XDG_CONFIG_HOME/weft`, else `~/.config/weft`), one file per account under `accounts/`
//! (32 bytes, mode 0600); its recovery phrase is the BIP-39 encoding of those 32 bytes, so the
//! phrase alone restores it anywhere. Data commands make a short-lived [`Session`] from it for
//! the node they talk to: the node never sees the account key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_api::ApiClient;
use weft_core::{Scope, SecretKey};
use weft_data::Session;

/// How long a CLI session lets a node act for the account (a long transfer must finish
/// within it).
const SESSION_TTL_MS: u64 = 24 * 3600 * 1000;

/// `weft account ...`.
#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Make a new account on this machine and show its recovery phrase (once)
    Create(NameArg),
    /// Restore an account from its recovery phrase (read from standard input)
    Recover(RecoverArgs),
    /// Show an account's id
    Show(ShowArgs),
    /// List the accounts on this machine
    Ls,
    /// Make a node's own account (its data dir's account.key, from before accounts) yours:
    /// copy it into your config and show its recovery phrase
    Export(NameArg),
    /// Use this account when no --account is given
    Default(NameArg),
}

/// An account name.
#[derive(Args, Debug)]
pub struct NameArg {
    /// Account name [default: "default", or "node" for export]
    name: Option<String>,
}

/// `weft account recover`.
#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// Account name [default: "default"]
    name: Option<String>,
    /// The phrase (otherwise read from standard input)
    #[arg(long)]
    phrase: Option<String>,
}

/// `weft account show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Account name [default: the default account]
    name: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// The user's config dir.
pub fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WEFT_CONFIG") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("weft");
    }
    crate::home().join(".config").join("weft")
}

fn accounts_dir() -> PathBuf {
    config_dir().join("accounts")
}

fn key_path(name: &str) -> PathBuf {
    accounts_dir().join(format!("{name}.key"))
}

fn check_name(name: &str) -> Result<()> {
    let ok = (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("account name {name:?}: 1 to 32 lowercase letters, digits, '-' or '_'");
    }
    Ok(())
}

/// The names of the accounts on this machine, sorted.
fn names() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(accounts_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".key"))
                .map(str::to_string)
        })
        .collect();
    out.sort();
    out
}

fn default_name() -> Option<String> {
    std::fs::read_to_string(config_dir().join("default-account"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn set_default(name: &str) -> Result<()> {
    let dir = config_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("default-account"), format!("{name}\n"))
        .with_context(|| format!("cannot write {}", dir.join("default-account").display()))
}

/// The account to act as: `name`, else the default one, else the only one.
pub fn load(name: Option<&str>) -> Result<(String, SecretKey)> {
    let name = match name.map(str::to_string).or_else(default_name) {
        Some(n) => n,
        None => match names().as_slice() {
            [only] => only.clone(),
            [] => bail!(
                "no account on this machine (looked in {}): make one with `weft account create`, \
                 or restore one with `weft account recover`",
                accounts_dir().display()
            ),
            many => bail!(
                "several accounts ({}): pick one with --account NAME or `weft account default NAME`",
                many.join(", ")
            ),
        },
    };
    check_name(&name)?;
    let path = key_path(&name);
    if !path.exists() {
        bail!(
            "no account {name:?} on this machine ({} does not exist); `weft account ls` lists them",
            path.display()
        );
    }
    let key = weft_net::load_or_create_key(&path)?;
    Ok((name, key))
}

fn phrase_of(key: &SecretKey) -> Result<String> {
    let m = bip39::Mnemonic::from_entropy(&key.seed()).context("cannot make a recovery phrase")?;
    Ok(m.to_string())
}

fn save(name: &str, key: &SecretKey) -> Result<PathBuf> {
    check_name(name)?;
    let path = key_path(name);
    if path.exists() {
        bail!(
            "an account named {name:?} exists already ({}); pick another name",
            path.display()
        );
    }
    weft_net::write_secret_file(&path, &key.seed())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if default_name().is_none() {
        set_default(name)?;
    }
    Ok(path)
}

fn print_created(name: &str, key: &SecretKey, path: &Path, verb: &str) -> Result<()> {
    println!("account {name} {verb}: {}", key.public().to_hex());
    println!("key file: {}", path.display());
    println!();
    println!("Recovery phrase (shown only now; anyone with it is this account):");
    println!("  {}", phrase_of(key)?);
    println!();
    println!("Restore it on another machine with `weft account recover {name}`.");
    Ok(())
}

/// `weft account ...`.
pub fn run(data: Option<PathBuf>, cmd: AccountCommand) -> Result<()> {
    match cmd {
        AccountCommand::Create(n) => {
            let name = n.name.unwrap_or_else(|| "default".into());
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = SecretKey::from_seed(seed);
            let path = save(&name, &key)?;
            print_created(&name, &key, &path, "created")
        }
        AccountCommand::Recover(a) => {
            let name = a.name.unwrap_or_else(|| "default".into());
            let phrase = match a.phrase {
                Some(p) => p,
                None => {
                    use std::io::Read;
                    eprintln!("recovery phrase (24 words), then Enter / Ctrl-D:");
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let words = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
            let m = bip39::Mnemonic::parse_normalized(&words)
                .map_err(|e| anyhow::anyhow!("not a recovery phrase: {e}"))?;
            let entropy = m.to_entropy();
            let seed: [u8; 32] = entropy.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "that phrase has {} words; a weft account's has 24",
                    phrase.split_whitespace().count()
                )
            })?;
            let key = SecretKey::from_seed(seed);
            let path = save(&name, &key)?;
            println!("account {name} recovered: {}", key.public().to_hex());
            println!("key file: {}", path.display());
            Ok(())
        }
        AccountCommand::Show(a) => {
            let (name, key) = load(a.name.as_deref())?;
            let default = default_name().as_deref() == Some(name.as_str());
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "name": name,
                        "id": key.public().to_hex(),
                        "default": default,
                        "file": key_path(&name),
                    })
                );
            } else {
                println!("account  {name}{}", if default { " (default)" } else { "" });
                println!("id       {}", key.public().to_hex());
                println!("file     {}", key_path(&name).display());
            }
            Ok(())
        }
        AccountCommand::Ls => {
            let default = default_name();
            for name in names() {
                let id = weft_net::load_or_create_key(&key_path(&name))
                    .map(|k| k.public().short())
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                let mark = if default.as_deref() == Some(name.as_str()) {
                    "*"
                } else {
                    " "
                };
                println!("{mark} {name:<16} {id}");
            }
            Ok(())
        }
        AccountCommand::Export(n) => {
            let name = n.name.unwrap_or_else(|| "node".into());
            let dir = crate::ops::resolved_data_dir(data);
            let path = dir.join("account.key");
            if !path.exists() {
                bail!(
                    "{} has no account.key: only data directories from before accounts have one",
                    dir.display()
                );
            }
            let key = weft_net::load_or_create_key(&path)?;
            if let Some(existing) = names().into_iter().find(|n| {
                weft_net::load_or_create_key(&key_path(n)).is_ok_and(|k| k.public() == key.public())
            }) {
                bail!("that account is already here, as {existing:?}");
            }
            let saved = save(&name, &key)?;
            print_created(&name, &key, &saved, "exported")
        }
        AccountCommand::Default(n) => {
            let name = n.name.unwrap_or_else(|| "default".into());
            check_name(&name)?;
            if !key_path(&name).exists() {
                bail!("no account {name:?} on this machine; `weft account ls` lists them");
            }
            set_default(&name)
        }
    }
}

/// Who a data command acts as, and through which node.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `--data`: the local node to use.
    pub data: Option<PathBuf>,
    /// `--node`: a node's API address.
    pub node: Option<String>,
    /// `--account`.
    pub account: Option<String>,
}

impl Actor {
    /// The account's key.
    pub fn account_key(&self) -> Result<SecretKey> {
        Ok(load(self.account.as_deref())?.1)
    }

    /// A client for the node, with no account (capability reads).
    pub fn anonymous(&self) -> Result<ApiClient> {
        if let Some(node) = &self.node {
            return match crate::tunnel::Target::parse(node)? {
                crate::tunnel::Target::Api(addr) => Ok(ApiClient::new(&addr, "")),
                crate::tunnel::Target::Quic(id, addr) => {
                    // One forwarder per process, however many requests the command makes.
                    static OPEN: std::sync::Mutex<Option<std::net::SocketAddr>> =
                        std::sync::Mutex::new(None);
                    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
                    let local = match *open {
                        Some(a) => a,
                        None => *open.insert(crate::tunnel::open(id, addr)?),
                    };
                    Ok(ApiClient::new(&local.to_string(), ""))
                }
            };
        }
        let dir = crate::ops::resolved_data_dir(self.data.clone());
        let file = dir.join(weft_api::API_ADDR_FILE);
        let addr = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "no running node found in {} ({}: not readable); start one with `weft run` or \
                 `weft up`, or name one with --node ADDR",
                dir.display(),
                file.display()
            )
        })?;
        Ok(ApiClient::new(addr.trim(), ""))
    }

    /// A client acting as the account, able to write if `write`; `buckets` are those the
    /// command touches (their legacy keys go along, for objects from before accounts).
    /// A bucket shared with the account (`weft bucket grant`) is used through its grant.
    pub fn client(&self, write: bool, buckets: &[&str]) -> Result<ApiClient> {
        let (_, key) = load(self.account.as_deref())?;
        if let [bucket] = buckets
            && let Some(granted) = self.granted(&key, bucket, write)?
        {
            return Ok(self.anonymous()?.with_session(granted.to_text()));
        }
        let session = Session::new(
            &key,
            Scope::Account,
            write,
            weft_net::now_ms(),
            SESSION_TTL_MS,
            buckets,
        );
        Ok(self.anonymous()?.with_session(session.to_text()))
    }

    /// The session of `bucket`'s grant to this account, if the bucket is another account's
    /// and shared with this one.
    pub fn granted(&self, key: &SecretKey, bucket: &str, write: bool) -> Result<Option<Session>> {
        // Asked with a short read-only session holding no bucket keys.
        let mut probe = Session::new(key, Scope::Account, false, weft_net::now_ms(), 60_000, &[]);
        probe.keys = weft_core::BucketKeys::default();
        let path = format!("/v1/buckets/{}/grant", crate::objects::path_escape(bucket));
        let lookup: weft_data::GrantLookup =
            match self.anonymous()?.with_session(probe.to_text()).get(&path) {
                Ok(l) => l,
                // No such bucket (yet): the command itself says what is wrong.
                Err(weft_api::ApiError::Refused { status: 404, .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
        if lookup.owner == key.public() {
            return Ok(None);
        }
        let Some(grant) = lookup.grant else {
            return Ok(None);
        };
        if write && !grant.write {
            bail!("bucket {bucket} is shared with this account read-only");
        }
        grant
            .open(key, &lookup.owner, bucket)
            .map(Some)
            .with_context(|| {
                format!("the grant of bucket {bucket} does not open with this account's key")
            })
    }
}

/// An account named on the command line: its id (64 hex digits, as `weft account show`
/// prints it) or the name of an account on this machine.
pub fn account_id(text: &str) -> Result<weft_core::NodeId> {
    if let Ok(id) = text.parse() {
        return Ok(id);
    }
    if names().iter().any(|n| n == text) {
        return Ok(load(Some(text))?.1.public());
    }
    bail!(
        "{text:?} is neither an account id (64 hex digits, from `weft account show`) nor an account on this machine"
    )
}
