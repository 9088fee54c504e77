//! `omega.v1.LocationService`, `omega.v1.ClientService` and `omega.v1.StaffService`.

use tonic::{Request, Response, Status};

use super::{
    auth::caller,
    convert::required_id,
    encode::{self, all, filter_values, total},
};
use crate::{
    domain::{Error, Omega, pagination::PageRequest},
    proto::omega::v1::{
        GetClientRequest, GetClientResponse, GetStaffRequest, GetStaffResponse, ListClientsRequest,
        ListClientsResponse, ListLocationsRequest, ListLocationsResponse, ListStaffRequest, ListStaffResponse,
        UpsertClientRequest, UpsertClientResponse, UpsertLocationRequest, UpsertLocationResponse, UpsertStaffRequest,
        UpsertStaffResponse, client_service_server::ClientService, location_service_server::LocationService,
        staff_service_server::StaffService,
    },
};

/// Serves the three directory services; they share the domain and little else.
#[derive(Clone)]
pub struct DirectoryApi {
    omega: Omega,
}

impl DirectoryApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

fn body<T: Default>(field: &str, value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| Error::invalid(field, "is required").into())
}

#[tonic::async_trait]
impl LocationService for DirectoryApi {
    async fn upsert_location(
        &self,
        request: Request<UpsertLocationRequest>,
    ) -> Result<Response<UpsertLocationResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request = request.into_inner();
        let business_id = required_id("business_id", request.business_id)?;
        let input = body("location", request.location)?;
        let (view, created) = self.omega.directory.upsert_location(&caller, business_id, &input).await?;
        Ok(Response::new(UpsertLocationResponse { location: Some(encode::location(view)?), created }))
    }

    async fn list_locations(
        &self,
        request: Request<ListLocationsRequest>,
    ) -> Result<Response<ListLocationsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request = request.into_inner();
        let business_id = required_id("business_id", request.business_id)?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self.omega.directory.list_locations(&caller, business_id, page).await?;
        Ok(Response::new(ListLocationsResponse {
            total_size: total(page.total),
            next_page_token: page.next_page_token,
            locations: all(page.items, encode::location)?,
        }))
    }
}

#[tonic::async_trait]
impl ClientService for DirectoryApi {
    async fn upsert_client(
        &self,
        request: Request<UpsertClientRequest>,
    ) -> Result<Response<UpsertClientResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request = request.into_inner();
        let business_id = required_id("business_id", request.business_id)?;
        let input = body("client", request.client)?;
        let (client, created) = self.omega.directory.upsert_client(&caller, business_id, &input).await?;
        Ok(Response::new(UpsertClientResponse { client: Some(encode::client(client)?), created }))
    }

    async fn list_clients(
        &self,
        request: Request<ListClientsRequest>,
    ) -> Result<Response<ListClientsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request = request.into_inner();
        let business_id = required_id("business_id", request.business_id)?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self.omega.directory.list_clients(&caller, business_id, &request.query, page).await?;
        Ok(Response::new(ListClientsResponse {
            total_size: total(page.total),
            next_page_token: page.next_page_token,
            clients: all(page.items, encode::client)?,
        }))
    }

    async fn get_client(&self, request: Request<GetClientRequest>) -> Result<Response<GetClientResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let business_id = required_id("business_id", request.get_ref().business_id)?;
        let client_id = required_id("client_id", request.get_ref().client_id)?;
        let client = self.omega.directory.client(&caller, business_id, client_id).await?;
        let conversation = self.omega.client_conversation(&caller, business_id, client_id).await?;
        Ok(Response::new(GetClientResponse {
            client: Some(encode::client(client)?),
            conversation: conversation.map(encode::conversation).transpose()?,
        }))
    }
}

#[tonic::async_trait]
impl StaffService for DirectoryApi {
    async fn upsert_staff(
        &self,
        request: Request<UpsertStaffRequest>,
    ) -> Result<Response<UpsertStaffResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request = request.into_inner();
        let business_id = required_id("business_id", request.business_id)?;
        let input = body("staff", request.staff)?;
        let (staff, created) = self.omega.directory.upsert_staff(&caller, business_id, &input).await?;
        Ok(Response::new(UpsertStaffResponse { staff: Some(encode::staff(staff)?), created }))
    }

    async fn list_staff(&self, request: Request<ListStaffRequest>) -> Result<Response<ListStaffResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request = request.into_inner();
        let business_id = required_id("business_id", request.business_id)?;
        let page = PageRequest::parse(request.page_size, &request.page_token)?;
        let page = self.omega.directory.list_staff(&caller, business_id, request.active, page).await?;
        Ok(Response::new(ListStaffResponse {
            total_size: total(page.total),
            next_page_token: page.next_page_token,
            staff: all(page.items, encode::staff)?,
        }))
    }

    async fn get_staff(&self, request: Request<GetStaffRequest>) -> Result<Response<GetStaffResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let business_id = required_id("business_id", request.get_ref().business_id)?;
        let staff_id = required_id("staff_id", request.get_ref().staff_id)?;
        let staff = self.omega.directory.staff_member(&caller, business_id, staff_id).await?;
        let assigned_counts = self.omega.assigned_counts(business_id, staff_id).await?;
        Ok(Response::new(GetStaffResponse {
            staff: Some(encode::staff(staff)?),
            assigned_counts: filter_values(assigned_counts),
        }))
    }
}
