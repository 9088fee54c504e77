//! `omega.v1.OnboardingService`.

use tonic::{Request, Response, Status};

use super::{
    auth::caller,
    convert::{required_id, wire_id},
};
use crate::{
    domain::{Omega, Result},
    proto::omega::v1::{
        GetOnboardingStatusRequest, GetOnboardingStatusResponse, OnboardBusinessRequest, OnboardBusinessResponse,
        OnboardingStep, onboarding_service_server::OnboardingService,
    },
};

pub struct OnboardingApi {
    omega: Omega,
}

impl OnboardingApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

#[tonic::async_trait]
impl OnboardingService for OnboardingApi {
    async fn onboard_business(
        &self,
        request: Request<OnboardBusinessRequest>,
    ) -> Result<Response<OnboardBusinessResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let done = self.omega.directory.onboard(&caller, request.into_inner()).await?;
        let message = if done.created {
            "Business onboarded".to_owned()
        } else {
            "Business already onboarded with this external_ref; a new API key was issued".to_owned()
        };
        Ok(Response::new(OnboardBusinessResponse {
            business_id: wire_id(done.business.id)?,
            created: done.created,
            message,
            api_key: done.key.plaintext,
            api_key_id: wire_id(done.key.record.id)?,
            location_ids: done.location_ids.into_iter().map(wire_id).collect::<Result<_>>()?,
            staff_ids: done.staff_ids.into_iter().map(wire_id).collect::<Result<_>>()?,
        }))
    }

    async fn get_onboarding_status(
        &self,
        request: Request<GetOnboardingStatusRequest>,
    ) -> Result<Response<GetOnboardingStatusResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let business_id = required_id("business_id", request.get_ref().business_id)?;
        let steps = self.omega.directory.onboarding_status(&caller, business_id).await?;
        let completed = steps.iter().filter(|s| s.complete).count() as u32;
        Ok(Response::new(GetOnboardingStatusResponse {
            business_id: request.get_ref().business_id,
            complete: completed as usize == steps.len(),
            completed_steps: completed,
            total_steps: steps.len() as u32,
            steps: steps
                .into_iter()
                .map(|s| OnboardingStep {
                    step: s.step.into(),
                    title: s.title.into(),
                    complete: s.complete,
                    detail: s.detail,
                })
                .collect(),
        }))
    }
}
