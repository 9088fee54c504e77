//! Attachment rows: which stored file belongs to which message, and what it is.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr};
use serde::{Deserialize, Serialize};

use super::{
    StoreResult,
    entity::{attachment, message},
};

/// A file already in the attachment store, to be recorded on a message.
#[derive(Clone, Debug)]
pub struct NewAttachment {
    pub storage_key: String,
    pub file_name: String,
    pub content_type: String,
    pub file_type: &'static str,
    pub file_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

/// What a message keeps about each of its attachments (its `attachments` JSON column), enough to
/// render it without reading the attachment rows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub id: i64,
    pub file_name: String,
    pub content_type: String,
    pub file_type: String,
    pub file_size: i64,
    pub width: Option<i32>,
    pub height: Option<i32>,
}

impl Summary {
    /// The summaries a message row holds (none if it has no attachments).
    pub fn of(message: &message::Model) -> Vec<Summary> {
        message.attachments.as_deref().and_then(|json| serde_json::from_str(json).ok()).unwrap_or_default()
    }
}

impl From<attachment::Model> for Summary {
    fn from(row: attachment::Model) -> Self {
        Summary {
            id: row.id,
            file_name: row.file_name,
            content_type: row.content_type,
            file_type: row.file_type,
            file_size: row.file_size,
            width: row.width,
            height: row.height,
        }
    }
}

/// Sets message `message_id`'s summary column: attachments it refers to without owning them (an
/// email sending files the business already holds).
pub async fn set_summary(conn: &impl ConnectionTrait, message_id: i64, summary: &str) -> StoreResult<()> {
    message::Entity::update_many()
        .col_expr(message::Column::Attachments, Expr::value(summary.to_owned()))
        .filter(message::Column::Id.eq(message_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Business `business_id`'s attachment rows with these ids (in no particular order).
pub async fn by_ids(conn: &impl ConnectionTrait, business_id: i64, ids: &[i64]) -> StoreResult<Vec<attachment::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(attachment::Entity::find()
        .filter(attachment::Column::BusinessId.eq(business_id))
        .filter(attachment::Column::Id.is_in(ids.iter().copied()))
        .all(conn)
        .await?)
}

/// Records `files` on message `message` (in the caller's transaction) and writes the message's
/// summary column; answers the summary JSON.
pub async fn record(
    conn: &impl ConnectionTrait,
    message: &message::Model,
    files: &[NewAttachment],
    now: DateTime<Utc>,
) -> StoreResult<String> {
    let mut summaries = Vec::with_capacity(files.len());
    for file in files {
        let row = attachment::ActiveModel {
            business_id: Set(message.business_id),
            message_id: Set(message.id),
            storage_key: Set(file.storage_key.clone()),
            file_name: Set(file.file_name.clone()),
            content_type: Set(file.content_type.clone()),
            file_type: Set(file.file_type.to_owned()),
            file_size: Set(file.file_size),
            width: Set(file.width),
            height: Set(file.height),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(conn)
        .await?;
        summaries.push(Summary {
            id: row.id,
            file_name: row.file_name,
            content_type: row.content_type,
            file_type: row.file_type,
            file_size: row.file_size,
            width: row.width,
            height: row.height,
        });
    }
    let json = serde_json::to_string(&summaries).expect("summaries serialize");
    message::Entity::update_many()
        .col_expr(message::Column::Attachments, Expr::value(json.clone()))
        .filter(message::Column::Id.eq(message.id))
        .exec(conn)
        .await?;
    Ok(json)
}

/// Attachment `id` of business `business_id`, with the message it belongs to.
pub async fn with_message(
    conn: &impl ConnectionTrait,
    business_id: i64,
    id: i64,
) -> StoreResult<Option<(attachment::Model, message::Model)>> {
    let Some(found) =
        attachment::Entity::find_by_id(id).filter(attachment::Column::BusinessId.eq(business_id)).one(conn).await?
    else {
        return Ok(None);
    };
    Ok(message::Entity::find_by_id(found.message_id).one(conn).await?.map(|m| (found, m)))
}
