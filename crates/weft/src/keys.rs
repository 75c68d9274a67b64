//! `weft key`: access keys for the S3 gateway.

use anyhow::Result;
use clap::{Args, Subcommand};
use weft_core::Scope;
use weft_data::{AccessKey, Session};

use crate::account::Actor;
use crate::ops::resolved_data_dir;

/// `weft key ...`.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make an access key for the S3 gateway (the secret is printed once)
    Create(CreateArgs),
    /// List access keys (without secrets)
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete an access key
    Rm {
        /// The key id (WK...)
        id: String,
    },
}

/// `weft key create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Only this bucket (default: every bucket of your account)
    #[arg(long)]
    bucket: Option<String>,
    /// May read (with neither --read nor --write: both)
    #[arg(long)]
    read: bool,
    /// May write (with neither --read nor --write: both)
    #[arg(long)]
    write: bool,
}

fn scope(k: &AccessKey) -> String {
    let rights = match (k.read, k.write) {
        (true, true) => "read+write",
        (true, false) => "read",
        _ => "write",
    };
    match &k.bucket {
        Some(b) => format!("{rights} on bucket {b}"),
        None => format!("{rights} on every bucket"),
    }
}

/// Run a key command.
pub fn run(who: &Actor, cmd: KeyCommand) -> Result<()> {
    let dir = resolved_data_dir(who.data.clone());
    match cmd {
        KeyCommand::Create(a) => {
            let (read, write) = if a.read || a.write {
                (a.read, a.write)
            } else {
                (true, true)
            };
            let api = who.client(true, &[])?;
            let account = who.account_key()?;
            // The key acts with a grant of exactly its scope, for as long as it exists; it
            // carries the legacy keys of the account's buckets from before accounts.
            let mine: Vec<weft_data::BucketRecord> = api.get("/v1/buckets")?;
            let names: Vec<&str> = mine
                .iter()
                .filter(|b| b.owner == account.public())
                .map(|b| b.name.as_str())
                .collect();
            // On a bucket shared with this account, the key acts with the grant itself (and
            // stops when the owner revokes it).
            let shared = match &a.bucket {
                Some(b) => who.granted(&account, b, write)?,
                None => None,
            };
            let grant = shared.unwrap_or_else(|| {
                Session::new(
                    &account,
                    a.bucket.as_deref().map_or(Scope::Account, Scope::bucket),
                    write,
                    weft_net::now_ms(),
                    u64::MAX,
                    &names,
                )
            });
            let k: AccessKey = api.post(
                "/v1/keys",
                &weft_api::CreateKey {
                    bucket: a.bucket,
                    read,
                    write,
                    grant: Some(grant.to_text()),
                },
            )?;
            let endpoint = match &who.node {
                Some(_) => "(the S3 address of that node; its operator knows it)".to_string(),
                None => std::fs::read_to_string(dir.join(weft_s3::S3_ADDR_FILE))
                    .map(|a| format!("http://{}", a.trim()))
                    .unwrap_or_else(|_| "(S3 gateway off on this node)".into()),
            };
            println!("access key  {}", k.id);
            println!("secret key  {}   (shown only now)", k.secret);
            println!("endpoint    {endpoint}");
            println!("scope       {}", scope(&k));
            println!();
            println!(
                "export AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} AWS_ENDPOINT_URL={endpoint} AWS_DEFAULT_REGION=us-east-1",
                k.id, k.secret
            );
            // The same key is the account's key for the OpenAI-compatible API.
            let openai = match &who.node {
                Some(_) => None,
                None => std::fs::read_to_string(dir.join(weft_openai::OPENAI_ADDR_FILE))
                    .ok()
                    .map(|a| format!(" OPENAI_BASE_URL=http://{}/v1", a.trim())),
            };
            println!(
                "export OPENAI_API_KEY={}.{}{}",
                k.id,
                k.secret,
                openai.unwrap_or_default()
            );
        }
        KeyCommand::Ls { json } => {
            let keys: Vec<AccessKey> = who.client(false, &[])?.get("/v1/keys")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in keys {
                    println!("{}  {}", k.id, scope(&k));
                }
            }
        }
        KeyCommand::Rm { id } => {
            who.client(true, &[])?.delete(&format!("/v1/keys/{id}"))?;
            println!("deleted access key {id}");
        }
    }
    Ok(())
}
