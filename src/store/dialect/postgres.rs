//! PostgreSQL's statements and fragments (see the parent module).

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QuerySelect, Select, Statement};

use super::Binds;
use crate::store::{
    StoreResult,
    entity::message,
    events::NewEvent,
    outbox::{Accepted, Mark},
    search::{self, BusinessProbe, ConversationProbe, Doc, HitRow},
};

pub(super) fn skip_locked(of: Option<&str>) -> String {
    match of {
        Some(table) => format!(" FOR UPDATE OF {table} SKIP LOCKED"),
        None => " FOR UPDATE SKIP LOCKED".to_owned(),
    }
}

pub(super) fn locked_for_update<E: EntityTrait>(select: Select<E>) -> Select<E> {
    select.lock_exclusive()
}

pub(super) const EVENT_SETTLED: &str = "tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

pub(super) fn announce(channel: &str, payloads: String) -> Statement {
    let sql = "SELECT pg_notify($1, payload) FROM regexp_split_to_table($2, ',') AS payload";
    Statement::from_sql_and_values(DbBackend::Postgres, sql, [channel.into(), payloads.into()])
}

#[derive(FromQueryResult)]
struct Moved {
    id: i64,
}

/// One statement of one text for every worker's marks: the ids, workers and times as arrays.
pub(super) async fn start_sending_marks(conn: &impl ConnectionTrait, marks: &[Mark<'_>]) -> StoreResult<Vec<Vec<i64>>> {
    let mut owner: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    let (mut ids, mut workers, mut leases, mut times) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (index, mark) in marks.iter().enumerate() {
        for &id in mark.job_ids {
            owner.insert(id, index);
            ids.push(id);
            workers.push(mark.worker.to_owned());
            leases.push(mark.lease_until);
            times.push(mark.now);
        }
    }
    let sql = "UPDATE delivery_jobs AS j SET state = 'sending', attempts = j.attempts + 1, \
           locked_until = m.lease_until, updated_at = m.at \
         FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS m(id, worker, lease_until, at) \
         WHERE j.id = m.id AND j.state = 'running' AND j.locked_by = m.worker \
         RETURNING j.id";
    let rows = Moved::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        [ids.into(), workers.into(), leases.into(), times.into()],
    ))
    .all(conn)
    .await?;
    let mut held = vec![Vec::new(); marks.len()];
    for row in rows {
        if let Some(&index) = owner.get(&row.id) {
            held[index].push(row.id);
        }
    }
    Ok(held)
}

/// The attempt rows and QUEUED → SENT with the batch as array parameters: statements of one
/// text whatever the batch's size.
pub(super) async fn settle_accepted(
    conn: &impl ConnectionTrait,
    accepted: &[Accepted],
    now: DateTime<Utc>,
) -> StoreResult<Vec<i64>> {
    let message_ids: Vec<i64> = accepted.iter().map(|a| a.message_id).collect();
    let attempts: Vec<i32> = accepted.iter().map(|a| a.attempt).collect();
    let started: Vec<DateTime<Utc>> = accepted.iter().map(|a| a.started_at).collect();
    let providers: Vec<String> = accepted.iter().map(|a| a.provider.clone()).collect();
    let provider_ids: Vec<String> = accepted.iter().map(|a| a.provider_message_id.clone()).collect();
    let insert = "INSERT INTO message_attempts (message_id, attempt, started_at, finished_at, outcome, provider_message_id) \
         SELECT message_id, attempt, started_at, $1, 'accepted', provider_message_id \
         FROM unnest($2::bigint[], $3::integer[], $4::timestamptz[], $5::text[]) \
           AS a(message_id, attempt, started_at, provider_message_id)";
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        insert,
        [now.into(), message_ids.clone().into(), attempts.into(), started.into(), provider_ids.clone().into()],
    ))
    .await?;
    let moved_sql = "WITH v(id, provider, provider_message_id) AS \
           (SELECT * FROM unnest($2::bigint[], $3::text[], $4::text[])) \
         UPDATE messages SET status = 'SENT', status_updated_at = $1, sent_at = COALESCE(messages.sent_at, $1), \
           provider = v.provider, provider_message_id = v.provider_message_id \
         FROM v WHERE messages.id = v.id AND messages.status = 'QUEUED' RETURNING messages.id";
    let moved = Moved::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        moved_sql,
        [now.into(), message_ids.into(), providers.into(), provider_ids.into()],
    ))
    .all(conn)
    .await?;
    Ok(moved.into_iter().map(|m| m.id).collect())
}

/// One statement text whatever the number of events; ids in the given order.
pub(super) async fn append_events(
    conn: &impl ConnectionTrait,
    events: Vec<NewEvent<'_>>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let sql = "INSERT INTO conversation_events (business_id, conversation_id, kind, actor_key_id, actor_staff_id, data, created_at) \
         SELECT business_id, NULLIF(conversation_id, 0), kind, NULLIF(actor_key_id, 0), NULLIF(actor_staff_id, 0), data, $1 \
         FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $7::text[]) WITH ORDINALITY \
           AS e(business_id, conversation_id, kind, actor_key_id, actor_staff_id, data, position) \
         ORDER BY position";
    let column = |f: &dyn Fn(&NewEvent) -> sea_orm::Value| -> sea_orm::Value {
        sea_orm::Value::Array(f(&events[0]).array_type(), Some(Box::new(events.iter().map(f).collect())))
    };
    let values = [
        now.into(),
        column(&|e| e.business_id.into()),
        column(&|e| super::id_or_zero(e.conversation_id).into()),
        column(&|e| e.kind.to_owned().into()),
        column(&|e| super::id_or_zero(e.actor_key_id).into()),
        column(&|e| super::id_or_zero(e.actor_staff_id).into()),
        column(&|e| e.data.to_string().into()),
    ];
    conn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
    Ok(())
}

/// LIKE through the trigram (pg_trgm) index.
pub(super) fn clients_matching(business_id: i64, text: &str, limit: u64) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT id FROM clients WHERE business_id = $1 AND search_text LIKE $2 ESCAPE '!' LIMIT $3",
        [
            business_id.into(),
            format!("%{}%", text.replace('!', "!!").replace('%', "!%").replace('_', "!_")).into(),
            (limit as i64).into(),
        ],
    )
}

// ---- search ----

/// The query for `terms`: every one required, each quoted as a lexeme, so no user text is read
/// as tsquery syntax.
pub(super) fn tsquery(terms: &[String]) -> String {
    terms.iter().map(|t| format!("'{}'", t.replace('\'', "''"))).collect::<Vec<_>>().join(" & ")
}

/// The keys a message matching every word of `$3` (the words, space-separated) holds in the
/// conversation-terms GIN (migration 25) for conversation `$1`. Never empty: `@>` an empty
/// array would match every entry of the index (a word the parser drops, say, leaves none).
const CONVERSATION_TERM_KEYS: &str =
    "COALESCE(NULLIF(omega_conversation_terms($1, to_tsvector('simple', $3)), '{}'), '{0}')";

/// How many of a conversation's newest messages a page of a capped search (over a thousand
/// matches) reads per hit it needs, before it sorts every match instead. The walk stops at the
/// page's last hit, so a word in one message in fifty costs at most this; a rarer one (a
/// capped word can be, in a conversation of more than 50,000 messages) is cheaper sorted.
const WALK_ROWS_PER_HIT: u64 = 50;

/// tsvector with ts_rank. Matches come from the conversation-terms GIN (migration 25), every
/// row tested with `@@`; up to a thousand are ranked, and a capped search's page is the newest
/// matches, found by walking the conversation's messages from the newest down.
pub(super) async fn conversation_hits(
    conn: &impl ConnectionTrait,
    probe: &ConversationProbe<'_>,
) -> StoreResult<(Vec<HitRow>, u64)> {
    let ConversationProbe { conversation_id, terms, include_notes, offset, limit } = *probe;
    let notes = if include_notes { "" } else { " AND m.channel <> 'NOTE'" };
    let (query, words) = (tsquery(terms), terms.join(" "));
    let matched = format!("m.search @@ to_tsquery('simple', $2){notes}");
    // The conversation is bound as bigint, the type btree_gin's operator class takes.
    let matches = format!(
        "FROM messages m WHERE m.conversation_id = $1 \
         AND omega_conversation_terms(m.conversation_id, m.search) @> {CONVERSATION_TERM_KEYS} AND {matched}"
    );
    let ids = crate::store::ids_of(
        conn,
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!("SELECT m.id {matches} LIMIT {}", search::RANKED_MATCHES + 1),
            [conversation_id.into(), query.clone().into(), words.clone().into()],
        ),
    )
    .await?;
    let counted = ids.len() as u64;
    // Each hit's text comes back for its passage (see [`search::passage`]).
    let select = "SELECT page.id, page.rank, page.content \
                  FROM (SELECT m.id, m.content, m.created_at, ts_rank(m.search, to_tsquery('simple', $2))::float8 AS rank";
    let newest = "ORDER BY m.created_at DESC, m.id DESC";
    let by_age = "ORDER BY page.created_at DESC, page.id DESC";
    #[derive(FromQueryResult)]
    struct Hit {
        id: i64,
        rank: f64,
        content: String,
    }
    let page = |sql: String, values: Vec<sea_orm::Value>| async move {
        let hits =
            Hit::find_by_statement(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).all(conn).await?;
        StoreResult::Ok(
            hits.into_iter()
                .map(|hit| HitRow { id: hit.id, rank: hit.rank, highlight: search::passage(terms, &hit.content) })
                .collect::<Vec<_>>(),
        )
    };
    if counted > search::RANKED_MATCHES {
        // Newest first, as the conversation lists its messages: its (conversation, time) index
        // walked down, each message tested, up to a bound (the subquery's LIMIT also keeps the
        // planner from turning the walk into a sort of every match).
        let walk = (offset + limit) * WALK_ROWS_PER_HIT;
        let walked = page(
            format!(
                "{select} FROM (SELECT id, content, created_at, channel, search FROM messages \
                 WHERE conversation_id = $1 ORDER BY conversation_id DESC, created_at DESC, id DESC LIMIT {walk}) m \
                 WHERE {matched} {newest} LIMIT $3 OFFSET $4) page {by_age}"
            ),
            vec![conversation_id.into(), query.clone().into(), (limit as i64).into(), (offset as i64).into()],
        )
        .await?;
        if walked.len() as u64 == limit {
            return Ok((walked, counted));
        }
        // Too rare for the walk (or the last page): every match, sorted.
        let sorted = page(
            format!("{select} {matches} {newest} LIMIT $4 OFFSET $5) page {by_age}"),
            vec![conversation_id.into(), query.into(), words.into(), (limit as i64).into(), (offset as i64).into()],
        )
        .await?;
        return Ok((sorted, counted));
    }
    let ranked = format!(
        "{select} FROM messages m WHERE m.id = ANY($1) \
         ORDER BY rank DESC, m.id DESC LIMIT $3 OFFSET $4) page ORDER BY page.rank DESC, page.id DESC"
    );
    let hits = page(ranked, vec![ids.into(), query.into(), (limit as i64).into(), (offset as i64).into()]).await?;
    Ok((hits, counted))
}

/// How many of the business's newest messages are tested one by one before a search turns to
/// the GIN index, in two steps. A word in more than one message in a thousand fills a page of
/// 20 within them (the walk stops as soon as it does); a word absent from the first step's
/// messages, or rarer than that, is found through the index, whose cost is its number of
/// matches in the business. Both costs meet near √(page × messages): 20,000 rows for ten million
/// messages.
const PROBE_ROWS: [u64; 2] = [2_000, 20_000];

/// The business's newest messages (up to [`PROBE_ROWS`]) through the (business_id, id) index,
/// tested one by one; if they hold fewer than `limit` matches, the word is rare and the
/// (business_id, conversation_id, search) GIN lists every match.
pub(super) async fn business_matches(conn: &impl ConnectionTrait, probe: &BusinessProbe<'_>) -> StoreResult<Vec<Doc>> {
    let BusinessProbe { business_id, terms, filter, before, window, limit } = *probe;
    let backend = DbBackend::Postgres;
    let mut binds = Binds::new(backend);
    let (business, before_p, query) = (binds.push(business_id), binds.push(before), binds.push(tsquery(terms)));
    let conditions = filter.sql(&mut binds);
    // The subquery's LIMIT keeps the planner from pushing the match into it; the outer LIMIT
    // stops reading it once the page is full. The business is a range of one value, and both
    // orders name it: an equality would let the planner drop it from the order and walk the
    // primary key instead, filtering the business's rows out of everyone's. At 10M messages,
    // with other businesses' 500,000 newest ids above this one's, that walk read them all
    // (210 ms against 1.8 ms through the (business_id, id) index).
    let steps = match window {
        Some(window) => [std::cmp::min(PROBE_ROWS[0], window), window],
        None => PROBE_ROWS,
    };
    for (step, rows) in steps.into_iter().enumerate() {
        let probe = format!(
            "SELECT m.id, coalesce(m.subject, '') AS subject, m.content FROM \
             (SELECT id, business_id, conversation_id, channel, direction, created_at, subject, content, \
              search FROM messages WHERE business_id >= {business} AND business_id <= {business} \
              AND id < {before_p} ORDER BY business_id DESC, id DESC LIMIT {rows}) m \
             WHERE m.search @@ to_tsquery('simple', {query}){conditions} \
             ORDER BY m.business_id DESC, m.id DESC LIMIT {limit}"
        );
        let found = Doc::find_by_statement(Statement::from_sql_and_values(backend, probe, binds.values.clone()))
            .all(conn)
            .await?;
        if found.len() as u64 >= limit || (window.is_some() && step == 1) {
            return Ok(found);
        }
        // None among the first rows: a rare word, cheaper through the index.
        if found.is_empty() && window.is_none() {
            break;
        }
    }
    // `m.id + 0`: the order must not tempt the planner into walking the primary key.
    let indexed = format!(
        "SELECT m.id, coalesce(m.subject, '') AS subject, m.content FROM messages m \
         WHERE m.business_id = {business} AND m.search @@ to_tsquery('simple', {query}) \
         AND m.id < {before_p}{conditions} ORDER BY m.id + 0 DESC LIMIT {limit}"
    );
    Ok(Doc::find_by_statement(Statement::from_sql_and_values(backend, indexed, binds.values)).all(conn).await?)
}

/// A lone write as one statement: the conversation's update (the guard: no row, nothing
/// written), the message inserted for the row it returned, the event inserted for the message,
/// each a data-modifying CTE of the same statement, so they commit or fail together; it answers
/// the message's row, or none when the guard refused. For one write it costs PostgreSQL less
/// than [`guarded_writes`], whose plan is built for many.
///
/// Written by hand from the write's [`SummaryChange`](crate::store::conversations::SummaryChange)
/// (the change [`guarded_writes`] applies) rather than from its sea-query update: building and
/// cloning that update per write took ~140,000 instructions, more than the rest of the
/// committer's work on a write together (callgrind, P1's REST ingest). The text depends only on
/// the shape of the write and how its conversation is found, so each connection prepares it once.
pub(super) fn guarded_write(write: &super::GuardedWrite) -> StoreResult<Statement> {
    use sea_orm::{ActiveEnum, IdenStatic};

    use crate::store::entity::client;
    let business_id = write.message.business_id.try_as_ref().copied().unwrap_or_default();
    let mut binds = Binds::new(DbBackend::Postgres);
    let set = super::summary_set(&write.summary, |value| binds.push(value));
    let unless = binds.push(write.unless.iter().map(|status| status.to_value()).collect::<Vec<String>>());
    let conversation = match &write.target {
        super::WriteTarget::Conversation(id) => format!("cv.id = {}", binds.push(*id)),
        super::WriteTarget::Client { identity, value } => {
            let business = binds.push(business_id);
            let column = match identity {
                client::Column::PhoneE164 | client::Column::Email => identity.as_str(),
                other => return Err(no_batch(&format!("a client named by {}", other.as_str()))),
            };
            format!(
                "cv.business_id = {business} AND cv.client_id IN \
                 (SELECT id FROM clients WHERE business_id = {business} AND \"{column}\" = {})",
                binds.push(value.as_str())
            )
        }
    };
    // The message's conversation and client, and the event's conversation, are the ones found.
    // Written into two strings as the values are bound (a `format!` per column cost more than
    // the rest of the statement).
    let mut insert = |values: Vec<(&'static str, sea_orm::Value)>| -> (String, String) {
        use std::fmt::Write as _;
        let (mut names, mut placeholders) = (String::new(), String::new());
        for (i, (name, value)) in values.into_iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            binds.values.push(value);
            let _ = write!(names, "{comma}\"{name}\"");
            let _ = write!(placeholders, "{comma}${}", binds.values.len());
        }
        (names, placeholders)
    };
    let (message_columns, message_values) =
        insert(super::set_values(&write.message, &["conversation_id", "client_id"]));
    let (event_columns, event_values) = insert(super::set_values(&write.event, &["conversation_id"]));
    let returned = returned_message_columns();
    let sql = format!(
        "WITH c AS (UPDATE conversations cv SET {set} \
         WHERE {conversation} AND cv.status <> ALL({unless}) RETURNING cv.id, cv.client_id), \
         m AS (INSERT INTO messages ({message_columns}, conversation_id, client_id) \
         SELECT {message_values}, c.id, c.client_id FROM c RETURNING {returned}), \
         e AS (INSERT INTO conversation_events ({event_columns}, conversation_id) \
         SELECT {event_values}, m.conversation_id FROM m) \
         SELECT {returned} FROM m"
    );
    Ok(Statement::from_sql_and_values(DbBackend::Postgres, sql, binds.values))
}

/// Writes of one shape ([`super::WriteShape`]) as one statement, whatever their number: the
/// writes go in as one JSON array (one row each, `jsonb_to_recordset`), so the text depends only
/// on the shape and each connection prepares it once. Per-statement work (executor start-up,
/// opening every index of `messages`, one round trip) is paid once per group instead of once per
/// message: with groups of four to eight, PostgreSQL's CPU per message fell from ~490 to ~330 µs,
/// and from ~425 to ~240 (pgbench, this schema, 4 clients). Its CTEs, in order:
///
/// - `t`: each write with its conversation, found by id or by the client's phone or email in the
///   business, each by its own index lookup (a scalar subquery per write: joined to the JSON
///   rows, of which the planner guesses a hundred, the lookups became scans of whole tables);
///   a write whose client or conversation does not exist has none (NULL), and every join
///   below leaves it out;
/// - `l`: those conversations locked in id order, so that groups meeting at the same
///   conversations queue instead of deadlocking;
/// - `g`, `c`: each conversation updated once for all of its writes (a row may be updated only
///   once per statement), as [`SummaryChange`](crate::store::conversations::SummaryChange)s
///   applied one after another in the group's order would leave it, unless its status (read
///   under the lock) is one of the shape's: then none of its writes is made;
/// - `m`, `e`: the messages of the conversations updated, in the group's order, and an event
///   for each message.
///
/// It answers the rows of the messages written; a write whose message is not among them (by its
/// public id, which every write sets) wrote nothing. Any error (a repeated provider id) fails
/// the whole statement.
pub(super) fn guarded_writes(writes: &[&super::GuardedWrite]) -> StoreResult<Statement> {
    use sea_orm::{ActiveEnum, IdenStatic};

    use crate::store::entity::{client, enums::Direction};
    let Some(first) = writes.first() else {
        return Err(no_batch("an empty group"));
    };
    // The message's conversation and client, and the event's conversation, are the ones found.
    let message_of = |write: &super::GuardedWrite| super::set_values(&write.message, &["conversation_id", "client_id"]);
    let event_of = |write: &super::GuardedWrite| super::set_values(&write.event, &["conversation_id"]);
    let names = |values: &[(&'static str, sea_orm::Value)]| values.iter().map(|(name, _)| *name).collect::<Vec<_>>();
    let (message_columns, event_columns) = (names(&message_of(first)), names(&event_of(first)));
    if !message_columns.contains(&"public_id") {
        return Err(no_batch("a message without its public id"));
    }
    // Each write is one JSON object, written straight into the statement's one parameter (a
    // `serde_json::Value` per write, its map and its text cost more than the rest of the group's
    // work in Omega: ~87,000 instructions a message, callgrind).
    let mut json: Vec<u8> = Vec::with_capacity(512 * writes.len());
    let mut types: Vec<&'static str> = Vec::with_capacity(message_columns.len() + event_columns.len());
    json.push(b'[');
    for (ord, write) in writes.iter().enumerate() {
        let summary = &write.summary;
        if ord > 0 {
            json.push(b',');
        }
        json_key(&mut json, "{\"o\":");
        json_number(&mut json, ord as i64);
        match &write.target {
            super::WriteTarget::Conversation(id) => {
                json_key(&mut json, ",\"c\":");
                json_number(&mut json, *id);
            }
            super::WriteTarget::Client { identity: client::Column::PhoneE164, value } => {
                json_key(&mut json, ",\"p\":");
                json_string(&mut json, value);
            }
            super::WriteTarget::Client { identity: client::Column::Email, value } => {
                json_key(&mut json, ",\"e\":");
                json_string(&mut json, value);
            }
            super::WriteTarget::Client { identity, .. } => {
                return Err(no_batch(&format!("a client named by {}", identity.as_str())));
            }
        }
        json_key(&mut json, ",\"b\":");
        json_number(&mut json, write.message.business_id.try_as_ref().copied().unwrap_or_default());
        json_key(&mut json, ",\"k\":");
        json_number(&mut json, summary.channel.bit().into());
        json_key(&mut json, ",\"a\":");
        json_string(&mut json, &timestamp(&summary.at));
        json_key(&mut json, ",\"v\":");
        json_string(&mut json, &summary.preview);
        json_key(&mut json, ",\"ch\":");
        json_string(&mut json, &summary.channel.to_value());
        json_key(&mut json, ",\"d\":");
        json_string(&mut json, &summary.direction.to_value());
        json_key(&mut json, ",\"u\":");
        json_number(&mut json, i64::from(summary.direction == Direction::Inbound));
        let (message, event) = (message_of(write), event_of(write));
        let same = |values: &[(&'static str, sea_orm::Value)], columns: &[&str]| {
            values.iter().map(|(name, _)| *name).eq(columns.iter().copied())
        };
        if !same(&message, &message_columns) || !same(&event, &event_columns) {
            return Err(no_batch("writes of different shapes"));
        }
        let fields = message.iter().map(|field| ("m_", field)).chain(event.iter().map(|field| ("e_", field)));
        for (i, (prefix, (name, value))) in fields.enumerate() {
            json_key(&mut json, ",\"");
            json_key(&mut json, prefix);
            json_key(&mut json, name);
            json_key(&mut json, "\":");
            let pg_type = json_field(&mut json, value)?;
            match types.get(i) {
                None => types.push(pg_type),
                Some(&known) if known == pg_type => {}
                Some(_) => return Err(no_batch(&format!("{name} of another type"))),
            }
        }
        json.push(b'}');
    }
    json.push(b']');
    let json = String::from_utf8(json).map_err(|_| no_batch("text that is not UTF-8"))?;
    let unless: Vec<String> = first.unless.iter().map(|status| status.to_value()).collect();
    let shape = (super::set_mask(&first.message), super::set_mask(&first.event));
    let sql = grouped_statement_text(shape, &message_columns, &event_columns, &types);
    Ok(Statement::from_sql_and_values(DbBackend::Postgres, sql, [json.into(), unless.into()]))
}

/// The text of [`guarded_writes`]' statement for these message and event columns of these
/// types (the message's first, then the event's). It depends only on which columns are set
/// (`shape`: the message's and the event's column masks; a column's type is its entity
/// field's), so it is built once per shape and kept.
fn grouped_statement_text(
    shape: (u64, u64),
    message_columns: &[&str],
    event_columns: &[&str],
    types: &[&'static str],
) -> String {
    use std::{
        collections::HashMap,
        sync::{Mutex, OnceLock},
    };
    static TEXTS: OnceLock<Mutex<HashMap<(u64, u64), String>>> = OnceLock::new();
    let texts = TEXTS.get_or_init(Default::default);
    if let Some(sql) = texts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&shape) {
        return sql.clone();
    }
    let keys = message_columns.iter().map(|c| ("m_", c)).chain(event_columns.iter().map(|c| ("e_", c)));
    let record: Vec<String> =
        keys.zip(types).map(|((prefix, name), pg_type)| format!("\"{prefix}{name}\" {pg_type}")).collect();
    let record = record.join(", ");
    let from_t = |prefix: &str, columns: &[&str]| {
        columns.iter().map(|c| format!("t.\"{prefix}{c}\"")).collect::<Vec<_>>().join(", ")
    };
    let quoted = |columns: &[&str]| columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let returned = returned_message_columns();
    let sql = format!(
        "WITH w AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS w(o integer, c bigint, p text, e text, b bigint, \
         k integer, a timestamptz, v text, ch text, d text, u integer, {record})), \
         t AS MATERIALIZED (SELECT w.*, coalesce(\
         (SELECT cv.id FROM conversations cv WHERE cv.id = w.c), \
         (SELECT cv.id FROM clients cl JOIN conversations cv ON cv.business_id = w.b AND cv.client_id = cl.id \
         WHERE cl.business_id = w.b AND cl.phone_e164 = w.p), \
         (SELECT cv.id FROM clients cl JOIN conversations cv ON cv.business_id = w.b AND cv.client_id = cl.id \
         WHERE cl.business_id = w.b AND cl.email = w.e)) AS cid FROM w), \
         l AS MATERIALIZED (SELECT id FROM conversations WHERE id = ANY(ARRAY(SELECT cid FROM t)) \
         ORDER BY id FOR UPDATE), \
         g AS (SELECT t.cid, bit_or(t.k) AS k, sum(t.u)::integer AS u, max(t.o) AS last \
         FROM t JOIN l ON l.id = t.cid GROUP BY t.cid), \
         c AS (UPDATE conversations cv SET channel_mask = cv.channel_mask | g.k, last_message_at = z.a, \
         last_message_preview = z.v, last_message_channel = z.ch, last_message_direction = z.d, \
         last_activity_at = z.a, updated_at = z.a, unread_count = cv.unread_count + g.u \
         FROM g JOIN t z ON z.o = g.last WHERE cv.id = ANY(ARRAY(SELECT cid FROM g)) AND cv.id = g.cid \
         AND cv.status <> ALL($2) \
         RETURNING cv.id, cv.client_id), \
         m AS (INSERT INTO messages ({message_columns}, conversation_id, client_id) \
         SELECT {message_values}, c.id, c.client_id FROM t JOIN c ON c.id = t.cid ORDER BY t.o \
         RETURNING {returned}), \
         e AS (INSERT INTO conversation_events ({event_columns}, conversation_id) \
         SELECT {event_values}, m.conversation_id FROM m JOIN t ON t.\"m_public_id\" = m.public_id ORDER BY t.o) \
         SELECT {returned} FROM m",
        message_columns = quoted(message_columns),
        message_values = from_t("m_", message_columns),
        event_columns = quoted(event_columns),
        event_values = from_t("e_", event_columns),
    );
    texts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(shape, sql.clone());
    sql
}

/// Every column of `messages`, for RETURNING (the same list for every statement).
fn returned_message_columns() -> &'static str {
    static COLUMNS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COLUMNS.get_or_init(super::all_columns::<message::Entity>)
}

/// JSON text known to need no escaping (keys, punctuation).
fn json_key(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
}

fn json_number(out: &mut Vec<u8>, n: i64) {
    // Writing an integer into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &n);
}

/// `text` as a JSON string, escaped.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Writes `value` as JSON into `out` and answers its PostgreSQL type. The types here are those
/// of the message and event columns; timestamps keep microseconds (what PostgreSQL stores),
/// truncated as sqlx's own binding truncates them.
fn json_field(out: &mut Vec<u8>, value: &sea_orm::Value) -> StoreResult<&'static str> {
    use sea_orm::Value as V;
    fn or_null<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
        match value {
            Some(value) => write(out, value),
            None => out.extend_from_slice(b"null"),
        }
    }
    Ok(match value {
        V::Bool(v) => {
            or_null(out, *v, |out, v| out.extend_from_slice(if v { b"true" } else { b"false" }));
            "boolean"
        }
        V::SmallInt(v) => {
            or_null(out, *v, |out, v| json_number(out, v.into()));
            "smallint"
        }
        V::Int(v) => {
            or_null(out, *v, |out, v| json_number(out, v.into()));
            "integer"
        }
        V::BigInt(v) => {
            or_null(out, *v, json_number);
            "bigint"
        }
        V::String(v) => {
            or_null(out, v.as_deref(), json_string);
            "text"
        }
        V::ChronoDateTimeUtc(v) => {
            or_null(out, v.as_ref(), |out, at| json_string(out, &timestamp(at)));
            "timestamptz"
        }
        other => return Err(no_batch(&format!("a value of type {other:?}"))),
    })
}

fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn no_batch(what: &str) -> crate::store::StoreError {
    crate::store::StoreError::Other(sea_orm::DbErr::Custom(format!("grouped write: cannot write {what}")))
}
