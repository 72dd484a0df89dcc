//! When to email the maintainers about a failure. Pure rules: no SMTP, no database, no clock (every
//! call takes `now`), so every throttling decision is unit-tested. What the email says is
//! [`super::email_text`].
//!
//! Four kinds of failure ([`AlertKind`]):
//! - **dead letters**, a *discrete* kind: each parked message is one occurrence. The first occurrence
//!   opens an incident; its email waits `group_wait` so that a burst (a broken partition) lands in one
//!   email with the count and the first few examples. Later occurrences are held and counted; one window
//!   after the last email a digest goes out if any were held, else a "recovered" email closes the incident.
//! - **database unreachable**, **broker unreachable**, **writer crash loop**, *conditions*: the writer
//!   reports down/up. The email goes out once the condition has lasted its threshold (a database restart
//!   of a few seconds is not worth an email), a reminder once per window while it lasts, and a "recovered"
//!   email when it clears — only for an incident that was emailed, so a short blip sends nothing.
//!
//! Invariant: at most one alert email (first email, reminder or digest) per kind per `window`, whatever
//! the rate of failures; "recovered" emails only close an incident that was emailed.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use eventgate_core::config::AlertsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertKind {
    DeadLetters,
    DatabaseUnreachable,
    BrokerUnreachable,
    CrashLoop,
}

impl AlertKind {
    pub const ALL: [AlertKind; 4] = [
        AlertKind::DeadLetters,
        AlertKind::DatabaseUnreachable,
        AlertKind::BrokerUnreachable,
        AlertKind::CrashLoop,
    ];

    /// Stable name, for logs, metrics labels and the `alert_state` table.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::DeadLetters => "dead_letters",
            AlertKind::DatabaseUnreachable => "database_unreachable",
            AlertKind::BrokerUnreachable => "broker_unreachable",
            AlertKind::CrashLoop => "crash_loop",
        }
    }

    fn is_condition(self) -> bool {
        !matches!(self, AlertKind::DeadLetters)
    }
}

/// The throttling rules, from [`AlertsConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPolicy {
    pub window: Duration,
    pub group_wait: Duration,
    pub database_after: Duration,
    pub broker_after: Duration,
    pub max_examples: usize,
}

impl AlertPolicy {
    pub fn from_config(config: &AlertsConfig) -> AlertPolicy {
        AlertPolicy {
            window: Duration::from_millis(config.window_ms),
            group_wait: Duration::from_millis(config.group_wait_ms),
            database_after: Duration::from_millis(config.database_after_ms),
            broker_after: Duration::from_millis(config.broker_after_ms),
            max_examples: config.max_examples,
        }
    }

    /// How long a condition must last before its first email. A crash loop is already a sustained
    /// condition when it is detected.
    fn threshold(&self, kind: AlertKind) -> Duration {
        match kind {
            AlertKind::DatabaseUnreachable => self.database_after,
            AlertKind::BrokerUnreachable => self.broker_after,
            AlertKind::DeadLetters => self.group_wait,
            AlertKind::CrashLoop => Duration::ZERO,
        }
    }
}

/// What an email announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeState {
    /// The first email of an incident, or a digest of occurrences held since the last email.
    Firing,
    /// A condition that still holds one window after the last email.
    StillFiring,
    /// The incident is over.
    Recovered,
}

/// One email to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: AlertKind,
    pub state: NoticeState,
    /// When the incident began.
    pub since: OffsetDateTime,
    /// When the notice was decided.
    pub at: OffsetDateTime,
    /// Occurrences this email reports (dead letters since the last email, failed checks, crashes).
    pub count: u64,
    /// Occurrences over the whole incident.
    pub total: u64,
    /// The first few occurrences this email reports.
    pub examples: Vec<String>,
    /// The latest error of a condition.
    pub detail: Option<String>,
    /// When the next alert email of this kind may go out, at the earliest.
    pub next_email_after: Option<OffsetDateTime>,
}

/// Per-kind state of one [`Alerter`].
#[derive(Debug, Clone, Default)]
struct KindState {
    /// When the last alert email (first, reminder or digest) of this kind was decided.
    last_email: Option<OffsetDateTime>,
    incident: Option<Incident>,
}

#[derive(Debug, Clone)]
struct Incident {
    started: OffsetDateTime,
    /// A condition that cleared; the "recovered" email is due.
    cleared: Option<OffsetDateTime>,
    /// An email about this incident went out.
    notified: bool,
    /// Occurrences not reported yet, and the first few of them.
    pending: u64,
    examples: Vec<String>,
    total: u64,
    detail: Option<String>,
}

impl Incident {
    fn new(now: OffsetDateTime) -> Incident {
        Incident {
            started: now,
            cleared: None,
            notified: false,
            pending: 0,
            examples: Vec::new(),
            total: 0,
            detail: None,
        }
    }
}

/// The throttling state machine of one process: feed it what happens, ask it what to send.
#[derive(Debug, Clone)]
pub struct Alerter {
    policy: AlertPolicy,
    kinds: BTreeMap<AlertKind, KindState>,
}

impl Alerter {
    pub fn new(policy: AlertPolicy) -> Alerter {
        Alerter {
            policy,
            kinds: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> &AlertPolicy {
        &self.policy
    }

    /// `count` occurrences of a discrete kind (dead letters), with examples.
    pub fn record(
        &mut self,
        kind: AlertKind,
        count: u64,
        examples: impl IntoIterator<Item = String>,
        now: OffsetDateTime,
    ) {
        if count == 0 {
            return;
        }
        let max = self.policy.max_examples;
        let incident = self
            .kinds
            .entry(kind)
            .or_default()
            .incident
            .get_or_insert_with(|| Incident::new(now));
        incident.pending += count;
        incident.total += count;
        let room = max.saturating_sub(incident.examples.len());
        incident.examples.extend(examples.into_iter().take(room));
    }

    /// A condition was observed to hold (a failed check), with the error.
    pub fn down(&mut self, kind: AlertKind, detail: impl Into<String>, now: OffsetDateTime) {
        let state = self.kinds.entry(kind).or_default();
        let incident = match &mut state.incident {
            // Down again before the "recovered" email went out: the same incident goes on.
            Some(incident) => {
                incident.cleared = None;
                incident
            }
            None => state.incident.insert(Incident::new(now)),
        };
        incident.pending += 1;
        incident.total += 1;
        incident.detail = Some(detail.into());
    }

    /// A condition was observed not to hold (a successful check).
    pub fn up(&mut self, kind: AlertKind, now: OffsetDateTime) {
        let Some(state) = self.kinds.get_mut(&kind) else {
            return;
        };
        match &mut state.incident {
            Some(incident) if incident.notified => {
                incident.cleared.get_or_insert(now);
            }
            // Never emailed: a blip shorter than the threshold, forgotten.
            Some(_) => state.incident = None,
            None => {}
        }
    }

    /// Whether a condition currently holds (for health and tests).
    pub fn is_down(&self, kind: AlertKind) -> bool {
        self.kinds
            .get(&kind)
            .and_then(|s| s.incident.as_ref())
            .is_some_and(|i| i.cleared.is_none())
    }

    /// The emails due at `now`; the state moves on as if they were sent.
    pub fn poll(&mut self, now: OffsetDateTime) -> Vec<Notice> {
        let policy = self.policy.clone();
        let mut notices = Vec::new();
        for (&kind, state) in &mut self.kinds {
            if let Some(notice) = poll_kind(kind, state, &policy, now) {
                notices.push(notice);
            }
        }
        notices
    }

    /// When [`Alerter::poll`] may next have something to send, if anything is in progress.
    pub fn next_due(&self) -> Option<OffsetDateTime> {
        self.kinds
            .iter()
            .filter_map(|(&kind, state)| due_at(kind, state, &self.policy))
            .min()
    }

    /// Everything held, as if the waits were over: at shutdown, so a gathered burst is not lost. Window
    /// throttling still applies to incidents already emailed.
    pub fn flush(&mut self, now: OffsetDateTime) -> Vec<Notice> {
        let policy = AlertPolicy {
            group_wait: Duration::ZERO,
            ..self.policy.clone()
        };
        let mut notices = Vec::new();
        for (&kind, state) in &mut self.kinds {
            if kind.is_condition() {
                continue;
            }
            if let Some(notice) = poll_kind(kind, state, &policy, now) {
                notices.push(notice);
            }
        }
        notices
    }
}

fn window_open(state: &KindState, policy: &AlertPolicy) -> Option<OffsetDateTime> {
    state.last_email.map(|t| t + policy.window)
}

/// The instant the next notice of this kind is due, if one is pending.
fn due_at(kind: AlertKind, state: &KindState, policy: &AlertPolicy) -> Option<OffsetDateTime> {
    let incident = state.incident.as_ref()?;
    let next_window = window_open(state, policy);
    if let Some(cleared) = incident.cleared {
        return Some(cleared);
    }
    if !incident.notified {
        let ready = incident.started + policy.threshold(kind);
        return Some(next_window.map_or(ready, |w| w.max(ready)));
    }
    // Emailed: the next decision (reminder, digest or "recovered") comes one window after the last email.
    next_window
}

fn poll_kind(
    kind: AlertKind,
    state: &mut KindState,
    policy: &AlertPolicy,
    now: OffsetDateTime,
) -> Option<Notice> {
    let due = due_at(kind, state, policy)?;
    if now < due {
        return None;
    }
    let next_email_after = Some(now + policy.window);
    let incident = state.incident.as_mut()?;
    let notice = |incident: &mut Incident, notice_state: NoticeState| Notice {
        kind,
        state: notice_state,
        since: incident.started,
        at: now,
        count: incident.pending,
        total: incident.total,
        examples: std::mem::take(&mut incident.examples),
        detail: incident.detail.clone(),
        next_email_after,
    };
    if let Some(cleared) = incident.cleared {
        let mut recovered = notice(incident, NoticeState::Recovered);
        recovered.at = cleared;
        state.incident = None;
        return Some(recovered);
    }
    let (notice_state, close) = match (incident.notified, kind.is_condition()) {
        (false, _) => (NoticeState::Firing, false),
        (true, true) => (NoticeState::StillFiring, false),
        // A discrete kind one window after its last email: a digest of what came since, or, when
        // nothing came, the end of the incident.
        (true, false) if incident.pending > 0 => (NoticeState::Firing, false),
        (true, false) => (NoticeState::Recovered, true),
    };
    let sent = notice(incident, notice_state);
    incident.pending = 0;
    incident.notified = true;
    if close {
        state.incident = None;
    } else {
        state.last_email = Some(now);
    }
    Some(sent)
}

/// What a crash-loop check decides, given the crashes counted within the window and the group-wide
/// alert state (kept in the database: a crash loop outlives any one writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashLoopDecision {
    /// Send the alert and mark the crash loop active.
    Alert,
    /// Send "recovered" and mark it inactive.
    Recover,
    Nothing,
}

pub fn crash_loop_decision(
    crashes: u32,
    threshold: u32,
    active: bool,
    last_alert: Option<OffsetDateTime>,
    now: OffsetDateTime,
    window: Duration,
) -> CrashLoopDecision {
    let looping = threshold > 0 && crashes >= threshold;
    match (looping, active) {
        (true, false) if last_alert.is_none_or(|t| now >= t + window) => CrashLoopDecision::Alert,
        (false, true) => CrashLoopDecision::Recover,
        _ => CrashLoopDecision::Nothing,
    }
}

/// The notice of a crash-loop decision; `crashes` describes the crashes counted (newest first).
pub fn crash_loop_notice(
    decision: CrashLoopDecision,
    crashes: &[String],
    since: OffsetDateTime,
    now: OffsetDateTime,
    policy: &AlertPolicy,
) -> Option<Notice> {
    let state = match decision {
        CrashLoopDecision::Alert => NoticeState::Firing,
        CrashLoopDecision::Recover => NoticeState::Recovered,
        CrashLoopDecision::Nothing => return None,
    };
    Some(Notice {
        kind: AlertKind::CrashLoop,
        state,
        since,
        at: now,
        count: crashes.len() as u64,
        total: crashes.len() as u64,
        examples: crashes.iter().take(policy.max_examples).cloned().collect(),
        detail: None,
        next_email_after: Some(now + policy.window),
    })
}

/// The clock and policy of the rules' tests, shared with [`super::email_text`]'s.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) const T0: OffsetDateTime = datetime!(2025-01-15 10:00:00 UTC);

    pub(crate) fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    pub(crate) fn policy() -> AlertPolicy {
        AlertPolicy {
            window: secs(600),
            group_wait: secs(30),
            database_after: secs(60),
            broker_after: secs(120),
            max_examples: 3,
        }
    }

    fn dead(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("offset {i}: bad envelope"))
            .collect()
    }

    #[test]
    fn a_burst_of_dead_letters_makes_one_email_with_count_and_first_examples() {
        let mut alerter = Alerter::new(policy());
        alerter.record(AlertKind::DeadLetters, 2, dead(2), T0);
        alerter.record(AlertKind::DeadLetters, 98, dead(98), T0 + secs(5));
        assert!(
            alerter.poll(T0 + secs(29)).is_empty(),
            "gathering the burst"
        );
        assert_eq!(alerter.next_due(), Some(T0 + secs(30)));

        let notices = alerter.poll(T0 + secs(30));
        assert_eq!(notices.len(), 1);
        let notice = &notices[0];
        assert_eq!(notice.state, NoticeState::Firing);
        assert_eq!(notice.count, 100);
        assert_eq!(
            notice.examples,
            vec![
                "offset 0: bad envelope",
                "offset 1: bad envelope",
                "offset 0: bad envelope"
            ]
        );
        assert_eq!(
            notice.subject(),
            "[eventgate] ALERT: 100 messages parked in dead_letters"
        );
        assert!(alerter.poll(T0 + secs(31)).is_empty());
    }

    #[test]
    fn dead_letters_within_the_window_wait_for_one_digest_then_recovered() {
        let mut alerter = Alerter::new(policy());
        alerter.record(AlertKind::DeadLetters, 1, dead(1), T0);
        assert_eq!(alerter.poll(T0 + secs(30)).len(), 1);
        // A storm inside the window: held, counted, no email.
        for i in 0..1000 {
            alerter.record(AlertKind::DeadLetters, 1, dead(1), T0 + secs(40 + i % 500));
            assert!(alerter.poll(T0 + secs(40 + i % 500)).is_empty());
        }
        assert_eq!(alerter.next_due(), Some(T0 + secs(630)));
        let digest = alerter.poll(T0 + secs(630));
        assert_eq!(digest.len(), 1);
        assert_eq!(digest[0].state, NoticeState::Firing);
        assert_eq!(digest[0].count, 1000);
        assert_eq!(digest[0].total, 1001);
        assert_eq!(digest[0].examples.len(), 3);
        // A quiet window: the incident is over.
        assert!(alerter.poll(T0 + secs(1229)).is_empty());
        let recovered = alerter.poll(T0 + secs(1230));
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].state, NoticeState::Recovered);
        assert_eq!(recovered[0].total, 1001);
        assert!(recovered[0].subject().contains("RECOVERED"));
        assert_eq!(alerter.next_due(), None);
        // A new dead letter afterwards opens a new incident, emailed after the group wait.
        alerter.record(AlertKind::DeadLetters, 1, dead(1), T0 + secs(2000));
        assert_eq!(alerter.next_due(), Some(T0 + secs(2030)));
    }

    #[test]
    fn a_database_blip_shorter_than_the_threshold_sends_nothing() {
        let mut alerter = Alerter::new(policy());
        alerter.down(AlertKind::DatabaseUnreachable, "connection refused", T0);
        alerter.down(
            AlertKind::DatabaseUnreachable,
            "connection refused",
            T0 + secs(30),
        );
        assert!(alerter.poll(T0 + secs(59)).is_empty());
        alerter.up(AlertKind::DatabaseUnreachable, T0 + secs(59));
        assert!(alerter.poll(T0 + secs(3600)).is_empty());
        assert_eq!(alerter.next_due(), None);
    }

    #[test]
    fn an_outage_is_emailed_after_its_threshold_reminded_per_window_and_recovered() {
        let mut alerter = Alerter::new(policy());
        alerter.down(AlertKind::DatabaseUnreachable, "connection refused", T0);
        assert_eq!(alerter.next_due(), Some(T0 + secs(60)));
        for s in 1..60 {
            alerter.down(
                AlertKind::DatabaseUnreachable,
                "still refused",
                T0 + secs(s),
            );
            assert!(alerter.poll(T0 + secs(s)).is_empty());
        }
        let alert = alerter.poll(T0 + secs(60));
        assert_eq!(alert.len(), 1);
        assert_eq!(alert[0].state, NoticeState::Firing);
        assert_eq!(alert[0].detail.as_deref(), Some("still refused"));
        assert_eq!(alert[0].total, 60);
        assert_eq!(
            alert[0].subject(),
            "[eventgate] ALERT: database unreachable for 1m 0s"
        );
        assert!(alerter.is_down(AlertKind::DatabaseUnreachable));

        let reminder = alerter.poll(T0 + secs(660));
        assert_eq!(reminder.len(), 1);
        assert_eq!(reminder[0].state, NoticeState::StillFiring);

        alerter.up(AlertKind::DatabaseUnreachable, T0 + secs(700));
        let recovered = alerter.poll(T0 + secs(700));
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].state, NoticeState::Recovered);
        assert_eq!(
            recovered[0].subject(),
            "[eventgate] RECOVERED: database reachable again after 11m 40s"
        );
        assert!(!alerter.is_down(AlertKind::DatabaseUnreachable));
        assert_eq!(alerter.next_due(), None);
    }

    #[test]
    fn a_flapping_condition_is_throttled_to_one_alert_per_window() {
        let mut alerter = Alerter::new(policy());
        alerter.down(AlertKind::BrokerUnreachable, "all brokers down", T0);
        assert_eq!(alerter.poll(T0 + secs(120)).len(), 1);
        alerter.up(AlertKind::BrokerUnreachable, T0 + secs(130));
        assert_eq!(
            alerter.poll(T0 + secs(130))[0].state,
            NoticeState::Recovered
        );
        // Down again at once, for longer than the threshold: the alert waits for the window.
        alerter.down(
            AlertKind::BrokerUnreachable,
            "all brokers down",
            T0 + secs(140),
        );
        assert!(alerter.poll(T0 + secs(300)).is_empty());
        assert_eq!(alerter.next_due(), Some(T0 + secs(720)));
        let again = alerter.poll(T0 + secs(720));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].state, NoticeState::Firing);
        assert_eq!(again[0].since, T0 + secs(140));
    }

    #[test]
    fn kinds_are_throttled_independently() {
        let mut alerter = Alerter::new(policy());
        alerter.record(AlertKind::DeadLetters, 3, dead(3), T0);
        alerter.down(AlertKind::DatabaseUnreachable, "refused", T0);
        alerter.down(AlertKind::BrokerUnreachable, "down", T0);
        let kinds: Vec<AlertKind> = alerter
            .poll(T0 + secs(120))
            .iter()
            .map(|n| n.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                AlertKind::DeadLetters,
                AlertKind::DatabaseUnreachable,
                AlertKind::BrokerUnreachable
            ]
        );
    }

    #[test]
    fn down_again_before_recovered_is_sent_continues_the_incident() {
        let mut alerter = Alerter::new(policy());
        alerter.down(AlertKind::DatabaseUnreachable, "refused", T0);
        assert_eq!(alerter.poll(T0 + secs(60)).len(), 1);
        alerter.up(AlertKind::DatabaseUnreachable, T0 + secs(70));
        alerter.down(AlertKind::DatabaseUnreachable, "refused", T0 + secs(71));
        assert!(alerter.poll(T0 + secs(72)).is_empty());
        assert!(alerter.is_down(AlertKind::DatabaseUnreachable));
    }

    #[test]
    fn flush_sends_a_gathered_burst_at_shutdown() {
        let mut alerter = Alerter::new(policy());
        alerter.record(AlertKind::DeadLetters, 4, dead(4), T0);
        alerter.down(AlertKind::DatabaseUnreachable, "refused", T0);
        let flushed = alerter.flush(T0 + secs(1));
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].kind, AlertKind::DeadLetters);
        assert_eq!(flushed[0].count, 4);
    }

    #[test]
    fn crash_loop_decisions() {
        let window = secs(600);
        use CrashLoopDecision::*;
        assert_eq!(crash_loop_decision(2, 3, false, None, T0, window), Nothing);
        assert_eq!(crash_loop_decision(3, 3, false, None, T0, window), Alert);
        assert_eq!(
            crash_loop_decision(5, 3, true, Some(T0), T0, window),
            Nothing
        );
        assert_eq!(
            crash_loop_decision(1, 3, true, Some(T0), T0, window),
            Recover
        );
        // Looping again right after it recovered: throttled until the window has passed.
        assert_eq!(
            crash_loop_decision(3, 3, false, Some(T0), T0 + secs(599), window),
            Nothing
        );
        assert_eq!(
            crash_loop_decision(3, 3, false, Some(T0), T0 + secs(600), window),
            Alert
        );
        // 0 turns the check off.
        assert_eq!(crash_loop_decision(9, 0, false, None, T0, window), Nothing);

        let crashes = vec![
            "writer host-a pid 7: started 10:00:00Z, last seen 10:00:03Z".to_owned(),
            "writer host-a pid 9: started 10:00:05Z, last seen 10:00:06Z".to_owned(),
            "writer host-b pid 3: started 10:00:08Z, last seen 10:00:08Z".to_owned(),
        ];
        let notice = crash_loop_notice(Alert, &crashes, T0, T0, &policy()).expect("notice");
        assert_eq!(
            notice.subject(),
            "[eventgate] ALERT: writer crash loop, 3 crashes within the window"
        );
        let body = notice.body("db-writer host-c pid 1, group g", &policy());
        assert!(body.contains("host-a pid 9"), "{body}");
        assert!(crash_loop_notice(Nothing, &crashes, T0, T0, &policy()).is_none());
    }
}
