//! Inbound calls: a client's call to a business number rings the staff browsers that should
//! answer it — the assignee of the client's conversation first, then the other active staff —
//! and falls back to voicemail.
//!
//! Twilio drives the call; Omega answers TwiML at each step and keeps no state of its own
//! beyond the records: the step a `<Dial action>` reports on travels in its URL (`?stage=…`),
//! which Twilio signs with the rest of the request. The call is an inbound VOICE message in the
//! client's one conversation (provider id: the CallSid), rewritten as the call ends (answered by
//! whom and for how long, or missed and why); a voicemail is a second inbound VOICE message
//! (provider id: the RecordingSid) carrying the recording's URL and length, and its
//! transcription when the business has transcription on. Every callback is idempotent: a retry
//! finds what it stored the first time and changes nothing.

use serde_json::json;

use super::{
    Error, Omega, Result,
    auth::{Caller, Scope},
    messages::{ClientRef, IncomingMessage},
    values::{self, Channel, Direction},
    webhooks::{
        Owner, StaffIdentity, WebhookRequest, form_of, param, parse_identity, required, twilio_refusal, voice_identity,
    },
};
use crate::{
    providers::twiml::{self, Element, say_and_hang_up},
    store::{
        StoreError,
        calls::{self, CallRecord},
        conversations as conversations_db, directory,
        entity::message,
        events::{self, NewEvent},
        messages as db,
    },
};

/// Twilio rings at most ten `<Client>`s in one `<Dial>`.
const MAX_CLIENTS_PER_DIAL: u64 = 10;
/// Twilio's transcriptions are short (voicemail of up to two minutes); anything longer is cut.
const MAX_TRANSCRIPTION_CHARS: usize = 10_000;

const INCOMING: &str = "Incoming call";
const MISSED: &str = "Missed call";
const VOICEMAIL: &str = "Voicemail";

/// How inbound calls ring and record (README: Configuration).
#[derive(Clone, Copy, Debug)]
pub struct CallSettings {
    /// Seconds the conversation's assignee is rung alone.
    pub assignee_ring_secs: u32,
    /// Seconds the other active staff are rung together.
    pub staff_ring_secs: u32,
    /// The longest voicemail recorded.
    pub voicemail_max_secs: u32,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self { assignee_ring_secs: 15, staff_ring_secs: 20, voicemail_max_secs: 120 }
    }
}

/// The step of an inbound call a `<Dial action>` (or `<Record action>`) reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// The assignee alone was rung (`&staff=` names them).
    Assignee(i64),
    /// The other active staff were rung.
    Staff,
    /// The voicemail was recorded.
    Voicemail,
}

impl Stage {
    fn of(url: &str) -> Result<Self> {
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        match get("stage") {
            Some("assignee") => get("staff")
                .and_then(|s| s.parse().ok())
                .map(Stage::Assignee)
                .ok_or_else(|| Error::invalid("staff", "must be the staff id the assignee stage rang")),
            Some("staff") => Ok(Stage::Staff),
            Some("voicemail") => Ok(Stage::Voicemail),
            _ => Err(Error::invalid("stage", "must be assignee, staff or voicemail")),
        }
    }
}

/// Whether a call's record says someone answered (answered wins over missed: callbacks arrive
/// out of order).
fn answered(record: &CallRecord) -> bool {
    record.answered_by_staff_id.is_some() || record.duration_seconds.is_some()
}

/// The text a call's record shows for what is known of it.
fn call_content(record: &CallRecord, answered_by: Option<&str>) -> String {
    match (answered_by, record.duration_seconds, &record.error_code) {
        (Some(name), _, _) => format!("Call answered by {name}"),
        (None, Some(_), _) => "Call answered".to_owned(),
        (None, None, Some(_)) => MISSED.to_owned(),
        (None, None, None) => INCOMING.to_owned(),
    }
}

impl Omega {
    /// The inbound VOICE call a Twilio callback names by its CallSid, verified against its
    /// owner's account. An outbound call's SID is refused like an unknown one.
    async fn inbound_call_for(
        &self,
        request: &WebhookRequest,
        form: &[(String, String)],
        call_sid: &str,
    ) -> Result<message::Model> {
        let call = self.twilio_message_for(request, form, call_sid, Channel::Voice).await?;
        if call.direction != Direction::Inbound {
            return Err(twilio_refusal(Owner::Business(call.business_id)));
        }
        Ok(call)
    }

    /// A client's call to a business number (its Voice URL): recorded once (by CallSid) in the
    /// caller's conversation — a new client for an unknown number — which it reopens and marks
    /// unread like an inbound SMS. Answers the TwiML that rings the assignee, else the active
    /// staff, else records a voicemail.
    pub async fn receive_twilio_call(&self, request: WebhookRequest) -> Result<String> {
        let form = form_of(&request)?;
        // A number no business uses is refused like a forgery (nothing to verify it against).
        let Some(location) = self.location_for(None, param(&form, "To")).await? else {
            return Err(twilio_refusal(Owner::Nobody));
        };
        let business_id = location.business_id;
        self.verify_twilio(&request, &form, Owner::Business(business_id)).await?;
        let call_sid = required(&form, "CallSid")?.to_owned();
        let from = required(&form, "From")?.to_owned();
        let conn = self.store.connection();
        let calling_code = directory::business(conn, business_id).await?.map(|b| b.default_calling_code);
        if values::phone("From", &from, calling_code.as_deref().unwrap_or("1")).is_err() {
            // A withheld or unusable caller id names no client to file the call under.
            return Ok(say_and_hang_up(
                "Sorry, this number cannot take calls from a hidden number. Please call again with your number shown.",
            ));
        }
        let caller = Caller::without_key(Scope::Business(business_id));
        let stored = self
            .store_message_row(
                &caller,
                IncomingMessage {
                    content: INCOMING.into(),
                    status: "received".into(),
                    provider: "twilio".into(),
                    provider_message_id: call_sid,
                    location_id: Some(location.id),
                    ..IncomingMessage::new(
                        business_id,
                        Channel::Voice,
                        "INBOUND",
                        ClientRef { phone: from, ..Default::default() },
                    )
                },
            )
            .await?;
        let call = stored.message;
        let conversation = conversations_db::conversation(conn, business_id, call.conversation_id).await?;
        let assignee = match conversation.and_then(|c| c.assigned_staff_id) {
            Some(staff_id) => directory::staff_member(conn, business_id, staff_id).await?.filter(|s| s.active),
            None => None,
        };
        let base = self.public_base(&request.url);
        if let Some(assignee) = assignee {
            return Ok(self.dial(&base, Stage::Assignee(assignee.id), business_id, &[assignee.id]));
        }
        let staff = self.staff_to_ring(business_id, None).await?;
        if !staff.is_empty() {
            return Ok(self.dial(&base, Stage::Staff, business_id, &staff));
        }
        // No one to ring: missed at once, straight to voicemail.
        self.update_call(&call, |old| match answered(old) {
            true => old.clone(),
            false => CallRecord { error_code: Some("no-staff".into()), ..old.clone() },
        })
        .await?;
        self.voicemail(&base, business_id).await
    }

    /// The business's active staff to ring together (at most Twilio's ten), but `except`.
    async fn staff_to_ring(&self, business_id: i64, except: Option<i64>) -> Result<Vec<i64>> {
        let (staff, _) =
            directory::list_staff(self.store.connection(), business_id, Some(true), None, MAX_CLIENTS_PER_DIAL + 1)
                .await?;
        Ok(staff.iter().map(|s| s.id).filter(|id| Some(*id) != except).take(MAX_CLIENTS_PER_DIAL as usize).collect())
    }

    /// `<Dial>` of staff browsers (their voice token identities), reporting to the dial status
    /// callback with the stage; each answered leg reports who answered to the status callback.
    fn dial(&self, base: &str, stage: Stage, business_id: i64, staff_ids: &[i64]) -> String {
        let (query, timeout) = match stage {
            Stage::Assignee(staff) => (format!("stage=assignee&staff={staff}"), self.webhooks.calls.assignee_ring_secs),
            _ => ("stage=staff".to_owned(), self.webhooks.calls.staff_ring_secs),
        };
        let mut dial = Element::new("Dial")
            .attr("timeout", timeout.to_string())
            .attr("action", format!("{base}/omega/twilio/voice/dial_status?{query}"))
            .attr("method", "POST");
        for staff_id in staff_ids {
            dial = dial.child(
                Element::new("Client")
                    .attr("statusCallback", format!("{base}/omega/twilio/voice/status"))
                    .attr("statusCallbackEvent", "answered")
                    .attr("statusCallbackMethod", "POST")
                    .text(voice_identity(business_id, *staff_id)),
            );
        }
        twiml::response([dial])
    }

    /// A spoken prompt, then `<Record>` with its status callback (and transcription when the
    /// business has it on); `<Record action>` hangs up once the caller is done.
    async fn voicemail(&self, base: &str, business_id: i64) -> Result<String> {
        let transcribe =
            directory::business(self.store.connection(), business_id).await?.is_some_and(|b| b.transcribe_voicemail);
        let mut record = Element::new("Record")
            .attr("action", format!("{base}/omega/twilio/voice/dial_status?stage=voicemail"))
            .attr("method", "POST")
            .attr("maxLength", self.webhooks.calls.voicemail_max_secs.to_string())
            .attr("playBeep", "true")
            .attr("recordingStatusCallback", format!("{base}/omega/twilio/voice/recording"))
            .attr("recordingStatusCallbackEvent", "completed")
            .attr("recordingStatusCallbackMethod", "POST");
        if transcribe {
            record = record
                .attr("transcribe", "true")
                .attr("transcribeCallback", format!("{base}/omega/twilio/voice/transcription"));
        }
        Ok(twiml::response([
            Element::new("Say")
                .text("Sorry, no one can take your call right now. Please leave a message after the tone."),
            record,
            // Reached only when nothing was recorded (Twilio then skips the action).
            Element::new("Hangup"),
        ]))
    }

    /// The `<Dial action>` of an inbound call: answered → the record says so (and by whom, when
    /// the assignee alone was rung), then hang up; not answered → ring the other staff after the
    /// assignee, else the record says missed and the caller reaches voicemail. The `<Record
    /// action>` (stage voicemail) hangs up.
    pub async fn receive_twilio_dial_status(&self, request: WebhookRequest) -> Result<String> {
        let form = form_of(&request)?;
        let call_sid = required(&form, "CallSid")?.to_owned();
        let call = self.inbound_call_for(&request, &form, &call_sid).await?;
        let stage = Stage::of(&request.url)?;
        let hang_up = || twiml::response([Element::new("Hangup")]);
        if stage == Stage::Voicemail {
            return Ok(hang_up());
        }
        let dial_status = required(&form, "DialCallStatus")?.to_ascii_lowercase();
        let base = self.public_base(&request.url);
        match dial_status.as_str() {
            "completed" | "answered" => {
                let duration: i32 = param(&form, "DialCallDuration").and_then(|d| d.parse().ok()).unwrap_or(0);
                let by = match stage {
                    Stage::Assignee(staff) => Some(staff),
                    _ => None,
                };
                self.update_call(&call, |old| CallRecord {
                    duration_seconds: Some(duration.max(0)),
                    error_code: None,
                    answered_by_staff_id: old.answered_by_staff_id.or(by),
                    ..old.clone()
                })
                .await?;
                Ok(hang_up())
            }
            "no-answer" | "busy" | "failed" | "canceled" => {
                // Canceled: the caller hung up, so there is no one to ring (Twilio ignores the answer).
                if let (Stage::Assignee(assignee), false) = (stage, dial_status == "canceled") {
                    let staff = self.staff_to_ring(call.business_id, Some(assignee)).await?;
                    if !staff.is_empty() {
                        return Ok(self.dial(&base, Stage::Staff, call.business_id, &staff));
                    }
                }
                self.update_call(&call, |old| match answered(old) {
                    // Answered already (a late or repeated callback): answered wins.
                    true => old.clone(),
                    false => CallRecord { error_code: Some(dial_status.clone()), ..old.clone() },
                })
                .await?;
                if dial_status == "canceled" {
                    return Ok(hang_up());
                }
                self.voicemail(&base, call.business_id).await
            }
            _ => Err(Error::invalid("DialCallStatus", format!("unknown dial status {dial_status:?}"))),
        }
    }

    /// The inbound call's own status callback (the number's "call status changes" URL): a call
    /// that ended with no outcome recorded — the caller hung up while it rang — is missed.
    pub(super) async fn receive_inbound_call_status(
        &self,
        call: &message::Model,
        form: &[(String, String)],
    ) -> Result<()> {
        let status = required(form, "CallStatus")?.to_ascii_lowercase();
        let code = match status.as_str() {
            "completed" => "caller-hung-up",
            "busy" | "no-answer" | "failed" | "canceled" => status.as_str(),
            _ => return Ok(()),
        };
        self.update_call(call, |old| match answered(old) || old.error_code.is_some() {
            true => old.clone(),
            false => CallRecord { error_code: Some(code.to_owned()), ..old.clone() },
        })
        .await
    }

    /// A status callback about a staff browser's leg of an inbound call (`<Client
    /// statusCallback>`: its own CallSid, the inbound call's as ParentCallSid): once answered, the
    /// record names who answered.
    pub(super) async fn receive_staff_leg_status(
        &self,
        call: &message::Model,
        form: &[(String, String)],
    ) -> Result<()> {
        let status = required(form, "CallStatus")?.to_ascii_lowercase();
        if !matches!(status.as_str(), "in-progress" | "answered") {
            return Ok(());
        }
        let Some(StaffIdentity { business_id, staff_id }) = param(form, "To").and_then(parse_identity) else {
            return Ok(());
        };
        if business_id != call.business_id
            || directory::staff_member(self.store.connection(), business_id, staff_id).await?.is_none()
        {
            return Ok(());
        }
        self.update_call(call, |old| CallRecord {
            answered_by_staff_id: old.answered_by_staff_id.or(Some(staff_id)),
            error_code: None,
            ..old.clone()
        })
        .await
    }

    /// Applies `change` to a call's record, its text following what is known, with a
    /// `message.updated` event in the same transaction; nothing when nothing changes (a retried
    /// callback). Concurrent callbacks: the loser decides again from what is stored.
    async fn update_call(&self, call: &message::Model, change: impl Fn(&CallRecord) -> CallRecord) -> Result<()> {
        let conn = self.store.connection();
        let mut current = call.clone();
        for _ in 0..3 {
            let old = CallRecord::of(&current);
            let mut new = change(&old);
            let name = match new.answered_by_staff_id {
                Some(id) => directory::staff_member(conn, current.business_id, id).await?.map(|s| s.name),
                None => None,
            };
            new.content = call_content(&new, name.as_deref());
            if new == old {
                return Ok(());
            }
            let now = values::now();
            let txn = self.store.begin().await?;
            if calls::rewrite_call_record(&txn, current.id, &old, &new, now).await? {
                let outcome = match (answered(&new), &new.error_code) {
                    (true, _) => "answered",
                    (false, Some(_)) => "missed",
                    (false, None) => "ringing",
                };
                let event = NewEvent {
                    business_id: current.business_id,
                    conversation_id: Some(current.conversation_id),
                    kind: "message.updated",
                    actor_key_id: None,
                    actor_staff_id: new.answered_by_staff_id,
                    data: json!({
                        "message_id": current.public_id,
                        "channel": current.channel,
                        "call": outcome,
                        "answered_by": new.answered_by_staff_id,
                        "duration_seconds": new.duration_seconds,
                        "error_code": new.error_code,
                    }),
                };
                events::append_event(&txn, event, now).await?;
                txn.commit().await.map_err(StoreError::from)?;
                self.store.wake_event_readers(Some(current.business_id));
                return Ok(());
            }
            txn.rollback().await.map_err(StoreError::from)?;
            current = db::by_id(conn, current.id).await?.ok_or_else(|| Error::NotFound("call".into()))?;
        }
        Err(Error::Conflict("the call record changed concurrently; retry".into()))
    }

    /// The voicemail of an inbound call, stored once (by RecordingSid) in its conversation:
    /// created by whichever of the recording and transcription callbacks arrives first.
    async fn voicemail_of(&self, call: &message::Model, recording_sid: &str, url: &str) -> Result<message::Model> {
        let caller = Caller::without_key(Scope::Business(call.business_id));
        let stored = self
            .store_message_row(
                &caller,
                IncomingMessage {
                    content: VOICEMAIL.into(),
                    media_urls: vec![url.to_owned()],
                    status: "received".into(),
                    provider: "twilio".into(),
                    provider_message_id: recording_sid.to_owned(),
                    location_id: call.location_id,
                    ..IncomingMessage::new(
                        call.business_id,
                        Channel::Voice,
                        "INBOUND",
                        ClientRef { client_id: Some(call.client_id), ..Default::default() },
                    )
                },
            )
            .await?;
        Ok(stored.message)
    }

    /// The voicemail's recording status callback: a completed recording becomes a VOICE message
    /// (its URL and length) in the call's conversation; absent or failed recordings store
    /// nothing.
    pub async fn receive_twilio_recording(&self, request: WebhookRequest) -> Result<()> {
        let form = form_of(&request)?;
        let call_sid = required(&form, "CallSid")?.to_owned();
        let call = self.inbound_call_for(&request, &form, &call_sid).await?;
        if !param(&form, "RecordingStatus").is_none_or(|s| s.eq_ignore_ascii_case("completed")) {
            return Ok(());
        }
        let recording_sid = required(&form, "RecordingSid")?.to_owned();
        let url = required(&form, "RecordingUrl")?.to_owned();
        let duration: Option<i32> = param(&form, "RecordingDuration").and_then(|d| d.parse().ok());
        let voicemail = self.voicemail_of(&call, &recording_sid, &url).await?;
        // Set apart from the message's creation (a transcription may have created it), so a retry
        // converges on the same length.
        if duration.is_some() && voicemail.duration_seconds != duration {
            calls::set_call_progress(self.store.writer(), voicemail.id, duration, None).await?;
        }
        Ok(())
    }

    /// The voicemail's transcription callback: the text becomes the voicemail's content, if the
    /// business has transcription on (otherwise it is not kept).
    pub async fn receive_twilio_transcription(&self, request: WebhookRequest) -> Result<()> {
        let form = form_of(&request)?;
        let call_sid = required(&form, "CallSid")?.to_owned();
        let call = self.inbound_call_for(&request, &form, &call_sid).await?;
        let status = param(&form, "TranscriptionStatus").unwrap_or_default();
        let enabled = directory::business(self.store.connection(), call.business_id)
            .await?
            .is_some_and(|b| b.transcribe_voicemail);
        if !status.eq_ignore_ascii_case("completed") || !enabled {
            return Ok(());
        }
        let recording_sid = required(&form, "RecordingSid")?.to_owned();
        let url = required(&form, "RecordingUrl")?.to_owned();
        let text: String = param(&form, "TranscriptionText")
            .unwrap_or_default()
            .chars()
            .filter(|c| *c != '\0')
            .take(MAX_TRANSCRIPTION_CHARS)
            .collect();
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let voicemail = self.voicemail_of(&call, &recording_sid, &url).await?;
        let content = format!("{VOICEMAIL}: {text}");
        if voicemail.content == content {
            return Ok(()); // A retry.
        }
        let old = CallRecord::of(&voicemail);
        let new = CallRecord { content, ..old.clone() };
        let now = values::now();
        let txn = self.store.begin().await?;
        if calls::rewrite_call_record(&txn, voicemail.id, &old, &new, now).await? {
            let event = NewEvent {
                business_id: voicemail.business_id,
                conversation_id: Some(voicemail.conversation_id),
                kind: "message.updated",
                actor_key_id: None,
                actor_staff_id: None,
                data: json!({ "message_id": voicemail.public_id, "channel": voicemail.channel, "transcribed": true }),
            };
            events::append_event(&txn, event, now).await?;
            txn.commit().await.map_err(StoreError::from)?;
            self.store.wake_event_readers(Some(voicemail.business_id));
        } else {
            txn.rollback().await.map_err(StoreError::from)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_come_from_the_signed_url() {
        assert_eq!(
            Stage::of("https://h/omega/twilio/voice/dial_status?stage=assignee&staff=7").unwrap(),
            Stage::Assignee(7)
        );
        assert_eq!(Stage::of("https://h/x?stage=staff").unwrap(), Stage::Staff);
        assert_eq!(Stage::of("https://h/x?stage=voicemail").unwrap(), Stage::Voicemail);
        assert!(Stage::of("https://h/x?stage=assignee").is_err());
        assert!(Stage::of("https://h/x").is_err());
    }

    #[test]
    fn a_calls_text_follows_what_is_known() {
        let record = |duration, code: Option<&str>| CallRecord {
            content: String::new(),
            duration_seconds: duration,
            error_code: code.map(str::to_owned),
            answered_by_staff_id: None,
        };
        assert_eq!(call_content(&record(None, None), None), "Incoming call");
        assert_eq!(call_content(&record(None, Some("no-answer")), None), "Missed call");
        assert_eq!(call_content(&record(Some(42), None), None), "Call answered");
        assert_eq!(call_content(&record(Some(42), None), Some("Ana")), "Call answered by Ana");
    }
}
