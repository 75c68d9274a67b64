//! The row kinds of models. Every key of these kinds is made here.
//!
//! | kind | partition key | sort key | value | written by |
//! |---|---|---|---|---|
//! | `model` | `model` | model name | [`ModelRecord`] | first claimant of the name (the owner, account-wide sessions only) |
//! | `serve` | `serve/<model>` | node id | [`Serving`] | that node (a current member) |

use weft_core::NodeId;
use weft_meta::{Rules, Schema, Table, Writer, row_kind};

use crate::{ModelError, ModelRecord, Serving};

row_kind! {
    /// Model name claims.
    pub struct Models {
        kind: "model",
        writer: Writer::FirstClaim,
        part: (),
        sort: str,
        value: ModelRecord,
        partition: |_| String::new(),
    }
}

row_kind! {
    /// Which nodes hold a model (partition: its name), each in its own row (sort key: the
    /// node).
    pub struct Servers {
        kind: "serve",
        writer: Writer::SortKeyMember,
        part: String,
        sort: NodeId,
        value: Serving,
        partition: |model| model.clone(),
    }
}

/// Declare the model row kinds and their writer rules.
pub fn register(rules: &mut Rules) {
    rules.add(Models::KIND, Models::WRITER);
    rules.account_wide_only(Models::KIND);
    rules.add(Servers::KIND, Servers::WRITER);
}

/// Every model's row that a node may act on: claims whose signer is not the owner named in
/// them, and rows that do not validate (names and hashes become paths on every inference node,
/// whatever path wrote them), are left out.
pub async fn models(table: &Table) -> Result<Vec<ModelRecord>, ModelError> {
    let rows = table.list::<Models>(&(), "").await?;
    Ok(usable(rows.into_iter().filter_map(|(name, r)| {
        let signer = r.signer;
        r.known().filter(|m| m.owner == signer && m.name == name)
    })))
}

/// The models among `rows` that validate ([`ModelRecord::validate`]); the others are logged
/// and left alone.
pub fn usable(rows: impl IntoIterator<Item = ModelRecord>) -> Vec<ModelRecord> {
    rows.into_iter()
        .filter(|m| match m.validate() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(model = %m.name.escape_debug(), error = %e, "a model row does not validate; ignored");
                false
            }
        })
        .collect()
}

/// Which nodes say they hold `model`, and how.
pub async fn serving(table: &Table, model: &str) -> Result<Vec<(NodeId, Serving)>, ModelError> {
    let rows = table.list::<Servers>(&model.to_string(), "").await?;
    Ok(rows
        .into_iter()
        .filter_map(|(node, r)| {
            let id: NodeId = node.parse().ok()?;
            (r.signer == id).then_some(())?;
            Some((id, r.known()?))
        })
        .collect())
}
