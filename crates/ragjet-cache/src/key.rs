//! Scopes and deterministic cache keys.
//!
//! # Key derivation (format v1)
//!
//! A [`CacheKey`] is the 32-byte BLAKE3 hash of a canonical byte stream.
//! Every variable-length field is written as its length (u64, little endian)
//! followed by its bytes, so no two different field lists produce the same
//! stream (`["ab", "c"]` and `["a", "bc"]` differ). The stream is:
//!
//! 1. the domain string `ragjet-cache/key/v1`;
//! 2. the scope: tenant; user as one byte `0` (none) or `1` followed by the
//!    user; data version as u64 little endian;
//! 3. the namespace (which cache: `embedding`, `retrieval`, ...);
//! 4. each part pushed on the [`KeyBuilder`]: one type byte (`s` string,
//!    `b` bytes, `u` u64, `i` i64, `f` f32 bits, `d` f64 bits, `o` bool)
//!    followed by the length-prefixed value bytes (integers and floats little
//!    endian).
//!
//! Nothing in it depends on the platform, pointer width or process (no
//! `std::hash::Hash`, whose output is allowed to change), so the same inputs
//! give the same key on every machine and run; a test pins one value.
//! BLAKE3 is used rather than a faster non-cryptographic hash because the key
//! is the tenant boundary: with xxh3 a tenant could craft inputs that collide
//! with another tenant's key, with a 256-bit cryptographic hash it cannot.
//!
//! A key can only be made from a [`Scope`], and the scope is hashed into it,
//! so there is no way to name another tenant's entry through this API.

use std::fmt;
use std::hash::{Hash, Hasher};

const DOMAIN: &[u8] = b"ragjet-cache/key/v1";

/// Who an entry belongs to and which data it was derived from.
///
/// Every cache key is derived from a scope. Entries of one tenant are never
/// visible to another; a `user` narrows further (for per-user answers); bumping
/// `data_version` (after re-ingesting documents, say) makes every older entry
/// of that scope unreachable.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::Scope;
///
/// let acme = Scope::tenant("acme");
/// let alice = acme.clone().with_user("alice");
/// let reingested = acme.clone().with_data_version(2);
/// let key = |s: &Scope| s.key("answers").str("what is rust?").finish();
/// // Same question, three scopes, three keys: tenants, users and data versions never share entries.
/// assert_ne!(key(&acme), key(&alice));
/// assert_ne!(key(&acme), key(&reingested));
/// assert_eq!(key(&acme), key(&Scope::tenant("acme")));
/// assert_ne!(acme.digest(), alice.digest());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The tenant (customer, workspace) that owns the entry.
    pub tenant: String,
    /// An optional user inside the tenant.
    pub user: Option<String>,
    /// Version of the tenant's data; part of every key.
    pub data_version: u64,
}

impl Scope {
    /// A tenant-wide scope at data version 0.
    pub fn tenant(tenant: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            user: None,
            data_version: 0,
        }
    }

    /// The same scope narrowed to one user.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The same scope at another data version.
    pub fn with_data_version(mut self, version: u64) -> Self {
        self.data_version = version;
        self
    }

    /// Starts a key in this scope for the cache `namespace`.
    pub fn key(&self, namespace: &str) -> KeyBuilder {
        let mut h = blake3::Hasher::new();
        write_field(&mut h, DOMAIN);
        self.write_scope(&mut h);
        write_field(&mut h, namespace.as_bytes());
        KeyBuilder { hasher: h }
    }

    /// A 32-byte digest of the scope alone (same encoding as in keys), used
    /// to partition the semantic cache by scope.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        write_field(&mut h, b"ragjet-cache/scope/v1");
        self.write_scope(&mut h);
        *h.finalize().as_bytes()
    }

    fn write_scope(&self, h: &mut blake3::Hasher) {
        write_field(h, self.tenant.as_bytes());
        match &self.user {
            None => {
                h.update(&[0]);
            }
            Some(u) => {
                h.update(&[1]);
                write_field(h, u.as_bytes());
            }
        }
        h.update(&self.data_version.to_le_bytes());
    }
}

fn write_field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Builds a [`CacheKey`] part by part; made by [`Scope::key`].
///
/// # Examples
///
/// ```
/// use ragjet_cache::Scope;
///
/// let scope = Scope::tenant("acme");
/// let key = scope.key("search").str("rust").u64(10).f32(0.7).bool(true).finish();
/// // Fields are length-prefixed and typed: "ab"+"c" and "a"+"bc" are different keys.
/// let a = scope.key("n").str("ab").str("c").finish();
/// let b = scope.key("n").str("a").str("bc").finish();
/// assert_ne!(a, b);
/// assert_ne!(key, scope.key("search").str("rust").u64(10).f32(0.7).bool(false).finish());
/// # let _ = scope.key("x").bytes(b"raw").i64(-1).f64(1.0).finish();
/// ```
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
}

impl KeyBuilder {
    fn part(mut self, tag: u8, bytes: &[u8]) -> Self {
        self.hasher.update(&[tag]);
        write_field(&mut self.hasher, bytes);
        self
    }

    /// Adds a string.
    pub fn str(self, s: &str) -> Self {
        self.part(b's', s.as_bytes())
    }

    /// Adds raw bytes.
    pub fn bytes(self, b: &[u8]) -> Self {
        self.part(b'b', b)
    }

    /// Adds an unsigned integer.
    pub fn u64(self, v: u64) -> Self {
        self.part(b'u', &v.to_le_bytes())
    }

    /// Adds a signed integer.
    pub fn i64(self, v: i64) -> Self {
        self.part(b'i', &v.to_le_bytes())
    }

    /// Adds an `f32` by its bit pattern (so `0.7` and `0.70000005` differ,
    /// and `-0.0` differs from `0.0`).
    pub fn f32(self, v: f32) -> Self {
        self.part(b'f', &v.to_bits().to_le_bytes())
    }

    /// Adds an `f64` by its bit pattern.
    pub fn f64(self, v: f64) -> Self {
        self.part(b'd', &v.to_bits().to_le_bytes())
    }

    /// Adds a boolean.
    pub fn bool(self, v: bool) -> Self {
        self.part(b'o', &[v as u8])
    }

    /// Finishes the key.
    pub fn finish(self) -> CacheKey {
        CacheKey(*self.hasher.finalize().as_bytes())
    }
}

/// A scoped, deterministic cache key (see the module docs for its
/// derivation). It can only be built from a [`Scope`].
///
/// # Examples
///
/// ```
/// use ragjet_cache::Scope;
///
/// let key = Scope::tenant("acme").key("answers").str("hello").finish();
/// assert_eq!(key.as_bytes().len(), 32);
/// let hex = key.to_hex();
/// assert_eq!(hex.len(), 64);
/// assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hexadecimal form (64 characters), used as the Redis key.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// First 8 bytes as an integer, stored in value headers to catch an
    /// entry filed under the wrong key.
    pub(crate) fn check(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().unwrap_or([0; 8]))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl Hash for CacheKey {
    // The key is already a uniform cryptographic hash: feeding 8 of its bytes
    // to the table's hasher is enough and keeps L1 lookups cheap.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.check());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_is_pinned() {
        // If this changes, every persisted L2/L3 entry becomes unreachable:
        // bump the domain version on purpose instead.
        let scope = Scope::tenant("acme").with_user("u1").with_data_version(7);
        let key = scope
            .key("embedding")
            .str("all-MiniLM-L6-v2")
            .u64(42)
            .f32(0.5)
            .bytes(&[1, 2, 3])
            .finish();
        assert_eq!(
            key.to_hex(),
            "8a635f56d7779625095f139cd041d6af4ccb6c6acc6f89778b714aeecd88511e"
        );
    }

    #[test]
    fn fields_are_unambiguous() {
        let s = Scope::tenant("t");
        let a = s.key("n").str("ab").str("c").finish();
        let b = s.key("n").str("a").str("bc").finish();
        assert_ne!(a, b);
        let c = s.key("n").str("1").finish();
        let d = s.key("n").u64(1).finish();
        assert_ne!(c, d);
        // tenant/user boundary: ("ab", None) vs ("a", Some("b")).
        let e = Scope::tenant("ab").key("n").finish();
        let f = Scope::tenant("a").with_user("b").key("n").finish();
        assert_ne!(e, f);
    }

    #[test]
    fn scope_fields_all_change_the_key() {
        let base = Scope::tenant("a");
        let k = |s: &Scope| s.key("n").str("q").finish();
        assert_ne!(k(&base), k(&Scope::tenant("b")));
        assert_ne!(k(&base), k(&base.clone().with_user("u")));
        assert_ne!(k(&base), k(&base.clone().with_data_version(1)));
        assert_ne!(base.key("n").finish(), base.key("m").finish());
        assert_eq!(k(&base), k(&Scope::tenant("a")));
        assert_ne!(base.digest(), Scope::tenant("b").digest());
    }
}
