//! The small vocabulary of the domain — statuses, channels, directions — and the validation
//! and normalization of values that arrive from outside (phones, emails, time zones, times).

use chrono::{DateTime, Utc};

use super::{Error, Result};
/// The enumerated values are the stored ones (an unknown stored value is an error); the rules
/// for them are here.
pub use crate::store::entity::enums::{
    AttemptOutcome, Channel, ConversationStatus, DeliveryStatus, Direction, JobState, SenderType, WebhookDeliveryState,
};

/// Time with microsecond precision: what PostgreSQL stores, so that values read back compare
/// equal to the ones written (keyset cursors depend on it).
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Parses an RFC 3339 time given in `field`.
pub fn parse_time(field: &str, value: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Error::invalid(field, "must be an RFC 3339 time, e.g. 2026-01-31T17:00:00Z"))
}

/// An optional RFC 3339 time: empty means absent.
pub fn parse_optional_time(field: &str, value: &str) -> Result<Option<DateTime<Utc>>> {
    if value.trim().is_empty() { Ok(None) } else { parse_time(field, value).map(Some) }
}

impl ConversationStatus {
    pub const ALL: [Self; 4] = [Self::Open, Self::Pending, Self::Snoozed, Self::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Pending => "PENDING",
            Self::Snoozed => "SNOOZED",
            Self::Resolved => "RESOLVED",
        }
    }

    /// Any case; the legacy REST API's ACTIVE is OPEN.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "OPEN" | "ACTIVE" => Ok(Self::Open),
            "PENDING" => Ok(Self::Pending),
            "SNOOZED" => Ok(Self::Snoozed),
            "RESOLVED" => Ok(Self::Resolved),
            "" => Err(Error::invalid(field, "is required: OPEN (or ACTIVE), PENDING, SNOOZED or RESOLVED")),
            _ => Err(Error::invalid(
                field,
                format!("unknown status {value:?}: use OPEN (or ACTIVE), PENDING, SNOOZED or RESOLVED"),
            )),
        }
    }
}

impl Channel {
    /// The channels clients talk on (notes excluded).
    pub const CLIENT_FACING: [Self; 4] = [Self::Sms, Self::Email, Self::Voice, Self::Chat];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "SMS",
            Self::Email => "EMAIL",
            Self::Voice => "VOICE",
            Self::Chat => "CHAT",
            Self::Note => "NOTE",
        }
    }

    pub fn parse(field: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "SMS" | "MMS" => Ok(Self::Sms),
            "EMAIL" => Ok(Self::Email),
            "VOICE" | "CALL" => Ok(Self::Voice),
            "CHAT" => Ok(Self::Chat),
            "NOTE" => Ok(Self::Note),
            _ => Err(Error::invalid(field, format!("unknown channel {value:?}: use SMS, EMAIL, VOICE, CHAT or NOTE"))),
        }
    }

    /// An optional filter value: empty means any channel.
    pub fn parse_filter(field: &str, value: &str) -> Result<Option<Self>> {
        if value.trim().is_empty() { Ok(None) } else { Self::parse(field, value).map(Some) }
    }

    /// The channel names present in a mask.
    pub fn names_in_mask(mask: i32) -> Vec<String> {
        Self::CLIENT_FACING.iter().filter(|c| mask & c.bit() != 0).map(|c| c.as_str().to_owned()).collect()
    }
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "INBOUND",
            Self::Outbound => "OUTBOUND",
            Self::Internal => "INTERNAL",
        }
    }

    pub fn parse_filter(field: &str, value: &str) -> Result<Option<Self>> {
        match value.trim().to_ascii_uppercase().as_str() {
            "" => Ok(None),
            "INBOUND" => Ok(Some(Self::Inbound)),
            "OUTBOUND" => Ok(Some(Self::Outbound)),
            "INTERNAL" => Ok(Some(Self::Internal)),
            _ => Err(Error::invalid(field, format!("unknown direction {value:?}: use INBOUND, OUTBOUND or INTERNAL"))),
        }
    }
}

/// A required, trimmed text of at most `max` characters.
pub fn required_text(field: &str, value: &str, max: usize) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    optional_text(field, value, max).map(|v| v.unwrap_or_default())
}

/// An optional, trimmed text of at most `max` characters: empty means absent.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<Option<String>> {
    let value = value.trim();
    check_text(field, value, max)?;
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// Text as stored: at most `max` characters and no NUL (PostgreSQL cannot store one). Request
/// fields are checked for NUL at the API edge already; this covers text parsed out of bodies the
/// domain reads itself (web-chat JSON, webhook forms).
pub fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    if value.len() > max && value.chars().count() > max {
        return Err(Error::invalid(field, format!("must be at most {max} characters")));
    }
    Ok(())
}

/// A lower-case identifier word (`role`, `category`): letters, digits and underscores.
pub fn slug(field: &str, value: &str, default: &str) -> Result<String> {
    let value = value.trim().to_ascii_lowercase();
    if value.is_empty() {
        return Ok(default.to_owned());
    }
    let ok = value.len() <= 32
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok { Ok(value) } else { Err(Error::invalid(field, "must be 1 to 32 lower-case letters, digits or underscores")) }
}

/// Validates an IANA time zone name ("America/New_York"); empty is an error.
pub fn time_zone(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required: an IANA time zone such as America/New_York"));
    }
    value.parse::<chrono_tz::Tz>().map(|tz| tz.name().to_owned()).map_err(|_| {
        Error::invalid(field, format!("unknown time zone {value:?}: use an IANA name such as America/New_York"))
    })
}

/// A country calling code: 1 to 3 digits, no leading zero ("1" when empty).
pub fn calling_code(field: &str, value: &str) -> Result<String> {
    let value = value.trim().trim_start_matches('+');
    if value.is_empty() {
        return Ok("1".into());
    }
    let ok = (1..=3).contains(&value.len()) && value.chars().all(|c| c.is_ascii_digit()) && !value.starts_with('0');
    if ok { Ok(value.to_owned()) } else { Err(Error::invalid(field, "must be a country calling code such as 1 or 44")) }
}

/// Normalizes a phone number to E.164. Spaces, dashes, dots and parentheses are ignored;
/// `+` or `00` introduce an international number; otherwise the business's calling code is
/// assumed (a leading trunk `0` is dropped, and for NANP an 11-digit number starting with 1 is
/// taken as already including it). E.164 allows at most 15 digits.
pub fn phone(field: &str, value: &str, default_calling_code: &str) -> Result<String> {
    let raw = value.trim();
    let invalid = || Error::invalid(field, format!("{raw:?} is not a valid phone number (E.164, e.g. +14155550123)"));
    if raw.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    let mut digits = String::new();
    for (i, c) in raw.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => {}
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(invalid()),
        }
    }
    let international = if raw.starts_with('+') {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else if default_calling_code == "1" && digits.len() == 11 && digits.starts_with('1') {
        digits
    } else {
        format!("{default_calling_code}{}", digits.trim_start_matches('0'))
    };
    let e164 = format!("+{international}");
    if !(8..=15).contains(&international.len()) || !possible_number(&e164) {
        return Err(invalid());
    }
    Ok(e164)
}

/// Whether `e164` has a known country calling code and a length that country's numbers can
/// have (libphonenumber's metadata, through the `phonenumber` crate). Only the length is
/// checked, not the number ranges in service: test and fictional ranges (NANP's 555, or unused
/// area codes in load tests) must still be accepted.
fn possible_number(e164: &str) -> bool {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    if digits.starts_with('0') {
        return false;
    }
    // The calling code is read as libphonenumber reads it: ITU's codes are 1 to 3 digits and
    // prefix-free, so the first prefix that is a code is the code. `phonenumber::parse` would
    // also work out the number's region by matching it against each region's number patterns
    // (two dozen for +1): a tenth of an ingest's CPU, for a region this check does not use.
    (1..=3)
        .find_map(|len| {
            let code: u16 = digits.get(..len)?.parse().ok()?;
            phonenumber::metadata::DATABASE.by_code(&code).map(|regions| (len, regions))
        })
        .is_some_and(|(len, regions)| {
            let national_digits = digits.len() - len;
            regions.iter().any(|region| possible_lengths(region).any(|n| n == national_digits))
        })
}

/// The lengths a region's national numbers can have: those of each kind of number it has (the
/// metadata leaves the general description's list empty).
fn possible_lengths(region: &phonenumber::Metadata) -> impl Iterator<Item = usize> + '_ {
    let kinds = region.descriptors();
    [
        kinds.fixed_line(),
        kinds.mobile(),
        kinds.toll_free(),
        kinds.premium_rate(),
        kinds.shared_cost(),
        kinds.personal_number(),
        kinds.voip(),
        kinds.pager(),
        kinds.uan(),
        kinds.voicemail(),
    ]
    .into_iter()
    .flatten()
    .chain([kinds.general()])
    .flat_map(|kind| kind.possible_length().iter().map(|&n| usize::from(n)))
}

/// Loads the phone number metadata (slow the first time) so that no request waits for it.
pub fn warm_phone_metadata() {
    let _ = possible_number("+14155550123");
}

/// Lower-cases and checks an email address: the syntax of an address (`lettre::Address`), with
/// a dotted domain (no mail to a bare host name) of at most 254 characters in all.
pub fn email(field: &str, value: &str) -> Result<String> {
    let value = value.trim().to_lowercase();
    let valid = value.len() <= 254
        && value.parse::<lettre::Address>().is_ok_and(|address| {
            let domain = address.domain();
            domain.contains('.') && !domain.ends_with('.')
        });
    if valid { Ok(value) } else { Err(Error::invalid(field, format!("{value:?} is not a valid email address"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalize_to_e164() {
        for (input, want) in [
            ("+1 (415) 555-0123", "+14155550123"),
            ("415.555.0123", "+14155550123"),
            ("1-415-555-0123", "+14155550123"),
            ("0044 20 7946 0958", "+442079460958"),
            ("+44 20 7946 0958", "+442079460958"),
        ] {
            assert_eq!(phone("phone", input, "1").unwrap(), want, "{input}");
        }
        assert_eq!(phone("phone", "020 7946 0958", "44").unwrap(), "+442079460958");
        for bad in ["", "12345", "+1 415 555 012", "415-555-0123 ext 4", "+0123456789", "+1234567890123456", "phone"] {
            assert!(phone("phone", bad, "1").is_err(), "{bad:?} accepted");
        }
        // Each country's own lengths: a German number may have 9 digits after 49, a French one
        // only 9 after 33, a British one not 8 after 44; and no country has calling code 999.
        assert_eq!(phone("phone", "+49 30 123456", "1").unwrap(), "+4930123456");
        assert_eq!(phone("phone", "+33 1 23 45 67 89", "1").unwrap(), "+33123456789");
        assert!(phone("phone", "+33 1 23 45 67 8", "1").is_err());
        assert!(phone("phone", "+44 20 7946 09", "1").is_err());
        assert!(phone("phone", "+999 1234 5678", "1").is_err());
    }

    /// The calling code read from the digits is the one `phonenumber::parse` finds, for every
    /// code and length E.164 allows (digits drawn at random, a fixed seed).
    #[test]
    fn calling_codes_are_read_as_libphonenumber_reads_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut accepted, mut refused) = (0, 0);
        for code in 1..=999u32 {
            for len in 8..=15usize {
                for _ in 0..3 {
                    let rest: String = (0..len.saturating_sub(code.to_string().len()))
                        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                        .collect();
                    let e164 = format!("+{code}{rest}");
                    let by_parse = phonenumber::parse(None, &e164).is_ok_and(|number| {
                        let code = number.code().value();
                        let national_digits = (e164.len() - 1).saturating_sub(code.to_string().len());
                        phonenumber::metadata::DATABASE.by_code(&code).is_some_and(|regions| {
                            regions.iter().any(|region| possible_lengths(region).any(|n| n == national_digits))
                        })
                    });
                    assert_eq!(possible_number(&e164), by_parse, "{e164}");
                    if by_parse { accepted += 1 } else { refused += 1 }
                }
            }
        }
        assert!(accepted > 1_000 && refused > 1_000, "{accepted} accepted, {refused} refused");
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(email("email", " Ana@Example.COM ").unwrap(), "ana@example.com");
        for bad in ["ana", "ana@", "@x.com", "ana@x", "a b@x.com", "a@x..com", "a@@x.com"] {
            assert!(email("email", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn statuses_accept_the_legacy_spelling() {
        assert_eq!(ConversationStatus::parse("status", "ACTIVE").unwrap(), ConversationStatus::Open);
        assert_eq!(ConversationStatus::parse("status", "resolved").unwrap(), ConversationStatus::Resolved);
        assert!(
            matches!(ConversationStatus::parse("status", "DONE"), Err(Error::InvalidArgument(v)) if v[0].field == "status")
        );
    }

    #[test]
    fn time_zones_and_slugs() {
        assert_eq!(time_zone("tz", "America/New_York").unwrap(), "America/New_York");
        assert!(time_zone("tz", "Mars/Olympus").is_err());
        assert_eq!(slug("role", "", "staff").unwrap(), "staff");
        assert_eq!(slug("role", "Front_Desk", "staff").unwrap(), "front_desk");
        assert!(slug("role", "front desk", "staff").is_err());
    }

    #[test]
    fn channel_masks_round_trip() {
        let mask = Channel::Sms.bit() | Channel::Chat.bit();
        assert_eq!(Channel::names_in_mask(mask), vec!["SMS", "CHAT"]);
    }
}

// Where a message is on its way. Statuses only move up in rank (provider callbacks arrive out
// of order and twice); only a deliberate retry sends a FAILED message back to QUEUED.
impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "ACCEPTED",
            Self::Scheduled => "SCHEDULED",
            Self::Queued => "QUEUED",
            Self::Sending => "SENDING",
            Self::Sent => "SENT",
            Self::Delivered => "DELIVERED",
            Self::Undelivered => "UNDELIVERED",
            Self::Failed => "FAILED",
            Self::PartiallyDelivered => "PARTIALLY_DELIVERED",
            Self::Canceled => "CANCELED",
            Self::Read => "READ",
            Self::Received => "RECEIVED",
            Self::Recorded => "RECORDED",
        }
    }

    /// Twilio's statuses (their order is [`Self::rank`]), email event names, and our own names, any case.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        Ok(match value.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "accepted" => Self::Accepted,
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "sending" | "deferred" => Self::Sending,
            "sent" | "processed" => Self::Sent,
            "delivered" => Self::Delivered,
            "undelivered" | "bounce" | "bounced" => Self::Undelivered,
            "failed" | "dropped" => Self::Failed,
            "partially_delivered" => Self::PartiallyDelivered,
            "canceled" | "cancelled" => Self::Canceled,
            "read" | "open" | "opened" => Self::Read,
            "received" | "receiving" => Self::Received,
            "recorded" => Self::Recorded,
            "" => return Err(Error::invalid(field, "is required")),
            _ => return Err(Error::invalid(field, format!("unknown delivery status {value:?}"))),
        })
    }

    /// accepted|scheduled < queued < sending < sent < {delivered, undelivered, failed,
    /// partially delivered, canceled} < read.
    pub fn rank(self) -> u8 {
        match self {
            Self::Accepted | Self::Scheduled => 0,
            Self::Queued => 1,
            Self::Sending => 2,
            Self::Sent => 3,
            Self::Delivered
            | Self::Undelivered
            | Self::Failed
            | Self::PartiallyDelivered
            | Self::Canceled
            | Self::Received
            | Self::Recorded => 4,
            Self::Read => 5,
        }
    }

    /// Whether a message that is `self` may become `next`.
    pub fn may_become(self, next: Self) -> bool {
        next.rank() > self.rank()
    }
}

#[cfg(test)]
mod delivery_status_tests {
    use super::DeliveryStatus::*;
    use super::*;

    #[test]
    fn statuses_only_move_up() {
        assert!(Queued.may_become(Sent));
        assert!(Sent.may_become(Delivered));
        assert!(Delivered.may_become(Read));
        assert!(!Delivered.may_become(Sent));
        assert!(!Delivered.may_become(Failed), "terminal statuses do not replace each other");
        assert!(!Sent.may_become(Sent), "duplicates change nothing");
        assert_eq!(DeliveryStatus::parse("status", "partially-delivered").unwrap(), PartiallyDelivered);
        assert_eq!(DeliveryStatus::parse("status", "bounce").unwrap(), Undelivered);
        assert!(DeliveryStatus::parse("status", "teleported").is_err());
    }
}

#[cfg(test)]
mod stored_spelling_tests {
    use sea_orm::{ActiveEnum, Iterable};

    use super::*;

    /// The API spells each value as it is stored.
    #[test]
    fn api_names_are_the_stored_values() {
        for status in ConversationStatus::iter() {
            assert_eq!(status.as_str(), status.to_value());
        }
        for channel in Channel::iter() {
            assert_eq!(channel.as_str(), channel.to_value());
        }
        for direction in Direction::iter() {
            assert_eq!(direction.as_str(), direction.to_value());
        }
        for status in DeliveryStatus::iter() {
            assert_eq!(status.as_str(), status.to_value());
            assert_eq!(DeliveryStatus::parse("status", status.as_str()).unwrap(), status);
        }
    }

    /// A stored value outside the set is an error, not a default.
    #[test]
    fn unknown_stored_values_are_errors() {
        assert!(DeliveryStatus::try_from_value(&"TELEPORTED".to_owned()).is_err());
        assert!(ConversationStatus::try_from_value(&"ARCHIVED".to_owned()).is_err());
        assert!(JobState::try_from_value(&"lost".to_owned()).is_err());
    }
}
