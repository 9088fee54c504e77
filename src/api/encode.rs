//! Encoding the domain's views as wire messages.

use super::convert::{timestamp, wire_id};
use crate::{
    domain::{
        Result,
        conversations::ConversationSummary,
        values::{Channel, ConversationStatus},
        views::{ClientView, EventView, LocationView, MessageView, StaffView},
    },
    proto::omega::v1 as pb,
};

pub fn location(l: LocationView) -> Result<pb::Location> {
    Ok(pb::Location {
        id: wire_id(l.id)?,
        external_ref: l.external_ref.unwrap_or_default(),
        name: l.name,
        time_zone: l.time_zone.unwrap_or_default(),
        phone_numbers: l.phone_numbers,
        messaging_service_sid: l.messaging_service_sid.unwrap_or_default(),
        email_sender: l.email_sender.unwrap_or_default(),
        created_at: Some(timestamp(l.created_at)),
        updated_at: Some(timestamp(l.updated_at)),
    })
}

pub fn client(c: ClientView) -> Result<pb::Client> {
    Ok(pb::Client {
        id: wire_id(c.id)?,
        external_ref: c.external_ref.unwrap_or_default(),
        name: c.name,
        phone: c.phone_e164.unwrap_or_default(),
        email: c.email.unwrap_or_default(),
        sms_consent: c.sms_consent,
        sms_consent_updated_at: c.sms_consent_updated_at.map(timestamp),
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
    })
}

pub fn staff(s: StaffView) -> Result<pb::StaffMember> {
    Ok(pb::StaffMember {
        id: wire_id(s.id)?,
        external_ref: s.external_ref.unwrap_or_default(),
        name: s.name,
        email: s.email.unwrap_or_default(),
        role: s.role,
        active: s.active,
        created_at: Some(timestamp(s.created_at)),
        updated_at: Some(timestamp(s.updated_at)),
    })
}

pub fn conversation(view: ConversationSummary) -> Result<pb::ConversationSummary> {
    let c = view.conversation;
    let last_message = match (c.last_message_at, c.last_message_channel) {
        (Some(at), Some(channel)) => Some(pb::LastMessage {
            preview: c.last_message_preview.unwrap_or_default(),
            channel: channel.to_string(),
            direction: c.last_message_direction.map(|d| d.to_string()).unwrap_or_default(),
            sent_at: Some(timestamp(at)),
        }),
        _ => None,
    };
    let resolution = match (c.status, c.resolved_at) {
        (ConversationStatus::Resolved, Some(at)) => Some(pb::Resolution {
            resolved_at: Some(timestamp(at)),
            resolved_by: c.resolved_by_staff_id.map(wire_id).transpose()?,
            note: c.resolution_note.unwrap_or_default(),
        }),
        _ => None,
    };
    Ok(pb::ConversationSummary {
        conversation_id: wire_id(c.id)?,
        client_id: wire_id(c.client_id)?,
        client_name: view.client_name,
        status: c.status.to_string(),
        snoozed_until: c.snoozed_until.map(timestamp),
        assigned_to: c.assigned_staff_id.map(wire_id).transpose()?,
        assignee_name: view.assignee_name,
        location_id: c.location_id.map(wire_id).transpose()?,
        unread_count: u32::try_from(c.unread_count).unwrap_or(0),
        channels: Channel::names_in_mask(c.channel_mask),
        last_message,
        last_activity_at: Some(timestamp(c.last_activity_at)),
        created_at: Some(timestamp(c.created_at)),
        resolution,
    })
}

pub fn message(m: MessageView) -> Result<pb::ConversationMessage> {
    let attachments = m
        .attachments
        .iter()
        .map(|a| {
            Ok(pb::Attachment {
                id: wire_id(a.id)?,
                url: format!("/omega/businesses/{}/attachments/{}", m.business_id, a.id),
                file_type: a.file_type.clone(),
                content_type: a.content_type.clone(),
                file_name: a.file_name.clone(),
                file_size: u32::try_from(a.file_size).unwrap_or(u32::MAX),
                width: a.width.and_then(|w| u32::try_from(w).ok()),
                height: a.height.and_then(|h| u32::try_from(h).ok()),
            })
        })
        .collect::<Result<_>>()?;
    Ok(pb::ConversationMessage {
        attachments,
        id: m.public_id,
        conversation_id: wire_id(m.conversation_id)?,
        client_id: wire_id(m.client_id)?,
        channel: m.channel.to_string(),
        direction: m.direction.to_string(),
        sender_type: m.sender_type.to_string(),
        sender_staff_id: m.sender_staff_id.map(wire_id).transpose()?,
        content: m.content,
        subject: m.subject.unwrap_or_default(),
        note_category: m.note_category.unwrap_or_default(),
        status: m.status.to_string(),
        error_code: m.error_code.unwrap_or_default(),
        error_message: m.error_message.unwrap_or_default(),
        read_at: m.read_at.map(timestamp),
        created_at: Some(timestamp(m.created_at)),
        request_id: m.request_id.unwrap_or_default(),
        media_urls: m.media_urls,
        provider_message_id: m.provider_message_id.unwrap_or_default(),
        duration_seconds: m.duration_seconds.and_then(|d| u32::try_from(d).ok()),
        answered_by_staff_id: m.answered_by_staff_id.map(wire_id).transpose()?,
    })
}

/// Encodes every item of a list.
pub fn all<T, U>(items: Vec<T>, encode: impl Fn(T) -> Result<U>) -> Result<Vec<U>> {
    items.into_iter().map(encode).collect()
}

/// A total as the wire's u32 (saturating: totals beyond 4 billion are not expected).
pub fn total(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Counted filter values as (value, label, count).
pub fn filter_values(values: Vec<(String, String, u64)>) -> Vec<pb::FilterValue> {
    values.into_iter().map(|(value, label, n)| pb::FilterValue { value, label, count: total(n) }).collect()
}

pub fn event(e: EventView) -> Result<pb::ConversationEvent> {
    let details: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
    let text = |key: &str| match &details[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    Ok(pb::ConversationEvent {
        id: wire_id(e.id)?,
        from: text("from"),
        to: text("to"),
        kind: e.kind,
        actor_staff_id: e.actor_staff_id.map(wire_id).transpose()?,
        details: e.data,
        created_at: Some(timestamp(e.created_at)),
    })
}
