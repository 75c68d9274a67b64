//! `weft model`: models as fabric objects. `add` stores a model's files as objects of one of
//! your buckets (encrypted, erasure-coded, under the bucket's residency) and claims its name;
//! nodes with the inference role that the placement picks fetch the files, check their BLAKE3
//! and load them. `ls` shows where each model is served; `place` changes how many replicas
//! and where; `rm` removes the model (its files stay objects of the bucket).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use weft_api::{AddModel, ModelListing, PlaceModel};
use weft_data::BucketRecord;
use weft_inference::{ModelFile, ModelKind, ModelRecord};

use crate::account::Actor;
use crate::objects::{path_escape, share_capability};

/// `weft model ...`.
#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Add a model: a .gguf file (chat) or a folder with config.json, tokenizer.json and
    /// model.safetensors (embeddings), stored in one of your buckets
    Add(AddArgs),
    /// List every model, with the nodes serving it
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Change how many nodes serve a model and where
    Place {
        /// The model
        name: String,
        /// How many nodes should serve it
        #[arg(long)]
        replicas: Option<u32>,
        /// A region it may be served in (repeat)
        #[arg(long = "region")]
        regions: Vec<String>,
        /// A jurisdiction it may be served in (repeat)
        #[arg(long = "jurisdiction")]
        jurisdictions: Vec<String>,
    },
    /// Remove a model (its files stay objects of their bucket)
    Rm {
        /// The model
        name: String,
    },
}

/// `weft model add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Its name
    name: String,
    /// A .gguf file, or a folder with config.json, tokenizer.json and model.safetensors
    path: PathBuf,
    /// The bucket its files go to (its residency bounds where the model is served)
    #[arg(long)]
    bucket: String,
    /// chat or embeddings (default: from the path)
    #[arg(long)]
    kind: Option<String>,
    /// How many nodes should serve it
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// A region it may be served in (repeat; default: the bucket's regions)
    #[arg(long = "region")]
    regions: Vec<String>,
    /// A jurisdiction it may be served in (repeat; default: the bucket's)
    #[arg(long = "jurisdiction")]
    jurisdictions: Vec<String>,
}

/// Run a model command.
pub fn run(who: &Actor, cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::Add(a) => add(who, a),
        ModelCommand::Ls { json } => ls(who, json),
        ModelCommand::Place {
            name,
            replicas,
            regions,
            jurisdictions,
        } => {
            let api = who.client(true, &[])?;
            let body = PlaceModel {
                replicas,
                regions: (!regions.is_empty()).then_some(regions),
                jurisdictions: (!jurisdictions.is_empty()).then_some(jurisdictions),
            };
            let m: ModelRecord = api.put_json_answer(
                &format!("/v1/models/{}/placement", path_escape(&name)),
                &body,
            )?;
            eprintln!(
                "model {}: {} replica(s){}; `weft model ls` shows them as they load",
                m.name,
                m.replicas,
                where_(&m)
            );
            Ok(())
        }
        ModelCommand::Rm { name } => {
            let api = who.client(true, &[])?;
            api.delete(&format!("/v1/models/{}", path_escape(&name)))?;
            eprintln!("removed model {name} (its files stay in their bucket)");
            Ok(())
        }
    }
}

fn where_(m: &ModelRecord) -> String {
    let mut parts = Vec::new();
    if !m.regions.is_empty() {
        parts.push(format!("regions {}", m.regions.join(",")));
    }
    if !m.jurisdictions.is_empty() {
        parts.push(format!("jurisdictions {}", m.jurisdictions.join(",")));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" in {}", parts.join(", "))
    }
}

/// The files of a model at `path`, and its kind.
fn model_files(path: &Path, kind: Option<&str>) -> Result<(ModelKind, Vec<PathBuf>)> {
    let kind = match kind {
        Some("chat") => Some(ModelKind::Chat),
        Some("embeddings") => Some(ModelKind::Embeddings),
        Some(other) => bail!("--kind {other:?}: chat or embeddings"),
        None => None,
    };
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let kind = kind.unwrap_or(ModelKind::Embeddings);
        if kind == ModelKind::Chat {
            bail!("a chat model is one .gguf file, not a folder");
        }
        let files = kind
            .required()
            .iter()
            .map(|f| path.join(f))
            .collect::<Vec<_>>();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            bail!(
                "{} has no {} (an embeddings model needs config.json, tokenizer.json and model.safetensors)",
                path.display(),
                missing.file_name().unwrap_or_default().to_string_lossy()
            );
        }
        Ok((kind, files))
    } else {
        let is_gguf = path.extension().is_some_and(|x| x == "gguf");
        match kind {
            Some(ModelKind::Embeddings) => {
                bail!(
                    "an embeddings model is a folder (config.json, tokenizer.json, model.safetensors)"
                )
            }
            _ if !is_gguf => bail!("{}: a chat model is a .gguf file", path.display()),
            _ => Ok((ModelKind::Chat, vec![path.to_path_buf()])),
        }
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

fn add(who: &Actor, a: AddArgs) -> Result<()> {
    weft_inference::check_model_name(&a.name)?;
    let (kind, paths) = model_files(&a.path, a.kind.as_deref())?;
    let api = who.client(true, &[&a.bucket])?;
    let bucket: BucketRecord = api.get(&format!("/v1/buckets/{}", path_escape(&a.bucket)))?;
    let mut files = Vec::new();
    for path in &paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: not a plain file name", path.display()))?
            .to_string();
        let key = format!(".weft/models/{}/{name}", a.name);
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        eprintln!(
            "storing {name} ({:.1} MiB) as {}/{key}",
            file.metadata()?.len() as f64 / 1048576.0,
            a.bucket
        );
        // Hashed as it is uploaded: the file is read once.
        let mut reader = Hashing {
            inner: file,
            hasher: blake3::Hasher::new(),
            size: 0,
        };
        let _: weft_api::PutAnswer = api.upload_put(
            &format!("/v1/b/{}/{}", path_escape(&a.bucket), path_escape(&key)),
            &mut reader,
        )?;
        let (size, hasher) = (reader.size, reader.hasher);
        files.push(ModelFile {
            name,
            size,
            blake3: hasher.finalize().to_hex().to_string(),
            capability: share_capability(&api, &format!("{}/{key}", a.bucket))?,
        });
    }
    let body = AddModel {
        name: a.name.clone(),
        kind,
        files,
        replicas: a.replicas,
        regions: if a.regions.is_empty() {
            bucket.policy.regions.clone()
        } else {
            a.regions
        },
        jurisdictions: if a.jurisdictions.is_empty() {
            bucket.policy.jurisdictions.clone()
        } else {
            a.jurisdictions
        },
    };
    let m: ModelRecord = api.post("/v1/models", &body)?;
    println!(
        "added model {} ({}, {} file(s), {:.1} MiB): {} replica(s){}; `weft model ls` shows them as they load",
        m.name,
        m.kind,
        m.files.len(),
        m.size() as f64 / 1048576.0,
        m.replicas,
        where_(&m)
    );
    Ok(())
}

fn ls(who: &Actor, json: bool) -> Result<()> {
    let api = who.client(false, &[])?;
    let models: Vec<ModelListing> = api.get("/v1/models")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&models)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<10} {:>9} {:>8}  {:<20} OWNER",
        "NAME", "KIND", "MIB", "REPLICAS", "WHERE"
    );
    for l in &models {
        let m = &l.model;
        let place = where_(m);
        println!(
            "{:<20} {:<10} {:>9.1} {:>8}  {:<20} {}",
            m.name,
            m.kind,
            l.size as f64 / 1048576.0,
            m.replicas,
            if place.is_empty() {
                "anywhere".into()
            } else {
                place.trim_start_matches(" in ").to_string()
            },
            &m.owner.to_hex()[..12]
        );
        for r in &l.replicas_now {
            println!(
                "    {} {:<10} {:<8}{}",
                &r.node[..12],
                r.site,
                r.state,
                r.error
                    .as_deref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
