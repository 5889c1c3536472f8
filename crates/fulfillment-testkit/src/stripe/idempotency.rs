//! `Idempotency-Key` on POST, as docs.stripe.com/api/idempotent_requests
//! describes it: the first result is saved and replayed for every request
//! with the same key and the same parameters; the same key with other
//! parameters is a 400 `idempotency_error`; a request arriving while
//! another holds the key is a 409 and saves nothing. Keys are scoped to the
//! account (`Stripe-Account`) they were used for. A request refused before
//! it ran (validation, an injected failure) saves nothing either.

use std::collections::HashMap;

/// What a request's parameters are, for comparing two uses of one key:
/// method, path and the parameters as a sorted list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint(Vec<String>);

impl Fingerprint {
    pub fn new(method: &str, path: &str, params: &[(String, String)]) -> Fingerprint {
        let mut parts: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.sort();
        parts.insert(0, format!("{method} {path}"));
        Fingerprint(parts)
    }
}

/// A saved answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub status: u16,
    pub body: Vec<u8>,
    /// The request id of the answer that was saved (`Original-Request`).
    pub request_id: String,
}

#[derive(Debug)]
enum Entry {
    Running(Fingerprint),
    Done(Fingerprint, Saved),
}

/// What to do with a request carrying a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First use (or a retry after nothing was saved): run it; the key is
    /// held until [`Keys::finish`].
    Run,
    Replay(Saved),
    Mismatch,
    InUse,
}

type Scope = (Option<String>, String);

#[derive(Debug, Default)]
pub struct Keys {
    entries: HashMap<Scope, Entry>,
}

impl Keys {
    pub fn claim(&mut self, account: Option<&str>, key: &str, fingerprint: Fingerprint) -> Claim {
        let scope = (account.map(str::to_owned), key.to_owned());
        match self.entries.get(&scope) {
            None => {
                self.entries.insert(scope, Entry::Running(fingerprint));
                Claim::Run
            }
            Some(Entry::Running(_)) => Claim::InUse,
            Some(Entry::Done(saved_for, _)) if *saved_for != fingerprint => Claim::Mismatch,
            Some(Entry::Done(_, saved)) => Claim::Replay(saved.clone()),
        }
    }

    /// Ends a claimed run: `Some` saves the answer for replays, `None`
    /// forgets the key (the request was refused before it ran).
    pub fn finish(&mut self, account: Option<&str>, key: &str, saved: Option<Saved>) {
        let scope = (account.map(str::to_owned), key.to_owned());
        match (self.entries.remove(&scope), saved) {
            (Some(Entry::Running(fingerprint)), Some(saved)) => {
                self.entries.insert(scope, Entry::Done(fingerprint, saved));
            }
            (Some(Entry::Done(f, s)), _) => {
                // Not ours to end: put it back.
                self.entries.insert(scope, Entry::Done(f, s));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(params: &[(&str, &str)]) -> Fingerprint {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Fingerprint::new("POST", "/v1/payment_records/report_payment", &params)
    }

    fn saved(body: &str) -> Saved {
        Saved {
            status: 200,
            body: body.as_bytes().to_vec(),
            request_id: "req_1".into(),
        }
    }

    #[test]
    fn same_key_same_params_replays_the_first_answer() {
        let mut keys = Keys::default();
        let params = [("a", "1"), ("b", "2")];
        assert_eq!(keys.claim(None, "k", fp(&params)), Claim::Run);
        keys.finish(None, "k", Some(saved("first")));
        // Parameter order does not matter.
        let reordered = [("b", "2"), ("a", "1")];
        assert_eq!(
            keys.claim(None, "k", fp(&reordered)),
            Claim::Replay(saved("first"))
        );
    }

    #[test]
    fn same_key_other_params_is_an_idempotency_error() {
        let mut keys = Keys::default();
        assert_eq!(keys.claim(None, "k", fp(&[("a", "1")])), Claim::Run);
        keys.finish(None, "k", Some(saved("first")));
        assert_eq!(keys.claim(None, "k", fp(&[("a", "2")])), Claim::Mismatch);
    }

    #[test]
    fn a_key_in_use_is_a_conflict_and_a_refused_run_saves_nothing() {
        let mut keys = Keys::default();
        assert_eq!(keys.claim(None, "k", fp(&[])), Claim::Run);
        assert_eq!(keys.claim(None, "k", fp(&[])), Claim::InUse);
        keys.finish(None, "k", None);
        assert_eq!(keys.claim(None, "k", fp(&[("other", "x")])), Claim::Run);
    }

    #[test]
    fn keys_are_scoped_to_the_account() {
        let mut keys = Keys::default();
        assert_eq!(keys.claim(Some("acct_1"), "k", fp(&[])), Claim::Run);
        keys.finish(Some("acct_1"), "k", Some(saved("one")));
        assert_eq!(
            keys.claim(Some("acct_2"), "k", fp(&[("x", "1")])),
            Claim::Run
        );
        assert_eq!(keys.claim(None, "k", fp(&[])), Claim::Run);
    }
}
