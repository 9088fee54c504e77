//! `omega.v1.SmsService`, `omega.v1.EmailService` and `omega.v1.MessageService`.

use tonic::{Request, Response, Status};

use super::{
    auth::caller,
    convert::{optional_id, required_id, timestamp, wire_id},
    encode::{self, all, total},
};
use crate::{
    domain::{
        Omega, Result,
        messages::{BusinessSearchQuery, ClientRef, IncomingMessage, QueueInput, RetrySelection, StatusReport},
        pagination::PageRequest,
        values::Channel,
        views::MessageView,
    },
    proto::omega::v1::{
        BusinessSearchHit, DeliveryAttempt, GetMessageRequest, GetMessageResponse, GetMessagesByRequestRequest,
        GetMessagesByRequestResponse, ProcessMessageRequest, ProcessMessageResponse, QueueEmailRequest,
        QueueMessagesResponse, QueueSmsRequest, QueuedMessage, RecordMessageRequest, RecordMessageResponse,
        RetryFailedMessagesRequest, RetryFailedMessagesResponse, SearchBusinessMessagesRequest,
        SearchBusinessMessagesResponse, SearchConversationMessagesRequest, SearchConversationMessagesResponse,
        SearchHit, UpdateDeliveryStatusRequest, UpdateDeliveryStatusResponse, email_service_server::EmailService,
        message_service_server::MessageService, sms_service_server::SmsService,
    },
};

/// Serves the three messaging services.
#[derive(Clone)]
pub struct MessagingApi {
    omega: Omega,
}

impl MessagingApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

/// The id of the call (Envoy's `x-request-id`, or the one Omega's request-id layer set).
fn request_id<T>(request: &Request<T>) -> String {
    request.metadata().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn client_ids(single: Option<u32>, many: Vec<u32>) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    if let Some(id) = single {
        ids.push(required_id("client_id", id)?);
    }
    for (i, id) in many.into_iter().enumerate() {
        ids.push(required_id(&format!("client_ids[{i}]"), id)?);
    }
    Ok(ids)
}

fn queued(request_id: String, messages: Vec<MessageView>, what: &str) -> Result<QueueMessagesResponse> {
    let count = messages.len();
    Ok(QueueMessagesResponse {
        request_id,
        messages: messages
            .into_iter()
            .map(|m| {
                Ok(QueuedMessage {
                    client_id: wire_id(m.client_id)?,
                    conversation_id: wire_id(m.conversation_id)?,
                    message_id: m.public_id,
                    status: m.status.to_string(),
                })
            })
            .collect::<Result<_>>()?,
        message: format!("{count} {what}{} queued", if count == 1 { "" } else { "s" }),
    })
}

impl MessagingApi {
    async fn record(
        &self,
        request: Request<RecordMessageRequest>,
        channel: Channel,
    ) -> Result<Response<RecordMessageResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request_id = request_id(&request);
        let r = request.into_inner();
        let input = IncomingMessage {
            business_id: required_id("business_id", r.business_id)?,
            channel,
            direction: r.direction,
            client: ClientRef { client_id: Some(required_id("client_id", r.client_id)?), ..Default::default() },
            content: r.content,
            subject: r.subject,
            html: r.html,
            media_urls: r.media_urls,
            status: r.status,
            provider: r.provider,
            provider_message_id: r.provider_message_id,
            idempotency_key: String::new(),
            occurred_at: r.occurred_at,
            location_id: optional_id("location_id", r.location_id)?,
            sent_by: optional_id("sent_by", r.sent_by)?,
            request_id,
            attachments: Vec::new(),
        };
        let stored = self.omega.store_message(&caller, input).await?;
        Ok(Response::new(RecordMessageResponse {
            conversation_id: wire_id(stored.message.conversation_id)?,
            status: stored.message.status.to_string(),
            message: if stored.created { "Message recorded" } else { "Message was already recorded" }.into(),
            message_id: stored.message.public_id,
        }))
    }

    async fn update_status(
        &self,
        request: Request<UpdateDeliveryStatusRequest>,
        channel: Channel,
    ) -> Result<Response<UpdateDeliveryStatusResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let outcome = self
            .omega
            .update_delivery_status(
                &caller,
                channel,
                StatusReport {
                    message_id: r.message_id,
                    provider_message_id: r.provider_message_id,
                    status: r.status.clone(),
                    error_code: r.error_code,
                    error_message: r.error_message,
                },
            )
            .await?;
        let message = if outcome.applied {
            format!("Status updated to {}", outcome.message.status)
        } else {
            format!("Status unchanged: {} is not behind {}", outcome.message.status, r.status.to_ascii_uppercase())
        };
        Ok(Response::new(UpdateDeliveryStatusResponse {
            message_id: outcome.message.public_id,
            status: outcome.message.status.to_string(),
            applied: outcome.applied,
            message,
        }))
    }
}

#[tonic::async_trait]
impl SmsService for MessagingApi {
    async fn queue_sms(&self, request: Request<QueueSmsRequest>) -> Result<Response<QueueMessagesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request_id = request_id(&request);
        let r = request.into_inner();
        let input = QueueInput {
            channel: Channel::Sms,
            business_id: required_id("business_id", r.business_id)?,
            client_ids: client_ids(r.client_id, r.client_ids)?,
            content: r.content,
            subject: String::new(),
            html: String::new(),
            media_urls: r.media_urls,
            attachment_ids: Vec::new(),
            location_id: optional_id("location_id", r.location_id)?,
            sent_by: optional_id("sent_by", r.sent_by)?,
            idempotency_key: r.idempotency_key,
            request_id,
        };
        let done = self.omega.queue_messages(&caller, input).await?;
        Ok(Response::new(queued(done.request_id, done.messages, "SMS")?))
    }

    async fn record_sms(
        &self,
        request: Request<RecordMessageRequest>,
    ) -> Result<Response<RecordMessageResponse>, Status> {
        self.record(request, Channel::Sms).await
    }

    async fn update_sms_status(
        &self,
        request: Request<UpdateDeliveryStatusRequest>,
    ) -> Result<Response<UpdateDeliveryStatusResponse>, Status> {
        self.update_status(request, Channel::Sms).await
    }
}

#[tonic::async_trait]
impl EmailService for MessagingApi {
    async fn queue_email(
        &self,
        request: Request<QueueEmailRequest>,
    ) -> Result<Response<QueueMessagesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request_id = request_id(&request);
        let r = request.into_inner();
        let input = QueueInput {
            channel: Channel::Email,
            business_id: required_id("business_id", r.business_id)?,
            client_ids: client_ids(r.client_id, r.client_ids)?,
            content: r.content,
            subject: r.subject,
            html: r.html,
            media_urls: Vec::new(),
            attachment_ids: r
                .attachment_ids
                .iter()
                .enumerate()
                .map(|(i, id)| required_id(&format!("attachment_ids[{i}]"), *id))
                .collect::<Result<_, _>>()?,
            location_id: optional_id("location_id", r.location_id)?,
            sent_by: optional_id("sent_by", r.sent_by)?,
            idempotency_key: r.idempotency_key,
            request_id,
        };
        let done = self.omega.queue_messages(&caller, input).await?;
        Ok(Response::new(queued(done.request_id, done.messages, "email")?))
    }

    async fn record_email(
        &self,
        request: Request<RecordMessageRequest>,
    ) -> Result<Response<RecordMessageResponse>, Status> {
        self.record(request, Channel::Email).await
    }

    async fn update_email_status(
        &self,
        request: Request<UpdateDeliveryStatusRequest>,
    ) -> Result<Response<UpdateDeliveryStatusResponse>, Status> {
        self.update_status(request, Channel::Email).await
    }
}

#[tonic::async_trait]
impl MessageService for MessagingApi {
    async fn process_message(
        &self,
        request: Request<ProcessMessageRequest>,
    ) -> Result<Response<ProcessMessageResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let request_id = request_id(&request);
        let r = request.into_inner();
        let channel = Channel::parse("channel", &r.channel)?;
        let reference = r.client.unwrap_or_default();
        let input = IncomingMessage {
            business_id: required_id("business_id", r.business_id)?,
            channel,
            direction: r.direction,
            client: ClientRef {
                client_id: optional_id("client.client_id", reference.client_id)?,
                phone: reference.phone,
                email: reference.email,
                external_ref: reference.external_ref,
                name: reference.name,
            },
            content: r.content,
            subject: r.subject,
            html: r.html,
            media_urls: r.media_urls,
            status: r.status,
            provider: r.provider,
            provider_message_id: r.provider_message_id,
            idempotency_key: r.idempotency_key,
            occurred_at: r.occurred_at,
            location_id: optional_id("location_id", r.location_id)?,
            sent_by: optional_id("sent_by", r.sent_by)?,
            request_id,
            attachments: Vec::new(),
        };
        let stored = self.omega.store_message(&caller, input).await?;
        Ok(Response::new(ProcessMessageResponse {
            conversation_id: wire_id(stored.message.conversation_id)?,
            client_id: wire_id(stored.message.client_id)?,
            created: stored.created,
            status: stored.message.status.to_string(),
            message_id: stored.message.public_id,
        }))
    }

    async fn get_messages_by_request(
        &self,
        request: Request<GetMessagesByRequestRequest>,
    ) -> Result<Response<GetMessagesByRequestResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let page = self.omega.messages_by_request(&caller, &r.request_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(GetMessagesByRequestResponse {
            request_id: r.request_id,
            messages: all(page.items, encode::message)?,
            next_page_token: page.next_page_token,
        }))
    }

    async fn retry_failed_messages(
        &self,
        request: Request<RetryFailedMessagesRequest>,
    ) -> Result<Response<RetryFailedMessagesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = optional_id("business_id", r.business_id)?;
        let selection = RetrySelection {
            public_ids: r.message_ids,
            request_id: r.request_id,
            business_id,
            since: r.since,
            until: r.until,
            limit: r.limit,
        };
        let (retried, skipped) = self.omega.retry_failed(&caller, selection).await?;
        Ok(Response::new(RetryFailedMessagesResponse {
            message: format!(
                "{} failed message(s) queued again; {skipped} left alone (not failed, or possibly delivered)",
                retried.len()
            ),
            retried,
            skipped: total(skipped),
        }))
    }

    async fn search_conversation_messages(
        &self,
        request: Request<SearchConversationMessagesRequest>,
    ) -> Result<Response<SearchConversationMessagesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let ids = crate::domain::conversations::ConversationPath {
            business_id: required_id("business_id", r.business_id)?,
            client_id: required_id("client_id", r.client_id)?,
            conversation_id: required_id("conversation_id", r.conversation_id)?,
        };
        let page = PageRequest::parse(r.page_size, &r.page_token)?;
        let (page, capped) =
            self.omega.search_messages(&caller, ids, &r.q, r.include_notes.unwrap_or(true), page).await?;
        Ok(Response::new(SearchConversationMessagesResponse {
            total_size: total(page.total),
            total_size_capped: capped,
            next_page_token: page.next_page_token,
            hits: page
                .items
                .into_iter()
                .map(|hit| {
                    Ok(SearchHit {
                        message: Some(encode::message(hit.message)?),
                        rank: hit.rank,
                        highlight: hit.highlight,
                    })
                })
                .collect::<Result<_>>()?,
        }))
    }

    async fn search_business_messages(
        &self,
        request: Request<SearchBusinessMessagesRequest>,
    ) -> Result<Response<SearchBusinessMessagesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let query = BusinessSearchQuery {
            assignee_staff_id: optional_id("assignee_staff_id", r.assignee_staff_id)?,
            q: r.q,
            channel: r.channel,
            direction: r.direction,
            since: r.since,
            until: r.until,
            unassigned: r.unassigned,
            order: r.order,
        };
        // A smaller default page than lists': each hit carries a highlighted passage.
        let page = PageRequest::parse(if r.page_size == 0 { 20 } else { r.page_size }, &r.page_token)?;
        let page = self.omega.search_business_messages(&caller, business_id, &query, page).await?;
        Ok(Response::new(SearchBusinessMessagesResponse {
            next_page_token: page.next_page_token,
            hits: page
                .items
                .into_iter()
                .map(|hit| {
                    let m = hit.message;
                    Ok(BusinessSearchHit {
                        message_id: m.public_id,
                        conversation_id: wire_id(m.conversation_id)?,
                        client_id: wire_id(m.client_id)?,
                        channel: m.channel.to_string(),
                        direction: m.direction.to_string(),
                        created_at: Some(timestamp(m.created_at)),
                        highlight: hit.highlight,
                        rank: hit.rank,
                    })
                })
                .collect::<Result<_>>()?,
        }))
    }

    async fn get_message(&self, request: Request<GetMessageRequest>) -> Result<Response<GetMessageResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let (message, attempts) = self.omega.message_with_attempts(&caller, &request.get_ref().message_id).await?;
        Ok(Response::new(GetMessageResponse {
            message: Some(encode::message(message)?),
            attempts: attempts
                .into_iter()
                .map(|a| DeliveryAttempt {
                    attempt: u32::try_from(a.attempt).unwrap_or(0),
                    outcome: a.outcome.to_string(),
                    provider_message_id: a.provider_message_id.unwrap_or_default(),
                    error_code: a.error_code.unwrap_or_default(),
                    error_message: a.error_message.unwrap_or_default(),
                    started_at: Some(timestamp(a.started_at)),
                    finished_at: a.finished_at.map(timestamp),
                })
                .collect(),
        }))
    }
}
