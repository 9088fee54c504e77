//! `omega.v1.AuthService` and `omega.v1.SessionService`.

use tonic::{Request, Response, Status};

use super::{
    auth::{caller, presented_token},
    convert::{optional_id, timestamp},
};
use crate::{
    domain::Omega,
    proto::omega::v1::{
        ExpireSessionRequest, ExpireSessionResponse, GenerateAuthTokenRequest, GenerateAuthTokenResponse,
        auth_service_server::AuthService, session_service_server::SessionService,
    },
};

#[derive(Clone)]
pub struct TokenApi {
    omega: Omega,
}

impl TokenApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

#[tonic::async_trait]
impl AuthService for TokenApi {
    async fn generate_auth_token(
        &self,
        request: Request<GenerateAuthTokenRequest>,
    ) -> Result<Response<GenerateAuthTokenResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let issued = self
            .omega
            .tokens
            .issue_token(
                &caller,
                optional_id("staff_id", r.staff_id)?,
                optional_id("business_id", r.business_id)?,
                r.ttl_seconds,
            )
            .await?;
        Ok(Response::new(GenerateAuthTokenResponse {
            token: issued.token,
            token_type: "Bearer".into(),
            expires_at: Some(timestamp(issued.expires_at)),
            session_id: issued.jti,
        }))
    }
}

#[tonic::async_trait]
impl SessionService for TokenApi {
    async fn expire_session(
        &self,
        request: Request<ExpireSessionRequest>,
    ) -> Result<Response<ExpireSessionResponse>, Status> {
        let token = match request.get_ref().token.trim() {
            "" => presented_token(request.metadata()).unwrap_or_default(),
            given => given.to_owned(),
        };
        if token.is_empty() {
            return Err(crate::domain::Error::invalid("token", "give the token to expire, or call with it").into());
        }
        let expired = self.omega.tokens.expire_session(&token).await?;
        Ok(Response::new(ExpireSessionResponse {
            expired,
            message: if expired { "Session expired" } else { "No live session to expire" }.into(),
        }))
    }
}
