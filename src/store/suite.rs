//! Store-level tests run against both backends: each case is one `async fn(&Store)`, and
//! [`store_test_suite!`] stamps it out as `sqlite::case` (a migrated file in a temp dir) and
//! `postgres::case` (a freshly created database, dropped afterwards), so that a statement that
//! behaves differently on one backend fails here, without the server around it.
//!
//! PostgreSQL is reached at `postgres://postgres@127.0.0.1:5432/postgres` unless
//! `OMEGA_TEST_POSTGRES_URL` names another server's admin database.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, Database, EntityTrait, QueryFilter, QueryOrder, Set};

use super::{
    Store, conversations, directory,
    entity::{
        business, client, conversation, conversation_event, delivery_job as job,
        enums::{AttemptOutcome, Channel, ConversationStatus, DeliveryStatus, Direction, JobState, SenderType},
        message, message_attempt as attempt,
    },
    events, messages, outbox, pacing, search,
};

/// A migrated store for one test, and what to remove once it is done.
pub(super) struct TestStore {
    pub store: Store,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (admin URL, database name), dropped on drop.
    postgres: Option<(String, String)>,
}

impl TestStore {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("omega.db").display());
        let store = Store::connect(&url).await.expect("open the SQLite store");
        store.migrate().await.expect("migrate SQLite");
        Self { store, _dir: Some(dir), postgres: None }
    }

    pub async fn postgres() -> Self {
        let admin_url = std::env::var("OMEGA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("omega_suite_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url).await.expect("connect to the test PostgreSQL server");
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        admin.close().await.ok();
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
        let store = Store::connect(&format!("{base}/{name}")).await.expect("open the PostgreSQL store");
        store.migrate().await.expect("migrate PostgreSQL");
        Self { store, _dir: None, postgres: Some((admin_url, name)) }
    }

    pub async fn close(mut self) {
        self.store.clone().close().await;
        if let Some((admin_url, name)) = self.postgres.take() {
            drop_database(&admin_url, &name).await;
        }
    }
}

impl Drop for TestStore {
    /// A failed test still drops its database. Drop runs inside the test's runtime, so the
    /// dropping runs on a thread with its own.
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(drop_database(&admin_url, &name));
        })
        .join();
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(admin) = Database::connect(admin_url).await {
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        let _ = admin.close().await;
    }
}

/// Stamps each `async fn case(store: &Store)` out as `sqlite::case` and `postgres::case`.
macro_rules! store_test_suite {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test = super::TestStore::sqlite().await;
                    super::$case(&test.store).await;
                    test.close().await;
                }
            )+
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test = super::TestStore::postgres().await;
                    super::$case(&test.store).await;
                    test.close().await;
                }
            )+
        }
    };
}

store_test_suite!(
    claims_never_hand_one_job_to_two_workers,
    claimed_jobs_return_only_when_their_lease_ends,
    pacing_spaces_a_senders_slots_by_the_interval,
    concurrent_reservations_take_distinct_slots,
    settling_accepted_sends_moves_only_queued_messages,
    search_in_a_conversation_ranks_highlights_and_skips_notes,
    a_capped_search_pages_its_newest_matches_wherever_they_are,
    unread_count_is_recounted_from_the_messages,
    appended_events_read_back_in_order,
    messages_into_a_conversation_commit_alone_or_refused_alone,
    a_lone_outbound_write_goes_to_any_conversation_and_counts_no_unread,
    a_message_finds_its_conversation_by_the_clients_phone_within_its_business,
    concurrent_messages_by_phone_or_email_each_find_their_own_clients_conversation,
    concurrent_writes_by_conversation_and_by_phone_across_conversations_each_land_once,
    one_group_of_every_kind_of_write_leaves_each_conversation_as_its_last_message_says,
    written_messages_keep_every_character_and_answer_their_stored_rows,
);

// ---- fixtures ----

/// Now, to the second: both backends store it exactly, so comparisons are about the store's
/// logic and not about fractions of a second.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("a valid time")
}

struct Inbox {
    business: business::Model,
    client: client::Model,
    conversation: conversation::Model,
}

/// A business with one client and the client's conversation.
async fn inbox(store: &Store, client_name: &str) -> Inbox {
    inbox_with_phone(store, client_name, None).await
}

/// Three [`inbox`]es (Ada, Eve, Grace), their clients with these phones.
async fn inboxes_with_phones(store: &Store, phones: [&str; 3]) -> Vec<Inbox> {
    let mut inboxes = Vec::new();
    for (name, phone) in ["Ada", "Eve", "Grace"].into_iter().zip(phones) {
        inboxes.push(inbox_with_phone(store, name, Some(phone)).await);
    }
    inboxes
}

/// [`inbox`], the client with `phone`.
async fn inbox_with_phone(store: &Store, client_name: &str, phone: Option<&str>) -> Inbox {
    let conn = store.writer();
    let at = now();
    let business = directory::insert_business(
        conn,
        directory::NewBusiness {
            external_ref: None,
            name: "Suite Salon".into(),
            time_zone: "UTC".into(),
            default_calling_code: "1".into(),
            sms_enabled: true,
            email_enabled: true,
            voice_enabled: false,
            chat_enabled: false,
        },
        at,
    )
    .await
    .expect("insert business");
    let client = directory::insert_client(
        conn,
        business.id,
        directory::ClientFields {
            name: Some(client_name.into()),
            phone_e164: phone.map(str::to_owned),
            ..Default::default()
        },
        at,
    )
    .await
    .expect("insert client");
    let conversation =
        conversations::insert_conversation_if_absent(conn, business.id, client.id, None, ConversationStatus::Open, at)
            .await
            .expect("insert conversation")
            .expect("a new conversation");
    Inbox { business, client, conversation }
}

/// A message in `inbox`'s conversation.
async fn message(
    store: &Store,
    inbox: &Inbox,
    channel: Channel,
    direction: Direction,
    status: DeliveryStatus,
    content: &str,
) -> message::Model {
    let sender_type = if direction == Direction::Inbound { SenderType::Client } else { SenderType::Staff };
    messages::insert_message(
        store.writer(),
        message::ActiveModel {
            public_id: Set(uuid::Uuid::new_v4().to_string()),
            business_id: Set(inbox.business.id),
            conversation_id: Set(inbox.conversation.id),
            client_id: Set(inbox.client.id),
            content: Set(content.into()),
            channel: Set(channel),
            direction: Set(direction),
            sender_type: Set(sender_type),
            status: Set(status),
            ..Default::default()
        },
        now(),
    )
    .await
    .expect("insert message")
}

/// A queued outbound SMS with its outbox job, due at `due`.
async fn queued_sms(store: &Store, inbox: &Inbox, content: &str, due: DateTime<Utc>) -> (message::Model, i64) {
    let sms = message(store, inbox, Channel::Sms, Direction::Outbound, DeliveryStatus::Queued, content).await;
    outbox::insert_job(store.writer(), &sms, "sms:+15550100", due).await.expect("insert job");
    let job = job::Entity::find()
        .filter(job::Column::MessageId.eq(sms.id))
        .one(store.connection())
        .await
        .expect("read job")
        .expect("the job");
    (sms, job.id)
}

async fn job(store: &Store, id: i64) -> job::Model {
    job::Entity::find_by_id(id).one(store.connection()).await.expect("read job").expect("the job")
}

fn ids(jobs: &[job::Model]) -> Vec<i64> {
    let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    ids.sort_unstable();
    ids
}

// ---- the outbox ----

/// Two claims at once share no job. On PostgreSQL the first claim is still open in a
/// transaction (its rows locked) when the second runs: the second must pass over them instead
/// of taking them or waiting. SQLite's one writer runs the two claims in turn.
async fn claims_never_hand_one_job_to_two_workers(store: &Store) {
    let inbox = inbox(store, "Ada").await;
    let at = now();
    let lease = at + Duration::seconds(60);
    let (_, first) = queued_sms(store, &inbox, "first", at - Duration::seconds(3)).await;
    let (_, second) = queued_sms(store, &inbox, "second", at - Duration::seconds(2)).await;
    let (_, third) = queued_sms(store, &inbox, "third", at - Duration::seconds(1)).await;

    if store.engine() == "postgresql" {
        let held = store.begin().await.expect("begin");
        let one = outbox::claim_jobs(&held, "worker-a", at, lease, 1).await.expect("claim in a transaction");
        assert_eq!(ids(&one), vec![first], "the oldest due job is claimed first");
        // Waiting on the held row instead of skipping it would hang here.
        let others = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            outbox::claim_jobs(store.writer(), "worker-b", at, lease, 10),
        )
        .await
        .expect("the second claim waited for the first one's lock instead of skipping it")
        .expect("second claim");
        assert_eq!(ids(&others), vec![second, third], "the second claim skips the job the first holds");
        held.commit().await.expect("commit");
    } else {
        let (a, b) = tokio::join!(
            outbox::claim_jobs(store.writer(), "worker-a", at, lease, 2),
            outbox::claim_jobs(store.writer(), "worker-b", at, lease, 2),
        );
        let (a, b) = (a.expect("claim a"), b.expect("claim b"));
        let mut all = [ids(&a), ids(&b)].concat();
        all.sort_unstable();
        assert_eq!(all, vec![first, second, third], "every job claimed exactly once: {a:?} / {b:?}");
    }

    for (id, worker) in [(first, "worker-a"), (second, "worker-b"), (third, "worker-b")] {
        let row = job(store, id).await;
        assert_eq!(row.state, JobState::Running);
        if store.engine() == "postgresql" {
            assert_eq!(row.locked_by.as_deref(), Some(worker), "job {id}");
        }
        assert_eq!(row.locked_until, Some(lease));
    }
}

/// A claimed job is not claimed again while its lease runs, a job not yet due is not claimed,
/// and once the lease has run out another worker takes the job over.
async fn claimed_jobs_return_only_when_their_lease_ends(store: &Store) {
    let inbox = inbox(store, "Grace").await;
    let at = now();
    let lease = at + Duration::seconds(30);
    let (_, due) = queued_sms(store, &inbox, "due", at).await;
    let (_, later) = queued_sms(store, &inbox, "later", at + Duration::seconds(120)).await;

    let claimed = outbox::claim_jobs(store.writer(), "worker-a", at, lease, 10).await.expect("claim");
    assert_eq!(ids(&claimed), vec![due], "only the due job is claimed");
    let again =
        outbox::claim_jobs(store.writer(), "worker-b", at + Duration::seconds(29), lease, 10).await.expect("claim");
    assert!(again.is_empty(), "claimed again within its lease: {again:?}");

    let after = at + Duration::seconds(31);
    let taken =
        outbox::claim_jobs(store.writer(), "worker-b", after, after + Duration::seconds(30), 10).await.expect("claim");
    assert_eq!(ids(&taken), vec![due], "the lapsed claim is taken over; the later job is not yet due");
    let row = job(store, due).await;
    assert_eq!(row.locked_by.as_deref(), Some("worker-b"));
    assert_eq!(row.locked_until, Some(after + Duration::seconds(30)));
    assert_eq!(job(store, later).await.state, JobState::Pending);
}

// ---- pacing ----

/// One sender's slots follow each other `interval` apart; a quiet sender gets a slot at once;
/// another sender has its own line.
async fn pacing_spaces_a_senders_slots_by_the_interval(store: &Store) {
    let at = now();
    let interval = Duration::milliseconds(1_500);
    let conn = store.writer();
    let mut slots = Vec::new();
    for _ in 0..3 {
        slots.push(pacing::reserve_slot(conn, "sms:+15550100", interval, at).await.expect("reserve"));
    }
    assert_eq!(slots, vec![at, at + interval, at + interval * 2]);
    let other = pacing::reserve_slot(conn, "sms:+15550199", interval, at).await.expect("reserve");
    assert_eq!(other, at, "another sender waits for no one");
    let quiet = at + Duration::seconds(60);
    let slot = pacing::reserve_slot(conn, "sms:+15550100", interval, quiet).await.expect("reserve");
    assert_eq!(slot, quiet, "a sender idle past its next slot sends at once");
    let next = pacing::reserve_slot(conn, "sms:+15550100", interval, quiet).await.expect("reserve");
    assert_eq!(next, quiet + interval);
}

/// Reservations in concurrent transactions (as workers on several replicas make them) each
/// get a slot of their own. Each transaction stays open a moment after reserving, so that
/// reservations that did not wait for each other's row would read the same slot.
async fn concurrent_reservations_take_distinct_slots(store: &Store) {
    let at = now();
    let interval = Duration::seconds(1);
    let first = pacing::reserve_slot(store.writer(), "sms:+15550100", interval, at).await.expect("reserve");
    assert_eq!(first, at);
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let txn = store.begin().await.expect("begin");
                let slot = pacing::reserve_slot(&txn, "sms:+15550100", interval, at).await.expect("reserve");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                txn.commit().await.expect("commit");
                slot
            })
        })
        .collect();
    let mut slots = Vec::new();
    for task in tasks {
        slots.push(task.await.expect("task"));
    }
    slots.sort_unstable();
    let expected: Vec<_> = (1..=5).map(|k| at + interval * k).collect();
    assert_eq!(slots, expected);
}

// ---- settling sends ----

/// A batch of accepted sends: QUEUED messages move to SENT with the provider's id, one a status
/// callback already marked DELIVERED keeps that status, every one gets its attempt, and the
/// jobs are done.
async fn settling_accepted_sends_moves_only_queued_messages(store: &Store) {
    let inbox = inbox(store, "Linus").await;
    let at = now();
    let (one, one_job) = queued_sms(store, &inbox, "one", at).await;
    let (two, two_job) = queued_sms(store, &inbox, "two", at).await;
    let (delivered, delivered_job) = queued_sms(store, &inbox, "three", at).await;
    message::ActiveModel { id: Set(delivered.id), status: Set(DeliveryStatus::Delivered), ..Default::default() }
        .update(store.writer())
        .await
        .expect("mark delivered");

    let accepted: Vec<outbox::Accepted> = [(&one, one_job), (&two, two_job), (&delivered, delivered_job)]
        .into_iter()
        .map(|(m, job_id)| outbox::Accepted {
            job_id,
            message_id: m.id,
            attempt: 1,
            started_at: at,
            provider: "twilio".into(),
            provider_message_id: format!("SM{}", m.id),
        })
        .collect();
    let settled_at = at + Duration::seconds(1);
    let txn = store.begin().await.expect("begin");
    let mut moved = outbox::settle_accepted(&txn, &accepted, settled_at).await.expect("settle");
    txn.commit().await.expect("commit");
    moved.sort_unstable();
    assert_eq!(moved, vec![one.id, two.id], "only the QUEUED messages moved");

    let conn = store.connection();
    for m in [&one, &two] {
        let row = messages::by_id(conn, m.id).await.expect("read").expect("message");
        assert_eq!(row.status, DeliveryStatus::Sent);
        assert_eq!(row.provider.as_deref(), Some("twilio"));
        assert_eq!(row.provider_message_id, Some(format!("SM{}", m.id)));
        assert_eq!(row.sent_at, Some(settled_at));
        assert_eq!(row.attempt_count, 1);
    }
    let row = messages::by_id(conn, delivered.id).await.expect("read").expect("message");
    assert_eq!(row.status, DeliveryStatus::Delivered, "a newer status is kept");
    assert_eq!(row.provider_message_id, None);
    assert_eq!(row.attempt_count, 1);

    for id in [one_job, two_job, delivered_job] {
        let row = job(store, id).await;
        assert_eq!((row.state, row.locked_by.as_deref(), row.locked_until), (JobState::Done, None, None));
    }
    let attempts = attempt::Entity::find().order_by_asc(attempt::Column::MessageId).all(conn).await.expect("attempts");
    let recorded: Vec<_> = attempts.iter().map(|a| (a.message_id, a.outcome, a.finished_at)).collect();
    assert_eq!(
        recorded,
        vec![
            (one.id, AttemptOutcome::Accepted, Some(settled_at)),
            (two.id, AttemptOutcome::Accepted, Some(settled_at)),
            (delivered.id, AttemptOutcome::Accepted, Some(settled_at))
        ]
    );
}

// ---- search ----

/// Whole words within one conversation, best match first, the words marked in the passage;
/// internal notes only when asked for, and other conversations never.
async fn search_in_a_conversation_ranks_highlights_and_skips_notes(store: &Store) {
    let inbox = inbox(store, "Barbara").await;
    let weak = message(
        store,
        &inbox,
        Channel::Sms,
        Direction::Inbound,
        DeliveryStatus::Received,
        "Is the blue dye in stock this week or next",
    )
    .await;
    let strong =
        message(store, &inbox, Channel::Sms, Direction::Outbound, DeliveryStatus::Sent, "blue blue blue").await;
    message(store, &inbox, Channel::Sms, Direction::Inbound, DeliveryStatus::Received, "bluebird is not a match").await;
    let note = message(store, &inbox, Channel::Note, Direction::Outbound, DeliveryStatus::Sent, "she likes blue").await;
    let elsewhere = {
        let client = directory::insert_client(
            store.writer(),
            inbox.business.id,
            directory::ClientFields { name: Some("Edsger".into()), ..Default::default() },
            now(),
        )
        .await
        .expect("client");
        let conversation = conversations::insert_conversation_if_absent(
            store.writer(),
            inbox.business.id,
            client.id,
            None,
            ConversationStatus::Open,
            now(),
        )
        .await
        .expect("conversation")
        .expect("new");
        Inbox { business: inbox.business.clone(), client, conversation }
    };
    message(
        store,
        &elsewhere,
        Channel::Sms,
        Direction::Inbound,
        DeliveryStatus::Received,
        "blue in another conversation",
    )
    .await;

    let terms = vec!["blue".to_owned()];
    let page = search::search(store.connection(), inbox.conversation.id, &terms, false, 0, 10).await.expect("search");
    let found: Vec<i64> = page.hits.iter().map(|(m, _, _)| m.id).collect();
    assert_eq!(found, vec![strong.id, weak.id], "best first, without the note or other conversations");
    assert_eq!(page.total, 2);
    assert!(!page.capped);
    assert!(page.hits[0].1 > page.hits[1].1, "ranks: {:?}", page.hits.iter().map(|h| h.1).collect::<Vec<_>>());
    for (m, _, highlight) in &page.hits {
        assert!(highlight.contains("<mark>blue</mark>"), "message {}: {highlight}", m.id);
    }

    let with_notes =
        search::search(store.connection(), inbox.conversation.id, &terms, true, 0, 10).await.expect("search");
    let mut found: Vec<i64> = with_notes.hits.iter().map(|(m, _, _)| m.id).collect();
    found.sort_unstable();
    assert_eq!(found, vec![weak.id, strong.id, note.id]);

    let both = vec!["blue".to_owned(), "stock".to_owned()];
    let page = search::search(store.connection(), inbox.conversation.id, &both, false, 0, 10).await.expect("search");
    let found: Vec<i64> = page.hits.iter().map(|(m, _, _)| m.id).collect();
    assert_eq!(found, vec![weak.id], "every word is required");
}

/// `count` messages in `inbox`'s conversation in one statement, created at `at`, the i-th
/// (from 1) reading `<text> <i>`, on `channel`.
async fn bulk_messages(store: &Store, inbox: &Inbox, count: u32, text: &str, channel: &str, at: DateTime<Utc>) {
    let numbers = match store.connection().get_database_backend() {
        sea_orm::DbBackend::Postgres => "SELECT i FROM generate_series(1, $6) AS i".to_owned(),
        _ => "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $6) SELECT i FROM n".to_owned(),
    };
    let sql = format!(
        "INSERT INTO messages (public_id, business_id, conversation_id, client_id, channel, direction, sender_type, \
         content, status, attempt_count, created_at) \
         SELECT $5 || '-' || i, $1, $2, $3, $7, 'INBOUND', 'client', $5 || ' ' || i, 'RECEIVED', 0, $4 FROM ({numbers}) AS n"
    );
    let values: Vec<sea_orm::Value> = vec![
        inbox.business.id.into(),
        inbox.conversation.id.into(),
        inbox.client.id.into(),
        at.into(),
        text.into(),
        i64::from(count).into(),
        channel.into(),
    ];
    let statement = sea_orm::Statement::from_sql_and_values(store.connection().get_database_backend(), sql, values);
    store.writer().execute_raw(statement).await.expect("bulk messages");
}

/// Beyond a thousand matches a page is the newest matches, notes left out unless asked for,
/// whether they are the conversation's newest messages or lie under many newer ones (on
/// PostgreSQL the first is a walk down the conversation, the second a sort of every match).
async fn a_capped_search_pages_its_newest_matches_wherever_they_are(store: &Store) {
    let inbox = inbox(store, "Grace").await;
    let at = now();
    bulk_messages(store, &inbox, 1_100, "invoice", "SMS", at).await;
    let contents =
        |page: &search::SearchPage| -> Vec<String> { page.hits.iter().map(|(m, _, _)| m.content.clone()).collect() };
    let search = |include_notes: bool, offset: u64| {
        let terms = vec!["invoice".to_owned()];
        async move {
            search::search(store.connection(), inbox.conversation.id, &terms, include_notes, offset, 3)
                .await
                .expect("search")
        }
    };
    let newest = ["invoice 1100", "invoice 1099", "invoice 1098"];
    let next = ["invoice 1097", "invoice 1096", "invoice 1095"];
    let page = search(false, 0).await;
    assert_eq!((page.total, page.capped), (1_000, true));
    assert_eq!(contents(&page), newest);
    assert!(page.hits.iter().all(|(_, _, highlight)| highlight.contains("<mark>invoice</mark>")), "{:?}", page.hits);
    assert_eq!(contents(&search(false, 3).await), next);

    // Buried under newer messages that do not match, and a newer note that does.
    bulk_messages(store, &inbox, 400, "receipt", "SMS", at + Duration::minutes(1)).await;
    bulk_messages(store, &inbox, 1, "invoice note", "NOTE", at + Duration::minutes(2)).await;
    let page = search(false, 0).await;
    assert_eq!((page.total, page.capped), (1_000, true));
    assert_eq!(contents(&page), newest);
    assert_eq!(contents(&search(false, 3).await), next);
    let with_notes = search(true, 0).await;
    assert_eq!(contents(&with_notes), ["invoice note 1", "invoice 1100", "invoice 1099"]);
}

// ---- unread counts ----

/// The count is rebuilt from the conversation's unread inbound messages, whatever it said.
async fn unread_count_is_recounted_from_the_messages(store: &Store) {
    let inbox = inbox(store, "Niklaus").await;
    let first = message(store, &inbox, Channel::Sms, Direction::Inbound, DeliveryStatus::Received, "one").await;
    message(store, &inbox, Channel::Sms, Direction::Inbound, DeliveryStatus::Received, "two").await;
    message(store, &inbox, Channel::Email, Direction::Inbound, DeliveryStatus::Received, "three").await;
    message(store, &inbox, Channel::Sms, Direction::Outbound, DeliveryStatus::Sent, "a reply is never unread").await;
    message::ActiveModel { id: Set(first.id), read_at: Set(Some(now())), ..Default::default() }
        .update(store.writer())
        .await
        .expect("mark read");
    conversation::ActiveModel { id: Set(inbox.conversation.id), unread_count: Set(42), ..Default::default() }
        .update(store.writer())
        .await
        .expect("skew the count");

    let unread = conversations::recount_unread(store.writer(), inbox.conversation.id).await.expect("recount");
    assert_eq!(unread, 2);
    let row = conversations::conversation(store.connection(), inbox.business.id, inbox.conversation.id)
        .await
        .expect("read")
        .expect("conversation");
    assert_eq!(row.unread_count, 2);

    let scope = messages::ReadScope {
        conversation_id: inbox.conversation.id,
        channel: Some(Channel::Sms),
        up_to: None,
        up_to_time: None,
    };
    let (changed, unread) = messages::set_read(store.writer(), &scope, Some(now())).await.expect("read SMS");
    assert_eq!((changed, unread), (1, 1), "only the unread SMS changed; the email stays unread");
    let (changed, unread) = messages::set_read(store.writer(), &scope, None).await.expect("unread SMS");
    assert_eq!((changed, unread), (2, 3));
}

// ---- the event log ----

/// Rows appended one by one and in batches come back in the order they were written, and a
/// reader resuming after a row gets exactly the rows after it.
async fn appended_events_read_back_in_order(store: &Store) {
    let inbox = inbox(store, "Barbara").await;
    let business_id = inbox.business.id;
    let conversation_id = Some(inbox.conversation.id);
    let event = |kind: &'static str, n: i64| events::NewEvent {
        business_id,
        conversation_id,
        kind,
        actor_key_id: None,
        actor_staff_id: None,
        data: serde_json::json!({ "n": n }),
    };
    let at = now();
    let txn = store.begin().await.expect("begin");
    events::append_event(&txn, event("conversation.created", 1), at).await.expect("append");
    events::append_events(&txn, vec![event("message.created", 2), event("message.updated", 3)], at)
        .await
        .expect("append");
    txn.commit().await.expect("commit");
    let txn = store.begin().await.expect("begin");
    events::append_events(&txn, vec![event("conversation.assigned", 4), event("message.created", 5)], at)
        .await
        .expect("append");
    txn.commit().await.expect("commit");

    let filter = events::EventFilter { business_id, conversation_id: None, kinds: Vec::new() };
    let read = read_settled(store, &filter, events::Cursor::START).await;
    let order: Vec<String> = read.rows.iter().map(|r| r.data.clone()).collect();
    let expected: Vec<String> = (1..=5).map(|n| serde_json::json!({ "n": n }).to_string()).collect();
    assert_eq!(order, expected);
    assert_eq!(
        read.rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        ["conversation.created", "message.created", "message.updated", "conversation.assigned", "message.created"]
    );

    let resumed = read_settled(store, &filter, events::Cursor::after(&read.rows[1])).await;
    assert_eq!(
        resumed.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        read.rows[2..].iter().map(|r| r.id).collect::<Vec<_>>()
    );

    let created = events::EventFilter { kinds: vec!["message.created".into()], ..filter };
    let read = read_settled(store, &created, events::Cursor::START).await;
    assert_eq!(
        read.rows.iter().map(|r| r.data.clone()).collect::<Vec<_>>(),
        [&expected[1], &expected[4]].map(Clone::clone)
    );

    let head = events::head(store.connection(), business_id).await.expect("head").expect("a last event");
    assert_eq!(head.data, expected[4]);
    let (history, total) =
        events::conversation_events(store.connection(), business_id, inbox.conversation.id, None, 10)
            .await
            .expect("history");
    assert_eq!(total, 5);
    assert_eq!(history.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), expected);
}

/// The rows after `cursor`, read again until they are settled: on PostgreSQL a transaction open
/// anywhere on the server (another test's, in another database) holds settling back until it
/// ends.
async fn read_settled(store: &Store, filter: &events::EventFilter, cursor: events::Cursor) -> events::Read {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let read = events::read_after(store.connection(), filter, cursor, 100).await.expect("read events");
        if !read.unsettled {
            return read;
        }
        assert!(tokio::time::Instant::now() < deadline, "events still unsettled after 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The messages of a conversation.
async fn messages_in(store: &Store, conversation_id: i64) -> Vec<message::Model> {
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .all(store.connection())
        .await
        .expect("messages")
}

/// The events of a conversation, of every kind.
async fn events_in(store: &Store, conversation_id: i64) -> Vec<conversation_event::Model> {
    conversation_event::Entity::find()
        .filter(conversation_event::Column::ConversationId.eq(conversation_id))
        .all(store.connection())
        .await
        .expect("events")
}

/// The `message.received` events of a conversation.
async fn received_events_in(store: &Store, conversation_id: i64) -> Vec<conversation_event::Model> {
    events_in(store, conversation_id).await.into_iter().filter(|e| e.kind == "message.received").collect()
}

/// Marks a conversation resolved, behind the domain's back.
async fn resolve(store: &Store, id: i64) {
    conversation::Entity::update_many()
        .col_expr(conversation::Column::Status, sea_orm::sea_query::Expr::value(ConversationStatus::Resolved))
        .filter(conversation::Column::Id.eq(id))
        .exec(store.writer())
        .await
        .expect("resolve");
}

async fn conversation_row(store: &Store, id: i64) -> conversation::Model {
    conversation::Entity::find_by_id(id).one(store.connection()).await.expect("read").expect("conversation")
}

/// An inbound SMS "hello" for the one-step write: the message, its note on the conversation
/// and its event.
fn inbound_hello(
    business_id: i64,
    conversation_id: i64,
    client_id: i64,
    at: DateTime<Utc>,
) -> (message::ActiveModel, conversations::MessageNote<'static>, events::NewEvent<'static>) {
    let new = message::ActiveModel {
        channel: Set(Channel::Sms),
        direction: Set(Direction::Inbound),
        sender_type: Set(SenderType::Client),
        status: Set(DeliveryStatus::Received),
        ..messages::new_message(business_id, conversation_id, client_id, None, "hello".into())
    };
    let note = conversations::MessageNote {
        conversation_id,
        channel: Channel::Sms,
        preview: "hello",
        direction: Direction::Inbound,
        at,
    };
    let event = events::NewEvent {
        business_id,
        conversation_id: Some(conversation_id),
        kind: "message.received",
        actor_key_id: None,
        actor_staff_id: None,
        data: serde_json::json!({}),
    };
    (new, note, event)
}

/// The common ingest's one-step write (through the group committers, which on PostgreSQL write
/// a group with a failed write again write by write): 40 concurrent writes, two of which repeat
/// a provider id and one of which names a resolved conversation the guard refuses. Each gets its
/// own outcome; the refused ones write nothing, and every stored one has its event and its share
/// of the conversation's unread count.
async fn messages_into_a_conversation_commit_alone_or_refused_alone(store: &Store) {
    let open = inbox(store, "Ada").await;
    let resolved = inbox(store, "Grace").await;
    resolve(store, resolved.conversation.id).await;
    let write = |target: &Inbox, provider_id: String| {
        let (store, business_id, conversation_id, client_id) =
            (store.clone(), target.business.id, target.conversation.id, target.client.id);
        async move {
            let at = now();
            let (mut new, note, event) = inbound_hello(business_id, conversation_id, client_id, at);
            new.provider = Set(Some("twilio".into()));
            new.provider_message_id = Set(Some(provider_id));
            let unless = [ConversationStatus::Resolved, ConversationStatus::Snoozed];
            messages::insert_into_conversation_unless(&store, new, &note, &unless, event, at).await
        }
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        // Messages 7 and 8 repeat message 3's provider id; message 20 goes to the resolved one.
        let provider_id = format!("SM{}", if i == 7 || i == 8 { 3 } else { i });
        let target = if i == 20 { &resolved } else { &open };
        tasks.push(tokio::spawn(write(target, provider_id)));
    }
    let (mut stored, mut repeats, mut refused) = (0, 0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(Some(message)) => {
                assert_eq!(message.conversation_id, open.conversation.id);
                stored += 1;
            }
            Ok(None) => refused += 1,
            Err(super::StoreError::UniqueViolation(_)) => repeats += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!((stored, repeats, refused), (37, 2, 1));
    assert_eq!(messages_in(store, open.conversation.id).await.len(), 37);
    assert!(messages_in(store, resolved.conversation.id).await.is_empty(), "the refused write left a message");
    assert_eq!(received_events_in(store, open.conversation.id).await.len(), 37, "one event per stored message");
    assert!(events_in(store, resolved.conversation.id).await.is_empty(), "the refused write left an event");
    assert_eq!(conversation_row(store, open.conversation.id).await.unread_count, 37);
    let untouched = conversation_row(store, resolved.conversation.id).await;
    assert_eq!((untouched.unread_count, untouched.status), (0, ConversationStatus::Resolved));
}

/// A lone write with no guarding statuses (an outbound message) is written whatever its
/// conversation's status, leaves the conversation's summary as the message says (its channel
/// bit added to those it had, its preview, time, channel and direction) and counts no unread.
async fn a_lone_outbound_write_goes_to_any_conversation_and_counts_no_unread(store: &Store) {
    let target = inbox(store, "Ada").await;
    let (business_id, conversation_id, client_id) = (target.business.id, target.conversation.id, target.client.id);
    let at = now();
    let (new, note, event) = inbound_hello(business_id, conversation_id, client_id, at);
    messages::insert_into_conversation_unless(store, new, &note, &[], event, at).await.expect("write").expect("stored");
    resolve(store, conversation_id).await;
    let later = at + chrono::Duration::seconds(5);
    let (mut new, mut note, event) = inbound_hello(business_id, conversation_id, client_id, later);
    new.channel = Set(Channel::Voice);
    new.direction = Set(Direction::Outbound);
    new.sender_type = Set(SenderType::Staff);
    new.content = Set("call back at noon".into());
    (note.channel, note.direction, note.preview) = (Channel::Voice, Direction::Outbound, "call back at noon");
    let stored = messages::insert_into_conversation_unless(store, new, &note, &[], event, later)
        .await
        .expect("write")
        .expect("an outbound message is written to a resolved conversation");
    assert_eq!((stored.conversation_id, stored.direction), (conversation_id, Direction::Outbound));
    let row = conversation_row(store, conversation_id).await;
    assert_eq!(row.status, ConversationStatus::Resolved, "the write does not reopen it");
    assert_eq!(row.unread_count, 1, "only the inbound message is unread");
    assert_eq!(row.channel_mask, Channel::Sms.bit() | Channel::Voice.bit());
    assert_eq!(
        (row.last_message_preview.as_deref(), row.last_message_channel, row.last_message_direction),
        (Some("call back at noon"), Some(Channel::Voice), Some(Direction::Outbound))
    );
    assert_eq!(row.last_message_at, Some(later));
    assert_eq!(messages_in(store, conversation_id).await.len(), 2);
}

/// An inbound "hello" from `address` (an email address if it holds `@`, else a phone) to the
/// business, written by the one-step write that finds the client and conversation itself (the
/// caller knows neither); `None` when it wrote nothing.
async fn inbound_by(store: Store, business_id: i64, address: String) -> Option<message::Model> {
    let at = now();
    let (mut new, note, event) = inbound_hello(business_id, 0, 0, at);
    new.from_address = Set(Some(address.clone()));
    let unless = [ConversationStatus::Resolved, ConversationStatus::Snoozed];
    let identity = match address.contains('@') {
        true => messages::UniqueIdentity::Email(&address),
        false => messages::UniqueIdentity::Phone(&address),
    };
    messages::insert_for_client_unless(&store, identity, new, &note, &unless, event, at).await.expect("write")
}

/// The one-step write that finds its conversation by the client's phone (in the statement
/// itself on PostgreSQL): it writes to the named business's client only, never to another
/// business's client with the same phone; an unknown phone and a resolved conversation write
/// nothing.
async fn a_message_finds_its_conversation_by_the_clients_phone_within_its_business(store: &Store) {
    const PHONE: &str = "+14155550100";
    let ours = inbox_with_phone(store, "Ada", Some(PHONE)).await;
    let theirs = inbox_with_phone(store, "Eve", Some(PHONE)).await;
    let write = |business_id: i64, phone: &'static str| inbound_by(store.clone(), business_id, phone.to_owned());
    let stored = write(ours.business.id, PHONE).await.expect("stored");
    assert_eq!(
        (stored.business_id, stored.conversation_id, stored.client_id),
        (ours.business.id, ours.conversation.id, ours.client.id)
    );
    assert!(write(ours.business.id, "+14155550199").await.is_none(), "an unknown phone");
    assert_eq!(conversation_row(store, ours.conversation.id).await.unread_count, 1);
    assert_eq!(
        received_events_in(store, ours.conversation.id).await.len(),
        1,
        "the message's event, on its conversation"
    );
    assert_eq!(
        conversation_row(store, theirs.conversation.id).await.unread_count,
        0,
        "another business's client was written to"
    );
    assert!(messages_in(store, theirs.conversation.id).await.is_empty());
    assert!(events_in(store, theirs.conversation.id).await.is_empty());
    conversation::Entity::update_many()
        .col_expr(conversation::Column::Status, sea_orm::sea_query::Expr::value(ConversationStatus::Resolved))
        .filter(conversation::Column::Id.eq(ours.conversation.id))
        .exec(store.writer())
        .await
        .expect("resolve");
    assert!(write(ours.business.id, PHONE).await.is_none(), "the guard refuses a resolved conversation");
    assert_eq!(messages_in(store, ours.conversation.id).await.len(), 1);
    assert_eq!(received_events_in(store, ours.conversation.id).await.len(), 1);
}

/// Many writes by phone or email at once (on SQLite, grouped: their conversations are found
/// together, one statement per kind of address): each lands in the conversation of its own
/// business's client, two businesses sharing a phone and an email included, and an address no
/// client has writes nothing.
async fn concurrent_messages_by_phone_or_email_each_find_their_own_clients_conversation(store: &Store) {
    const PHONE: &str = "+14155550100";
    const EMAIL: &str = "shared@clients.example";
    let inboxes = [
        inbox_with_phone(store, "Ada", Some(PHONE)).await,
        inbox_with_phone(store, "Eve", Some(PHONE)).await,
        inbox_with_phone(store, "Grace", Some("+14155550102")).await,
    ];
    for (inbox, email) in inboxes.iter().zip([EMAIL, EMAIL, "grace@clients.example"]) {
        client::Entity::update_many()
            .col_expr(client::Column::Email, sea_orm::sea_query::Expr::value(email))
            .filter(client::Column::Id.eq(inbox.client.id))
            .exec(store.writer())
            .await
            .expect("an email");
    }
    // (the inbox written to, or none; the address)
    let targets = [
        (Some(0), PHONE),
        (Some(1), PHONE),
        (Some(2), "+14155550102"),
        (None, "+14155550199"),
        (Some(0), EMAIL),
        (Some(1), EMAIL),
        (Some(2), "grace@clients.example"),
        (None, "nobody@clients.example"),
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (inbox, address) = targets[i % targets.len()];
        let business_id = inboxes[inbox.unwrap_or(0)].business.id;
        tasks.push((inbox, tokio::spawn(inbound_by(store.clone(), business_id, address.to_owned()))));
    }
    for (inbox, task) in tasks {
        let stored = task.await.expect("task");
        match inbox.map(|n| &inboxes[n]) {
            Some(inbox) => {
                let stored = stored.expect("stored");
                assert_eq!(
                    (stored.business_id, stored.conversation_id, stored.client_id),
                    (inbox.business.id, inbox.conversation.id, inbox.client.id)
                );
            }
            None => assert!(stored.is_none(), "an address no client has"),
        }
    }
    for inbox in &inboxes {
        assert_eq!(messages_in(store, inbox.conversation.id).await.len(), 10);
        assert_eq!(received_events_in(store, inbox.conversation.id).await.len(), 10);
        assert_eq!(conversation_row(store, inbox.conversation.id).await.unread_count, 10);
    }
}

/// Writes naming their conversation and writes naming the client's phone, interleaved over
/// three conversations in a different order each round, all at once: the groups they share
/// (several at a time on PostgreSQL, meeting at the same conversations) store each exactly once,
/// with its event and its share of the unread count.
async fn concurrent_writes_by_conversation_and_by_phone_across_conversations_each_land_once(store: &Store) {
    let phones = ["+14155550110", "+14155550111", "+14155550112"];
    let inboxes = inboxes_with_phones(store, phones).await;
    let by_conversation = |inbox: &Inbox| {
        let (store, business_id, conversation_id, client_id) =
            (store.clone(), inbox.business.id, inbox.conversation.id, inbox.client.id);
        async move {
            let at = now();
            let (new, note, event) = inbound_hello(business_id, conversation_id, client_id, at);
            let unless = [ConversationStatus::Resolved, ConversationStatus::Snoozed];
            messages::insert_into_conversation_unless(&store, new, &note, &unless, event, at).await.expect("write")
        }
    };
    let mut tasks = Vec::new();
    for round in 0..20 {
        for step in 0..3 {
            // Round r visits the conversations forwards or backwards from a rotating start.
            let n = if round % 2 == 0 { (round + step) % 3 } else { (round + 3 - step) % 3 };
            let inbox = &inboxes[n];
            let task = match (round + step) % 2 {
                0 => tokio::spawn(by_conversation(inbox)),
                _ => tokio::spawn(inbound_by(store.clone(), inbox.business.id, phones[n].to_owned())),
            };
            tasks.push((n, task));
        }
    }
    for (n, task) in tasks {
        let stored = task.await.expect("task").expect("stored");
        assert_eq!(stored.conversation_id, inboxes[n].conversation.id);
    }
    for inbox in &inboxes {
        assert_eq!(messages_in(store, inbox.conversation.id).await.len(), 20);
        assert_eq!(received_events_in(store, inbox.conversation.id).await.len(), 20);
        assert_eq!(conversation_row(store, inbox.conversation.id).await.unread_count, 20);
    }
}

/// One group of the committers (on PostgreSQL one statement per shape of write) leaves each
/// conversation as its messages written one after another would: 60 writes to two open
/// conversations (by id and by phone; inbound and outbound; SMS, voice, and email with a
/// subject, a second shape), to a resolved conversation and to an unknown phone. Each
/// conversation's last message is its newest (highest id), its channels are all of its
/// messages', its unread count its inbound ones; each message has its own event, in the
/// messages' order; the refused and the unknown write nothing. (The concurrent tests above cover
/// groups as they form under load.)
async fn one_group_of_every_kind_of_write_leaves_each_conversation_as_its_last_message_says(store: &Store) {
    let phones = ["+14155550120", "+14155550121", "+14155550122"];
    let inboxes = inboxes_with_phones(store, phones).await;
    let resolved = &inboxes[2];
    resolve(store, resolved.conversation.id).await;
    let write = |i: usize, inbox: &Inbox, by_phone: Option<&str>| {
        let at = now() + Duration::seconds(i as i64 % 7);
        let content = format!("message {i}");
        let channel = match i % 5 {
            4 => Channel::Email,
            2 => Channel::Voice,
            _ => Channel::Sms,
        };
        let direction = if i % 4 == 3 { Direction::Outbound } else { Direction::Inbound };
        let (business_id, conversation_id, client_id) = (inbox.business.id, inbox.conversation.id, inbox.client.id);
        let (mut new, note, mut event) = inbound_hello(business_id, conversation_id, client_id, at);
        new.content = Set(content.clone());
        new.channel = Set(channel);
        new.direction = Set(direction);
        if channel == Channel::Email {
            new.subject = Set(Some(format!("subject {i}")));
        }
        let note = conversations::MessageNote { channel, direction, preview: &content, ..note };
        event.data = serde_json::json!({ "content": content });
        let unless = [ConversationStatus::Resolved, ConversationStatus::Snoozed];
        let identity = by_phone.map(messages::UniqueIdentity::Phone);
        messages::guarded_write(identity, new, &note, &unless, event, at)
    };
    let (mut writes, mut targets) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let n = if i % 10 == 9 { 2 } else { i % 2 };
        writes.push(write(i, &inboxes[n], (i % 3 != 0).then_some(phones[n])));
        targets.push(Some(n));
    }
    writes.push(write(60, &inboxes[0], Some("+14155550199")));
    targets.push(None);
    let outcomes = store.write_as_one_group(writes).await.expect("the group commits");
    let mut expected = [0; 2];
    for (outcome, target) in outcomes.into_iter().zip(targets) {
        let stored = outcome.expect("its own outcome");
        match target {
            Some(n @ (0 | 1)) => {
                assert_eq!(stored.expect("stored").conversation_id, inboxes[n].conversation.id);
                expected[n] += 1;
            }
            _ => assert!(stored.is_none(), "the resolved conversation refuses; no client has the unknown phone"),
        }
    }
    assert!(messages_in(store, resolved.conversation.id).await.is_empty());
    assert_eq!(conversation_row(store, resolved.conversation.id).await.unread_count, 0);
    for (inbox, expected) in inboxes[..2].iter().zip(expected) {
        let mut stored = messages_in(store, inbox.conversation.id).await;
        stored.sort_by_key(|m| m.id);
        assert_eq!(stored.len(), expected);
        let row = conversation_row(store, inbox.conversation.id).await;
        let last = stored.last().expect("a message");
        assert_eq!(row.last_message_preview.as_deref(), Some(last.content.as_str()), "the newest message's preview");
        assert_eq!(row.last_message_at, Some(last.created_at));
        assert_eq!((row.last_message_channel, row.last_message_direction), (Some(last.channel), Some(last.direction)));
        let inbound = stored.iter().filter(|m| m.direction == Direction::Inbound).count();
        assert_eq!(row.unread_count as usize, inbound);
        let mask = stored.iter().fold(inbox.conversation.channel_mask, |mask, m| mask | m.channel.bit());
        assert_eq!(row.channel_mask, mask);
        let mut events = received_events_in(store, inbox.conversation.id).await;
        events.sort_by_key(|e| e.id);
        let told: Vec<String> = events.iter().map(|e| e.data.clone()).collect();
        let written: Vec<String> =
            stored.iter().map(|m| serde_json::json!({ "content": m.content }).to_string()).collect();
        assert_eq!(told, written, "one event per message, in the messages' order");
    }
}

/// Grouped and lone writes store every character of what they are given and answer each
/// message exactly as a read of its row gives it: content and subject that JSON must escape
/// (quotes, backslashes, control characters, a line separator, characters outside the BMP),
/// optional columns set and left NULL, times to the microsecond.
async fn written_messages_keep_every_character_and_answer_their_stored_rows(store: &Store) {
    let inbox = inbox(store, "Ada").await;
    let awkward = "say \"hi\" \\ back\n\ttab \u{1} \u{2028} </script> café 🦀 {\"k\": [1]}";
    let at = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("a valid time");
    let write = |i: usize, by_phone: bool| {
        let content = format!("{awkward} #{i}");
        let (mut new, note, mut event) = inbound_hello(inbox.business.id, inbox.conversation.id, inbox.client.id, at);
        new.content = Set(content.clone());
        if i.is_multiple_of(2) {
            new.subject = Set(Some(format!("{awkward} subject")));
            new.from_address = Set(Some("+14155550100".into()));
            new.media = Set(Some(r#"["https://example.com/a.jpg"]"#.into()));
        }
        let note = conversations::MessageNote { preview: &content, ..note };
        event.data = serde_json::json!({ "content": content });
        let phone = inbox.client.phone_e164.clone();
        let identity = if by_phone { phone.as_deref().map(messages::UniqueIdentity::Phone) } else { None };
        messages::guarded_write(identity, new, &note, &[ConversationStatus::Resolved], event, at)
    };
    let group: Vec<_> = (0..6).map(|i| write(i, i % 3 == 0)).collect();
    let mut answered = Vec::new();
    for outcome in store.write_as_one_group(group).await.expect("the group commits") {
        answered.push(outcome.expect("its own outcome").expect("stored"));
    }
    let alone = store.write_as_one_group(vec![write(6, false)]).await.expect("the lone write commits");
    answered.extend(alone.into_iter().map(|outcome| outcome.expect("its own outcome").expect("stored")));
    assert_eq!(answered.len(), 7);
    for (i, message) in answered.iter().enumerate() {
        assert_eq!(message.content, format!("{awkward} #{i}"));
        assert_eq!(message.subject, i.is_multiple_of(2).then(|| format!("{awkward} subject")));
        assert_eq!(message.created_at, at, "the time to the microsecond");
        let stored = message::Entity::find_by_id(message.id).one(store.connection()).await.expect("read");
        assert_eq!(Some(message), stored.as_ref(), "the answered message is its stored row");
    }
    // One event per message (a group's writes of different shapes, here with and without a
    // subject, go in one statement per shape, so ids do not follow the group's order).
    let mut told: Vec<String> =
        received_events_in(store, inbox.conversation.id).await.into_iter().map(|e| e.data).collect();
    let mut written: Vec<String> =
        answered.iter().map(|m| serde_json::json!({ "content": m.content }).to_string()).collect();
    told.sort();
    written.sort();
    assert_eq!(told, written);
    let row = conversation_row(store, inbox.conversation.id).await;
    assert_eq!(row.last_message_preview.as_deref(), Some(answered[6].content.as_str()));
}

/// Both PostgreSQL pools run without JIT compilation; only the shared one plans every call for
/// its values (the keyed pool keeps PostgreSQL's plan caching).
#[tokio::test]
async fn postgres_sessions_run_without_jit() {
    let test = TestStore::postgres().await;
    let sql = "SELECT current_setting('jit') AS jit, current_setting('plan_cache_mode') AS plans";
    for (db, plans) in [(test.store.connection(), "force_custom_plan"), (test.store.keyed(), "auto")] {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<String>("", "jit").unwrap(), "off");
        assert_eq!(row.try_get::<String>("", "plans").unwrap(), plans);
    }
    test.close().await;
}
