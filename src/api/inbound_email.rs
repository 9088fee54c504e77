//! `omega.v1.InboundEmailService`: emails posted by SendGrid Inbound Parse or a mail relay
//! (authenticated by the business's token in the path, not an API key), and the business-scoped
//! call that issues that token.

use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    auth::caller,
    convert::{required_id, timestamp, wire_id},
};
use crate::{
    domain::{Omega, inbound_email::InboundOutcome},
    proto::{
        google::api::HttpBody,
        omega::v1::{
            ReceiveRawEmailRequest, ReceiveSendGridInboundParseRequest, RotateInboundEmailTokenRequest,
            RotateInboundEmailTokenResponse, inbound_email_service_server::InboundEmailService,
        },
    },
};

#[derive(Clone)]
pub struct InboundEmailApi {
    omega: Omega,
}

impl InboundEmailApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }

    /// Omega's public base (`OMEGA_PUBLIC_URL`, else the scheme and host Envoy forwards; empty
    /// when called directly, so the URLs are paths).
    fn public_base(&self, metadata: &MetadataMap) -> String {
        if let Some(base) = &self.omega.webhooks.public_url {
            return base.trim_end_matches('/').to_owned();
        }
        let header = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let host = header("x-forwarded-host");
        if host.is_empty() {
            return String::new();
        }
        let scheme = header("x-forwarded-proto");
        format!("{}://{host}", if scheme.is_empty() { "http" } else { scheme.as_str() })
    }
}

/// The JSON answer a provider gets: what was stored (a repeat says `"duplicate": true`).
fn answer(outcome: InboundOutcome) -> Result<Response<HttpBody>, Status> {
    let m = &outcome.message;
    let body = serde_json::json!({
        "message_id": m.public_id,
        "conversation_id": wire_id(m.conversation_id)?,
        "client_id": wire_id(m.client_id)?,
        "duplicate": !outcome.created,
        "skipped_attachments": outcome.skipped,
    });
    Ok(Response::new(HttpBody {
        content_type: "application/json".into(),
        data: body.to_string().into_bytes(),
        extensions: Vec::new(),
    }))
}

#[tonic::async_trait]
impl InboundEmailService for InboundEmailApi {
    async fn receive_send_grid_inbound_parse(
        &self,
        request: Request<ReceiveSendGridInboundParseRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = r.body.unwrap_or_default();
        answer(self.omega.receive_sendgrid_inbound(&r.token, &body.content_type, body.data).await?)
    }

    async fn receive_raw_email(&self, request: Request<ReceiveRawEmailRequest>) -> Result<Response<HttpBody>, Status> {
        let r = request.into_inner();
        let body = r.body.unwrap_or_default();
        answer(self.omega.receive_raw_email(&r.token, &body.content_type, body.data).await?)
    }

    async fn rotate_inbound_email_token(
        &self,
        request: Request<RotateInboundEmailTokenRequest>,
    ) -> Result<Response<RotateInboundEmailTokenResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let base = self.public_base(request.metadata());
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let issued = self.omega.rotate_inbound_email_token(&caller, business_id).await?;
        let url = |kind: &str| format!("{base}/omega/email/inbound/{}/{kind}", issued.token);
        Ok(Response::new(RotateInboundEmailTokenResponse {
            business_id: r.business_id,
            sendgrid_url: url("sendgrid"),
            raw_url: url("raw"),
            token: issued.token,
            created_at: Some(timestamp(issued.created_at)),
        }))
    }
}
