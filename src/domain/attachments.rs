//! Files attached to messages: what Omega accepts (size, count and type limits), how uploads are
//! stored, and who may read them back (the business's staff; a web-chat contact only the files
//! of its own conversation).

use bytes::Bytes;

use super::{
    Error, Result, Violations,
    auth::Caller,
    chat::ChatContact,
    directory::Directory,
    values::Channel,
    views::{AttachmentView, ConversationView},
};
use crate::{
    files::{FileError, FileStore},
    store::{
        Store,
        attachments::{self as db, NewAttachment},
        entity::attachment,
    },
};

/// Files attached to messages: their limits, their bytes, and who may read them.
#[derive(Clone, Debug)]
pub struct Attachments {
    store: Store,
    directory: Directory,
    /// Where the bytes are kept (in memory unless configured otherwise).
    pub files: FileStore,
    pub limits: AttachmentLimits,
}

/// A file as a client uploaded it.
pub struct Upload {
    pub file_name: String,
    /// The type the client declared (`Content-Type` of its part).
    pub content_type: String,
    pub data: Bytes,
}

#[derive(Clone, Copy, Debug)]
pub struct AttachmentLimits {
    /// The largest file accepted, in bytes.
    pub max_bytes: usize,
    /// The most files on one message.
    pub max_files: usize,
}

impl Default for AttachmentLimits {
    fn default() -> Self {
        // Under the 4 MiB a request may carry through the edge, with room for the form around it.
        Self { max_bytes: 3 * 1024 * 1024, max_files: 10 }
    }
}

/// The types Omega stores and serves back (roughly the widget's own accept list). Not SVG or
/// HTML: served from Omega's origin they could run script.
const ACCEPTED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/mpeg",
    "audio/mp4",
    "audio/aac",
    "audio/ogg",
    "audio/wav",
    "audio/webm",
    "video/mp4",
    "video/webm",
    "video/quicktime",
    "video/3gpp",
    "application/pdf",
    "text/plain",
    "text/csv",
    "application/json",
    "application/zip",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
];

/// Chatwoot's `file_type` of a content type.
fn file_type(content_type: &str) -> &'static str {
    match content_type.split('/').next() {
        Some("image") => "image",
        Some("audio") => "audio",
        Some("video") => "video",
        _ => "file",
    }
}

/// The content type of an image, read from its bytes (what it really is).
fn sniffed_image(data: &[u8]) -> Option<&'static str> {
    match imagesize::image_type(data).ok()? {
        imagesize::ImageType::Png => Some("image/png"),
        imagesize::ImageType::Jpeg => Some("image/jpeg"),
        imagesize::ImageType::Gif => Some("image/gif"),
        imagesize::ImageType::Webp => Some("image/webp"),
        _ => None,
    }
}

/// A file name safe to keep and to send back in a header: its last path segment, without
/// control characters or quotes, at most 255 bytes.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out: String = base.chars().filter(|c| !c.is_control() && *c != '"').collect();
    while out.len() > 255 {
        out.pop();
    }
    if out.trim().is_empty() { "attachment".into() } else { out }
}

impl Attachments {
    pub(super) fn new(store: Store, directory: Directory) -> Self {
        Self { store, directory, files: FileStore::in_memory(), limits: AttachmentLimits::default() }
    }

    /// Checks `uploads` against the limits (every problem at once, as `field`) and puts them in
    /// the attachment store; answers what the message will record. Images must be what they
    /// claim (their bytes decide their type and size); other types are taken as declared.
    pub async fn store_uploads(
        &self,
        business_id: i64,
        field: &str,
        uploads: Vec<Upload>,
    ) -> Result<Vec<NewAttachment>> {
        let limits = self.limits;
        let mut v = Violations::default();
        if uploads.len() > limits.max_files {
            v.add(field, format!("at most {} files per message", limits.max_files));
        }
        let mut checked = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let name = clean_name(&upload.file_name);
            let declared = upload.content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            let sniffed = sniffed_image(&upload.data);
            let content_type = match (sniffed, declared.as_str()) {
                (Some(image), _) => image.to_owned(),
                (None, declared) if declared.starts_with("image/") => {
                    v.add(field, format!("{name}: not a PNG, JPEG, GIF or WebP image"));
                    continue;
                }
                (None, declared) if ACCEPTED.contains(&declared) => declared.to_owned(),
                (None, declared) => {
                    v.add(field, format!("{name}: files of type {declared:?} are not accepted"));
                    continue;
                }
            };
            if upload.data.is_empty() {
                v.add(field, format!("{name}: is empty"));
                continue;
            }
            if upload.data.len() > limits.max_bytes {
                v.add(field, format!("{name}: larger than {} bytes", limits.max_bytes));
                continue;
            }
            let size = sniffed.and_then(|_| imagesize::blob_size(&upload.data).ok());
            let dimension = |n: usize| i32::try_from(n).ok();
            checked.push((
                NewAttachment {
                    storage_key: format!("attachments/{business_id}/{}", uuid::Uuid::new_v4()),
                    file_name: name,
                    file_type: file_type(&content_type),
                    content_type,
                    file_size: upload.data.len() as i64,
                    width: size.and_then(|s| dimension(s.width)),
                    height: size.and_then(|s| dimension(s.height)),
                },
                upload.data,
            ));
        }
        v.finish()?;
        let mut stored = Vec::with_capacity(checked.len());
        for (file, data) in checked {
            if let Err(err) = self.files.put(&file.storage_key, data).await {
                self.forget_uploads(&stored).await;
                return Err(files_error(err));
            }
            stored.push(file);
        }
        Ok(stored)
    }

    /// Removes stored uploads whose message was not written.
    pub async fn forget_uploads(&self, files: &[NewAttachment]) {
        for file in files {
            self.files.remove(&file.storage_key).await;
        }
    }

    /// An attachment of a message in the contact's own conversation, with its bytes; any other
    /// (another conversation's, an internal note's) is NOT_FOUND.
    pub async fn chat_attachment(
        &self,
        chat: &ChatContact,
        conversation: &ConversationView,
        id: i64,
    ) -> Result<(AttachmentView, Bytes)> {
        let found = db::with_message(self.store.connection(), chat.inbox.business_id, id)
            .await?
            .filter(|(_, m)| m.conversation_id == conversation.id && m.channel != Channel::Note)
            .ok_or_else(|| Error::NotFound("attachment".into()))?;
        self.attachment_bytes(found.0).await
    }

    /// An attachment of the business's messages, for its staff.
    pub async fn attachment(&self, caller: &Caller, business_id: i64, id: i64) -> Result<(AttachmentView, Bytes)> {
        self.directory.business(caller, business_id).await?;
        let (attachment, _) = db::with_message(self.store.connection(), business_id, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("attachment {id}")))?;
        self.attachment_bytes(attachment).await
    }

    async fn attachment_bytes(&self, attachment: attachment::Model) -> Result<(AttachmentView, Bytes)> {
        let data = self.files.get(&attachment.storage_key).await.map_err(files_error)?;
        Ok((attachment.into(), data))
    }
}

fn files_error(err: FileError) -> Error {
    match err {
        // A row without its file: the store lost it (or another replica cannot see it).
        FileError::NotFound(key) => Error::Internal(anyhow::anyhow!("attachment file {key} is missing")),
        FileError::Store(err) => Error::Unavailable(format!("the attachment store failed: {err}")),
    }
}
