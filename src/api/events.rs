//! `omega.v1.EventService`: the event log as a server stream and as pages.

use std::{pin::Pin, time::Duration};

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{
    auth::caller,
    convert::{optional_id, required_id, timestamp, wire_id},
};
use crate::{
    domain::{
        Error, Omega, Result,
        events::{DEFAULT_HEARTBEAT, EventQuery, Followed},
        views::EventView,
    },
    proto::omega::v1::{
        self as pb, Heartbeat, ListEventsRequest, ListEventsResponse, StreamEventsRequest, StreamEventsResponse,
        event_service_server::EventService, stream_events_response::Item,
    },
};

pub struct EventApi {
    omega: Omega,
}

impl EventApi {
    pub fn new(omega: Omega) -> Self {
        Self { omega }
    }
}

pub fn event(e: EventView) -> Result<pb::Event> {
    Ok(pb::Event {
        id: wire_id(e.id)?,
        business_id: wire_id(e.business_id)?,
        conversation_id: e.conversation_id.map(wire_id).transpose()?,
        kind: e.kind,
        actor_staff_id: e.actor_staff_id.map(wire_id).transpose()?,
        data: e.data,
        created_at: Some(timestamp(e.created_at)),
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for EventApi {
    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let heartbeat = match r.heartbeat_seconds {
            0 => DEFAULT_HEARTBEAT,
            n @ 1..=300 => Duration::from_secs(u64::from(n)),
            _ => return Err(Error::invalid("heartbeat_seconds", "must be between 1 and 300").into()),
        };
        let query = EventQuery {
            business_id: required_id("business_id", r.business_id)?,
            conversation_id: optional_id("conversation_id", r.conversation_id)?,
            kinds: r.kinds,
        };
        let mut follower =
            self.omega.events.follow_events(&caller, query, r.after_id.map(i64::from), heartbeat).await?;
        // A small buffer: a slow client holds the stream's reads back rather than memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<StreamEventsResponse, Status>>(16);
        tokio::spawn(async move {
            let _subscriber = crate::metrics::SubscriberGuard::new("stream");
            loop {
                let next = tokio::select! {
                    next = follower.next() => next,
                    // The client went away while nothing was due.
                    _ = tx.closed() => return,
                };
                let items = match next {
                    Ok(Followed::Events(rows)) => match rows.into_iter().map(event).collect::<Result<Vec<_>>>() {
                        Ok(events) => events.into_iter().map(|e| Ok(Item::Event(e))).collect(),
                        Err(err) => vec![Err(Status::from(err))],
                    },
                    Ok(Followed::Heartbeat { after_id }) => {
                        let beat = wire_id(after_id).map(|after_id| {
                            Item::Heartbeat(Heartbeat { after_id, time: Some(timestamp(chrono::Utc::now())) })
                        });
                        vec![beat.map_err(Status::from)]
                    }
                    Ok(Followed::Stopped) => vec![Err(Status::unavailable(
                        "the server is stopping; reconnect with the last event id received",
                    ))],
                    Err(err) => vec![Err(Status::from(err))],
                };
                for item in items {
                    let end = item.is_err();
                    if tx.send(item.map(|item| StreamEventsResponse { item: Some(item) })).await.is_err() || end {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_events(&self, request: Request<ListEventsRequest>) -> Result<Response<ListEventsResponse>, Status> {
        let caller = caller(&self.omega, &request).await?;
        let r = request.into_inner();
        let query = EventQuery {
            business_id: required_id("business_id", r.business_id)?,
            conversation_id: optional_id("conversation_id", r.conversation_id)?,
            kinds: r.kinds,
        };
        let (rows, next) =
            self.omega.events.list_events(&caller, query, i64::from(r.after_id), u64::from(r.page_size)).await?;
        Ok(Response::new(ListEventsResponse {
            events: rows.into_iter().map(event).collect::<Result<_>>()?,
            next_after_id: wire_id(next)?,
        }))
    }
}
