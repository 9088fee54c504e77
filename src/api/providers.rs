//! `omega.v1.ProviderService`: credentials go in, never come out.

use tonic::{Request, Response, Status};

use super::{auth::caller, convert::required_id};
use crate::{
    domain::{Omega, providers::ProviderSettings},
    proto::omega::v1::{
        GetProviderSettingsRequest, GetProviderSettingsResponse, SetSendGridCredentialsRequest,
        SetSendGridCredentialsResponse, SetSmtpCredentialsRequest, SetSmtpCredentialsResponse,
        SetTwilioCredentialsRequest, SetTwilioCredentialsResponse, SetVoiceSettingsRequest, SetVoiceSettingsResponse,
        provider_service_server::ProviderService,
    },
};

pub struct ProviderApi {
    omega: Omega,
}

impl ProviderApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

fn encode(business_id: u32, s: ProviderSettings) -> GetProviderSettingsResponse {
    GetProviderSettingsResponse {
        business_id,
        twilio_configured: s.twilio_account_sid.is_some(),
        twilio_account_sid: s.twilio_account_sid.unwrap_or_default(),
        email_provider: s.email_provider.unwrap_or_default(),
        smtp_host: s.smtp_host.unwrap_or_default(),
        smtp_port: u32::from(s.smtp_port),
        transcribe_voicemail: s.transcribe_voicemail,
    }
}

#[tonic::async_trait]
impl ProviderService for ProviderApi {
    async fn set_twilio_credentials(
        &self,
        request: Request<SetTwilioCredentialsRequest>,
    ) -> Result<Response<SetTwilioCredentialsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let settings =
            self.omega.providers.set_twilio_credentials(&caller, business_id, &r.account_sid, &r.auth_token).await?;
        Ok(Response::new(SetTwilioCredentialsResponse { settings: Some(encode(r.business_id, settings)) }))
    }

    async fn set_send_grid_credentials(
        &self,
        request: Request<SetSendGridCredentialsRequest>,
    ) -> Result<Response<SetSendGridCredentialsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let settings = self.omega.providers.set_sendgrid_credentials(&caller, business_id, &r.api_key).await?;
        Ok(Response::new(SetSendGridCredentialsResponse { settings: Some(encode(r.business_id, settings)) }))
    }

    async fn set_smtp_credentials(
        &self,
        request: Request<SetSmtpCredentialsRequest>,
    ) -> Result<Response<SetSmtpCredentialsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let settings = self
            .omega
            .providers
            .set_smtp_credentials(&caller, business_id, &r.host, r.port, &r.tls, &r.username, &r.password)
            .await?;
        Ok(Response::new(SetSmtpCredentialsResponse { settings: Some(encode(r.business_id, settings)) }))
    }

    async fn get_provider_settings(
        &self,
        request: Request<GetProviderSettingsRequest>,
    ) -> Result<Response<GetProviderSettingsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let business_id = required_id("business_id", request.get_ref().business_id)?;
        let settings = self.omega.providers.provider_settings(&caller, business_id).await?;
        Ok(Response::new(encode(request.get_ref().business_id, settings)))
    }

    async fn set_voice_settings(
        &self,
        request: Request<SetVoiceSettingsRequest>,
    ) -> Result<Response<SetVoiceSettingsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let settings = self.omega.providers.set_voice_settings(&caller, business_id, r.transcribe_voicemail).await?;
        Ok(Response::new(SetVoiceSettingsResponse { settings: Some(encode(r.business_id, settings)) }))
    }
}
