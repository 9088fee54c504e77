//! A call's record on its message row: progress (duration, the provider's callback sequence)
//! and the record staff see, rewritten conditionally as callbacks arrive.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr};

use super::{StoreResult, entity::message};

/// Records a call's progress: its duration and the sequence number of the callback applied.
pub async fn set_call_progress(
    conn: &impl ConnectionTrait,
    id: i64,
    duration: Option<i32>,
    sequence: Option<i32>,
) -> StoreResult<()> {
    let mut query = message::Entity::update_many().filter(message::Column::Id.eq(id));
    if let Some(duration) = duration {
        query = query.col_expr(message::Column::DurationSeconds, Expr::value(duration));
    }
    if let Some(sequence) = sequence {
        query = query.col_expr(message::Column::ProviderSequence, Expr::value(sequence));
    }
    query.exec(conn).await?;
    Ok(())
}

/// What an inbound call's record (or a voicemail's) says: the text staff see, the talk time,
/// why it was missed, who answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    pub content: String,
    pub duration_seconds: Option<i32>,
    pub error_code: Option<String>,
    pub answered_by_staff_id: Option<i64>,
}

impl CallRecord {
    pub fn of(message: &message::Model) -> Self {
        Self {
            content: message.content.clone(),
            duration_seconds: message.duration_seconds,
            error_code: message.error_code.clone(),
            answered_by_staff_id: message.answered_by_staff_id,
        }
    }
}

/// Rewrites a call's record to `new` if it still reads `old` (callbacks arrive concurrently and
/// out of order: a loser decides again from what is stored). Answers whether it changed.
pub async fn rewrite_call_record(
    conn: &impl ConnectionTrait,
    id: i64,
    old: &CallRecord,
    new: &CallRecord,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let mut query = message::Entity::update_many()
        .col_expr(message::Column::Content, Expr::value(new.content.clone()))
        .col_expr(message::Column::DurationSeconds, Expr::value(new.duration_seconds))
        .col_expr(message::Column::ErrorCode, Expr::value(new.error_code.clone()))
        .col_expr(message::Column::AnsweredByStaffId, Expr::value(new.answered_by_staff_id))
        .col_expr(message::Column::StatusUpdatedAt, Expr::value(now))
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::Content.eq(old.content.clone()));
    query = match old.duration_seconds {
        Some(d) => query.filter(message::Column::DurationSeconds.eq(d)),
        None => query.filter(message::Column::DurationSeconds.is_null()),
    };
    query = match &old.error_code {
        Some(code) => query.filter(message::Column::ErrorCode.eq(code.clone())),
        None => query.filter(message::Column::ErrorCode.is_null()),
    };
    query = match old.answered_by_staff_id {
        Some(staff) => query.filter(message::Column::AnsweredByStaffId.eq(staff)),
        None => query.filter(message::Column::AnsweredByStaffId.is_null()),
    };
    Ok(query.exec(conn).await?.rows_affected == 1)
}
