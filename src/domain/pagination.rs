//! Keyset pagination shared by every list: a bounded page size and an opaque cursor
//! ("page_token") that encodes where the previous page stopped, never an offset.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};

use super::{Error, Result};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 200;
/// The text a page of messages carries at most (bytes): 200 emails of 200,000 characters would
/// be far over the proxy's 16 MiB answer limit; escaped JSON of 2 MiB of text stays under it.
pub const MESSAGE_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// The text of a message that counts against [`MESSAGE_PAGE_BYTES`].
pub fn message_bytes(m: &crate::store::entity::message::Model) -> usize {
    m.content.len() + m.subject.as_ref().map_or(0, String::len) + m.media.as_ref().map_or(0, String::len)
}

/// A validated page request; `after` is the decoded cursor of the previous page.
#[derive(Debug, Clone)]
pub struct PageRequest<C> {
    pub size: u64,
    pub after: Option<C>,
}

impl<C: DeserializeOwned> PageRequest<C> {
    /// Validates the wire fields `page_size` (0 = default) and `page_token` ("" = first page).
    pub fn parse(page_size: u32, page_token: &str) -> Result<Self> {
        let size = match u64::from(page_size) {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::invalid("page_size", format!("must be between 1 and {MAX_PAGE_SIZE}")));
            }
            n => n,
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| Error::invalid("page_token", "is not a token this list returned"))?;
            Some(
                serde_json::from_slice(&bytes)
                    .map_err(|_| Error::invalid("page_token", "is not a token this list returned"))?,
            )
        };
        Ok(Self { size, after })
    }
}

/// One page of a list: its rows, the cursor of the next page (if any), and the total count.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
    pub total: u64,
    /// Whether `total` is a cap the count stopped at (there are at least that many).
    pub total_capped: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `size + 1` rows (the extra row tells that another page exists);
    /// `cursor` gives the position of a row.
    pub fn from_rows<C: Serialize>(mut rows: Vec<T>, size: u64, total: u64, cursor: impl Fn(&T) -> C) -> Self {
        let more = rows.len() as u64 > size;
        rows.truncate(size as usize);
        let next_page_token = match rows.last() {
            Some(last) if more => token(&cursor(last)),
            _ => String::new(),
        };
        Self { items: rows, next_page_token, total, total_capped: false }
    }

    /// The same page with each item turned into `U` (a row into its view).
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_page_token: self.next_page_token,
            total: self.total,
            total_capped: self.total_capped,
        }
    }

    /// The same page with its rows as their views.
    pub fn into_views<U: From<T>>(self) -> Page<U> {
        self.map(U::from)
    }
}

/// The page size that keeps a page of `rows` within `budget` bytes of text (`bytes` of a row):
/// at most `size`, at least one row. A page of the longest texts allowed must still fit under
/// the proxy's response limit (16 MiB), JSON escapes included; the next page holds the rest.
pub fn size_within<T>(rows: &[T], size: u64, budget: usize, bytes: impl Fn(&T) -> usize) -> u64 {
    let mut used = 0;
    for (n, row) in rows.iter().take(size as usize).enumerate() {
        used += bytes(row);
        if used > budget && n > 0 {
            return n as u64;
        }
    }
    size
}

/// The opaque page token of a cursor.
pub fn token<C: Serialize>(cursor: &C) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).expect("cursors serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_stop_at_their_byte_budget() {
        let rows = [600, 600, 600, 10];
        assert_eq!(size_within(&rows, 3, 1_000, |r| *r), 1);
        assert_eq!(size_within(&rows, 3, 1_200, |r| *r), 2);
        assert_eq!(size_within(&rows, 3, 10_000, |r| *r), 3);
        assert_eq!(size_within(&[5_000], 3, 1_000, |r| *r), 3, "one row always fits");
    }

    #[test]
    fn page_size_is_bounded_and_defaults() {
        assert_eq!(PageRequest::<i64>::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(PageRequest::<i64>::parse(200, "").unwrap().size, 200);
        let err = PageRequest::<i64>::parse(201, "").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(v) if v[0].field == "page_size"));
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        let page = Page::from_rows(vec![5_i64, 4, 3], 2, 3, |id| *id);
        assert_eq!(page.items, vec![5, 4]);
        let next = PageRequest::<i64>::parse(2, &page.next_page_token).unwrap();
        assert_eq!(next.after, Some(4));
        let last = Page::from_rows(vec![3_i64], 2, 3, |id| *id);
        assert!(last.next_page_token.is_empty());
        let err = PageRequest::<i64>::parse(2, "%%%").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(v) if v[0].field == "page_token"));
    }
}
