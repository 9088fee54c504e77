//! Provider webhooks: Twilio's inbound SMS, SMS and call status callbacks, the TwiML a browser
//! call asks for, SendGrid's event webhook — and the voice access tokens browsers call with.
//! Inbound calls (the number's Voice URL and the callbacks of its TwiML) are in `calls`.
//!
//! Every webhook is authenticated by the provider's signature, checked before anything it says
//! is used; then it is applied idempotently (providers retry, and reorder).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    Error, Omega, Result,
    auth::{Caller, Scope},
    messages::{ClientRef, IncomingMessage, StatusReport},
    values::{self, Channel, DeliveryStatus, Direction, now},
};
use crate::{
    providers::{
        signatures,
        twiml::{self, Element, say_and_hang_up},
    },
    store::{
        calls,
        directory::{self, ClientFields},
        entity::{location, message},
        messages as db, provider_credentials,
        provider_credentials::TwilioCredentials,
        webhook_events,
    },
};

const MAX_BODY: usize = 256 * 1024;
const MAX_EVENTS: usize = 10_000;

/// Settings webhooks and voice tokens need.
#[derive(Clone, Debug, Default)]
pub struct WebhookSettings {
    /// Omega's public base URL (what providers call); otherwise taken from the forwarded headers
    /// Envoy sets.
    pub public_url: Option<String>,
    pub platform_twilio: Option<TwilioCredentials>,
    /// SendGrid's Event Webhook verification key (base64 SPKI).
    pub sendgrid_public_key: Option<String>,
    pub voice: Option<VoiceSettings>,
    /// How inbound calls ring and record.
    pub calls: super::calls::CallSettings,
}

#[derive(Clone)]
pub struct VoiceSettings {
    pub account_sid: String,
    pub api_key_sid: String,
    pub api_key_secret: String,
    pub twiml_app_sid: String,
}

impl std::fmt::Debug for VoiceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceSettings").field("api_key_sid", &self.api_key_sid).finish_non_exhaustive()
    }
}

/// Whose Twilio account must have signed a webhook.
#[derive(Clone, Copy, Debug)]
pub(super) enum Owner {
    Business(i64),
    /// Whichever account the form names (the platform's, or the one business's holding it): for
    /// a webhook that concerns no business's data, answered without writing anything.
    NamedAccount,
    /// Nothing Omega knows: refused.
    Nobody,
}

/// A webhook as it arrived.
pub struct WebhookRequest {
    /// The full public URL the provider called (with its query).
    pub url: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The provider's signature header(s): Twilio's, or SendGrid's signature and timestamp.
    pub signature: String,
    pub timestamp: String,
}

const STOP_WORDS: [&str; 6] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
const START_WORDS: [&str; 3] = ["START", "YES", "UNSTOP"];

/// The empty TwiML answer (nothing to say back).
pub fn empty_twiml() -> String {
    twiml::response([])
}

pub(super) fn form_of(request: &WebhookRequest) -> Result<Vec<(String, String)>> {
    if request.body.len() > MAX_BODY {
        return Err(Error::invalid("body", format!("is larger than {MAX_BODY} bytes")));
    }
    let media_type = request.content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if media_type != "application/x-www-form-urlencoded" {
        // Twilio error 12300: webhooks are form posts.
        return Err(Error::invalid("content-type", "must be application/x-www-form-urlencoded"));
    }
    Ok(form_urlencoded::parse(&request.body).into_owned().collect())
}

pub(super) fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

pub(super) fn required<'a>(form: &'a [(String, String)], name: &str) -> Result<&'a str> {
    param(form, name).ok_or_else(|| Error::invalid(name, "is required"))
}

impl Omega {
    /// The Twilio account a business uses: its own, else the platform's.
    async fn twilio_account_of(&self, business_id: i64) -> Result<Option<TwilioCredentials>> {
        let rows = provider_credentials::credentials(self.store.connection(), &self.secrets, business_id).await?;
        match rows.iter().find(|row| row.kind == "twilio") {
            Some(row) => Ok(serde_json::from_str(&row.config).ok()),
            None => Ok(self.webhooks.platform_twilio.clone()),
        }
    }

    /// The account a form's `AccountSid` names, if Omega knows it.
    async fn named_twilio_account(&self, form: &[(String, String)]) -> Result<Option<TwilioCredentials>> {
        let Some(named) = param(form, "AccountSid") else { return Ok(None) };
        if let Some(platform) = self.webhooks.platform_twilio.as_ref().filter(|p| p.account_sid == named) {
            return Ok(Some(platform.clone()));
        }
        let rows =
            provider_credentials::credentials_by_account(self.store.connection(), &self.secrets, "twilio", named)
                .await?;
        Ok(rows.first().and_then(|row| serde_json::from_str(&row.config).ok()))
    }

    /// Checks a Twilio webhook against the owner of what it addresses (found first, by the
    /// caller): signed with the auth token of the account that owner uses, and naming that
    /// account as its `AccountSid`. Anything else — no owner, another account's signature, the
    /// platform's signature for a business with an account of its own — is refused the same
    /// way, before anything is written.
    pub(super) async fn verify_twilio(
        &self,
        request: &WebhookRequest,
        form: &[(String, String)],
        owner: Owner,
    ) -> Result<()> {
        let account = match owner {
            Owner::Business(business_id) => self.twilio_account_of(business_id).await?,
            Owner::NamedAccount => self.named_twilio_account(form).await?,
            Owner::Nobody => None,
        };
        let valid = account.is_some_and(|account| {
            // The SID is public; the signature is compared in constant time.
            param(form, "AccountSid") == Some(account.account_sid.as_str())
                && signatures::twilio_signature_valid(&account.auth_token, &request.url, form, &request.signature)
        });
        if !valid {
            return Err(twilio_refusal(owner));
        }
        Ok(())
    }

    /// The location a Twilio message concerns: by its messaging service first (pools send from
    /// many numbers), then by the number it was sent to. Both are unique across businesses, and
    /// must agree: a service of one business and a number of another name no owner.
    pub(super) async fn location_for(
        &self,
        messaging_service: Option<&str>,
        to: Option<&str>,
    ) -> Result<Option<location::Model>> {
        let conn = self.store.connection();
        let by_service = match messaging_service {
            Some(sid) => directory::location_by_messaging_service(conn, sid).await?,
            None => None,
        };
        let by_number = match to {
            Some(number) => directory::location_by_number(conn, number).await?,
            None => None,
        };
        Ok(match (by_service, by_number) {
            (Some(service), Some(number)) if service.business_id != number.business_id => None,
            (Some(location), _) | (None, Some(location)) => Some(location),
            (None, None) => None,
        })
    }

    /// The message a Twilio status callback is about: of the messages with its SID (one per
    /// business at most), the one whose owner's account signed the callback.
    pub(super) async fn twilio_message_for(
        &self,
        request: &WebhookRequest,
        form: &[(String, String)],
        sid: &str,
        channel: Channel,
    ) -> Result<message::Model> {
        let candidates = db::by_provider_id(self.store.connection(), None, Some("twilio"), sid).await?;
        let mut refused = None;
        for candidate in candidates.into_iter().filter(|m| m.channel == channel) {
            match self.verify_twilio(request, form, Owner::Business(candidate.business_id)).await {
                Ok(()) => return Ok(candidate),
                Err(err) => refused = Some(err),
            }
        }
        // An unknown SID is refused like a forged one: the answer must not tell them apart.
        Err(refused.unwrap_or_else(|| twilio_refusal(Owner::Nobody)))
    }

    /// An inbound SMS/MMS: stored once (by MessageSid) in the sender's conversation, which it
    /// reopens; STOP / START keywords change the client's SMS consent. Answers TwiML.
    pub async fn receive_twilio_sms(&self, request: WebhookRequest) -> Result<String> {
        let form = form_of(&request)?;
        // A number no business uses is refused like a forgery (nothing to verify it against).
        let Some(location) = self.location_for(param(&form, "MessagingServiceSid"), param(&form, "To")).await? else {
            return Err(twilio_refusal(Owner::Nobody));
        };
        self.verify_twilio(&request, &form, Owner::Business(location.business_id)).await?;
        let sid = required(&form, "MessageSid").or_else(|_| required(&form, "SmsSid"))?.to_owned();
        let from = required(&form, "From")?.to_owned();
        let body = param(&form, "Body").unwrap_or_default().to_owned();
        let media_count: usize = param(&form, "NumMedia").and_then(|n| n.parse().ok()).unwrap_or(0).min(10);
        let media: Vec<String> =
            (0..media_count).filter_map(|i| param(&form, &format!("MediaUrl{i}")).map(str::to_owned)).collect();
        let business_id = location.business_id;
        let caller = Caller::without_key(Scope::Business(business_id));
        let stored = self
            .store_message_row(
                &caller,
                IncomingMessage {
                    content: if body.is_empty() && media.is_empty() { "(empty message)".into() } else { body.clone() },
                    media_urls: media,
                    status: "received".into(),
                    provider: "twilio".into(),
                    provider_message_id: sid,
                    location_id: Some(location.id),
                    ..IncomingMessage::new(
                        business_id,
                        Channel::Sms,
                        "INBOUND",
                        ClientRef { phone: from, ..Default::default() },
                    )
                },
            )
            .await?;
        if stored.created {
            let keyword = body.trim().to_ascii_uppercase();
            let consent = if STOP_WORDS.contains(&keyword.as_str()) {
                Some(false)
            } else if START_WORDS.contains(&keyword.as_str()) {
                Some(true)
            } else {
                None
            };
            if let Some(consent) = consent {
                self.set_sms_consent(business_id, stored.message.client_id, consent).await?;
            }
        }
        Ok(empty_twiml())
    }

    async fn set_sms_consent(&self, business_id: i64, client_id: i64, consent: bool) -> Result<()> {
        let conn = self.store.connection();
        if let Some(client) = directory::client(conn, business_id, client_id).await? {
            let fields = ClientFields {
                external_ref: None,
                name: None,
                phone_e164: None,
                email: None,
                sms_consent: Some(consent),
            };
            directory::update_client(self.store.writer(), client, fields, now()).await?;
            tracing::info!(business_id, client_id, consent, "SMS consent changed by keyword");
        }
        Ok(())
    }

    /// Twilio's status callback for an SMS: applied if it moves the message forward.
    pub async fn receive_twilio_sms_status(&self, request: WebhookRequest) -> Result<()> {
        let form = form_of(&request)?;
        let sid = required(&form, "MessageSid").or_else(|_| required(&form, "SmsSid"))?.to_owned();
        let message = self.twilio_message_for(&request, &form, &sid, Channel::Sms).await?;
        let status = required(&form, "MessageStatus").or_else(|_| required(&form, "SmsStatus"))?.to_owned();
        let report = StatusReport {
            message_id: message.public_id.clone(),
            provider_message_id: String::new(),
            status,
            error_code: param(&form, "ErrorCode").unwrap_or_default().to_owned(),
            error_message: param(&form, "ErrorMessage").unwrap_or_default().to_owned(),
        };
        let owner = Caller::without_key(Scope::Business(message.business_id));
        match self.update_delivery_status(&owner, Channel::Sms, report).await {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing to update, and Twilio must not retry.
            Err(Error::NotFound(_)) => {
                tracing::info!(message_sid = sid, "status callback for an unknown message; ignored");
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// Twilio's call status callback: moves the call record forward (ordered by SequenceNumber;
    /// late and repeated callbacks change nothing) and records its duration.
    pub async fn receive_twilio_voice_status(&self, request: WebhookRequest) -> Result<()> {
        let form = form_of(&request)?;
        let sid = required(&form, "CallSid")?.to_owned();
        // A leg Omega dialed (a staff browser ringing for an inbound call, the number a browser
        // calls) reports under its own SID, naming the call Omega recorded as ParentCallSid.
        let known = db::by_provider_id(self.store.connection(), None, Some("twilio"), &sid)
            .await?
            .iter()
            .any(|m| m.channel == Channel::Voice);
        let (call, leg) = match param(&form, "ParentCallSid") {
            Some(parent) if !known => (self.twilio_message_for(&request, &form, parent, Channel::Voice).await?, true),
            _ => (self.twilio_message_for(&request, &form, &sid, Channel::Voice).await?, false),
        };
        if call.direction == Direction::Inbound {
            return match leg {
                true => self.receive_staff_leg_status(&call, &form).await,
                false => self.receive_inbound_call_status(&call, &form).await,
            };
        }
        let call_status = required(&form, "CallStatus")?.to_ascii_lowercase();
        let status = match call_status.as_str() {
            "queued" | "initiated" => DeliveryStatus::Queued,
            "ringing" => DeliveryStatus::Sending,
            "in-progress" | "answered" => DeliveryStatus::Sent,
            "completed" => DeliveryStatus::Delivered,
            "busy" | "no-answer" => DeliveryStatus::Undelivered,
            "failed" => DeliveryStatus::Failed,
            "canceled" => DeliveryStatus::Canceled,
            _ => return Err(Error::invalid("CallStatus", format!("unknown call status {call_status:?}"))),
        };
        let sequence: Option<i32> = param(&form, "SequenceNumber").and_then(|s| s.parse().ok());
        let duration: Option<i32> = param(&form, "CallDuration").and_then(|s| s.parse().ok());
        if let (Some(seq), Some(seen)) = (sequence, call.provider_sequence)
            && seq <= seen
        {
            return Ok(()); // Older than what was applied.
        }
        let current = call.status;
        if current.may_become(status) {
            let code = (status == DeliveryStatus::Undelivered || status == DeliveryStatus::Failed)
                .then(|| call_status.clone());
            self.apply_status(&call, status, code, None, None).await?;
        }
        calls::set_call_progress(self.store.writer(), call.id, duration, sequence).await?;
        Ok(())
    }

    /// The TwiML for a call a staff member's browser places (identity `staff_<business>_<staff>`):
    /// dial the number with a number the business owns as caller id, and record the call in the
    /// client's conversation.
    pub async fn twiml_for_call(&self, request: WebhookRequest) -> Result<String> {
        let form = form_of(&request)?;
        let identity = param(&form, "From").and_then(parse_identity);
        let business = match identity {
            Some(staff) => directory::business(self.store.connection(), staff.business_id).await?,
            None => None,
        };
        // The call is the identity's business's. A caller who is no business's staff gets a
        // spoken refusal (nothing is written), once the account it names has signed.
        let owner = business.as_ref().map_or(Owner::NamedAccount, |b| Owner::Business(b.id));
        self.verify_twilio(&request, &form, owner).await?;
        let call_sid = required(&form, "CallSid")?.to_owned();
        let Some(StaffIdentity { business_id, staff_id }) = identity else {
            return Ok(say_and_hang_up("This call could not be placed: the caller is not a staff member."));
        };
        let Some(to) = param(&form, "To") else {
            return Ok(say_and_hang_up("This call could not be placed: no number was given."));
        };
        let Some(business) = business else {
            return Ok(say_and_hang_up("This call could not be placed."));
        };
        if self.directory.active_staff(business_id, "From", staff_id).await.is_err() {
            return Ok(say_and_hang_up("This call could not be placed: the staff member is not active."));
        }
        let Ok(number) = values::phone("To", to, &business.default_calling_code) else {
            return Ok(twiml::response([Element::new("Reject").attr("reason", "rejected")]));
        };
        let conn = self.store.connection();
        let (locations, _) = directory::list_locations(conn, business_id, None, 100).await?;
        let ids: Vec<i64> = locations.iter().map(|l| l.id).collect();
        let numbers = directory::location_numbers(conn, &ids).await?;
        let Some((location_id, caller_id)) = numbers.first().cloned() else {
            return Ok(say_and_hang_up("This call could not be placed: the business has no phone number."));
        };
        let caller = Caller::without_key(Scope::Business(business_id));
        self.store_message_row(
            &caller,
            IncomingMessage {
                content: format!("Call to {number}"),
                status: "queued".into(),
                provider: "twilio".into(),
                provider_message_id: call_sid,
                location_id: Some(location_id),
                sent_by: Some(staff_id),
                ..IncomingMessage::new(
                    business_id,
                    Channel::Voice,
                    "OUTBOUND",
                    ClientRef { phone: number.clone(), ..Default::default() },
                )
            },
        )
        .await?;
        let callback = format!("{}/omega/twilio/voice/status", self.public_base(&request.url));
        Ok(twiml::response([Element::new("Dial").attr("callerId", caller_id).attr("answerOnBridge", "true").child(
            Element::new("Number")
                .attr("statusCallback", callback)
                .attr("statusCallbackEvent", "initiated ringing answered completed")
                .text(number),
        )]))
    }

    /// The scheme and host part of a webhook URL (where Twilio should call back).
    pub(super) fn public_base(&self, url: &str) -> String {
        if let Some(base) = &self.webhooks.public_url {
            return base.trim_end_matches('/').to_owned();
        }
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        match url[after_scheme..].find('/') {
            Some(slash) => url[..after_scheme + slash].to_owned(),
            None => url.to_owned(),
        }
    }

    /// SendGrid's Event Webhook: verified with its ECDSA key over timestamp + raw body, each
    /// event applied once (by `sg_event_id`) to the message Omega put in `custom_args`.
    /// Answers how many events changed a message.
    pub async fn receive_email_events(&self, provider: &str, request: WebhookRequest) -> Result<usize> {
        if !provider.eq_ignore_ascii_case("sendgrid") {
            return Err(Error::NotFound(format!("email provider {provider:?}")));
        }
        if request.body.len() > MAX_BODY * 8 {
            return Err(Error::invalid("body", "is too large"));
        }
        let key = self.webhooks.sendgrid_public_key.as_deref().ok_or_else(|| {
            Error::PermissionDenied("SendGrid events are not accepted: no verification key is configured".into())
        })?;
        if !signatures::sendgrid_signature_valid(key, &request.timestamp, &request.body, &request.signature) {
            tracing::warn!("SendGrid webhook with a bad or missing signature refused");
            metrics::counter!(crate::metrics::WEBHOOK_REFUSALS, "provider" => "sendgrid").increment(1);
            return Err(Error::PermissionDenied("the SendGrid signature does not match".into()));
        }
        let events: Vec<Value> = serde_json::from_slice(&request.body)
            .map_err(|_| Error::invalid("body", "must be a JSON array of events"))?;
        if events.len() > MAX_EVENTS {
            return Err(Error::invalid("body", format!("at most {MAX_EVENTS} events per post")));
        }
        let mut applied = 0;
        for event in events {
            if self.apply_sendgrid_event(&event).await? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    async fn apply_sendgrid_event(&self, event: &Value) -> Result<bool> {
        let conn = self.store.connection();
        let Some(event_id) = event["sg_event_id"].as_str() else { return Ok(false) };
        let status = match event["event"].as_str().unwrap_or_default() {
            "processed" => DeliveryStatus::Sent,
            "deferred" => DeliveryStatus::Sending,
            "delivered" => DeliveryStatus::Delivered,
            "bounce" => DeliveryStatus::Undelivered,
            "dropped" => DeliveryStatus::Failed,
            "open" => DeliveryStatus::Read,
            _ => return Ok(false), // click, spamreport, unsubscribe…: nothing to move.
        };
        if !webhook_events::first_delivery_of_event(self.store.writer(), "sendgrid", event_id, now()).await? {
            return Ok(false); // A retried delivery of an event already applied.
        }
        let by_our_id = match event["omega_message_id"].as_str() {
            Some(id) => db::by_public_id(conn, None, id).await?,
            None => None,
        };
        let message = match by_our_id {
            Some(message) => Some(message),
            None => match event["sg_message_id"].as_str().and_then(|id| id.split('.').next()) {
                Some(prefix) if !prefix.is_empty() => {
                    db::by_provider_id(conn, None, Some("sendgrid"), prefix).await?.into_iter().next()
                }
                _ => None,
            },
        };
        let Some(message) = message.filter(|m| m.channel == Channel::Email) else { return Ok(false) };
        if !message.status.may_become(status) {
            return Ok(false);
        }
        let reason = event["reason"].as_str().or(event["response"].as_str()).map(str::to_owned);
        let code = matches!(status, DeliveryStatus::Failed | DeliveryStatus::Undelivered)
            .then(|| event["event"].as_str().unwrap_or_default().to_owned());
        self.apply_status(&message, status, code, reason, None).await
    }

    /// A Twilio Voice access token (JWT, HS256 with the API key secret) for a staff member.
    pub async fn voice_token(
        &self,
        caller: &Caller,
        business_id: i64,
        staff_id: Option<i64>,
        ttl_seconds: u32,
    ) -> Result<(String, String, DateTime<Utc>)> {
        // The identity is the token's staff member when the call comes with one.
        let staff_id = match (caller.staff_id, staff_id) {
            (Some(own), None) => own,
            (Some(own), Some(given)) if given != own => {
                return Err(Error::PermissionDenied("staff_id must be the staff member the token acts for".into()));
            }
            (_, Some(given)) => given,
            (None, None) => {
                return Err(Error::invalid("staff_id", "is required (or call with a staff member's token)"));
            }
        };
        let ttl = match ttl_seconds {
            0 => 3_600,
            60..=86_400 => ttl_seconds,
            _ => return Err(Error::invalid("ttl_seconds", "must be between 60 and 86400")),
        };
        self.directory.business(caller, business_id).await?;
        self.directory.active_staff(business_id, "staff_id", staff_id).await?;
        let voice = self.webhooks.voice.as_ref().ok_or_else(|| {
            Error::FailedPrecondition("voice calling is not configured (OMEGA_TWILIO_API_KEY_SID…)".into())
        })?;
        let identity = voice_identity(business_id, staff_id);
        let now = now();
        let expires = now + chrono::Duration::seconds(i64::from(ttl));
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.cty = Some("twilio-fpa;v=1".into());
        let claims = VoiceClaims {
            jti: format!("{}-{}", voice.api_key_sid, now.timestamp()),
            iss: &voice.api_key_sid,
            sub: &voice.account_sid,
            nbf: now.timestamp(),
            exp: expires.timestamp(),
            grants: VoiceGrants {
                identity: &identity,
                voice: VoiceGrant {
                    incoming: IncomingGrant { allow: true },
                    outgoing: OutgoingGrant { application_sid: &voice.twiml_app_sid },
                },
            },
        };
        let key = jsonwebtoken::EncodingKey::from_secret(voice.api_key_secret.as_bytes());
        let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| Error::Internal(e.into()))?;
        Ok((token, identity, expires))
    }
}

/// The claims of a Twilio Voice access token: the API key (`iss`) of the account (`sub`), and
/// the grant to take and place calls as `identity` through the TwiML app.
#[derive(serde::Serialize)]
struct VoiceClaims<'a> {
    jti: String,
    iss: &'a str,
    sub: &'a str,
    nbf: i64,
    exp: i64,
    grants: VoiceGrants<'a>,
}

#[derive(serde::Serialize)]
struct VoiceGrants<'a> {
    identity: &'a str,
    voice: VoiceGrant<'a>,
}

#[derive(serde::Serialize)]
struct VoiceGrant<'a> {
    incoming: IncomingGrant,
    outgoing: OutgoingGrant<'a>,
}

#[derive(serde::Serialize)]
struct IncomingGrant {
    allow: bool,
}

#[derive(serde::Serialize)]
struct OutgoingGrant<'a> {
    application_sid: &'a str,
}

/// The one answer to a Twilio webhook that is not accepted, whatever the reason (a forgery, or
/// something no business owns): the reasons must not be told apart.
pub(super) fn twilio_refusal(owner: Owner) -> Error {
    tracing::warn!(?owner, "Twilio webhook refused: not signed by the account that owns what it addresses");
    metrics::counter!(crate::metrics::WEBHOOK_REFUSALS, "provider" => "twilio").increment(1);
    Error::PermissionDenied("the Twilio signature does not match".into())
}

/// The Twilio Client identity of a staff member's browser (the voice token's `identity`).
pub(super) fn voice_identity(business_id: i64, staff_id: i64) -> String {
    format!("staff_{business_id}_{staff_id}")
}

/// The staff member a Twilio Client identity names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StaffIdentity {
    pub business_id: i64,
    pub staff_id: i64,
}

/// `client:staff_<business>_<staff>` → the staff member.
pub(super) fn parse_identity(from: &str) -> Option<StaffIdentity> {
    let rest = from.strip_prefix("client:")?.strip_prefix("staff_")?;
    let (business, staff) = rest.split_once('_')?;
    Some(StaffIdentity { business_id: business.parse().ok()?, staff_id: staff.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip() {
        assert_eq!(parse_identity("client:staff_7_42"), Some(StaffIdentity { business_id: 7, staff_id: 42 }));
        assert_eq!(parse_identity("client:someone"), None);
        assert_eq!(parse_identity("+14155550100"), None);
    }
}
