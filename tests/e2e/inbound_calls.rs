//! Inbound calls through real Envoy, posted as Twilio posts them: the number's Voice URL, the
//! `<Dial action>`, the `<Client>` legs' status callbacks, the `<Record>` recording status and
//! transcription callbacks — form bodies signed with Twilio's validator algorithm (HMAC-SHA1 of
//! the URL followed by the sorted parameters, base64), computed here independently of Omega's
//! own code. Every TwiML answer is read with an XML parser, and each callback is posted to the
//! URL the previous TwiML named.

use crate::common;

use crate::common::json_of;
use crate::common::{C_SID, C_TOKEN, PLATFORM_SID, PLATFORM_TOKEN};
use base64::{Engine, engine::general_purpose::STANDARD};
use common::{Db, TestApp, TestBusiness, fakes::FakeTwilio, spawn_app_with};
use hmac::{Hmac, Mac};
use quick_xml::{Reader, events::Event};
use serde_json::{Value, json};

both_databases!(
    a_call_rings_the_assignee_then_the_staff_then_takes_a_voicemail,
    an_unknown_caller_becomes_a_client_and_answers_name_who_picked_up,
    voicemail_is_transcribed_when_the_business_turns_it_on,
    forged_or_foreign_call_webhooks_are_refused_and_write_nothing,
);

const NUMBER: &str = "+14155550100";
const CARLA: &str = "+14155550199";

struct Setup {
    app: TestApp,
    b: TestBusiness,
    carla: u64,
    conversation: u64,
    /// Ana and Ben are active, Cleo is not; Carla's conversation is Ben's.
    ana: u64,
    ben: u64,
}

async fn setup(db: Db) -> Setup {
    let twilio = FakeTwilio::start().await;
    let app = spawn_app_with(
        db,
        &[
            ("OMEGA_TWILIO_BASE_URL", &twilio.base_url()),
            ("OMEGA_TWILIO_ACCOUNT_SID", PLATFORM_SID),
            ("OMEGA_TWILIO_AUTH_TOKEN", PLATFORM_TOKEN),
        ],
    )
    .await;
    std::mem::forget(twilio); // Nothing is sent: the fake only has to be there.
    let b = app
        .onboard(json!({
            "name": "Lotus", "time_zone": "America/New_York",
            "locations": [{ "name": "Main", "phone_numbers": [NUMBER] }],
            "staff": [
                { "name": "Ana", "email": "ana@lotus.example" },
                { "name": "Ben", "email": "ben@lotus.example" },
                { "name": "Cleo", "email": "cleo@lotus.example", "active": false }
            ]
        }))
        .await;
    let creds = json!({ "account_sid": FakeTwilio::ACCOUNT_SID, "auth_token": FakeTwilio::AUTH_TOKEN });
    assert_eq!(put(&app, &b, "twilio", creds).await.status(), 200);
    let carla = app.upsert_client(&b, json!({ "name": "Carla", "phone": CARLA })).await;
    let conversation = app.conversation(&b, carla).await;
    let (ana, ben) = (b.staff_ids[0], b.staff_ids[1]);
    let base = format!("/omega/businesses/{}/clients/{carla}/conversations/{conversation}", b.id);
    json_of(app.post(&format!("{base}/assignment?assigned_to={ben}"), &b.key, None).await, 200).await;
    json_of(app.post(&format!("{base}/status?status=RESOLVED"), &b.key, None).await, 200).await;
    Setup { app, b, carla, conversation, ana, ben }
}

async fn put(app: &TestApp, b: &TestBusiness, kind: &str, body: Value) -> reqwest::Response {
    let url = app.rest(&format!("/omega/businesses/{}/providers/{kind}", b.id));
    app.http.put(url).header("x-api-key", &b.key).json(&body).send().await.unwrap()
}

/// Twilio's request validator: base64(HMAC-SHA1(auth token, URL + each parameter's name and
/// value, sorted by name)).
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts a form to `url` (a full URL, as TwiML names it) signed with `token`.
async fn post_signed(app: &TestApp, url: &str, params: &[(&str, &str)], token: &str) -> reqwest::Response {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    app.http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", twilio_signature(token, url, params))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Posts as Twilio does for the business's own account, expecting TwiML back.
async fn twiml(app: &TestApp, url: &str, params: &[(&str, &str)]) -> Node {
    let resp = post_signed(app, url, params, FakeTwilio::AUTH_TOKEN).await;
    let status = resp.status();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{url}: {text}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    parse(&text)
}

/// An XML element as parsed.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attributes: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, name: &str) -> &str {
        let found = self.attributes.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("<{}> has no {name}: {self:?}", self.name))
    }

    fn has_attr(&self, name: &str) -> bool {
        self.attributes.iter().any(|(k, _)| k == name)
    }

    fn verbs(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }

    fn verb(&self, name: &str) -> &Node {
        self.children.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no <{name}> in {self:?}"))
    }
}

/// Parses a TwiML document with quick-xml's reader into its `<Response>` element.
fn parse(xml: &str) -> Node {
    let mut reader = Reader::from_str(xml);
    let mut stack = vec![Node::default()];
    let element = |start: &quick_xml::events::BytesStart| Node {
        name: String::from_utf8(start.name().as_ref().to_vec()).unwrap(),
        attributes: start
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).unwrap().into_owned();
                (String::from_utf8(a.key.as_ref().to_vec()).unwrap(), value)
            })
            .collect(),
        ..Default::default()
    };
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("not XML ({e}): {xml}")) {
            Event::Decl(_) => {}
            Event::Start(start) => stack.push(element(&start)),
            Event::Empty(start) => stack.last_mut().unwrap().children.push(element(&start)),
            Event::Text(text) => stack.last_mut().unwrap().text.push_str(&text.decode().unwrap()),
            Event::GeneralRef(r) => {
                let entity = r.decode().unwrap();
                let ch = match entity.as_ref() {
                    "amp" => '&',
                    "lt" => '<',
                    "gt" => '>',
                    "quot" => '"',
                    "apos" => '\'',
                    other => panic!("unexpected entity {other}"),
                };
                stack.last_mut().unwrap().text.push(ch);
            }
            Event::End(_) => {
                let done = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(done);
            }
            Event::Eof => break,
            other => panic!("unexpected XML {other:?} in {xml}"),
        }
    }
    let mut document = stack.pop().unwrap();
    assert_eq!(document.children.len(), 1, "{xml}");
    let response = document.children.pop().unwrap();
    assert_eq!(response.name, "Response", "{xml}");
    response
}

fn identity(b: &TestBusiness, staff: u64) -> String {
    format!("staff_{}_{staff}", b.id)
}

/// The `<Client>` identities a `<Dial>` rings.
fn dialed(dial: &Node) -> Vec<String> {
    assert_eq!(dial.name, "Dial");
    dial.children
        .iter()
        .map(|client| {
            assert_eq!(client.name, "Client");
            client.text.clone()
        })
        .collect()
}

fn incoming<'a>(call_sid: &'a str, from: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CallSid", call_sid),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("From", from),
        ("To", NUMBER),
        ("Caller", from),
        ("Called", NUMBER),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("ApiVersion", "2010-04-01"),
    ]
}

fn dial_status<'a>(call_sid: &'a str, status: &'a str, duration: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CallSid", call_sid),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("CallStatus", "in-progress"),
        ("DialCallStatus", status),
        ("DialCallSid", "CAchild"),
        ("DialCallDuration", duration),
        ("Direction", "inbound"),
    ]
}

fn recording<'a>(
    call_sid: &'a str,
    recording_sid: &'a str,
    url: &'a str,
    duration: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("CallSid", call_sid),
        ("RecordingSid", recording_sid),
        ("RecordingUrl", url),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", duration),
        ("RecordingChannels", "1"),
        ("RecordingSource", "RecordVerb"),
        ("RecordingStartTime", "Fri, 04 Dec 2026 15:00:00 +0000"),
    ]
}

async fn messages_of(s: &Setup, client: u64) -> Vec<Value> {
    let profile =
        json_of(s.app.get(&format!("/omega/businesses/{}/clients/{client}", s.b.id), &s.b.key).await, 200).await;
    let Some(conversation) = profile["conversation"]["conversation_id"].as_u64() else { return Vec::new() };
    let path = format!("/omega/businesses/{}/clients/{client}/conversations/{conversation}/messages?order=asc", s.b.id);
    let page = json_of(s.app.get(&path, &s.b.key).await, 200).await;
    page["messages"].as_array().unwrap().clone()
}

async fn summary_of(s: &Setup, client: u64) -> Value {
    let profile =
        json_of(s.app.get(&format!("/omega/businesses/{}/clients/{client}", s.b.id), &s.b.key).await, 200).await;
    profile["conversation"].clone()
}

/// The `data` of the business's events of `kind`, in the order they were written. Read from the
/// log's table: what was written, without waiting on delivery (on PostgreSQL an event is delivered
/// once every older transaction on the server has ended, other processes' included).
async fn events(s: &Setup, kind: &str) -> Vec<Value> {
    let count = s
        .app
        .sql(
            "SELECT COUNT(*) AS n FROM conversation_events WHERE business_id = $1 AND kind = $2",
            vec![(s.b.id as i64).into(), kind.into()],
        )
        .await
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    let mut found = Vec::new();
    for offset in 0..count {
        let row = s
            .app
            .sql(
                &format!(
                    "SELECT data FROM conversation_events WHERE business_id = $1 AND kind = $2 ORDER BY id LIMIT 1 OFFSET {offset}"
                ),
                vec![(s.b.id as i64).into(), kind.into()],
            )
            .await
            .unwrap();
        found.push(serde_json::from_str(&row.try_get::<String>("", "data").unwrap()).unwrap());
    }
    found
}

async fn a_call_rings_the_assignee_then_the_staff_then_takes_a_voicemail(db: Db) {
    let s = setup(db).await;
    let (b, app) = (&s.b, &s.app);
    let incoming_url = app.rest("/omega/twilio/voice/incoming");

    // The assignee (Ben) alone first; a retry of the same call answers the same and stores once.
    let first = twiml(app, &incoming_url, &incoming("CA100", CARLA)).await;
    let again = twiml(app, &incoming_url, &incoming("CA100", CARLA)).await;
    assert_eq!(format!("{first:?}"), format!("{again:?}"));
    assert_eq!(first.verbs(), ["Dial"]);
    let dial = first.verb("Dial");
    assert_eq!(dialed(dial), [identity(b, s.ben)]);
    assert_eq!(dial.attr("timeout"), "15");
    let client = &dial.children[0];
    assert_eq!(client.attr("statusCallback"), app.rest("/omega/twilio/voice/status"));
    assert_eq!(client.attr("statusCallbackEvent"), "answered");
    let messages = messages_of(&s, s.carla).await;
    assert_eq!(messages.len(), 1, "one call, however often Twilio asks: {messages:?}");
    let call = &messages[0];
    assert_eq!((call["channel"].as_str(), call["direction"].as_str()), (Some("VOICE"), Some("INBOUND")));
    assert_eq!(call["content"], "Incoming call");
    assert_eq!(call["provider_message_id"], "CA100");
    assert_eq!(call["status"], "RECEIVED");
    let summary = summary_of(&s, s.carla).await;
    assert_eq!(summary["conversation_id"], s.conversation, "the client's one conversation");
    assert_eq!(summary["status"], "OPEN", "the call reopened the resolved conversation");
    assert_eq!(summary["unread_count"], 1);

    // No answer: the other active staff (not Ben again, not inactive Cleo) ring together.
    let staff = twiml(app, dial.attr("action"), &dial_status("CA100", "no-answer", "0")).await;
    let staff_dial = staff.verb("Dial");
    assert_eq!(dialed(staff_dial), [identity(b, s.ana)]);
    assert_eq!(staff_dial.attr("timeout"), "20");

    // No answer again: voicemail, recorded with a status callback (no transcription: off).
    let voicemail = twiml(app, staff_dial.attr("action"), &dial_status("CA100", "no-answer", "0")).await;
    assert_eq!(voicemail.verbs(), ["Say", "Record", "Hangup"]);
    let record = voicemail.verb("Record");
    assert_eq!(record.attr("recordingStatusCallback"), app.rest("/omega/twilio/voice/recording"));
    assert_eq!(record.attr("recordingStatusCallbackEvent"), "completed");
    assert_eq!(record.attr("maxLength"), "120");
    assert!(!record.has_attr("transcribe"), "transcription is off unless the business turns it on");
    let call = &messages_of(&s, s.carla).await[0];
    assert_eq!(call["content"], "Missed call");
    assert_eq!(call["error_code"], "no-answer");

    // The recording arrives (twice: a Twilio retry): one voicemail with its URL and length.
    let url = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE100";
    for _ in 0..2 {
        let resp = post_signed(
            app,
            record.attr("recordingStatusCallback"),
            &recording("CA100", "RE100", url, "17"),
            FakeTwilio::AUTH_TOKEN,
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    let messages = messages_of(&s, s.carla).await;
    assert_eq!(messages.len(), 2, "the call and one voicemail: {messages:?}");
    let voicemail_message = &messages[1];
    assert_eq!(voicemail_message["channel"], "VOICE");
    assert_eq!(voicemail_message["direction"], "INBOUND");
    assert_eq!(voicemail_message["content"], "Voicemail");
    assert_eq!(voicemail_message["media_urls"], json!([url]));
    assert_eq!(voicemail_message["duration_seconds"], 17);
    assert_eq!(voicemail_message["provider_message_id"], "RE100");
    assert_eq!(summary_of(&s, s.carla).await["unread_count"], 2);

    // The caller is done: `<Record action>` hangs up. A transcription nobody asked for is not kept.
    let done = twiml(app, record.attr("action"), &dial_status("CA100", "completed", "0")[..3]).await;
    assert_eq!(done.verbs(), ["Hangup"]);
    let transcription = [
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("CallSid", "CA100"),
        ("RecordingSid", "RE100"),
        ("RecordingUrl", url),
        ("TranscriptionSid", "TR100"),
        ("TranscriptionStatus", "completed"),
        ("TranscriptionText", "Please call me back"),
    ];
    let resp =
        post_signed(app, &app.rest("/omega/twilio/voice/transcription"), &transcription, FakeTwilio::AUTH_TOKEN).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(messages_of(&s, s.carla).await[1]["content"], "Voicemail");

    // The number's own status callback after the call changes nothing (missed stays missed).
    let ended = [
        ("CallSid", "CA100"),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("CallStatus", "completed"),
        ("CallDuration", "40"),
    ];
    let resp = post_signed(app, &app.rest("/omega/twilio/voice/status"), &ended, FakeTwilio::AUTH_TOKEN).await;
    assert_eq!(resp.status(), 200);
    let call = &messages_of(&s, s.carla).await[0];
    assert_eq!(call["error_code"], "no-answer");
    assert!(call["duration_seconds"].is_null(), "{call}");

    // The event log: two messages received, the call's outcome once.
    assert_eq!(events(&s, "message.received").await.len(), 2);
    let updated = events(&s, "message.updated").await;
    assert_eq!(updated.len(), 1, "{updated:?}");
    assert_eq!(updated[0]["call"], "missed");
    assert_eq!(updated[0]["message_id"], call["id"]);
}

async fn an_unknown_caller_becomes_a_client_and_answers_name_who_picked_up(db: Db) {
    let s = setup(db).await;
    let (b, app) = (&s.b, &s.app);
    let incoming_url = app.rest("/omega/twilio/voice/incoming");
    // An unknown number: a new client, no assignee, so every active staff member rings.
    let answer = twiml(app, &incoming_url, &incoming("CA200", "(415) 555-0777")).await;
    let dial = answer.verb("Dial");
    assert_eq!(dialed(dial), [identity(b, s.ana), identity(b, s.ben)]);
    assert!(dial.attr("action").contains("stage=staff"), "{dial:?}");
    let clients =
        json_of(app.get(&format!("/omega/businesses/{}/clients?query=5550777", b.id), &b.key).await, 200).await;
    let stranger = clients["clients"][0]["id"].as_u64().expect("a client for the unknown number");
    assert_eq!(clients["clients"][0]["phone"], "+14155550777");
    assert_eq!(summary_of(&s, stranger).await["unread_count"], 1);

    // Ana's browser answers (its leg's status callback names her), then the call ends.
    let ana = format!("client:{}", identity(b, s.ana));
    let leg = [
        ("CallSid", "CA201"),
        ("ParentCallSid", "CA200"),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("From", "+14155550777"),
        ("To", ana.as_str()),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-dial"),
        ("SequenceNumber", "0"),
    ];
    for _ in 0..2 {
        let resp = post_signed(app, dial.children[0].attr("statusCallback"), &leg, FakeTwilio::AUTH_TOKEN).await;
        assert_eq!(resp.status(), 200);
    }
    for _ in 0..2 {
        let end = twiml(app, dial.attr("action"), &dial_status("CA200", "completed", "75")).await;
        assert_eq!(end.verbs(), ["Hangup"]);
    }
    let call = &messages_of(&s, stranger).await[0];
    assert_eq!(call["content"], "Call answered by Ana");
    assert_eq!(call["answered_by_staff_id"], s.ana);
    assert_eq!(call["duration_seconds"], 75);
    assert_eq!(call["error_code"], "");
    let updated = events(&s, "message.updated").await;
    assert_eq!(updated.len(), 2, "her answer, then the talk time; retries add nothing: {updated:?}");
    assert_eq!(updated[1]["answered_by"], s.ana);

    // Carla's call answered by her assignee on the first ring.
    let first = twiml(app, &incoming_url, &incoming("CA300", CARLA)).await;
    let end = twiml(app, first.verb("Dial").attr("action"), &dial_status("CA300", "completed", "30")).await;
    assert_eq!(end.verbs(), ["Hangup"]);
    let call = &messages_of(&s, s.carla).await[0];
    assert_eq!(call["content"], "Call answered by Ben");
    assert_eq!(call["answered_by_staff_id"], s.ben);

    // Carla hangs up while Ben's browser rings: the number's status callback says the call
    // ended with no outcome, so it is missed. A later report that it was answered wins.
    let first = twiml(app, &incoming_url, &incoming("CA310", CARLA)).await;
    let ended = [
        ("CallSid", "CA310"),
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("CallStatus", "completed"),
        ("CallDuration", "6"),
    ];
    let resp = post_signed(app, &app.rest("/omega/twilio/voice/status"), &ended, FakeTwilio::AUTH_TOKEN).await;
    assert_eq!(resp.status(), 200);
    let call = &messages_of(&s, s.carla).await[1];
    assert_eq!((call["content"].as_str(), call["error_code"].as_str()), (Some("Missed call"), Some("caller-hung-up")));
    twiml(app, first.verb("Dial").attr("action"), &dial_status("CA310", "completed", "12")).await;
    let call = &messages_of(&s, s.carla).await[1];
    assert_eq!((call["content"].as_str(), call["error_code"].as_str()), (Some("Call answered by Ben"), Some("")));
    assert_eq!(call["duration_seconds"], 12);
}

async fn voicemail_is_transcribed_when_the_business_turns_it_on(db: Db) {
    let s = setup(db).await;
    let (b, app) = (&s.b, &s.app);
    let settings = json_of(put(app, b, "voice", json!({ "transcribe_voicemail": true })).await, 200).await;
    assert_eq!(settings["settings"]["transcribe_voicemail"], true);
    let settings = json_of(app.get(&format!("/omega/businesses/{}/providers", b.id), &b.key).await, 200).await;
    assert_eq!(settings["transcribe_voicemail"], true);
    // Nobody active at all: straight to voicemail, which asks for a transcription.
    for staff in [s.ana, s.ben] {
        let body = json!({ "name": if staff == s.ana { "Ana" } else { "Ben" }, "email": format!("{}@lotus.example", if staff == s.ana { "ana" } else { "ben" }), "active": false });
        json_of(app.post(&format!("/omega/businesses/{}/staffs", b.id), &b.key, Some(body)).await, 200).await;
    }
    let answer = twiml(app, &app.rest("/omega/twilio/voice/incoming"), &incoming("CA400", CARLA)).await;
    assert_eq!(answer.verbs(), ["Say", "Record", "Hangup"]);
    let record = answer.verb("Record");
    assert_eq!(record.attr("transcribe"), "true");
    assert_eq!(record.attr("transcribeCallback"), app.rest("/omega/twilio/voice/transcription"));
    assert_eq!(messages_of(&s, s.carla).await[0]["content"], "Missed call");

    // The transcription may come first; then the recording; each twice.
    let url = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE400";
    let text = "Hi, it's Carla & I'd like to move my 6pm to Friday";
    let transcription = [
        ("AccountSid", FakeTwilio::ACCOUNT_SID),
        ("CallSid", "CA400"),
        ("RecordingSid", "RE400"),
        ("RecordingUrl", url),
        ("TranscriptionSid", "TR400"),
        ("TranscriptionStatus", "completed"),
        ("TranscriptionText", text),
        ("TranscriptionType", "fast"),
        (
            "TranscriptionUrl",
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Transcriptions/TR400",
        ),
        ("url", record.attr("transcribeCallback")),
    ];
    for _ in 0..2 {
        let resp = post_signed(app, record.attr("transcribeCallback"), &transcription, FakeTwilio::AUTH_TOKEN).await;
        assert_eq!(resp.status(), 200);
        let resp = post_signed(
            app,
            record.attr("recordingStatusCallback"),
            &recording("CA400", "RE400", url, "9"),
            FakeTwilio::AUTH_TOKEN,
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    let messages = messages_of(&s, s.carla).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let voicemail = &messages[1];
    assert_eq!(voicemail["content"], format!("Voicemail: {text}"));
    assert_eq!(voicemail["duration_seconds"], 9);
    assert_eq!(voicemail["media_urls"], json!([url]));
    // Found by searching its words.
    let path = format!(
        "/omega/businesses/{}/clients/{}/conversations/{}/messages/search?q=Friday",
        b.id, s.carla, s.conversation
    );
    let found = json_of(app.get(&path, &b.key).await, 200).await;
    assert_eq!(found["total_size"], 1, "{found}");
    // The call missed (no staff), then the transcription, once.
    let updated = events(&s, "message.updated").await;
    assert_eq!(updated.len(), 2, "{updated:?}");
    assert_eq!(updated[1]["transcribed"], true);
}

async fn forged_or_foreign_call_webhooks_are_refused_and_write_nothing(db: Db) {
    let s = setup(db).await;
    let (b, app) = (&s.b, &s.app);
    let c = app
        .onboard(json!({
            "name": "Cedar", "time_zone": "America/New_York",
            "locations": [{ "name": "Main", "phone_numbers": ["+14155550200"] }],
            "staff": [{ "name": "Dee", "email": "dee@cedar.example" }]
        }))
        .await;
    assert_eq!(put(app, &c, "twilio", json!({ "account_sid": C_SID, "auth_token": C_TOKEN })).await.status(), 200);
    let incoming_url = app.rest("/omega/twilio/voice/incoming");
    let stranger = "+14155550888";
    // A signature over other parameters, another business's account (naming b's or its own),
    // the platform's account, and a number no business has: all 403.
    let mut tampered = incoming("CA500", stranger);
    let signature = twilio_signature(FakeTwilio::AUTH_TOKEN, &incoming_url, &tampered);
    tampered[2] = ("From", CARLA);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&tampered).finish();
    let resp = app
        .http
        .post(&incoming_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let unsigned = app
        .http
        .post(&incoming_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_urlencoded::Serializer::new(String::new()).extend_pairs(incoming("CA501", stranger)).finish())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    assert_eq!(post_signed(app, &incoming_url, &incoming("CA502", stranger), C_TOKEN).await.status(), 403);
    let mut own_account = incoming("CA503", stranger);
    own_account[1] = ("AccountSid", C_SID);
    assert_eq!(post_signed(app, &incoming_url, &own_account, C_TOKEN).await.status(), 403);
    let mut platform = incoming("CA504", stranger);
    platform[1] = ("AccountSid", PLATFORM_SID);
    assert_eq!(post_signed(app, &incoming_url, &platform, PLATFORM_TOKEN).await.status(), 403);
    let mut nobodys = incoming("CA505", stranger);
    nobodys[3] = ("To", "+14155550999");
    assert_eq!(post_signed(app, &incoming_url, &nobodys, FakeTwilio::AUTH_TOKEN).await.status(), 403);
    let clients =
        json_of(app.get(&format!("/omega/businesses/{}/clients?query=5550888", b.id), &b.key).await, 200).await;
    assert_eq!(clients["total_size"], 0, "no forged call made a client: {clients}");
    assert!(messages_of(&s, s.carla).await.is_empty());

    // A real call; then its callbacks forged or signed by c: refused, nothing changed or stored.
    let answer = twiml(app, &incoming_url, &incoming("CA510", CARLA)).await;
    let action = answer.verb("Dial").attr("action").to_owned();
    let url = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE510";
    let mut foreign_dial = dial_status("CA510", "completed", "60");
    foreign_dial[1] = ("AccountSid", C_SID);
    let mut foreign_recording = recording("CA510", "RE510", url, "5");
    foreign_recording[0] = ("AccountSid", C_SID);
    let foreign_leg = [
        ("CallSid", "CA511"),
        ("ParentCallSid", "CA510"),
        ("AccountSid", C_SID),
        ("To", "client:staff_1_1"),
        ("CallStatus", "in-progress"),
    ];
    for (url, params) in [
        (action.as_str(), &foreign_dial[..]),
        (&app.rest("/omega/twilio/voice/recording")[..], &foreign_recording[..]),
        (&app.rest("/omega/twilio/voice/status")[..], &foreign_leg[..]),
    ] {
        assert_eq!(post_signed(app, url, params, C_TOKEN).await.status(), 403, "{url}");
    }
    // The right account, but a stage the signature did not cover.
    let forged_stage = action.replace("stage=assignee", "stage=voicemail");
    let signature = twilio_signature(FakeTwilio::AUTH_TOKEN, &action, &dial_status("CA510", "completed", "60"));
    let resp = app
        .http
        .post(&forged_stage)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(dial_status("CA510", "completed", "60"))
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let messages = messages_of(&s, s.carla).await;
    assert_eq!(messages.len(), 1, "no voicemail was stored: {messages:?}");
    assert_eq!(messages[0]["content"], "Incoming call", "the call's record is unchanged");
    assert!(messages[0]["answered_by_staff_id"].is_null());
    assert!(events(&s, "message.updated").await.is_empty());
}
