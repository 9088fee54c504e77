//! Queries on `api_keys`. Rows hold only the key's public prefix and its SHA-256 hash.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Set,
};

use super::{Store, StoreResult, entity::api_key, entity::business};

/// A key to insert; `business_id` is `None` for a platform key.
pub struct NewApiKey<'a> {
    pub prefix: &'a str,
    pub hash_hex: &'a str,
    pub label: &'a str,
    pub business_id: Option<i64>,
}

/// Inserts a key through any connection (a transaction included).
pub async fn insert(conn: &impl ConnectionTrait, key: NewApiKey<'_>) -> StoreResult<api_key::Model> {
    let row = api_key::ActiveModel {
        key_prefix: Set(key.prefix.to_owned()),
        key_hash: Set(key.hash_hex.to_owned()),
        label: Set(key.label.to_owned()),
        scope: Set(if key.business_id.is_some() { "business" } else { "platform" }.to_owned()),
        business_id: Set(key.business_id),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
        ..Default::default()
    };
    Ok(row.insert(conn).await?)
}

impl Store {
    /// Unrevoked keys sharing a prefix: the candidates whose hashes the caller's key is
    /// compared against (in constant time, by the domain).
    pub async fn live_api_keys_by_prefix(&self, prefix: &str) -> StoreResult<Vec<api_key::Model>> {
        Ok(api_key::Entity::find()
            .filter(api_key::Column::KeyPrefix.eq(prefix))
            .filter(api_key::Column::RevokedAt.is_null())
            .all(self.keyed())
            .await?)
    }

    /// Whether a key with this hash was ever stored (live or revoked).
    pub async fn api_key_hash_exists(&self, hash_hex: &str) -> StoreResult<bool> {
        Ok(api_key::Entity::find().filter(api_key::Column::KeyHash.eq(hash_hex)).count(self.connection()).await? > 0)
    }

    pub async fn touch_api_key(&self, id: i64, at: DateTime<Utc>) -> StoreResult<()> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::LastUsedAt, sea_orm::sea_query::Expr::value(at))
            .filter(api_key::Column::Id.eq(id))
            .exec(self.writer())
            .await?;
        Ok(())
    }

    /// Keys, newest first, optionally of one business: up to `limit` rows with an id below
    /// `before_id` (keyset pagination), and the number of keys matching the filter.
    pub async fn list_api_keys(
        &self,
        business_id: Option<i64>,
        before_id: Option<i64>,
        limit: u64,
    ) -> StoreResult<(Vec<api_key::Model>, u64)> {
        let mut query = api_key::Entity::find();
        if let Some(business_id) = business_id {
            query = query.filter(api_key::Column::BusinessId.eq(business_id));
        }
        let total = query.clone().count(self.connection()).await?;
        if let Some(before_id) = before_id {
            query = query.filter(api_key::Column::Id.lt(before_id));
        }
        let rows = query.order_by_desc(api_key::Column::Id).limit(limit).all(self.connection()).await?;
        Ok((rows, total))
    }

    /// Revokes a key; answers whether a live key was revoked.
    pub async fn revoke_api_key(&self, id: i64, at: DateTime<Utc>) -> StoreResult<bool> {
        let result = api_key::Entity::update_many()
            .col_expr(api_key::Column::RevokedAt, sea_orm::sea_query::Expr::value(at))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::RevokedAt.is_null())
            .exec(self.writer())
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn business_exists(&self, business_id: i64) -> StoreResult<bool> {
        Ok(business::Entity::find_by_id(business_id).count(self.connection()).await? > 0)
    }
}
