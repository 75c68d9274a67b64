//! What the owner of a model does with it, through any node: add it, change where and how
//! widely it is served, remove it (its files stay objects of their bucket); and how every
//! model stands (where it is placed, where it is loaded, loading or failed).

use weft_data::Acting;
use weft_meta::{MetaError, Table, Value};

use crate::{ModelError, ModelRecord, schema};

/// The models of the account an [`Acting`] acts for.
pub struct ModelOwner<'a> {
    pub(crate) acting: &'a Acting,
    pub(crate) table: &'a Table,
}

impl ModelOwner<'_> {
    /// Add a model as this account: its files must be objects the account can read (checked
    /// by reading each capability's manifest is left to the nodes that load it).
    pub async fn add(&self, mut model: ModelRecord) -> Result<ModelRecord, ModelError> {
        model.owner = self.acting.account();
        model.created_ms = weft_net::now_ms();
        model.validate()?;
        match self
            .table
            .create::<schema::Models>(self.acting.signer()?, &(), &model.name, &model)
            .await
        {
            Ok(_) => Ok(model),
            Err(MetaError::Conflict) => Err(ModelError::Exists(model.name)),
            Err(e) => Err(e.into()),
        }
    }

    /// A model this account owns.
    async fn own_model(&self, name: &str) -> Result<ModelRecord, ModelError> {
        let row = self.table.get::<schema::Models>(&(), name).await?;
        let model = match row {
            Some(r) => {
                let signer = r.signer;
                match r.value {
                    Some(Value::Known(m)) if m.owner == signer && m.name == name => m,
                    _ => return Err(ModelError::NoModel(name.into())),
                }
            }
            None => return Err(ModelError::NoModel(name.into())),
        };
        if model.owner != self.acting.account() {
            return Err(ModelError::NotOwner(name.into()));
        }
        Ok(model)
    }

    /// Change where and how widely a model is served.
    pub async fn place(
        &self,
        name: &str,
        replicas: Option<u32>,
        regions: Option<Vec<String>>,
        jurisdictions: Option<Vec<String>>,
    ) -> Result<ModelRecord, ModelError> {
        let mut model = self.own_model(name).await?;
        if let Some(r) = replicas {
            model.replicas = r;
        }
        if let Some(r) = regions {
            model.regions = r;
        }
        if let Some(j) = jurisdictions {
            model.jurisdictions = j.iter().map(|j| j.to_ascii_uppercase()).collect();
        }
        model.validate()?;
        self.table
            .put::<schema::Models>(self.acting.signer()?, &(), name, Some(&model))
            .await?;
        Ok(model)
    }

    /// Remove a model (its files stay objects of their bucket).
    pub async fn remove(&self, name: &str) -> Result<(), ModelError> {
        self.own_model(name).await?;
        self.table
            .put::<schema::Models>(self.acting.signer()?, &(), name, None)
            .await?;
        Ok(())
    }
}
