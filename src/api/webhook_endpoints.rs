//! `omega.v1.WebhookEndpointService`: a business's outbound webhook endpoints, their delivery
//! log and replays. Secrets are answered only by create and rotate.

use tonic::{Request, Response, Status};

use super::{
    auth::caller,
    convert::{required_id, timestamp, wire_id},
};
use crate::{
    domain::{
        Omega, Result, values::WebhookDeliveryState, views::DeliveryView, views::EndpointView,
        webhook_endpoints::EndpointChange,
    },
    proto::omega::v1::{
        CreateWebhookEndpointRequest, CreateWebhookEndpointResponse, DeleteWebhookEndpointRequest,
        DeleteWebhookEndpointResponse, GetWebhookEndpointRequest, GetWebhookEndpointResponse,
        ListWebhookDeliveriesRequest, ListWebhookDeliveriesResponse, ListWebhookEndpointsRequest,
        ListWebhookEndpointsResponse, ReplayWebhookDeliveryRequest, ReplayWebhookDeliveryResponse,
        ReplayWebhookEventsRequest, ReplayWebhookEventsResponse, RotateWebhookEndpointSecretRequest,
        RotateWebhookEndpointSecretResponse, UpdateWebhookEndpointRequest, UpdateWebhookEndpointResponse,
        WebhookDelivery, WebhookEndpoint, webhook_endpoint_service_server::WebhookEndpointService,
    },
};

pub struct WebhookEndpointApi {
    omega: Omega,
}

impl WebhookEndpointApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

fn endpoint(e: EndpointView) -> Result<WebhookEndpoint> {
    Ok(WebhookEndpoint {
        id: wire_id(e.id)?,
        business_id: wire_id(e.business_id)?,
        event_types: e.event_types,
        url: e.url,
        description: e.description,
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.unwrap_or_default(),
        disabled_at: e.disabled_at.map(timestamp),
        consecutive_failures: e.consecutive_failures.max(0) as u32,
        created_at: Some(timestamp(e.created_at)),
        updated_at: Some(timestamp(e.updated_at)),
        previous_secret_expires_at: e.previous_secret_until.filter(|at| *at > chrono::Utc::now()).map(timestamp),
    })
}

fn delivery(row: DeliveryView) -> Result<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: wire_id(row.id)?,
        endpoint_id: wire_id(row.endpoint_id)?,
        event_id: wire_id(row.event_id)?,
        event_type: row.kind,
        webhook_id: row.webhook_id,
        next_attempt_at: (row.state == WebhookDeliveryState::Pending).then(|| timestamp(row.next_attempt_at)),
        state: row.state.to_string(),
        attempt_count: row.attempt_count.max(0) as u32,
        last_status_code: row.last_status_code.unwrap_or(0).max(0) as u32,
        last_error: row.last_error.unwrap_or_default(),
        last_attempt_at: row.last_attempt_at.map(timestamp),
        delivered_at: row.delivered_at.map(timestamp),
        created_at: Some(timestamp(row.created_at)),
    })
}

#[tonic::async_trait]
impl WebhookEndpointService for WebhookEndpointApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<CreateWebhookEndpointRequest>,
    ) -> Result<Response<CreateWebhookEndpointResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let (row, secret) = self
            .omega
            .webhook_endpoints
            .create(&caller, business_id, &r.url, &r.description, &r.event_types, r.enabled)
            .await?;
        Ok(Response::new(CreateWebhookEndpointResponse { endpoint: Some(endpoint(row)?), secret }))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<ListWebhookEndpointsRequest>,
    ) -> Result<Response<ListWebhookEndpointsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let business_id = required_id("business_id", request.get_ref().business_id)?;
        let rows = self.omega.webhook_endpoints.list(&caller, business_id).await?;
        Ok(Response::new(ListWebhookEndpointsResponse {
            endpoints: rows.into_iter().map(endpoint).collect::<Result<_>>()?,
        }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<GetWebhookEndpointRequest>,
    ) -> Result<Response<GetWebhookEndpointResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let id = required_id("endpoint_id", r.endpoint_id)?;
        let row = self.omega.webhook_endpoints.get(&caller, business_id, id).await?;
        Ok(Response::new(GetWebhookEndpointResponse { endpoint: Some(endpoint(row)?) }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<UpdateWebhookEndpointRequest>,
    ) -> Result<Response<UpdateWebhookEndpointResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let id = required_id("endpoint_id", r.endpoint_id)?;
        let change = EndpointChange {
            url: r.url,
            description: r.description,
            event_types: r.event_types,
            all_event_types: r.all_event_types,
            enabled: r.enabled,
        };
        let row = self.omega.webhook_endpoints.update(&caller, business_id, id, change).await?;
        Ok(Response::new(UpdateWebhookEndpointResponse { endpoint: Some(endpoint(row)?) }))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<DeleteWebhookEndpointRequest>,
    ) -> Result<Response<DeleteWebhookEndpointResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let id = required_id("endpoint_id", r.endpoint_id)?;
        self.omega.webhook_endpoints.delete(&caller, business_id, id).await?;
        Ok(Response::new(DeleteWebhookEndpointResponse {}))
    }

    async fn rotate_webhook_endpoint_secret(
        &self,
        request: Request<RotateWebhookEndpointSecretRequest>,
    ) -> Result<Response<RotateWebhookEndpointSecretResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let id = required_id("endpoint_id", r.endpoint_id)?;
        let (row, secret) = self.omega.webhook_endpoints.rotate_secret(&caller, business_id, id).await?;
        Ok(Response::new(RotateWebhookEndpointSecretResponse { endpoint: Some(endpoint(row)?), secret }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let id = required_id("endpoint_id", r.endpoint_id)?;
        let (rows, next_page_token) = self
            .omega
            .webhook_endpoints
            .deliveries(&caller, business_id, id, &r.state, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(ListWebhookDeliveriesResponse {
            deliveries: rows.into_iter().map(delivery).collect::<Result<_>>()?,
            next_page_token,
        }))
    }

    async fn replay_webhook_delivery(
        &self,
        request: Request<ReplayWebhookDeliveryRequest>,
    ) -> Result<Response<ReplayWebhookDeliveryResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let id = required_id("endpoint_id", r.endpoint_id)?;
        let delivery_id = required_id("delivery_id", r.delivery_id)?;
        let row = self.omega.webhook_endpoints.replay_delivery(&caller, business_id, id, delivery_id).await?;
        Ok(Response::new(ReplayWebhookDeliveryResponse { delivery: Some(delivery(row)?) }))
    }

    async fn replay_webhook_events(
        &self,
        request: Request<ReplayWebhookEventsRequest>,
    ) -> Result<Response<ReplayWebhookEventsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let id = required_id("endpoint_id", r.endpoint_id)?;
        let (queued, last, more) = self
            .omega
            .webhook_endpoints
            .replay_events(&caller, business_id, id, &r.since, &r.until, i64::from(r.after_event_id))
            .await?;
        Ok(Response::new(ReplayWebhookEventsResponse { queued: queued as u32, last_event_id: wire_id(last)?, more }))
    }
}
