//! SQLite's statements and fragments (see the parent module).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Set, Statement};

use super::Binds;
use crate::store::{
    StoreResult,
    entity::{conversation_event as event, enums::AttemptOutcome, message, message_attempt as attempt},
    events::NewEvent,
    outbox::{self, Accepted, Mark},
    search::{self, BusinessProbe, ConversationProbe, Doc, HitRow},
};

pub(super) const EVENT_SETTLED: &str = "1 = 1";

/// Each worker's marks in turn: the statement of a mark is small and SQLite prepares in-process.
pub(super) async fn start_sending_marks(conn: &impl ConnectionTrait, marks: &[Mark<'_>]) -> StoreResult<Vec<Vec<i64>>> {
    let mut held = Vec::with_capacity(marks.len());
    for mark in marks {
        held.push(outbox::start_sending_many(conn, mark.job_ids, mark.worker, mark.lease_until, mark.now).await?);
    }
    Ok(held)
}

#[derive(FromQueryResult)]
struct Moved {
    id: i64,
}

/// The attempt rows and QUEUED → SENT in portable SQL: a multi-row insert and one UPDATE over a
/// VALUES list of (id, provider, provider id).
pub(super) async fn settle_accepted(
    conn: &impl ConnectionTrait,
    accepted: &[Accepted],
    now: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    attempt::Entity::insert_many(accepted.iter().map(|a| attempt::ActiveModel {
        message_id: Set(a.message_id),
        attempt: Set(a.attempt),
        started_at: Set(a.started_at),
        finished_at: Set(Some(now)),
        outcome: Set(AttemptOutcome::Accepted),
        provider_message_id: Set(Some(a.provider_message_id.clone())),
        ..Default::default()
    }))
    .exec_without_returning(conn)
    .await?;
    let mut values: Vec<sea_orm::Value> = vec![now.into()];
    let rows = accepted
        .iter()
        .map(|a| {
            values.extend([a.message_id.into(), a.provider.clone().into(), a.provider_message_id.clone().into()]);
            let n = values.len();
            format!("(?{}, ?{}, ?{n})", n - 2, n - 1)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH v(id, provider, provider_message_id) AS (VALUES {rows}) \
         UPDATE messages SET status = 'SENT', status_updated_at = ?1, sent_at = COALESCE(messages.sent_at, ?1), \
         provider = v.provider, provider_message_id = v.provider_message_id \
         FROM v WHERE messages.id = v.id AND messages.status = 'QUEUED' RETURNING messages.id"
    );
    let moved =
        Moved::find_by_statement(Statement::from_sql_and_values(DbBackend::Sqlite, &sql, values)).all(conn).await?;
    Ok(moved.into_iter().map(|m| m.id).collect())
}

/// A multi-row INSERT.
pub(super) async fn append_events(
    conn: &impl ConnectionTrait,
    events: Vec<NewEvent<'_>>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    event::Entity::insert_many(events.into_iter().map(|new| new.row(now))).exec_without_returning(conn).await?;
    Ok(())
}

/// A trigram phrase query is a substring match that needs no second look at the text (LIKE
/// through the same index re-reads every candidate). Under three characters there are no
/// trigrams to look up.
pub(super) fn clients_matching(business_id: i64, text: &str, limit: u64) -> Option<Statement> {
    if text.chars().count() < 3 {
        return None;
    }
    // CROSS JOIN: the index drives, rather than probing it once per client.
    Some(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "SELECT c.id FROM clients_trgm t CROSS JOIN clients c ON c.id = t.rowid \
         WHERE clients_trgm MATCH ?1 AND c.business_id = ?2 LIMIT ?3",
        [format!("\"{}\"", text.replace('"', "\"\"")).into(), business_id.into(), (limit as i64).into()],
    ))
}

// ---- search ----

/// FTS5's query for `terms` in a message's subject or text: every one required, each a quoted
/// string, so no user text is read as FTS5 syntax.
pub(super) fn fts_words(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("{{subject content}} : \"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The texts of the messages `ids`, by primary key.
async fn docs_by_ids(conn: &impl ConnectionTrait, ids: &[i64]) -> StoreResult<Vec<Doc>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    Ok(Doc::find_by_statement(Statement::from_string(
        DbBackend::Sqlite,
        format!("SELECT id, coalesce(subject, '') AS subject, content FROM messages WHERE id IN ({ids})"),
    ))
    .all(conn)
    .await?)
}

/// The ranked page: every match of the conversation (at most [`search::RANKED_MATCHES`]) scored
/// with BM25's term-frequency saturation and length normalisation over the conversation's own
/// matches (every word is required, so a corpus-wide IDF would only scale the scores), each
/// with its passage.
fn rank_in_conversation(docs: Vec<Doc>, terms: &[String], offset: u64, limit: u64) -> Vec<HitRow> {
    let scores = search::rank_docs(terms, &docs);
    let mut texts: std::collections::HashMap<i64, String> = docs.into_iter().map(|d| (d.id, d.content)).collect();
    scores
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|(id, rank)| {
            let highlight = texts.remove(&id).map(|text| search::passage(terms, &text)).unwrap_or_default();
            HitRow { id, rank, highlight }
        })
        .collect()
}

/// A message's key in the conversation-keyed index (migration 24): its conversation in the high
/// 32 bits, its id in the low. The index's doclists are in key order, so each word's matches
/// in one conversation lie together and a search seeks straight to them.
const CONVERSATION_KEY: &str = "4294967296";

/// FTS5 over the conversation-keyed index, bounded to the conversation's key range, ranked by
/// [`rank_in_conversation`] up to a thousand matches, newest first beyond.
pub(super) async fn conversation_hits(
    conn: &impl ConnectionTrait,
    probe: &ConversationProbe<'_>,
) -> StoreResult<(Vec<HitRow>, u64)> {
    let ConversationProbe { conversation_id, terms, include_notes, offset, limit } = *probe;
    // Bounded by key, every word's doclist is read only across this conversation's entries,
    // however common the word is elsewhere: the message-id index (scoped by a `cN` token)
    // intersected the conversation's 40,000 entries with a common word's million, ~45 ms.
    // Notes are left out by their `kind`, in the index, so no match is looked up to count it.
    let query = match include_notes {
        true => fts_words(terms),
        false => format!("({}) NOT kind : \"note\"", fts_words(terms)),
    };
    let ids_where = |tail: String| {
        let sql = format!(
            "SELECT f.rowid - ?1 * {CONVERSATION_KEY} AS id FROM messages_fts_by_conversation f \
             WHERE messages_fts_by_conversation MATCH ?2 AND f.rowid >= ?1 * {CONVERSATION_KEY} \
             AND f.rowid < (?1 + 1) * {CONVERSATION_KEY} {tail}"
        );
        let statement =
            Statement::from_sql_and_values(DbBackend::Sqlite, sql, [conversation_id.into(), query.clone().into()]);
        crate::store::ids_of(conn, statement)
    };
    let ids = ids_where(format!("LIMIT {}", search::RANKED_MATCHES + 1)).await?;
    let counted = ids.len() as u64;
    if counted <= search::RANKED_MATCHES {
        // Up to a thousand matches are ranked from their texts.
        let docs = docs_by_ids(conn, &ids).await?;
        return Ok((rank_in_conversation(docs, terms, offset, limit), counted));
    }
    // More: the newest first.
    let page = ids_where(format!("ORDER BY f.rowid DESC LIMIT {limit} OFFSET {offset}")).await?;
    let mut highlights = search::highlights_for(conn, terms, &page).await?;
    let hits = page
        .into_iter()
        .map(|id| HitRow { id, rank: 0.0, highlight: highlights.remove(&id).unwrap_or_default() })
        .collect();
    Ok((hits, counted))
}

/// The first id window a business search reads; each next one is four times wider.
const FIRST_WINDOW: i64 = 4_096;

/// FTS5 queries scoped by the business token (migration 21) over rowid windows growing fourfold
/// from the top, each reading only the matches inside it.
pub(super) async fn business_matches(conn: &impl ConnectionTrait, probe: &BusinessProbe<'_>) -> StoreResult<Vec<Doc>> {
    let BusinessProbe { business_id, terms, filter, before, window, limit } = *probe;
    let backend = DbBackend::Sqlite;
    #[derive(FromQueryResult)]
    struct Top {
        id: Option<i64>,
    }
    let top = Top::find_by_statement(Statement::from_string(backend, "SELECT max(id) AS id FROM messages"))
        .one(conn)
        .await?
        .and_then(|t| t.id)
        .unwrap_or(0);
    let mut high = std::cmp::min(before, top.saturating_add(1));
    // The id of the business's `window`-th newest message below `high`, from its token's
    // doclist (0: fewer, so all of them).
    let floor = match window {
        Some(window) => {
            let mut binds = Binds::new(backend);
            let sql = format!(
                "SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH {} AND rowid < {} \
                 ORDER BY rowid DESC LIMIT 1 OFFSET {}",
                binds.push(format!("conversation : \"b{business_id}\"")),
                binds.push(high),
                window.saturating_sub(1)
            );
            Top::find_by_statement(Statement::from_sql_and_values(backend, sql, binds.values))
                .one(conn)
                .await?
                .and_then(|t| t.id)
                .unwrap_or(0)
        }
        None => 0,
    };
    let mut width = FIRST_WINDOW;
    let mut found = Vec::new();
    while high > floor && (found.len() as u64) < limit {
        let low = std::cmp::max(high.saturating_sub(width), floor);
        let mut binds = Binds::new(backend);
        let query = binds.push(format!("conversation : \"b{business_id}\" AND {}", fts_words(terms)));
        let (low_p, high_p, business) = (binds.push(low), binds.push(high), binds.push(business_id));
        let conditions = filter.sql(&mut binds);
        let need = limit - found.len() as u64;
        // `+m.business_id`: the join is driven by the index, never by the business's rows.
        let sql = format!(
            "SELECT m.id, coalesce(m.subject, '') AS subject, m.content \
             FROM messages_fts f JOIN messages m ON m.id = f.rowid \
             WHERE messages_fts MATCH {query} AND f.rowid >= {low_p} AND f.rowid < {high_p} \
             AND +m.business_id = {business}{conditions} ORDER BY f.rowid DESC LIMIT {need}"
        );
        found.extend(
            Doc::find_by_statement(Statement::from_sql_and_values(backend, sql, binds.values)).all(conn).await?,
        );
        high = low;
        width = width.saturating_mul(4);
    }
    Ok(found)
}

/// A [`super::GuardedWrite`] as one command of three statements, so that SQLite's thread runs
/// them back to back (each command is a round trip to it, two thread wake-ups): the message,
/// inserted only while its conversation passes the guard (`INSERT … SELECT … WHERE EXISTS`,
/// returning the row); then the conversation's update and the event, each only if that message
/// is there (by its new public id). A refused guard thus writes nothing, and a repeated provider
/// id fails the first statement, which SQLite undoes alone, before the others run (the message
/// holds the write's only unique columns). The text is the same for every write of the same
/// shape, so sqlx prepares it once and keeps it. Placeholders are plain `?`: sqlx binds those in
/// order across the statements of a command.
pub(super) fn guarded_write(write: &super::GuardedWrite, (conversation_id, client_id): (i64, i64)) -> Statement {
    /// What the update and the event each require: the message this write stored.
    const STORED: &str = "EXISTS (SELECT 1 FROM \"messages\" WHERE \"public_id\" = ?)";
    /// Appends `bound` to `values`, answering their placeholders.
    fn bind(values: &mut Vec<sea_orm::Value>, bound: impl IntoIterator<Item = sea_orm::Value>) -> String {
        bound
            .into_iter()
            .map(|value| {
                values.push(value);
                "?"
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
    let mut values = Vec::new();
    let public_id = write.message.public_id.try_as_ref().cloned().unwrap_or_default();
    let mut message = write.message.clone();
    message.conversation_id = Set(conversation_id);
    message.client_id = Set(client_id);
    let (columns, row) = super::set_columns(&message);
    let row = bind(&mut values, row);
    let conversation = bind(&mut values, [conversation_id.into()]);
    let unless = if write.unless.is_empty() {
        String::new()
    } else {
        let statuses = bind(&mut values, write.unless.iter().map(|s| sea_orm::ActiveEnum::to_value(s).into()));
        format!(" AND \"status\" NOT IN ({statuses})")
    };
    let insert = format!(
        "INSERT INTO \"messages\" ({columns}) SELECT {row} \
         WHERE EXISTS (SELECT 1 FROM \"conversations\" WHERE \"id\" = {conversation}{unless}) RETURNING {returned}",
        columns = columns.join(", "),
        returned = super::all_columns::<message::Entity>(),
    );
    // The message's change to the conversation found (plain `?`s are bound in order).
    let set = super::summary_set(&write.summary, |value| bind(&mut values, [value]));
    values.extend([conversation_id.into(), public_id.clone().into()]);
    let update = format!("UPDATE \"conversations\" SET {set} WHERE \"id\" = ? AND {STORED}");
    let mut event = write.event.clone();
    event.conversation_id = Set(Some(conversation_id));
    let (event_columns, event_row) = super::set_columns(&event);
    let event_row = bind(&mut values, event_row);
    values.push(public_id.into());
    let event = format!(
        "INSERT INTO \"conversation_events\" ({columns}) SELECT {event_row} WHERE {STORED}",
        columns = event_columns.join(", "),
    );
    Statement::from_sql_and_values(DbBackend::Sqlite, format!("{insert}; {update}; {event}"), values)
}

/// See [`super::clients_conversations_statement`]. The clients go as one JSON array bound to one
/// placeholder, so the statement's text is the same for any number of them (sqlx prepares it
/// once; a text per group size would crowd its statement cache). The array drives the join
/// (`CROSS JOIN` keeps it outermost), each client found through the unique (business,
/// identity) index.
pub(super) fn clients_conversations(
    identity: crate::store::entity::client::Column,
    clients: &[(i64, &str)],
) -> Statement {
    use sea_orm::IdenStatic;
    let array = serde_json::Value::from(
        clients.iter().map(|(business_id, value)| serde_json::json!([business_id, value])).collect::<Vec<_>>(),
    );
    let sql = format!(
        "SELECT j.\"key\" AS at, cl.\"id\" AS client_id, c.\"id\" AS conversation_id FROM json_each(?1) j \
         CROSS JOIN \"clients\" cl ON cl.\"business_id\" = json_extract(j.\"value\", '$[0]') \
         AND cl.\"{identity}\" = json_extract(j.\"value\", '$[1]') \
         JOIN \"conversations\" c ON c.\"business_id\" = cl.\"business_id\" AND c.\"client_id\" = cl.\"id\"",
        identity = identity.as_str(),
    );
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, [array.to_string().into()])
}
