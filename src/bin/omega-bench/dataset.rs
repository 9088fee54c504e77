//! The benchmark's dataset: businesses onboarded through the API, then clients, conversations
//! and messages written straight into the database in large batches (generating ten million
//! messages through the API would take longer than the benchmark itself). The rows are the
//! ones Omega writes: the same columns, counters and full-text index, kept by the same triggers.
//!
//! Activity is skewed: most messages land in a minority of conversations (one has thousands),
//! recent conversations are the open ones, words follow a Zipf-like curve.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use omega::proto::omega::v1::{
    LocationInput, OnboardBusinessRequest, StaffInput, onboarding_service_client::OnboardingServiceClient,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, TransactionTrait};
use tonic::transport::Channel;

use crate::harness::{BenchDb, keyed};

/// A business of the dataset and what the benchmarks need to know about it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Business {
    pub id: u32,
    pub conversations: u64,
    pub messages: u64,
    pub staff_ids: Vec<u32>,
    /// (conversation id, client id, message count) of its busiest conversation.
    pub busiest: (u32, u32, u64),
    /// A sample of (conversation id, client id) spread over the business.
    pub sample: Vec<(u32, u32)>,
    /// A client's full phone number (matches one client) and a surname (matches many).
    pub rare_text: String,
    pub common_text: String,
}

pub const FIRST: [&str; 24] = [
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack", "Kira", "Liam", "Maya", "Noah",
    "Olivia", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Zoe",
];
pub const LAST: [&str; 40] = [
    "Adams",
    "Baker",
    "Clarke",
    "Davies",
    "Evans",
    "Foster",
    "Garcia",
    "Hughes",
    "Ito",
    "Jones",
    "Khan",
    "Lopez",
    "Martin",
    "Nguyen",
    "Owens",
    "Patel",
    "Quincy",
    "Reyes",
    "Smith",
    "Turner",
    "Usman",
    "Vargas",
    "Walker",
    "Xu",
    "Young",
    "Zhang",
    "Abbott",
    "Brennan",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Gallagher",
    "Holloway",
    "Iwasaki",
    "Jablonski",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
];
/// Words of the messages, most frequent first.
pub const WORDS: [&str; 118] = [
    "the",
    "to",
    "you",
    "your",
    "for",
    "is",
    "at",
    "and",
    "a",
    "class",
    "appointment",
    "tomorrow",
    "thanks",
    "see",
    "today",
    "can",
    "we",
    "time",
    "booking",
    "please",
    "reminder",
    "pm",
    "am",
    "session",
    "confirm",
    "reply",
    "yes",
    "no",
    "cancel",
    "reschedule",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "morning",
    "evening",
    "massage",
    "facial",
    "yoga",
    "pilates",
    "spin",
    "trainer",
    "studio",
    "clinic",
    "spa",
    "membership",
    "invoice",
    "payment",
    "card",
    "deposit",
    "refund",
    "parking",
    "address",
    "late",
    "early",
    "minutes",
    "hour",
    "week",
    "package",
    "voucher",
    "gift",
    "welcome",
    "new",
    "client",
    "form",
    "intake",
    "allergy",
    "therapist",
    "room",
    "waitlist",
    "spot",
    "opened",
    "available",
    "full",
    "sorry",
    "great",
    "perfect",
    "looking",
    "forward",
    "running",
    "bring",
    "towel",
    "water",
    "mat",
    "shoes",
    "locker",
    "code",
    "door",
    "front",
    "desk",
    "call",
    "back",
    "message",
    "email",
    "receipt",
    "discount",
    "offer",
    "birthday",
    "referral",
    "friend",
    "review",
    "feedback",
    "survey",
    "physio",
    "dental",
    "cleaning",
    "checkup",
    "xray",
    "prescription",
    "follow",
    "up",
    "results",
    "consultation",
    "aromatherapy",
    "reflexology",
];

/// How big the dataset is.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Scale {
    pub large_conversations: u64,
    pub large_messages: u64,
    pub small_conversations: u64,
    pub small_messages: u64,
    pub other_businesses: u64,
    pub other_conversations: u64,
    pub other_messages: u64,
}

impl Scale {
    pub fn full() -> Self {
        Self {
            large_conversations: 1_000_000,
            large_messages: 10_000_000,
            small_conversations: 10_000,
            small_messages: 100_000,
            other_businesses: 20,
            other_conversations: 2_000,
            other_messages: 20_000,
        }
    }

    /// P4 sends from the small business to its clients; its client count decides how many
    /// conversations the outbox can work on at once, so it is kept at full size here.
    pub fn dispatch() -> Self {
        let full = Self::full();
        Self { small_conversations: full.small_conversations, small_messages: full.small_messages, ..Self::tiny() }
    }

    pub fn tiny() -> Self {
        Self {
            large_conversations: 3_000,
            large_messages: 20_000,
            small_conversations: 300,
            small_messages: 2_000,
            other_businesses: 2,
            other_conversations: 100,
            other_messages: 500,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Dataset {
    pub large: Business,
    pub small: Business,
    pub generated_in: Duration,
}

/// A connection of its own for bulk writing, durability relaxed for this session only (the
/// dataset is scaffolding; the figures measured on it use the server's own settings).
async fn bulk_connection(url: &str) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).min_connections(1).sqlx_logging(false);
    let db = Database::connect(options).await?;
    match db.get_database_backend() {
        DbBackend::Postgres => {
            db.execute_unprepared("SET synchronous_commit = off").await?;
        }
        _ => {
            db.execute_unprepared(
                "PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000; PRAGMA busy_timeout = 60000",
            )
            .await?;
        }
    }
    Ok(db)
}

/// Onboards every business through gRPC, then fills them.
pub async fn generate(db: &BenchDb, channel: Channel, scale: Scale) -> anyhow::Result<Dataset> {
    let started = Instant::now();
    let conn = bulk_connection(&db.url).await?;
    let mut onboarding = OnboardingServiceClient::new(channel);
    let mut next_phone = 0u64;
    let mut onboard = async |name: String, staff: usize| -> anyhow::Result<(u32, Vec<u32>, Vec<u32>)> {
        let locations = (0..3)
            .map(|l| {
                next_phone += 1;
                LocationInput {
                    name: format!("{name} location {l}"),
                    phone_numbers: vec![format!("+1628555{next_phone:04}")],
                    email_sender: format!("hello{next_phone}@example.com"),
                    ..Default::default()
                }
            })
            .collect();
        let staff = (0..staff)
            .map(|s| StaffInput {
                name: format!("{} {}", FIRST[s % FIRST.len()], LAST[(s * 7) % LAST.len()]),
                email: format!("staff{s}@{}.example.com", name.to_lowercase().replace(' ', "-")),
                ..Default::default()
            })
            .collect();
        let answer = onboarding
            .onboard_business(keyed(OnboardBusinessRequest {
                external_ref: name.to_lowercase().replace(' ', "-"),
                name: name.clone(),
                time_zone: "America/New_York".into(),
                locations,
                staff,
                ..Default::default()
            }))
            .await
            .with_context(|| format!("onboard {name}"))?
            .into_inner();
        Ok((answer.business_id, answer.location_ids, answer.staff_ids))
    };
    let (id, locations, staff) = onboard("Large Studio".into(), 40).await?;
    let large = fill(&conn, id, &locations, staff, scale.large_conversations, scale.large_messages, 1).await?;
    let (id, locations, staff) = onboard("Small Studio".into(), 8).await?;
    let small = fill(&conn, id, &locations, staff, scale.small_conversations, scale.small_messages, 2).await?;
    for b in 0..scale.other_businesses {
        let (id, locations, staff) = onboard(format!("Studio {b}"), 5).await?;
        fill(&conn, id, &locations, staff, scale.other_conversations, scale.other_messages, 3 + b).await?;
    }
    match conn.get_database_backend() {
        DbBackend::Postgres => {
            for table in ["clients", "conversations", "messages"] {
                conn.execute_unprepared(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))"
                ))
                .await?;
            }
            // A database in steady state has been vacuumed: its visibility map lets the inbox's
            // covering indexes answer without visiting the table.
            conn.execute_unprepared("VACUUM (ANALYZE)").await?;
        }
        _ => {
            conn.execute_unprepared("ANALYZE").await?;
        }
    }
    conn.close().await?;
    Ok(Dataset { large, small, generated_in: started.elapsed() })
}

/// What one conversation ends up as, computed before any row is written.
#[derive(Clone, Default)]
struct ConversationPlan {
    messages: u32,
    channel_mask: i32,
    last_index: u64,
    last_preview: String,
    last_channel: &'static str,
    last_direction: &'static str,
}

/// One generated message; the same seed yields the same sequence twice.
struct PlannedMessage {
    conversation: u64,
    channel: &'static str,
    direction: &'static str,
    content: String,
}

struct Generator {
    rng: StdRng,
    conversations: u64,
}

impl Generator {
    fn new(seed: u64, conversations: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), conversations }
    }

    fn next(&mut self) -> PlannedMessage {
        let rng = &mut self.rng;
        // 60% spread evenly, 40% on a power curve: the low conversation numbers are the busy ones.
        let conversation = if rng.random_bool(0.6) {
            rng.random_range(0..self.conversations)
        } else {
            let u: f64 = rng.random();
            ((self.conversations as f64) * u.powi(3)) as u64
        };
        let conversation = conversation.min(self.conversations - 1);
        let primary = match conversation % 20 {
            0..=15 => "SMS",
            16 | 17 => "EMAIL",
            18 => "CHAT",
            _ => "VOICE",
        };
        let roll: f64 = rng.random();
        let (channel, direction) = if roll < 0.02 {
            ("NOTE", "INTERNAL")
        } else {
            let channel = if roll < 0.92 { primary } else { ["SMS", "EMAIL", "CHAT"][rng.random_range(0..3)] };
            (channel, if rng.random_bool(0.5) { "INBOUND" } else { "OUTBOUND" })
        };
        let words = rng.random_range(5..16);
        let mut content = String::with_capacity(words * 8);
        for w in 0..words {
            let u: f64 = rng.random();
            let word = WORDS[((WORDS.len() as f64) * u * u) as usize % WORDS.len()];
            if w > 0 {
                content.push(' ');
            }
            content.push_str(word);
        }
        PlannedMessage { conversation, channel, direction, content }
    }
}

fn channel_bit(channel: &str) -> i32 {
    match channel {
        "SMS" => 1,
        "EMAIL" => 2,
        "VOICE" => 4,
        "CHAT" => 8,
        _ => 0,
    }
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn opt(value: Option<String>) -> String {
    value.map_or_else(|| "NULL".to_owned(), |v| quote(&v))
}

async fn next_id(conn: &DatabaseConnection, table: &str) -> anyhow::Result<i64> {
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            conn.get_database_backend(),
            format!("SELECT COALESCE(MAX(id), 0) AS m FROM {table}"),
        ))
        .await?
        .context("max id")?;
    Ok(row.try_get::<i64>("", "m")? + 1)
}

/// Writes rows with multi-row INSERTs, `BATCH` rows a statement, in large transactions.
struct BatchWriter<'a> {
    conn: &'a DatabaseConnection,
    head: String,
    rows: Vec<String>,
    txn: Option<sea_orm::DatabaseTransaction>,
    statements_in_txn: usize,
}

const BATCH: usize = 500;

impl<'a> BatchWriter<'a> {
    fn new(conn: &'a DatabaseConnection, head: &str) -> Self {
        Self { conn, head: head.to_owned(), rows: Vec::with_capacity(BATCH), txn: None, statements_in_txn: 0 }
    }

    async fn push(&mut self, row: String) -> anyhow::Result<()> {
        self.rows.push(row);
        if self.rows.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        if self.txn.is_none() {
            self.txn = Some(self.conn.begin().await?);
        }
        let sql = format!("{} VALUES {}", self.head, self.rows.join(","));
        self.rows.clear();
        self.txn.as_ref().expect("open").execute_unprepared(&sql).await?;
        self.statements_in_txn += 1;
        if self.statements_in_txn >= 100 {
            self.txn.take().expect("open").commit().await?;
            self.statements_in_txn = 0;
        }
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        self.flush().await?;
        if let Some(txn) = self.txn.take() {
            txn.commit().await?;
        }
        Ok(())
    }
}

/// Fills one business with `conversations` clients and conversations and `messages` messages
/// spread over the past year.
async fn fill(
    conn: &DatabaseConnection,
    business_id: u32,
    locations: &[u32],
    staff_ids: Vec<u32>,
    conversations: u64,
    messages: u64,
    seed: u64,
) -> anyhow::Result<Business> {
    let started = Instant::now();
    let epoch = Utc.with_ymd_and_hms(2025, 11, 1, 0, 0, 0).single().context("epoch")?;
    let span_us: i64 = 365 * 24 * 3600 * 1_000_000;
    let at = |index: u64| epoch + chrono::Duration::microseconds(span_us / messages.max(1) as i64 * index as i64);

    // Pass 1: what every conversation ends up as.
    let mut plans = vec![ConversationPlan::default(); conversations as usize];
    let mut generator = Generator::new(seed, conversations);
    for index in 0..messages {
        let m = generator.next();
        let plan = &mut plans[m.conversation as usize];
        plan.messages += 1;
        plan.channel_mask |= channel_bit(m.channel);
        if m.channel != "NOTE" {
            plan.last_index = index;
            plan.last_preview = m.content.chars().take(120).collect();
            plan.last_channel = m.channel;
            plan.last_direction = m.direction;
        }
    }

    let client_base = next_id(conn, "clients").await?;
    let conversation_base = next_id(conn, "conversations").await?;
    let mut message_id = next_id(conn, "messages").await?;
    let created = ts(epoch);

    let mut clients = BatchWriter::new(
        conn,
        "INSERT INTO clients (id, business_id, external_ref, name, phone_e164, email, sms_consent, search_text, created_at, updated_at)",
    );
    for i in 0..conversations {
        let name = format!("{} {}", FIRST[(i as usize) % FIRST.len()], LAST[(i as usize / FIRST.len()) % LAST.len()]);
        let phone = format!("+1{}", 2_000_000_000 + i);
        let email = (i % 3 == 0).then(|| format!("client{i}@mail.example.com"));
        let search = [Some(name.as_str()), Some(phone.as_str()), email.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        clients
            .push(format!(
                "({}, {business_id}, {}, {}, {}, {}, {}, {}, '{created}', '{created}')",
                client_base + i as i64,
                quote(&format!("ext-{i}")),
                quote(&name),
                quote(&phone),
                opt(email),
                if i % 10 == 0 { "FALSE" } else { "TRUE" },
                quote(&search),
            ))
            .await?;
    }
    clients.finish().await?;

    let mut counts: std::collections::BTreeMap<(&'static str, i64), i64> = Default::default();
    let mut unread = vec![false; conversations as usize];
    let mut conversations_out = BatchWriter::new(
        conn,
        "INSERT INTO conversations (id, business_id, client_id, location_id, status, snoozed_until, assigned_staff_id, \
         resolved_at, unread_count, channel_mask, last_message_at, last_message_preview, last_message_channel, \
         last_message_direction, last_activity_at, created_at, updated_at)",
    );
    let now = ts(Utc::now());
    let later = ts(Utc::now() + chrono::Duration::days(30));
    for (i, plan) in plans.iter().enumerate() {
        let last = if plan.messages > 0 { at(plan.last_index) } else { epoch };
        // Recent conversations are the open ones.
        let recent = plan.messages > 0 && plan.last_index * 10 >= messages * 8;
        let status = match (recent, i % 10) {
            (true, 0..=5) => "OPEN",
            (true, 6 | 7) => "PENDING",
            (true, 8) => "SNOOZED",
            (false, 0) => "OPEN",
            _ => "RESOLVED",
        };
        let assignee = (i % 5 != 0 && !staff_ids.is_empty()).then(|| i64::from(staff_ids[i % staff_ids.len()]));
        let is_unread = status != "RESOLVED" && plan.last_direction == "INBOUND";
        unread[i] = is_unread;
        *counts.entry((status, assignee.unwrap_or(0))).or_default() += 1;
        let has_message = plan.messages > 0 && !plan.last_channel.is_empty();
        conversations_out
            .push(format!(
                "({}, {business_id}, {}, {}, '{status}', {}, {}, {}, {}, {}, {}, {}, {}, {}, '{}', '{created}', '{now}')",
                conversation_base + i as i64,
                client_base + i as i64,
                locations[i % locations.len()],
                if status == "SNOOZED" { format!("'{later}'") } else { "NULL".into() },
                assignee.map_or("NULL".into(), |a| a.to_string()),
                if status == "RESOLVED" { format!("'{}'", ts(last)) } else { "NULL".into() },
                i32::from(is_unread),
                plan.channel_mask,
                if has_message { format!("'{}'", ts(last)) } else { "NULL".into() },
                if has_message { quote(&plan.last_preview) } else { "NULL".into() },
                if has_message { quote(plan.last_channel) } else { "NULL".into() },
                if has_message { quote(plan.last_direction) } else { "NULL".into() },
                ts(last),
            ))
            .await?;
    }
    conversations_out.finish().await?;
    for ((status, assignee), n) in counts {
        conn.execute_unprepared(&format!(
            "INSERT INTO conversation_counts (business_id, status, assignee_id, count) VALUES ({business_id}, '{status}', {assignee}, {n}) \
             ON CONFLICT (business_id, status, assignee_id) DO UPDATE SET count = conversation_counts.count + {n}"
        ))
        .await?;
    }

    // Pass 2: the messages, in time order.
    let mut out = BatchWriter::new(
        conn,
        "INSERT INTO messages (id, public_id, business_id, conversation_id, client_id, channel, direction, sender_type, \
         sender_staff_id, content, subject, provider, provider_message_id, status, status_updated_at, attempt_count, \
         read_at, created_at, location_id, from_address, to_address)",
    );
    let mut generator = Generator::new(seed, conversations);
    for index in 0..messages {
        let m = generator.next();
        let c = m.conversation as usize;
        let when = ts(at(index));
        let staff = i64::from(staff_ids[(index as usize) % staff_ids.len().max(1)]);
        let (sender, staff_col, status) = match m.direction {
            "INBOUND" => ("client", "NULL".to_owned(), "RECEIVED"),
            "OUTBOUND" => ("staff", staff.to_string(), if index % 100 == 0 { "FAILED" } else { "DELIVERED" }),
            _ => ("staff", staff.to_string(), "RECORDED"),
        };
        let read = if m.direction == "INBOUND" && !(unread[c] && plans[c].last_index == index) {
            format!("'{when}'")
        } else {
            "NULL".into()
        };
        let (provider, provider_id) = match m.channel {
            "SMS" => ("'twilio'".to_owned(), format!("'SM{business_id:08x}{index:024x}'")),
            _ => ("NULL".to_owned(), "NULL".to_owned()),
        };
        out.push(format!(
            "({message_id}, '{}', {business_id}, {}, {}, '{}', '{}', '{sender}', {staff_col}, {}, {}, {provider}, {provider_id}, \
             '{status}', '{when}', {}, {read}, '{when}', {}, NULL, NULL)",
            uuid::Uuid::from_u64_pair(seed, index),
            conversation_base + c as i64,
            client_base + c as i64,
            m.channel,
            m.direction,
            quote(&m.content),
            if m.channel == "EMAIL" { quote("About your visit") } else { "NULL".into() },
            i32::from(m.direction == "OUTBOUND"),
            locations[c % locations.len()],
        ))
        .await?;
        message_id += 1;
    }
    out.finish().await?;

    let (busiest_index, busiest_plan) =
        plans.iter().enumerate().max_by_key(|(_, p)| p.messages).context("a conversation")?;
    let step = (conversations / 50).max(1);
    let sample = (0..conversations)
        .step_by(step as usize)
        .map(|i| ((conversation_base + i as i64) as u32, (client_base + i as i64) as u32))
        .collect();
    let rare = conversations / 2;
    eprintln!(
        "  business {business_id}: {conversations} conversations, {messages} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Business {
        id: business_id,
        conversations,
        messages,
        staff_ids,
        busiest: (
            (conversation_base + busiest_index as i64) as u32,
            (client_base + busiest_index as i64) as u32,
            u64::from(busiest_plan.messages),
        ),
        sample,
        rare_text: format!("+1{}", 2_000_000_000 + rare),
        common_text: LAST[7].to_lowercase(),
    })
}
