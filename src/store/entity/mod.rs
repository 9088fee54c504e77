//! sea-orm entities: one module per table created in `migrations/`.

pub mod api_key;
pub mod attachment;
pub mod business;
pub mod client;
pub mod contact_inbox;
pub mod conversation;
pub mod conversation_count;
pub mod conversation_event;
pub mod delivery_job;
pub mod email_inbound_token;
pub mod enums;
pub mod inbox;
pub mod location;
pub mod location_phone_number;
pub mod message;
pub mod message_attempt;
pub mod provider_credential;
pub mod sender_pacing;
pub mod session;
pub mod staff;
pub mod webhook_delivery;
pub mod webhook_endpoint;
pub mod webhook_event;
