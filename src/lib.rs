//! Omega: an omnichannel messaging backend for service businesses.
//!
//! One protobuf API (`proto/omega/v1`) served three ways: gRPC and gRPC-Web by tonic, and REST
//! through Envoy's transcoder. Layers: [`api`] (transport) → [`domain`] (rules) → [`store`]
//! (sea-orm, SQLite or PostgreSQL).

pub mod api;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod envoy;
pub mod files;
pub mod metrics;
pub mod openapi;
pub mod proto;
pub mod providers;
pub mod secrets;
pub mod server;
pub mod store;
pub mod telemetry;
