//! A business's inbox: one conversation per client, its status, owner, notes and messages.
//!
//! Every change runs in one transaction with the bucket counters it moves and the event it
//! appends to the business's log, and is conditional on the state it was decided from.

use std::collections::HashMap;

use sea_orm::Set;
use serde_json::json;

use super::{
    Error, Omega, Result, Violations,
    auth::Caller,
    pagination::{self, Page, PageRequest},
    values::{self, Channel, ConversationStatus, DeliveryStatus, Direction, SenderType, now},
    views::{ConversationView, EventView, MessageView, StaffView},
};
use crate::store::{
    StoreError,
    conversations::{self as db, ActivityCursor, AssigneeFilter, ConversationFilter, StatusChange},
    directory,
    entity::{conversation, conversation_count, conversation_event, message},
    events::{self, NewEvent},
    messages::{self, MessageCursor, MessageFilter, ReadScope},
};

/// A conversation with the names the inbox shows beside it.
pub struct ConversationSummary {
    pub conversation: ConversationView,
    pub client_name: String,
    pub assignee_name: String,
}

pub struct ConversationList {
    pub page: Page<ConversationSummary>,
    /// Whether `page.total` stopped at [`TOTAL_CAP`] (there are at least that many).
    pub total_capped: bool,
    /// (value, label, count) per status and per assignee bucket.
    pub status_counts: Vec<(String, String, u64)>,
    pub assignee_counts: Vec<(String, String, u64)>,
}

pub struct FilterCounts {
    pub statuses: Vec<(String, String, u64)>,
    pub assignees: Vec<(String, String, u64)>,
    pub channels: Vec<(String, String, u64)>,
    pub locations: Vec<(String, String, u64)>,
    pub unread: u64,
    pub total: u64,
}

pub struct StatusUpdate {
    pub status: ConversationStatus,
    pub previous: ConversationStatus,
    pub changed: bool,
}

pub struct ReadUpdate {
    pub changed: u64,
    pub unread_counts: Vec<UnreadCount>,
}

/// How many inbound messages of a conversation are unread.
pub struct UnreadCount {
    pub conversation_id: i64,
    pub unread: i64,
}

/// The ids in a conversation's path: `/businesses/{business_id}/clients/{client_id}/conversations/{conversation_id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConversationPath {
    pub business_id: i64,
    pub client_id: i64,
    pub conversation_id: i64,
}

pub struct MessageQuery {
    pub channel: String,
    pub direction: String,
    pub status: String,
    pub read: String,
    pub since: String,
    pub until: String,
    pub include_notes: Option<bool>,
    pub order: String,
}

pub struct ReadRequest {
    pub conversation_id: Option<i64>,
    pub client_id: Option<i64>,
    pub channel: String,
    pub up_to_message_id: String,
    pub up_to_time: String,
    pub read: Option<bool>,
}

pub struct ListQuery {
    pub status: String,
    pub assignee: String,
    pub location_id: Option<i64>,
    pub channel: String,
    pub unread_only: bool,
    pub query: String,
}

/// The target of a status change: what it becomes and what goes with it.
pub struct StatusRequest {
    pub status: String,
    pub snoozed_until: String,
    pub resolved_by: Option<i64>,
    pub note: String,
}

fn actor_event<'a>(
    caller: &Caller,
    conversation: &conversation::Model,
    kind: &'a str,
    staff: Option<i64>,
    data: serde_json::Value,
) -> NewEvent<'a> {
    NewEvent {
        business_id: conversation.business_id,
        conversation_id: Some(conversation.id),
        kind,
        actor_key_id: caller.actor_key(),
        actor_staff_id: staff,
        data,
    }
}

/// The client's conversation, created (OPEN, counted, logged) if it has none. Concurrent
/// callers meet at the unique index on (business, client): one inserts, the others read it.
pub(crate) async fn ensure_conversation(
    conn: &impl sea_orm::ConnectionTrait,
    caller: Option<&Caller>,
    business_id: i64,
    client_id: i64,
    location_id: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(conversation::Model, bool)> {
    let status = ConversationStatus::Open;
    match db::insert_conversation_if_absent(conn, business_id, client_id, location_id, status, now).await? {
        Some(conversation) => {
            db::shift_count(conn, business_id, None, Some((status.as_str(), None))).await?;
            let event = NewEvent {
                business_id,
                conversation_id: Some(conversation.id),
                kind: "conversation.created",
                actor_key_id: caller.and_then(Caller::actor_key),
                actor_staff_id: None,
                data: json!({ "client_id": client_id, "location_id": location_id }),
            };
            events::append_event(conn, event, now).await?;
            Ok((conversation, true))
        }
        None => db::conversation_of_client(conn, business_id, client_id)
            .await?
            .map(|c| (c, false))
            .ok_or_else(|| Error::Conflict("the conversation changed concurrently; retry".into())),
    }
}

fn assignee_bucket(conversation: &conversation::Model) -> (&str, Option<i64>) {
    (conversation.status.as_str(), conversation.assigned_staff_id)
}

/// Which status changes make sense. A resolved conversation must be reopened before it can be
/// put on hold or snoozed.
fn transition_allowed(from: ConversationStatus, to: ConversationStatus) -> bool {
    use ConversationStatus::*;
    !matches!((from, to), (Resolved, Pending) | (Resolved, Snoozed))
}

/// Inbox totals the counters cannot answer are counted up to this many ("1,000 or more"):
/// counting further costs more than the page (see the benchmark's P2).
pub const TOTAL_CAP: u64 = 1_000;

/// Up to this many clients matching a text filter are looked up by index first.
const CLIENT_MATCH_LIMIT: u64 = 2_000;

impl Omega {
    /// The conversation at `/businesses/{b}/clients/{c}/conversations/{id}`: it must belong to
    /// that business and that client, or it is NOT_FOUND.
    pub(super) async fn conversation_at(
        &self,
        caller: &Caller,
        business_id: i64,
        client_id: i64,
        id: i64,
    ) -> Result<conversation::Model> {
        caller.require_business(business_id)?;
        db::conversation(self.store.connection(), business_id, id)
            .await?
            .filter(|c| c.client_id == client_id)
            .ok_or_else(|| Error::NotFound(format!("conversation {id} of client {client_id}")))
    }

    /// Returns the client's conversation, creating it the first time. Concurrent calls meet at
    /// the unique index on (business, client): one inserts, the others read what it inserted.
    pub async fn create_or_retrieve_conversation(
        &self,
        caller: &Caller,
        business_id: i64,
        client_id: i64,
        location_id: Option<i64>,
    ) -> Result<(ConversationView, bool)> {
        self.directory.client(caller, business_id, client_id).await?;
        let conn = self.store.connection();
        if let Some(existing) = db::conversation_of_client(conn, business_id, client_id).await? {
            return Ok((existing.into(), false));
        }
        if let Some(location_id) = location_id
            && directory::location(conn, business_id, location_id).await?.is_none()
        {
            return Err(Error::invalid("location_id", format!("no location {location_id} in this business")));
        }
        let txn = self.store.begin().await?;
        let (conversation, created) =
            ensure_conversation(&txn, Some(caller), business_id, client_id, location_id, now()).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(business_id));
        Ok((conversation.into(), created))
    }

    pub async fn update_conversation_status(
        &self,
        caller: &Caller,
        ConversationPath { business_id, client_id, conversation_id: id }: ConversationPath,
        request: StatusRequest,
    ) -> Result<StatusUpdate> {
        let mut v = Violations::default();
        let status = v.check(ConversationStatus::parse("status", &request.status));
        let snoozed_until = v.check(values::parse_optional_time("snoozed_until", &request.snoozed_until)).flatten();
        let note = v.check(values::optional_text("note", &request.note, 2_000)).flatten();
        let now = now();
        match status {
            Some(ConversationStatus::Snoozed) => match snoozed_until {
                None if request.snoozed_until.trim().is_empty() => v.add("snoozed_until", "is required to snooze"),
                Some(until) if until <= now => v.add("snoozed_until", "must be in the future"),
                _ => {}
            },
            Some(_) if !request.snoozed_until.trim().is_empty() => v.add("snoozed_until", "is only for SNOOZED"),
            _ => {}
        }
        if status.is_some_and(|s| s != ConversationStatus::Resolved) {
            if request.resolved_by.is_some() {
                v.add("resolved_by", "is only for RESOLVED");
            }
            if note.is_some() {
                v.add("note", "is only for RESOLVED");
            }
        }
        v.finish()?;
        let status = status.ok_or_else(|| Error::invalid("status", "is required"))?;
        let conversation = self.conversation_at(caller, business_id, client_id, id).await?;
        if let Some(staff_id) = request.resolved_by {
            self.directory.active_staff(business_id, "resolved_by", staff_id).await?;
        }
        let previous = conversation.status;
        if previous == status && status != ConversationStatus::Snoozed {
            return Ok(StatusUpdate { status, previous, changed: false });
        }
        if !transition_allowed(previous, status) {
            return Err(Error::FailedPrecondition(format!(
                "a {} conversation cannot become {}; reopen it first (status=OPEN)",
                previous.as_str(),
                status.as_str()
            )));
        }
        let resolved = status == ConversationStatus::Resolved;
        let change = StatusChange {
            status,
            snoozed_until,
            resolved_at: resolved.then_some(now),
            resolved_by_staff_id: if resolved { request.resolved_by } else { None },
            resolution_note: if resolved { note.clone() } else { None },
        };
        let txn = self.store.begin().await?;
        if !db::change_conversation_status(&txn, id, conversation.status, change, now).await? {
            return Err(Error::Conflict("the conversation changed concurrently; retry".into()));
        }
        let assignee = conversation.assigned_staff_id;
        db::shift_count(&txn, business_id, Some(assignee_bucket(&conversation)), Some((status.as_str(), assignee)))
            .await?;
        let data = json!({
            "from": previous.as_str(),
            "to": status.as_str(),
            "snoozed_until": snoozed_until,
            "resolved_by": request.resolved_by,
            "note": note,
        });
        let event = actor_event(caller, &conversation, "conversation.status_changed", request.resolved_by, data);
        events::append_event(&txn, event, now).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(business_id));
        Ok(StatusUpdate { status, previous, changed: true })
    }

    /// Assigns the conversation to an active staff member of the business, or unassigns it
    /// (`assigned_to` = "none"). Answers the new assignee and whether anything changed.
    pub async fn assign_conversation(
        &self,
        caller: &Caller,
        ConversationPath { business_id, client_id, conversation_id: id }: ConversationPath,
        assigned_to: &str,
    ) -> Result<(Option<StaffView>, bool)> {
        let target = match assigned_to.trim().to_ascii_lowercase().as_str() {
            "" => {
                return Err(Error::invalid("assigned_to", "is required: a staff id, or none to unassign"));
            }
            "none" | "unassigned" | "null" => None,
            digits => match digits.parse::<u32>() {
                Ok(id) if id > 0 => Some(i64::from(id)),
                _ => {
                    return Err(Error::invalid("assigned_to", format!("{assigned_to:?} is not a staff id (or none)")));
                }
            },
        };
        let conversation = self.conversation_at(caller, business_id, client_id, id).await?;
        let staff = match target {
            Some(staff_id) => Some(self.directory.active_staff(business_id, "assigned_to", staff_id).await?),
            None => None,
        };
        let staff = staff.map(StaffView::from);
        if conversation.assigned_staff_id == target {
            return Ok((staff, false));
        }
        let now = now();
        let txn = self.store.begin().await?;
        if !db::change_assignee(&txn, id, conversation.assigned_staff_id, target, now).await? {
            return Err(Error::Conflict("the conversation changed concurrently; retry".into()));
        }
        db::shift_count(
            &txn,
            business_id,
            Some(assignee_bucket(&conversation)),
            Some((conversation.status.as_str(), target)),
        )
        .await?;
        let kind = if target.is_some() { "conversation.assigned" } else { "conversation.unassigned" };
        let event = actor_event(
            caller,
            &conversation,
            kind,
            None,
            json!({ "from": conversation.assigned_staff_id, "to": target }),
        );
        events::append_event(&txn, event, now).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(conversation.business_id));
        Ok((staff, true))
    }

    /// Adds an internal note: a NOTE message, written by an active staff member, never shown to
    /// clients.
    pub async fn add_note(
        &self,
        caller: &Caller,
        ConversationPath { business_id, client_id, conversation_id: id }: ConversationPath,
        content: &str,
        sent_by: i64,
        sender_type: &str,
        category: &str,
    ) -> Result<MessageView> {
        // A token acting for a staff member decides the author; a body cannot claim another.
        let sent_by = match (caller.staff_id, sent_by) {
            (Some(own), 0) => own,
            (Some(own), given) if given != own => {
                return Err(Error::PermissionDenied("sent_by must be the staff member the token acts for".into()));
            }
            (_, given) => given,
        };
        let mut v = Violations::default();
        let content = v.check(values::required_text("content", content, 10_000));
        if !sender_type.trim().eq_ignore_ascii_case("staff") {
            v.add("sender_type", "must be \"staff\": internal notes are written by staff");
        }
        if sent_by == 0 {
            v.add("sent_by", "is required: the id of the staff member writing the note");
        }
        let category = v.check(values::slug("category", category, "general"));
        v.finish()?;
        let conversation = self.conversation_at(caller, business_id, client_id, id).await?;
        self.directory.active_staff(business_id, "sent_by", sent_by).await?;
        let now = now();
        let txn = self.store.begin().await?;
        let note = messages::insert_message(
            &txn,
            message::ActiveModel {
                note_category: Set(category),
                channel: Set(Channel::Note),
                direction: Set(Direction::Internal),
                sender_type: Set(SenderType::Staff),
                status: Set(DeliveryStatus::Recorded),
                ..messages::new_message(business_id, id, client_id, Some(sent_by), content.unwrap_or_default())
            },
            now,
        )
        .await?;
        db::touch_activity(&txn, id, now).await?;
        let event = actor_event(
            caller,
            &conversation,
            "note.added",
            Some(sent_by),
            json!({ "note_id": note.public_id, "category": note.note_category }),
        );
        events::append_event(&txn, event, now).await?;
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(conversation.business_id));
        Ok(note.into())
    }

    /// A staff member starts or stops typing a reply: logged (not stored elsewhere) for live
    /// views, and shown in the client's chat widget. The staff member is the token's own, or
    /// `staff_id` (an active member of the business).
    pub async fn set_staff_typing(
        &self,
        caller: &Caller,
        ConversationPath { business_id, client_id, conversation_id: id }: ConversationPath,
        staff_id: Option<i64>,
        typing: bool,
    ) -> Result<ConversationView> {
        let conversation = self.conversation_at(caller, business_id, client_id, id).await?;
        let staff = match staff_id.or(caller.staff_id) {
            Some(staff) => self.directory.active_staff(business_id, "staff_id", staff).await?.id,
            None => {
                return Err(Error::invalid("staff_id", "is required with an API key (a staff token names its own)"));
            }
        };
        let event = actor_event(caller, &conversation, "staff.typing", Some(staff), json!({ "typing": typing }));
        events::append_event(self.store.writer(), event, now()).await?;
        self.store.wake_event_readers(Some(business_id));
        Ok(conversation.into())
    }

    async fn views(&self, business_id: i64, rows: Vec<conversation::Model>) -> Result<Vec<ConversationSummary>> {
        let conn = self.store.connection();
        let client_ids: Vec<i64> = rows.iter().map(|c| c.client_id).collect();
        let clients = directory::client_names(conn, business_id, &client_ids).await?;
        let mut staff_ids: Vec<i64> = rows.iter().filter_map(|c| c.assigned_staff_id).collect();
        staff_ids.sort_unstable();
        staff_ids.dedup();
        let staff: HashMap<i64, String> = directory::staff_names(conn, business_id, &staff_ids).await?;
        Ok(rows
            .into_iter()
            .map(|conversation| ConversationSummary {
                client_name: clients.get(&conversation.client_id).cloned().unwrap_or_default(),
                assignee_name: conversation
                    .assigned_staff_id
                    .and_then(|id| staff.get(&id).cloned())
                    .unwrap_or_default(),
                conversation: conversation.into(),
            })
            .collect())
    }

    /// The client's conversation as the inbox shows it, if one exists.
    pub async fn client_conversation(
        &self,
        caller: &Caller,
        business_id: i64,
        client_id: i64,
    ) -> Result<Option<ConversationSummary>> {
        caller.require_business(business_id)?;
        let found = db::conversation_of_client(self.store.connection(), business_id, client_id).await?;
        Ok(self.views(business_id, found.into_iter().collect()).await?.pop())
    }

    fn parse_list_query(caller: &Caller, query: &ListQuery) -> Result<ConversationFilter> {
        let mut v = Violations::default();
        let mut statuses = Vec::new();
        for part in query.status.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some(status) = v.check(ConversationStatus::parse("status", part)) {
                statuses.push(status);
            }
        }
        let assignee = match query.assignee.trim().to_ascii_lowercase().as_str() {
            "" | "any" | "all" => AssigneeFilter::Any,
            "unassigned" | "none" => AssigneeFilter::Unassigned,
            // The staff member the caller's token acts for.
            "mine" | "me" => match caller.staff_id {
                Some(own) => AssigneeFilter::Staff(own),
                None => {
                    v.add("assignee", "\"mine\" needs a token that acts for a staff member");
                    AssigneeFilter::Any
                }
            },
            "assigned" => AssigneeFilter::Assigned,
            digits => match digits.parse::<u32>() {
                Ok(id) if id > 0 => AssigneeFilter::Staff(i64::from(id)),
                _ => {
                    v.add("assignee", "must be any, unassigned, assigned or a staff id");
                    AssigneeFilter::Any
                }
            },
        };
        let channel = v.check(Channel::parse_filter("channel", &query.channel)).flatten();
        if channel == Some(Channel::Note) {
            v.add("channel", "conversations are filtered by client channels: SMS, EMAIL, VOICE or CHAT");
        }
        let text = v.check(values::optional_text("query", &query.query, 200)).flatten();
        v.finish()?;
        Ok(ConversationFilter {
            statuses,
            assignee,
            location_id: query.location_id,
            channel_bit: channel.map(Channel::bit),
            unread_only: query.unread_only,
            client_text: text.map(|t| t.to_lowercase()),
            client_ids: None,
        })
    }

    pub async fn list_conversations(
        &self,
        caller: &Caller,
        business_id: i64,
        query: &ListQuery,
        page: PageRequest<ActivityCursor>,
    ) -> Result<ConversationList> {
        let mut filter = Self::parse_list_query(caller, query)?;
        self.directory.business(caller, business_id).await?;
        let conn = self.store.connection();
        // Few clients match the text: their conversations, straight from the index. Many: the
        // inbox is walked in activity order testing each client (matches are dense), and when
        // the first matching clients already have the capped number of conversations between
        // them, that is the total.
        let mut known_total = None;
        if let Some(text) = &filter.client_text
            && let Some(ids) = db::clients_matching(conn, business_id, text, CLIENT_MATCH_LIMIT).await?
        {
            if (ids.len() as u64) < CLIENT_MATCH_LIMIT {
                filter.client_ids = Some(ids);
            } else {
                let some = ConversationFilter { client_ids: Some(ids), ..filter.clone() };
                let (n, capped) = db::count_conversations_capped(conn, business_id, &some, TOTAL_CAP).await?;
                known_total = capped.then_some((n, capped));
            }
        }
        let no_match = filter.client_ids.as_ref().is_some_and(Vec::is_empty);
        // The counters, the count and the page are independent reads: in parallel.
        let counting = async {
            if filter.countable_from_buckets() || no_match {
                Ok((0, false))
            } else if let Some(total) = known_total {
                Ok(total)
            } else {
                db::count_conversations_capped(conn, business_id, &filter, TOTAL_CAP).await
            }
        };
        let listing = async {
            if no_match {
                Ok(Vec::new())
            } else {
                db::list_conversations(conn, business_id, &filter, page.after, page.size + 1).await
            }
        };
        let (buckets, counted, rows) = tokio::join!(db::bucket_counts(conn, business_id), counting, listing);
        let (buckets, counted, rows) = (buckets?, counted?, rows?);
        // Totals come from the counters when they can; other filters count their matches.
        let (total, total_capped) = if filter.countable_from_buckets() {
            let total = buckets
                .iter()
                .filter(|b| filter.statuses.is_empty() || filter.statuses.iter().any(|s| s.as_str() == b.status))
                .filter(|b| match filter.assignee {
                    AssigneeFilter::Any => true,
                    AssigneeFilter::Unassigned => b.assignee_id == 0,
                    AssigneeFilter::Assigned => b.assignee_id != 0,
                    AssigneeFilter::Staff(id) => b.assignee_id == id,
                })
                .map(|b| b.count as u64)
                .sum::<u64>();
            (total, false)
        } else {
            counted
        };
        let views = self.views(business_id, rows).await?;
        let page = Page::from_rows(views, page.size, total, |v| (v.conversation.last_activity_at, v.conversation.id));
        let (status_counts, assignee_counts) = self.bucket_summary(business_id, &buckets).await?;
        Ok(ConversationList { page, total_capped, status_counts, assignee_counts })
    }

    /// The business's conversations per status (every status, zeros included) and per assignee
    /// ("unassigned" and each staff id, with names), as (value, label, count), from the counters.
    async fn bucket_summary(
        &self,
        business_id: i64,
        buckets: &[conversation_count::Model],
    ) -> Result<(Vec<(String, String, u64)>, Vec<(String, String, u64)>)> {
        let statuses = ConversationStatus::ALL
            .iter()
            .map(|s| {
                let n = buckets.iter().filter(|b| b.status == s.as_str()).map(|b| b.count as u64).sum();
                (s.as_str().to_owned(), s.as_str().to_owned(), n)
            })
            .collect();
        let mut by_staff: Vec<(i64, u64)> = vec![(0, 0)];
        for bucket in buckets {
            match by_staff.iter_mut().find(|(id, _)| *id == bucket.assignee_id) {
                Some(entry) => entry.1 += bucket.count as u64,
                None => by_staff.push((bucket.assignee_id, bucket.count as u64)),
            }
        }
        by_staff.sort_unstable();
        let staff_ids: Vec<i64> = by_staff.iter().map(|(id, _)| *id).filter(|id| *id != 0).collect();
        let names: HashMap<i64, String> =
            directory::staff_names(self.store.connection(), business_id, &staff_ids).await?;
        let assignees = by_staff
            .into_iter()
            .map(|(id, n)| match id {
                0 => ("unassigned".to_owned(), "Unassigned".to_owned(), n),
                id => (id.to_string(), names.get(&id).cloned().unwrap_or_default(), n),
            })
            .collect();
        Ok((statuses, assignees))
    }

    /// A staff member's conversations by status (every status listed, zeros included).
    pub async fn assigned_counts(&self, business_id: i64, staff_id: i64) -> Result<Vec<(String, String, u64)>> {
        let mut buckets = db::bucket_counts(self.store.connection(), business_id).await?;
        buckets.retain(|b| b.assignee_id == staff_id);
        let (statuses, _) = self.bucket_summary(business_id, &buckets).await?;
        Ok(statuses)
    }

    pub async fn conversation_filters(&self, caller: &Caller, business_id: i64) -> Result<FilterCounts> {
        self.directory.business(caller, business_id).await?;
        let conn = self.store.connection();
        let buckets = db::bucket_counts(conn, business_id).await?;
        let total: u64 = buckets.iter().map(|b| b.count as u64).sum();
        let (statuses, assignees) = self.bucket_summary(business_id, &buckets).await?;
        let mut channels = Vec::new();
        for channel in Channel::CLIENT_FACING {
            let filter = ConversationFilter { channel_bit: Some(channel.bit()), ..Default::default() };
            let (n, _) = db::count_conversations_capped(conn, business_id, &filter, TOTAL_CAP).await?;
            if n > 0 {
                channels.push((channel.as_str().to_owned(), channel.as_str().to_owned(), n));
            }
        }
        let by_location = db::count_by_location(conn, business_id).await?;
        let location_ids: Vec<i64> = by_location.iter().filter_map(|(id, _)| *id).collect();
        let names = directory::location_names(conn, business_id, &location_ids).await?;
        let locations = by_location
            .into_iter()
            .filter_map(|(id, n)| {
                let id = id?;
                Some((id.to_string(), names.get(&id).cloned().unwrap_or_default(), n as u64))
            })
            .collect();
        let unread_only = ConversationFilter { unread_only: true, ..Default::default() };
        let unread = db::count_conversations_capped(conn, business_id, &unread_only, TOTAL_CAP).await?.0;
        Ok(FilterCounts { statuses, assignees, channels, locations, unread, total })
    }

    pub async fn list_messages(
        &self,
        caller: &Caller,
        ConversationPath { business_id, client_id, conversation_id: id }: ConversationPath,
        query: &MessageQuery,
        page: PageRequest<MessageCursor>,
    ) -> Result<Page<MessageView>> {
        let mut v = Violations::default();
        let channel = v.check(Channel::parse_filter("channel", &query.channel)).flatten();
        let direction = v.check(Direction::parse_filter("direction", &query.direction)).flatten();
        let status = match query.status.trim() {
            "" => None,
            status => v.check(DeliveryStatus::parse("status", status)),
        };
        let read = match query.read.trim().to_ascii_lowercase().as_str() {
            "" => None,
            "read" | "true" => Some(true),
            "unread" | "false" => Some(false),
            _ => {
                v.add("read", "must be read or unread");
                None
            }
        };
        let since = v.check(values::parse_optional_time("since", &query.since)).flatten();
        let until = v.check(values::parse_optional_time("until", &query.until)).flatten();
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            v.add("until", "must be after since");
        }
        let newest_first = match query.order.trim().to_ascii_lowercase().as_str() {
            "" | "desc" => true,
            "asc" => false,
            _ => {
                v.add("order", "must be asc or desc");
                true
            }
        };
        v.finish()?;
        self.conversation_at(caller, business_id, client_id, id).await?;
        let filter = MessageFilter {
            channel,
            direction,
            status,
            read,
            since,
            until,
            include_notes: query.include_notes.unwrap_or(true),
        };
        let conn = self.store.connection();
        let (rows, (total, capped)) =
            messages::list_messages(conn, id, &filter, newest_first, page.after, page.size + 1, TOTAL_CAP).await?;
        let size = pagination::size_within(&rows, page.size, pagination::MESSAGE_PAGE_BYTES, pagination::message_bytes);
        let mut page = Page::from_rows(rows, size, total, |m: &message::Model| (m.created_at, m.id));
        page.total_capped = capped;
        Ok(page.into_views())
    }

    /// The conversation's history, oldest first.
    pub async fn conversation_history(
        &self,
        caller: &Caller,
        ConversationPath { business_id, client_id, conversation_id: id }: ConversationPath,
        page: PageRequest<i64>,
    ) -> Result<Page<EventView>> {
        self.conversation_at(caller, business_id, client_id, id).await?;
        let (rows, total) =
            events::conversation_events(self.store.connection(), business_id, id, page.after, page.size + 1).await?;
        Ok(Page::from_rows(rows, page.size, total, |e: &conversation_event::Model| e.id).into_views())
    }

    /// Marks inbound messages read or unread by filters; each touched conversation's unread
    /// count is recomputed in the same transaction.
    pub async fn update_read_status(
        &self,
        caller: &Caller,
        business_id: i64,
        request: ReadRequest,
    ) -> Result<ReadUpdate> {
        let mut v = Violations::default();
        if request.conversation_id.is_none() && request.client_id.is_none() {
            v.add("conversation_id", "give conversation_id or client_id");
        }
        let channel = v.check(Channel::parse_filter("channel", &request.channel)).flatten();
        let up_to_time = v.check(values::parse_optional_time("up_to_time", &request.up_to_time)).flatten();
        let up_to_id = v.check(values::optional_text("up_to_message_id", &request.up_to_message_id, 64)).flatten();
        v.finish()?;
        self.directory.business(caller, business_id).await?;
        let conn = self.store.connection();
        let conversation = match (request.conversation_id, request.client_id) {
            (Some(id), client) => db::conversation(conn, business_id, id)
                .await?
                .filter(|c| client.is_none_or(|client| c.client_id == client))
                .ok_or_else(|| Error::NotFound(format!("conversation {id}")))?,
            (None, Some(client)) => db::conversation_of_client(conn, business_id, client)
                .await?
                .ok_or_else(|| Error::NotFound(format!("conversation of client {client}")))?,
            (None, None) => unreachable!("validated above"),
        };
        let up_to = match up_to_id {
            Some(public_id) => {
                let message = messages::by_public_id(conn, Some(business_id), &public_id)
                    .await?
                    .filter(|m| m.conversation_id == conversation.id)
                    .ok_or_else(|| Error::invalid("up_to_message_id", "is not a message of this conversation"))?;
                Some((message.created_at, message.id))
            }
            None => None,
        };
        let scope = ReadScope { conversation_id: conversation.id, channel, up_to, up_to_time };
        let read = request.read.unwrap_or(true);
        let now = now();
        let txn = self.store.begin().await?;
        let (changed, unread) = messages::set_read(&txn, &scope, read.then_some(now)).await?;
        if changed > 0 {
            let kind = if read { "messages.read" } else { "messages.unread" };
            let event =
                actor_event(caller, &conversation, kind, None, json!({ "count": changed, "unread_count": unread }));
            events::append_event(&txn, event, now).await?;
        }
        txn.commit().await.map_err(StoreError::from)?;
        self.store.wake_event_readers(Some(business_id));
        Ok(ReadUpdate { changed, unread_counts: vec![UnreadCount { conversation_id: conversation.id, unread }] })
    }

    /// Reopens snoozed conversations whose time has passed; answers how many. Safe to run on
    /// every replica at once: each reopening is conditional on the conversation still being
    /// snoozed.
    pub async fn reopen_expired_snoozes(&self) -> Result<usize> {
        let now = now();
        let due = db::expired_snoozes(self.store.connection(), now, 500).await?;
        let mut reopened = 0;
        for conversation in due {
            let txn = self.store.begin().await?;
            if reopen(&txn, &conversation, "snooze_expired", Some(now), now).await? {
                txn.commit().await.map_err(StoreError::from)?;
                self.store.wake_event_readers(Some(conversation.business_id));
                reopened += 1;
            }
        }
        Ok(reopened)
    }
}

/// Reopens a conversation (counted and logged in the caller's transaction), if it still has
/// the status it was read with — and, when `snooze_due_by` is given, is still snoozed until no
/// later than that (a concurrent re-snooze wins). Answers whether it reopened.
pub(crate) async fn reopen(
    conn: &impl sea_orm::ConnectionTrait,
    conversation: &conversation::Model,
    reason: &str,
    snooze_due_by: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    if !db::reopen_conversation(conn, conversation.id, conversation.status, snooze_due_by, now).await? {
        return Ok(false);
    }
    let open = Some((ConversationStatus::Open.as_str(), conversation.assigned_staff_id));
    db::shift_count(conn, conversation.business_id, Some(assignee_bucket(conversation)), open).await?;
    let event = NewEvent {
        business_id: conversation.business_id,
        conversation_id: Some(conversation.id),
        kind: "conversation.status_changed",
        actor_key_id: None,
        actor_staff_id: None,
        data: json!({ "from": conversation.status, "to": "OPEN", "reason": reason, "snoozed_until": conversation.snoozed_until }),
    };
    events::append_event(conn, event, now).await?;
    Ok(true)
}

#[cfg(test)]
mod transition_tests {
    use super::{ConversationStatus::*, *};

    #[test]
    fn a_resolved_conversation_is_reopened_before_it_waits() {
        assert!(!transition_allowed(Resolved, Pending));
        assert!(!transition_allowed(Resolved, Snoozed));
        assert!(transition_allowed(Resolved, Open));
        assert!(transition_allowed(Resolved, Resolved));
        for from in [Open, Pending, Snoozed] {
            for to in ConversationStatus::ALL {
                assert!(transition_allowed(from, to), "{from:?} → {to:?}");
            }
        }
    }
}
