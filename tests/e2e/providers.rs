//! The outbound provider clients against loopback fakes of Twilio, SendGrid and an SMTP server:
//! the documented request arrives exactly, success is parsed, and every failure is classified
//! by whether resending is safe.

use crate::common::fakes;

use std::time::{Duration, Instant};

use fakes::{Behavior, FakeSendGrid, FakeTwilio, SmtpBehavior, SmtpSink};
use omega::providers::{
    Accepted, ProviderError,
    email::{
        EmailAttachment, EmailRequest, EmailSender, SendGridClient, SendGridConfig, SmtpClient, SmtpConfig, SmtpTls,
    },
    twilio::{SmsRequest, TwilioClient, TwilioConfig},
};

/// Generous: the fakes answer at once; only the hang tests wait, with their own short timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A client timeout short enough for the hang tests.
const SHORT_TIMEOUT: Duration = Duration::from_millis(400);

/// A loopback address with nothing listening: connecting is refused.
async fn refused_addr() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

#[track_caller]
fn expect_retryable(result: Result<Accepted, ProviderError>) -> Option<Duration> {
    match result {
        Err(ProviderError::Retryable { retry_after, .. }) => retry_after,
        other => panic!("expected Retryable, got {other:?}"),
    }
}

#[track_caller]
fn expect_rejected(result: Result<Accepted, ProviderError>) -> (String, String) {
    match result {
        Err(ProviderError::Rejected { code, message }) => (code, message),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[track_caller]
fn expect_ambiguous(result: Result<Accepted, ProviderError>) -> String {
    match result {
        Err(ProviderError::Ambiguous { reason }) => reason,
        other => panic!("expected Ambiguous, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Twilio

fn sms() -> SmsRequest {
    SmsRequest {
        to: "+14155550199".into(),
        from: Some("+14155550100".into()),
        messaging_service_sid: None,
        body: "Your 10:00 class is confirmed — see you soon!".into(),
        media_urls: vec!["https://cdn.example/a.png".into(), "https://cdn.example/b.jpg?x=1&y=2".into()],
        status_callback: Some("https://omega.example/webhooks/twilio/status?location=7".into()),
    }
}

fn twilio_client(fake: &FakeTwilio) -> TwilioClient {
    TwilioClient::new(fake.config(TIMEOUT)).unwrap()
}

#[tokio::test]
async fn twilio_send_posts_the_documented_form_and_parses_the_created_message() {
    let fake = FakeTwilio::start().await;
    let accepted = twilio_client(&fake).send_sms(&sms()).await.unwrap();

    let created = fake.messages();
    assert_eq!(created.len(), 1);
    assert_eq!(accepted.provider_message_id, created[0].sid);
    assert!(accepted.provider_message_id.starts_with("MM"), "media makes an MMS: {}", accepted.provider_message_id);
    assert_eq!(accepted.status, "queued");

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{}/Messages.json", FakeTwilio::ACCOUNT_SID));
    assert_eq!(request.basic_auth_user.as_deref(), Some(FakeTwilio::ACCOUNT_SID));
    assert!(request.authenticated);
    assert_eq!(request.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
    let expected: Vec<(String, String)> = [
        ("To", "+14155550199"),
        ("From", "+14155550100"),
        ("Body", "Your 10:00 class is confirmed — see you soon!"),
        ("MediaUrl", "https://cdn.example/a.png"),
        ("MediaUrl", "https://cdn.example/b.jpg?x=1&y=2"),
        ("StatusCallback", "https://omega.example/webhooks/twilio/status?location=7"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    assert_eq!(request.form, expected);
}

#[tokio::test]
async fn twilio_send_through_a_messaging_service_leaves_from_out() {
    let fake = FakeTwilio::start().await;
    let request = SmsRequest {
        from: None,
        messaging_service_sid: Some("MG0123456789abcdef0123456789abcdef".into()),
        media_urls: Vec::new(),
        status_callback: None,
        ..sms()
    };
    let accepted = twilio_client(&fake).send_sms(&request).await.unwrap();
    assert!(accepted.provider_message_id.starts_with("SM"));
    assert_eq!(accepted.status, "accepted", "a messaging service send starts accepted");
    let form = &fake.requests()[0].form;
    let names: Vec<&str> = form.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["To", "MessagingServiceSid", "Body"]);
}

#[tokio::test]
async fn twilio_fetch_message_reads_the_current_status() {
    let fake = FakeTwilio::start().await;
    let client = twilio_client(&fake);
    let sid = client.send_sms(&sms()).await.unwrap().provider_message_id;
    fake.set_status(&sid, "delivered");

    let fetched = client.fetch_message(&sid).await.unwrap();
    assert_eq!((fetched.provider_message_id.as_str(), fetched.status.as_str()), (sid.as_str(), "delivered"));
    let request = fake.requests().pop().unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", FakeTwilio::ACCOUNT_SID));
    assert!(request.authenticated);

    let (code, _) = expect_rejected(client.fetch_message("SM00000000000000000000000000000000").await);
    assert_eq!(code, "20404");
}

#[tokio::test]
async fn twilio_429_is_retryable_after_what_retry_after_says() {
    let fake = FakeTwilio::start().await;
    let client = twilio_client(&fake);
    fake.respond_next(Behavior::TooManyRequests);
    let retry_after = expect_retryable(client.send_sms(&sms()).await);
    assert_eq!(retry_after, Some(Duration::from_secs(1)));
    assert!(fake.messages().is_empty());
    // The behaviour was for one request only.
    client.send_sms(&sms()).await.unwrap();
    assert_eq!(fake.messages().len(), 1);
}

#[tokio::test]
async fn twilio_400_is_rejected_with_twilios_code() {
    let fake = FakeTwilio::start().await;
    let client = twilio_client(&fake);
    fake.respond_next(Behavior::Reject { code: 21610, status: 400 });
    let (code, message) = expect_rejected(client.send_sms(&sms()).await);
    assert_eq!(code, "21610");
    assert!(message.contains("21610"), "{message}");

    // The fake's own checks, as Twilio makes them.
    let (code, message) = expect_rejected(client.send_sms(&SmsRequest { to: "555-0199".into(), ..sms() }).await);
    assert_eq!(code, "21211", "{message}");
    let (code, _) = expect_rejected(client.send_sms(&SmsRequest { to: String::new(), ..sms() }).await);
    assert_eq!(code, "21604");
    let no_sender = SmsRequest { from: None, messaging_service_sid: None, ..sms() };
    assert_eq!(expect_rejected(client.send_sms(&no_sender).await).0, "21603");
    let no_content = SmsRequest { body: String::new(), media_urls: Vec::new(), ..sms() };
    assert_eq!(expect_rejected(client.send_sms(&no_content).await).0, "21602");
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn twilio_wrong_credentials_are_rejected_with_20003() {
    let fake = FakeTwilio::start().await;
    let client =
        TwilioClient::new(TwilioConfig { auth_token: "not-the-token".into(), ..fake.config(TIMEOUT) }).unwrap();
    let (code, _) = expect_rejected(client.send_sms(&sms()).await);
    assert_eq!(code, "20003");
    let request = &fake.requests()[0];
    assert!(!request.authenticated);
    assert_eq!(request.basic_auth_user.as_deref(), Some(FakeTwilio::ACCOUNT_SID));
    assert!(fake.messages().is_empty());
}

#[tokio::test]
async fn twilio_500_is_ambiguous() {
    let fake = FakeTwilio::start().await;
    fake.respond_next(Behavior::ServerError);
    let reason = expect_ambiguous(twilio_client(&fake).send_sms(&sms()).await);
    assert!(reason.contains("500"), "{reason}");
}

#[tokio::test]
async fn twilio_hanging_after_the_request_is_ambiguous() {
    let fake = FakeTwilio::start().await;
    let client = TwilioClient::new(fake.config(SHORT_TIMEOUT)).unwrap();
    fake.respond_next(Behavior::Hang);
    let started = Instant::now();
    expect_ambiguous(client.send_sms(&sms()).await);
    assert!(started.elapsed() < Duration::from_secs(5), "the timeout bounds the call: {:?}", started.elapsed());
    assert_eq!(fake.requests().len(), 1, "the request did arrive");
}

#[tokio::test]
async fn twilio_connection_dropped_without_an_answer_is_ambiguous() {
    let fake = FakeTwilio::start().await;
    fake.respond_next(Behavior::Drop);
    expect_ambiguous(twilio_client(&fake).send_sms(&sms()).await);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn twilio_connection_refused_is_retryable() {
    let config = TwilioConfig {
        base_url: format!("http://{}", refused_addr().await),
        account_sid: FakeTwilio::ACCOUNT_SID.into(),
        auth_token: FakeTwilio::AUTH_TOKEN.into(),
        timeout: TIMEOUT,
    };
    assert_eq!(expect_retryable(TwilioClient::new(config).unwrap().send_sms(&sms()).await), None);
}

#[tokio::test]
async fn twilio_tls_handshake_failure_is_retryable() {
    // A server that closes every connection at once: the TLS handshake (rustls with ring) fails
    // before any byte of the request was written.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let config = TwilioConfig {
        base_url: format!("https://{addr}"),
        account_sid: FakeTwilio::ACCOUNT_SID.into(),
        auth_token: FakeTwilio::AUTH_TOKEN.into(),
        timeout: TIMEOUT,
    };
    expect_retryable(TwilioClient::new(config).unwrap().send_sms(&sms()).await);
    closer.abort();
}

#[tokio::test]
async fn twilio_debug_output_never_shows_the_auth_token() {
    let fake = FakeTwilio::start().await;
    let config = fake.config(TIMEOUT);
    let client = TwilioClient::new(config.clone()).unwrap();
    for text in [format!("{config:?}"), format!("{client:?}"), format!("{client:#?}")] {
        assert!(!text.contains(FakeTwilio::AUTH_TOKEN), "{text}");
        assert!(text.contains(FakeTwilio::ACCOUNT_SID), "{text}");
    }
    // Nor do errors.
    fake.respond_next(Behavior::ServerError);
    let error = client.send_sms(&sms()).await.unwrap_err();
    assert!(!format!("{error} {error:?}").contains(FakeTwilio::AUTH_TOKEN));
}

#[test]
fn twilio_client_refuses_a_bad_configuration() {
    let config = TwilioConfig {
        base_url: "https://api.twilio.com".into(),
        account_sid: "AC1".into(),
        auth_token: "token".into(),
        timeout: TIMEOUT,
    };
    assert!(TwilioClient::new(TwilioConfig { base_url: "api.twilio.com".into(), ..config.clone() }).is_err());
    assert!(TwilioClient::new(TwilioConfig { auth_token: String::new(), ..config.clone() }).is_err());
    assert!(TwilioClient::new(config).is_ok());
}

// ---------------------------------------------------------------------------------------------
// SendGrid

fn email() -> EmailRequest {
    EmailRequest {
        to: "carla@client.example".into(),
        from: "hi@lotus.example".into(),
        from_name: Some("Lotus Yoga".into()),
        subject: "Your booking".into(),
        text: "See you at 10:00.".into(),
        html: Some("<p>See you at <b>10:00</b>.</p>".into()),
        message_id: "0190f1d2-3c4b-7a5e-8f60-123456789abc".into(),
        reply_to: Some("reply+0190f1d2-3c4b-7a5e-8f60-123456789abc@in.lotus.example".into()),
        attachments: Vec::new(),
    }
}

fn sendgrid_client(fake: &FakeSendGrid) -> SendGridClient {
    SendGridClient::new(fake.config(TIMEOUT)).unwrap()
}

#[tokio::test]
async fn sendgrid_send_posts_the_documented_json_and_answers_the_message_id() {
    let fake = FakeSendGrid::start().await;
    let accepted = sendgrid_client(&fake).send_email(&email()).await.unwrap();

    let stored = fake.accepted();
    assert_eq!(stored.len(), 1);
    assert_eq!(accepted.provider_message_id, stored[0].x_message_id);
    assert_eq!(accepted.status, "accepted");

    let request = &fake.requests()[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v3/mail/send"));
    assert!(request.authenticated, "Authorization: Bearer <key>");
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        request.json.as_ref().unwrap(),
        &serde_json::json!({
            "personalizations": [{ "to": [{ "email": "carla@client.example" }] }],
            "from": { "email": "hi@lotus.example", "name": "Lotus Yoga" },
            "subject": "Your booking",
            "content": [
                { "type": "text/plain", "value": "See you at 10:00." },
                { "type": "text/html", "value": "<p>See you at <b>10:00</b>.</p>" },
            ],
            "custom_args": { "omega_message_id": "0190f1d2-3c4b-7a5e-8f60-123456789abc" },
            "headers": { "Message-ID": "<0190f1d2-3c4b-7a5e-8f60-123456789abc@omega>" },
            "reply_to": { "email": "reply+0190f1d2-3c4b-7a5e-8f60-123456789abc@in.lotus.example" },
        })
    );
}

#[tokio::test]
async fn sendgrid_text_only_email_has_one_content_block_and_no_sender_name() {
    let fake = FakeSendGrid::start().await;
    let request = EmailRequest { from_name: None, html: None, ..email() };
    sendgrid_client(&fake).send_email(&request).await.unwrap();
    let json = fake.requests()[0].json.clone().unwrap();
    assert_eq!(json["from"], serde_json::json!({ "email": "hi@lotus.example" }));
    assert_eq!(json["content"], serde_json::json!([{ "type": "text/plain", "value": "See you at 10:00." }]));
}

#[tokio::test]
async fn sendgrid_400_is_rejected_with_the_status_as_code() {
    let fake = FakeSendGrid::start().await;
    let client = sendgrid_client(&fake);
    let (code, message) = expect_rejected(client.send_email(&EmailRequest { subject: String::new(), ..email() }).await);
    assert_eq!(code, "400");
    assert!(message.starts_with("subject: The subject is required"), "{message}");

    let no_content = EmailRequest { text: String::new(), html: None, ..email() };
    let (code, message) = expect_rejected(client.send_email(&no_content).await);
    assert_eq!(code, "400");
    assert!(message.starts_with("content: "), "{message}");

    let (_, message) = expect_rejected(client.send_email(&EmailRequest { to: "nobody".into(), ..email() }).await);
    assert!(message.contains("personalizations.0.to.0.email"), "{message}");

    fake.respond_next(Behavior::Reject { code: 0, status: 413 });
    assert_eq!(expect_rejected(client.send_email(&email()).await).0, "413");
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn sendgrid_wrong_key_is_rejected_401() {
    let fake = FakeSendGrid::start().await;
    let client = SendGridClient::new(SendGridConfig { api_key: "SG.wrong".into(), ..fake.config(TIMEOUT) }).unwrap();
    let (code, message) = expect_rejected(client.send_email(&email()).await);
    assert_eq!(code, "401");
    assert!(message.contains("authorization grant"), "{message}");
    assert!(!fake.requests()[0].authenticated);
}

#[tokio::test]
async fn sendgrid_429_is_retryable_when_the_rate_limit_resets() {
    let fake = FakeSendGrid::start().await;
    fake.respond_next(Behavior::TooManyRequests);
    let retry_after = expect_retryable(sendgrid_client(&fake).send_email(&email()).await);
    let retry_after = retry_after.expect("from X-RateLimit-Reset");
    assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
}

#[tokio::test]
async fn sendgrid_500_hang_and_drop_are_ambiguous() {
    let fake = FakeSendGrid::start().await;
    fake.respond_next(Behavior::ServerError);
    fake.respond_next(Behavior::Hang);
    fake.respond_next(Behavior::Drop);
    let client = SendGridClient::new(fake.config(SHORT_TIMEOUT)).unwrap();
    let reason = expect_ambiguous(client.send_email(&email()).await);
    assert!(reason.contains("500"), "{reason}");
    let started = Instant::now();
    expect_ambiguous(client.send_email(&email()).await);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    expect_ambiguous(client.send_email(&email()).await);
    assert_eq!(fake.requests().len(), 3);
    assert!(fake.accepted().is_empty());
}

#[tokio::test]
async fn sendgrid_connection_refused_is_retryable() {
    let config = SendGridConfig {
        base_url: format!("http://{}", refused_addr().await),
        api_key: "SG.key".into(),
        timeout: TIMEOUT,
    };
    assert_eq!(expect_retryable(SendGridClient::new(config).unwrap().send_email(&email()).await), None);
}

#[tokio::test]
async fn sendgrid_debug_output_never_shows_the_api_key() {
    let fake = FakeSendGrid::start().await;
    let config = fake.config(TIMEOUT);
    let client = SendGridClient::new(config.clone()).unwrap();
    let sender = EmailSender::SendGrid(SendGridClient::new(config.clone()).unwrap());
    for text in [format!("{config:?}"), format!("{client:?}"), format!("{sender:#?}")] {
        assert!(!text.contains(FakeSendGrid::API_KEY), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// SMTP

fn smtp_client(sink: &SmtpSink, timeout: Duration) -> SmtpClient {
    SmtpClient::new(sink.config(timeout)).unwrap()
}

#[tokio::test]
async fn smtp_send_delivers_the_message_with_omegas_message_id() {
    let sink = SmtpSink::start().await;
    let accepted = smtp_client(&sink, TIMEOUT).send_email(&email()).await.unwrap();
    assert_eq!(accepted.provider_message_id, "<0190f1d2-3c4b-7a5e-8f60-123456789abc@omega>");
    assert_eq!(accepted.status, "sent");

    let delivered = sink.delivered();
    assert_eq!(delivered.len(), 1);
    let message = &delivered[0];
    assert_eq!(message.mail_from, "hi@lotus.example");
    assert_eq!(message.rcpt_to, ["carla@client.example"]);
    assert!(!message.hello.is_empty());
    assert_eq!(message.header("Message-ID").as_deref(), Some("<0190f1d2-3c4b-7a5e-8f60-123456789abc@omega>"));
    assert_eq!(message.header("From").as_deref(), Some("\"Lotus Yoga\" <hi@lotus.example>"));
    assert_eq!(message.header("To").as_deref(), Some("carla@client.example"));
    assert_eq!(message.header("Subject").as_deref(), Some("Your booking"));
    assert_eq!(
        message.header("Reply-To").as_deref(),
        Some("reply+0190f1d2-3c4b-7a5e-8f60-123456789abc@in.lotus.example")
    );
    assert!(message.header("Date").is_some());
    assert!(message.header("Content-Type").unwrap().starts_with("multipart/alternative"), "{}", message.data);
    assert!(message.data.contains("See you at 10:00."), "{}", message.data);
    assert!(message.data.contains("<p>See you at <b>10:00</b>.</p>"), "{}", message.data);
}

fn with_attachment() -> EmailRequest {
    let pdf = EmailAttachment {
        file_name: "exención.pdf".into(),
        content_type: "application/pdf".into(),
        data: bytes::Bytes::from_static(b"%PDF-1.4 waiver"),
    };
    EmailRequest { attachments: vec![pdf], ..email() }
}

#[tokio::test]
async fn sendgrid_and_smtp_send_attachments() {
    let fake = FakeSendGrid::start().await;
    sendgrid_client(&fake).send_email(&with_attachment()).await.unwrap();
    let json = fake.requests()[0].json.clone().unwrap();
    assert_eq!(
        json["attachments"],
        serde_json::json!([{
            "content": "JVBERi0xLjQgd2FpdmVy", "type": "application/pdf", "filename": "exención.pdf", "disposition": "attachment"
        }])
    );

    // Over SMTP: multipart/mixed, read back by an independent MIME parser.
    let sink = SmtpSink::start().await;
    smtp_client(&sink, TIMEOUT).send_email(&with_attachment()).await.unwrap();
    let delivered = sink.delivered();
    assert!(delivered[0].header("Content-Type").unwrap().starts_with("multipart/mixed"), "{}", delivered[0].data);
    let parsed = mail_parser::MessageParser::default().parse(delivered[0].data.as_bytes()).unwrap();
    assert_eq!(parsed.body_text(0).as_deref(), Some("See you at 10:00."));
    assert_eq!(parsed.body_html(0).as_deref(), Some("<p>See you at <b>10:00</b>.</p>"));
    let attachment = parsed.attachment(0).expect("the attachment");
    use mail_parser::MimeHeaders;
    assert_eq!(attachment.attachment_name(), Some("exención.pdf"));
    assert_eq!(attachment.contents(), b"%PDF-1.4 waiver");
}

#[tokio::test]
async fn smtp_authenticates_when_configured() {
    let sink = SmtpSink::start_with_auth("relay-user", "relay-secret-5d1f").await;
    smtp_client(&sink, TIMEOUT).send_email(&email()).await.unwrap();
    assert_eq!(sink.delivered()[0].authenticated_as.as_deref(), Some("relay-user"));

    let wrong = SmtpConfig { password: Some("wrong".into()), ..sink.config(TIMEOUT) };
    let (code, _) = expect_rejected(SmtpClient::new(wrong).unwrap().send_email(&email()).await);
    assert_eq!(code, "535");
    assert_eq!(sink.delivered().len(), 1);
}

#[tokio::test]
async fn smtp_550_is_rejected_and_451_is_retryable() {
    let sink = SmtpSink::start().await;
    let client = smtp_client(&sink, TIMEOUT);
    sink.respond_next(SmtpBehavior::ReplyAfterData(550));
    let (code, message) = expect_rejected(client.send_email(&email()).await);
    assert_eq!(code, "550", "{message}");
    sink.respond_next(SmtpBehavior::ReplyAfterData(451));
    assert_eq!(expect_retryable(client.send_email(&email()).await), None);
    sink.respond_next(SmtpBehavior::ReplyToRcpt(550));
    assert_eq!(expect_rejected(client.send_email(&email()).await).0, "550");
    sink.respond_next(SmtpBehavior::ReplyToRcpt(450));
    expect_retryable(client.send_email(&email()).await);

    assert_eq!(sink.messages().len(), 2, "two messages reached the end of their data");
    assert!(sink.delivered().is_empty());
    client.send_email(&email()).await.unwrap();
    assert_eq!(sink.delivered().len(), 1);
}

#[tokio::test]
async fn smtp_hang_or_drop_after_the_data_is_ambiguous() {
    let sink = SmtpSink::start().await;
    let client = smtp_client(&sink, SHORT_TIMEOUT);
    sink.respond_next(SmtpBehavior::HangAfterData);
    let started = Instant::now();
    expect_ambiguous(client.send_email(&email()).await);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    sink.respond_next(SmtpBehavior::DropAfterData);
    expect_ambiguous(client.send_email(&email()).await);
    assert_eq!(sink.messages().len(), 2, "both messages were fully sent");
}

#[tokio::test]
async fn smtp_failures_before_the_data_are_retryable() {
    let sink = SmtpSink::start().await;
    sink.respond_next(SmtpBehavior::DropBeforeGreeting);
    expect_retryable(smtp_client(&sink, TIMEOUT).send_email(&email()).await);
    assert_eq!(sink.connections(), 1);
    assert!(sink.messages().is_empty());

    let refused = refused_addr().await;
    let config = SmtpConfig {
        host: refused.ip().to_string(),
        port: refused.port(),
        tls: SmtpTls::None,
        username: None,
        password: None,
        timeout: TIMEOUT,
    };
    assert_eq!(expect_retryable(SmtpClient::new(config).unwrap().send_email(&email()).await), None);
}

#[tokio::test]
async fn smtp_tls_is_required_when_configured() {
    let sink = SmtpSink::start().await;
    // STARTTLS required, and the sink does not offer it: nothing is sent in plain text.
    let starttls = SmtpClient::new(SmtpConfig { tls: SmtpTls::StartTls, ..sink.config(TIMEOUT) }).unwrap();
    let reason = match starttls.send_email(&email()).await {
        Err(ProviderError::Retryable { reason, .. }) => reason,
        other => panic!("expected Retryable, got {other:?}"),
    };
    assert!(reason.contains("STARTTLS"), "{reason}");
    // Implicit TLS against a plain-text server: the handshake fails (rustls with ring).
    let implicit = SmtpClient::new(SmtpConfig { tls: SmtpTls::Tls, ..sink.config(TIMEOUT) }).unwrap();
    expect_retryable(implicit.send_email(&email()).await);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn smtp_invalid_addresses_are_rejected_without_connecting() {
    let sink = SmtpSink::start().await;
    let (code, message) =
        expect_rejected(smtp_client(&sink, TIMEOUT).send_email(&EmailRequest { to: "nobody".into(), ..email() }).await);
    assert_eq!(code, "invalid_message");
    assert!(message.contains("recipient"), "{message}");
    assert_eq!(sink.connections(), 0);
}

#[tokio::test]
async fn smtp_debug_output_never_shows_the_password() {
    let sink = SmtpSink::start_with_auth("relay-user", "relay-secret-5d1f").await;
    let config = sink.config(TIMEOUT);
    let client = SmtpClient::new(config.clone()).unwrap();
    let sender = EmailSender::Smtp(SmtpClient::new(config.clone()).unwrap());
    for text in [format!("{config:?}"), format!("{client:?}"), format!("{sender:#?}")] {
        assert!(!text.contains("relay-secret-5d1f"), "{text}");
        assert!(text.contains("relay-user"), "{text}");
    }
    assert!(SmtpClient::new(SmtpConfig { password: None, ..config }).is_err(), "a username needs a password");
}

#[tokio::test]
async fn email_sender_sends_through_the_configured_provider() {
    let sink = SmtpSink::start().await;
    let fake = FakeSendGrid::start().await;
    let smtp = EmailSender::Smtp(smtp_client(&sink, TIMEOUT));
    let sendgrid = EmailSender::SendGrid(sendgrid_client(&fake));
    assert_eq!(smtp.send_email(&email()).await.unwrap().status, "sent");
    assert_eq!(sendgrid.send_email(&email()).await.unwrap().status, "accepted");
    assert_eq!((sink.delivered().len(), fake.accepted().len()), (1, 1));
}
