//! `omega.v1.ConversationService`: the legacy REST API's inbox endpoints.

use tonic::{Request, Response, Status};

use super::{
    auth::caller,
    convert::{optional_id, required_id, timestamp, wire_id},
    encode::{self, all, filter_values, total},
};
use crate::{
    domain::{
        Omega,
        conversations::{ConversationPath, ListQuery, MessageQuery, ReadRequest, StatusRequest},
        pagination::PageRequest,
    },
    proto::omega::v1::{
        AddNoteRequest, AddNoteResponse, AssignConversationRequest, AssignConversationResponse,
        CreateOrRetrieveConversationRequest, CreateOrRetrieveConversationResponse, GetConversationFiltersRequest,
        GetConversationFiltersResponse, ListConversationHistoryRequest, ListConversationHistoryResponse,
        ListConversationMessagesRequest, ListConversationMessagesResponse, ListConversationsRequest,
        ListConversationsResponse, SetTypingRequest, SetTypingResponse, UnreadCount, UpdateConversationStatusRequest,
        UpdateConversationStatusResponse, UpdateReadStatusRequest, UpdateReadStatusResponse,
        conversation_service_server::ConversationService,
    },
};

pub struct ConversationApi {
    omega: Omega,
}

impl ConversationApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

/// The ids of a conversation path.
fn path_ids(business_id: u32, client_id: u32, conversation_id: u32) -> Result<ConversationPath, Status> {
    Ok(ConversationPath {
        business_id: required_id("business_id", business_id)?,
        client_id: required_id("client_id", client_id)?,
        conversation_id: required_id("conversation_id", conversation_id)?,
    })
}

#[tonic::async_trait]
impl ConversationService for ConversationApi {
    async fn create_or_retrieve_conversation(
        &self,
        request: Request<CreateOrRetrieveConversationRequest>,
    ) -> Result<Response<CreateOrRetrieveConversationResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let client_id = required_id("client_id", r.client_id)?;
        let location_id = optional_id("location_id", r.location_id)?;
        let (conversation, created) =
            self.omega.create_or_retrieve_conversation(&caller, business_id, client_id, location_id).await?;
        let message = if created { "Conversation created" } else { "Existing conversation retrieved" };
        Ok(Response::new(CreateOrRetrieveConversationResponse {
            conversation_id: wire_id(conversation.id)?,
            message: message.into(),
            created,
            status: conversation.status.to_string(),
        }))
    }

    async fn update_conversation_status(
        &self,
        request: Request<UpdateConversationStatusRequest>,
    ) -> Result<Response<UpdateConversationStatusResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let ids = path_ids(r.business_id, r.client_id, r.conversation_id)?;
        let resolved_by = optional_id("resolved_by", r.resolved_by)?;
        let update = self
            .omega
            .update_conversation_status(
                &caller,
                ids,
                StatusRequest { status: r.status, snoozed_until: r.snoozed_until, resolved_by, note: r.note },
            )
            .await?;
        let message = if update.changed {
            format!("Conversation status updated from {} to {}", update.previous.as_str(), update.status.as_str())
        } else {
            format!("Conversation is already {}", update.status.as_str())
        };
        Ok(Response::new(UpdateConversationStatusResponse {
            conversation_id: r.conversation_id,
            message,
            status: update.status.as_str().into(),
            previous_status: update.previous.as_str().into(),
        }))
    }

    async fn assign_conversation(
        &self,
        request: Request<AssignConversationRequest>,
    ) -> Result<Response<AssignConversationResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let ids = path_ids(r.business_id, r.client_id, r.conversation_id)?;
        let (staff, changed) = self.omega.assign_conversation(&caller, ids, &r.assigned_to).await?;
        let message = match (&staff, changed) {
            (Some(staff), true) => format!("Client successfully assigned to staff member {}", staff.name),
            (Some(staff), false) => format!("Conversation is already assigned to {}", staff.name),
            (None, true) => "Conversation unassigned".to_owned(),
            (None, false) => "Conversation is already unassigned".to_owned(),
        };
        Ok(Response::new(AssignConversationResponse {
            conversation_id: r.conversation_id,
            message,
            assigned_to: staff.map(|s| wire_id(s.id)).transpose()?,
        }))
    }

    async fn add_note(&self, request: Request<AddNoteRequest>) -> Result<Response<AddNoteResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let ids = path_ids(r.business_id, r.client_id, r.conversation_id)?;
        let note =
            self.omega.add_note(&caller, ids, &r.content, i64::from(r.sent_by), &r.sender_type, &r.category).await?;
        Ok(Response::new(AddNoteResponse {
            conversation_id: r.conversation_id,
            note_id: note.public_id,
            message: "Internal note added to the conversation".into(),
            category: note.note_category.unwrap_or_default(),
            created_at: Some(timestamp(note.created_at)),
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let page = PageRequest::parse(r.page_size, &r.page_token)?;
        let query = ListQuery {
            status: r.status,
            assignee: r.assignee,
            location_id: optional_id("location_id", r.location_id)?,
            channel: r.channel,
            unread_only: r.unread_only,
            query: r.query,
        };
        let list = self.omega.list_conversations(&caller, business_id, &query, page).await?;
        Ok(Response::new(ListConversationsResponse {
            total_size: total(list.page.total),
            next_page_token: list.page.next_page_token,
            conversations: all(list.page.items, encode::conversation)?,
            status_counts: filter_values(list.status_counts),
            assignee_counts: filter_values(list.assignee_counts),
            total_size_capped: list.total_capped,
        }))
    }

    async fn get_conversation_filters(
        &self,
        request: Request<GetConversationFiltersRequest>,
    ) -> Result<Response<GetConversationFiltersResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let business_id = required_id("business_id", request.get_ref().business_id)?;
        let counts = self.omega.conversation_filters(&caller, business_id).await?;
        Ok(Response::new(GetConversationFiltersResponse {
            statuses: filter_values(counts.statuses),
            assignees: filter_values(counts.assignees),
            channels: filter_values(counts.channels),
            locations: filter_values(counts.locations),
            unread: total(counts.unread),
            total: total(counts.total),
        }))
    }

    async fn list_conversation_messages(
        &self,
        request: Request<ListConversationMessagesRequest>,
    ) -> Result<Response<ListConversationMessagesResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let ids = path_ids(r.business_id, r.client_id, r.conversation_id)?;
        let page = PageRequest::parse(r.page_size, &r.page_token)?;
        let query = MessageQuery {
            channel: r.channel,
            direction: r.direction,
            status: r.status,
            read: r.read,
            since: r.since,
            until: r.until,
            include_notes: r.include_notes,
            order: r.order,
        };
        let page = self.omega.list_messages(&caller, ids, &query, page).await?;
        Ok(Response::new(ListConversationMessagesResponse {
            total_size: total(page.total),
            total_size_capped: page.total_capped,
            next_page_token: page.next_page_token,
            messages: all(page.items, encode::message)?,
        }))
    }

    async fn list_conversation_history(
        &self,
        request: Request<ListConversationHistoryRequest>,
    ) -> Result<Response<ListConversationHistoryResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let ids = path_ids(r.business_id, r.client_id, r.conversation_id)?;
        let page = PageRequest::parse(r.page_size, &r.page_token)?;
        let page = self.omega.conversation_history(&caller, ids, page).await?;
        Ok(Response::new(ListConversationHistoryResponse {
            total_size: total(page.total),
            next_page_token: page.next_page_token,
            events: all(page.items, encode::event)?,
        }))
    }

    async fn set_typing(&self, request: Request<SetTypingRequest>) -> Result<Response<SetTypingResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let ids = path_ids(r.business_id, r.client_id, r.conversation_id)?;
        let staff = optional_id("staff_id", r.staff_id)?;
        let conversation = self.omega.set_staff_typing(&caller, ids, staff, r.typing).await?;
        Ok(Response::new(SetTypingResponse { conversation_id: wire_id(conversation.id)?, typing: r.typing }))
    }

    async fn update_read_status(
        &self,
        request: Request<UpdateReadStatusRequest>,
    ) -> Result<Response<UpdateReadStatusResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let business_id = required_id("business_id", r.business_id)?;
        let read = r.read.unwrap_or(true);
        let update = self
            .omega
            .update_read_status(
                &caller,
                business_id,
                ReadRequest {
                    conversation_id: optional_id("conversation_id", r.conversation_id)?,
                    client_id: optional_id("client_id", r.client_id)?,
                    channel: r.channel,
                    up_to_message_id: r.up_to_message_id,
                    up_to_time: r.up_to_time,
                    read: r.read,
                },
            )
            .await?;
        Ok(Response::new(UpdateReadStatusResponse {
            updated_count: total(update.changed),
            conversations: update
                .unread_counts
                .into_iter()
                .map(|count| {
                    Ok(UnreadCount {
                        conversation_id: wire_id(count.conversation_id)?,
                        unread_count: u32::try_from(count.unread).unwrap_or(0),
                    })
                })
                .collect::<crate::domain::Result<_>>()?,
            message: format!("{} message(s) marked {}", update.changed, if read { "read" } else { "unread" }),
        }))
    }
}
