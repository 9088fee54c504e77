//! The tonic services: each handler decodes its request, authenticates and authorizes the
//! caller, calls the domain, and encodes the answer. Domain errors become `tonic::Status` in
//! one place ([`error`]).

pub mod api_keys;
pub mod auth;
pub mod cable;
pub mod chat;
pub mod conversations;
pub mod convert;
pub mod csrf;
pub mod directory;
pub mod docs;
pub mod encode;
pub mod error;
pub mod events;
pub mod health;
pub mod inbound_email;
pub mod limits;
pub mod messages;
pub mod observe;
pub mod onboarding;
pub mod providers;
pub mod tokens;
pub mod validate;
pub mod webhook_endpoints;
pub mod webhooks;

pub use api_keys::ApiKeyApi;
pub use chat::ChatApi;
pub use conversations::ConversationApi;
pub use directory::DirectoryApi;
pub use docs::DocsApi;
pub use events::EventApi;
pub use health::HealthApi;
pub use inbound_email::InboundEmailApi;
pub use messages::MessagingApi;
pub use onboarding::OnboardingApi;
pub use providers::ProviderApi;
pub use tokens::TokenApi;
pub use webhook_endpoints::WebhookEndpointApi;
pub use webhooks::WebhookApi;
