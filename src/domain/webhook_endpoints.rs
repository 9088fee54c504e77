//! A business's outbound webhook endpoints: validation, secrets (Standard Webhooks'
//! `whsec_…`, sealed at rest, shown once), the delivery log and replays. Fan-out happens in the
//! database (a trigger on the event log, migration 000018); `crate::delivery::webhooks` sends.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveEnum, IntoActiveModel, Set};

use tokio::sync::Notify;

use super::{
    Error, Result, Violations,
    auth::Caller,
    directory::Directory,
    events::KINDS,
    pagination::PageRequest,
    values::{WebhookDeliveryState, now, parse_time},
    views::{DeliveryView, EndpointView},
};
use crate::{
    secrets::SecretKeys,
    store::{
        Store,
        entity::webhook_endpoint as endpoint,
        webhook_endpoints::{self as db, NewEndpoint},
    },
};

/// A business's outbound webhook endpoints and their delivery log.
#[derive(Clone, Debug)]
pub struct WebhookEndpoints {
    store: Store,
    directory: Directory,
    secrets: Arc<SecretKeys>,
    outbound: OutboundSettings,
    /// Wakes the outbound webhook workers (a replay; new events wake them through the event
    /// log's wake-ups).
    pub wakeup: Arc<Notify>,
}

/// How outbound webhooks may be addressed (`OMEGA_WEBHOOKS_ALLOW_*`).
#[derive(Clone, Copy, Debug, Default)]
pub struct OutboundSettings {
    /// Plain http URLs (tests, private networks); otherwise https only.
    pub allow_http: bool,
    /// Private, loopback, link-local and other non-public addresses (tests).
    pub allow_private: bool,
}

pub const MAX_URL_LEN: usize = 2000;
pub const MAX_DESCRIPTION_LEN: usize = 500;
pub const MAX_ENDPOINTS: u64 = 50;
/// Events a range replay queues per call.
pub const REPLAY_BATCH: u64 = 1000;
/// How long the previous secret keeps signing after a rotation.
pub const PREVIOUS_SECRET_HOURS: i64 = 24;

/// Whether an address is one a webhook must not reach unless private addresses are allowed:
/// loopback, private, link-local, unique-local, multicast, unspecified, documentation,
/// shared (CGNAT), broadcast and benchmark ranges — IPv4 and IPv6, v4-mapped and v4-compatible
/// included.
pub fn refused_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let seg = v6.segments();
            // ::a.b.c.d (deprecated v4-compatible) and 64:ff9b::/96 (NAT64) carry a v4 address.
            if seg[..6] == [0, 0, 0, 0, 0, 0] || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0]) {
                let v4 = Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8);
                if refused_v4(v4) {
                    return true;
                }
            }
            refused_v6(v6)
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, shared address space
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15, benchmarking
        || o[0] >= 240 // reserved
}

fn refused_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // 100::/64 discard
}

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    format!("whsec_{}", STANDARD.encode(rand::random::<[u8; 32]>()))
}

/// The kinds of a stored filter (`,a,b,`).
pub fn event_types_of(stored: &str) -> Vec<String> {
    stored.split(',').filter(|k| !k.is_empty()).map(str::to_owned).collect()
}

/// The stable `webhook-id` of one event to one endpoint: every attempt and replay carries it.
pub fn webhook_id(endpoint_id: i64, event_id: i64) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f6d_6567_612d_7768_6f6f_6b73_2d76_3100);
    format!("msg_{}", uuid::Uuid::new_v5(&NAMESPACE, format!("{endpoint_id}/{event_id}").as_bytes()).simple())
}

/// What an update asks for; None leaves a field as it is.
#[derive(Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub all_event_types: bool,
    pub enabled: Option<bool>,
}

impl WebhookEndpoints {
    pub(super) fn new(store: Store, directory: Directory, secrets: Arc<SecretKeys>) -> Self {
        Self { store, directory, secrets, outbound: OutboundSettings::default(), wakeup: Arc::new(Notify::new()) }
    }

    /// With these addressing rules.
    pub(super) fn with_outbound(self, outbound: OutboundSettings) -> Self {
        Self { outbound, ..self }
    }

    /// Checks a URL (and, for a literal IP, its address) against the settings.
    fn check_url(&self, v: &mut Violations, field: &str, url: &str) -> String {
        let url = url.trim();
        if url.len() > MAX_URL_LEN {
            v.add(field, format!("must be at most {MAX_URL_LEN} characters"));
            return url.to_owned();
        }
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(_) => {
                v.add(field, "must be an absolute http(s) URL, e.g. https://example.com/webhooks");
                return url.to_owned();
            }
        };
        match parsed.scheme() {
            "https" => {}
            "http" if self.outbound.allow_http => {}
            "http" => v.add(field, "must use https"),
            _ => v.add(field, "must be an http(s) URL"),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            v.add(field, "must not carry credentials");
        }
        if parsed.fragment().is_some() {
            v.add(field, "must not have a #fragment");
        }
        match parsed.host_str().filter(|h| !h.is_empty()) {
            None => v.add(field, "must name a host"),
            Some(host) => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = bare.parse::<IpAddr>()
                    && !self.outbound.allow_private
                    && refused_address(ip)
                {
                    v.add(field, "must not address a private, loopback or other non-public address");
                }
            }
        }
        parsed.to_string()
    }

    fn check_event_types(v: &mut Violations, kinds: &[String]) -> String {
        let mut checked = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            if KINDS.contains(&kind.as_str()) {
                checked.push(kind.as_str());
            } else {
                v.add(format!("event_types[{i}]"), "is not an event kind; see the event catalogue");
            }
        }
        checked.sort_unstable();
        checked.dedup();
        if checked.is_empty() { String::new() } else { format!(",{},", checked.join(",")) }
    }

    async fn endpoint_of(&self, caller: &Caller, business_id: i64, id: i64) -> Result<endpoint::Model> {
        self.directory.business(caller, business_id).await?;
        db::endpoint(self.store.connection(), business_id, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("webhook endpoint {id}")))
    }

    /// Creates an endpoint; answers it and its secret (the only time the secret is shown).
    pub async fn create(
        &self,
        caller: &Caller,
        business_id: i64,
        url: &str,
        description: &str,
        event_types: &[String],
        enabled: Option<bool>,
    ) -> Result<(EndpointView, String)> {
        self.directory.business(caller, business_id).await?;
        let mut v = Violations::default();
        let url = self.check_url(&mut v, "url", url);
        if description.chars().count() > MAX_DESCRIPTION_LEN {
            v.add("description", format!("must be at most {MAX_DESCRIPTION_LEN} characters"));
        }
        let event_types = Self::check_event_types(&mut v, event_types);
        v.finish()?;
        if db::count_endpoints(self.store.connection(), business_id).await? >= MAX_ENDPOINTS {
            return Err(Error::FailedPrecondition(format!(
                "a business has at most {MAX_ENDPOINTS} webhook endpoints; delete one first"
            )));
        }
        let secret = generate_secret();
        let new = NewEndpoint {
            business_id,
            url,
            description: description.trim().to_owned(),
            event_types,
            enabled: enabled.unwrap_or(true),
        };
        let txn = self.store.begin().await?;
        let row = db::insert_endpoint(&txn, &self.secrets, new, &secret, now()).await?;
        txn.commit().await.map_err(crate::store::StoreError::from)?;
        tracing::info!(business_id, endpoint_id = row.id, "webhook endpoint created");
        Ok((row.into(), secret))
    }

    pub async fn list(&self, caller: &Caller, business_id: i64) -> Result<Vec<EndpointView>> {
        self.directory.business(caller, business_id).await?;
        Ok(db::endpoints(self.store.connection(), business_id).await?.into_iter().map(EndpointView::from).collect())
    }

    pub async fn get(&self, caller: &Caller, business_id: i64, id: i64) -> Result<EndpointView> {
        Ok(self.endpoint_of(caller, business_id, id).await?.into())
    }

    pub async fn update(
        &self,
        caller: &Caller,
        business_id: i64,
        id: i64,
        change: EndpointChange,
    ) -> Result<EndpointView> {
        let row = self.endpoint_of(caller, business_id, id).await?;
        let mut v = Violations::default();
        let url = change.url.as_deref().map(|url| self.check_url(&mut v, "url", url));
        if change.description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN) {
            v.add("description", format!("must be at most {MAX_DESCRIPTION_LEN} characters"));
        }
        if change.all_event_types && !change.event_types.is_empty() {
            v.add("all_event_types", "cannot be combined with event_types");
        }
        let event_types = Self::check_event_types(&mut v, &change.event_types);
        v.finish()?;
        let at = now();
        let was_enabled = row.enabled;
        let mut active = row.into_active_model();
        if let Some(url) = url {
            active.url = Set(url);
        }
        if let Some(description) = change.description {
            active.description = Set(description.trim().to_owned());
        }
        if change.all_event_types {
            active.event_types = Set(String::new());
        } else if !change.event_types.is_empty() {
            active.event_types = Set(event_types);
        }
        match change.enabled {
            Some(true) if !was_enabled => {
                active.enabled = Set(true);
                active.disabled_reason = Set(None);
                active.disabled_at = Set(None);
                active.consecutive_failures = Set(0);
            }
            Some(false) if was_enabled => {
                active.enabled = Set(false);
                active.disabled_reason = Set(None);
                active.disabled_at = Set(Some(at));
            }
            _ => {}
        }
        active.updated_at = Set(at);
        let saved = db::save_endpoint(self.store.writer(), active).await?;
        tracing::info!(business_id, endpoint_id = id, enabled = saved.enabled, "webhook endpoint updated");
        Ok(saved.into())
    }

    pub async fn delete(&self, caller: &Caller, business_id: i64, id: i64) -> Result<()> {
        self.endpoint_of(caller, business_id, id).await?;
        let txn = self.store.begin().await?;
        let found = db::delete_endpoint(&txn, business_id, id).await?;
        txn.commit().await.map_err(crate::store::StoreError::from)?;
        if !found {
            return Err(Error::NotFound(format!("webhook endpoint {id}")));
        }
        tracing::info!(business_id, endpoint_id = id, "webhook endpoint deleted");
        Ok(())
    }

    /// A new secret (answered once); the previous one signs too for a day.
    pub async fn rotate_secret(&self, caller: &Caller, business_id: i64, id: i64) -> Result<(EndpointView, String)> {
        let row = self.endpoint_of(caller, business_id, id).await?;
        let secret = generate_secret();
        let at = now();
        let row = db::rotate_secret(
            self.store.writer(),
            &self.secrets,
            row,
            &secret,
            at + Duration::hours(PREVIOUS_SECRET_HOURS),
            at,
        )
        .await?;
        tracing::info!(business_id, endpoint_id = id, "webhook endpoint secret rotated");
        Ok((row.into(), secret))
    }

    /// One page of the endpoint's delivery log, newest first.
    pub async fn deliveries(
        &self,
        caller: &Caller,
        business_id: i64,
        id: i64,
        state: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<DeliveryView>, String)> {
        let mut v = Violations::default();
        let state = match state.trim().to_ascii_lowercase().as_str() {
            "" => None,
            state => WebhookDeliveryState::try_from_value(&state.to_owned())
                .map_err(|_| v.add("state", "must be pending, sending, delivered or failed"))
                .ok(),
        };
        let page = v.check(PageRequest::<i64>::parse(page_size, page_token));
        v.finish()?;
        let page = page.expect("checked");
        self.endpoint_of(caller, business_id, id).await?;
        let mut rows =
            db::deliveries(self.store.connection(), business_id, id, state, page.after, page.size + 1).await?;
        let more = rows.len() as u64 > page.size;
        rows.truncate(page.size as usize);
        let next = match rows.last() {
            Some(last) if more => super::pagination::token(&last.id),
            _ => String::new(),
        };
        Ok((rows.into_iter().map(DeliveryView::from).collect(), next))
    }

    /// Makes one delivery due now (same `webhook-id`).
    pub async fn replay_delivery(
        &self,
        caller: &Caller,
        business_id: i64,
        id: i64,
        delivery_id: i64,
    ) -> Result<DeliveryView> {
        let row = self.endpoint_of(caller, business_id, id).await?;
        if !row.enabled {
            return Err(Error::FailedPrecondition("the endpoint is disabled: enable it to replay deliveries".into()));
        }
        let found = db::replay_delivery(self.store.writer(), business_id, id, delivery_id, now()).await?;
        if !found {
            return Err(Error::NotFound(format!("webhook delivery {delivery_id}")));
        }
        self.wakeup.notify_waiters();
        let row = db::delivery(self.store.connection(), business_id, id, delivery_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("webhook delivery {delivery_id}")))?;
        Ok(row.into())
    }

    /// Queues the events of `[since, until)` after `after_event_id` that the endpoint's filter
    /// matches, at most [`REPLAY_BATCH`]; answers (queued, last event id, more).
    pub async fn replay_events(
        &self,
        caller: &Caller,
        business_id: i64,
        id: i64,
        since: &str,
        until: &str,
        after_event_id: i64,
    ) -> Result<(u64, i64, bool)> {
        let mut v = Violations::default();
        let since: Option<DateTime<Utc>> = v.check(parse_time("since", since));
        let until: Option<DateTime<Utc>> = v.check(parse_time("until", until));
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            v.add("until", "must be after since");
        }
        v.finish()?;
        let (since, until) = (since.expect("checked"), until.expect("checked"));
        let row = self.endpoint_of(caller, business_id, id).await?;
        if !row.enabled {
            return Err(Error::FailedPrecondition("the endpoint is disabled: enable it to replay events".into()));
        }
        let events = db::events_in_range(
            self.store.connection(),
            business_id,
            &row.event_types,
            since,
            until,
            after_event_id,
            REPLAY_BATCH + 1,
        )
        .await?;
        let more = events.len() as u64 > REPLAY_BATCH;
        let ids: Vec<i64> = events.iter().take(REPLAY_BATCH as usize).map(|(id, _)| *id).collect();
        let txn = self.store.begin().await?;
        db::queue_events(&txn, business_id, id, &ids, now()).await?;
        txn.commit().await.map_err(crate::store::StoreError::from)?;
        self.wakeup.notify_waiters();
        tracing::info!(business_id, endpoint_id = id, queued = ids.len(), "webhook events replayed");
        Ok((ids.len() as u64, ids.last().copied().unwrap_or(0), more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(refused_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(!refused_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn webhook_ids_are_stable_per_endpoint_and_event() {
        assert_eq!(webhook_id(1, 2), webhook_id(1, 2));
        assert_ne!(webhook_id(1, 2), webhook_id(2, 1));
        assert!(webhook_id(1, 2).starts_with("msg_"));
    }

    #[test]
    fn secrets_are_standard_webhooks_secrets() {
        let secret = generate_secret();
        let raw = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(secret, generate_secret());
    }
}
