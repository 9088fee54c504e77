//! `omega.v1.HealthService`: the legacy REST API's health endpoints.

use tonic::{Request, Response, Status};

use crate::{
    domain::Omega,
    proto::omega::v1::{
        CheckDbConnectionRequest, CheckDbConnectionResponse, GetHealthRequest, GetHealthResponse,
        health_service_server::HealthService,
    },
};

pub struct HealthApi {
    omega: Omega,
}

impl HealthApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

#[tonic::async_trait]
impl HealthService for HealthApi {
    async fn get_health(&self, _: Request<GetHealthRequest>) -> Result<Response<GetHealthResponse>, Status> {
        Ok(Response::new(GetHealthResponse {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.omega.health.uptime_seconds(),
        }))
    }

    async fn check_db_connection(
        &self,
        request: Request<CheckDbConnectionRequest>,
    ) -> Result<Response<CheckDbConnectionResponse>, Status> {
        super::auth::caller(&self.omega, &request).await?;
        let check = self.omega.health.check_database().await?;
        Ok(Response::new(CheckDbConnectionResponse {
            status: "ok".into(),
            database: check.engine.into(),
            latency_ms: check.latency_ms,
        }))
    }
}
