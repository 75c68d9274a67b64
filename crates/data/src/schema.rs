//! The row kinds of buckets and named objects. Every key of these kinds is made here.
//!
//! A bucket's name is claimed fabric-wide (first claim holds it); everything in the bucket lives
//! in partitions whose key names the owning account, and only that account can sign them, so
//! another account can neither write nor delete a bucket's contents even by claiming its name.
//!
//! | kind | partition key | sort key | value | written by |
//! |---|---|---|---|---|
//! | `bucket` | `bucket` | bucket name | [`BucketRecord`] | first claimant of the name (the owner) |
//! | `so` | `so/<owner>/<bucket>` | sealed object key | sealed [`ObjectRecord`] (current version) | the owner |
//! | `sv` | `sv/<owner>/<bucket>/<sealed key>` | version id | sealed [`ObjectRecord`] (kept versions) | the owner |
//! | `su` | `su/<owner>/<bucket>` | upload id | sealed [`UploadRecord`] | the owner |
//! | `sp` | `sp/<owner>/<bucket>/<upload>` | part number, 5 digits | sealed [`PartRecord`] | the owner |
//! | `obj`, `ver`, `upl`, `part` | as `so`, `sv`, `su`, `sp` | plain key | plain record | the owner |
//! | `grant` | `grant/<owner>/<bucket>` | the granted session's delegate | [`crate::Grant`] (session sealed to the grantee) | the owner |
//! | `s3key` | `s3key/<first byte of the id's hash>` | the id's hash | sealed [`crate::AccessKey`] | first claimant (the account) |
//! | `keys` | `keys/<account>` | the id's hash | sealed [`crate::KeyListing`] | the account |
//! | `policy` | `policy` | what it governs (`accounts`) | [`AccountPolicy`] | the fabric's admin |
//! | `pass` | `pass` | the admitted account | [`AccountPass`] | the fabric's admin |
//! | `quota` | `quota` | `default`, or an account | [`AccountQuota`] | the fabric's admin |
//! | `use` | `use/<account>` | `<account>/<node>/<bucket>` ([`TallyKey`]) | [`Tally`] | the account (a delegate: if its scope writes the bucket) |
//!
//! A bucket's rows are sealed (`s…` kinds: names encrypted, values sealed; see
//! [`crate::sealed`]) unless the bucket was made before weft sealed them
//! ([`BucketRecord::sealed`] false): such a bucket keeps its plain rows (`obj`, `ver`, `upl`,
//! `part`) and works as before.

use weft_core::NodeId;
use weft_meta::{Rules, Schema, SortKey, Writer, row_kind};

use crate::policy::{AccountPass, AccountPolicy};
use crate::quota::{AccountQuota, AccountQuotaV1, Tally};
use crate::records::{BucketRecordV1, BucketRecordV2, BucketRecordV3, ObjectRecordV1};
use crate::{BucketRecord, Grant, ObjectRecord, PartRecord, UploadRecord};

/// A bucket, as its rows are keyed: its owner and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketId {
    /// The owning account.
    pub owner: NodeId,
    /// The bucket's name.
    pub name: String,
    /// The regions its rows are held to (empty: anywhere; see
    /// [`BucketRecord::rows_in_regions`]).
    pub regions: Vec<String>,
}

impl BucketId {
    /// The id of `bucket`.
    pub fn of(bucket: &BucketRecord) -> BucketId {
        BucketId {
            owner: bucket.owner,
            name: bucket.name.clone(),
            regions: if bucket.rows_in_regions {
                bucket.policy.regions.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The id of a bucket whose rows may live anywhere (for its grants, which are not held to
    /// its regions).
    pub fn anywhere(owner: NodeId, name: &str) -> BucketId {
        BucketId {
            owner,
            name: name.into(),
            regions: Vec::new(),
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.owner.to_hex(), self.name)
    }
}

/// Bucket name claims.
pub struct Buckets;

impl Schema for Buckets {
    const KIND: &'static str = "bucket";
    const WRITER: Writer = Writer::FirstClaim;
    /// 2: [`BucketRecord::sealed`] added (format 1 records are buckets with plain rows).
    /// 3: [`BucketRecord::rows_in_regions`] added.
    /// 4: [`BucketRecord::max_price`] added.
    const FORMAT: u8 = 4;
    type Part = ();
    type Sort = str;
    type Value = BucketRecord;

    fn partition(_: &()) -> String {
        String::new()
    }

    fn decode(format: u8, body: &[u8]) -> Result<BucketRecord, weft_core::wire::WireError> {
        let mut b: BucketRecord = match format {
            1 => weft_core::wire::decode::<BucketRecordV1>(body).map(BucketRecord::from)?,
            2 => weft_core::wire::decode::<BucketRecordV2>(body).map(BucketRecord::from)?,
            3 => weft_core::wire::decode::<BucketRecordV3>(body).map(BucketRecord::from)?,
            _ => weft_core::wire::decode(body)?,
        };
        b.policy.max_price = b.max_price;
        Ok(b)
    }
}

/// The current version of each object of a bucket.
pub struct Objects;

impl Schema for Objects {
    const KIND: &'static str = "obj";
    const WRITER: Writer = Writer::PartitionKey(1);
    /// 2: [`ObjectRecord::inline`] added.
    const FORMAT: u8 = 2;
    type Part = BucketId;
    type Sort = str;
    type Value = ObjectRecord;

    fn partition(bucket: &BucketId) -> String {
        bucket.key()
    }

    fn regions(bucket: &BucketId) -> &[String] {
        &bucket.regions
    }

    fn decode(format: u8, body: &[u8]) -> Result<ObjectRecord, weft_core::wire::WireError> {
        decode_object(format, body)
    }
}

/// An object record stored in `format` (1: before [`ObjectRecord::inline`]).
pub(crate) fn decode_object(
    format: u8,
    body: &[u8],
) -> Result<ObjectRecord, weft_core::wire::WireError> {
    match format {
        1 => weft_core::wire::decode::<ObjectRecordV1>(body).map(ObjectRecord::from),
        _ => weft_core::wire::decode(body),
    }
}

/// One object of a bucket, for its kept versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectId {
    /// The bucket.
    pub bucket: BucketId,
    /// The object key.
    pub key: String,
}

/// Kept versions of each object (buckets that keep more than one).
pub struct Versions;

impl Schema for Versions {
    const KIND: &'static str = "ver";
    const WRITER: Writer = Writer::PartitionKey(1);
    /// 2: [`ObjectRecord::inline`] added.
    const FORMAT: u8 = 2;
    type Part = ObjectId;
    type Sort = str;
    type Value = ObjectRecord;

    fn partition(object: &ObjectId) -> String {
        format!("{}/{}", object.bucket.key(), object.key)
    }

    fn regions(object: &ObjectId) -> &[String] {
        &object.bucket.regions
    }

    fn decode(format: u8, body: &[u8]) -> Result<ObjectRecord, weft_core::wire::WireError> {
        decode_object(format, body)
    }
}

row_kind! {
    /// Multipart uploads in progress.
    pub struct Uploads {
        kind: "upl",
        writer: Writer::PartitionKey(1),
        part: BucketId,
        sort: str,
        value: UploadRecord,
        partition: |bucket| bucket.key(),
        regions: |bucket| &bucket.regions,
    }
}

/// One upload, for its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadId {
    /// The bucket.
    pub bucket: BucketId,
    /// The upload id.
    pub upload: String,
}

/// A part number, as the sort key of its row (zero-padded so parts list in order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartNumber(pub u32);

impl SortKey for PartNumber {
    fn to_sort(&self) -> String {
        format!("{:05}", self.0)
    }
}

row_kind! {
    /// Uploaded parts.
    pub struct Parts {
        kind: "part",
        writer: Writer::PartitionKey(1),
        part: UploadId,
        sort: PartNumber,
        value: PartRecord,
        partition: |upload| format!("{}/{}", upload.bucket.key(), upload.upload),
        regions: |upload| &upload.bucket.regions,
    }
}

/// Declares a kind of sealed rows: the same keys as its plain kind, with the object key in its
/// stored (encrypted) form, and values sealed by the bucket's [`crate::sealed::BucketSeal`].
macro_rules! sealed_kind {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $part:ty, $sort:ty, $plain:ty) => {
        $(#[$doc])*
        pub struct $name;

        impl Schema for $name {
            const KIND: &'static str = $kind;
            const WRITER: Writer = Writer::PartitionKey(1);
            const FORMAT: u8 = 1;
            type Part = $part;
            type Sort = $sort;
            type Value = Vec<u8>;

            fn partition(part: &$part) -> String {
                <$plain as Schema>::partition(part)
            }

            fn regions(part: &$part) -> &[String] {
                <$plain as Schema>::regions(part)
            }
        }
    };
}

sealed_kind!(
    /// [`Objects`], sealed (the sort key is the object key's stored form).
    SealedObjects, "so", BucketId, str, Objects
);
sealed_kind!(
    /// [`Versions`], sealed ([`ObjectId::key`] is the object key's stored form).
    SealedVersions, "sv", ObjectId, str, Versions
);
sealed_kind!(
    /// [`Uploads`], sealed.
    SealedUploads, "su", BucketId, str, Uploads
);
sealed_kind!(
    /// [`Parts`], sealed.
    SealedParts, "sp", UploadId, PartNumber, Parts
);

row_kind! {
    /// Grants of a bucket to other accounts ([`crate::grants`]), by the granted session's delegate.
    pub struct Grants {
        kind: "grant",
        writer: Writer::PartitionKey(1),
        part: BucketId,
        sort: NodeId,
        value: Grant,
        partition: |bucket| bucket.key(),
    }
}

/// The hash an access key's rows are found by: its id's, so only a node handed the id (in a
/// request signed with the key) can find the row, and only it can open it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The hash of access key `id`.
    pub fn of(id: &str) -> KeyHash {
        KeyHash(blake3::derive_key("weft s3 key id v1", id.as_bytes()))
    }
}

impl SortKey for KeyHash {
    fn to_sort(&self) -> String {
        weft_core::ContentHash(self.0).to_hex()
    }
}

row_kind! {
    /// Access keys, sealed under a key derived from their id: what any gateway needs to serve
    /// one (account, scope, SigV4 secret, grant).
    pub struct SealedKeys {
        kind: "s3key",
        writer: Writer::FirstClaim,
        part: KeyHash,
        sort: KeyHash,
        value: Vec<u8>,
        partition: |id| format!("{:02x}", id.0[0]),
    }
}

row_kind! {
    /// An account's list of its own access keys, sealed under a key only the account (and nodes it
    /// hands its bucket master) can derive.
    pub struct KeyIndex {
        kind: "keys",
        writer: Writer::PartitionKey(1),
        part: NodeId,
        sort: KeyHash,
        value: Vec<u8>,
        partition: |account| account.to_hex(),
    }
}

row_kind! {
    /// The fabric's policies (sort key: what they govern; `accounts` for accounts).
    pub struct Policies {
        kind: "policy",
        writer: Writer::Admin,
        part: (),
        sort: str,
        value: AccountPolicy,
        partition: |_| String::new(),
    }
}

row_kind! {
    /// Accounts admitted to an invite-only fabric (sort key: the account).
    pub struct Passes {
        kind: "pass",
        writer: Writer::Admin,
        part: (),
        sort: NodeId,
        value: AccountPass,
        partition: |_| String::new(),
    }
}

/// Per-account quotas (sort key: [`DEFAULT_QUOTA`] or the account).
pub struct Quotas;

impl Schema for Quotas {
    const KIND: &'static str = "quota";
    const WRITER: Writer = Writer::Admin;
    /// 2: [`AccountQuota::tokens_per_minute`] and [`AccountQuota::allowance`] added.
    const FORMAT: u8 = 2;
    type Part = ();
    type Sort = str;
    type Value = AccountQuota;

    fn partition(_: &()) -> String {
        String::new()
    }

    fn decode(format: u8, body: &[u8]) -> Result<AccountQuota, weft_core::wire::WireError> {
        match format {
            1 => weft_core::wire::decode::<AccountQuotaV1>(body).map(AccountQuota::from),
            _ => weft_core::wire::decode(body),
        }
    }
}

/// The sort key of the quota every account without its own has.
pub const DEFAULT_QUOTA: &str = "default";

/// One node's counters of one bucket of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TallyKey {
    /// The account (signs the row).
    pub owner: NodeId,
    /// The node that counted.
    pub node: NodeId,
    /// The bucket ([`crate::quota::UNNAMED`] for objects stored under no name).
    pub bucket: String,
}

impl SortKey for TallyKey {
    fn to_sort(&self) -> String {
        format!(
            "{}/{}/{}",
            self.owner.to_hex(),
            self.node.to_hex(),
            self.bucket
        )
    }
}

row_kind! {
    /// What an account stores, counted by the nodes it acts through (see [`crate::quota`]).
    pub struct Tallies {
        kind: "use",
        writer: Writer::SortKey,
        part: NodeId,
        sort: TallyKey,
        value: Tally,
        partition: |account| account.to_hex(),
    }
}

/// The sort key of the accounts policy in [`Policies`].
pub const ACCOUNTS: &str = "accounts";

/// Declare the data plane's row kinds and their writer rules.
pub fn register(rules: &mut Rules) {
    rules.add(Buckets::KIND, Buckets::WRITER);
    rules.add(Objects::KIND, Objects::WRITER);
    rules.add(Versions::KIND, Versions::WRITER);
    rules.add(Uploads::KIND, Uploads::WRITER);
    rules.add(Parts::KIND, Parts::WRITER);
    rules.add(SealedObjects::KIND, SealedObjects::WRITER);
    rules.add(SealedVersions::KIND, SealedVersions::WRITER);
    rules.add(SealedUploads::KIND, SealedUploads::WRITER);
    rules.add(SealedParts::KIND, SealedParts::WRITER);
    rules.add(Grants::KIND, Grants::WRITER);
    rules.add(Policies::KIND, Policies::WRITER);
    rules.add(Passes::KIND, Passes::WRITER);
    rules.add(Quotas::KIND, Quotas::WRITER);
    rules.add(Tallies::KIND, Tallies::WRITER);
    // A bucket-scoped session (a grant, a bucket's access key) cannot claim, delete or share
    // the bucket: replicas refuse it, whatever the node that sent the row checked.
    rules.account_wide_only(Buckets::KIND);
    rules.account_wide_only(Grants::KIND);
    rules.add(SealedKeys::KIND, SealedKeys::WRITER);
    rules.add(KeyIndex::KIND, KeyIndex::WRITER);
}

/// Key shapes of before rows were signed, read only by the one-time migration
/// ([`crate::migrate`]).
pub mod legacy {
    /// Catalog partitions.
    pub const CATALOG: &str = "m/";
    /// Reference partitions.
    pub const REFS: &str = "r/";
    /// The reference of an object stored by capability.
    pub const CAPABILITY_REF: &str = "capability";
    /// Bucket claims.
    pub const BUCKETS: &str = "buckets";

    /// Current objects of a bucket.
    pub fn objects(bucket: &str) -> String {
        format!("obj/{bucket}")
    }

    /// Prefix of a bucket's kept-version partitions (one per key follows).
    pub fn versions(bucket: &str) -> String {
        format!("ver/{bucket}/")
    }

    /// Uploads in progress in a bucket.
    pub fn uploads(bucket: &str) -> String {
        format!("upl/{bucket}")
    }

    /// Prefix of a bucket's part partitions (one per upload follows).
    pub fn parts(bucket: &str) -> String {
        format!("part/{bucket}/")
    }

    /// Prefix of the reference names of a bucket's versions (`<key>/<version>` follows).
    pub fn version_refs(bucket: &str) -> String {
        format!("v/{bucket}/")
    }

    /// Prefix of the reference names of a bucket's uploaded parts (`<upload>/<n>` follows).
    pub fn part_refs(bucket: &str) -> String {
        format!("u/{bucket}/")
    }
}
