//! The gate every request about a topic passes, in one order for both APIs:
//! token (401) → the user's rate (429) → the topic exists (404) → the user may write / read it (403).
//! A producer asking what became of its own events ([`Action::Status`]) passes with the right to write,
//! at the query rate: it reads, but only about what it sent.
//! Pure: the APIs reach it through the `http` feature's extractors (`http::gate`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::access::{Restrictions, SharedAccess};
use crate::auth::{JwtVerifier, Principal};
use crate::catalogue::{Catalogue, CatalogueError, Topic};
use crate::error::{ApiError, ErrorKind};
use crate::ratelimit::RateLimits;

/// What decides who may do what: the topics and the access rules (each swapped whole on SIGHUP), the
/// token keys and the per-user rates.
pub struct Gatekeeping {
    pub catalogue: Arc<SharedCatalogue>,
    pub access: Arc<SharedAccess>,
    pub verifier: Arc<JwtVerifier>,
    pub rate_limits: RateLimits,
}

/// What a request is about to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Write,
    Read,
    /// The status of the caller's own events (`GET /stats/{topic}/events/{id}/status`): allowed to
    /// whoever may write the topic (a producer's token), counted against the query rate.
    Status,
}

/// A request that passed the gate: who, which topic, under which field restrictions.
pub struct Passed {
    pub principal: Principal,
    pub topic: Arc<Topic>,
    pub restrictions: Restrictions,
}

impl Gatekeeping {
    /// The topic, or the one 404 every route answers for a topic that does not exist.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        self.catalogue.current().shared(name).ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("topic {name:?} does not exist"),
            )
            .with_field("topic")
        })
    }

    /// Runs the gate for `action` on the topic called `name`, with the request's `Authorization` header.
    pub fn pass(
        &self,
        authorization: Option<&str>,
        name: &str,
        action: Action,
    ) -> Result<Passed, ApiError> {
        let principal = self.verifier.authenticate(authorization)?;
        match action {
            Action::Write => self.rate_limits.check_write(&principal.user)?,
            Action::Read | Action::Status => self.rate_limits.check_query(&principal.user)?,
        }
        let topic = self.topic(name)?;
        let rules = self.access.rules();
        let restrictions = match action {
            Action::Write | Action::Status => rules.authorize_write(&principal, &topic.name)?,
            Action::Read => rules.authorize_read(&principal, &topic.name)?,
        };
        Ok(Passed {
            principal,
            topic,
            restrictions,
        })
    }
}

impl Passed {
    /// The reader's mandatory filters (empty when unrestricted): queries, aggregates and exports AND
    /// them to whatever the reader asks, so no answer reveals an event the reader may not see.
    pub fn read_filters(&self) -> Result<Vec<crate::query::Filter>, ApiError> {
        self.restrictions
            .read_filters(&self.topic.fields, &self.principal.user, &self.topic.name)
    }

    /// Only unrestricted readers pass: for raw messages (dead letters) no field restriction can filter.
    pub fn require_unrestricted(&self) -> Result<(), ApiError> {
        if self.restrictions.is_unrestricted() {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorKind::Permission,
            format!(
                "user {:?} may read topic {:?} only in part, and dead letters cannot be filtered",
                self.principal.user, self.topic.name
            ),
        )
        .with_field("topic"))
    }
}

/// Called with the new catalogue and the names of the topics it added, after a reload that added some.
type NewTopicsHook = Box<dyn Fn(Arc<Catalogue>, Vec<String>) + Send + Sync>;

/// The topics in use, swapped whole when the topics directory is read again (SIGHUP, `reload`): a request
/// keeps the `Arc<Topic>` it started with, the next one sees the new topics. A directory that does not
/// load changes nothing. A topic removed from the directory is gone for new requests (404); its stored
/// events stay in the database.
pub struct SharedCatalogue {
    dir: Option<PathBuf>,
    current: RwLock<Arc<Catalogue>>,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
    /// Why the last reload failed, until one succeeds (the readiness probe's warning).
    last_failure: Mutex<Option<String>>,
    on_new_topics: Mutex<Vec<NewTopicsHook>>,
}

impl SharedCatalogue {
    /// Loads the directory; fails (at start-up) when it does not load.
    pub fn load_dir(dir: &Path) -> Result<SharedCatalogue, CatalogueError> {
        let mut shared = SharedCatalogue::new(Catalogue::load_dir(dir)?);
        shared.dir = Some(dir.to_owned());
        Ok(shared)
    }

    /// Fixed topics, not backed by a directory ([`SharedCatalogue::reload`] keeps them).
    pub fn new(catalogue: Catalogue) -> SharedCatalogue {
        SharedCatalogue {
            dir: None,
            current: RwLock::new(Arc::new(catalogue)),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            on_new_topics: Mutex::new(Vec::new()),
        }
    }

    /// The topics in use now.
    pub fn current(&self) -> Arc<Catalogue> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs `hook` after each reload that adds topics (the ingest-api creates their Kafka topics).
    pub fn on_new_topics(
        &self,
        hook: impl Fn(Arc<Catalogue>, Vec<String>) + Send + Sync + 'static,
    ) {
        self.on_new_topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Box::new(hook));
    }

    /// Reads the directory again and answers the names of the topics it added. A directory that does
    /// not load changes nothing: the topics in use stay, and the error is returned for the log.
    pub fn reload(&self) -> Result<Vec<String>, CatalogueError> {
        let Some(dir) = &self.dir else {
            return Ok(Vec::new());
        };
        let loaded = match Catalogue::load_dir(dir) {
            Ok(catalogue) => Arc::new(catalogue),
            Err(error) => {
                self.failed_reloads.fetch_add(1, Ordering::Relaxed);
                *self.lock_last_failure() = Some(error.to_string());
                return Err(error);
            }
        };
        *self.lock_last_failure() = None;
        let previous = {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::replace(&mut *current, loaded.clone())
        };
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let added: Vec<String> = loaded
            .names()
            .filter(|name| previous.get(name).is_none())
            .map(str::to_owned)
            .collect();
        if !added.is_empty() {
            let hooks = self
                .on_new_topics
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for hook in hooks.iter() {
                hook(loaded.clone(), added.clone());
            }
        }
        Ok(added)
    }

    fn lock_last_failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The readiness probe's warning while the last reload failed: why, and that the previous topics
    /// stay in use.
    pub fn reload_warning(&self) -> Option<String> {
        self.lock_last_failure()
            .as_ref()
            .map(|error| format!("topics not reloaded: {error}; the previous topics stay in use"))
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads that failed (the directory did not load) so far.
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod shared_catalogue_tests {
    use super::*;

    fn write_topic(dir: &Path, name: &str, schema: &str) {
        std::fs::write(dir.join(format!("{name}.json")), schema).expect("topic file");
    }

    const SCHEMA: &str = r#"{"type": "object", "properties": {"n": {"type": "integer"}}}"#;

    #[test]
    fn a_reload_adds_topics_keeps_held_ones_and_a_broken_directory_changes_nothing() {
        let dir = std::env::temp_dir().join(format!(
            "eventgate-shared-catalogue-{}",
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        write_topic(&dir, "a.one", SCHEMA);
        let shared = SharedCatalogue::load_dir(&dir).expect("loads");
        let added_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = added_seen.clone();
        shared.on_new_topics(move |catalogue, added| {
            assert!(added.iter().all(|name| catalogue.get(name).is_some()));
            seen.lock().expect("lock").extend(added);
        });
        let held = shared.current().shared("a.one").expect("a.one");

        write_topic(&dir, "b.two", SCHEMA);
        assert_eq!(shared.reload().expect("reloads"), vec!["b.two".to_owned()]);
        assert!(shared.current().get("b.two").is_some());
        assert_eq!(*added_seen.lock().expect("lock"), vec!["b.two".to_owned()]);
        assert_eq!(held.name, "a.one");

        write_topic(&dir, "c.broken", "{\"type\": ");
        assert!(shared.reload().is_err());
        assert_eq!(shared.failed_reloads(), 1);
        let warning = shared.reload_warning().expect("a warning while it fails");
        assert!(warning.contains("c.broken"), "{warning}");
        assert!(
            shared.current().get("b.two").is_some(),
            "the topics in use stay"
        );
        assert!(shared.current().get("c.broken").is_none());

        std::fs::remove_file(dir.join("c.broken.json")).expect("remove");
        std::fs::remove_file(dir.join("b.two.json")).expect("remove");
        assert!(shared.reload().expect("reloads").is_empty());
        assert!(shared.reload_warning().is_none(), "a good reload clears it");
        assert!(
            shared.current().get("b.two").is_none(),
            "a removed topic is gone"
        );
        assert_eq!(shared.reloads(), 2);
        assert_eq!(
            added_seen.lock().expect("lock").len(),
            1,
            "no hook without new topics"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
