//! A business's directory: onboarding, locations, staff and clients.
//!
//! Inputs are the proto input messages (plain data; the protos are the single source of truth
//! for field names, which are also the names validation errors report).

use std::{collections::HashSet, sync::Arc};

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::{
    Error, Result, Violations,
    auth::{Caller, IssuedKey, issue_key},
    pagination::{Page, PageRequest},
    values::{self, now},
    views::{BusinessView, ClientView, LocationView, StaffView},
};
use crate::{
    proto::omega::v1::{ClientInput, LocationInput, OnboardBusinessRequest, StaffInput},
    store::{
        Store, StoreError,
        directory::{self as db, ClientFields, LocationFields, NewBusiness, StaffFields},
        entity::{business, client, location, staff},
    },
};

const NAME_MAX: usize = 200;
const REF_MAX: usize = 200;

pub struct Onboarded {
    pub business: BusinessView,
    pub created: bool,
    pub key: IssuedKey,
    pub location_ids: Vec<i64>,
    pub staff_ids: Vec<i64>,
}

pub struct OnboardingStep {
    pub step: &'static str,
    pub title: &'static str,
    pub complete: bool,
    pub detail: String,
}

/// A validated location input.
struct ValidLocation {
    fields: LocationFields,
    phones: Vec<String>,
}

fn validate_location(v: &mut Violations, at: &str, input: &LocationInput, calling_code: &str) -> Option<ValidLocation> {
    let field = |name: &str| {
        if at.is_empty() { name.to_owned() } else { format!("{at}.{name}") }
    };
    let name = v.check(values::required_text(&field("name"), &input.name, NAME_MAX));
    let external_ref = v.check(values::optional_text(&field("external_ref"), &input.external_ref, REF_MAX));
    let time_zone = if input.time_zone.trim().is_empty() {
        Some(None)
    } else {
        v.check(values::time_zone(&field("time_zone"), &input.time_zone)).map(Some)
    };
    let mut phones = Vec::new();
    for (j, raw) in input.phone_numbers.iter().enumerate() {
        let phone_field = format!("{}[{j}]", field("phone_numbers"));
        if let Some(phone) = v.check(values::phone(&phone_field, raw, calling_code)) {
            if phones.contains(&phone) {
                v.add(phone_field, format!("{phone} is listed twice"));
            } else {
                phones.push(phone);
            }
        }
    }
    let messaging_service_sid = match input.messaging_service_sid.trim() {
        "" => Some(None),
        sid if sid.len() == 34 && sid.starts_with("MG") && sid[2..].chars().all(|c| c.is_ascii_hexdigit()) => {
            Some(Some(sid.to_owned()))
        }
        _ => {
            v.add(
                field("messaging_service_sid"),
                "must be a Twilio messaging service SID (MG followed by 32 hex digits)",
            );
            None
        }
    };
    let email_sender = if input.email_sender.trim().is_empty() {
        Some(None)
    } else {
        v.check(values::email(&field("email_sender"), &input.email_sender)).map(Some)
    };
    Some(ValidLocation {
        fields: LocationFields {
            external_ref: external_ref?,
            name: name?,
            time_zone: time_zone?,
            messaging_service_sid: messaging_service_sid?,
            email_sender: email_sender?,
        },
        phones,
    })
}

fn validate_staff(v: &mut Violations, at: &str, input: &StaffInput) -> Option<StaffFields> {
    let field = |name: &str| {
        if at.is_empty() { name.to_owned() } else { format!("{at}.{name}") }
    };
    let name = v.check(values::required_text(&field("name"), &input.name, NAME_MAX));
    let external_ref = v.check(values::optional_text(&field("external_ref"), &input.external_ref, REF_MAX));
    let email = if input.email.trim().is_empty() {
        Some(None)
    } else {
        v.check(values::email(&field("email"), &input.email)).map(Some)
    };
    let role = if input.role.trim().is_empty() {
        Some(None)
    } else {
        v.check(values::slug(&field("role"), &input.role, "staff")).map(Some)
    };
    Some(StaffFields { external_ref: external_ref?, name: name?, email: email?, role: role?, active: input.active })
}

/// Who is asking to use some senders: a new business, or a location (new or existing) of a
/// business.
#[derive(Clone, Copy)]
enum SenderClaimant {
    NewBusiness,
    Location { business_id: i64, location_id: Option<i64> },
}

/// A sender number or messaging service belongs to one location: using one held by another
/// location (of this business or another) is a violation of that field.
async fn check_senders_free(
    conn: &impl ConnectionTrait,
    claimant: SenderClaimant,
    v: &mut Violations,
    at: &str,
    location: &ValidLocation,
) -> Result<()> {
    let owners = db::sender_owners(conn, &location.phones, location.fields.messaging_service_sid.as_deref()).await?;
    let field = |name: &str| if at.is_empty() { name.to_owned() } else { format!("{at}.{name}") };
    // None when the holder is the claimant itself; otherwise who holds it.
    let held_by = |db::SenderOwner { business_id, location_id }| match claimant {
        SenderClaimant::Location { business_id: own, location_id: Some(own_location) }
            if own == business_id && own_location == location_id =>
        {
            None
        }
        SenderClaimant::Location { business_id: own, .. } if own == business_id => {
            Some(format!("location {location_id}"))
        }
        _ => Some("another business".to_owned()),
    };
    for (j, phone) in location.phones.iter().enumerate() {
        if let Some((_, owner)) = owners.phones.iter().find(|(p, _)| p == phone)
            && let Some(holder) = held_by(*owner)
        {
            v.add(
                format!("{}[{j}]", field("phone_numbers")),
                format!("{phone} is already a sender number of {holder}"),
            );
        }
    }
    if let (Some(sid), Some(owner)) = (&location.fields.messaging_service_sid, owners.messaging_service)
        && let Some(holder) = held_by(owner)
    {
        v.add(field("messaging_service_sid"), format!("{sid} already sends for {holder}"));
    }
    Ok(())
}

/// Runs an upsert a second time if the first lost a race: a unique-index violation (CONFLICT)
/// means a concurrent call inserted the same row first, and the second run finds and updates it.
async fn retry_once<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    match attempt().await {
        Err(Error::Conflict(_)) => attempt().await,
        other => other,
    }
}

/// What every message stored for a business needs of it: its id and the calling code its
/// clients' local numbers are read in. Both are fixed when the business is onboarded (no
/// statement updates them, and businesses are never deleted), so a profile once read stays true
/// and is kept without invalidation; a column that could change does not belong here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessProfile {
    pub id: i64,
    pub default_calling_code: String,
}

/// Profiles kept in memory (a few hundred bytes each).
const PROFILES_KEPT: u64 = 100_000;

/// A business's directory: the business itself, its locations, staff and clients.
#[derive(Clone, Debug)]
pub struct Directory {
    store: Store,
    /// Businesses' fixed profiles, by id (see [`BusinessProfile`]). Absent businesses are not
    /// kept: one may be onboarded the next moment.
    profiles: moka::sync::Cache<i64, Arc<BusinessProfile>>,
}

impl Directory {
    pub(super) fn new(store: Store) -> Self {
        Self { store, profiles: moka::sync::Cache::new(PROFILES_KEPT) }
    }

    /// The caller's business's fixed profile: read once per process, then from memory (an
    /// ingest's read of the business, saved). NOT_FOUND as [`Self::business`].
    pub async fn business_profile(&self, caller: &Caller, business_id: i64) -> Result<Arc<BusinessProfile>> {
        caller.require_business(business_id)?;
        if let Some(profile) = self.profiles.get(&business_id) {
            return Ok(profile);
        }
        let business = self.business(caller, business_id).await?;
        let profile =
            Arc::new(BusinessProfile { id: business.id, default_calling_code: business.default_calling_code });
        self.profiles.insert(business_id, profile.clone());
        Ok(profile)
    }

    /// An active staff member of the business, or a violation of `field`.
    pub async fn active_staff(&self, business_id: i64, field: &str, staff_id: i64) -> Result<staff::Model> {
        let member = db::staff_member(self.store.connection(), business_id, staff_id).await?;
        match member {
            None => Err(Error::invalid(field, format!("no staff member {staff_id} in this business"))),
            Some(member) if !member.active => {
                Err(Error::invalid(field, format!("staff member {staff_id} is inactive")))
            }
            Some(member) => Ok(member),
        }
    }

    /// Onboards a business in one transaction; see `OnboardingService.OnboardBusiness`.
    pub async fn onboard(&self, caller: &Caller, request: OnboardBusinessRequest) -> Result<Onboarded> {
        caller.require_platform()?;
        let mut v = Violations::default();
        let external_ref = v.check(values::optional_text("external_ref", &request.external_ref, REF_MAX)).flatten();
        let name = v.check(values::required_text("name", &request.name, NAME_MAX));
        let time_zone = v.check(values::time_zone("time_zone", &request.time_zone));
        let calling_code = v.check(values::calling_code("default_calling_code", &request.default_calling_code));
        let code = calling_code.clone().unwrap_or_else(|| "1".into());

        let mut locations = Vec::new();
        let (mut refs, mut phones) = (HashSet::new(), HashSet::new());
        for (i, input) in request.locations.iter().enumerate() {
            let at = format!("locations[{i}]");
            if let Some(location) = validate_location(&mut v, &at, input, &code) {
                if let Some(r) = &location.fields.external_ref
                    && !refs.insert(r.clone())
                {
                    v.add(format!("{at}.external_ref"), "is used by another location of this request");
                }
                for (j, phone) in location.phones.iter().enumerate() {
                    if !phones.insert(phone.clone()) {
                        v.add(format!("{at}.phone_numbers[{j}]"), format!("{phone} is listed by two locations"));
                    }
                }
                locations.push((at, location));
            }
        }
        let mut staff = Vec::new();
        let (mut staff_refs, mut emails) = (HashSet::new(), HashSet::new());
        for (i, input) in request.staff.iter().enumerate() {
            let at = format!("staff[{i}]");
            if let Some(member) = validate_staff(&mut v, &at, input) {
                if let Some(r) = &member.external_ref
                    && !staff_refs.insert(r.clone())
                {
                    v.add(format!("{at}.external_ref"), "is used by another staff member of this request");
                }
                if let Some(e) = &member.email
                    && !emails.insert(e.clone())
                {
                    v.add(format!("{at}.email"), "is used by another staff member of this request");
                }
                staff.push(member);
            }
        }
        v.finish()?;
        let conn = self.store.connection();
        let external = external_ref.as_deref();
        let existing = |conn| async move {
            match external {
                Some(external_ref) => db::business_by_external_ref(conn, external_ref).await,
                None => Ok(None),
            }
        };
        if let Some(business) = existing(conn).await? {
            return self.onboarded_already(business).await;
        }
        let mut v = Violations::default();
        for (at, location) in &locations {
            check_senders_free(conn, SenderClaimant::NewBusiness, &mut v, at, location).await?;
        }
        if let Err(err) = v.finish() {
            // A concurrent onboarding of the same business may have taken these senders since
            // the lookup above: then this is a repeat, not a clash.
            return match existing(conn).await? {
                Some(business) => self.onboarded_already(business).await,
                None => Err(err),
            };
        }
        let (name, time_zone, calling_code) =
            (name.unwrap_or_default(), time_zone.unwrap_or_default(), calling_code.unwrap_or_default());

        let settings = request.channel_settings.unwrap_or_default();
        let now = now();
        let txn = self.store.begin().await?;
        let inserted = db::insert_business(
            &txn,
            NewBusiness {
                external_ref: external_ref.clone(),
                name,
                time_zone,
                default_calling_code: calling_code,
                sms_enabled: settings.sms_enabled.unwrap_or(true),
                email_enabled: settings.email_enabled.unwrap_or(true),
                voice_enabled: settings.voice_enabled.unwrap_or(true),
                chat_enabled: settings.chat_enabled.unwrap_or(true),
            },
            now,
        )
        .await;
        let business = match inserted {
            Ok(business) => business,
            // A concurrent onboarding with the same external_ref won the race.
            Err(StoreError::UniqueViolation(_)) if external_ref.is_some() => {
                txn.rollback().await.map_err(StoreError::from)?;
                let existing = db::business_by_external_ref(conn, external_ref.as_deref().unwrap_or_default()).await?;
                return match existing {
                    Some(existing) => self.onboarded_already(existing).await,
                    None => Err(Error::Conflict("a concurrent onboarding failed; retry".into())),
                };
            }
            Err(err) => return Err(err.into()),
        };
        let mut location_ids = Vec::new();
        for (_, location) in locations {
            let row = db::insert_location(&txn, business.id, location.fields, now).await?;
            db::set_location_numbers(&txn, business.id, row.id, &location.phones, now).await?;
            location_ids.push(row.id);
        }
        let mut staff_ids = Vec::new();
        for member in staff {
            staff_ids.push(db::insert_staff(&txn, business.id, member, now).await?.id);
        }
        let key = issue_key(&txn, "onboarding", Some(business.id)).await?;
        txn.commit().await.map_err(StoreError::from)?;
        tracing::info!(business_id = business.id, "business onboarded");
        Ok(Onboarded { business: business.into(), created: true, key, location_ids, staff_ids })
    }

    /// The answer to a repeated onboarding: the business as it is, and a fresh key (the caller
    /// may never have received the first one).
    async fn onboarded_already(&self, business: business::Model) -> Result<Onboarded> {
        let conn = self.store.connection();
        let location_ids = db::location_ids(conn, business.id).await?;
        let staff_ids = db::staff_ids(conn, business.id).await?;
        let key = issue_key(self.store.writer(), "onboarding (repeated)", Some(business.id)).await?;
        Ok(Onboarded { location_ids, staff_ids, business: business.into(), created: false, key })
    }

    /// The business, if the caller may see it (another business's id is NOT_FOUND).
    pub async fn business(&self, caller: &Caller, business_id: i64) -> Result<business::Model> {
        caller.require_business(business_id)?;
        db::business(self.store.keyed(), business_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("business {business_id}")))
    }

    pub async fn onboarding_status(&self, caller: &Caller, business_id: i64) -> Result<Vec<OnboardingStep>> {
        let business = self.business(caller, business_id).await?;
        let counts = db::setup_counts(self.store.connection(), business_id).await?;
        let plural = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
        let channel_step = |enabled: bool, ready: bool, have: String, missing: &str| match (enabled, ready) {
            (false, _) => (true, "not needed: the channel is off".to_owned()),
            (true, true) => (true, have),
            (true, false) => (false, missing.to_owned()),
        };
        let (sms_done, sms_detail) = channel_step(
            business.sms_enabled,
            counts.sender_numbers + counts.messaging_services > 0,
            format!(
                "{}, {}",
                plural(counts.sender_numbers, "sender number"),
                plural(counts.messaging_services, "messaging service")
            ),
            "add a phone number or messaging service to a location",
        );
        let (email_done, email_detail) = channel_step(
            business.email_enabled,
            counts.email_senders > 0,
            plural(counts.email_senders, "location with an email sender"),
            "add an email sender to a location",
        );
        Ok(vec![
            OnboardingStep {
                step: "profile",
                title: "Business profile",
                complete: !business.name.is_empty() && !business.time_zone.is_empty(),
                detail: format!("{} ({})", business.name, business.time_zone),
            },
            OnboardingStep {
                step: "locations",
                title: "Locations",
                complete: counts.locations > 0,
                detail: plural(counts.locations, "location"),
            },
            OnboardingStep {
                step: "staff",
                title: "Staff",
                complete: counts.active_staff > 0,
                detail: plural(counts.active_staff, "active staff member"),
            },
            OnboardingStep { step: "sms_sender", title: "SMS sender", complete: sms_done, detail: sms_detail },
            OnboardingStep { step: "email_sender", title: "Email sender", complete: email_done, detail: email_detail },
            OnboardingStep {
                step: "clients",
                title: "Clients synced",
                complete: counts.clients > 0,
                detail: plural(counts.clients, "client"),
            },
            OnboardingStep {
                step: "first_message",
                title: "First message sent",
                complete: counts.outbound_messages > 0,
                detail: if counts.outbound_messages > 0 { "sent".into() } else { "no message sent yet".into() },
            },
        ])
    }

    // ---- locations ----

    /// Creates a location, or updates the one with the same external_ref (omitted optional
    /// fields and an empty number list keep what is stored).
    pub async fn upsert_location(
        &self,
        caller: &Caller,
        business_id: i64,
        input: &LocationInput,
    ) -> Result<(LocationView, bool)> {
        let business = self.business(caller, business_id).await?;
        let mut v = Violations::default();
        let location = validate_location(&mut v, "", input, &business.default_calling_code);
        v.finish()?;
        let location = location.ok_or_else(|| Error::invalid("location", "is invalid"))?;
        let (row, created) = retry_once(|| self.try_upsert_location(business_id, &location)).await?;
        let view = self.location_views(vec![row]).await?.pop().expect("one location");
        Ok((view, created))
    }

    async fn try_upsert_location(&self, business_id: i64, location: &ValidLocation) -> Result<(location::Model, bool)> {
        let conn = self.store.connection();
        let existing = match &location.fields.external_ref {
            Some(r) => db::location_by_external_ref(conn, business_id, r).await?,
            None => None,
        };
        let mut v = Violations::default();
        let claimant = SenderClaimant::Location { business_id, location_id: existing.as_ref().map(|l| l.id) };
        check_senders_free(conn, claimant, &mut v, "", location).await?;
        v.finish()?;
        let now = now();
        let txn = self.store.begin().await?;
        let fields = location.fields.clone();
        let created = existing.is_none();
        let row = match existing {
            Some(existing) => db::update_location(&txn, existing, fields, now).await?,
            None => db::insert_location(&txn, business_id, fields, now).await?,
        };
        if created || !location.phones.is_empty() {
            db::set_location_numbers(&txn, business_id, row.id, &location.phones, now).await?;
        }
        txn.commit().await.map_err(StoreError::from)?;
        Ok((row, created))
    }

    async fn location_views(&self, rows: Vec<location::Model>) -> Result<Vec<LocationView>> {
        let ids: Vec<i64> = rows.iter().map(|l| l.id).collect();
        let numbers = db::location_numbers(self.store.connection(), &ids).await?;
        Ok(rows
            .into_iter()
            .map(|location| {
                let phone_numbers =
                    numbers.iter().filter(|(id, _)| *id == location.id).map(|(_, p)| p.clone()).collect();
                LocationView::new(location, phone_numbers)
            })
            .collect())
    }

    pub async fn list_locations(
        &self,
        caller: &Caller,
        business_id: i64,
        page: PageRequest<i64>,
    ) -> Result<Page<LocationView>> {
        self.business(caller, business_id).await?;
        let (rows, total) = db::list_locations(self.store.connection(), business_id, page.after, page.size + 1).await?;
        let views = self.location_views(rows).await?;
        Ok(Page::from_rows(views, page.size, total, |v| v.id))
    }

    // ---- staff ----

    /// Creates a staff member, or updates the one with the same external_ref, else email
    /// (omitted email, role and active keep what is stored).
    pub async fn upsert_staff(
        &self,
        caller: &Caller,
        business_id: i64,
        input: &StaffInput,
    ) -> Result<(StaffView, bool)> {
        self.business(caller, business_id).await?;
        let mut v = Violations::default();
        let fields = validate_staff(&mut v, "", input);
        v.finish()?;
        let fields = fields.ok_or_else(|| Error::invalid("staff", "is invalid"))?;
        retry_once(|| async {
            let conn = self.store.connection();
            let existing =
                db::staff_by_identity(conn, business_id, fields.external_ref.as_deref(), fields.email.as_deref())
                    .await?;
            let result = match existing {
                Some(existing) => {
                    db::update_staff(self.store.writer(), existing, fields.clone(), now()).await.map(|s| (s, false))
                }
                None => {
                    db::insert_staff(self.store.writer(), business_id, fields.clone(), now()).await.map(|s| (s, true))
                }
            };
            result.map_err(Error::from)
        })
        .await
        .map_err(|err| match err {
            Error::Conflict(_) => Error::Conflict("another staff member already has this email or external_ref".into()),
            other => other,
        })
        .map(|(staff, created)| (staff.into(), created))
    }

    pub async fn staff_member(&self, caller: &Caller, business_id: i64, staff_id: i64) -> Result<StaffView> {
        caller.require_business(business_id)?;
        db::staff_member(self.store.connection(), business_id, staff_id)
            .await?
            .map(StaffView::from)
            .ok_or_else(|| Error::NotFound(format!("staff member {staff_id}")))
    }

    pub async fn list_staff(
        &self,
        caller: &Caller,
        business_id: i64,
        active: Option<bool>,
        page: PageRequest<i64>,
    ) -> Result<Page<StaffView>> {
        self.business(caller, business_id).await?;
        let (rows, total) =
            db::list_staff(self.store.connection(), business_id, active, page.after, page.size + 1).await?;
        Ok(Page::from_rows(rows, page.size, total, |s: &staff::Model| s.id).into_views())
    }

    // ---- clients ----

    /// Creates or updates a client, matched by external_ref, else phone, else email. The
    /// database's unique indexes decide races: a losing insert retries as an update.
    pub async fn upsert_client(
        &self,
        caller: &Caller,
        business_id: i64,
        input: &ClientInput,
    ) -> Result<(ClientView, bool)> {
        let business = self.business(caller, business_id).await?;
        let mut v = Violations::default();
        let external_ref = v.check(values::optional_text("external_ref", &input.external_ref, REF_MAX)).flatten();
        let name = v.check(values::optional_text("name", &input.name, NAME_MAX)).flatten();
        let phone = if input.phone.trim().is_empty() {
            None
        } else {
            v.check(values::phone("phone", &input.phone, &business.default_calling_code))
        };
        let email = if input.email.trim().is_empty() { None } else { v.check(values::email("email", &input.email)) };
        if input.external_ref.trim().is_empty() && input.phone.trim().is_empty() && input.email.trim().is_empty() {
            v.add("phone", "a client needs at least one of external_ref, phone or email");
        }
        v.finish()?;
        let fields = ClientFields { external_ref, name, phone_e164: phone, email, sms_consent: input.sms_consent };
        let (client, created) = retry_once(|| self.try_upsert_client(business_id, fields.clone(), now())).await?;
        Ok((client.into(), created))
    }

    async fn try_upsert_client(
        &self,
        business_id: i64,
        fields: ClientFields,
        now: DateTime<Utc>,
    ) -> Result<(client::Model, bool)> {
        let conn = self.store.connection();
        let matches = db::clients_by_identity(
            conn,
            business_id,
            fields.external_ref.as_deref(),
            fields.phone_e164.as_deref(),
            fields.email.as_deref(),
        )
        .await?;
        // The strongest identity decides which client this is.
        let target = [
            matches.iter().find(|c| fields.external_ref.is_some() && c.external_ref == fields.external_ref),
            matches.iter().find(|c| fields.phone_e164.is_some() && c.phone_e164 == fields.phone_e164),
            matches.iter().find(|c| fields.email.is_some() && c.email == fields.email),
        ]
        .into_iter()
        .flatten()
        .next()
        .cloned();
        if let Some(target) = &target {
            let mut v = Violations::default();
            for other in matches.iter().filter(|c| c.id != target.id) {
                if fields.phone_e164.is_some() && other.phone_e164 == fields.phone_e164 {
                    v.add("phone", format!("already belongs to client {}", other.id));
                }
                if fields.email.is_some() && other.email == fields.email {
                    v.add("email", format!("already belongs to client {}", other.id));
                }
                if fields.external_ref.is_some() && other.external_ref == fields.external_ref {
                    v.add("external_ref", format!("already belongs to client {}", other.id));
                }
            }
            v.finish()?;
        }
        let result = match target {
            Some(existing) => db::update_client(self.store.writer(), existing, fields, now).await.map(|c| (c, false)),
            None => db::insert_client(self.store.writer(), business_id, fields, now).await.map(|c| (c, true)),
        };
        result.map_err(Error::from)
    }

    pub async fn client(&self, caller: &Caller, business_id: i64, client_id: i64) -> Result<ClientView> {
        caller.require_business(business_id)?;
        db::client(self.store.connection(), business_id, client_id)
            .await?
            .map(ClientView::from)
            .ok_or_else(|| Error::NotFound(format!("client {client_id}")))
    }

    pub async fn list_clients(
        &self,
        caller: &Caller,
        business_id: i64,
        query: &str,
        page: PageRequest<i64>,
    ) -> Result<Page<ClientView>> {
        self.business(caller, business_id).await?;
        let query = values::optional_text("query", query, 200)?;
        let (rows, total) =
            db::list_clients(self.store.connection(), business_id, query.as_deref(), page.after, page.size + 1).await?;
        Ok(Page::from_rows(rows, page.size, total, |c: &client::Model| c.id).into_views())
    }
}
