//! Queries on a business's directory: businesses, locations and their numbers, staff, clients.
//! Every function that reads business data takes the business id and filters on it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Select, Set, sea_query::Expr,
};

use super::{
    StoreResult,
    entity::{
        business, client, conversation, enums::Direction, location, location_phone_number as phone_number, message,
        staff,
    },
};

/// One page in id order (ascending) after `after_id`, and the number of rows `select` matches.
pub async fn page_by_id<C, E>(
    conn: &C,
    select: Select<E>,
    id: E::Column,
    after_id: Option<i64>,
    limit: u64,
) -> StoreResult<(Vec<E::Model>, u64)>
where
    C: ConnectionTrait,
    E: EntityTrait,
    E::Model: Sync,
{
    let total = select.clone().count(conn).await?;
    let mut select = select;
    if let Some(after) = after_id {
        select = select.filter(id.gt(after));
    }
    let rows = select.order_by_asc(id).limit(limit).all(conn).await?;
    Ok((rows, total))
}

/// Every id in a business's rows of `E`, ascending.
async fn ids_of<E: EntityTrait>(
    conn: &impl ConnectionTrait,
    business_id: i64,
    business: E::Column,
    id: E::Column,
) -> StoreResult<Vec<i64>> {
    Ok(E::find()
        .select_only()
        .column(id)
        .filter(business.eq(business_id))
        .order_by_asc(id)
        .into_tuple()
        .all(conn)
        .await?)
}

/// The `name` of the given rows of `E` that belong to the business, by id (reads only the two
/// columns).
async fn names_by_id<E: EntityTrait>(
    conn: &impl ConnectionTrait,
    business_id: i64,
    ids: &[i64],
    business: E::Column,
    id: E::Column,
    name: E::Column,
) -> StoreResult<HashMap<i64, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(i64, String)> = E::find()
        .select_only()
        .column(id)
        .column(name)
        .filter(business.eq(business_id))
        .filter(id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

// ---- businesses ----

pub struct NewBusiness {
    pub external_ref: Option<String>,
    pub name: String,
    pub time_zone: String,
    pub default_calling_code: String,
    pub sms_enabled: bool,
    pub email_enabled: bool,
    pub voice_enabled: bool,
    pub chat_enabled: bool,
}

pub async fn insert_business(
    conn: &impl ConnectionTrait,
    new: NewBusiness,
    now: DateTime<Utc>,
) -> StoreResult<business::Model> {
    Ok(business::ActiveModel {
        name: Set(new.name),
        created_at: Set(now),
        updated_at: Set(now),
        external_ref: Set(new.external_ref),
        time_zone: Set(new.time_zone),
        default_calling_code: Set(new.default_calling_code),
        sms_enabled: Set(new.sms_enabled),
        email_enabled: Set(new.email_enabled),
        voice_enabled: Set(new.voice_enabled),
        chat_enabled: Set(new.chat_enabled),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

pub async fn set_transcribe_voicemail(
    conn: &impl ConnectionTrait,
    business_id: i64,
    on: bool,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    business::Entity::update_many()
        .col_expr(business::Column::TranscribeVoicemail, Expr::value(on))
        .col_expr(business::Column::UpdatedAt, Expr::value(now))
        .filter(business::Column::Id.eq(business_id))
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn business(conn: &impl ConnectionTrait, id: i64) -> StoreResult<Option<business::Model>> {
    Ok(business::Entity::find_by_id(id).one(conn).await?)
}

pub async fn business_by_external_ref(
    conn: &impl ConnectionTrait,
    external_ref: &str,
) -> StoreResult<Option<business::Model>> {
    Ok(business::Entity::find().filter(business::Column::ExternalRef.eq(external_ref)).one(conn).await?)
}

// ---- locations ----

#[derive(Clone)]
pub struct LocationFields {
    pub external_ref: Option<String>,
    pub name: String,
    pub time_zone: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub email_sender: Option<String>,
}

pub async fn insert_location(
    conn: &impl ConnectionTrait,
    business_id: i64,
    fields: LocationFields,
    now: DateTime<Utc>,
) -> StoreResult<location::Model> {
    Ok(location::ActiveModel {
        business_id: Set(business_id),
        external_ref: Set(fields.external_ref),
        name: Set(fields.name),
        time_zone: Set(fields.time_zone),
        messaging_service_sid: Set(fields.messaging_service_sid),
        email_sender: Set(fields.email_sender),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

pub async fn update_location(
    conn: &impl ConnectionTrait,
    existing: location::Model,
    fields: LocationFields,
    now: DateTime<Utc>,
) -> StoreResult<location::Model> {
    // Omitted optional fields keep their stored values.
    let mut row: location::ActiveModel = existing.into();
    row.name = Set(fields.name);
    if fields.time_zone.is_some() {
        row.time_zone = Set(fields.time_zone);
    }
    if fields.messaging_service_sid.is_some() {
        row.messaging_service_sid = Set(fields.messaging_service_sid);
    }
    if fields.email_sender.is_some() {
        row.email_sender = Set(fields.email_sender);
    }
    row.updated_at = Set(now);
    Ok(row.update(conn).await?)
}

pub async fn location(conn: &impl ConnectionTrait, business_id: i64, id: i64) -> StoreResult<Option<location::Model>> {
    Ok(location::Entity::find_by_id(id).filter(location::Column::BusinessId.eq(business_id)).one(conn).await?)
}

pub async fn location_by_external_ref(
    conn: &impl ConnectionTrait,
    business_id: i64,
    external_ref: &str,
) -> StoreResult<Option<location::Model>> {
    Ok(location::Entity::find()
        .filter(location::Column::BusinessId.eq(business_id))
        .filter(location::Column::ExternalRef.eq(external_ref))
        .one(conn)
        .await?)
}

pub async fn list_locations(
    conn: &impl ConnectionTrait,
    business_id: i64,
    after_id: Option<i64>,
    limit: u64,
) -> StoreResult<(Vec<location::Model>, u64)> {
    let select = location::Entity::find().filter(location::Column::BusinessId.eq(business_id));
    page_by_id(conn, select, location::Column::Id, after_id, limit).await
}

/// The location that sends through a messaging service (platform-wide unique).
pub async fn location_by_messaging_service(
    conn: &impl ConnectionTrait,
    sid: &str,
) -> StoreResult<Option<location::Model>> {
    Ok(location::Entity::find().filter(location::Column::MessagingServiceSid.eq(sid)).one(conn).await?)
}

/// The location a sender number belongs to (platform-wide unique).
pub async fn location_by_number(conn: &impl ConnectionTrait, phone: &str) -> StoreResult<Option<location::Model>> {
    let Some(number) = phone_number::Entity::find().filter(phone_number::Column::PhoneE164.eq(phone)).one(conn).await?
    else {
        return Ok(None);
    };
    Ok(location::Entity::find_by_id(number.location_id).one(conn).await?)
}

/// Every location id of a business, in creation order.
pub async fn location_ids(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Vec<i64>> {
    ids_of::<location::Entity>(conn, business_id, location::Column::BusinessId, location::Column::Id).await
}

/// Names of the given locations of a business, by id.
pub async fn location_names(
    conn: &impl ConnectionTrait,
    business_id: i64,
    ids: &[i64],
) -> StoreResult<HashMap<i64, String>> {
    names_by_id::<location::Entity>(
        conn,
        business_id,
        ids,
        location::Column::BusinessId,
        location::Column::Id,
        location::Column::Name,
    )
    .await
}

/// Replaces a location's sender numbers (a number used by another business fails on the
/// platform-wide unique index).
pub async fn set_location_numbers(
    conn: &impl ConnectionTrait,
    business_id: i64,
    location_id: i64,
    phones: &[String],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    phone_number::Entity::delete_many().filter(phone_number::Column::LocationId.eq(location_id)).exec(conn).await?;
    for phone in phones {
        phone_number::ActiveModel {
            business_id: Set(business_id),
            location_id: Set(location_id),
            phone_e164: Set(phone.clone()),
            created_at: Set(now),
            ..Default::default()
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

/// The sender numbers of the given locations, as (location id, number), in insertion order.
pub async fn location_numbers(conn: &impl ConnectionTrait, location_ids: &[i64]) -> StoreResult<Vec<(i64, String)>> {
    if location_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = phone_number::Entity::find()
        .filter(phone_number::Column::LocationId.is_in(location_ids.iter().copied()))
        .order_by_asc(phone_number::Column::Id)
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.location_id, r.phone_e164)).collect())
}

// ---- staff ----

/// Staff fields; on update, `None` keeps the stored value (on insert: no email, role
/// "staff", active).
#[derive(Clone)]
pub struct StaffFields {
    pub external_ref: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub role: Option<String>,
    pub active: Option<bool>,
}

pub async fn insert_staff(
    conn: &impl ConnectionTrait,
    business_id: i64,
    fields: StaffFields,
    now: DateTime<Utc>,
) -> StoreResult<staff::Model> {
    Ok(staff::ActiveModel {
        business_id: Set(business_id),
        external_ref: Set(fields.external_ref),
        name: Set(fields.name),
        email: Set(fields.email),
        role: Set(fields.role.unwrap_or_else(|| "staff".to_owned())),
        active: Set(fields.active.unwrap_or(true)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

pub async fn update_staff(
    conn: &impl ConnectionTrait,
    existing: staff::Model,
    fields: StaffFields,
    now: DateTime<Utc>,
) -> StoreResult<staff::Model> {
    let mut row: staff::ActiveModel = existing.into();
    if fields.external_ref.is_some() {
        row.external_ref = Set(fields.external_ref);
    }
    row.name = Set(fields.name);
    if fields.email.is_some() {
        row.email = Set(fields.email);
    }
    if let Some(role) = fields.role {
        row.role = Set(role);
    }
    if let Some(active) = fields.active {
        row.active = Set(active);
    }
    row.updated_at = Set(now);
    Ok(row.update(conn).await?)
}

pub async fn staff_member(conn: &impl ConnectionTrait, business_id: i64, id: i64) -> StoreResult<Option<staff::Model>> {
    Ok(staff::Entity::find_by_id(id).filter(staff::Column::BusinessId.eq(business_id)).one(conn).await?)
}

/// A staff member matched by external reference, else by email.
pub async fn staff_by_identity(
    conn: &impl ConnectionTrait,
    business_id: i64,
    external_ref: Option<&str>,
    email: Option<&str>,
) -> StoreResult<Option<staff::Model>> {
    for (column, value) in [(staff::Column::ExternalRef, external_ref), (staff::Column::Email, email)] {
        if let Some(value) = value {
            let found = staff::Entity::find()
                .filter(staff::Column::BusinessId.eq(business_id))
                .filter(column.eq(value))
                .one(conn)
                .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    Ok(None)
}

pub async fn list_staff(
    conn: &impl ConnectionTrait,
    business_id: i64,
    active: Option<bool>,
    after_id: Option<i64>,
    limit: u64,
) -> StoreResult<(Vec<staff::Model>, u64)> {
    let mut select = staff::Entity::find().filter(staff::Column::BusinessId.eq(business_id));
    if let Some(active) = active {
        select = select.filter(staff::Column::Active.eq(active));
    }
    page_by_id(conn, select, staff::Column::Id, after_id, limit).await
}

/// Every staff id of a business, in creation order.
pub async fn staff_ids(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<Vec<i64>> {
    ids_of::<staff::Entity>(conn, business_id, staff::Column::BusinessId, staff::Column::Id).await
}

/// Names of the given staff members of a business, by id.
pub async fn staff_names(
    conn: &impl ConnectionTrait,
    business_id: i64,
    ids: &[i64],
) -> StoreResult<HashMap<i64, String>> {
    names_by_id::<staff::Entity>(
        conn,
        business_id,
        ids,
        staff::Column::BusinessId,
        staff::Column::Id,
        staff::Column::Name,
    )
    .await
}

// ---- clients ----

#[derive(Clone, Default)]
pub struct ClientFields {
    pub external_ref: Option<String>,
    /// `None` keeps the stored name; a new client without one is named by its phone, email or
    /// external reference.
    pub name: Option<String>,
    pub phone_e164: Option<String>,
    pub email: Option<String>,
    /// `None` leaves consent as it is (false for a new client).
    pub sms_consent: Option<bool>,
}

fn search_text(name: &str, phone: Option<&str>, email: Option<&str>) -> String {
    [Some(name), phone, email].into_iter().flatten().collect::<Vec<_>>().join(" ").to_lowercase()
}

pub async fn insert_client(
    conn: &impl ConnectionTrait,
    business_id: i64,
    fields: ClientFields,
    now: DateTime<Utc>,
) -> StoreResult<client::Model> {
    let consent = fields.sms_consent.unwrap_or(false);
    let name = fields
        .name
        .or_else(|| fields.phone_e164.clone())
        .or_else(|| fields.email.clone())
        .or_else(|| fields.external_ref.clone())
        .unwrap_or_default();
    Ok(client::ActiveModel {
        business_id: Set(business_id),
        search_text: Set(search_text(&name, fields.phone_e164.as_deref(), fields.email.as_deref())),
        external_ref: Set(fields.external_ref),
        name: Set(name),
        phone_e164: Set(fields.phone_e164),
        email: Set(fields.email),
        sms_consent: Set(consent),
        sms_consent_updated_at: Set(fields.sms_consent.map(|_| now)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await?)
}

/// Updates a client; absent phone, email or external reference keep their stored values.
pub async fn update_client(
    conn: &impl ConnectionTrait,
    existing: client::Model,
    fields: ClientFields,
    now: DateTime<Utc>,
) -> StoreResult<client::Model> {
    let phone = fields.phone_e164.or(existing.phone_e164.clone());
    let email = fields.email.or(existing.email.clone());
    let name = fields.name.unwrap_or_else(|| existing.name.clone());
    let consent_changed = fields.sms_consent.is_some_and(|c| c != existing.sms_consent);
    let mut row: client::ActiveModel = existing.into();
    if fields.external_ref.is_some() {
        row.external_ref = Set(fields.external_ref);
    }
    row.search_text = Set(search_text(&name, phone.as_deref(), email.as_deref()));
    row.name = Set(name);
    row.phone_e164 = Set(phone);
    row.email = Set(email);
    if consent_changed {
        row.sms_consent = Set(fields.sms_consent.unwrap_or_default());
        row.sms_consent_updated_at = Set(Some(now));
    }
    row.updated_at = Set(now);
    Ok(row.update(conn).await?)
}

pub async fn client(conn: &impl ConnectionTrait, business_id: i64, id: i64) -> StoreResult<Option<client::Model>> {
    Ok(client::Entity::find_by_id(id).filter(client::Column::BusinessId.eq(business_id)).one(conn).await?)
}

/// The clients matching any of the identities, each at most once.
pub async fn clients_by_identity(
    conn: &impl ConnectionTrait,
    business_id: i64,
    external_ref: Option<&str>,
    phone: Option<&str>,
    email: Option<&str>,
) -> StoreResult<Vec<client::Model>> {
    let Some(any) = identity_condition(external_ref, phone, email) else {
        return Ok(Vec::new());
    };
    Ok(client::Entity::find()
        .filter(client::Column::BusinessId.eq(business_id))
        .filter(any)
        .order_by_asc(client::Column::Id)
        .all(conn)
        .await?)
}

/// [`clients_by_identity`] (or the client `id`), each with its conversation if it has one: one
/// query where a message to an existing client's conversation needed two.
pub async fn clients_with_conversation(
    conn: &impl ConnectionTrait,
    business_id: i64,
    id: Option<i64>,
    external_ref: Option<&str>,
    phone: Option<&str>,
    email: Option<&str>,
) -> StoreResult<Vec<(client::Model, Option<conversation::Model>)>> {
    let which = match id {
        Some(id) => sea_orm::Condition::all().add(client::Column::Id.eq(id)),
        None => match identity_condition(external_ref, phone, email) {
            Some(any) => any,
            None => return Ok(Vec::new()),
        },
    };
    Ok(client::Entity::find()
        .find_also_related(conversation::Entity)
        .filter(client::Column::BusinessId.eq(business_id))
        .filter(which)
        .order_by_asc(client::Column::Id)
        .all(conn)
        .await?)
}

/// Any of the identities given; `None` when none is.
fn identity_condition(
    external_ref: Option<&str>,
    phone: Option<&str>,
    email: Option<&str>,
) -> Option<sea_orm::Condition> {
    let mut any = sea_orm::Condition::any();
    let mut given = false;
    for (column, value) in [
        (client::Column::ExternalRef, external_ref),
        (client::Column::PhoneE164, phone),
        (client::Column::Email, email),
    ] {
        if let Some(value) = value {
            any = any.add(column.eq(value));
            given = true;
        }
    }
    given.then_some(any)
}

pub async fn list_clients(
    conn: &impl ConnectionTrait,
    business_id: i64,
    query: Option<&str>,
    after_id: Option<i64>,
    limit: u64,
) -> StoreResult<(Vec<client::Model>, u64)> {
    let mut select = client::Entity::find().filter(client::Column::BusinessId.eq(business_id));
    if let Some(query) = query {
        select = select.filter(client::Column::SearchText.like(super::contains_pattern(&query.to_lowercase())));
    }
    page_by_id(conn, select, client::Column::Id, after_id, limit).await
}

/// Names of the given clients of a business, by id.
pub async fn client_names(
    conn: &impl ConnectionTrait,
    business_id: i64,
    ids: &[i64],
) -> StoreResult<HashMap<i64, String>> {
    names_by_id::<client::Entity>(
        conn,
        business_id,
        ids,
        client::Column::BusinessId,
        client::Column::Id,
        client::Column::Name,
    )
    .await
}

// ---- onboarding progress ----

/// What a business has set up so far, counted for its onboarding status.
pub struct SetupCounts {
    pub locations: u64,
    pub active_staff: u64,
    pub sender_numbers: u64,
    pub messaging_services: u64,
    pub email_senders: u64,
    pub clients: u64,
    pub outbound_messages: u64,
}

pub async fn setup_counts(conn: &impl ConnectionTrait, business_id: i64) -> StoreResult<SetupCounts> {
    let locations = location::Entity::find().filter(location::Column::BusinessId.eq(business_id));
    Ok(SetupCounts {
        locations: locations.clone().count(conn).await?,
        active_staff: staff::Entity::find()
            .filter(staff::Column::BusinessId.eq(business_id))
            .filter(staff::Column::Active.eq(true))
            .count(conn)
            .await?,
        sender_numbers: phone_number::Entity::find()
            .filter(phone_number::Column::BusinessId.eq(business_id))
            .count(conn)
            .await?,
        messaging_services: locations
            .clone()
            .filter(location::Column::MessagingServiceSid.is_not_null())
            .count(conn)
            .await?,
        email_senders: locations.filter(location::Column::EmailSender.is_not_null()).count(conn).await?,
        clients: client::Entity::find().filter(client::Column::BusinessId.eq(business_id)).count(conn).await?,
        outbound_messages: message::Entity::find()
            .filter(message::Column::BusinessId.eq(business_id))
            .filter(message::Column::Direction.eq(Direction::Outbound))
            .limit(1)
            .count(conn)
            .await?,
    })
}

/// The location that sends from a number or a messaging service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderOwner {
    pub business_id: i64,
    pub location_id: i64,
}

/// Who already sends from some numbers (by number) and a messaging service.
pub struct SenderOwners {
    pub phones: Vec<(String, SenderOwner)>,
    pub messaging_service: Option<SenderOwner>,
}

pub async fn sender_owners(
    conn: &impl ConnectionTrait,
    phones: &[String],
    messaging_service_sid: Option<&str>,
) -> StoreResult<SenderOwners> {
    let phones = if phones.is_empty() {
        Vec::new()
    } else {
        phone_number::Entity::find()
            .filter(phone_number::Column::PhoneE164.is_in(phones.iter().cloned()))
            .all(conn)
            .await?
            .into_iter()
            .map(|r| (r.phone_e164, SenderOwner { business_id: r.business_id, location_id: r.location_id }))
            .collect()
    };
    let messaging_service = match messaging_service_sid {
        Some(sid) => location::Entity::find()
            .filter(location::Column::MessagingServiceSid.eq(sid))
            .one(conn)
            .await?
            .map(|l| SenderOwner { business_id: l.business_id, location_id: l.id }),
        None => None,
    };
    Ok(SenderOwners { phones, messaging_service })
}
