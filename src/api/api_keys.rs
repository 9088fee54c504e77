//! `omega.v1.ApiKeyService`: key management for operators (platform keys only).

use tonic::{Request, Response, Status};

use super::convert::{optional_id, required_id, timestamp, wire_id};
use crate::{
    domain::{Omega, Result, pagination::PageRequest, views::ApiKeyView},
    proto::omega::v1::{
        ApiKey, CreateApiKeyRequest, CreateApiKeyResponse, ListApiKeysRequest, ListApiKeysResponse,
        RevokeApiKeyRequest, RevokeApiKeyResponse, api_key_service_server::ApiKeyService,
    },
};

pub struct ApiKeyApi {
    omega: Omega,
}

impl ApiKeyApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

fn encode(key: ApiKeyView) -> Result<ApiKey> {
    Ok(ApiKey {
        id: wire_id(key.id)?,
        prefix: key.key_prefix,
        label: key.label,
        scope: key.scope,
        business_id: key.business_id.map(wire_id).transpose()?,
        created_at: Some(timestamp(key.created_at)),
        last_used_at: key.last_used_at.map(timestamp),
        revoked_at: key.revoked_at.map(timestamp),
    })
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeyApi {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        super::auth::caller(&self.omega, &request).await?.require_platform()?;
        let body = request.into_inner();
        let business_id = optional_id("business_id", body.business_id)?;
        let issued = self.omega.create_api_key(&body.label, business_id).await?;
        Ok(Response::new(CreateApiKeyResponse { api_key: Some(encode(issued.record)?), secret: issued.plaintext }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        super::auth::caller(&self.omega, &request).await?.require_platform()?;
        let body = request.into_inner();
        let business_id = optional_id("business_id", body.business_id)?;
        let page = PageRequest::parse(body.page_size, &body.page_token)?;
        let page = self.omega.api_keys(business_id, page).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: page.items.into_iter().map(encode).collect::<Result<_>>()?,
            next_page_token: page.next_page_token,
            total_size: u32::try_from(page.total).unwrap_or(u32::MAX),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        super::auth::caller(&self.omega, &request).await?.require_platform()?;
        let key_id = required_id("key_id", request.get_ref().key_id)?;
        self.omega.revoke_api_key(key_id).await?;
        Ok(Response::new(RevokeApiKeyResponse { key_id: request.get_ref().key_id, message: "API key revoked".into() }))
    }
}
