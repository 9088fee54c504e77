//! End-to-end tests, one module per API area. They are one test binary on purpose: every test
//! binary links the whole service statically, and one link instead of eleven keeps CI's build
//! time and disk use down.

#[macro_use]
mod common;

mod api_keys;
mod browser;
mod cable;
mod chat;
mod chat_client;
mod chat_identity;
mod cli;
mod concurrency;
mod conversations;
mod directory;
mod events;
mod health;
mod hostile;
mod hostile_sweep;
mod inbound_calls;
mod inbound_email;
mod messaging;
mod operable;
mod outbound_webhooks;
mod providers;
mod replicas;
mod search;
mod tokens;
mod transports;
mod trust;
mod webhooks;
