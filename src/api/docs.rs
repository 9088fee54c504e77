//! `omega.v1.DocsService`: the OpenAPI document, served as it is generated.

use tonic::{Request, Response, Status};

use crate::proto::{
    google::api::HttpBody,
    omega::v1::{GetOpenApiRequest, docs_service_server::DocsService},
};

/// Serves the OpenAPI document (built once: the descriptor set does not change at run time).
pub struct DocsApi {
    document: Vec<u8>,
}

impl DocsApi {
    pub fn new() -> Self {
        Self { document: crate::openapi::document().to_string().into_bytes() }
    }
}

impl Default for DocsApi {
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl DocsService for DocsApi {
    async fn get_open_api(&self, _: Request<GetOpenApiRequest>) -> Result<Response<HttpBody>, Status> {
        Ok(Response::new(HttpBody {
            content_type: "application/json".into(),
            data: self.document.clone(),
            extensions: Vec::new(),
        }))
    }
}
