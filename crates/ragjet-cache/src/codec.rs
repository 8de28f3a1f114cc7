//! Value encoding: a fixed header followed by a postcard payload.
//!
//! ```text
//! 0..4    magic "RJC" + format version 1
//! 4       flags (bit 0: payload is lz4 compressed, size-prefixed)
//! 5..8    reserved, zero
//! 8..16   type tag (u64 LE, from CacheValue::KIND and ::VERSION)
//! 16..24  expiry, ms since the Unix epoch (u64 LE, 0 = never)
//! 24..32  first 8 bytes of the key (catches an entry filed under another key)
//! 32..36  hit count (u32 LE, for adaptive TTLs)
//! 36..40  CRC-32 of the payload as stored
//! 40..    payload
//! ```
//!
//! postcard is a plain data format: decoding builds only the declared Rust
//! type and never runs code, unlike pickle. A value whose tag differs (other
//! type, or a newer/older schema version) is treated as a miss.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::key::CacheKey;

const MAGIC: [u8; 4] = *b"RJC\x01";
pub(crate) const HEADER_LEN: usize = 40;
const FLAG_LZ4: u8 = 1;

/// A type that can be stored in the cache.
///
/// `KIND` names the type and `VERSION` its schema; both go into every stored
/// entry, so changing a struct's fields together with `VERSION` turns old
/// entries into misses instead of decoding them wrongly.
///
/// ```
/// use ragjet_cache::CacheValue;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Answer { text: String, sources: Vec<u64> }
/// impl CacheValue for Answer { const KIND: &'static str = "myapp.answer"; const VERSION: u32 = 2; }
/// ```
pub trait CacheValue: Serialize + DeserializeOwned {
    /// Stable name of the type.
    const KIND: &'static str;
    /// Schema version of the type.
    const VERSION: u32 = 1;
    /// Tag stored in entry headers; derived, do not override.
    const TAG: u64 = type_tag(Self::KIND, Self::VERSION);
}

/// FNV-1a over the kind's bytes then the version's little-endian bytes.
/// `const` so the tag costs nothing at run time.
///
/// # Examples
///
/// ```
/// use ragjet_cache::{type_tag, CacheValue};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Answer { text: String }
/// impl CacheValue for Answer { const KIND: &'static str = "myapp.answer"; const VERSION: u32 = 2; }
///
/// assert_eq!(Answer::TAG, type_tag("myapp.answer", 2));
/// // A schema change (new VERSION) gives a new tag, so old entries read as misses.
/// assert_ne!(type_tag("myapp.answer", 1), type_tag("myapp.answer", 2));
/// ```
pub const fn type_tag(kind: &str, version: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let b = kind.as_bytes();
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let v = version.to_le_bytes();
    let mut j = 0;
    while j < 4 {
        h ^= v[j] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        j += 1;
    }
    h
}

macro_rules! value_impl {
    ($($t:ty => $k:literal),* $(,)?) => {
        $(impl CacheValue for $t { const KIND: &'static str = $k; })*
    };
}

value_impl! {
    String => "std.string",
    Vec<u8> => "std.bytes",
    Vec<f32> => "std.f32_vec",
    Vec<Vec<f32>> => "std.f32_vec_vec",
    Vec<String> => "std.string_vec",
    u64 => "std.u64",
    Vec<(u64, f32)> => "std.scored_ids",
}

/// Decoded header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub tag: u64,
    pub expires_at_ms: u64,
    pub hits: u32,
}

/// Why a stored entry could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Bytes that are not a valid entry (truncated, bad checksum, ...).
    Corrupt,
    /// A valid entry filed under another key.
    WrongKey,
    /// Larger than the reading tier accepts (stored or once decompressed).
    Oversize,
}

impl Damage {
    /// The `reason` label of `ragjet_cache_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Damage::Corrupt | Damage::WrongKey => crate::metrics::REASON_CORRUPT,
            Damage::Oversize => crate::metrics::REASON_OVERSIZE,
        }
    }
}

/// Serialises a value into an uncompressed envelope.
pub(crate) fn encode<V: CacheValue>(
    key: &CacheKey,
    value: &V,
    expires_at_ms: u64,
    hits: u32,
) -> Result<Vec<u8>, postcard::Error> {
    let out = postcard::to_extend(value, vec![0u8; HEADER_LEN])?;
    Ok(finish(out, 0, V::TAG, key, expires_at_ms, hits))
}

fn finish(mut out: Vec<u8>, flags: u8, tag: u64, key: &CacheKey, exp: u64, hits: u32) -> Vec<u8> {
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = flags;
    out[5..8].fill(0);
    out[8..16].copy_from_slice(&tag.to_le_bytes());
    out[16..24].copy_from_slice(&exp.to_le_bytes());
    out[24..32].copy_from_slice(&key.check().to_le_bytes());
    out[32..36].copy_from_slice(&hits.to_le_bytes());
    out[36..40].copy_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads the header without checking the payload (cheap: used on L1 hits,
/// whose bytes never left this process).
pub(crate) fn header(bytes: &[u8]) -> Option<Header> {
    if bytes.len() < HEADER_LEN || bytes[0..4] != MAGIC {
        return None;
    }
    Some(Header {
        tag: u64_at(bytes, 8),
        expires_at_ms: u64_at(bytes, 16),
        hits: u32_at(bytes, 32),
    })
}

/// Fully checks bytes read from disk or Redis and returns them as an
/// uncompressed envelope (ready for L1) with their header.
///
/// `max_len` bounds the envelope, stored and uncompressed: a size prefix
/// above it is refused before anything is allocated, so a damaged or
/// hostile entry cannot make a lookup allocate more than the tier's cap.
pub(crate) fn verify(
    key: &CacheKey,
    bytes: &[u8],
    max_len: usize,
) -> Result<(Header, Vec<u8>), Damage> {
    if bytes.len() > max_len {
        return Err(Damage::Oversize);
    }
    let h = header(bytes).ok_or(Damage::Corrupt)?;
    if bytes[5..8] != [0, 0, 0] || bytes[4] & !FLAG_LZ4 != 0 {
        return Err(Damage::Corrupt);
    }
    let payload = &bytes[HEADER_LEN..];
    if crc32fast::hash(payload) != u32_at(bytes, 36) {
        return Err(Damage::Corrupt);
    }
    if u64_at(bytes, 24) != key.check() {
        return Err(Damage::WrongKey);
    }
    if bytes[4] & FLAG_LZ4 == 0 {
        return Ok((h, bytes.to_vec()));
    }
    if payload.len() < 4 {
        return Err(Damage::Corrupt);
    }
    if u32_at(payload, 0) as usize > max_len.saturating_sub(HEADER_LEN) {
        return Err(Damage::Oversize);
    }
    let raw = lz4_flex::decompress_size_prepended(payload).map_err(|_| Damage::Corrupt)?;
    let mut out = Vec::with_capacity(HEADER_LEN + raw.len());
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.extend_from_slice(&raw);
    Ok((h, finish(out, 0, h.tag, key, h.expires_at_ms, h.hits)))
}

/// Compresses an uncompressed envelope's payload when it is at least
/// `min_len` bytes and compression actually saves space.
pub(crate) fn compress(key: &CacheKey, env: &[u8], min_len: usize) -> Option<Vec<u8>> {
    let h = header(env)?;
    let payload = &env[HEADER_LEN..];
    if payload.len() < min_len {
        return None;
    }
    let c = lz4_flex::compress_prepend_size(payload);
    if c.len() >= payload.len() {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + c.len());
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    out.extend_from_slice(&c);
    Some(finish(out, FLAG_LZ4, h.tag, key, h.expires_at_ms, h.hits))
}

/// Decodes the payload of an uncompressed envelope as `V`; `None` when the
/// tag differs or the payload does not decode.
pub(crate) fn decode<V: CacheValue>(env: &[u8]) -> Option<V> {
    let h = header(env)?;
    if h.tag != V::TAG || env[4] & FLAG_LZ4 != 0 {
        return None;
    }
    postcard::from_bytes(&env[HEADER_LEN..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Scope;

    fn key() -> CacheKey {
        Scope::tenant("t").key("n").str("k").finish()
    }

    #[test]
    fn round_trip_and_type_mismatch() {
        let env = encode(&key(), &"hello".to_string(), 123, 4).unwrap();
        let h = header(&env).unwrap();
        assert_eq!((h.expires_at_ms, h.hits, h.tag), (123, 4, String::TAG));
        assert_eq!(decode::<String>(&env).as_deref(), Some("hello"));
        assert_eq!(decode::<Vec<f32>>(&env), None);
        assert_ne!(type_tag("a", 1), type_tag("a", 2));
    }

    #[test]
    fn compression_round_trip_and_damage() {
        let v: Vec<f32> = vec![0.25; 1000];
        let k = key();
        let env = encode(&k, &v, 0, 0).unwrap();
        let c = compress(&k, &env, 64).expect("repetitive data compresses");
        assert!(c.len() < env.len() / 4);
        let (_, back) = verify(&k, &c, usize::MAX).unwrap();
        assert_eq!(back, env);
        assert_eq!(decode::<Vec<f32>>(&back), Some(v));

        let mut bad = c.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(verify(&k, &bad, usize::MAX), Err(Damage::Corrupt));
        assert_eq!(verify(&k, &c[..10], usize::MAX), Err(Damage::Corrupt));
        let other = Scope::tenant("t").key("n").str("other").finish();
        assert_eq!(verify(&other, &c, usize::MAX), Err(Damage::WrongKey));
    }

    #[test]
    fn size_caps_apply_before_decompressing() {
        let k = key();
        let env = encode(&k, &vec![0.5f32; 1000], 0, 0).unwrap();
        let c = compress(&k, &env, 64).unwrap();
        // Small when stored, too large once decompressed.
        assert!(c.len() < 200 && env.len() > 4000);
        assert_eq!(verify(&k, &c, 1000), Err(Damage::Oversize));
        assert_eq!(verify(&k, &env, env.len() - 1), Err(Damage::Oversize));
        assert!(verify(&k, &c, env.len()).is_ok());

        // A size prefix claiming 1 GiB over a few bytes of lz4 is refused
        // without allocating it: before, any prefix up to 1 GiB was honoured.
        let mut hostile = c[..HEADER_LEN].to_vec();
        hostile.extend_from_slice(&(1u32 << 30).to_le_bytes());
        hostile.extend_from_slice(&[0x1f, 0, 1, 0]);
        let hostile = finish(hostile, FLAG_LZ4, String::TAG, &k, 0, 0);
        assert_eq!(verify(&k, &hostile, 1 << 20), Err(Damage::Oversize));
    }
}
