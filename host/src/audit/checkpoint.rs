//! Signed checkpoints: ed25519 signatures over the chain head, in the
//! C2SP signed-note layout, chained to each other through the previous
//! checkpoint's signature.
//!
//! ```text
//! algobanana/<install-id>/audit
//! <size: number of events covered, upto_seq + 1>
//! <base64 head hash>
//! <ts_ns> <kind> <base64 previous checkpoint signature, or ->
//! [rotate <new key id> <base64 new public key>]
//!
//! — algobanana-audit-<key id> <base64 signature over the lines above>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::chain::Hash;

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The writer started.
    Start,
    /// 1,000 events or 60 s since the last checkpoint.
    Periodic,
    /// Nothing happened for 15 minutes; proves the quiet period.
    Heartbeat,
    /// Clean shutdown.
    Stop,
    /// Signed by the old key, endorsing a new one.
    Rotation,
    /// Written at a prune cut.
    Prune,
}

impl Kind {
    /// The name in notes and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Periodic => "periodic",
            Self::Heartbeat => "heartbeat",
            Self::Stop => "stop",
            Self::Rotation => "rotation",
            Self::Prune => "prune",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start" => Self::Start,
            "periodic" => Self::Periodic,
            "heartbeat" => Self::Heartbeat,
            "stop" => Self::Stop,
            "rotation" => Self::Rotation,
            "prune" => Self::Prune,
            _ => return None,
        })
    }
}

/// The fields of a checkpoint note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The installation.
    pub install_id: String,
    /// Events covered (`upto_seq + 1`; 0 for an empty log).
    pub size: u64,
    /// Hash of the last covered event (the genesis hash for an empty log).
    pub head: Hash,
    /// When it was signed.
    pub ts_ns: i64,
    /// Why.
    pub kind: Kind,
    /// The previous checkpoint's signature.
    pub prev_signature: Option<Vec<u8>>,
    /// For rotations: the endorsed key's id and public key.
    pub rotate: Option<(String, [u8; 32])>,
}

impl Body {
    /// The signed text.
    pub fn text(&self) -> String {
        let prev = self
            .prev_signature
            .as_ref()
            .map_or_else(|| "-".to_owned(), |s| B64.encode(s));
        let mut t = format!(
            "algobanana/{}/audit\n{}\n{}\n{} {} {}\n",
            self.install_id,
            self.size,
            B64.encode(self.head),
            self.ts_ns,
            self.kind.as_str(),
            prev
        );
        if let Some((id, key)) = &self.rotate {
            t.push_str(&format!("rotate {id} {}\n", B64.encode(key)));
        }
        t
    }

    /// Parses the signed text.
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let origin = lines.next()?;
        let install_id = origin.strip_prefix("algobanana/")?.strip_suffix("/audit")?.to_owned();
        let size = lines.next()?.parse().ok()?;
        let head: Hash = B64.decode(lines.next()?).ok()?.try_into().ok()?;
        let mut meta = lines.next()?.split(' ');
        let ts_ns = meta.next()?.parse().ok()?;
        let kind = Kind::parse(meta.next()?)?;
        let prev_signature = match meta.next()? {
            "-" => None,
            s => Some(B64.decode(s).ok()?),
        };
        let rotate = match lines.next() {
            None => None,
            Some(l) => {
                let mut parts = l.strip_prefix("rotate ")?.split(' ');
                let id = parts.next()?.to_owned();
                let key: [u8; 32] = B64.decode(parts.next()?).ok()?.try_into().ok()?;
                Some((id, key))
            }
        };
        Some(Self {
            install_id,
            size,
            head,
            ts_ns,
            kind,
            prev_signature,
            rotate,
        })
    }
}

/// A full signed note, as written to a witness file or an export.
pub fn signed_note(body_text: &str, key_id: &str, signature: &[u8]) -> String {
    format!("{body_text}\n— algobanana-audit-{key_id} {}\n", B64.encode(signature))
}

/// Splits a signed note into its body text, key id and signature.
pub fn parse_signed_note(note: &str) -> Option<(String, String, Vec<u8>)> {
    let (body, sig_line) = note.trim_end_matches('\n').rsplit_once("\n\n")?;
    let rest = sig_line.strip_prefix("— algobanana-audit-")?;
    let (key_id, sig) = rest.split_once(' ')?;
    Some((format!("{body}\n"), key_id.to_owned(), B64.decode(sig.trim()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip() {
        let body = Body {
            install_id: "abc".into(),
            size: 42,
            head: [7; 32],
            ts_ns: 123,
            kind: Kind::Rotation,
            prev_signature: Some(vec![1, 2, 3]),
            rotate: Some(("00ff".into(), [9; 32])),
        };
        let text = body.text();
        assert_eq!(Body::parse(&text), Some(body.clone()));
        let note = signed_note(&text, "k1", &[5; 64]);
        let (b, k, s) = parse_signed_note(&note).unwrap();
        assert_eq!((b.as_str(), k.as_str(), s), (text.as_str(), "k1", vec![5; 64]));
    }
}
