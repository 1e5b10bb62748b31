//! Service API keys: a name, scopes, and the SHA-256 of a random secret, kept in a TOML file
//! (`HERALD_API_KEYS_FILE`) that the operator mounts as a secret. The key itself is shown once,
//! when it is created, and never stored.
//!
//! A plain SHA-256 is enough here (no salt, no slow hash): keys are 256 random bits, not
//! passwords, so there is nothing to guess from the hash. The file is read again when it
//! changes, so `herald keys create` and `herald keys revoke` take effect on a running
//! herald-ingest within seconds, with no restart.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use super::scope::Scope;

/// A service key as presented by a caller; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// What every Herald key starts with, so that it is told apart from a JWT at a glance
    /// (and found by secret scanners).
    pub const PREFIX: &'static str = "hk_";

    /// A new key: the prefix and 32 bytes from the operating system's CSPRNG, in hex.
    pub fn generate() -> Result<ApiKey, KeyError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(ApiKey(format!(
            "{}{}",
            Self::PREFIX,
            super::hex::encode(&bytes)
        )))
    }

    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether a bearer credential is meant as a service key rather than a JWT.
    pub fn looks_like(credential: &str) -> bool {
        credential.starts_with(Self::PREFIX)
    }

    fn hash(&self) -> String {
        super::hex::encode(&self.digest())
    }

    fn digest(&self) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes()).as_ref(),
        );
        out
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// A key's SHA-256.
type Digest = [u8; 32];

fn unhex_digest(text: &str) -> Option<Digest> {
    super::hex::decode(text.trim(), 32)?.try_into().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("unknown scope {0:?} (known: {known})", known = Scope::names())]
    UnknownScope(String),
    #[error("a key name is 1 to 64 letters, digits, '-', '_' or '.'")]
    BadName,
    #[error("a key needs at least one scope")]
    NoScope,
    #[error("an active key is already named {0:?}: revoke it first, or pick another name")]
    NameTaken(String),
    #[error("no active key is named {0:?}")]
    NoSuchKey(String),
    #[error("the operating system's random source failed")]
    Random,
}

/// One entry of the key file. `hash` is the SHA-256 of the key, in hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: String,
    pub hash: String,
    pub scopes: Vec<Scope>,
    /// When it was created, RFC 3339.
    pub created: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyRecord>,
}

/// A caller proven by a key: its name (safe to log) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    scopes: u16,
}

impl Caller {
    pub fn new(name: &str, scopes: &[Scope]) -> Caller {
        Caller {
            name: name.into(),
            scopes: scopes.iter().fold(0, |bits, s| bits | s.bit()),
        }
    }

    pub fn may(&self, scope: Scope) -> bool {
        self.scopes & (scope.bit() | Scope::Admin.bit()) != 0
    }
}

/// The active keys of a key file, by hash, read again when the file changes.
pub struct KeyStore {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

struct Loaded {
    by_hash: HashMap<Digest, Caller>,
    version: Option<Version>,
}

/// What tells one version of the file from the next. The time stamp alone is not enough:
/// file systems stamp with a coarse clock, so two edits a few milliseconds apart can share
/// it; each edit renames a new file into place, so the inode changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    inode: u64,
    len: u64,
}

impl KeyStore {
    /// Reads the key file; a missing or malformed file is an error (a server must not start
    /// open because its secret was not mounted).
    pub fn open(path: &Path) -> Result<KeyStore, KeyError> {
        let loaded = load(path)?;
        Ok(KeyStore {
            path: path.to_path_buf(),
            loaded: RwLock::new(loaded),
        })
    }

    /// The caller a presented key belongs to, if it is an active key of this store.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let hash = ApiKey::new(presented).digest();
        if let Some(caller) = self.known(&hash) {
            return Some(caller);
        }
        // A key just made by `herald keys create` works at once: an unknown key costs a
        // `stat` of the file (about a microsecond), and a read only when the file changed.
        match self.reload_if_changed() {
            Ok(true) => self.known(&hash),
            _ => None,
        }
    }

    /// The caller of a presented key, with the key's SHA-256 in hex: what a login session
    /// remembers instead of the key.
    pub fn authenticate_for_session(&self, presented: &str) -> Option<(Caller, String)> {
        let caller = self.authenticate(presented)?;
        Some((caller, ApiKey::new(presented).hash()))
    }

    /// The caller whose key has this SHA-256 (hex), while that key is active: a session ends
    /// when its key is revoked.
    pub fn caller_by_hash(&self, hash: &str) -> Option<Caller> {
        let digest = unhex_digest(hash)?;
        let _ = self.reload_if_changed();
        self.known(&digest)
    }

    fn known(&self, hash: &Digest) -> Option<Caller> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded.by_hash.get(hash).cloned()
    }

    /// How many active keys there are.
    pub fn len(&self) -> usize {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again if it changed since it was last read. A file that became
    /// unreadable or malformed fails closed: no key is accepted until it is mended (keeping
    /// the keys read before would keep a revoked key working), and it is not read again until
    /// it changes (not once per unknown key). `herald keys` writes by rename, so a reader
    /// never sees half a file; only a hand edit can leave one.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let current = version(&self.path);
        {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            if current == loaded.version {
                return Ok(false);
            }
        }
        let (fresh, outcome) = match load(&self.path) {
            Ok(fresh) => (fresh, Ok(true)),
            Err(e) => (
                Loaded {
                    by_hash: HashMap::new(),
                    version: current,
                },
                Err(e),
            ),
        };
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        outcome
    }

    /// [`KeyStore::reload_if_changed`], with what happened in the log: what the programs'
    /// periodic re-reads call.
    pub fn reload_and_report(&self) {
        match self.reload_if_changed() {
            Ok(true) => tracing::info!(active = self.len(), "service keys read again"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "the key file could not be read again: no service key is accepted until it is mended")
            }
        }
    }
}

fn version(path: &Path) -> Option<Version> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Version {
        modified: meta.modified().ok(),
        inode,
        len: meta.len(),
    })
}

fn load(path: &Path) -> Result<Loaded, KeyError> {
    let version = version(path);
    check_private(path)?;
    let file = read(path)?;
    let mut by_hash = HashMap::new();
    for k in file.key.iter().filter(|k| !k.revoked) {
        let digest = unhex_digest(&k.hash).ok_or_else(|| KeyError::Invalid {
            path: path.to_path_buf(),
            message: format!("the hash of key {:?} is not 64 hex digits", k.name),
        })?;
        by_hash.insert(digest, Caller::new(&k.name, &k.scopes));
    }
    Ok(Loaded { by_hash, version })
}

/// Refuses a key file other users of the machine may read or change: the hashes let anyone
/// who can write the file add a key of their own (`herald keys` writes 0600).
fn check_private(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 || mode & 0o020 != 0 {
            return Err(KeyError::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "its permissions ({mode:o}) let other users read or change it: chmod 600 it \
                     (640 for a group that only reads it)"
                ),
            });
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<KeyFile, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

fn read_or_empty(path: &Path) -> Result<KeyFile, KeyError> {
    if path.exists() {
        read(path)
    } else {
        Ok(KeyFile::default())
    }
}

/// Writes the whole file anew, readable by its owner only, and renames it into place so a
/// server reading it never sees half of it.
fn write(path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = toml::to_string(file).map_err(|e| KeyError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // 0600: its owner only (a file others may read or change is refused: check_private).
    crate::replace_file::replace_file(
        path,
        0o600,
        &[
            b"# Herald service keys (hashes only): manage with `herald keys create|revoke|list`.\n",
            text.as_bytes(),
        ],
    )
    .map_err(io)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Adds a key named `name` with `scopes` to the file (created if missing) and returns the
/// key: the only time it exists outside its holder's hands.
pub fn create(path: &Path, name: &str, scopes: &[Scope]) -> Result<ApiKey, KeyError> {
    if !valid_name(name) {
        return Err(KeyError::BadName);
    }
    if scopes.is_empty() {
        return Err(KeyError::NoScope);
    }
    let mut file = read_or_empty(path)?;
    if file.key.iter().any(|k| k.name == name && !k.revoked) {
        return Err(KeyError::NameTaken(name.to_string()));
    }
    let key = ApiKey::generate()?;
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    file.key.push(KeyRecord {
        name: name.to_string(),
        hash: key.hash(),
        scopes,
        created: jiff::Timestamp::now().to_string(),
        revoked: false,
    });
    write(path, &file)?;
    Ok(key)
}

/// Marks the active key named `name` revoked; a running server stops taking it within
/// seconds.
pub fn revoke(path: &Path, name: &str) -> Result<(), KeyError> {
    let mut file = read(path)?;
    let record = file
        .key
        .iter_mut()
        .find(|k| k.name == name && !k.revoked)
        .ok_or_else(|| KeyError::NoSuchKey(name.to_string()))?;
    record.revoked = true;
    write(path, &file)
}

/// Every key of the file, revoked ones included.
pub fn list(path: &Path) -> Result<Vec<KeyRecord>, KeyError> {
    Ok(read(path)?.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_may_read_or_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::env::temp_dir().join(format!("herald-keys-mode-{}.toml", std::process::id()));
        let _ = std::fs::remove_file(&path);
        create(&path, "ops", &[Scope::Admin]).unwrap();
        assert!(KeyStore::open(&path).is_ok());
        for mode in [0o644, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = KeyStore::open(&path).err().expect("refused").to_string();
            assert!(err.contains("chmod 600"), "{mode:o}: {err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(KeyStore::open(&path).is_ok());
        let _ = std::fs::remove_file(&path);
    }

    fn temp_file(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("herald-keys-{}-{name}.toml", std::process::id()))
    }

    #[test]
    fn a_created_key_authenticates_with_its_scopes_until_revoked() {
        let path = temp_file("lifecycle");
        let _ = std::fs::remove_file(&path);
        let shop = create(&path, "shop", &[Scope::RequestsWrite]).unwrap();
        let ops = create(&path, "ops", &[Scope::Admin]).unwrap();
        assert!(shop.expose().starts_with("hk_") && shop.expose().len() == 67);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(shop.expose()), "the file holds hashes only");

        let store = KeyStore::open(&path).unwrap();
        let caller = store.authenticate(shop.expose()).unwrap();
        assert_eq!(&*caller.name, "shop");
        assert!(caller.may(Scope::RequestsWrite));
        assert!(!caller.may(Scope::CustomersRead));
        assert!(store
            .authenticate(ops.expose())
            .unwrap()
            .may(Scope::CustomersRead));
        assert!(store.authenticate("hk_not-a-key").is_none());
        assert!(matches!(
            create(&path, "shop", &[Scope::Admin]),
            Err(KeyError::NameTaken(_))
        ));

        revoke(&path, "shop").unwrap();
        assert!(
            store.reload_if_changed().unwrap(),
            "an edit right after another is seen"
        );
        assert!(store.authenticate(shop.expose()).is_none());
        assert!(store.authenticate(ops.expose()).is_some());
        let _ = std::fs::remove_file(&path);
    }

    /// A file as an operator's editor leaves it, readable by its owner only.
    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    /// A hand edit that breaks the file must not keep a revoked key working: no key is
    /// accepted until the file is mended, and then the keys it holds are.
    #[test]
    fn a_key_file_broken_after_start_fails_closed_until_mended() {
        let path = temp_file("broken");
        let _ = std::fs::remove_file(&path);
        let shop = create(&path, "shop", &[Scope::RequestsWrite]).unwrap();
        let store = KeyStore::open(&path).unwrap();
        assert!(store.authenticate(shop.expose()).is_some());
        let good = std::fs::read_to_string(&path).unwrap();
        let tmp = path.with_extension("edit");
        write_private(&tmp, "[[key]\nname = ");
        std::fs::rename(&tmp, &path).unwrap();
        assert!(
            store.reload_if_changed().is_err(),
            "the broken file is reported"
        );
        assert!(
            store.authenticate(shop.expose()).is_none(),
            "no key while broken"
        );
        assert!(
            !store.reload_if_changed().unwrap(),
            "not read again until it changes"
        );
        write_private(&tmp, &good);
        std::fs::rename(&tmp, &path).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert!(store.authenticate(shop.expose()).is_some(), "mended");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn bad_names_scopes_and_files_are_refused() {
        let path = temp_file("bad");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            create(&path, "no spaces", &[Scope::Admin]),
            Err(KeyError::BadName)
        ));
        assert!(matches!(create(&path, "x", &[]), Err(KeyError::NoScope)));
        assert!(matches!(
            "requests:delete".parse::<Scope>(),
            Err(KeyError::UnknownScope(_))
        ));
        assert!(matches!(KeyStore::open(&path), Err(KeyError::Io { .. })));
        std::fs::write(&path, "key = 3").unwrap();
        assert!(matches!(
            KeyStore::open(&path),
            Err(KeyError::Invalid { .. })
        ));
        let _ = std::fs::remove_file(&path);
    }
}
