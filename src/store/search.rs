//! Full-text search over messages: within a conversation (ranked) and across a business (newest
//! first). The statements differ entirely between the databases and live in [`super::dialect`];
//! this module holds what both share: the filters, the ranking and the pages' shapes.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect};

use super::{
    StoreResult,
    dialect::{self, Binds},
    entity::message,
};

#[derive(Debug, FromQueryResult)]
pub(crate) struct HitRow {
    pub id: i64,
    pub rank: f64,
    pub highlight: String,
}

/// A matching message's text, for ranking.
#[derive(FromQueryResult)]
pub struct Doc {
    pub id: i64,
    pub subject: String,
    pub content: String,
}

/// BM25 without IDF over `docs` (id, text): best first, ties newest (highest id) first.
fn bm25_scores(terms: &[String], docs: impl Iterator<Item = (i64, String)>) -> Vec<(i64, f64)> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let tokenized: Vec<(i64, Vec<String>)> = docs
        .map(|(id, text)| {
            let tokens = text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase);
            (id, tokens.collect())
        })
        .collect();
    let average = tokenized.iter().map(|(_, t)| t.len() as f64).sum::<f64>() / tokenized.len().max(1) as f64;
    let mut scores: Vec<(i64, f64)> = tokenized
        .iter()
        .map(|(id, tokens)| {
            let norm = K1 * (1.0 - B + B * tokens.len() as f64 / average.max(1.0));
            let score = terms
                .iter()
                .map(|term| {
                    let tf = tokens.iter().filter(|t| *t == term).count() as f64;
                    tf * (K1 + 1.0) / (tf + norm)
                })
                .sum();
            (*id, score)
        })
        .collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
    scores
}

/// Matches ranked by relevance up to this many; a search matching more lists them newest first
/// (ranking every one of tens of thousands of matches would cost more than the page is worth).
pub const RANKED_MATCHES: u64 = 1_000;

/// One page of a search within a conversation.
pub struct SearchPage {
    /// (message, rank, highlighted passage), in page order.
    pub hits: Vec<(message::Model, f64, String)>,
    /// Matches, counted up to [`RANKED_MATCHES`].
    pub total: u64,
    /// Whether there were more than [`RANKED_MATCHES`]: then `total` is that cap and the hits
    /// are newest first instead of best first.
    pub capped: bool,
}

/// One page of a conversation's messages matching every term, with a highlighted passage.
/// Whole words, all required; every term quoted, so no user text is parsed as query syntax.
/// SQLite: FTS5's conversation-keyed index, ranked by BM25 over the conversation's own matches;
/// PostgreSQL: tsvector with ts_rank, through the conversation-terms GIN index.
pub async fn search(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    terms: &[String],
    include_notes: bool,
    offset: u64,
    limit: u64,
) -> StoreResult<SearchPage> {
    let probe = ConversationProbe { conversation_id, terms, include_notes, offset, limit };
    let (hits, counted) = dialect::conversation_hits(conn, &probe).await?;
    let capped = counted > RANKED_MATCHES;
    let ids: Vec<i64> = hits.iter().map(|h| h.id).collect();
    let mut rows = message::Entity::find().filter(message::Column::Id.is_in(ids)).all(conn).await?;
    let mut out = Vec::with_capacity(hits.len());
    for hit in hits {
        if let Some(pos) = rows.iter().position(|m| m.id == hit.id) {
            out.push((rows.swap_remove(pos), hit.rank, hit.highlight));
        }
    }
    Ok(SearchPage { hits: out, total: std::cmp::min(counted, RANKED_MATCHES), capped })
}

// ---- search across a business ----

/// What a business-wide search keeps besides its words (internal notes never).
#[derive(Default, Clone)]
pub struct BusinessSearchFilter {
    pub channel: Option<&'static str>,
    pub direction: Option<&'static str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The assignee of the message's conversation.
    pub assignee: super::conversations::AssigneeFilter,
}

impl BusinessSearchFilter {
    /// The filter's conditions on `m` (a message row), binding their values.
    pub(crate) fn sql(&self, binds: &mut Binds) -> String {
        use super::conversations::AssigneeFilter;
        let mut sql = " AND m.channel <> 'NOTE'".to_owned();
        if let Some(channel) = self.channel {
            sql += &format!(" AND m.channel = {}", binds.push(channel));
        }
        if let Some(direction) = self.direction {
            sql += &format!(" AND m.direction = {}", binds.push(direction));
        }
        if let Some(since) = self.since {
            sql += &format!(" AND m.created_at >= {}", binds.push(since));
        }
        if let Some(until) = self.until {
            sql += &format!(" AND m.created_at < {}", binds.push(until));
        }
        // Tested per candidate row (one primary-key lookup), so the walk stays in id order.
        let assignee = match self.assignee {
            AssigneeFilter::Any => None,
            AssigneeFilter::Unassigned => Some("c.assigned_staff_id IS NULL".to_owned()),
            AssigneeFilter::Assigned => Some("c.assigned_staff_id IS NOT NULL".to_owned()),
            AssigneeFilter::Staff(id) => Some(format!("c.assigned_staff_id = {}", binds.push(id))),
        };
        if let Some(assignee) = assignee {
            sql +=
                &format!(" AND EXISTS (SELECT 1 FROM conversations c WHERE c.id = m.conversation_id AND {assignee})");
        }
        sql
    }
}

/// Up to `limit` of the business's messages matching every term and the filter, with ids
/// below `before` (all when `None`) and, with a `window`, among the business's newest `window`
/// messages below it, newest (highest id) first, with their texts.
///
/// Both databases walk from the newest message down and stop once `limit` are found, so a
/// common word costs a page, never a sort of its million matches. SQLite: FTS5 queries scoped
/// by the business token (migration 21) over rowid windows growing fourfold from the top, each
/// reading only the matches inside it. PostgreSQL: the business's newest messages through the
/// (business_id, id) index, tested one by one; if they hold fewer than `limit` matches, the
/// word is rare and the (business_id, conversation_id, search) GIN lists every match.
pub async fn business_matches(
    conn: &impl ConnectionTrait,
    business_id: i64,
    terms: &[String],
    filter: &BusinessSearchFilter,
    before: Option<i64>,
    window: Option<u64>,
    limit: u64,
) -> StoreResult<Vec<Doc>> {
    let probe = BusinessProbe { business_id, terms, filter, before: before.unwrap_or(i64::MAX), window, limit };
    dialect::business_matches(conn, &probe).await
}

/// One page of a conversation search, as the dialects run it.
#[derive(Clone, Copy)]
pub struct ConversationProbe<'a> {
    pub conversation_id: i64,
    pub terms: &'a [String],
    pub include_notes: bool,
    pub offset: u64,
    pub limit: u64,
}

/// One look for a business search's matches, as the dialects run it (see [`business_matches`]).
#[derive(Clone, Copy)]
pub struct BusinessProbe<'a> {
    pub business_id: i64,
    pub terms: &'a [String],
    pub filter: &'a BusinessSearchFilter,
    /// Only matches with a lower id.
    pub before: i64,
    pub window: Option<u64>,
    pub limit: u64,
}

/// The highlighted passage (see [`passage`]) of each of the messages `ids` for `terms`.
pub async fn highlights_for(
    conn: &impl ConnectionTrait,
    terms: &[String],
    ids: &[i64],
) -> StoreResult<std::collections::HashMap<i64, String>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let texts: Vec<(i64, String)> = message::Entity::find()
        .select_only()
        .columns([message::Column::Id, message::Column::Content])
        .filter(message::Column::Id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(texts.into_iter().map(|(id, text)| (id, passage(terms, &text))).collect())
}

/// Words in a highlighted passage, as FTS5's `snippet(…, 20)` gave.
const PASSAGE_WORDS: usize = 20;

/// A word as SQLite's index compares it (`unicode61 remove_diacritics 2`): lower case, accents
/// dropped.
fn folded(word: &str) -> String {
    use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};
    word.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

/// The passage of `text` that holds the most of its words matching `terms` (at most
/// [`PASSAGE_WORDS`] words, the earliest such run), each of them in `<mark>…</mark>`, with `…`
/// where the text is cut. The passage is HTML: the text around the marks is escaped, so a
/// client showing it as markup shows the message's own `<script>` as text. Words are runs of
/// letters and digits, as in a search's terms, and compare without case or accents, as SQLite's
/// index matched them. Made here, for both databases, rather than by FTS5's `snippet()` (which
/// re-runs the query over the whole index to mark a page of messages: 19–52 ms for two common
/// words at ten million messages, against microseconds here) or PostgreSQL's `ts_headline`
/// (which leaves the text unescaped).
pub(crate) fn passage(terms: &[String], text: &str) -> String {
    let terms: Vec<String> = terms.iter().map(|t| folded(t)).collect();
    let mut words: Vec<(usize, usize, bool)> = Vec::new();
    let mut start = None;
    for (at, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(at),
            (false, Some(from)) => {
                words.push((from, at, terms.contains(&folded(&text[from..at]))));
                start = None;
            }
            _ => {}
        }
    }
    let first = if words.len() <= PASSAGE_WORDS {
        0
    } else {
        let mut held = words[..PASSAGE_WORDS].iter().filter(|w| w.2).count();
        let mut best = (held, 0);
        for from in 1..=words.len() - PASSAGE_WORDS {
            held = held + usize::from(words[from + PASSAGE_WORDS - 1].2) - usize::from(words[from - 1].2);
            if held > best.0 {
                best = (held, from);
            }
        }
        best.1
    };
    let last = (first + PASSAGE_WORDS).min(words.len());
    let mut out = String::with_capacity(text.len().min(400) + 32);
    let mut cursor = if first > 0 {
        out.push('…');
        words[first].0
    } else {
        0
    };
    let escaped = |out: &mut String, part: &str| {
        html_escape::encode_safe_to_string(part, out);
    };
    for &(from, to, matched) in &words[first..last] {
        escaped(&mut out, &text[cursor..from]);
        if matched {
            out.push_str("<mark>");
            escaped(&mut out, &text[from..to]);
            out.push_str("</mark>");
        } else {
            escaped(&mut out, &text[from..to]);
        }
        cursor = to;
    }
    if last < words.len() {
        out.push('…');
    } else {
        escaped(&mut out, &text[cursor..]);
    }
    out
}

/// BM25 without IDF over `docs`: best first, ties newest first (see [`bm25_scores`]).
pub fn rank_docs(terms: &[String], docs: &[Doc]) -> Vec<(i64, f64)> {
    bm25_scores(terms, docs.iter().map(|d| (d.id, format!("{} {}", d.subject, d.content))))
}

#[cfg(test)]
mod ranking_tests {
    use super::{bm25_scores, passage};

    #[test]
    fn passages_mark_whole_words_without_case_or_accents() {
        let terms = vec!["cafe".to_owned(), "invoice".to_owned()];
        assert_eq!(
            passage(&terms, "Invoice for the Café, not the invoices."),
            "<mark>Invoice</mark> for the <mark>Café</mark>, not the invoices."
        );
        assert_eq!(passage(&terms, "nothing here"), "nothing here");
        assert_eq!(passage(&terms, ""), "");
    }

    #[test]
    fn passages_are_html_with_the_text_escaped() {
        let terms = vec!["refund".to_owned()];
        assert_eq!(
            passage(&terms, "<script>refund()</script> & 'refund' \"now\""),
            "&lt;script&gt;<mark>refund</mark>()&lt;&#x2F;script&gt; &amp; &#x27;<mark>refund</mark>&#x27; &quot;now&quot;"
        );
        let filler = (0..30).map(|i| format!("<w{i}>")).collect::<Vec<_>>().join(" ");
        let cut = passage(&terms, &format!("{filler} refund {filler}"));
        assert!(!cut.contains("<w") && cut.contains("&lt;w"), "a cut passage is escaped too: {cut}");
    }

    #[test]
    fn long_texts_are_cut_around_the_most_matches() {
        let terms = vec!["refund".to_owned()];
        let filler = (0..30).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let text = format!("{filler} refund please, refund now {filler}");
        let cut = passage(&terms, &text);
        assert!(cut.starts_with('…') && cut.ends_with('…'), "{cut}");
        assert_eq!(cut.matches("<mark>refund</mark>").count(), 2, "{cut}");
        assert_eq!(cut.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty() && *w != "mark").count(), 20);
        let start = passage(&terms, &format!("refund {filler}"));
        assert!(start.starts_with("<mark>refund</mark> w0") && start.ends_with('…'), "{start}");
    }

    #[test]
    fn more_occurrences_and_shorter_texts_rank_first_ties_newest_first() {
        let terms = vec!["invoice".to_owned()];
        let docs = vec![
            (1, "Invoice paid".to_owned()),
            (2, "Invoice paid, thanks. Another invoice question".to_owned()),
            (3, "Is my invoice for March ready, and can you also tell me the opening hours?".to_owned()),
            (4, "Invoice paid".to_owned()),
        ];
        let order: Vec<i64> = bm25_scores(&terms, docs.into_iter()).into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, [2, 4, 1, 3]);
    }
}
