//! Where the statements of the hot paths differ between SQLite and PostgreSQL.
//!
//! The delivery journal writes groups of every size (whatever queued up while the last
//! transaction ran). A statement whose text grows with its group — `id IN ($1, …, $n)`, a
//! multi-row `VALUES` — is a new statement for every size: PostgreSQL's per-connection statement
//! cache kept churning, and each miss cost a parse, a describe round trip and a fresh plan
//! (planning alone was a sixth of the machine's CPU under dispatch load). On PostgreSQL these
//! statements take their lists as array parameters instead, so each has one text and is prepared
//! once per connection. SQLite prepares in microseconds in-process and keeps the portable forms.

use sea_orm::{ColumnTrait, DbBackend, sea_query::Expr};

/// `column IN (ids)`; on PostgreSQL `column = ANY($1)` with the ids as one array.
pub fn one_of<C: ColumnTrait>(backend: DbBackend, column: C, ids: &[i64]) -> Expr {
    match backend {
        DbBackend::Postgres => column.eq_any(ids.iter().copied()),
        _ => column.is_in(ids.iter().copied()),
    }
}

/// An optional id as an array element: arrays bound as parameters cannot hold NULL, so 0 (never
/// an id) stands for none and the statement turns it back with `NULLIF(…, 0)`.
pub fn id_or_zero(id: Option<i64>) -> i64 {
    id.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use sea_orm::{EntityTrait, QueryFilter, QueryTrait};

    use super::*;
    use crate::store::entity::delivery_job as job;

    /// The PostgreSQL text is the same whatever the number of ids, so it is prepared once.
    #[test]
    fn postgres_statement_text_does_not_grow_with_the_list() {
        let text = |ids: &[i64]| {
            job::Entity::find().filter(one_of(DbBackend::Postgres, job::Column::Id, ids)).build(DbBackend::Postgres).sql
        };
        assert_eq!(text(&[1]), text(&[1, 2, 3, 4, 5]));
        assert!(text(&[1, 2]).contains("= ANY($1)"), "{}", text(&[1, 2]));
    }

    #[test]
    fn sqlite_keeps_in_lists() {
        let sql = job::Entity::find()
            .filter(one_of(DbBackend::Sqlite, job::Column::Id, &[7, 8]))
            .build(DbBackend::Sqlite)
            .sql;
        assert!(sql.contains("IN (?, ?)"), "{sql}");
    }
}
