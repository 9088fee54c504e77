//! `omega.v1.WebhookService` and `omega.v1.VoiceService`: provider webhooks (authenticated by
//! the provider's signature, not an API key) and browser voice tokens.

use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    auth::caller,
    convert::{required_id, timestamp},
};
use crate::{
    domain::{Omega, webhooks::WebhookRequest},
    proto::{
        google::api::HttpBody,
        omega::v1::{
            GetVoiceTokenRequest, GetVoiceTokenResponse, HandleTwimlCallRequest, ReceiveEmailEventsRequest,
            ReceiveTwilioDialStatusRequest, ReceiveTwilioRecordingRequest, ReceiveTwilioSmsRequest,
            ReceiveTwilioSmsStatusRequest, ReceiveTwilioTranscriptionRequest, ReceiveTwilioVoiceCallRequest,
            ReceiveTwilioVoiceStatusRequest, voice_service_server::VoiceService,
            webhook_service_server::WebhookService,
        },
    },
};

#[derive(Clone)]
pub struct WebhookApi {
    omega: Omega,
}

impl WebhookApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }

    /// The webhook as the provider sent it: the public URL it called (Omega's configured base,
    /// or the scheme and host Envoy forwards, plus the public path Envoy's Lua filter kept), the
    /// raw body and the signature headers.
    fn webhook(
        &self,
        metadata: &MetadataMap,
        body: Option<HttpBody>,
        signature: &str,
        timestamp: &str,
    ) -> WebhookRequest {
        let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let path = header("x-omega-public-path");
        let url = match &self.omega.webhooks.public_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => {
                let scheme = header("x-forwarded-proto");
                let scheme = if scheme.is_empty() { "http".to_owned() } else { scheme };
                format!("{scheme}://{}{path}", header("x-forwarded-host"))
            }
        };
        let body = body.unwrap_or_default();
        WebhookRequest {
            url,
            content_type: body.content_type,
            body: body.data,
            signature: header(signature),
            timestamp: header(timestamp),
        }
    }
}

fn twiml(xml: String) -> Response<HttpBody> {
    Response::new(HttpBody { content_type: "text/xml".into(), data: xml.into_bytes(), extensions: Vec::new() })
}

const TWILIO_SIGNATURE: &str = "x-twilio-signature";

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn receive_twilio_sms(
        &self,
        request: Request<ReceiveTwilioSmsRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        Ok(twiml(self.omega.receive_twilio_sms(webhook).await?))
    }

    async fn receive_twilio_sms_status(
        &self,
        request: Request<ReceiveTwilioSmsStatusRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        self.omega.receive_twilio_sms_status(webhook).await?;
        Ok(twiml(crate::domain::webhooks::empty_twiml()))
    }

    async fn receive_twilio_voice_status(
        &self,
        request: Request<ReceiveTwilioVoiceStatusRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        self.omega.receive_twilio_voice_status(webhook).await?;
        Ok(twiml(crate::domain::webhooks::empty_twiml()))
    }

    async fn handle_twiml_call(&self, request: Request<HandleTwimlCallRequest>) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        Ok(twiml(self.omega.twiml_for_call(webhook).await?))
    }

    async fn receive_email_events(
        &self,
        request: Request<ReceiveEmailEventsRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(
            request.metadata(),
            request.get_ref().body.clone(),
            "x-twilio-email-event-webhook-signature",
            "x-twilio-email-event-webhook-timestamp",
        );
        let applied = self.omega.receive_email_events(&request.get_ref().provider, webhook).await?;
        Ok(Response::new(HttpBody {
            content_type: "application/json".into(),
            data: serde_json::json!({ "applied": applied }).to_string().into_bytes(),
            extensions: Vec::new(),
        }))
    }

    async fn receive_twilio_voice_call(
        &self,
        request: Request<ReceiveTwilioVoiceCallRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        Ok(twiml(self.omega.receive_twilio_call(webhook).await?))
    }

    async fn receive_twilio_dial_status(
        &self,
        request: Request<ReceiveTwilioDialStatusRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        Ok(twiml(self.omega.receive_twilio_dial_status(webhook).await?))
    }

    async fn receive_twilio_recording(
        &self,
        request: Request<ReceiveTwilioRecordingRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        self.omega.receive_twilio_recording(webhook).await?;
        Ok(twiml(crate::domain::webhooks::empty_twiml()))
    }

    async fn receive_twilio_transcription(
        &self,
        request: Request<ReceiveTwilioTranscriptionRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let webhook = self.webhook(request.metadata(), request.get_ref().body.clone(), TWILIO_SIGNATURE, "");
        self.omega.receive_twilio_transcription(webhook).await?;
        Ok(twiml(crate::domain::webhooks::empty_twiml()))
    }
}

#[tonic::async_trait]
impl VoiceService for WebhookApi {
    async fn get_voice_token(
        &self,
        request: Request<GetVoiceTokenRequest>,
    ) -> Result<Response<GetVoiceTokenResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let staff_id = (r.staff_id != 0).then(|| required_id("staff_id", r.staff_id)).transpose()?;
        let (token, identity, expires) = self.omega.voice_token(&caller, business_id, staff_id, r.ttl_seconds).await?;
        Ok(Response::new(GetVoiceTokenResponse { token, identity, expires_at: Some(timestamp(expires)) }))
    }
}
