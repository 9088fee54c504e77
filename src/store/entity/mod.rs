//! sea-orm entities: one module per table created in `migrations/`.

/// An entity's relations: the rows it belongs to (through which foreign-key column) and the
/// rows that belong to it, each also as `Related`, so `find_related` and joins can use them.
/// One line per relation instead of sea-orm's derive plus an `impl Related` block each.
macro_rules! relations {
    (
        belongs_to { $($owner:ident: $owner_module:ident via $column:ident),* $(,)? }
        $(has_many { $($owned:ident: $owned_module:ident),* $(,)? })?
    ) => {
        #[derive(Copy, Clone, Debug, EnumIter)]
        pub enum Relation {
            $($owner,)*
            $($($owned,)*)?
        }

        impl RelationTrait for Relation {
            fn def(&self) -> RelationDef {
                match self {
                    $(Self::$owner => Entity::belongs_to(super::$owner_module::Entity)
                        .from(Column::$column)
                        .to(super::$owner_module::Column::Id)
                        .into(),)*
                    $($(Self::$owned => Entity::has_many(super::$owned_module::Entity).into(),)*)?
                }
            }
        }

        $(impl Related<super::$owner_module::Entity> for Entity {
            fn to() -> RelationDef {
                Relation::$owner.def()
            }
        })*
        $($(impl Related<super::$owned_module::Entity> for Entity {
            fn to() -> RelationDef {
                Relation::$owned.def()
            }
        })*)?
    };
}

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
